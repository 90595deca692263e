//! `tresor serve pva` reads its policies and reference values again on SIGHUP, all or
//! nothing: a configuration that does not load leaves the running policies as they were,
//! and the process serves on. The real binary, configured from `examples/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::{edit, log, prepare, serve_logging, wait_until};

fn hang_up(pid: u32) {
    assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
}

#[test]
fn sighup_reloads_the_policies_and_a_broken_one_changes_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    prepare(dir);
    edit(&dir.join("pva.toml"), &[("127.0.0.1:8440", "127.0.0.1:0")]);
    let (mut pva, _url) = serve_logging(dir, "pva", "pva", "pva.toml", "info");
    let pid = pva.child.id();

    // A second policy, made the default.
    let first = std::fs::read_to_string(dir.join("reference-values.toml")).unwrap();
    let second = first.replacen("id = \"tresor-sample-m2me-2025.1\"", "id = \"second\"", 1);
    assert_ne!(first, second);
    std::fs::write(dir.join("second.toml"), second).unwrap();
    edit(
        &dir.join("pva.toml"),
        &[(
            r#"policies = ["reference-values.toml"]"#,
            "policies = [\"reference-values.toml\", \"second.toml\"]\ndefault_policy = \"second\"",
        )],
    );
    hang_up(pid);
    assert!(
        wait_until(Duration::from_secs(10), || log(dir, "pva")
            .contains("SIGHUP: policies reloaded")),
        "{}",
        log(dir, "pva")
    );
    assert!(log(dir, "pva").contains("second"), "{}", log(dir, "pva"));

    // A policy file that does not load: refused, logged, and the PVA serves on.
    std::fs::write(dir.join("second.toml"), "not reference values").unwrap();
    hang_up(pid);
    assert!(
        wait_until(Duration::from_secs(10), || log(dir, "pva").contains("policies not reloaded")),
        "{}",
        log(dir, "pva")
    );
    assert!(pva.child.try_wait().unwrap().is_none(), "the PVA exited:\n{}", log(dir, "pva"));
}
