//! `tresor serve ROLE --check`: a configuration, its certificates and its store judged
//! without starting anything, and without writing to the store. The real binary, configured
//! from `examples/` as a newcomer would; every refusal is a configuration a start would
//! refuse too (or, for an expired certificate, one its peers would).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use support::{TRESOR, edit, prepare, serve};

/// Runs the check; its exit status and its report.
fn check(dir: &Path, role: &str, config: &str) -> (i32, String) {
    let out = Command::new(TRESOR)
        .current_dir(dir)
        .args(["serve", role, "--config", config, "--check"])
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap(), text)
}

fn snapshot(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn every_role_checks_ready_and_refuses_what_a_start_refuses() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    prepare(dir);
    edit(&dir.join("pva.toml"), &[("127.0.0.1:8440", "127.0.0.1:0")]);
    edit(&dir.join("mno-a.toml"), &[("127.0.0.1:8441", "127.0.0.1:0")]);

    // Before the first start: ready, and the check creates no store.
    for (role, config, store) in [
        ("pva", "pva.toml", "pva.sqlite"),
        ("mno", "mno-a.toml", "mno-a.sqlite"),
        ("ro", "ro.toml", "ro.sqlite"),
    ] {
        let (code, report) = check(dir, role, config);
        assert_eq!(code, 0, "{report}");
        assert!(report.contains("a start creates the store"), "{report}");
        assert!(report.contains("valid until"), "{report}");
        assert!(!dir.join(store).exists(), "the check created {store}");
    }

    // After a start: the stores are the roles' own, and a check leaves their bytes alone.
    drop(serve(dir, "pva", "pva", "pva.toml"));
    drop(serve(dir, "mno-a", "mno", "mno-a.toml"));
    for (role, config, store) in
        [("pva", "pva.toml", "pva.sqlite"), ("mno", "mno-a.toml", "mno-a.sqlite")]
    {
        let before = snapshot(&dir.join(store));
        let (code, report) = check(dir, role, config);
        assert_eq!(code, 0, "{report}");
        assert!(report.contains("this role's store, intact"), "{report}");
        assert_eq!(snapshot(&dir.join(store)), before, "the check wrote to {store}");
    }

    // The operator's store with another storage key: refused, as a start refuses it.
    std::fs::copy(dir.join("mno-a.toml"), dir.join("wrong-key.toml")).unwrap();
    private_file(&dir.join("other-store.key"), &"5a".repeat(32));
    edit(&dir.join("wrong-key.toml"), &[("mno-a-store.key", "other-store.key")]);
    let (code, report) = check(dir, "mno", "wrong-key.toml");
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("FAIL") && report.contains("storage key"), "{report}");

    // The RO pointed at the PVA's store.
    std::fs::copy(dir.join("ro.toml"), dir.join("other-store.toml")).unwrap();
    edit(&dir.join("other-store.toml"), &[("\"ro.sqlite\"", "\"pva.sqlite\"")]);
    let (code, report) = check(dir, "ro", "other-store.toml");
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("a pva store, not a ro store"), "{report}");

    // The PVA's certificate swapped for the RO's: another role.
    std::fs::copy(dir.join("pva.toml"), dir.join("wrong-role.toml")).unwrap();
    edit(
        &dir.join("wrong-role.toml"),
        &[("pki/pva.pem", "pki/ro.pem"), ("pki/pva.key", "pki/ro.key")],
    );
    let (code, report) = check(dir, "pva", "wrong-role.toml");
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("FAIL  TLS certificate pki/ro.pem"), "{report}");

    // An expired TLS certificate, properly issued by the CI for the PVA role.
    expired_pva_certificate(dir);
    std::fs::copy(dir.join("pva.toml"), dir.join("expired.toml")).unwrap();
    edit(
        &dir.join("expired.toml"),
        &[
            ("tls_certificate = \"pki/pva.pem\"", "tls_certificate = \"expired.pem\""),
            ("tls_key = \"pki/pva.key\"", "tls_key = \"expired.key\""),
        ],
    );
    let (code, report) = check(dir, "pva", "expired.toml");
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("FAIL  TLS certificate expired.pem") && report.contains("expired"),
        "{report}"
    );

    // Not a configuration at all.
    std::fs::write(dir.join("garbage.toml"), "listen = [").unwrap();
    let (code, report) = check(dir, "pva", "garbage.toml");
    assert_eq!(code, 1, "{report}");
}

/// `expired.pem`/`expired.key`: a PVA certificate of the lab's CI that expired yesterday.
fn expired_pva_certificate(dir: &Path) {
    use rcgen::{CertificateParams, CustomExtension, Issuer, KeyPair, SanType};
    let ci_key =
        KeyPair::from_pem(&std::fs::read_to_string(dir.join("pki/ci.key")).unwrap()).unwrap();
    let ci_pem = std::fs::read_to_string(dir.join("pki/ci.pem")).unwrap();
    let ci = Issuer::from_ca_cert_pem(&ci_pem, ci_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["pva.tresor.internal".into()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "pva");
    params.subject_alt_names.push(SanType::DnsName("localhost".try_into().unwrap()));
    let day = Duration::from_secs(86_400);
    params.not_before = (SystemTime::now() - 30 * day).into();
    params.not_after = (SystemTime::now() - day).into();
    params.custom_extensions = vec![CustomExtension::from_oid_content(
        &[2, 5, 29, 32],
        protocol::role::Role::Pva.policies_der(),
    )];
    let cert = params.signed_by(&key, &ci).unwrap();
    std::fs::write(dir.join("expired.pem"), cert.pem()).unwrap();
    private_file(&dir.join("expired.key"), &key.serialize_pem());
}

fn private_file(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
}
