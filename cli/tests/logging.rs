//! Log output of the real binary: text without colour codes when stderr is not a terminal
//! (a file, a pipe, journald), and one JSON object per line with `--log-format json` or
//! `TRESOR_LOG_FORMAT=json`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

const TRESOR: &str = env!("CARGO_BIN_EXE_tresor");

fn pki_init_log(args: &[&str], env: &[(&str, &str)]) -> String {
    let temp = tempfile::tempdir().unwrap();
    let out = Command::new(TRESOR)
        .args(args)
        .args(["pki", "init"])
        .arg(temp.path().join("pki"))
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn text_logs_to_a_pipe_carry_no_escape_codes() {
    let log = pki_init_log(&[], &[]);
    assert!(log.contains("PKI created"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in a piped log: {log:?}");
}

#[test]
fn json_logs_are_one_object_per_line_with_their_fields() {
    for (args, env) in
        [(&["--log-format", "json"][..], &[][..]), (&[][..], &[("TRESOR_LOG_FORMAT", "json")][..])]
    {
        let log = pki_init_log(args, env);
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let created = lines
            .iter()
            .find(|l| l["message"] == "PKI created")
            .unwrap_or_else(|| panic!("no PKI created line: {log}"));
        assert_eq!(created["level"], "INFO");
        assert!(created["dir"].as_str().unwrap().ends_with("pki"), "{created}");
        assert!(created["timestamp"].is_string());
    }
}
