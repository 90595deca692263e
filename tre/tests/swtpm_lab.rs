//! The swtpm lab on real swtpm processes: start, reach, allocate banks, stop, no orphans.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use protocol::tpm::HashAlg;
use tre::swtpm::{Swtpm, SwtpmConfig, SwtpmError};
use tre::tpm::{KeyAlg, Tpm};

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would still show with state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn one_instance_answers_and_dies_with_its_handle() {
    let config = SwtpmConfig::load().unwrap();
    let swtpm = Swtpm::start_temp(&config).unwrap();
    let pid = swtpm.pid();
    let state = swtpm.state_dir().to_owned();
    {
        let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
        let banks = tpm.active_banks().unwrap();
        assert_eq!(banks, config.pcr_banks, "configured banks are the allocated ones");
        let info = tpm.info().unwrap();
        assert_eq!(&info.manufacturer.to_be_bytes()[..3], b"IBM");
        let ek = tpm.create_ek(KeyAlg::Ecc).unwrap();
        assert_eq!(ek.name.len(), 34);
        tpm.release(ek).unwrap();
    }
    assert!(alive(pid));
    drop(swtpm);
    assert!(!alive(pid), "swtpm {pid} outlived its handle");
    assert!(!state.exists(), "temporary state directory removed");
}

#[test]
fn power_cycle_resets_pcrs_and_keeps_nv() {
    let config = SwtpmConfig::load().unwrap();
    let swtpm = Swtpm::start_temp(&config).unwrap();
    {
        let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
        tpm.pcr_extend(16, &[(HashAlg::Sha256, vec![1; 32])]).unwrap();
        tpm.define_rollback_counter().unwrap();
        let before = tpm.rollback_counter().unwrap();
        assert_eq!(tpm.increment_rollback_counter().unwrap(), before + 1);
    }
    swtpm.power_cycle().unwrap();
    let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
    let pcr = tpm.pcr_read(HashAlg::Sha256, &[16]).unwrap();
    assert_eq!(pcr[0].1, vec![0u8; 32]);
    assert!(tpm.rollback_counter().is_ok());
}

#[test]
fn state_survives_a_restart_of_the_process() {
    let config = SwtpmConfig::load().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = {
        let swtpm = Swtpm::start(dir.path(), &config).unwrap();
        let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
        let ek = tpm.create_ek(KeyAlg::Ecc).unwrap();
        let ek = tpm.persist(ek, KeyAlg::Ecc.ek_handle()).unwrap();
        ek.name
    };
    let swtpm = Swtpm::start(dir.path(), &config).unwrap();
    let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
    let ek = tpm.persistent_key(KeyAlg::Ecc.ek_handle()).unwrap().expect("persisted EK");
    assert_eq!(ek.name, name);
    tpm.evict(KeyAlg::Ecc.ek_handle()).unwrap();
    assert!(tpm.persistent_key(KeyAlg::Ecc.ek_handle()).unwrap().is_none());
}

#[test]
fn thirty_two_instances_at_once() {
    let config = SwtpmConfig::load().unwrap();
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || {
                let swtpm = Swtpm::start_temp(&config).unwrap();
                let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
                let ek = tpm.create_ek(KeyAlg::Ecc).unwrap();
                let name = ek.name.clone();
                tpm.release(ek).unwrap();
                (swtpm, name)
            })
        })
        .collect();
    let running: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut names: Vec<_> = running.iter().map(|(_, n)| n.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 32, "every TPM has its own EK");
    let pids: Vec<u32> = running.iter().map(|(s, _)| s.pid()).collect();
    drop(running);
    for pid in pids {
        assert!(!alive(pid), "swtpm {pid} outlived its handle");
    }
}

#[test]
fn a_missing_binary_is_a_clear_error() {
    let mut config = SwtpmConfig::load().unwrap();
    config.binary = "/nonexistent/swtpm".into();
    let err = Swtpm::start_temp(&config).unwrap_err();
    assert!(matches!(err, SwtpmError::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("make deps"));
}

#[test]
fn a_panicking_test_leaves_no_swtpm() {
    let config = SwtpmConfig::load().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let swtpm = Swtpm::start_temp(&config).unwrap();
        tx.send(swtpm.pid()).unwrap();
        panic!("test failure while a swtpm runs");
    })
    .join();
    assert!(result.is_err());
    let pid = rx.recv().unwrap();
    assert!(!alive(pid), "swtpm {pid} survived a panic");
}
