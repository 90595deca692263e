//! TPM clock and boot counters on a real swtpm: an unorderly power cycle leaves the clock
//! not safe; evidence from before a reset, a restart or simply earlier, appraised after
//! newer evidence, runs the counters backwards; a certification from another boot than the
//! quote is inconsistent.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::time::{Duration, SystemTime};

use protocol::evidence::Evidence;
use support::{Device, Lab, example_image};
use tre::attester::{Attester, AttesterOptions};
use tre::tpm::Tpm;
use verifier::{AppraisalError, Appraised, Pva};

fn appraise(pva: &Pva, evidence: &Evidence) -> Appraised {
    pva.appraise_evidence(evidence, SystemTime::now()).unwrap()
}

fn clock(e: &Evidence) -> protocol::tpm::ClockInfo {
    use protocol::tpm::{Attest, Unmarshal};
    Attest::from_bytes(&e.quote.attest).unwrap().clock_info
}

/// Runs a tpm2-tools or swtpm program against the device's TPM.
fn run(tcti: &str, program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).env("TPM2TOOLS_TCTI", tcti).output().unwrap();
    assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Reconnects and measures the image again (the PCRs were reset).
fn reboot(device: &mut Device) {
    let tpm = Tpm::connect(&device.swtpm.tcti()).unwrap();
    device.attester =
        Some(Attester::boot(tpm, &example_image(), AttesterOptions::default()).unwrap());
}

#[test]
fn power_cycles_resets_and_clocks() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = lab.device();
    device.enrol(&pva);

    let before_reset = device.evidence(&pva);
    let shared_nonce = device.challenge(&pva);
    let certified_before = device.attester().evidence(&shared_nonce).unwrap();
    assert!(clock(&before_reset).safe);

    // Power lost without TPM2_Shutdown: resetCount grows, the clock is no longer safe.
    device.attester = None;
    let tcti = device.swtpm.tcti();
    let ctrl = format!("127.0.0.1:{}", device.swtpm.port() + 1);
    run(&tcti, "swtpm_ioctl", &["--tcp", &ctrl, "-i"]);
    run(&tcti, "tpm2_startup", &["-c"]);
    reboot(&mut device);
    let after_reset = device.evidence(&pva);
    assert_eq!(clock(&after_reset).reset_count, clock(&before_reset).reset_count + 1);
    let a = appraise(&pva, &after_reset);
    assert_eq!(a.failures, [AppraisalError::ClockNotSafe]);

    // Evidence from before the reset, presented after: resetCount went backwards.
    let a = appraise(&pva, &before_reset);
    assert_eq!(
        a.failures,
        [AppraisalError::ResetCountWentBackwards {
            last: clock(&after_reset).reset_count,
            got: clock(&before_reset).reset_count
        }]
    );

    // A quote of this boot with a certification from the previous one.
    let mut mixed = device.attester().evidence(&shared_nonce).unwrap();
    mixed.bundle_key = certified_before.bundle_key.clone();
    let a = appraise(&pva, &mixed);
    assert!(a.failures.contains(&AppraisalError::ClockInfoInconsistent), "{:?}", a.failures);

    // Two quotes of one boot, the later appraised first: the clock went backwards.
    let earlier = device.evidence(&pva);
    std::thread::sleep(Duration::from_millis(50));
    let later = device.evidence(&pva);
    assert!(clock(&later).clock > clock(&earlier).clock);
    appraise(&pva, &later);
    let a = appraise(&pva, &earlier);
    assert!(
        a.failures.contains(&AppraisalError::ClockWentBackwards {
            last: clock(&later).clock,
            got: clock(&earlier).clock
        }),
        "{:?}",
        a.failures
    );
}

#[test]
fn a_restart_count_that_goes_backwards_is_flagged() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = lab.device();
    device.enrol(&pva);
    let before = device.evidence(&pva);

    // TPM2_Shutdown(STATE), _TPM_Init, TPM2_Startup(STATE): a resume, restartCount + 1.
    device.attester = None;
    let tcti = device.swtpm.tcti();
    run(&tcti, "tpm2_shutdown", &[]);
    let ctrl = format!("127.0.0.1:{}", device.swtpm.port() + 1);
    run(&tcti, "swtpm_ioctl", &["--tcp", &ctrl, "-i"]);
    run(&tcti, "tpm2_startup", &[]);
    reboot(&mut device);
    let after = device.evidence(&pva);
    assert_eq!(clock(&after).reset_count, clock(&before).reset_count);
    assert_eq!(clock(&after).restart_count, clock(&before).restart_count + 1);
    appraise(&pva, &after);

    let a = appraise(&pva, &before);
    assert!(
        a.failures.contains(&AppraisalError::RestartCountWentBackwards {
            last: clock(&after).restart_count,
            got: clock(&before).restart_count
        }),
        "{:?}",
        a.failures
    );
}
