//! The campaign API as a device-management stack uses it (`docs/campaigns.md`), on the real
//! lab: an `Idempotency-Key` that makes a repeated creation harmless, pages of campaigns,
//! one device's resource, the event stream, signed webhooks delivered from the outbox
//! (through a receiver that fails its first deliveries), and `/metrics`, `/health` and
//! `/ready` without a client certificate, their counts checked against the RO's store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use provisioning::mno::api::CampaignDevice;
use provisioning::pki::Role;
use provisioning::ro::Event;
use provisioning::ro::{CampaignPage, CampaignReport, DeviceReport, NewCampaign};
use tre::agent::AgentState;
use tre::tpm::KeyAlg;
use tresor::lab::{Lab, LabOptions, run_agent};
use tresor::webhook_receiver::WebhookReceiver;

fn image() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/image")
}

const SECRET: &str = "a webhook secret of at least thirty-two bytes";

/// The value of the series `name{labels}` in an OpenMetrics text, 0 if absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_management_stack_drives_and_follows_a_campaign() {
    let dir = tempfile::tempdir().unwrap();
    // It refuses its first two deliveries: the outbox must retry them.
    let receiver = WebhookReceiver::start(dir.path(), SECRET, 2).await.unwrap();
    let options = LabOptions {
        webhooks: vec![("dm".into(), receiver.url.clone(), receiver.secret_file.clone())],
        ..LabOptions::default()
    };
    let lab = Lab::start_with(&dir.path().join("lab"), &image(), &options).await.unwrap();
    let devices: Vec<_> = (0..3).map(|i| lab.manufacture(i, KeyAlg::Ecc).unwrap()).collect();
    let members: Vec<CampaignDevice> = devices
        .iter()
        .map(|d| CampaignDevice { device_id: d.device_id.clone(), iccid: d.iccid.clone() })
        .collect();
    let ro = &lab.urls.ro;
    let mno_b = lab.pki.client(Role::mno_b()).unwrap();
    let reader = lab.pki.client(Role::Ro).unwrap();

    // Created once whatever the retries; the same key for another request is refused.
    let new = NewCampaign { from: "mno-a".into(), to: "mno-b".into(), devices: members.clone() };
    let create = |body: &NewCampaign, key: &str| {
        mno_b.post(format!("{ro}/v1/campaigns")).header("idempotency-key", key).json(body).send()
    };
    let first: CampaignReport =
        transport::client::json(create(&new, "order-42").await.unwrap()).await.unwrap();
    let again: CampaignReport =
        transport::client::json(create(&new, "order-42").await.unwrap()).await.unwrap();
    assert_eq!(first.id, again.id, "a repeated creation answers the first campaign");
    assert_eq!(first.state, "ready", "{first:?}");
    let other = NewCampaign { devices: members[..1].to_vec(), ..new.clone() };
    let reused = create(&other, "order-42").await.unwrap();
    assert_eq!(reused.status(), 422);
    let problem: serde_json::Value = reused.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("idempotency-key-reused"), "{problem}");

    // The event stream, opened before the devices start.
    let stream = reader
        .get(format!("{ro}/v1/events?campaign={}", first.id))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let streamed = tokio::spawn(async move {
        let mut stream = stream;
        let mut text = String::new();
        while let Ok(Some(chunk)) = stream.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: campaign-finished") {
                break;
            }
        }
        text
    });

    let agents: Vec<_> = devices
        .iter()
        .map(|d| run_agent(d, &image(), lab.agent_config(d, Duration::from_secs(90)).unwrap()))
        .collect();
    let outcomes = tokio::task::spawn_blocking(move || {
        agents.into_iter().map(|a| a.join().unwrap().unwrap()).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(outcomes.iter().all(|o| o.state == AgentState::Switched));
    let text = tokio::time::timeout(Duration::from_secs(30), streamed).await.unwrap().unwrap();
    assert!(text.matches("event: device-transition").count() >= 3 * 10, "{text}");
    assert!(text.contains("\"to\":\"switched\""), "{text}");

    // The webhooks: every event exactly once in effect, the failed deliveries retried.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Done when the finished event is in and no device's outbox holds anything (webhook
    // messages included): the end can overtake a device's retried first delivery.
    let finished = loop {
        let finished = !receiver.received().finished().is_empty();
        let report = lab.campaign(&first.id).await.unwrap();
        let delivered = report.summary.reports_pending == 0;
        if (finished && delivered) || std::time::Instant::now() > deadline {
            break finished && delivered;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(finished, "no campaign-finished webhook, or messages still pending");
    {
        let r = receiver.received();
        assert_eq!(r.bad_signatures, 0);
        assert!(r.deliveries > r.events.len(), "the first deliveries failed and were retried");
        for d in &devices {
            // The device's transitions chain from `pending` to `switched`, each once.
            let path = r.path(&d.device_id).unwrap();
            assert_eq!(path[1], "tre-activation-issued", "{path:?}");
            assert_eq!(path.last().map(String::as_str), Some("switched"), "{path:?}");
        }
        let Some(Event::CampaignFinished { state, switched, rolled_back, .. }) =
            r.finished().first().copied()
        else {
            unreachable!()
        };
        assert_eq!((state.as_str(), *switched, *rolled_back), ("completed", 3, 0));
    }

    // One device's resource, and pages of campaigns.
    let device = &devices[0].device_id;
    let one: DeviceReport = transport::client::json(
        reader
            .get(format!("{ro}/v1/campaigns/{}/devices/{device}", first.id))
            .send()
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(one.state, "switched");
    assert!(one.steps.iter().any(|s| s.step == 8 && s.ms > 0), "{one:?}");
    let back = NewCampaign {
        from: "mno-b".into(),
        to: "mno-a".into(),
        devices: vec![CampaignDevice {
            device_id: device.clone(),
            iccid: outcomes[0].iccid.parse().unwrap(),
        }],
    };
    let a = lab.pki.client(Role::mno_a()).unwrap();
    let second: CampaignReport = transport::client::json(
        a.post(format!("{ro}/v1/campaigns")).json(&back).send().await.unwrap(),
    )
    .await
    .unwrap();
    let page = |query: &'static str| {
        let reader = reader.clone();
        let url = format!("{ro}/v1/campaigns?{query}");
        async move {
            transport::client::json::<CampaignPage>(reader.get(url).send().await.unwrap())
                .await
                .unwrap()
        }
    };
    let p1 = page("limit=1").await;
    assert_eq!(p1.campaigns.len(), 1);
    assert_eq!(p1.campaigns[0].id, first.id);
    assert_eq!(p1.campaigns[0].devices.get("switched"), Some(&3));
    let cursor = p1.next.clone().unwrap();
    let p2: CampaignPage = transport::client::json(
        reader.get(format!("{ro}/v1/campaigns?limit=1&after={cursor}")).send().await.unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        p2.campaigns.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [second.id.as_str()]
    );
    assert!(p2.next.is_none());
    assert_eq!(page("state=completed").await.campaigns.len(), 1);
    let bad = reader.get(format!("{ro}/v1/campaigns?colour=red")).send().await.unwrap();
    assert_eq!(bad.status(), 400);

    // Health, readiness and metrics: open to anyone, the same on every role.
    let anonymous = lab.pki.anonymous_client().unwrap();
    let mut bases = vec![("pva", lab.urls.pva.clone()), ("ro", lab.urls.ro.clone())];
    bases.extend(lab.urls.operators.iter().map(|(_, url)| ("mno", url.clone())));
    for (role, base) in &bases {
        for route in ["health", "ready"] {
            let doc: serde_json::Value = transport::client::json(
                anonymous.get(format!("{base}/{route}")).send().await.unwrap(),
            )
            .await
            .unwrap();
            assert_eq!((doc["status"].as_str(), doc["role"].as_str()), (Some("ok"), Some(*role)));
        }
    }
    let metrics = |base: String| {
        let anonymous = anonymous.clone();
        async move {
            let r = anonymous.get(format!("{base}/metrics")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let ro_metrics = metrics(lab.urls.ro.clone()).await;
    assert_eq!(metric(&ro_metrics, "tresor_ro_devices{state=\"switched\"}"), 3.0, "{ro_metrics}");
    assert_eq!(metric(&ro_metrics, "tresor_ro_devices{state=\"pending\"}"), 1.0, "{ro_metrics}");
    assert_eq!(metric(&ro_metrics, "tresor_ro_campaigns{state=\"completed\"}"), 1.0);
    assert_eq!(metric(&ro_metrics, "tresor_ro_device_transitions_total{state=\"switched\"}"), 3.0);
    assert!(ro_metrics.contains("tresor_ro_step_seconds_bucket{"), "{ro_metrics}");
    let pva_metrics = metrics(lab.urls.pva.clone()).await;
    assert_eq!(
        metric(&pva_metrics, "tresor_pva_appraisals_total{outcome=\"affirming\",reason=\"none\"}"),
        3.0,
        "{pva_metrics}"
    );
    let b_metrics = metrics(lab.urls.mno_b.clone()).await;
    assert_eq!(metric(&b_metrics, "tresor_mno_subscribers{status=\"live\"}"), 3.0, "{b_metrics}");
    lab.stop().await;
}
