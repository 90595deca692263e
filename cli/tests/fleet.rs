//! A fleet through a third operator (issue 14): every role (PVA, RO, MNO-A, MNO-B, MNO-C)
//! its own `tresor serve` process, 200 devices (`TRESOR_FLEET_DEVICES` sets another count)
//! on swtpm moved MNO-A → MNO-C by one campaign. Checked: every device switched; a webhook
//! receiver (a small server here, checking every signature with
//! `provisioning::ro::webhooks::verify_signature`) got every event exactly once in effect —
//! deduplicated by id, each device's transitions one chain from `pending` to `switched`, one
//! `campaign-finished`; and the `/metrics` counts of the RO, the new operator and the PVA
//! agree with their stores, opened read-only afterwards. The 1,000-device runs are
//! benchmarks (`tresor bench fleet`, `make bench`), not tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use provisioning::ro::CampaignReport;
use provisioning::ro::Event;
use tre::tpm::KeyAlg;
use tresor::lab::{self, Lab, LabOptions, run_agent};
use tresor::webhook_receiver::WebhookReceiver;

const SECRET: &str = "the fleet's webhook secret, more than thirty-two bytes";

/// The value of the series `name{labels}` in an OpenMetrics text, 0 if absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// `SELECT COUNT(*) …` on a store opened read-only.
fn count(store: &Path, sql: &str) -> u64 {
    let conn =
        rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_moves_to_a_third_operator_with_every_role_its_own_process() {
    let n: usize = std::env::var("TRESOR_FLEET_DEVICES").map_or(200, |v| v.parse().unwrap());
    let temp = tempfile::Builder::new().prefix("tresor-fleet-test-").tempdir().unwrap();
    let dir = temp.path().join("lab");
    let image = lab::write_sample_image(&temp.path().join("image")).unwrap();
    let receiver = WebhookReceiver::start(temp.path(), SECRET, 0).await.unwrap();
    let options = LabOptions {
        operators: lab::operator_names(3),
        webhooks: vec![("dm".into(), receiver.url.clone(), receiver.secret_file.clone())],
        processes: Some(PathBuf::from(env!("CARGO_BIN_EXE_tresor"))),
        ..LabOptions::default()
    };
    let lab = Lab::start_with(&dir, &image, &options).await.unwrap();
    assert_eq!(lab.role_pids().len(), 5, "PVA, RO and three operators, each a process");

    let timer = Instant::now();
    let devices = lab.manufacture_fleet(n, KeyAlg::Ecc, lab::manufacture_parallelism()).unwrap();
    let manufactured = timer.elapsed();

    let timer = Instant::now();
    let id = support::campaign::create(&lab, &devices, "mno-a", "mno-c").await;
    let agents: Vec<_> = devices
        .iter()
        .map(|d| run_agent(d, &image, lab.agent_config(d, Duration::from_secs(900)).unwrap()))
        .collect();
    for o in support::campaign::all_switched(&devices, agents).await {
        assert!(o.imsi.starts_with("00103"), "MNO-C's IMSI: {o:?}");
    }

    // Every final report acknowledged and every webhook delivered.
    let deadline = Instant::now() + Duration::from_secs(120);
    let report: CampaignReport = loop {
        let report = lab.campaign(&id).await.unwrap();
        let finished = !receiver.received().finished().is_empty();
        if report.state == "completed" && report.summary.reports_pending == 0 && finished {
            break report;
        }
        assert!(Instant::now() < deadline, "the campaign did not finish: {:?}", report.summary);
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let switched = timer.elapsed();
    eprintln!(
        "fleet of {n}: manufactured in {:.1}s, switched and reported in {:.1}s",
        manufactured.as_secs_f64(),
        switched.as_secs_f64()
    );
    assert_eq!((report.summary.switched, report.summary.failed), (n, 0), "{:?}", report.summary);

    // The webhooks: every event exactly once in effect.
    {
        let r = receiver.received();
        assert_eq!(r.bad_signatures, 0);
        let mut devices_seen = std::collections::BTreeSet::new();
        for e in r.events.values() {
            if let Event::DeviceTransition { device_id, campaign: c, .. } = e {
                assert_eq!(c, &id);
                devices_seen.insert(device_id.clone());
            }
        }
        let finished = r.finished();
        assert_eq!(finished.len(), 1, "one campaign-finished: {finished:?}");
        let Event::CampaignFinished { state, switched, rolled_back, .. } = finished[0] else {
            unreachable!()
        };
        assert_eq!((state.as_str(), *switched as usize, *rolled_back), ("completed", n, 0));
        assert_eq!(devices_seen.len(), n, "transitions of every device");
        for d in &devices {
            let path = r.path(&d.device_id).unwrap();
            assert_eq!(path.last().map(String::as_str), Some("switched"), "{path:?}");
        }
    }

    // /metrics against the stores.
    let anonymous = lab.pki.anonymous_client().unwrap();
    let metrics = |base: String| {
        let anonymous = anonymous.clone();
        async move {
            let r = anonymous.get(format!("{base}/metrics")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let ro_metrics = metrics(lab.urls.ro.clone()).await;
    let mno_c_metrics = metrics(lab.urls.operator("mno-c").unwrap().to_owned()).await;
    let pva_metrics = metrics(lab.urls.pva.clone()).await;
    let ro_switched = count(
        &dir.join("ro/ro.sqlite"),
        "SELECT COUNT(*) FROM devices WHERE state_name = 'switched' AND final = 1",
    );
    assert_eq!(ro_switched, n as u64);
    assert_eq!(
        metric(&ro_metrics, "tresor_ro_devices{state=\"switched\"}"),
        ro_switched as f64,
        "{ro_metrics}"
    );
    let live = count(
        &dir.join("mno-c/mno-c.sqlite"),
        "SELECT COUNT(*) FROM subscribers WHERE status = 'live'",
    );
    assert_eq!(live, n as u64);
    assert_eq!(
        metric(&mno_c_metrics, "tresor_mno_subscribers{status=\"live\"}"),
        live as f64,
        "{mno_c_metrics}"
    );
    // One affirming appraisal per switched device, each of an enrolled device.
    let enrolled = count(&dir.join("pva/pva.sqlite"), "SELECT COUNT(*) FROM devices");
    assert_eq!(enrolled, n as u64);
    assert_eq!(
        metric(&pva_metrics, "tresor_pva_appraisals_total{outcome=\"affirming\",reason=\"none\"}"),
        ro_switched as f64,
        "{pva_metrics}"
    );
    drop(devices);
    lab.stop().await;
}
