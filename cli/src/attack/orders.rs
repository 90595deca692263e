//! Attacks on the commit point of the crash-safe subscription change (issue 11;
//! `docs/flow.md`, `docs/SECURITY.md` "Findings"). The card keeps the old profile as its
//! fallback until the RO's commit order reaches it; the RO moves a device to `switched` only
//! on the device's AK-signed word that its card committed, and to `rolled-back` only on its
//! signed word that the old profile runs again. Forging either word is the attack: a forged
//! "committed" has MNO-A retire the old IMSI while the card may still fall back to it; a
//! forged abort acknowledgement has MNO-B retire the new IMSI while the card may still run
//! it. The RO's last word to the device is the other half: a device told "switched" for a
//! change its card never committed must not take it — the agent restores its old profile on
//! every end that is not its card's commit of that campaign.
//!
//! Before the device's AK is enrolled the RO takes an abort acknowledgement unsigned — the
//! device can then have done no more than activate its TRE — but such an acknowledgement
//! cannot claim a commit: one that did moved the device to `reconciling` for good, its TRE
//! active and its USIM not (the former open finding of `docs/SECURITY.md`).
//!
//! The attackers: a network attacker who posts answers to the device API (anonymous, like
//! the device) — unsigned, signed by another TPM's AK, or with a signature the device made
//! for another task — and a rogue RO host (the RO's certificate) answering the device's poll.
//! The forged orders to the device are in `signed_orders`.

use std::time::Duration;

use anyhow::{Context, Result};
use protocol::DeviceId;
use protocol::device_api::{
    self, AbortAck, AttachRequest, CommitResult, DeviceTask, InstallResult,
};
use protocol::device_auth::{CredentialChallenge, CredentialRequest};
use protocol::receipt::AnswerStatement;
use protocol::tpm::credential::make_credential;
use protocol::tpm::{Public, Unmarshal};
use provisioning::pki::{PeerAuth, Role};
use serde_bytes::ByteBuf;
use tre::agent::{Agent, AgentConfig, AgentState, Outcome as AgentOutcome};
use tre::attester::{Attester, AttesterOptions};
use tre::tpm::Tpm;
use uicc::Phase;

use super::answers::{ForeignAk, overruled, post_as_attacker, ro_state, still_switched};
use super::device::{
    Act, Attacked, Hostile, Target, agent_config, attack_target, cancel, genuine, pause_at, runtime,
};
use super::observe::{self, answer_layer, card_layer};
use super::{Attacker, Ctx, Expect, Layer, Observed, Scenario, Stage};

/// The matrix's item for the commit point of issue 11.
const ITEM: u8 = 18;

const FOREIGN: &str = "signed by another TPM's AK";

pub(super) fn scenarios() -> Vec<Scenario> {
    let unsigned = Expect::at(Stage::RoDeviceApi, "device-not-authenticated");
    vec![
        Scenario::new(
            "forged-abort-ack",
            ITEM,
            Attacker::Network,
            "posts the acknowledgement of an abort order (old profile back, USIM active) for a device whose campaign was cancelled while its new profile ran on trial, before the device restored it; unsigned, and signed by the AK of another TPM",
            unsigned,
            forged_abort_ack,
        ),
        Scenario::new(
            "forged-commit-answer",
            ITEM,
            Attacker::Network,
            "posts \"committed\" with the new IMSI for a device told to commit, before its card commits; unsigned, and signed by the AK of another TPM",
            unsigned,
            forged_commit,
        ),
        Scenario::new(
            "install-signature-on-commit",
            ITEM,
            Attacker::Network,
            "presents the AK signature the device made over its install answer as the signature of a \"committed\" answer to the commit order (and with the install answer itself)",
            unsigned,
            install_signature_on_commit,
        ),
        Scenario::new(
            "forged-attach-and-abort-ack",
            ITEM,
            Attacker::Network,
            "while the device holds MNO-A's activate-TRE command: posts an attach for it claiming the TRE inactive (which would make the RO order an abort), then an abort acknowledgement claiming the USIM active (attack 2 of issue 12: it once left the card with its USIM off); unsigned, and signed by the AK of another TPM",
            unsigned,
            forged_attach_and_abort_ack,
        ),
        Scenario::new(
            "ro-silent-after-tre-activation",
            ITEM,
            Attacker::Peer,
            "after the device's card carried out MNO-A's activate-TRE command (TRE active, USIM off), the RO it talks to (a rogue with the RO's certificate) answers every poll with idle until the agent's deadline (3 s here) passes",
            Expect::at(Stage::Tre, "usim-restored-at-deadline"),
            ro_silent,
        ),
        Scenario::new(
            "forged-done-switched",
            ITEM,
            Attacker::Peer,
            "a rogue RO (the RO's certificate) answers the device's poll with done {switched: true} while the new profile runs on trial and the card has not committed it",
            Expect::at(Stage::Tre, "card-not-committed"),
            forged_done,
        ),
    ]
}

fn forged_abort_ack(ctx: &Ctx) -> Result<Observed> {
    let mut own = ForeignAk::new(ctx)?;
    let target = Target::new(ctx.manufacture()?);
    let rt = runtime()?;
    // Once the AKA challenge comes, the new profile runs on trial.
    let paused = pause_at(ctx, &target, &rt, |t| matches!(t, DeviceTask::Aka { .. }))?;
    let (id, mut device) = (paused.campaign, paused.device);
    anyhow::ensure!(
        on_trial(&device),
        "the device never reached its AKA challenge with the new profile on trial"
    );
    // The subscriber cancels the campaign: the RO orders the device back to its old profile.
    rt.block_on(cancel(ctx, &id))?;
    let mut forged = Vec::new();
    let mut after = None;
    rt.block_on(device.run(|d: &mut Hostile, task| {
        if let (DeviceTask::Abort { campaign, .. }, None) = (&task, &after) {
            let ack = AbortAck {
                usim_active: true,
                tre_active: false,
                imsi: target.imsi.to_string(),
                committed: false,
            };
            let body = device_api::to_cbor(&ack)?;
            let order = AnswerStatement::order_task("abort", campaign);
            let signature = own.sign(&d.id, order, &body)?;
            forged = post_forgeries(
                ctx,
                &d.id,
                "abort",
                vec![(body.clone(), None, "unsigned"), (body, Some(signature), FOREIGN)],
                &mut own,
            )?;
            after = Some((ro_state(ctx, campaign, &d.id)?, on_trial(d)));
        }
        Ok(Act::Agent(task))
    }))?;
    drop(device);
    let (state, still_on_trial) = after.context("the device was never told to abort")?;
    let mut observed = refusals(forged)?;
    if state != "aborting" || !still_on_trial {
        let took = format!(
            "after the forgeries the device was {state} at the RO (its new profile on trial: {still_on_trial})"
        );
        return Ok(overruled(Layer::accepted(Stage::RoDeviceApi, took), observed));
    }
    // The device's own acknowledgement ends the change.
    let row = rt.block_on(observe::ro_device(&ctx.lab, &id, &target.device_id))?;
    if row.state != "rolled-back" {
        let ended =
            format!("the change ended {} after the device's own acknowledgement", row.state);
        return Ok(overruled(Layer::accepted(Stage::RoDeviceApi, ended), observed));
    }
    if let Some(accepted) = card_layer(&target.card, &target.imsi)? {
        return Ok(overruled(accepted, observed));
    }
    observed.decided.detail.push_str(
        " — the RO kept waiting for the device's own signed word, which rolled the change back; the card runs its MNO-A profile again",
    );
    Ok(observed)
}

fn forged_commit(ctx: &Ctx) -> Result<Observed> {
    let mut own = ForeignAk::new(ctx)?;
    let mut forged = Vec::new();
    let mut after = None;
    let target = Target::new(ctx.manufacture()?);
    let attacked = attack_target(ctx, target, &ctx.image, |d: &mut Hostile, task| {
        if let (DeviceTask::Commit { campaign, .. }, None) = (&task, &after) {
            let body = committed(d)?;
            let signature =
                own.sign(&d.id, AnswerStatement::order_task("commit", campaign), &body)?;
            forged = post_forgeries(
                ctx,
                &d.id,
                "commit",
                vec![(body.clone(), None, "unsigned"), (body, Some(signature), FOREIGN)],
                &mut own,
            )?;
            after = Some(ro_state(ctx, campaign, &d.id)?);
        }
        Ok(Act::Agent(task))
    })?;
    switched_after(&attacked, forged, after)
}

fn install_signature_on_commit(ctx: &Ctx) -> Result<Observed> {
    let mut own = ForeignAk::new(ctx)?;
    let target = Target::new(ctx.manufacture()?);
    // The agent keeps the receipt it posted in its install answer here.
    let receipt = target.dir.join("receipt.cbor");
    let mut forged = Vec::new();
    let mut after = None;
    let attacked = attack_target(ctx, target, &ctx.image, |d: &mut Hostile, task| {
        if let (DeviceTask::Commit { campaign, .. }, None) = (&task, &after) {
            // The device's install answer, and its AK's signature over it for the install.
            let install = device_api::to_cbor(&InstallResult::Installed {
                receipt: ByteBuf::from(std::fs::read(&receipt)?),
            })?;
            let install_task = AnswerStatement::install_task(&d.agent.bundle_key_name()?);
            let signature = d.sign_answer(&install, install_task)?;
            let ak = Public::from_bytes(&d.agent.attester().enrolment_request()?.ak_public)?;
            AnswerStatement::new(d.id.clone(), install_task, &install)
                .verify(&ak, &hex::decode(&signature)?)
                .context("the signature does not verify for the install answer it was made for")?;
            forged = post_forgeries(
                ctx,
                &d.id,
                "commit",
                vec![
                    (committed(d)?, Some(signature.clone()), "the install answer's signature"),
                    (install, Some(signature), "the install answer as it was"),
                ],
                &mut own,
            )?;
            after = Some(ro_state(ctx, campaign, &d.id)?);
        }
        Ok(Act::Agent(task))
    })?;
    switched_after(&attacked, forged, after)
}

fn ro_silent(ctx: &Ctx) -> Result<Observed> {
    let target = Target::new(ctx.manufacture()?);
    let rt = runtime()?;
    // The device runs MNO-A's command and attaches, then stops at its next task.
    let paused = pause_at(ctx, &target, &rt, |t| {
        matches!(t, DeviceTask::Enrol | DeviceTask::Attest { .. })
    })?;
    let (id, device) = (paused.campaign, paused.device);
    let card = device.agent.card();
    anyhow::ensure!(
        card.tre_active() && !card.usim_active(),
        "the device never ran MNO-A's command"
    );
    drop(device);

    // Its agent starts again and hears nothing but "idle" until its deadline.
    let outcome = rogue_ro_with(ctx, &target, &DeviceTask::Idle, Duration::from_secs(3));
    let card = observe::open_card(&target.card)?;
    let restored = card.usim_active() && !card.tre_active() && card.imsi() == &target.imsi;
    let what = format!(
        "the agent gave up ({}); the card's USIM active: {}, TRE active: {}, IMSI {}",
        outcome.err().map_or_else(|| "it ended".to_owned(), |e| format!("{e:#}")),
        card.usim_active(),
        card.tre_active(),
        card.imsi()
    );
    drop(card);
    // The subscriber gives up on the change; the device, back with the real RO, acknowledges.
    rt.block_on(cancel(ctx, &id))?;
    let mut device = Hostile::boot(ctx, &target, &ctx.image)?;
    rt.block_on(device.run(genuine))?;
    drop(device);
    let mut observed = Observed::new(if restored {
        Layer::rejected(Stage::Tre, vec!["usim-restored-at-deadline".into()], what)
    } else {
        Layer::accepted(Stage::Tre, what)
    });
    if let Err(why) = observe::aka_with(&ctx.lab.mno_a, &target.card)? {
        return Ok(overruled(Layer::accepted(Stage::Uicc, why), observed));
    }
    observed.decided.detail.push_str(" — the card passes AKA with MNO-A");
    Ok(observed)
}

fn forged_done(ctx: &Ctx) -> Result<Observed> {
    let target = Target::new(ctx.manufacture()?);
    let rt = runtime()?;
    // The device gets as far as the commit order and stops there: the new profile on trial.
    let paused = pause_at(ctx, &target, &rt, |t| matches!(t, DeviceTask::Commit { .. }))?;
    let (id, device) = (paused.campaign, paused.device);
    anyhow::ensure!(
        on_trial(&device),
        "the device never got the commit order with the new profile on trial"
    );
    drop(device);

    // Its agent starts again and asks the rogue RO what to do.
    let done = DeviceTask::Done { campaign: id.clone(), switched: true, reason: None };
    let outcome = rogue_ro(ctx, &target, &done)?;
    let card = observe::open_card(&target.card)?;
    let phase = card.change().map(|c| c.phase());
    let restored = outcome.state == AgentState::RolledBack
        && card.imsi() == &target.imsi
        && card.usim_active()
        && !card.tre_active()
        && matches!(phase, Some(Phase::FellBack { .. }));
    let what = format!(
        "the agent ended {:?} with IMSI {}, the card's change {}",
        outcome.state,
        card.imsi(),
        phase.map_or_else(|| "gone".to_owned(), |p| p.to_string())
    );
    drop(card);
    let decided = if restored {
        Layer::rejected(
            Stage::Tre,
            vec!["card-not-committed".into()],
            format!("told it switched, {what}"),
        )
    } else {
        Layer::accepted(Stage::Tre, what)
    };

    // Back with the real RO, which still waits for the commit: the card's word is that it
    // fell back, so the RO rolls the change back and MNO-A keeps the IMSI the card runs.
    let mut device = Hostile::boot(ctx, &target, &ctx.image)?;
    rt.block_on(device.run(genuine))?;
    drop(device);
    let row = rt.block_on(observe::ro_device(&ctx.lab, &id, &target.device_id))?;
    let mut observed = Observed::new(decided);
    if row.state != "rolled-back" {
        let ended = format!("the RO ended the change {}: {:?}", row.state, row.failure);
        return Ok(overruled(Layer::accepted(Stage::RoDeviceApi, ended), observed));
    }
    if let Some(accepted) = card_layer(&target.card, &target.imsi)? {
        return Ok(overruled(accepted, observed));
    }
    if let Err(why) = observe::aka_with(&ctx.lab.mno_a, &target.card)? {
        return Ok(overruled(Layer::accepted(Stage::Uicc, why), observed));
    }
    observed.decided.detail.push_str(
        " — the real RO, still waiting for the commit, learned from the device's signed answer that the card fell back and rolled the change back",
    );
    Ok(observed)
}

fn forged_attach_and_abort_ack(ctx: &Ctx) -> Result<Observed> {
    let mut own = ForeignAk::new(ctx)?;
    let mut forged = Vec::new();
    let mut after = None;
    let target = Target::new(ctx.manufacture()?);
    let imsi = target.imsi.to_string();
    let attacked = attack_target(ctx, target, &ctx.image, |d: &mut Hostile, task| {
        if let (DeviceTask::ActivateTre { campaign, .. }, None) = (&task, &after) {
            // An attach claiming the TRE inactive (the RO would order an abort), then an
            // acknowledgement claiming the USIM active: each unsigned, and signed by the AK
            // of another TPM.
            let attach = device_api::to_cbor(&AttachRequest {
                device_id: d.id.clone(),
                ek_certificate: ByteBuf::new(),
                ek_public: ByteBuf::new(),
                tre_active: false,
                activation_proof: ByteBuf::new(),
            })?;
            let ack = device_api::to_cbor(&AbortAck {
                usim_active: true,
                tre_active: false,
                imsi: imsi.clone(),
                committed: true,
            })?;
            forged = post_forgeries(
                ctx,
                &d.id,
                "attach",
                vec![(attach.clone(), None, "attach, unsigned"), (attach, None, FOREIGN)],
                &mut own,
            )?;
            forged.extend(post_forgeries(
                ctx,
                &d.id,
                "abort",
                vec![(ack.clone(), None, "abort ack, unsigned"), (ack, None, FOREIGN)],
                &mut own,
            )?);
            after = Some(ro_state(ctx, campaign, &d.id)?);
        }
        // The genuine command: the card activates its TRE and deactivates its USIM.
        Ok(Act::Agent(task))
    })?;
    let state = after.context("the device was never handed MNO-A's activate-TRE command")?;
    let observed = refusals(forged)?;
    if state != "tre-activation-issued" {
        let took = format!("after the forgeries the device was {state} at the RO");
        return Ok(overruled(Layer::accepted(Stage::RoDeviceApi, took), observed));
    }
    still_switched(&attacked, observed)
}

/// Restarts the target's agent against a rogue RO that answers every request with `task`,
/// over TLS with the RO's certificate, and runs the agent's own loop (as `tresor device run`
/// does) to its end.
fn rogue_ro(ctx: &Ctx, target: &Target, task: &DeviceTask) -> Result<AgentOutcome> {
    rogue_ro_with(ctx, target, task, super::device::DEADLINE)
}

/// [`rogue_ro`] with the agent's deadline `deadline`.
fn rogue_ro_with(
    ctx: &Ctx,
    target: &Target,
    task: &DeviceTask,
    deadline: Duration,
) -> Result<AgentOutcome> {
    let rt = runtime()?;
    let answer = device_api::to_cbor(task)?;
    // axum's router, reached through transport's helper (the harness has no HTTP framework
    // of its own). The rogue holds the RO's certificate, so it can bind the device's AK as
    // the RO does (a credential for the device's own EK and AK); every other path answers
    // `task`.
    let router = transport::limit_body::<()>(Default::default(), 64 * 1024)
        .route(
            "/v1/devices/{id}/credential",
            axum::routing::post(|body: axum::body::Bytes| async move { rogue_credential(&body) }),
        )
        .route(
            "/v1/devices/{id}/credential/activate",
            axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
        .fallback(move || {
            let answer = answer.clone();
            async move { answer }
        });
    let tls = ctx.lab.pki.server_config(Role::Ro, PeerAuth::None)?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(transport::serve(listener, tls, router, async move {
        let _ = stopped.await;
    }));
    let run = run_agent(ctx, target, &url, deadline, &rt);
    let _ = stop.send(());
    // The agent is gone; a connection its client left open would hold a graceful shutdown.
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), server).await });
    run
}

/// The challenge an RO answers a binding request with: a credential for the device's AK
/// that only its EK can activate (the rogue does not care about the answer).
fn rogue_credential(body: &[u8]) -> axum::response::Response {
    use axum::response::IntoResponse;
    let challenge = || -> Result<Vec<u8>> {
        let request: CredentialRequest = device_api::from_cbor(body)?;
        let ek = Public::from_bytes(&request.ek_public)?;
        let ak = Public::from_bytes(&request.ak_public)?;
        let made = make_credential(&ek, &ak.name(), &[7; 32])?;
        Ok(device_api::to_cbor(&CredentialChallenge {
            id_object: ByteBuf::from(made.id_object.as_bytes().to_vec()),
            encrypted_secret: ByteBuf::from(made.encrypted_secret.as_bytes().to_vec()),
        })?)
    };
    match challenge() {
        Ok(bytes) => bytes.into_response(),
        Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// Boots the target and runs its genuine agent, talking to the RO at `ro_url`, to its end.
fn run_agent(
    ctx: &Ctx,
    target: &Target,
    ro_url: &str,
    deadline: Duration,
    rt: &tokio::runtime::Runtime,
) -> Result<AgentOutcome> {
    let tpm = Tpm::connect(&target.tcti()?)?;
    let attester = Attester::boot(tpm, &ctx.image, AttesterOptions::default())?;
    let card = observe::open_card(&target.card)?;
    let config = AgentConfig { deadline, ..agent_config(ctx, target, ro_url)? };
    let mut agent = Agent::new(attester, card, config)?;
    Ok(rt.block_on(agent.run())?)
}

/// The answer the device posts when its card committed: the IMSI its card runs.
fn committed(d: &Hostile) -> Result<Vec<u8>> {
    let imsi = d.agent.card().imsi().to_string();
    Ok(device_api::to_cbor(&CommitResult::Committed { imsi })?)
}

fn on_trial(d: &Hostile) -> bool {
    d.agent.card().change().is_some_and(|c| c.on_trial())
}

/// Posts each forgery (body, answer signature, what it is) to the device's `endpoint` as the
/// attacker, the first with an unsigned request, the others signed by `own`'s AK; the
/// first's answer decides, the others' checks say what they tried.
fn post_forgeries(
    ctx: &Ctx,
    device: &DeviceId,
    endpoint: &str,
    forgeries: Vec<(Vec<u8>, Option<String>, &str)>,
    own: &mut ForeignAk,
) -> Result<Vec<Layer>> {
    let mut layers = Vec::new();
    for (i, (body, signature, what)) in forgeries.into_iter().enumerate() {
        let channel = (i > 0).then_some(&mut *own);
        let answer = post_as_attacker(ctx, device, endpoint, body, channel, signature)?;
        let mut layer = answer_layer(Stage::RoDeviceApi, &answer);
        layer.detail = format!("{what}: {}", layer.detail);
        if i > 0 {
            layer.checks.iter_mut().for_each(|c| *c = format!("{c} ({what})"));
        }
        layers.push(layer);
    }
    Ok(layers)
}

pub(super) fn refusals(layers: Vec<Layer>) -> Result<Observed> {
    let mut layers = layers.into_iter();
    let mut observed = Observed::new(layers.next().context("no forgery was posted")?);
    observed.also.extend(layers);
    Ok(observed)
}

/// The forgeries must have left the device waiting for its own commit answer at the RO, and
/// the device must then switch.
fn switched_after(
    attacked: &Attacked,
    forged: Vec<Layer>,
    state: Option<String>,
) -> Result<Observed> {
    let state = state.context("the device was never told to commit")?;
    let observed = refusals(forged)?;
    if state != "committing" {
        let took = format!("after the forgeries the device was {state} at the RO");
        return Ok(overruled(Layer::accepted(Stage::RoDeviceApi, took), observed));
    }
    still_switched(attacked, observed)
}
