//! The attack matrix (issue 7, `docs/SECURITY.md`) as a test: the whole matrix runs once
//! against a lab on swtpm devices and loopback HTTPS; every attack must be rejected at the
//! stage it names, by the check it names, and `docs/SECURITY.md` must carry the matrix this
//! run produces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::OnceLock;

use tresor::attack::{self, Options, Report, Verdict};

/// The run both tests look at (the matrix takes 10 to 15 s; it runs once).
fn report() -> &'static Report {
    static REPORT: OnceLock<Report> = OnceLock::new();
    REPORT.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(attack::run(&Options::default())).unwrap()
    })
}

#[test]
fn every_attack_is_rejected_at_its_expected_stage() {
    let report = report();
    assert!(
        report.baseline.is_ok(),
        "a genuine device must switch in the lab: {:?}",
        report.baseline
    );
    assert_eq!(report.scenarios.len(), attack::scenarios().len());
    let failed: Vec<String> = report
        .scenarios
        .iter()
        .filter(|r| r.verdict != Verdict::Pass)
        .map(|r| format!("{} ({:?}): {:?}", r.scenario.name, r.verdict, r.observed))
        .collect();
    assert!(
        failed.is_empty(),
        "not rejected where expected:\n{}\n\n{}",
        failed.join("\n"),
        report.table()
    );
    // The JSON document has the promised shape.
    let json = report.to_json();
    for s in json["scenarios"].as_array().unwrap() {
        assert_eq!(s["expected"], "rejected");
        assert_eq!(s["observed"], "rejected");
        for key in ["name", "stage", "error"] {
            assert!(s[key].is_string(), "{key} in {s}");
        }
    }
}

#[test]
fn security_md_carries_the_matrix_of_this_run() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/SECURITY.md");
    let document = std::fs::read_to_string(&path).unwrap();
    let expected = report().markdown_matrix();
    let actual = attack::matrix_of(&document).unwrap_or_default();
    assert_eq!(
        actual,
        expected.trim_end(),
        "docs/SECURITY.md is out of date: run `tresor attack --markdown docs/SECURITY.md`"
    );
}
