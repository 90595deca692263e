//! What the operators refuse, each with its own problem type, and what stays unchanged when
//! they do: IMSI lists from anyone but the campaign's new operator (issue 7, attack 15),
//! callers in the wrong role, steps out of order, EARs that do not verify, an exhausted
//! IMSI pool, reports that do not fit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mno_common;

use std::time::{Duration, SystemTime};

use mno_common::*;
use protocol::ear::{BundleKey, Claim, unix, value};
use provisioning::mno::api::{DeviceStage, ImsiList, ImsiListEntry, Report, ReportOutcome};
use provisioning::mno::{MnoClient, SubscriberStatus};
use provisioning::pki::Role;

fn list_for(
    devices: &[(protocol::DeviceId, protocol::SubscriptionProfile, uicc::Card)],
    imsi: &str,
) -> ImsiList {
    ImsiList {
        entries: vec![ImsiListEntry {
            device_id: devices[0].0.clone(),
            iccid: devices[0].1.iccid.clone(),
            imsi: imsi.parse().unwrap(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imsi_list_is_accepted_only_from_the_campaigns_new_operator() {
    let world = World::start(10).await;
    let devices = world.manufacture(1);
    let (ro_a, ro_b) = world.ro();
    let id = cid("c1");
    ro_a.create_campaign(&campaign("c1", &devices)).await.unwrap();
    ro_b.create_campaign(&campaign("c1", &devices)).await.unwrap();
    let list = list_for(&devices, "001029999999999");

    for role in [Role::Ro, Role::mno_a(), Role::Pva] {
        let sender = world.client(role, &world.mno_a);
        assert_problem(
            sender.send_imsi_list(&id, &list).await,
            403,
            "imsi-list-sender-not-campaign-operator",
        );
    }
    let status = ro_a.campaign(&id).await.unwrap();
    assert_eq!(status.devices[0].stage, DeviceStage::AwaitingImsiList);
    assert_eq!(status.devices[0].new_imsi, None, "nothing stored");
    assert_problem(ro_a.activate_tre(&id, &devices[0].0).await, 409, "imsi-list-missing");

    // MNO-B is not the new operator of a campaign that names another one. The device is in
    // open campaign c1 at MNO-A, but no card proved that pairing: it holds nothing.
    let mut other = campaign("c2", &[]);
    other.devices = campaign("c1", &devices).devices;
    other.to = "mno-x".into();
    ro_a.create_campaign(&other).await.unwrap();

    let mno_b = world.client(Role::mno_b(), &world.mno_a);
    assert_eq!(mno_b.send_imsi_list(&id, &list).await.unwrap().accepted, 1);
    assert_eq!(mno_b.send_imsi_list(&id, &list).await.unwrap().accepted, 1, "a repeat is accepted");
    assert_problem(
        mno_b.send_imsi_list(&id, &list_for(&devices, "001029999999998")).await,
        409,
        "imsi-list-conflict",
    );
    let mut stranger = list_for(&devices, "001029999999997");
    stranger.entries[0].device_id = device(99);
    assert_problem(mno_b.send_imsi_list(&id, &stranger).await, 422, "imsi-list-mismatch");
    let mut wrong_iccid = list_for(&devices, "001029999999999");
    wrong_iccid.entries[0].iccid = "89001019999999999990".parse().unwrap();
    assert_problem(mno_b.send_imsi_list(&id, &wrong_iccid).await, 422, "imsi-list-mismatch");
    assert_problem(mno_b.send_imsi_list(&cid("nope"), &list).await, 404, "campaign-not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_to_another_operator_refuses_mno_b() {
    let world = World::start(10).await;
    let devices = world.manufacture(1);
    let (ro_a, _) = world.ro();
    let mut request = campaign("to-x", &devices);
    request.to = "mno-x".into();
    ro_a.create_campaign(&request).await.unwrap();
    let mno_b = world.client(Role::mno_b(), &world.mno_a);
    assert_problem(
        mno_b.send_imsi_list(&cid("to-x"), &list_for(&devices, "001029999999999")).await,
        403,
        "imsi-list-sender-not-campaign-operator",
    );
    // A campaign that does not name this operator is refused outright.
    request.id = cid("neither");
    request.from = "mno-y".into();
    assert_problem(ro_a.create_campaign(&request).await, 409, "wrong-campaign-party");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_the_callers_role() {
    let world = World::start(10).await;
    let devices = world.manufacture(1);
    let (ro_a, ro_b) = world.ro();
    let id = cid("c1");
    let dev = &devices[0].0;
    ro_a.create_campaign(&campaign("c1", &devices)).await.unwrap();
    ro_b.create_campaign(&campaign("c1", &devices)).await.unwrap();

    for role in [Role::mno_b(), Role::Pva, Role::mno_a()] {
        let a = world.client(role.clone(), &world.mno_a);
        let b = world.client(role, &world.mno_b);
        assert_problem(a.create_campaign(&campaign("c9", &devices)).await, 403, "role-not-allowed");
        assert_problem(a.campaign(&id).await, 403, "role-not-allowed");
        assert_problem(a.activate_tre(&id, dev).await, 403, "role-not-allowed");
        assert_problem(a.tre_activated(&id, dev, &[1, 2, 3]).await, 403, "role-not-allowed");
        assert_problem(b.prepare(&id).await, 403, "role-not-allowed");
        assert_problem(b.register(&id, dev).await, 403, "role-not-allowed");
        assert_problem(
            b.attestation(&id, dev, &ear(&world.pki, dev)).await,
            403,
            "role-not-allowed",
        );
        assert_problem(b.aka_challenge(&id, dev).await, 403, "role-not-allowed");
        let res =
            protocol::device_api::AkaResult::Res { res: serde_bytes::ByteBuf::from(vec![0; 8]) };
        assert_problem(b.aka_response(&id, dev, &res).await, 403, "role-not-allowed");
        let report = Report {
            campaign: id.clone(),
            device_id: dev.clone(),
            outcome: ReportOutcome::Success,
            step: None,
            reason: None,
        };
        assert_problem(a.report(&report).await, 403, "role-not-allowed");
        assert_problem(a.subscriber(&devices[0].1.imsi).await, 403, "role-not-allowed");
        assert_eq!(a.health().await.unwrap().name, "mno-a");
    }
    // Without a client certificate: health only (as on every role); every step is refused.
    let anonymous = MnoClient::new(world.pki.anonymous_client().unwrap(), &world.mno_a.url());
    let health = anonymous.health().await.unwrap();
    assert_eq!(
        (health.status.as_str(), health.role.as_str(), health.name.as_str()),
        ("ok", "mno", "mno-a")
    );
    assert_problem(anonymous.campaign(&id).await, 401, "client-certificate-required");
    assert_problem(anonymous.activate_tre(&id, dev).await, 401, "client-certificate-required");
    assert_problem(
        anonymous
            .report(&Report {
                campaign: id.clone(),
                device_id: dev.clone(),
                outcome: ReportOutcome::Success,
                step: None,
                reason: None,
            })
            .await,
        401,
        "client-certificate-required",
    );
    assert_problem(
        anonymous.subscriber(&devices[0].1.imsi).await,
        401,
        "client-certificate-required",
    );
    // Steps addressed to the wrong side of the campaign.
    assert_problem(ro_a.prepare(&id).await, 409, "wrong-campaign-party");
    assert_problem(ro_b.activate_tre(&id, dev).await, 409, "wrong-campaign-party");
    assert_problem(ro_b.tre_activated(&id, dev, &[1, 2, 3]).await, 409, "wrong-campaign-party");
    assert_problem(ro_a.register(&id, dev).await, 409, "wrong-campaign-party");
    assert_eq!(ro_a.subscriber(&devices[0].1.imsi).await.unwrap().status, SubscriberStatus::Active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ear_that_does_not_verify_gets_no_profile() {
    let world = World::start(10).await;
    let devices = world.manufacture(1);
    let (ro_a, ro_b) = world.ro();
    let id = cid("c1");
    let dev = &devices[0].0;
    ro_a.create_campaign(&campaign("c1", &devices)).await.unwrap();
    ro_b.create_campaign(&campaign("c1", &devices)).await.unwrap();
    assert_problem(ro_b.register(&id, dev).await, 409, "not-prepared");
    ro_b.prepare(&id).await.unwrap();
    assert_problem(ro_b.attestation(&id, dev, &ear(&world.pki, dev)).await, 409, "not-registered");
    ro_b.register(&id, dev).await.unwrap();

    let pki = &world.pki;
    let other_device = ear(pki, &device(42));
    let mut expired = ear_claims(dev, affirming());
    let past = unix(SystemTime::now() - Duration::from_secs(3600));
    (expired.issued_at, expired.expires_at) = (past, past + 300);
    let mut bad = affirming();
    bad.set(Claim::Executables, value::CONTRAINDICATED_RUNTIME);
    let mut warning = affirming();
    warning.set(Claim::Executables, value::UNSAFE_RUNTIME);
    let mut no_counter = ear_claims(dev, affirming());
    no_counter.appraisal.rollback_counter = None;
    let mut no_key = ear_claims(dev, affirming());
    no_key.appraisal.bundle_key = None;
    // A bundle key that is no P-256 point: nothing can be encrypted to it, nothing is issued.
    let mut off_curve = ear_claims(dev, affirming());
    off_curve.appraisal.bundle_key = Some(BundleKey::new([1; 32], [2; 32], vec![0, 0x0B, 3]));
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (other_device, 403, "ear-other-device"),
        (sign_ear(pki, Role::Pva, &expired), 403, "ear-expired"),
        (sign_ear(pki, Role::Pva, &ear_claims(dev, bad)), 403, "ear-not-affirming"),
        (sign_ear(pki, Role::Pva, &ear_claims(dev, warning)), 403, "ear-not-affirming"),
        (
            sign_ear(pki, Role::mno_a(), &ear_claims(dev, affirming())),
            403,
            "ear-signer-not-allowed",
        ),
        (sign_ear(pki, Role::Pva, &no_counter), 403, "ear-missing-rollback-counter"),
        (sign_ear(pki, Role::Pva, &no_key), 403, "ear-missing-bundle-key"),
        (sign_ear(pki, Role::Pva, &off_curve), 403, "ear-bundle-key-invalid"),
        (vec![0xd2, 0x84, 0x40], 400, "ear-malformed"),
    ];
    for (ear, status, slug) in cases {
        assert_problem(ro_b.attestation(&id, dev, &ear).await, status, slug);
    }
    // An EAR under another CI.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = provisioning::pki::init(&stranger_dir.path().join("pki"), false).unwrap();
    assert_problem(
        ro_b.attestation(&id, dev, &ear(&stranger, dev)).await,
        403,
        "ear-untrusted-signer",
    );
    // A tampered signature.
    let mut tampered = ear(pki, dev);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_problem(ro_b.attestation(&id, dev, &tampered).await, 403, "ear-bad-signature");

    let status = ro_b.campaign(&id).await.unwrap();
    assert_eq!(status.devices[0].stage, DeviceStage::Registered, "no profile issued");
    let new_imsi = status.devices[0].new_imsi.clone().unwrap();
    assert_problem(ro_b.subscriber(&new_imsi).await, 404, "subscriber-not-found");
    assert_problem(ro_b.aka_challenge(&id, dev).await, 409, "profile-not-issued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_allocates_nothing() {
    let world = World::start(1).await;
    let devices = world.manufacture(2);
    let (ro_a, ro_b) = world.ro();
    let both = campaign("both", &devices);
    ro_a.create_campaign(&both).await.unwrap();
    ro_b.create_campaign(&both).await.unwrap();
    assert_problem(ro_b.prepare(&cid("both")).await, 409, "imsi-pool-exhausted");
    let status = ro_b.campaign(&cid("both")).await.unwrap();
    assert!(
        status
            .devices
            .iter()
            .all(|d| d.stage == DeviceStage::AwaitingPrepare && d.new_imsi.is_none())
    );
    let status = ro_a.campaign(&cid("both")).await.unwrap();
    assert!(status.devices.iter().all(|d| d.new_imsi.is_none()));

    // The one IMSI is still free: the failed prepare rolled back entirely.
    let mut one = campaign("one", &devices[..1]);
    one.id = cid("one");
    ro_b.create_campaign(&one).await.unwrap();
    let prepared = ro_b.prepare(&cid("one")).await;
    // MNO-A does not know campaign "one" and refuses the list; MNO-B has allocated the last
    // IMSI all the same and will send the same list again.
    assert_problem(prepared, 502, "peer-failed");
    let status = ro_b.campaign(&cid("one")).await.unwrap();
    assert_eq!(status.devices[0].stage, DeviceStage::ImsiAllocated);
    assert_eq!(status.devices[0].new_imsi.as_ref().unwrap().as_str(), "001020000000001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_that_do_not_fit_change_nothing() {
    let world = World::start(10).await;
    let devices = world.manufacture(1);
    let (ro_a, ro_b) = world.ro();
    let dev = &devices[0].0;
    ro_a.create_campaign(&campaign("c1", &devices)).await.unwrap();
    ro_b.create_campaign(&campaign("c1", &devices)).await.unwrap();
    let report = |campaign: &str, device: &protocol::DeviceId, outcome| Report {
        campaign: cid(campaign),
        device_id: device.clone(),
        outcome,
        step: Some(12),
        reason: None,
    };
    assert_problem(
        ro_a.report(&report("unknown", dev, ReportOutcome::Success)).await,
        404,
        "campaign-not-found",
    );
    assert_problem(
        ro_a.report(&report("c1", &device(77), ReportOutcome::Success)).await,
        404,
        "device-not-in-campaign",
    );
    // Success before any IMSI list arrived: the device cannot have switched.
    assert_problem(
        ro_a.report(&report("c1", dev, ReportOutcome::Success)).await,
        409,
        "imsi-list-missing",
    );
    assert_eq!(ro_a.subscriber(&devices[0].1.imsi).await.unwrap().status, SubscriberStatus::Active);
    let mut long = report("c1", dev, ReportOutcome::Failure);
    long.reason = Some("x".repeat(5000));
    assert_problem(ro_a.report(&long).await, 400, "bad-request-body");
    let mut step = report("c1", dev, ReportOutcome::Failure);
    step.step = Some(13);
    assert_problem(ro_a.report(&step).await, 400, "bad-request-body");
    // A failure leaves the old subscription in service.
    let ack = ro_a.report(&report("c1", dev, ReportOutcome::Failure)).await.unwrap();
    assert_eq!(ack.subscriber.unwrap().status, SubscriberStatus::Active);
}
