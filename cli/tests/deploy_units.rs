//! The systemd units of `deploy/`: each passes `systemd-analyze verify` (where systemd is
//! installed; elsewhere the test says so and passes) with the binary this build made in
//! place of `/usr/local/bin/tresor`, and each runs a command line this binary accepts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

const TRESOR: &str = env!("CARGO_BIN_EXE_tresor");

fn units() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut units: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    assert_eq!(units.len(), 3, "{units:?}");
    units
}

#[test]
fn every_unit_verifies() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed: the units are not verified here");
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    for unit in units() {
        let text = std::fs::read_to_string(&unit).unwrap().replace("/usr/local/bin/tresor", TRESOR);
        // An instance of a template unit is what systemd verifies.
        let name = unit.file_name().unwrap().to_str().unwrap().replace("@.", "@mno-a.");
        let path = temp.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{}: {said}", unit.display());
    }
}

/// Each Exec line's arguments parse (`--help` appended: clap checks the subcommand and
/// flags before it prints help, and nothing runs).
#[test]
fn every_command_line_is_one_this_binary_accepts() {
    for unit in units() {
        let text = std::fs::read_to_string(&unit).unwrap();
        for line in text.lines().filter(|l| l.starts_with("ExecStart")) {
            let command = line.split_once('=').unwrap().1.replace("%i", "mno-a");
            let mut words = command.split_whitespace();
            assert_eq!(words.next(), Some("/usr/local/bin/tresor"), "{line}");
            let out = Command::new(TRESOR).args(words).arg("--help").output().unwrap();
            assert!(
                out.status.success(),
                "{}: {line}: {}",
                unit.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
