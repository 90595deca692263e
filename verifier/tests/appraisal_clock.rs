//! TPM clock and boot counters on a real swtpm: an unorderly power cycle leaves the clock
//! not safe; evidence from before a reset, a restart or simply earlier, appraised after
//! newer evidence, runs the counters backwards; a certification from another boot than the
//! quote is inconsistent; a TPM state restored from a copy with the same counters lags the
//! wall time, however long its clock is let run past the mark.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::time::{Duration, SystemTime};

use protocol::Nonce;
use protocol::ear::TrustTier;
use protocol::evidence::Evidence;
use protocol::pva_api::ChallengeRequest;
use support::{Device, Lab, Restorable, clock_of, example_image};
use tre::attester::{Attester, AttesterOptions};
use tre::tpm::Tpm;
use verifier::pva::ClockTolerance;
use verifier::store::Store;
use verifier::{AppraisalError, Appraised, Pva, Settings};

fn appraise(pva: &Pva, evidence: &Evidence) -> Appraised {
    pva.appraise_evidence(evidence, SystemTime::now()).unwrap()
}

fn clock(e: &Evidence) -> protocol::tpm::ClockInfo {
    clock_of(e)
}

/// Evidence for a challenge the PVA issues at `at` (its wall time).
fn evidence_at(pva: &Pva, device: &mut Device, at: SystemTime) -> Evidence {
    let req = ChallengeRequest { device_id: device.id.clone(), policy_id: None };
    let nonce = pva.challenge(&req, at).unwrap().nonce;
    device.attester().evidence(&nonce).unwrap()
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
    let ctrl = device.swtpm.control_socket().display().to_string();
    run(&tcti, "swtpm_ioctl", &["--unix", &ctrl, "-i"]);
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
    let ctrl = device.swtpm.control_socket().display().to_string();
    run(&tcti, "swtpm_ioctl", &["--unix", &ctrl, "-i"]);
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

#[test]
fn a_tpm_clock_that_fell_behind_the_wall_time_in_one_boot_cycle_is_caught() {
    let lab = Lab::new();
    let pva = lab.pva();
    let mut device = lab.device();
    device.enrol(&pva);
    let now = SystemTime::now();
    let a = appraise(&pva, &device.evidence(&pva));
    assert_eq!(a.status(), TrustTier::Affirming);
    let reference = pva.clock_mark(&device.id).unwrap().unwrap();

    // To the PVA an hour passed; the TPM, same resetCount and restartCount, counted a few
    // milliseconds: it did not run meanwhile (a state put back), which a TPM never does.
    let hour = Duration::from_secs(3600);
    let later = evidence_at(&pva, &mut device, now + hour);
    let a = pva.appraise_evidence(&later, now + hour).unwrap();
    assert!(
        matches!(
            a.failures.as_slice(),
            [AppraisalError::ClockBehindWallTime { last, got, minimum }]
                if *last == reference.mark.clock && *got == clock(&later).clock
                    && *minimum > reference.mark.clock + 3_000_000
        ),
        "{:?}",
        a.failures
    );
    assert_eq!(a.status(), TrustTier::Contraindicated);
    // It did not become the reference: its next quote lags as much.
    assert_eq!(pva.clock_mark(&device.id).unwrap(), Some(reference));
    let next = evidence_at(&pva, &mut device, now + hour + Duration::from_secs(1));
    let a = pva.appraise_evidence(&next, now + hour + Duration::from_secs(1)).unwrap();
    assert!(matches!(a.failures.as_slice(), [AppraisalError::ClockBehindWallTime { .. }]));

    // After a TPM Reset the TPM may have been off: nothing to require of the clock.
    device.attester = None;
    device.swtpm.power_cycle().unwrap();
    reboot(&mut device);
    let rebooted = evidence_at(&pva, &mut device, now + 2 * hour);
    let a = pva.appraise_evidence(&rebooted, now + 2 * hour).unwrap();
    assert_eq!(a.failures, []);
}

#[test]
fn a_state_one_reset_old_restored_with_equal_counters_is_caught_after_its_clock_caught_up() {
    let lab = Lab::new();
    // A tighter slack than the default keeps the test short; the drift is the default's.
    let settings = Settings {
        clock: ClockTolerance { slack: Duration::from_millis(500), ..ClockTolerance::default() },
        ..Settings::default()
    };
    let pva = Pva::new(
        Store::open_in_memory().unwrap(),
        lab.manufacturer.anchors(),
        vec![verifier::ReferenceValues::parse(&lab.refvalues).unwrap()],
        lab.signer(),
        settings,
    )
    .unwrap();
    let mut tpm = Restorable::new(&lab);
    tpm.device().enrol(&pva);

    // The attacker copies the TPM's state while it is off; the device boots (resetCount
    // + 1, the copy's resetCount + 1 as well) and attests, twice, seconds apart.
    let copy = tpm.copy_state();
    let first = tpm.device().evidence(&pva);
    assert_eq!(appraise(&pva, &first).status(), TrustTier::Affirming);
    std::thread::sleep(Duration::from_secs(3));
    let last = tpm.device().evidence(&pva);
    assert_eq!(appraise(&pva, &last).status(), TrustTier::Affirming);

    // The copy is put back and boots: the same resetCount and restartCount as the PVA's
    // mark, a clock from before it. The attacker waits until the clock is past the mark.
    tpm.restore(&copy);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let probe = |tpm: &mut Restorable| {
        clock_of(&tpm.device().attester().evidence(&Nonce::random().unwrap()).unwrap())
    };
    assert!(probe(&mut tpm).clock < clock(&last).clock, "the copy starts behind the mark");
    while probe(&mut tpm).clock <= clock(&last).clock {
        assert!(std::time::Instant::now() < deadline, "the restored clock never caught up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let restored = tpm.device().evidence(&pva);
    let (r, l) = (clock(&restored), clock(&last));
    assert_eq!((r.reset_count, r.restart_count), (l.reset_count, l.restart_count));
    assert!(r.clock > l.clock && r.safe);
    let a = appraise(&pva, &restored);
    assert!(
        matches!(
            a.failures.as_slice(),
            [AppraisalError::ClockBehindWallTime { last, .. }] if *last == l.clock
        ),
        "{:?}",
        a.failures
    );
    assert_eq!(a.status(), TrustTier::Contraindicated);
}
