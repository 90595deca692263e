//! `tresor pki init` and `tresor pki check` as a user runs them: the real binary, the files it
//! writes, its refusal to overwrite, and `openssl verify` on the result.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn tresor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tresor")).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn pki_init_check_and_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");

    let out = tresor(&["pki", "init", path(&dir)]);
    assert!(out.status.success(), "{}", text(&out));
    for name in ["ci", "pva", "ro", "mno-a", "mno-b", "manufacturer"] {
        assert!(dir.join(format!("{name}.pem")).is_file(), "{name}.pem");
        let key = dir.join(format!("{name}.key"));
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600,
            "{name}.key"
        );
    }
    for role in ["pva", "ro", "mno-a", "mno-b"] {
        let out = Command::new("openssl")
            .args(["verify", "-CAfile", "ci.pem", &format!("{role}.pem")])
            .current_dir(&dir)
            .output()
            .expect("openssl (make deps)");
        assert!(out.status.success(), "openssl verify {role}.pem: {}", text(&out));
    }

    let out = tresor(&["pki", "check", path(&dir)]);
    assert!(out.status.success(), "{}", text(&out));

    let before = std::fs::read(dir.join("ci.pem")).unwrap();
    let out = tresor(&["pki", "init", path(&dir)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--force"), "{}", text(&out));
    assert_eq!(std::fs::read(dir.join("ci.pem")).unwrap(), before);

    let out = tresor(&["pki", "init", "--force", path(&dir)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(std::fs::read(dir.join("ci.pem")).unwrap(), before);

    std::fs::set_permissions(dir.join("mno-b.key"), std::fs::Permissions::from_mode(0o640))
        .unwrap();
    let out = tresor(&["pki", "check", path(&dir)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("mno-b.key"), "{}", text(&out));
}

#[test]
fn pki_with_named_operators_and_one_added_later() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out = tresor(&["pki", "init", path(&dir), "--operator", "mno-a,acme-mobile"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("acme-mobile.pem"), "{}", text(&out));
    assert!(!dir.join("mno-b.pem").exists());

    let out = tresor(&["pki", "add-operator", path(&dir), "op7"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = tresor(&["pki", "check", path(&dir)]);
    assert!(out.status.success() && text(&out).contains("op7.pem"), "{}", text(&out));

    for bad in ["op7", "pva", "Bad_Name"] {
        let out = tresor(&["pki", "add-operator", path(&dir), bad]);
        assert!(!out.status.success(), "{bad}: {}", text(&out));
    }
}
