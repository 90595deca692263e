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

use deployment::{Deployment, Options, XorShift};

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
        // Each device binds its AK before its first task.
        "ro.bind-ak",
    ];
    points.extend([
        "ro.tre-activation-issued",
        "ro.tre-activated",
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
    let a = kills(&[
        "mno.campaign",
        "mno.imsi-list",
        "mno.activate-tre",
        "mno.tre-activated",
        "mno.report",
    ]);
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

#[test]
fn the_fallback_timer_wins_over_a_late_commit() {
    // The RO decides to commit and freezes before the device hears of it; the card's
    // fallback timer (4 s) restores the old profile first. The device's signed "fell back"
    // makes it a rollback: MNO-B retires the IMSI_B its AuC had already made live, MNO-A
    // keeps IMSI_A.
    let options = Options {
        devices: 1,
        fallback_secs: 4,
        thaw_after: Duration::from_secs(10),
        ..Options::default()
    };
    let faults = BTreeMap::from([("ro", vec!["ro.committing.after:stop".to_owned()])]);
    assert_eq!(run(options, faults), (0, 1));
}

#[test]
fn the_fallback_timer_runs_while_the_new_operator_is_frozen() {
    let options = Options {
        devices: 1,
        fallback_secs: 4,
        thaw_after: Duration::from_secs(10),
        ..Options::default()
    };
    let faults = BTreeMap::from([("mno-b", vec!["mno.aka-challenge.before:stop".to_owned()])]);
    assert_eq!(run(options, faults), (0, 1));
}

#[test]
fn a_campaign_whose_creation_fails_releases_its_devices() {
    // MNO-B is down past the creation deadline: the campaign fails, its devices are released
    // at MNO-A by failure reports (and at MNO-B, once it is back, the campaign is closed).
    // A new campaign for the same devices then switches them.
    let options = Options { step_deadline_secs: 6, ..Options::default() };
    let mut lab = Deployment::start(options, &BTreeMap::new());
    lab.role("mno-b").hold();
    let id = lab.create_campaign();
    let status = lab.wait_for(&id, Duration::from_secs(60), |s| s["state"] == "failed");
    assert!(status["failure"].as_str().unwrap().contains("mno-b"), "{status:#}");
    lab.role("mno-b").release();
    let status = lab.settle(&id, Duration::from_secs(60));
    assert_eq!(status["summary"]["failed"], 2, "{status:#}");
    let again = lab.new_campaign();
    lab.run_devices();
    let status = lab.settle(&again, Duration::from_secs(120));
    assert_eq!(lab.check_invariants(&again, &status), (2, 0));
}

#[test]
fn a_cancelled_campaign_releases_every_device() {
    // Device 0 is under way (MNO-B frozen while it signs its profile) when the campaign is
    // cancelled; device 1 never started. Both end on their old profile, released at both
    // operators: a new campaign switches both.
    let options = Options { thaw_after: Duration::from_secs(3600), ..Options::default() };
    let faults = BTreeMap::from([("mno-b", vec!["mno.attestation.before:stop".to_owned()])]);
    let mut lab = Deployment::start(options, &faults);
    let id = lab.create_campaign();
    lab.run_device(0);
    lab.wait_frozen("mno-b", Duration::from_secs(60));
    let cancelled = lab.cli(&["campaign", "cancel", &id]);
    assert_eq!(cancelled["state"], "cancelling", "{cancelled:#}");
    lab.thaw("mno-b");
    let status = lab.settle(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "cancelled", "{status:#}");
    assert_eq!(status["summary"]["failed"], 2, "{status:#}");
    let again = lab.new_campaign();
    lab.run_devices();
    let status = lab.settle(&again, Duration::from_secs(120));
    assert_eq!(lab.check_invariants(&again, &status), (2, 0));
}

#[test]
fn full_disks_are_waited_out() {
    // Every store on a small tmpfs of its own. Each role is frozen just before a write
    // (`stop`), its disk filled to the last byte, then it goes on: the write fails
    // (SQLITE_FULL, ENOSPC) and is retried until the disk is freed a few seconds later. A
    // card that cannot take the new profile keeps its old one until it can.
    let disks = ["pva", "ro", "mno-b", "device-0"].map(str::to_owned).to_vec();
    let options = Options {
        small_disks: disks.clone(),
        thaw_after: Duration::from_secs(3600),
        ..Options::default()
    };
    let faults = BTreeMap::from([
        ("pva", vec!["pva.enrol.before:stop".to_owned()]),
        ("ro", vec!["ro.attesting.before:stop".to_owned()]),
        ("mno-b", vec!["mno.attestation.before:stop".to_owned()]),
        ("device-0", vec!["uicc.install.before:stop".to_owned()]),
    ]);
    let mut lab = Deployment::start(options, &faults);
    let id = lab.create_campaign();
    lab.run_devices();
    for disk in &disks {
        lab.wait_frozen(disk, Duration::from_secs(90));
        lab.fill(disk);
        lab.thaw(disk);
        lab.tend_for(Duration::from_secs(3));
        lab.unfill(disk);
    }
    let status = lab.settle(&id, Duration::from_secs(180));
    for disk in &disks {
        let log = support::log(&lab.dir, disk);
        assert!(
            ["disk is full", "disk I/O error", "No space left on device"]
                .iter()
                .any(|m| log.contains(m)),
            "{disk} never saw its disk full:\n{log}"
        );
    }
    assert_eq!(lab.check_invariants(&id, &status), (2, 0), "no full disk costs a switch");
}

/// A seeded random soak: kills (SIGKILL) at random moments of random processes — any role or
/// a running agent — during one campaign, then the invariants. `TRESOR_SOAK_SEED` repeats a
/// run; `TRESOR_SOAK_KILLS` and `TRESOR_SOAK_DEVICES` make it longer (`make soak`).
#[test]
fn a_seeded_soak_of_random_kills() {
    let seed = deployment::soak_seed();
    let kills = deployment::env_u64("TRESOR_SOAK_KILLS", 20) as usize;
    let devices = deployment::env_u64("TRESOR_SOAK_DEVICES", 10) as usize;
    eprintln!(
        "soak: seed {seed} ({kills} kills, {devices} devices; TRESOR_SOAK_SEED={seed} repeats it)"
    );
    let mut rng = XorShift::new(seed);
    let options =
        Options { devices, fallback_secs: 300, step_deadline_secs: 90, ..Options::default() };
    let mut lab = Deployment::start(options, &BTreeMap::new());
    let id = lab.create_campaign();
    lab.run_devices();
    let mut killed = Vec::new();
    while killed.len() < kills {
        let until = std::time::Instant::now() + Duration::from_millis(150 + rng.below(650));
        while std::time::Instant::now() < until {
            lab.tend();
            std::thread::sleep(Duration::from_millis(25));
        }
        let running: Vec<usize> = (0..devices).filter(|&i| lab.devices[i].running()).collect();
        let roles = lab.role_names();
        let pick = rng.below((roles.len() + running.len()) as u64) as usize;
        match roles.get(pick) {
            Some(role) => {
                lab.role(role).kill();
                killed.push(role.clone());
            }
            None => {
                let index = running[pick - roles.len()];
                lab.devices[index].kill();
                killed.push(format!("device-{index}"));
            }
        }
    }
    let status = lab.settle(&id, Duration::from_secs(300));
    let (switched, rolled_back) = lab.check_invariants(&id, &status);
    eprintln!(
        "soak: seed {seed}: {} kills ({}), {switched} switched, {rolled_back} rolled back",
        killed.len(),
        killed.join(" ")
    );
    assert_eq!(switched + rolled_back, devices);
}
