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

use protocol::tpm::{HashAlg, PcrSelection};
use support::{TRESOR, edit, prepare, serve};
use tre::swtpm::{Swtpm, SwtpmConfig};
use tre::tpm::{KeyAlg, Tpm};

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

fn policy(id: &str, values: &[(u8, String)]) -> String {
    let mut t = format!(
        "format = 1\nid = \"{id}\"\n\n[pcr_map]\n\"0\" = \"firmware (swtpm: none)\"\n\
         \"16\" = \"debug\"\n\"23\" = \"application support\"\n\n[policy]\n\
         pcr_selection = \"sha256:0,16,23\"\nbanks = [\"sha256\"]\nbundle_key = \"none\"\n\n\
         [pcr_values.sha256]\n"
    );
    for (pcr, value) in values {
        t.push_str(&format!("\"{pcr}\" = \"{value}\"\n"));
    }
    t
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
    let swtpm = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
    let tcti = swtpm.tcti();

    // The known-good state, as an operator reads it from a reference machine: PCRs 16 and
    // 23 extended by its application; the EK name for the PVA's allow-list.
    let (device, values) = {
        let mut tpm = Tpm::connect(&tcti).unwrap();
        let ek = tpm.ek(KeyAlg::Ecc).unwrap();
        let device = hex::encode(&ek.name);
        tpm.release(ek).unwrap();
        for pcr in [16, 23] {
            tpm.pcr_extend(
                pcr,
                &[(HashAlg::Sha1, vec![pcr; 20]), (HashAlg::Sha256, vec![pcr; 32])],
            )
            .unwrap();
        }
        let selection: PcrSelection = "sha256:0,16,23".parse().unwrap();
        let values = tre::attester::read_pcrs(&mut tpm, &selection).unwrap();
        (device, values.iter().map(|(_, pcr, v)| (pcr, hex::encode(v))).collect::<Vec<_>>())
    };
    let mut wrong = values.clone();
    wrong[1].1 = "ab".repeat(32);
    std::fs::write(dir.join("pinned.toml"), policy("swtpm-pinned", &values)).unwrap();
    std::fs::write(dir.join("wrong.toml"), policy("swtpm-wrong", &wrong)).unwrap();
    std::fs::write(dir.join("ek-allow.txt"), format!("{device}\n")).unwrap();
    edit(
        &dir.join("pva.toml"),
        &[
            ("127.0.0.1:8440", "127.0.0.1:0"),
            (
                r#"policies = ["reference-values.toml"]"#,
                "policies = [\"reference-values.toml\", \"pinned.toml\", \"wrong.toml\"]\n\
                 default_policy = \"tresor-sample-m2me-2025.1\"\nek_allow_list = \"ek-allow.txt\"",
            ),
        ],
    );
    let (_pva, url) = serve(dir, "pva", "pva", "pva.toml");

    let out = run_recipe(dir, &python, &tcti, &url, "swtpm-pinned", "good");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("status affirming failed checks none"), "{}", text(&out));
    let verified = Command::new(TRESOR)
        .current_dir(dir)
        .args(["ear", "verify", "good/ear.cbor", "--ca", "pki/ci.pem", "--device", &device])
        .output()
        .unwrap();
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));

    // The same TPM against a policy that pins PCR 16 elsewhere: an EAR, not affirming,
    // naming the PCR.
    let out = run_recipe(dir, &python, &tcti, &url, "swtpm-wrong", "wrong");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("status contraindicated"), "{}", text(&out));
    let shown = Command::new(TRESOR)
        .current_dir(dir)
        .args(["ear", "verify", "wrong/ear.cbor", "--ca", "pki/ci.pem", "--any-status"])
        .output()
        .unwrap();
    assert!(text(&shown).contains("16"), "{}", text(&shown));
}
