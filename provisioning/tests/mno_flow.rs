//! The operators' part of a subscription change (docs/flow.md steps 1–4, 6–12) over real
//! loopback HTTPS with mutual TLS: MNO-A and MNO-B in-process, the RO played by this test
//! with the RO's certificate, UICC emulator cards from the `uicc` crate, EARs signed with the
//! PVA's key, real SQLite files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mno_common;

use mno_common::*;
use protocol::bundle::{BundleError, SoftwareRecipient};
use protocol::device_api::AkaResult;
use protocol::milenage::{Autn, Rand};
use protocol::ota::OtaError;
use provisioning::mno::SubscriberStatus;
use provisioning::mno::api::{
    AkaVerdict, AttestationResponse, CampaignRequest, DeviceStage, Party, Report, ReportOutcome,
};
use serde_bytes::ByteBuf;
use uicc::UiccError;
use uicc::auth::Outcome;

/// The ICCID `request` pairs `device` with.
fn request_iccid(request: &CampaignRequest, device: &protocol::DeviceId) -> protocol::Iccid {
    request.devices.iter().find(|d| &d.device_id == device).unwrap().iccid.clone()
}

fn report(id: &str, device: &protocol::DeviceId, outcome: ReportOutcome) -> Report {
    Report { campaign: cid(id), device_id: device.clone(), outcome, step: None, reason: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_moves_two_devices_from_mno_a_to_mno_b() {
    for backend in Backend::ALL {
        a_campaign_moves_two_devices_from_mno_a_to_mno_b_on(World::start_on(10, backend).await)
            .await;
    }
}

async fn a_campaign_moves_two_devices_from_mno_a_to_mno_b_on(world: World) {
    let mut devices = world.manufacture(2);
    let (ro_a, ro_b) = world.ro();
    let request = campaign("c1", &devices);
    let id = cid("c1");

    // Step 2: both operators record the campaign; a repeat is harmless.
    let a = ro_a.create_campaign(&request).await.unwrap();
    assert_eq!(a.party, Party::OldOperator);
    assert!(
        a.devices.iter().all(|d| d.stage == DeviceStage::AwaitingImsiList && d.old_imsi.is_some())
    );
    assert_eq!(ro_a.create_campaign(&request).await.unwrap(), a);
    let b = ro_b.create_campaign(&request).await.unwrap();
    assert_eq!(b.party, Party::NewOperator);

    // Step 4 cannot run before step 3.
    assert_problem(ro_a.activate_tre(&id, &devices[0].0).await, 409, "imsi-list-missing");

    // Step 3: MNO-B allocates and sends the list to MNO-A with its own certificate.
    let prepared = ro_b.prepare(&id).await.unwrap();
    assert_eq!(prepared.entries.len(), 2);
    assert!(prepared.entries.iter().all(|e| e.imsi.as_str().starts_with("00102")));
    assert_eq!(ro_b.prepare(&id).await.unwrap(), prepared, "prepare is repeatable");
    let a = ro_a.campaign(&id).await.unwrap();
    for d in &a.devices {
        assert_eq!(d.stage, DeviceStage::ImsiListReceived);
        let listed = prepared.entries.iter().find(|e| e.device_id == d.device_id).unwrap();
        assert_eq!(d.new_imsi.as_ref(), Some(&listed.imsi));
    }

    // Step 4: the activate-TRE command verifies on the card, once; it names the campaign
    // and its new operator, and the card's MACed answer proves the activation to MNO-A.
    for (device, profile, card) in &mut devices {
        let command = ro_a.activate_tre(&id, device).await.unwrap();
        assert_eq!(command.counter, profile.ota.counter + 1);
        assert_eq!(ro_a.activate_tre(&id, device).await.unwrap(), command, "idempotent");
        // The same answer in JSON when asked for (protocol::wire: base64url byte strings).
        let url = format!("{}/v1/campaigns/c1/devices/{}/activate-tre", world.mno_a.url(), device);
        let json = world
            .http(provisioning::pki::Role::Ro)
            .post(url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(json.headers()["content-type"], "application/json");
        let json: serde_json::Value = json.json().await.unwrap();
        assert_eq!(json["command"], protocol::wire::base64url(&command.command));
        assert_eq!(json["counter"], command.counter);
        let proof = card.ota(&command.command).unwrap();
        assert!(card.tre_active() && !card.usim_active());
        let activation = card.tre_activation().unwrap();
        assert_eq!((activation.campaign(), activation.operator()), ("c1", "mno-b"));
        assert!(matches!(card.ota(&command.command), Err(UiccError::Ota(OtaError::Replay { .. }))));
        let ack = ro_a.tre_activated(&id, device, &proof).await.unwrap();
        assert_eq!(
            (&ack.iccid, &ack.imsi, ack.counter),
            (&profile.iccid, &profile.imsi, command.counter)
        );
        assert_eq!(ro_a.tre_activated(&id, device, &proof).await.unwrap(), ack, "idempotent");
    }
    let a = ro_a.campaign(&id).await.unwrap();
    assert!(a.devices.iter().all(|d| d.stage == DeviceStage::TreActivated));

    for (device, _, card) in &mut devices {
        // Steps 6–7.
        let registered = ro_b.register(&id, device).await.unwrap();
        assert!(registered.validation_required);
        assert_eq!(registered.ear_signers, ["pva"]);

        // Steps 9–11: a verified EAR gets a profile signed by MNO-B, bound to that EAR and
        // encrypted to its bundle key; only that key opens it (`open` checks signer, device
        // and EAR hash as the TRE does).
        let (ear, key) = attested(&world.pki, device);
        let answer = ro_b.attestation(&id, device, &ear).await.unwrap();
        let verified = open(&world.pki, &answer, key, &ear);
        assert_eq!(verified.sequence(), 8, "EAR rollback counter 7 + 1");
        assert_eq!(verified.payload.campaign, "c1");
        let new_imsi = &prepared.entries.iter().find(|e| &e.device_id == device).unwrap().imsi;
        assert_eq!(&verified.payload.profile.imsi, new_imsi);
        // The answer's facts are the profile's (what the DPF expects the receipt to name).
        assert_eq!(&answer.device_id, device);
        assert_eq!(answer.campaign_iccid, request_iccid(&request, device));
        assert_eq!(answer.iccid, verified.payload.profile.iccid);
        assert_eq!(&answer.imsi, new_imsi);
        assert_eq!(answer.sequence, verified.sequence());
        // Another key gets nothing out of it.
        assert_eq!(
            SoftwareRecipient::generate()
                .unwrap()
                .decrypt(&answer.bundle, device, &protocol::bundle::ear_hash(&ear))
                .unwrap_err(),
            BundleError::DecryptionFailed
        );
        // The same EAR again: the same signed profile (the same facts, the same length),
        // encrypted anew (a fresh ephemeral key and IV).
        let again = ro_b.attestation(&id, device, &ear).await.unwrap();
        assert_eq!(
            AttestationResponse { bundle: answer.bundle.clone(), ..again.clone() },
            answer,
            "the same EAR, the same profile"
        );
        assert_ne!(again.bundle, answer.bundle, "a fresh envelope");
        assert_eq!(again.bundle.len(), answer.bundle.len());
        protocol::bundle::check_bundle_binding(
            &again.bundle,
            device,
            &protocol::bundle::ear_hash(&ear),
        )
        .unwrap();
        let pending = ro_b.subscriber(new_imsi).await.unwrap();
        assert_eq!(pending.status, SubscriberStatus::Pending);

        // Step 11 (the TRE's part): install on the card.
        card.install_on_trial(
            verified.payload.profile.clone(),
            uicc::ChangeRef { campaign: "c1".into(), sequence: 1, fallback_at: u64::MAX },
        )
        .unwrap();
        assert_eq!(card.imsi(), new_imsi);
        assert!(card.usim_active());

        // A success report before AKA does not make the subscription live.
        assert_problem(
            ro_b.report(&report("c1", device, ReportOutcome::Success)).await,
            409,
            "aka-not-completed",
        );

        // Step 12: AKA between MNO-B's AuC and the new USIM.
        let challenge = ro_b.aka_challenge(&id, device).await.unwrap();
        assert_eq!(
            ro_b.aka_challenge(&id, device).await.unwrap(),
            challenge,
            "outstanding challenge repeated"
        );
        let rand = Rand(challenge.rand.as_slice().try_into().unwrap());
        let autn = Autn(challenge.autn.as_slice().try_into().unwrap());
        let Outcome::Success { res, .. } = card.run_aka(&rand, &autn) else {
            panic!("USIM refused")
        };
        let verdict = ro_b
            .aka_response(&id, device, &AkaResult::Res { res: ByteBuf::from(res.0.to_vec()) })
            .await
            .unwrap();
        assert_eq!(verdict, AkaVerdict::Live);
        assert_eq!(ro_b.subscriber(new_imsi).await.unwrap().status, SubscriberStatus::Live);
    }

    // Step 12: reports. MNO-A retires the old IMSI only now.
    for (device, profile, _) in &devices {
        assert_eq!(ro_a.subscriber(&profile.imsi).await.unwrap().status, SubscriberStatus::Active);
        let ack = ro_a.report(&report("c1", device, ReportOutcome::Success)).await.unwrap();
        assert_eq!(ack.subscriber.unwrap().status, SubscriberStatus::Retired);
        let ack = ro_b.report(&report("c1", device, ReportOutcome::Success)).await.unwrap();
        assert_eq!(ack.subscriber.unwrap().status, SubscriberStatus::Live);
        ro_a.report(&report("c1", device, ReportOutcome::Success)).await.unwrap();
        assert_problem(
            ro_a.report(&report("c1", device, ReportOutcome::Failure)).await,
            409,
            "report-conflict",
        );
        assert_problem(ro_a.activate_tre(&id, device).await, 409, "device-finished");
    }
    for status in [ro_a.campaign(&id).await.unwrap(), ro_b.campaign(&id).await.unwrap()] {
        assert!(
            status
                .devices
                .iter()
                .all(|d| d.stage == DeviceStage::Switched
                    && d.report == Some(ReportOutcome::Success))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_sqn_on_the_card_is_resynchronised() {
    for backend in Backend::ALL {
        a_stale_sqn_on_the_card_is_resynchronised_on(World::start_on(10, backend).await).await;
    }
}

async fn a_stale_sqn_on_the_card_is_resynchronised_on(world: World) {
    let mut devices = world.manufacture(1);
    let (ro_a, ro_b) = world.ro();
    let id = cid("resync");
    let request = campaign("resync", &devices);
    ro_a.create_campaign(&request).await.unwrap();
    ro_b.create_campaign(&request).await.unwrap();
    ro_b.prepare(&id).await.unwrap();
    let (device, _, card) = &mut devices[0];
    card.ota(&ro_a.activate_tre(&id, device).await.unwrap().command).unwrap();
    ro_b.register(&id, device).await.unwrap();
    let (ear, key) = attested(&world.pki, device);
    let answer = ro_b.attestation(&id, device, &ear).await.unwrap();
    let profile = open(&world.pki, &answer, key, &ear).payload.profile;
    card.install_on_trial(
        profile.clone(),
        uicc::ChangeRef { campaign: "resync".into(), sequence: 1, fallback_at: u64::MAX },
    )
    .unwrap();

    // The card has seen SQNs far ahead of MNO-B's AuC in every IND slot.
    let m = protocol::milenage::Milenage::new(&profile.k, &profile.opc);
    for ind in 0..32 {
        let sqn = protocol::milenage::Sqn::from_parts(500, ind).unwrap();
        let v = m.vector(Rand::random().unwrap(), sqn, profile.amf);
        assert!(matches!(card.run_aka(&v.rand, &v.autn), Outcome::Success { .. }));
    }

    let challenge = ro_b.aka_challenge(&id, device).await.unwrap();
    let rand = Rand(challenge.rand.as_slice().try_into().unwrap());
    let autn = Autn(challenge.autn.as_slice().try_into().unwrap());
    let Outcome::SyncFailure(auts) = card.run_aka(&rand, &autn) else { panic!("expected AUTS") };
    let verdict = ro_b
        .aka_response(&id, device, &AkaResult::Auts { auts: ByteBuf::from(auts.0.to_vec()) })
        .await
        .unwrap();
    let AkaVerdict::Challenge { rand, autn } = verdict else { panic!("expected a new challenge") };
    let rand = Rand(rand.as_slice().try_into().unwrap());
    let autn = Autn(autn.as_slice().try_into().unwrap());
    let Outcome::Success { res, .. } = card.run_aka(&rand, &autn) else {
        panic!("refused after resync")
    };
    let verdict = ro_b
        .aka_response(&id, device, &AkaResult::Res { res: ByteBuf::from(res.0.to_vec()) })
        .await
        .unwrap();
    assert_eq!(verdict, AkaVerdict::Live);
    // The same RES again (its verdict lost on the way back): live again.
    let again = ro_b
        .aka_response(&id, device, &AkaResult::Res { res: ByteBuf::from(res.0.to_vec()) })
        .await
        .unwrap();
    assert_eq!(again, AkaVerdict::Live);

    // A wrong RES fails and consumes the challenge.
    let _ = ro_b.aka_challenge(&id, device).await.unwrap();
    assert_problem(
        ro_b.aka_response(&id, device, &AkaResult::Res { res: ByteBuf::from(vec![0; 8]) }).await,
        403,
        "aka-res-mismatch",
    );
    assert_problem(
        ro_b.aka_response(&id, device, &AkaResult::Res { res: ByteBuf::from(vec![0; 8]) }).await,
        409,
        "aka-no-challenge",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_allocations_states_and_ota_counters() {
    for backend in Backend::ALL {
        a_restart_keeps_allocations_states_and_ota_counters_on(World::start_on(10, backend).await)
            .await;
    }
}

async fn a_restart_keeps_allocations_states_and_ota_counters_on(mut world: World) {
    let mut devices = world.manufacture(1);
    let (ro_a, ro_b) = world.ro();

    // A first campaign fails after the TRE was activated (counter 1).
    let first = campaign("first", &devices);
    ro_a.create_campaign(&first).await.unwrap();
    ro_b.create_campaign(&first).await.unwrap();
    let first_list = ro_b.prepare(&cid("first")).await.unwrap();
    let (device, profile, card) = &mut devices[0];
    let command = ro_a.activate_tre(&cid("first"), device).await.unwrap();
    assert_eq!(command.counter, 1);
    card.ota(&command.command).unwrap();
    card.fall_back("campaign abandoned").unwrap();
    for client in [&ro_a, &ro_b] {
        client.report(&report("first", device, ReportOutcome::Failure)).await.unwrap();
    }

    world.restart_a().await;
    let (ro_a, _) = world.ro();
    assert_problem(ro_a.activate_tre(&cid("first"), device).await, 409, "device-finished");
    assert_eq!(ro_a.subscriber(&profile.imsi).await.unwrap().status, SubscriberStatus::Active);

    // A second campaign for the same device: a new IMSI from MNO-B (none is reissued) and
    // the next OTA counter from MNO-A's store, which the card accepts.
    let second = campaign("second", &devices);
    ro_a.create_campaign(&second).await.unwrap();
    ro_b.create_campaign(&second).await.unwrap();
    let second_list = ro_b.prepare(&cid("second")).await.unwrap();
    assert_ne!(second_list.entries[0].imsi, first_list.entries[0].imsi);
    let (device, _, card) = &mut devices[0];
    let command = ro_a.activate_tre(&cid("second"), device).await.unwrap();
    assert_eq!(command.counter, 2);
    card.ota(&command.command).unwrap();

    // Manufacturing continues after the last issued number.
    let next = world.mno_a.operator.issue_subscription().unwrap();
    assert!(next.imsi.as_str().ends_with("0000000002"), "{}", next.imsi);
    assert_ne!(next.iccid, devices[0].1.iccid);
}
