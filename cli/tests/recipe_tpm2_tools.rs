//! The recipe of docs/recipes/tpm2-tools-attester.md, run as written: its script
//! (docs/recipes/tpm2-tools-attest.sh) drives a plain swtpm with tpm2-tools 5.4 and talks to
//! a real `tresor serve pva` with curl and JSON bodies; nothing of tresor runs on the
//! attester's side. The EAR it saves verifies with `tresor ear verify`, and a TPM whose
//! PCR differs from the pinned value gets a contraindicated one.
//!
//! Needs tpm2-tools, curl and a python3 with cbor2 (`TRESOR_COSE_PYTHON`, the venv `make
//! deps` makes); without them the test says so and passes, unless
//! `TRESOR_REQUIRE_INTEROP=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{TRESOR, prepare};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/recipes/tpm2-tools-attest.sh")
}

/// The python with cbor2 the recipe needs, if there is one.
fn python() -> Option<PathBuf> {
    let python = std::env::var_os("TRESOR_COSE_PYTHON").map_or("python3".into(), PathBuf::from);
    let ok = Command::new(&python)
        .args(["-c", "import cbor2"])
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("tpm2_quote").arg("--version").output().is_ok()
        && Command::new("curl").arg("--version").output().is_ok();
    if ok {
        return Some(python);
    }
    let required = std::env::var("TRESOR_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "tpm2-tools, curl and python3 with cbor2 are required (TRESOR_REQUIRE_INTEROP=1)"
    );
    eprintln!("SKIPPED: the recipe needs tpm2-tools, curl and python3 with cbor2");
    None
}

fn run_recipe(dir: &Path, python: &Path, tcti: &str, url: &str, policy: &str, out: &str) -> Output {
    let path = format!(
        "{}:{}",
        python.parent().map_or(String::new(), |p| p.display().to_string()),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .arg(script())
        .current_dir(dir)
        .env("PATH", path)
        .env("TPM2TOOLS_TCTI", tcti)
        .env("PVA", url)
        .env("CA", dir.join("pki/ci.pem"))
        .env("CLIENT_CERT", dir.join("pki/ro.pem"))
        .env("CLIENT_KEY", dir.join("pki/ro.key"))
        .env("POLICY", policy)
        .env("OUT", dir.join(out))
        .env("TSS2_LOG", "all+NONE")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_tpm2_tools_recipe_gets_an_ear() {
    let Some(python) = python() else { return };
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    prepare(dir);
    let lab = support::pinned::start(dir);
    let (tcti, device, url) = (lab.tcti.clone(), lab.device.clone(), lab.url.clone());

    let out = run_recipe(dir, &python, &tcti, &url, "swtpm-pinned", "good");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("status affirming failed checks none"), "{}", text(&out));
    let verified = Command::new(TRESOR)
        .current_dir(dir)
        .args(["ear", "verify", "good/ear.cbor", "--ca", "pki/ci.pem", "--device", &device])
        .output()
        .unwrap();
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));

    // The same TPM against a policy that pins PCR 23 elsewhere: an EAR, not affirming,
    // naming the PCR.
    let out = run_recipe(dir, &python, &tcti, &url, "swtpm-wrong", "wrong");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("status contraindicated"), "{}", text(&out));
    let shown = Command::new(TRESOR)
        .current_dir(dir)
        .args(["ear", "verify", "wrong/ear.cbor", "--ca", "pki/ci.pem", "--any-status"])
        .output()
        .unwrap();
    assert!(text(&shown).contains("PCR 23"), "{}", text(&shown));
}
