//! Crash safety at scale-out (issue 15): two PVA instances and two RO instances share one
//! PostgreSQL and serve behind one front each (`tresor front`, round robin), every process
//! its own, as in `crash_safety.rs`. One instance of each is killed (SIGKILL) at random
//! moments during a 100-device campaign and restarted; the other serves on. Then the
//! invariants of the first issue (docs/flow.md, "Crash safety") are checked as there: every
//! device switched or rolled back, nothing twice, nothing left non-terminal. And the steps
//! were shared: both RO instances served device requests, some device's requests were
//! served by both, and both PVA instances appraised.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deployment;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deployment::{Deployment, Options, XorShift};

/// Kills of each scaled role during the campaign.
const KILLS_EACH: usize = 3;
/// The kills come at random moments of this window after the devices were powered on, in
/// milliseconds: early in the campaign (which settles about 19 s after the devices start on
/// two cores without kills), so that every kill hits changes under way — asserted below.
const WINDOW_MS: std::ops::Range<u64> = 500..7_000;

/// `TRESOR_SOAK_SEED` repeats a run; `TRESOR_SCALE_OUT_DEVICES` sets another device count.
#[test]
fn two_pva_and_two_ro_instances_on_postgresql_one_of_each_killed_at_random() {
    let started = Instant::now();
    let seed = deployment::soak_seed();
    let devices = deployment::env_u64("TRESOR_SCALE_OUT_DEVICES", 100) as usize;
    eprintln!("scale-out: seed {seed} ({devices} devices; TRESOR_SOAK_SEED={seed} repeats it)");
    let mut rng = XorShift::new(seed);
    let options = Options {
        devices,
        instances: 2,
        fallback_secs: 300,
        step_deadline_secs: 90,
        ..Options::default()
    };
    let mut lab = Deployment::start(options, &BTreeMap::new());
    let deployed = started.elapsed();
    let id = lab.create_campaign();
    lab.run_devices();
    let campaign = Instant::now();
    let mut plan: Vec<&str> = [["pva"; KILLS_EACH], ["ro"; KILLS_EACH]].concat();
    rng.shuffle(&mut plan);
    let mut moments: Vec<u64> =
        plan.iter().map(|_| WINDOW_MS.start + rng.below(WINDOW_MS.end - WINDOW_MS.start)).collect();
    moments.sort_unstable();
    let mut killed = Vec::new();
    for (kind, at) in plan.into_iter().zip(moments) {
        let at = Duration::from_millis(at);
        lab.tend_for(at.saturating_sub(campaign.elapsed()));
        // Whatever an earlier kill took down is back first: one instance of a role at most
        // is down at a time.
        lab.tend();
        let instance = format!("{kind}-{}", 1 + rng.below(2));
        let finished = terminal(&lab, &id);
        lab.role(&instance).kill();
        eprintln!(
            "scale-out: {:>5.1} s: killed {instance} ({finished} of {devices} devices finished)",
            campaign.elapsed().as_secs_f64()
        );
        killed.push((instance, finished));
    }
    let status = lab.settle(&id, Duration::from_secs(360));
    let settled = campaign.elapsed();
    let (switched, rolled_back) = lab.check_invariants(&id, &status);
    eprintln!(
        "scale-out: seed {seed}: {switched} switched, {rolled_back} rolled back; deployed in \
         {deployed:.0?}, settled {settled:.0?} after the devices started, {:.0?} in all",
        started.elapsed()
    );
    assert_eq!(switched + rolled_back, devices, "every device switched or rolled back");
    assert_eq!(rolled_back, 0, "no kill of one instance costs a device its switch");
    assert!(
        killed.iter().all(|(_, finished)| *finished < devices),
        "a kill came after the campaign: {killed:?}"
    );

    // Both instances of each role did their share, and devices moved between them.
    let served = lab.served();
    let fronts = lab.front_connections();
    eprintln!(
        "scale-out: devices served per RO instance {:?}, devices appraised per PVA instance \
         {:?}, connections per instance {fronts:?}",
        served.ro_devices.iter().map(|(n, d)| (n, d.len())).collect::<Vec<_>>(),
        served.pva_appraised.iter().map(|(n, d)| (n, d.len())).collect::<Vec<_>>(),
    );
    for (name, devices) in served.ro_devices.iter().chain(&served.pva_appraised) {
        assert!(!devices.is_empty(), "{name} served no device");
    }
    let shared = served.devices_on_several_ros();
    eprintln!("scale-out: {} devices had requests served by both RO instances", shared.len());
    assert!(!shared.is_empty(), "no device's steps were served by both RO instances");
    for (front, counts) in &fronts {
        assert!(counts.iter().all(|&n| n > 0), "{front} left an instance idle: {counts:?}");
    }
}

/// One RO instance killed just before and just after each of a few of its durable writes
/// (`TRESOR_FAULT`, as in `crash_safety.rs`) — a device's request, a step it drives towards
/// a peer, a report it delivers — while the other instance serves on; the PVA instances
/// unharmed. An instance serves the devices whose connections the front handed it, and a
/// device keeps its connection: the devices are powered on one after another, so that the
/// restarted instance gets new ones and reaches each write again.
#[test]
fn an_ro_instance_killed_at_durable_writes_while_the_other_serves_on() {
    let points = ["ro.tre-activated", "ro.attesting", "ro.installed", "ro.outbox-delivered"];
    let schedule =
        points.iter().flat_map(|p| [format!("{p}.before:kill"), format!("{p}.after:kill")]);
    let faults = BTreeMap::from([("ro-1", schedule.collect())]);
    let devices = 16;
    let options = Options { devices, instances: 2, step_deadline_secs: 90, ..Options::default() };
    let mut lab = Deployment::start(options, &faults);
    let id = lab.create_campaign();
    for index in 0..devices {
        lab.run_device(index);
        lab.tend_for(Duration::from_millis(500));
    }
    let status = lab.settle(&id, Duration::from_secs(240));
    let unfired = lab.unfired();
    assert!(unfired.is_empty(), "faults that never fired: {unfired:?}\n{status:#}");
    eprintln!("faults fired: {:?}", lab.fired());
    assert_eq!(lab.check_invariants(&id, &status), (devices, 0), "no kill of ro-1 costs a switch");
    let served = lab.served();
    assert!(served.ro_devices.values().all(|d| !d.is_empty()), "{served:?}");
}

/// How many devices of campaign `id` are in a final state, by the RO's status.
fn terminal(lab: &Deployment, id: &str) -> usize {
    let Some(status) = lab.status(id) else { return 0 };
    status["devices"].as_array().map_or(0, |devices| {
        devices
            .iter()
            .filter(|d| matches!(d["state"].as_str(), Some("switched" | "rolled-back")))
            .count()
    })
}
