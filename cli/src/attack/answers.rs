//! Attacks on the device's answers (found while building the matrix; `docs/SECURITY.md`
//! "Findings"): the RO's device API takes anonymous clients — devices authenticate by
//! attestation — so anyone who can reach it can post a device's answer. An answer that ends
//! the change is the dangerous one: a "failed" that arrives after the card installed the new
//! profile has both operators give up the subscription the card now runs (MNO-B retires it,
//! the card no longer holds MNO-A's), leaving the device without a working subscription. The
//! RO now acts on install and AKA answers only when the device's enrolled AK signed them
//! (`protocol::receipt::AnswerStatement`). The attacker polls the device's task like the
//! device does, and posts first.

use anyhow::{Context, Result};
use protocol::device_api::{self, AkaResult, DeviceTask, InstallResult};
use protocol::receipt::{ANSWER_SIGNATURE_HEADER, AnswerStatement};
use tre::tpm::{KeyAlg, Tpm};

use super::device::{Act, Attacked, Hostile, Target, attack_one, runtime};
use super::observe::{self, Answer, answer_layer};
use super::{Attacker, Ctx, Expect, Layer, Observed, Outcome, Scenario, Stage};

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "forged-install-failure",
            17,
            Attacker::Network,
            "posts \"install failed\" for a device that is installing its bundle, before the device's receipt arrives (no signature: the device API takes anonymous clients)",
            Expect::at(Stage::RoDeviceApi, "answer-not-signed"),
            forged_install_failure,
        ),
        Scenario::new(
            "forged-aka-failure",
            17,
            Attacker::Network,
            "posts an AKA failure for a device whose new USIM is being challenged, signed by the AK of another TPM (its own)",
            Expect::at(Stage::RoDeviceApi, "answer-not-signed"),
            forged_aka_failure,
        ),
    ]
}

fn forged_install_failure(ctx: &Ctx) -> Result<Observed> {
    let mut forged = None;
    let attacked = attack_one(ctx, &ctx.image, |d: &mut Hostile, task| {
        if let (DeviceTask::Install { .. }, None) = (&task, &forged) {
            let body = device_api::to_cbor(&InstallResult::Failed { reason: "forged".into() })?;
            forged = Some(post_as_attacker(ctx, &d.id, "install", body, None)?);
        }
        Ok(Act::Agent(task))
    })?;
    verdict(&attacked, forged)
}

fn forged_aka_failure(ctx: &Ctx) -> Result<Observed> {
    // The attacker's own TPM, with a perfectly good AK: not the victim's.
    let own = Target::new(ctx.manufacture()?);
    let mut own_tpm = Tpm::connect(&own.tcti()?)?;
    let own_ak = own_tpm.ak(KeyAlg::Ecc)?;
    let mut forged = None;
    let attacked = attack_one(ctx, &ctx.image, |d: &mut Hostile, task| {
        if let (DeviceTask::Aka { rand, autn }, None) = (&task, &forged) {
            let body = device_api::to_cbor(&AkaResult::Failed { reason: "forged".into() })?;
            let statement =
                AnswerStatement::new(d.id.clone(), AnswerStatement::aka_task(rand, autn), &body);
            let signature = hex::encode(own_tpm.sign(&own_ak, &statement.to_cbor()?)?);
            forged = Some(post_as_attacker(ctx, &d.id, "aka", body, Some(signature))?);
        }
        Ok(Act::Agent(task))
    })?;
    verdict(&attacked, forged)
}

/// Posts `body` to the device's `endpoint` from the attacker's own connection (on a thread
/// of its own: the device's runtime is busy driving the device).
fn post_as_attacker(
    ctx: &Ctx,
    device: &protocol::DeviceId,
    endpoint: &str,
    body: Vec<u8>,
    signature: Option<String>,
) -> Result<Answer> {
    let url = format!("{}/v1/devices/{device}/{endpoint}", ctx.lab.urls.ro);
    let http = ctx.lab.pki.anonymous_client()?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || -> Result<Answer> {
                let rt = runtime()?;
                rt.block_on(async {
                    let mut request =
                        http.post(&url).header("content-type", "application/cbor").body(body);
                    if let Some(signature) = signature {
                        request = request.header(ANSWER_SIGNATURE_HEADER, signature);
                    }
                    let response =
                        request.send().await.with_context(|| format!("{url}: no answer"))?;
                    observe::answer_of(response).await
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the attacker's thread panicked"))?
    })
}

/// The RO's answer to the forgery decides; and the device must still switch, or the attack
/// achieved what it wanted whatever the RO said.
fn verdict(attacked: &Attacked, forged: Option<Answer>) -> Result<Observed> {
    let forged = forged.context("the device never got the task the attacker waited for")?;
    let decided = answer_layer(Stage::RoDeviceApi, &forged);
    if attacked.ro.outcome != Outcome::Accepted {
        let left = Layer::accepted(
            Stage::RoDeviceApi,
            format!("the device did not switch: {}", attacked.ro.detail),
        );
        return Ok(Observed::new(left).with(decided));
    }
    let card = observe::open_card(&attacked.target.card)?;
    if card.imsi() == &attacked.target.imsi || !card.usim_active() {
        return Ok(Observed::new(Layer::accepted(
            Stage::Uicc,
            "the card does not run the new profile",
        ))
        .with(decided));
    }
    let mut decided = decided;
    decided.detail.push_str(" — the device switched all the same");
    Ok(Observed::new(decided))
}
