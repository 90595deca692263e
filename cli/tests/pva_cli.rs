//! `tresor pva` and `tresor bench appraisal` as a user runs them: check-quote on quotes
//! made by the real `tpm2_quote` on swtpm (valid ones pass; a changed nonce, PCR file or
//! signature fails), reference values from the example image, the benchmark's JSON.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tre::swtpm::{Swtpm, SwtpmConfig};

const NONCE: &str = "3f9c2d1e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49382716f5e4d3c2b1a09f8e7d6c";

fn tresor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tresor"))
}

fn example_image() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/image")
}

/// Runs a tpm2-tools program against `tcti` in `dir`, then flushes transient objects
/// (swtpm reached directly has no resource manager).
fn tool(tcti: &str, dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("TPM2TOOLS_TCTI", tcti)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (tpm2-tools; make deps)"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let _ = Command::new("tpm2_flushcontext").arg("-t").env("TPM2TOOLS_TCTI", tcti).output();
}

fn check(dir: &Path, pcrs: &str, sig: &str, nonce: &str) -> Output {
    tresor()
        .current_dir(dir)
        .args(["pva", "check-quote", "--ak", "ak.pem", "--msg", "quote.msg", "--sig", sig])
        .args(["--pcrs", pcrs, "--nonce", nonce, "-g", "sha256"])
        .output()
        .unwrap()
}

#[test]
fn check_quote_accepts_tpm2_quote_output_and_names_what_is_wrong() {
    for (alg, scheme) in [("ecc", "ecdsa"), ("rsa", "rsassa")] {
        let swtpm = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
        let tcti = swtpm.tcti();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        tool(&tcti, d, "tpm2_createek", &["-c", "ek.ctx", "-G", alg, "-u", "ek.pub"]);
        tool(
            &tcti,
            d,
            "tpm2_createak",
            &[
                "-C", "ek.ctx", "-c", "ak.ctx", "-G", alg, "-g", "sha256", "-s", scheme, "-u",
                "ak.pem", "-f", "pem",
            ],
        );
        tool(&tcti, d, "tpm2_pcrextend", &[&format!("4:sha256={}", "ab".repeat(32))]);
        tool(
            &tcti,
            d,
            "tpm2_quote",
            &["-c", "ak.ctx", "-l", "sha256:0,1,2,3,4,5,6,7,8,9", "-q", NONCE, "-m", "quote.msg"],
        );
        // tpm2_quote with all outputs (the line above checks -m alone parses too).
        tool(
            &tcti,
            d,
            "tpm2_quote",
            &[
                "-c",
                "ak.ctx",
                "-l",
                "sha256:0,1,2,3,4,5,6,7,8,9",
                "-q",
                NONCE,
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
                "-o",
                "quote.pcrs",
                "-g",
                "sha256",
            ],
        );
        let good = check(d, "quote.pcrs", "quote.sig", NONCE);
        assert!(good.status.success(), "{alg}: {}", String::from_utf8_lossy(&good.stderr));
        assert!(String::from_utf8_lossy(&good.stdout).contains("quote verified"));

        let other_nonce = "00".repeat(32);
        let out = check(d, "quote.pcrs", "quote.sig", &other_nonce);
        assert_eq!(out.status.code(), Some(1), "{alg}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("qualifying data is not the nonce"));

        let mut pcrs = std::fs::read(d.join("quote.pcrs")).unwrap();
        // TPML_PCR_SELECTION (132) ‖ list count (4) ‖ TPML_DIGEST.count (4) ‖ size (2) ‖ PCR 0
        pcrs[142] ^= 0x01;
        std::fs::write(d.join("changed.pcrs"), &pcrs).unwrap();
        let out = check(d, "changed.pcrs", "quote.sig", NONCE);
        assert_eq!(out.status.code(), Some(1), "{alg}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("PCR digest"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let mut sig = std::fs::read(d.join("quote.sig")).unwrap();
        let last = sig.len() - 1;
        sig[last] ^= 0x01;
        std::fs::write(d.join("changed.sig"), &sig).unwrap();
        let out = check(d, "quote.pcrs", "changed.sig", NONCE);
        assert_eq!(out.status.code(), Some(1), "{alg}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("signature"));

        // Not a file a user can fix by looking elsewhere: a clear error, not a panic.
        let out = tresor()
            .current_dir(d)
            .args(["pva", "check-quote", "--ak", "missing.pem", "--msg", "quote.msg"])
            .args(["--sig", "quote.sig", "--pcrs", "quote.pcrs", "--nonce", NONCE])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("missing.pem"));
    }
}

#[test]
fn reference_values_are_derived_from_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("refvalues.toml");
    let status = tresor()
        .args(["pva", "reference-values", "--image"])
        .arg(example_image())
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let refs = verifier::ReferenceValues::load(&out).unwrap();
    assert_eq!(refs.id(), "tresor-sample-m2me-2025.1");
    assert_eq!(refs.policy().selection.to_string(), "sha256:0,2,4,8,9");

    let missing =
        tresor().args(["pva", "reference-values", "--image", "/nonexistent"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent"));
}

#[test]
fn bench_appraisal_prints_its_figures_as_json() {
    let out = tresor()
        .args(["bench", "appraisal", "--json", "--seconds", "0.2", "--threads", "2", "--image"])
        .arg(example_image())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["appraisals_per_s", "p256_verify_per_s", "core_appraisals_per_s"] {
        assert!(json[key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert_eq!(json["verifies_per_appraisal"], 2);
}
