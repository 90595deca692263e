//! Real firmware event logs against independent oracles. The tpm2-tools test fixtures
//! (`testdata/eventlogs/*.bin`): the PCR values `tpm2_eventlog FILE` prints under `pcrs:`,
//! bank by bank, PCR by PCR. Two logs from other projects' test suites
//! (`testdata/eventlogs/tpm2-tss`, `…/go-attestation`): the PCR values those projects record
//! as the real machine's. Also: every real log writes back byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use protocol::eventlog::{EventLog, EventType, LogFormat, PcrBanks};
use protocol::image;
use protocol::tpm::HashAlg;

type Pcrs = BTreeMap<String, BTreeMap<u32, String>>;

fn logs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/eventlogs")
}

fn real_logs() -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(logs_dir())
        .expect("the real event logs are in testdata/eventlogs")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    logs.sort();
    assert!(logs.len() >= 11, "expected the tpm2-tools fixture logs, found {logs:?}");
    logs
}

/// The `pcrs:` section of `tpm2_eventlog` output: `  sha1:` then `    0  : 0x…` lines.
fn tpm2_eventlog_pcrs(path: &Path) -> Result<Pcrs, String> {
    let out = Command::new("tpm2_eventlog")
        .arg(path)
        .output()
        .expect("tpm2_eventlog (tpm2-tools) must be installed: `make deps`");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let mut pcrs = Pcrs::new();
    let mut bank = None;
    let mut in_pcrs = false;
    for line in text.lines() {
        if line == "pcrs:" {
            in_pcrs = true;
        } else if in_pcrs {
            if let Some(name) = line
                .strip_prefix("  ")
                .and_then(|l| l.strip_suffix(':'))
                .filter(|n| !n.starts_with(' '))
            {
                bank = Some(name.to_owned());
                pcrs.entry(name.to_owned()).or_default();
            } else if let Some((index, value)) = line.trim().split_once(':') {
                let index: u32 = index.trim().parse().unwrap();
                let value = value.trim().strip_prefix("0x").unwrap().to_lowercase();
                pcrs.get_mut(bank.as_ref().unwrap()).unwrap().insert(index, value);
            }
        }
    }
    Ok(pcrs)
}

fn ours(replayed: &PcrBanks) -> Pcrs {
    replayed
        .iter()
        .filter(|bank| bank.measured().next().is_some())
        .map(|bank| {
            (
                bank.alg().name().to_owned(),
                bank.measured().map(|(i, v)| (i, hex::encode(v))).collect(),
            )
        })
        .collect()
}

fn tpm2_tools_version() -> (u32, u32) {
    let out = Command::new("tpm2_eventlog").arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split("version=\"").nth(1).and_then(|v| v.split('"').next()).unwrap();
    let mut parts = version.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn every_real_log_replays_to_what_tpm2_eventlog_prints() {
    let version = tpm2_tools_version();
    for path in real_logs() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let oracle = tpm2_eventlog_pcrs(&path);
        let parsed = EventLog::parse(&bytes);
        let (log, oracle) = match (parsed, oracle) {
            (Ok(log), Ok(oracle)) => (log, oracle),
            (Err(ours), Err(theirs)) => {
                // Neither can replay it: we must reject it with a precise error.
                eprintln!("{name}: rejected by both: ours {ours}; tpm2_eventlog {theirs}");
                continue;
            }
            (ours, theirs) => {
                panic!("{name}: we say {:?}, tpm2_eventlog says {:?}", ours.err(), theirs.err())
            }
        };
        // tpm2-tools before 5.6 extends EV_NO_ACTION records into their PCR (tpm2-tools
        // issue #3224) and ignores StartupLocality (added in 5.6); we follow the PFP. No
        // fixture log has an EV_NO_ACTION record after its header, so the two agree; if one
        // is added, its PCRs would differ for that reason alone.
        let no_action = log.events().iter().any(|e| e.event_type == EventType::EV_NO_ACTION);
        assert!(
            !(no_action && version < (5, 6)),
            "{name}: has EV_NO_ACTION records, which tpm2_eventlog {version:?} extends (bug #3224)"
        );
        assert!(!oracle.is_empty(), "{name}: tpm2_eventlog printed no PCR");
        let replayed = log.replay().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ours(&replayed), oracle, "{name}: PCRs differ from tpm2_eventlog");
        assert_eq!(log.to_bytes(), bytes, "{name}: does not write back byte for byte");
    }
}

/// What each fixture is, so a change in the set (or in our parser) is noticed: format,
/// banks, number of records after the header.
#[test]
fn real_logs_have_the_expected_shape() {
    let expected: &[(&str, bool, &[HashAlg], usize)] = &[
        ("event-arch-linux.bin", true, &[HashAlg::Sha1, HashAlg::Sha256], 24),
        ("event-bootorder.bin", true, &[HashAlg::Sha1, HashAlg::Sha256], 103),
        (
            "event-gce-ubuntu-2104-log.bin",
            true,
            &[HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384],
            111,
        ),
        ("event-moklisttrusted.bin", true, &[HashAlg::Sha256], 96),
        ("event-postcode.bin", true, &[HashAlg::Sha1, HashAlg::Sha256], 58),
        ("event-sd-boot-fedora37.bin", true, &[HashAlg::Sha256], 27),
        ("event-uefi-sha1-log.bin", false, &[HashAlg::Sha1], 17),
        ("event-uefiaction.bin", true, &HashAlg::ALL, 1),
        ("event-uefiservices.bin", true, &[HashAlg::Sha1, HashAlg::Sha256], 1),
        ("event-uefivar.bin", true, &HashAlg::ALL, 1),
        ("event.bin", true, &HashAlg::ALL, 1),
    ];
    for (name, agile, banks, events) in expected {
        let log = EventLog::parse(&std::fs::read(logs_dir().join(name)).unwrap()).unwrap();
        assert_eq!(matches!(log.format(), LogFormat::CryptoAgile(_)), *agile, "{name}");
        assert_eq!(log.banks(), *banks, "{name}");
        assert_eq!(log.events().len(), *events, "{name}");
    }
}

/// Our own writer against the same oracle: the log of the sample device image replays, in
/// tpm2_eventlog, to the PCRs we predict.
#[test]
fn tpm2_eventlog_reads_the_logs_we_write() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/image");
    let banks = [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512];
    let measurements = image::measure(&dir, &banks).unwrap();
    let log = EventLog::from_measurements(&banks, &measurements).unwrap();
    let path = std::env::temp_dir().join(format!("tresor-eventlog-{}.bin", std::process::id()));
    std::fs::write(&path, log.to_bytes()).unwrap();
    let oracle = tpm2_eventlog_pcrs(&path);
    std::fs::remove_file(&path).unwrap();
    let predicted = image::expected_pcrs(&banks, &measurements).unwrap();
    assert_eq!(ours(&predicted), oracle.unwrap());
    assert_eq!(
        predicted.bank(HashAlg::Sha256).unwrap().measured().map(|(i, _)| i).collect::<Vec<_>>(),
        [0, 2, 4, 8, 9]
    );
}

/// tpm2-tss's `test/data/fapi/eventlog/binary_measurements_hcrtm` (a Hygon "Dhyana" machine
/// with an H-CRTM and SHA-1, SHA-256 and SM3_256 banks): the log starts with
/// EV_EFI_HCRTM_EVENT and has no StartupLocality event. Its PCR 0 must be what the real
/// machine read, which tpm2-tss records in `test/unit/fapi-eventlog.c`
/// (`check_eventlog_pcr0`, "the pcr0 value got from system with HCRTM events"); a replay
/// from zero gives 2162942d…, the value tpm2_eventlog before 5.6 prints.
#[test]
fn hcrtm_log_replays_pcr0_to_what_the_machine_read() {
    let path = logs_dir().join("tpm2-tss/binary_measurements_hcrtm.bin");
    let bytes = std::fs::read(&path).unwrap();
    let log = EventLog::parse(&bytes).unwrap();
    assert_eq!(log.banks(), [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sm3_256]);
    assert_eq!(log.events().len(), 203);
    assert_eq!(log.events()[0].event_type, EventType::EV_EFI_HCRTM_EVENT);
    assert_eq!(log.events()[0].data, b"HCRTM");
    let replayed = log.replay().unwrap();
    assert_eq!(
        hex::encode(replayed.value(HashAlg::Sha1, 0).unwrap()),
        "15f4e6ca457d1af6bc49511a93ba3500ad69acc5"
    );
    // PCR 0 = H(0…04 ‖ H-CRTM digest ‖ the rest of PCR 0's digests), in every bank.
    for bank in replayed.iter() {
        let mut pcr0 = vec![0u8; bank.alg().size()];
        pcr0[bank.alg().size() - 1] = 4;
        for e in log.events().iter().filter(|e| e.pcr == 0) {
            if e.event_type != EventType::EV_NO_ACTION {
                bank.alg().extend(&mut pcr0, e.digest(bank.alg()).unwrap());
            }
        }
        assert_eq!(bank.value(0).unwrap(), pcr0, "{}", bank.alg());
    }
    // Every other PCR, SM3_256 included, is what tpm2_eventlog prints; PCR 0 too from
    // tpm2-tools 5.6 on, which knows the H-CRTM rule.
    let mut oracle = tpm2_eventlog_pcrs(&path).unwrap();
    let mut ours = ours(&replayed);
    assert_eq!(oracle.keys().collect::<Vec<_>>(), ["sha1", "sha256", "sm3_256"]);
    if tpm2_tools_version() < (5, 6) {
        assert_eq!(oracle["sha1"][&0], "2162942d20f3d5fbe8121fe462f5b7a5568bccd2");
        for bank in oracle.values_mut().chain(ours.values_mut()) {
            bank.remove(&0);
        }
    }
    assert_eq!(ours, oracle);
    assert_eq!(ours["sm3_256"].len(), if tpm2_tools_version() < (5, 6) { 9 } else { 10 });
    assert_eq!(log.to_bytes(), bytes);
}

/// go-attestation's `attest/testdata/option_rom_eventlog`: a Windows SHA-1 log with an
/// option ROM, whose record at offset 72361 is an EV_NO_ACTION for PCR 0xFFFFFFFF. The
/// expected values are the eight PCRs go-attestation's `TestSecureBootOptionRom`
/// (`attest/secureboot_test.go`) verifies the log against, the real machine's (base64
/// there, hex here).
#[test]
fn windows_sha1_log_replays_to_the_real_pcrs() {
    let bytes = std::fs::read(logs_dir().join("go-attestation/option_rom_eventlog.bin")).unwrap();
    let log = EventLog::parse(&bytes).unwrap();
    assert_eq!(log.format(), &LogFormat::Sha1);
    assert_eq!(log.events().len(), 61);
    let windows = &log.events()[60];
    assert_eq!(
        (windows.offset, windows.pcr, windows.event_type),
        (72361, protocol::eventlog::NO_ACTION_PCR, EventType::EV_NO_ACTION)
    );
    let replayed = log.replay().unwrap();
    let real = [
        "01518aedc87a0ef505d27261ef835809e7da0086",
        "bebff4c08a6677473ab604cedefb82f850cde883",
        "366a31a0c075368f0e10857333ea2ed6e8a00fd3",
        "b2a83b0ebf2f8374299a5b2bdfc31ea955ad7236",
        "39f388c3959e904694726f4c015b6dceae0680a1",
        "723a0520cf7f2978548742bd1541706b2446459e",
        "b2a83b0ebf2f8374299a5b2bdfc31ea955ad7236",
        "20de7dfba6bcdfccadad7e3eb099c91d4d97c5ad",
    ];
    for (pcr, expected) in (0u32..).zip(real) {
        assert_eq!(hex::encode(replayed.value(HashAlg::Sha1, pcr).unwrap()), expected, "PCR {pcr}");
    }
    let measured: Vec<u32> =
        replayed.bank(HashAlg::Sha1).unwrap().measured().map(|(i, _)| i).collect();
    assert_eq!(measured, [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14]);
    assert_eq!(log.to_bytes(), bytes);
}
