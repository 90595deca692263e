//! `tresor tre quote` against the real `tpm2_checkquote` (tpm2-tools), on a bare swtpm.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use tre::swtpm::{Swtpm, SwtpmConfig};

fn checkquote(dir: &Path, nonce: &str) -> std::process::Output {
    Command::new("tpm2_checkquote")
        .current_dir(dir)
        .args(["-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig", "-f", "quote.pcrs"])
        .args(["-g", "sha256", "-q", nonce])
        .output()
        .expect("tpm2_checkquote (Debian package tpm2-tools) runs")
}

#[test]
fn quotes_verify_with_tpm2_checkquote_for_ecc_and_rsa_aks() {
    for ak in ["ecc", "rsa"] {
        let swtpm = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let nonce = "5c1f0b7a9e33d2c4a18f00e6b2a79d5513c8e4f06a2b9d7e1f3c5a7b9d0e2f41";
        let status = Command::new(env!("CARGO_BIN_EXE_tresor"))
            .args(["tre", "quote", "--tcti", &swtpm.tcti(), "--nonce", nonce, "--ak", ak])
            .args(["--pcrs", "sha256:0,1,2,3,4,5,6,7"])
            .arg("--out")
            .arg(out.path())
            .status()
            .unwrap();
        assert!(status.success());
        for file in ["quote.msg", "quote.sig", "quote.pcrs", "ak.pem"] {
            assert!(out.path().join(file).exists(), "{file}");
        }
        let good = checkquote(out.path(), nonce);
        assert!(good.status.success(), "{ak}: {}", String::from_utf8_lossy(&good.stderr));
        let other = "00".repeat(32);
        let bad = checkquote(out.path(), &other);
        assert!(!bad.status.success(), "{ak}: tpm2_checkquote accepted another nonce");
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_tresor"))
        .args(["tre", "quote", "--tcti", "swtpm:host=127.0.0.1,port=1", "--nonce", "zz"])
        .args(["--out", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nonce is not hex"));
}
