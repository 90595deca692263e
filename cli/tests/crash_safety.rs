//! Crash safety of the subscription change (docs/flow.md, "Crash safety"): every role runs as
//! its own process and is killed with SIGKILL just before and just after each of its durable
//! writes (`TRESOR_FAULT`, `protocol::fault`), frozen with SIGSTOP past its peers' timeouts,
//! or made to fail a write as a full disk does — then restarted, until the campaign settles.
//! Each test then checks the invariants on the stores, the cards and with a real Milenage
//! AKA against each operator's AuC:
//! 1. every device ends switched (new IMSI on the card, AKA with MNO-B ok, IMSI_A retired at
//!    MNO-A) or rolled back (old IMSI on the card, USIM active, AKA with MNO-A ok, IMSI_B not
//!    live);
//! 2. no device gets two new IMSIs, no IMSI is issued twice, each operator holds each final
//!    report once, agreeing with the RO;
//! 3. nothing is left in a non-terminal state once every role is back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deployment;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use deployment::{Deployment, Options};

/// `kill` faults before and after each of `points`.
fn kills(points: &[&str]) -> Vec<String> {
    points.iter().flat_map(|p| [format!("{p}.before:kill"), format!("{p}.after:kill")]).collect()
}

/// Runs a campaign under `faults` to its end and checks the invariants; returns (switched,
/// rolled back).
fn run(options: Options, faults: BTreeMap<&str, Vec<String>>) -> (usize, usize) {
    let devices = options.devices;
    let mut lab = Deployment::start(options, &faults);
    let id = lab.create_campaign();
    lab.run_devices();
    let status = lab.settle(&id, Duration::from_secs(240));
    let unfired = lab.unfired();
    assert!(unfired.is_empty(), "faults that never fired: {unfired:?}\n{status:#}");
    eprintln!("faults fired: {:?}", lab.fired());
    let (switched, rolled_back) = lab.check_invariants(&id, &status);
    assert_eq!(switched + rolled_back, devices);
    (switched, rolled_back)
}

#[test]
fn the_ro_killed_at_every_durable_write() {
    let mut points = vec![
        "ro.campaign-created",
        "ro.campaign-step-1",
        "ro.campaign-step-2",
        "ro.campaign-step-3",
    ];
    points.extend([
        "ro.tre-activation-issued",
        "ro.attached",
        "ro.registered",
        "ro.enrolling",
        "ro.enrolled",
        "ro.attesting",
        "ro.appraising",
        "ro.attested",
        "ro.delivered",
        "ro.installed",
        "ro.aka",
        "ro.aka-answered",
        "ro.committing",
        "ro.switched",
        "ro.outbox-delivered",
    ]);
    let faults = BTreeMap::from([("ro", kills(&points))]);
    let (switched, _) = run(Options::default(), faults);
    assert_eq!(switched, 2, "no crash of the RO costs a device its switch");
}

#[test]
fn the_operators_killed_at_every_durable_write() {
    let a = kills(&["mno.campaign", "mno.imsi-list", "mno.activate-tre", "mno.report"]);
    let b = kills(&[
        "mno.campaign",
        "mno.prepare",
        "mno.register",
        "mno.attestation",
        "mno.aka-challenge",
        "mno.aka-response",
        "mno.report",
    ]);
    let faults = BTreeMap::from([("mno-a", a), ("mno-b", b)]);
    let (switched, _) = run(Options::default(), faults);
    assert_eq!(switched, 2, "no crash of an operator costs a device its switch");
}

#[test]
fn the_pva_killed_at_every_durable_write() {
    let faults = BTreeMap::from([(
        "pva",
        kills(&["pva.enrol", "pva.activate", "pva.challenge", "pva.appraise"]),
    )]);
    let (switched, _) = run(Options::default(), faults);
    assert_eq!(switched, 2, "no crash of the PVA costs a device its switch");
}

#[test]
fn the_device_killed_at_every_durable_write() {
    let mut schedule = kills(&["uicc.ota"]);
    for point in [
        "device.activate-tre.after",
        "device.enrol.after",
        "device.activate-credential.after",
        "device.attest.after",
        "device.install.before",
        "uicc.install.before",
        "uicc.install.after",
        "device.counter.before",
        "device.counter.after",
        "device.journal.before",
        "device.install.after",
        "device.aka.after",
        "device.commit.before",
        "uicc.commit.before",
        "uicc.commit.after",
        "device.commit.after",
    ] {
        schedule.push(format!("{point}:kill"));
    }
    let faults = BTreeMap::from([("device-0", schedule)]);
    let (switched, _) = run(Options::default(), faults);
    assert_eq!(switched, 2, "an agent killed anywhere continues where it stopped");
}

/// Device 1 boots an image the PVA does not know: its change is abandoned at step 8, the
/// RO orders the abort, the card falls back, both operators are told.
fn abandoned(faults: BTreeMap<&str, Vec<String>>) {
    let options = Options { tampered: vec![1], ..Options::default() };
    assert_eq!(run(options, faults), (1, 1));
}

#[test]
fn an_abandoned_change_survives_the_ro_and_the_old_operator_dying() {
    abandoned(BTreeMap::from([
        ("ro", kills(&["ro.aborting", "ro.rolled-back"])),
        ("mno-a", kills(&["mno.report"])),
    ]));
}

#[test]
fn an_abandoned_change_survives_the_device_dying() {
    let schedule = [
        "device.abort.before",
        "uicc.fall-back.before",
        "uicc.fall-back.after",
        "device.abort.after",
    ];
    abandoned(BTreeMap::from([(
        "device-1",
        schedule.iter().map(|p| format!("{p}:kill")).collect(),
    )]));
}

#[test]
fn frozen_peers_and_failed_writes_are_waited_out() {
    // SIGSTOP past the RO's peer timeout (3 s here) and writes that fail as on a full disk:
    // every one is retried, none abandons a change.
    // (One process start each: several faults of one process are one comma-separated plan.)
    let faults = BTreeMap::from([
        ("mno-b", vec!["mno.attestation.before:error,mno.aka-response.before:stop".into()]),
        ("pva", vec!["pva.appraise.before:stop".into()]),
        ("mno-a", vec!["mno.report.before:stop".into()]),
        ("ro", vec!["ro.delivered.before:error,ro.switched.before:error".into()]),
        ("device-0", vec!["uicc.install.before:error".into()]),
    ]);
    let options = Options { thaw_after: Duration::from_secs(6), ..Options::default() };
    let (switched, rolled_back) = run(options, faults);
    // Device 0's failed card write abandons its change (the card keeps the old profile);
    // everything else waits until the peer is back.
    assert_eq!((switched, rolled_back), (1, 1));
}
