//! Attacks on the evidence (issue 7, items 1–4; `docs/appraisal.md` "PCR values and event
//! log", "Freshness"): software the reference values do not describe, event logs that lie
//! about the TPM's history, and evidence that is not fresh. The attacker is the device's
//! own software; it talks to the RO's device API, which relays its evidence to the PVA. The
//! quotes are real: the device's swtpm made them.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use protocol::Nonce;
use protocol::device_api::DeviceTask;
use protocol::eventlog::{BankDigest, EventLog, EventType, Measurement};
use protocol::pva_api::{AppraiseRequest, Message};
use protocol::tpm::HashAlg;
use serde_bytes::ByteBuf;

use super::device::{
    Act, Hostile, Target, attack_one, attack_target, attest_once, campaign, refuse_install, runtime,
};
use super::observe::{self, ro_layer};
use super::{
    Attacker, Ctx, Expect, Layer, NONCE_TTL_SECS, Observed, Scenario, Stage, image_variant,
};

pub(super) fn scenarios() -> Vec<Scenario> {
    use Attacker::Device;
    let pva = |check| Expect::at(Stage::Pva, check);
    vec![
        Scenario::new(
            "tampered-component",
            1,
            Device,
            "runs a tre-agent.bin changed after the reference values were made; the TPM measures it and the device sends its genuine evidence",
            pva("event-not-in-reference-values"),
            tampered_component,
        ),
        Scenario::new(
            "unknown-event-digest",
            2,
            Device,
            "extends PCR 9 with a digest no reference value lists and logs the event truthfully",
            pva("event-not-in-reference-values"),
            unknown_event,
        ),
        Scenario::new(
            "events-reordered",
            2,
            Device,
            "swaps the bootloader event and PCR 0's separator in the event log sent with its genuine quote",
            pva("pcr-digest-mismatch"),
            reordered,
        ),
        Scenario::new(
            "event-log-truncated",
            2,
            Device,
            "drops the last event from the event log sent with its genuine quote",
            pva("pcr-digest-mismatch"),
            truncated,
        ),
        Scenario::new(
            "event-retyped",
            2,
            Device,
            "changes the OS event's type from EV_IPL to EV_POST_CODE (the type is not covered by the digest, so the PCRs still match)",
            pva("event-not-in-reference-values"),
            retyped,
        ),
        Scenario::new(
            "log-not-matching-quote",
            3,
            Device,
            "sends the event log of another image with its genuine quote",
            pva("pcr-digest-mismatch"),
            foreign_log,
        ),
        Scenario::new(
            "replayed-evidence",
            4,
            Device,
            "answers a second campaign's challenge with the evidence it sent in the first (its nonce already used); the RO discards what the PVA refuses and challenges again",
            pva("nonce-reused"),
            replayed,
        )
        .slow(),
        Scenario::new(
            "expired-nonce",
            4,
            Device,
            "quotes the nonce at once but presents the evidence only after the nonce expired; the RO discards what the PVA refuses and challenges again",
            pva("nonce-expired"),
            expired,
        )
        .slow(),
        Scenario::new(
            "nonce-of-another-device",
            4,
            Device,
            "quotes the nonce the PVA issued to another device (an accomplice in the same campaign) and presents it as its own",
            pva("nonce-for-another-device"),
            foreign_nonce,
        ),
    ]
}

fn tampered_component(ctx: &Ctx) -> Result<Observed> {
    let image = image_variant(ctx, "image-tampered-agent", |dir| {
        super::forge::flip_byte(&dir.join("tre-agent.bin"), 100)
    })?;
    attack_one(ctx, &image, super::device::genuine)?.observed()
}

fn unknown_event(ctx: &Ctx) -> Result<Observed> {
    with_log(ctx, |d, banks, mut log| {
        let digests: Vec<(HashAlg, Vec<u8>)> =
            banks.iter().map(|b| (*b, b.digest(b"rootkit"))).collect();
        d.agent.tpm().pcr_extend(9, &digests)?;
        log.push(Measurement {
            pcr: 9,
            event_type: EventType::EV_IPL,
            data: b"rootkit 1".to_vec(),
            digests: digests.into_iter().map(|(alg, value)| BankDigest { alg, value }).collect(),
        });
        Ok(log)
    })
}

fn reordered(ctx: &Ctx) -> Result<Observed> {
    with_log(ctx, |_, _, mut log| {
        let separator = log
            .iter()
            .position(|m| m.pcr == 0 && m.event_type == EventType::EV_SEPARATOR)
            .context("no separator in PCR 0")?;
        log.swap(0, separator);
        Ok(log)
    })
}

fn truncated(ctx: &Ctx) -> Result<Observed> {
    with_log(ctx, |_, _, mut log| {
        log.pop();
        Ok(log)
    })
}

fn retyped(ctx: &Ctx) -> Result<Observed> {
    with_log(ctx, |_, _, mut log| {
        let os = log
            .iter_mut()
            .find(|m| m.pcr == 4 && m.event_type == EventType::EV_IPL)
            .context("no OS event in PCR 4")?;
        os.event_type = EventType::EV_POST_CODE;
        Ok(log)
    })
}

fn foreign_log(ctx: &Ctx) -> Result<Observed> {
    let other = image_variant(ctx, "image-other-agent", |dir| {
        Ok(std::fs::write(dir.join("tre-agent.bin"), b"another agent")?)
    })?;
    with_log(ctx, move |_, banks, _| Ok(protocol::image::measure(&other, banks)?))
}

/// A genuine device whose evidence carries the event log `edit` makes of its own (the
/// measurements of the boot, without EV_NO_ACTION records); `edit` may also use the TPM.
fn with_log(
    ctx: &Ctx,
    mut edit: impl FnMut(&mut Hostile, &[HashAlg], Vec<Measurement>) -> Result<Vec<Measurement>>,
) -> Result<Observed> {
    attack_one(ctx, &ctx.image, |d: &mut Hostile, task| match task {
        DeviceTask::Attest { nonce, pcr_selection } => {
            let (banks, log) = measurements_of(d.agent.attester().event_log())?;
            let log = edit(d, &banks, log)?;
            let mut evidence = d.evidence(&nonce, &pcr_selection)?;
            evidence.event_log =
                ByteBuf::from(EventLog::from_measurements(&banks, &log)?.to_bytes());
            Ok(Act::Post("evidence", evidence.to_cbor()?))
        }
        task => Ok(Act::Agent(task)),
    })?
    .observed()
}

/// The banks and measurements of a crypto-agile event log, to rebuild it changed.
fn measurements_of(log: &[u8]) -> Result<(Vec<HashAlg>, Vec<Measurement>)> {
    let log = EventLog::parse(log)?;
    Ok((log.banks(), log.measurements()))
}

fn replayed(ctx: &Ctx) -> Result<Observed> {
    let mut target = Target::new(ctx.manufacture()?);
    let used = attest_once(ctx, &target, &ctx.image)?.to_cbor()?;
    // A reboot before the second campaign: the device attests genuinely again once the RO
    // challenges it afresh, which takes PCRs that hold one boot.
    target.power_off();
    target.power_on(ctx)?;
    stale_evidence(ctx, target, |_, _, _| Ok(used.clone()))
}

fn expired(ctx: &Ctx) -> Result<Observed> {
    let target = Target::new(ctx.manufacture()?);
    stale_evidence(ctx, target, |d, nonce, pcr_selection| {
        let evidence = d.evidence(nonce, pcr_selection)?;
        std::thread::sleep(Duration::from_secs(NONCE_TTL_SECS + 2));
        Ok(evidence.to_cbor()?)
    })
}

/// The device answers its first challenge with the evidence `stale` makes for it. The RO
/// relays it to the PVA, which refuses a nonce that is used up or expired; the RO does not
/// end the change on such a refusal (a crashed or slow attempt of its own may have used the
/// nonce up) but discards the evidence and challenges the device again with a fresh nonce. So the PVA's answer to exactly that evidence (the
/// PVA takes anonymous clients: anyone may ask it) names the check, and the RO must have
/// moved on to a fresh nonce without an EAR. The device then attests genuinely and declines
/// the install: the change ends rolled back with the card on its MNO-A profile (an end
/// elsewhere makes the scenario inconclusive).
fn stale_evidence(
    ctx: &Ctx,
    target: Target,
    mut stale: impl FnMut(&mut Hostile, &Nonce, &str) -> Result<Vec<u8>>,
) -> Result<Observed> {
    let mut presented: Option<(Nonce, Vec<u8>)> = None;
    let mut fresh = None;
    let attacked =
        attack_target(ctx, target, &ctx.image, |d: &mut Hostile, task| match (task, &presented) {
            (DeviceTask::Attest { nonce, pcr_selection }, None) => {
                let body = stale(d, &nonce, &pcr_selection)?;
                presented = Some((nonce, body.clone()));
                Ok(Act::Post("evidence", body))
            }
            (DeviceTask::Attest { nonce, pcr_selection }, Some(_)) => {
                fresh.get_or_insert(nonce);
                Ok(Act::Agent(DeviceTask::Attest { nonce, pcr_selection }))
            }
            (DeviceTask::Install { .. }, _) => refuse_install(d),
            (task, _) => Ok(Act::Agent(task)),
        })?;
    let (nonce, body) = presented.context("the device was never asked for evidence")?;
    // The RO ended the change on the PVA's refusal of the nonce: its status names the check.
    if attacked.ro.stage == Stage::Pva && attacked.ro.checks.iter().any(|c| c.starts_with("nonce-"))
    {
        return attacked.observed();
    }
    anyhow::ensure!(
        attacked.ro.checks == ["install-failed"],
        "the change did not end at the declined install: {}",
        attacked.ro.detail
    );
    let rt = runtime()?;
    let http = ctx.lab.pki.anonymous_client()?;
    let url = format!("{}{}", ctx.lab.urls.pva, protocol::pva_api::path::APPRAISE);
    let request = AppraiseRequest { evidence: ByteBuf::from(body) }.to_cbor()?;
    let answer = rt.block_on(observe::post(&http, &url, "application/cbor", request))?;
    let mut pva = observe::answer_layer(Stage::Pva, &answer);
    if fresh.is_none_or(|f| f == nonce) {
        let ro = Layer::accepted(
            Stage::RoDeviceApi,
            format!(
                "the RO did not challenge afresh after the stale evidence: {}",
                attacked.ro.detail
            ),
        );
        return Ok(Observed::new(ro).with(pva));
    }
    pva.detail.push_str(" — the RO discarded the evidence and challenged again with a fresh nonce");
    Ok(match observe::card_layer(&attacked.target.card, &attacked.target.imsi)? {
        Some(accepted) => Observed::new(accepted).with(pva),
        None => Observed::new(pva),
    })
}

fn foreign_nonce(ctx: &Ctx) -> Result<Observed> {
    let accomplice = Target::new(ctx.manufacture()?);
    let attacker = Target::new(ctx.manufacture()?);
    let rt = runtime()?;
    let id = rt.block_on(campaign(
        ctx,
        "mno-a",
        "mno-b",
        &[(&accomplice.device_id, &accomplice.iccid), (&attacker.device_id, &attacker.iccid)],
    ))?;
    let (nonce_tx, nonce_rx) = mpsc::channel();
    let (posted_tx, posted_rx) = mpsc::channel::<()>();
    let wait = Duration::from_secs(30);
    std::thread::scope(|scope| -> Result<()> {
        // The accomplice hands its nonce over and holds its own evidence back until the
        // attacker has presented its forgery, so that the nonce is still unused then.
        let accomplice = &accomplice;
        let helper = scope.spawn(move || -> Result<()> {
            let rt = runtime()?;
            let mut device = Hostile::boot(ctx, accomplice, &ctx.image)?;
            rt.block_on(device.run(|_: &mut Hostile, task| match task {
                DeviceTask::Attest { nonce, pcr_selection } => {
                    nonce_tx.send(nonce)?;
                    let _ = posted_rx.recv_timeout(wait);
                    Ok(Act::Agent(DeviceTask::Attest { nonce, pcr_selection }))
                }
                task => Ok(Act::Agent(task)),
            }))?;
            Ok(())
        });
        let mut device = Hostile::boot(ctx, &attacker, &ctx.image)?;
        let mut posted = false;
        let run = rt.block_on(device.run(|d: &mut Hostile, task| {
            if posted {
                let _ = posted_tx.send(());
            }
            match task {
                DeviceTask::Attest { pcr_selection, .. } => {
                    let theirs =
                        nonce_rx.recv_timeout(wait).context("the accomplice's nonce never came")?;
                    let evidence = d.evidence(&theirs, &pcr_selection)?;
                    posted = true;
                    Ok(Act::Post("evidence", evidence.to_cbor()?))
                }
                task => Ok(Act::Agent(task)),
            }
        }));
        let _ = posted_tx.send(());
        drop(device);
        let helped =
            helper.join().map_err(|_| anyhow::anyhow!("the accomplice's thread panicked"))?;
        run?;
        helped
    })?;
    let row = rt.block_on(observe::ro_device(&ctx.lab, &id, &attacker.device_id))?;
    let observed = Observed::new(ro_layer(&row)?);
    match observe::card_layer(&attacker.card, &attacker.imsi)? {
        Some(accepted) => Ok(Observed::new(accepted).with(observed.decided)),
        None => Ok(observed),
    }
}
