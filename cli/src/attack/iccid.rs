//! Attacks on the trust boundaries of issue 12 (item 19; `docs/flow.md` steps 4–5 and
//! "MNO-A"): who tells the device which operator to trust, and who tells MNO-A which card a
//! device holds. Both answers now come from MNO-A's MACed activate-TRE command and the
//! card's MACed answer to it (`protocol::ota`), never from the RO's campaign or task.
//!
//! - `bogus-iccid-pairing`: a rogue new operator pairs its own device with a victim's
//!   ICCID; its device cannot prove the victim card's activation, MNO-A refuses
//!   (`tre-activation-not-proven`), the victim keeps IMSI_A, and the victim's own campaign,
//!   created while the bogus one is open, switches.
//!
//! The install task names no operator at all: the TRE expects the operator the card's
//! activation names (`bundle-signed-by-mno-a` in `bundle.rs` shows another one refused).

use anyhow::{Context, Result};
use protocol::device_api::DeviceTask;
use protocol::ota::{self, Activation, OtaCommand, Response, ResponseStatus};
use protocol::{Iccid, Imsi, OtaKey};
use provisioning::mno::SubscriberStatus;
use provisioning::mno::api::{self as mno_api, Report, ReportOutcome};
use provisioning::pki::Role;
use serde_bytes::ByteBuf;

use super::device::{Act, Hostile, Target, campaign, genuine, runtime};
use super::observe::{self, answer_layer, ro_layer};
use super::{Attacker, Ctx, Expect, Layer, Observed, Scenario, Stage};

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![Scenario::new(
        "bogus-iccid-pairing",
        19,
        Attacker::Peer,
        "a rogue new operator pairs its own device with a victim's ICCID in a campaign; its device attaches claiming the TRE active, with a response to MNO-A's command MACed under a guessed KID for the victim's ICCID, IMSI, counter and campaign (and a rogue RO reports success for it); the victim's own campaign is created while the bogus one is open",
        Expect::at(Stage::MnoA, "tre-activation-not-proven"),
        bogus_pairing,
    )]
}

fn bogus_pairing(ctx: &Ctx) -> Result<Observed> {
    let victim = Target::new(ctx.manufacture()?);
    let attacker = Target::new(ctx.manufacture()?);
    let rt = runtime()?;
    let bogus =
        rt.block_on(campaign(ctx, "mno-a", "mno-b", &[(&attacker.device_id, &victim.iccid)]))?;

    // A rogue RO's success report for the pairing, at once: MNO-A holds no proof.
    let report = Report {
        campaign: bogus.parse().map_err(|e: &str| anyhow::anyhow!(e))?,
        device_id: attacker.device_id.clone(),
        outcome: ReportOutcome::Success,
        step: None,
        reason: None,
    };
    let http = ctx.lab.pki.client(Role::Ro)?;
    let url = format!("{}{}", ctx.lab.urls.mno_a, mno_api::path::REPORTS);
    let answer =
        rt.block_on(observe::post(&http, &url, mno_api::JSON, serde_json::to_vec(&report)?))?;
    let mut reported = answer_layer(Stage::MnoA, &answer);
    reported.checks.iter_mut().for_each(|c| *c = format!("{c} (a success report from the RO)"));

    // The victim's own campaign, while the bogus pairing is open and unproven.
    let genuine_campaign =
        match rt.block_on(campaign(ctx, "mno-a", "mno-b", &[(&victim.device_id, &victim.iccid)])) {
            Ok(id) => id,
            Err(e) => {
                return Ok(Observed::new(Layer::accepted(
                    Stage::MnoA,
                    format!("the bogus pairing blocks the victim's campaign: {e:#}"),
                )));
            }
        };

    // The attacker's device: its card refuses the victim card's command; it attaches
    // claiming the TRE active with a forged answer.
    let mut device = Hostile::boot(ctx, &attacker, &ctx.image)?;
    let (victim_iccid, victim_imsi) = (victim.iccid.clone(), victim.imsi.clone());
    rt.block_on(device.run(|d: &mut Hostile, task| match task {
        DeviceTask::ActivateTre { campaign, command } => {
            let refused = d.agent.card_mut().ota(&command).is_err();
            anyhow::ensure!(refused, "the attacker's card ran the victim card's command");
            let mut attach = d.attach_request(true)?;
            let proof = forged_answer(&command, &victim_iccid, &victim_imsi, &campaign)?;
            attach.activation_proof = ByteBuf::from(proof);
            Ok(Act::Attach(attach))
        }
        task => Ok(Act::Agent(task)),
    }))?;
    drop(device);
    let row = rt.block_on(observe::ro_device(&ctx.lab, &bogus, &attacker.device_id))?;
    let mut observed = Observed::new(ro_layer(&row)?).with(reported);

    // The victim keeps IMSI_A, and its own campaign switches it.
    let status = ctx.lab.mno_a.subscriber_status(&victim.imsi)?.status;
    if status != SubscriberStatus::Active {
        return Ok(Observed::new(Layer::accepted(
            Stage::MnoA,
            format!("the victim's IMSI_A is {status} after the bogus pairing"),
        )));
    }
    let mut device = Hostile::boot(ctx, &victim, &ctx.image)?;
    rt.block_on(device.run(genuine))?;
    drop(device);
    let row = rt.block_on(observe::ro_device(&ctx.lab, &genuine_campaign, &victim.device_id))?;
    if row.state != "switched" {
        observed.also.push(Layer::accepted(
            Stage::MnoA,
            format!("the victim's own campaign did not switch it: {:?}", row.failure),
        ));
    }
    observe::committed_card(&victim.card, &victim.imsi)?
        .map_err(|why| anyhow::anyhow!("the victim's campaign switched at the RO, but {why}"))?;
    Ok(observed)
}

/// What the attacker makes of MNO-A's command: the response a card would give, with the
/// victim's ICCID and IMSI, the command's counter and the campaign, MACed with a guess.
fn forged_answer(command: &[u8], iccid: &Iccid, imsi: &Imsi, campaign: &str) -> Result<Vec<u8>> {
    // The counter sits after CLA INS P1 P2 Lc, the version and the command code.
    let counter = command.get(7..12).context("a command shorter than its counter")?;
    let mut wide = [0u8; 8];
    wide[3..].copy_from_slice(counter);
    let guess = OtaKey::random().map_err(|_| anyhow::anyhow!("no randomness"))?;
    let response = Response {
        command: OtaCommand::ActivateTre,
        counter: u64::from_be_bytes(wide),
        status: ResponseStatus::PorOk,
        iccid: iccid.clone(),
        imsi: imsi.clone(),
        activation: Some(Activation::new(campaign, "mno-b")?),
    };
    Ok(ota::seal_response(&guess, &response)?)
}
