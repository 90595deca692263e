//! EK certificates that `swtpm_setup --create-ek-cert` (swtpm-localca) wrote are read
//! through tss-esapi and verified like tresor's own: ordinary swtpm setups can be enrolled.
//! The swtpm-localca state lives in a temporary directory, never in /var/lib/swtpm-localca.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use protocol::x509::{TrustAnchors, certificates_from_pem};
use tre::manufacture::{read_ek_certificate, verify_ek};
use tre::swtpm::{Swtpm, SwtpmConfig};
use tre::tpm::{KeyAlg, Tpm};

/// Runs swtpm_setup with a swtpm-localca of its own in `dir`; returns the TPM state dir.
fn swtpm_setup(dir: &Path) -> PathBuf {
    let ca = dir.join("localca");
    let state = dir.join("state");
    std::fs::create_dir_all(&ca).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let localca = dir.join("swtpm-localca.conf");
    std::fs::write(
        &localca,
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\n\
             certserial = {ca}/certserial\n",
            ca = ca.display()
        ),
    )
    .unwrap();
    let setup = dir.join("swtpm_setup.conf");
    std::fs::write(
        &setup,
        format!(
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\n\
             active_pcr_banks = sha256\n",
            localca.display()
        ),
    )
    .unwrap();
    let out = Command::new("swtpm_setup")
        .args(["--tpm2", "--create-ek-cert", "--tpmstate"])
        .arg(&state)
        .arg("--config")
        .arg(&setup)
        .arg("--logfile")
        .arg(dir.join("swtpm_setup.log"))
        .env("XDG_CONFIG_HOME", dir)
        .env("HOME", dir)
        .output()
        .expect("swtpm_setup (Debian package swtpm-tools) runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    state
}

#[test]
fn swtpm_localca_rsa_ek_certificate_reads_back_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let state = swtpm_setup(dir.path());
    let ca = dir.path().join("localca");
    let roots = TrustAnchors::from_file(&ca.join("swtpm-localca-rootca-cert.pem")).unwrap();
    let issuer = certificates_from_pem(&std::fs::read(ca.join("issuercert.pem")).unwrap()).unwrap();

    let swtpm = Swtpm::start(&state, &SwtpmConfig::load().unwrap()).unwrap();
    let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
    let der = read_ek_certificate(&mut tpm, KeyAlg::Rsa).unwrap();
    assert_eq!(der[0], 0x30);
    let verified = verify_ek(&mut tpm, KeyAlg::Rsa, &issuer, &roots, SystemTime::now()).unwrap();
    assert_eq!(verified.tpm.model, "swtpm");
    // without the intermediate the chain does not reach the root
    assert!(verify_ek(&mut tpm, KeyAlg::Rsa, &[], &roots, SystemTime::now()).is_err());
}
