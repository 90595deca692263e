//! The ICCID binding at the old operator (docs/flow.md, "MNO-A"; issue 12): MNO-A retires
//! an old subscription only for the device whose card proved, in its MACed answer to the
//! activate-TRE command, that it holds that subscription's ICCID and IMSI, for that
//! campaign. A device paired with a victim's ICCID cannot make that proof, gets the victim's
//! IMSI_A retired by no report, and does not keep the victim's own campaigns from running.
//! Real operators on loopback HTTPS, real cards of the `uicc` crate, real SQLite files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mno_common;

use mno_common::*;
use protocol::ota::{self, Activation, OtaCommand, Response, ResponseStatus};
use protocol::{DeviceId, OtaKey, SubscriptionProfile};
use provisioning::mno::SubscriberStatus;
use provisioning::mno::api::{CampaignDevice, DeviceStage, Report, ReportOutcome};

fn report(id: &str, device: &DeviceId, outcome: ReportOutcome) -> Report {
    Report { campaign: cid(id), device_id: device.clone(), outcome, step: None, reason: None }
}

/// A response made with `kid` for `profile`'s card, as a forger chooses it.
fn forged(kid: &OtaKey, profile: &SubscriptionProfile, counter: u64, campaign: &str) -> Vec<u8> {
    let response = Response {
        command: OtaCommand::ActivateTre,
        counter,
        status: ResponseStatus::PorOk,
        iccid: profile.iccid.clone(),
        imsi: profile.imsi.clone(),
        activation: Some(Activation::new(campaign, "mno-b").unwrap()),
    };
    ota::seal_response(kid, &response).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bogus_pairing_proves_nothing_retires_nothing_and_blocks_nothing() {
    for backend in Backend::ALL {
        a_bogus_pairing_proves_nothing_retires_nothing_and_blocks_nothing_on(
            World::start_on(10, backend).await,
        )
        .await;
    }
}

async fn a_bogus_pairing_proves_nothing_retires_nothing_and_blocks_nothing_on(world: World) {
    let mut devices = world.manufacture(2);
    let (ro_a, ro_b) = world.ro();
    let (attacker, victim) = (devices[0].0.clone(), devices[1].0.clone());
    let victim_profile = devices[1].1.clone();

    // The attacker's device paired with the victim's ICCID.
    let mut bogus = campaign("bogus", &[]);
    bogus.devices =
        vec![CampaignDevice { device_id: attacker.clone(), iccid: victim_profile.iccid.clone() }];
    ro_a.create_campaign(&bogus).await.unwrap();
    ro_b.create_campaign(&bogus).await.unwrap();
    ro_b.prepare(&cid("bogus")).await.unwrap();
    let command = ro_a.activate_tre(&cid("bogus"), &attacker).await.unwrap();
    // Before the command was issued nothing can be proven; now the attacker's own card
    // refuses a command for another card.
    let (_, _, attacker_card) = &mut devices[0];
    assert!(attacker_card.ota(&command.command).is_err());
    assert!(!attacker_card.tre_active());

    // Whatever the attacker presents as the victim card's answer is refused.
    let counter = command.counter;
    let guesses: Vec<(&str, Vec<u8>)> = vec![
        ("nothing", Vec::new()),
        ("MNO-A's command itself", command.command.to_vec()),
        ("a guessed KID", forged(&OtaKey::new([7; 16]), &victim_profile, counter, "bogus")),
    ];
    for (what, proof) in guesses {
        assert_problem(
            ro_a.tre_activated(&cid("bogus"), &attacker, &proof).await,
            403,
            "tre-activation-not-proven",
        );
        let status = ro_a.campaign(&cid("bogus")).await.unwrap();
        assert_eq!(status.devices[0].stage, DeviceStage::TreActivationIssued, "{what}");
    }
    // Even a success report (a rogue RO, or a device that faked every later answer) keeps
    // the victim's IMSI_A in service.
    assert_problem(
        ro_a.report(&report("bogus", &attacker, ReportOutcome::Success)).await,
        403,
        "tre-activation-not-proven",
    );
    let view = ro_a.subscriber(&victim_profile.imsi).await.unwrap();
    assert_eq!(view.status, SubscriberStatus::Active);

    // The bogus pairing, still open, does not keep the victim's own campaign out.
    let genuine = campaign("genuine", &devices[1..]);
    ro_a.create_campaign(&genuine).await.unwrap();
    ro_b.create_campaign(&genuine).await.unwrap();
    ro_b.prepare(&cid("genuine")).await.unwrap();
    let command = ro_a.activate_tre(&cid("genuine"), &victim).await.unwrap();
    let (_, _, victim_card) = &mut devices[1];
    let proof = victim_card.ota(&command.command).unwrap();
    // The victim card's genuine answer does not prove the bogus pairing either (another
    // campaign, another counter).
    assert_problem(
        ro_a.tre_activated(&cid("bogus"), &attacker, &proof).await,
        403,
        "tre-activation-not-proven",
    );
    let ack = ro_a.tre_activated(&cid("genuine"), &victim, &proof).await.unwrap();
    assert_eq!((&ack.iccid, &ack.imsi), (&victim_profile.iccid, &victim_profile.imsi));

    // Now the card is in a proven change: no other campaign takes its ICCID.
    let mut third = campaign("third", &devices[1..]);
    third.devices[0].device_id = device(9);
    assert_problem(ro_a.create_campaign(&third).await, 409, "subscription-in-change");

    // The bogus campaign ends with a failure; the genuine one retires IMSI_A.
    ro_a.report(&report("bogus", &attacker, ReportOutcome::Failure)).await.unwrap();
    assert_eq!(
        ro_a.subscriber(&victim_profile.imsi).await.unwrap().status,
        SubscriberStatus::Active
    );
    let ack = ro_a.report(&report("genuine", &victim, ReportOutcome::Success)).await.unwrap();
    assert_eq!(ack.subscriber.unwrap().status, SubscriberStatus::Retired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_of_the_cards_answer_fails_closed() {
    for backend in Backend::ALL {
        every_check_of_the_cards_answer_fails_closed_on(World::start_on(10, backend).await).await;
    }
}

async fn every_check_of_the_cards_answer_fails_closed_on(world: World) {
    let mut devices = world.manufacture(1);
    let (ro_a, ro_b) = world.ro();
    let (dev, profile) = (devices[0].0.clone(), devices[0].1.clone());
    let kid = profile.ota.kid.clone();
    let id = cid("c1");
    ro_a.create_campaign(&campaign("c1", &devices)).await.unwrap();
    ro_b.create_campaign(&campaign("c1", &devices)).await.unwrap();
    ro_b.prepare(&id).await.unwrap();
    let not_proven = "tre-activation-not-proven";
    assert_problem(ro_a.tre_activated(&id, &dev, &[1, 2]).await, 409, "tre-activation-not-issued");

    let command = ro_a.activate_tre(&id, &dev).await.unwrap();
    let counter = command.counter;
    let genuine = devices[0].2.ota(&command.command).unwrap();
    // Each field wrong, made with the card's real KID (only the card, and MNO-A, hold it).
    let mut other_iccid = profile.clone();
    other_iccid.iccid = "89001010000000000999".parse().unwrap();
    let mut other_imsi = profile.clone();
    other_imsi.imsi = "001019999999999".parse().unwrap();
    let cases = [
        ("an earlier counter", forged(&kid, &profile, counter - 1, "c1")),
        ("a later counter", forged(&kid, &profile, counter + 1, "c1")),
        ("another campaign", forged(&kid, &profile, counter, "c2")),
        ("another ICCID", forged(&kid, &other_iccid, counter, "c1")),
        ("another IMSI", forged(&kid, &other_imsi, counter, "c1")),
        ("another key", forged(&OtaKey::new([1; 16]), &profile, counter, "c1")),
        ("truncated", genuine[..genuine.len() - 1].to_vec()),
        ("the MAC only", genuine[genuine.len() - 8..].to_vec()),
    ];
    for (what, proof) in cases {
        let answer = ro_a.tre_activated(&id, &dev, &proof).await;
        assert_problem(answer, 403, not_proven);
        let status = ro_a.campaign(&id).await.unwrap();
        assert_eq!(status.devices[0].stage, DeviceStage::TreActivationIssued, "{what}");
    }
    // The new operator named in the answer must be the campaign's.
    let response = Response {
        command: OtaCommand::ActivateTre,
        counter,
        status: ResponseStatus::PorOk,
        iccid: profile.iccid.clone(),
        imsi: profile.imsi.clone(),
        activation: Some(Activation::new("c1", "mno-x").unwrap()),
    };
    let proof = ota::seal_response(&kid, &response).unwrap();
    assert_problem(ro_a.tre_activated(&id, &dev, &proof).await, 403, not_proven);

    // The card's own answer passes, again and again; after the report nothing more.
    ro_a.tre_activated(&id, &dev, &genuine).await.unwrap();
    ro_a.tre_activated(&id, &dev, &genuine).await.unwrap();
    assert_eq!(ro_a.campaign(&id).await.unwrap().devices[0].stage, DeviceStage::TreActivated);
    ro_a.report(&report("c1", &dev, ReportOutcome::Failure)).await.unwrap();
    assert_problem(ro_a.tre_activated(&id, &dev, &genuine).await, 409, "device-finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_proven_campaign_holds_the_card() {
    for backend in Backend::ALL {
        the_first_proven_campaign_holds_the_card_on(World::start_on(10, backend).await).await;
    }
}

async fn the_first_proven_campaign_holds_the_card_on(world: World) {
    let mut devices = world.manufacture(1);
    let (ro_a, ro_b) = world.ro();
    let dev = devices[0].0.clone();
    // Two open campaigns pair the same card (neither proven yet: both are accepted).
    for name in ["first", "second"] {
        let mut request = campaign(name, &devices);
        if name == "second" {
            request.devices[0].device_id = device(7);
        }
        ro_a.create_campaign(&request).await.unwrap();
        ro_b.create_campaign(&request).await.unwrap();
        ro_b.prepare(&cid(name)).await.unwrap();
    }
    let command = ro_a.activate_tre(&cid("first"), &dev).await.unwrap();
    let proof = devices[0].2.ota(&command.command).unwrap();
    ro_a.tre_activated(&cid("first"), &dev, &proof).await.unwrap();
    // The second campaign gets no command while the first holds the card.
    assert_problem(
        ro_a.activate_tre(&cid("second"), &device(7)).await,
        409,
        "subscription-in-change",
    );
    // Once the first is over, the second may go on.
    devices[0].2.fall_back("first campaign abandoned").unwrap();
    ro_a.report(&report("first", &dev, ReportOutcome::Failure)).await.unwrap();
    let command = ro_a.activate_tre(&cid("second"), &device(7)).await.unwrap();
    assert_eq!(command.counter, 2);
}
