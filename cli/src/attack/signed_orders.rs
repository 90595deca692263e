//! Attacks on the RO's signed orders (`protocol::order`; `docs/flow.md`, "The change as a
//! transaction"). The commit order makes the card drop its fallback, the abort order makes
//! it fall back: each ends the change on the card. The RO signs both (COSE_Sign1, ES256,
//! its certificate under the CI) over the device, the campaign and, for a commit, the
//! sequence of the change on trial, and the TRE obeys an order only when it verifies for
//! its own device, the campaign and the change the task names, signed by the role `ro`
//! (`tre::agent`'s order check): otherwise it answers nothing and the card stays as it was.
//!
//! The attacker is a rogue peer that answers the device's poll in the RO's place (the agent
//! checks the RO's TLS certificate against the CI root and the RO's host name, not its
//! role) with another role's certificate and key — MNO-B's — and with the RO's genuine
//! orders for other devices and other campaigns, which anyone may fetch from the anonymous
//! device API. The plan changes the task before the genuine agent sees it, while the new
//! profile runs on trial: an order signed with another role's key, the RO's order for
//! another device or another campaign, bytes that are no order at all, the RO's commit
//! order in a task that names another change. Obeyed, a forged abort throws away a change
//! the new operator is making live, and a forged commit drops the old profile before the RO
//! decided anything. After each refusal the genuine flow must go on to its normal end: the
//! device switches.

use std::time::SystemTime;

use anyhow::{Context, Result};
use protocol::DeviceId;
use protocol::bundle::CoseSigner;
use protocol::device_api::DeviceTask;
use protocol::order::{Order, OrderKind, sign_order};
use provisioning::pki::Role;
use serde_bytes::ByteBuf;

use super::answers::{ro_state, still_switched};
use super::device::{Act, Hostile, Target, attack_target, campaign, runtime};
use super::observe::{self, order_check};
use super::orders::refusals;
use super::{Attacker, Ctx, Expect, Layer, Observed, Scenario, Stage};

/// The matrix's item: the commit point of issue 11, whose orders these are.
const ITEM: u8 = 18;

/// The signature check of an order signed with another role's key.
const WRONG_SIGNER: &str = "order-signature(SignerRole(WrongRole))";

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "forged-abort-order",
            ITEM,
            Attacker::Peer,
            "in place of the AKA challenge, while the new profile runs on trial, hands the device an abort task for its campaign whose order is signed with MNO-B's key (another role's CI certificate), is the RO's genuine abort order for another device, is the RO's genuine abort order for this device in an earlier campaign (in a task naming the current campaign, or that earlier one), or is garbage bytes",
            Expect::at(Stage::Tre, WRONG_SIGNER),
            forged_abort_order,
        ),
        Scenario::new(
            "forged-commit-order",
            ITEM,
            Attacker::Peer,
            "before the card commits the new profile on trial, hands the device a commit task whose order is signed with MNO-B's key, or is the RO's genuine commit order in a task that names another sequence",
            Expect::at(Stage::Tre, WRONG_SIGNER),
            forged_commit_order,
        ),
    ]
}

fn forged_abort_order(ctx: &Ctx) -> Result<Observed> {
    let mut target = Target::new(ctx.manufacture()?);
    let (other_device, other_campaign, earlier) = genuine_abort_orders(ctx, &target)?;
    // A reboot before the campaign under attack: PCRs that hold one boot, as attested.
    target.power_off();
    target.power_on(ctx)?;
    let mno_b = role_signer(ctx, Role::mno_b())?;
    let mut forger = Forger::new(ctx);
    let attacked = attack_target(ctx, target, &ctx.image, |d: &mut Hostile, task| {
        forger.settle(d)?;
        match task {
            // The new profile runs on trial; the RO asks the same challenge again later.
            task @ DeviceTask::Aka { .. } => forger.hand(d, task, |d, campaign, _| {
                let abort = |order: Vec<u8>| DeviceTask::Abort {
                    campaign: campaign.to_owned(),
                    reason: "forged".into(),
                    order: ByteBuf::from(order),
                };
                let signed = order_by(&mno_b, OrderKind::Abort, &d.id, campaign, None)?;
                // The same replayed order in a task naming its own (earlier) campaign: the
                // agent checks it against the change the card holds, not the task.
                let replayed = DeviceTask::Abort {
                    campaign: earlier.clone(),
                    reason: "replayed".into(),
                    order: ByteBuf::from(other_campaign.clone()),
                };
                Ok(vec![
                    ("signed with MNO-B's key", abort(signed)),
                    ("the RO's order for another device", abort(other_device.clone())),
                    ("the RO's order of an earlier campaign", abort(other_campaign.clone())),
                    ("the RO's order of an earlier campaign, in a task naming it", replayed),
                    ("garbage bytes", abort(b"garbage, not an order".to_vec())),
                ])
            }),
            task => Ok(Act::Agent(task)),
        }
    })?;
    still_switched(&attacked, forger.observed()?)
}

fn forged_commit_order(ctx: &Ctx) -> Result<Observed> {
    let target = Target::new(ctx.manufacture()?);
    let mno_b = role_signer(ctx, Role::mno_b())?;
    let mut forger = Forger::new(ctx);
    let attacked = attack_target(ctx, target, &ctx.image, |d: &mut Hostile, task| {
        forger.settle(d)?;
        match task {
            DeviceTask::Commit { campaign, sequence, order } => {
                let genuine = DeviceTask::Commit {
                    campaign: campaign.clone(),
                    sequence,
                    order: order.clone(),
                };
                forger.hand(d, genuine, |d, campaign, _| {
                    let signed =
                        order_by(&mno_b, OrderKind::Commit, &d.id, campaign, Some(sequence))?;
                    let commit = |sequence, order| DeviceTask::Commit {
                        campaign: campaign.to_owned(),
                        sequence,
                        order,
                    };
                    Ok(vec![
                        ("signed with MNO-B's key", commit(sequence, ByteBuf::from(signed))),
                        ("the RO's order for another sequence", commit(sequence + 1, order)),
                    ])
                })
            }
            task => Ok(Act::Agent(task)),
        }
    })?;
    still_switched(&attacked, forger.observed()?)
}

/// Hands the genuine agent forged versions of a task, one per poll in its place (the RO
/// hands the same task again while the device does not answer), then the genuine task;
/// records after each what the TRE said and whether the card or the RO moved.
struct Forger<'c> {
    ctx: &'c Ctx,
    queue: Option<Vec<(&'static str, DeviceTask)>>,
    handed: Option<Handed>,
    layers: Vec<Layer>,
}

/// A forgery the agent was given, and where things stood before.
struct Handed {
    what: &'static str,
    errors: usize,
    campaign: String,
    card: String,
    ro: String,
}

impl<'c> Forger<'c> {
    fn new(ctx: &'c Ctx) -> Self {
        Self { ctx, queue: None, handed: None, layers: Vec::new() }
    }

    /// The plan's act for `genuine`: the next forgery (`make` builds them the first time
    /// from the device, its campaign and the sequence of its change on trial), or
    /// `genuine` once every forgery was handed.
    fn hand(
        &mut self,
        d: &mut Hostile,
        genuine: DeviceTask,
        make: impl FnOnce(&Hostile, &str, u64) -> Result<Vec<(&'static str, DeviceTask)>>,
    ) -> Result<Act> {
        let (campaign, sequence) = d
            .agent
            .card()
            .change()
            .filter(|c| c.on_trial())
            .map(|c| (c.campaign.clone(), c.sequence))
            .context("the new profile is not on trial")?;
        if self.queue.is_none() {
            self.queue = Some(make(d, &campaign, sequence)?);
        }
        let next = self.queue.as_mut().and_then(|q| (!q.is_empty()).then(|| q.remove(0)));
        let Some((what, forged)) = next else { return Ok(Act::Agent(genuine)) };
        let ro = ro_state(self.ctx, &campaign, &d.id)?;
        let (errors, card) = (d.agent_errors.len(), card_state(d));
        self.handed = Some(Handed { what, errors, campaign, card, ro });
        Ok(Act::Agent(forged))
    }

    /// What became of the last forgery, once the device polls again: refused by the TRE
    /// (its error names the order check), with the card and the RO where they were.
    fn settle(&mut self, d: &Hostile) -> Result<()> {
        let Some(h) = self.handed.take() else { return Ok(()) };
        let (card, ro) = (card_state(d), ro_state(self.ctx, &h.campaign, &d.id)?);
        let layer = match d.agent_errors.get(h.errors) {
            Some(refused) if card == h.card && ro == h.ro => Layer::rejected(
                Stage::Tre,
                vec![order_check(refused)],
                format!("{}: {refused} — the card still {card}, the device still {ro}", h.what),
            ),
            Some(refused) => Layer::accepted(
                Stage::Tre,
                format!(
                    "{}: {refused}, but the card went from {} to {card} and the device from {} to {ro} at the RO",
                    h.what, h.card, h.ro
                ),
            ),
            None => Layer::accepted(
                Stage::Tre,
                format!("{}: the agent carried it out; the card {card}, the device {ro}", h.what),
            ),
        };
        self.layers.push(layer);
        Ok(())
    }

    /// The refusals, the first deciding; a forgery after which the device never polled
    /// again for the task (its run ended) was obeyed.
    fn observed(mut self) -> Result<Observed> {
        if let Some(h) = self.handed.take() {
            let ended = format!("{}: the device's change ended right after it", h.what);
            self.layers.push(Layer::accepted(Stage::Tre, ended));
        }
        refusals(self.layers)
    }
}

/// Where the card stands: the IMSI it runs, which of USIM and TRE is active, its change.
fn card_state(d: &Hostile) -> String {
    let card = d.agent.card();
    let change = card.change().map_or_else(
        || "none".to_owned(),
        |c| format!("{} of {} ({})", c.sequence, c.campaign, c.phase()),
    );
    format!(
        "runs IMSI {} (USIM active: {}, TRE active: {}; change {change})",
        card.imsi(),
        card.usim_active(),
        card.tre_active()
    )
}

/// The RO's genuine abort orders for another device and for `target` in another campaign:
/// an earlier campaign of `target` and a second device, each of which says at once that its
/// TRE did not activate; the RO orders each to abort, and each obeys.
fn genuine_abort_orders(ctx: &Ctx, target: &Target) -> Result<(Vec<u8>, Vec<u8>, String)> {
    let other = Target::new(ctx.manufacture()?);
    let rt = runtime()?;
    let devices = [(&target.device_id, &target.iccid), (&other.device_id, &other.iccid)];
    let earlier = rt.block_on(campaign(ctx, "mno-a", "mno-b", &devices))?;
    let other_device = abort_order_of(ctx, &other, &rt)?;
    let other_campaign = abort_order_of(ctx, target, &rt)?;
    // MNO-A takes the target into the next campaign once it holds this one's report.
    rt.block_on(reported(ctx, &earlier, &target.device_id))?;
    Ok((other_device, other_campaign, earlier))
}

/// Runs `target` through its campaign, claiming at its first task that the TRE did not
/// activate; returns the abort order the RO then hands it (which the agent obeys).
fn abort_order_of(ctx: &Ctx, target: &Target, rt: &tokio::runtime::Runtime) -> Result<Vec<u8>> {
    let mut device = Hostile::boot(ctx, target, &ctx.image)?;
    let mut order = None;
    rt.block_on(device.run(|d: &mut Hostile, task| match task {
        DeviceTask::ActivateTre { .. } => Ok(Act::Attach(d.attach_request(false)?)),
        DeviceTask::Abort { campaign, reason, order: genuine } => {
            order = Some(genuine.to_vec());
            Ok(Act::Agent(DeviceTask::Abort { campaign, reason, order: genuine }))
        }
        task => Ok(Act::Agent(task)),
    }))?;
    order.context("the device was never told to abort")
}

/// Waits (at most 10 s) until both operators acknowledged the device's report.
async fn reported(ctx: &Ctx, campaign: &str, device: &DeviceId) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !observe::ro_device(&ctx.lab, campaign, device).await?.reported {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the operators never acknowledged the report of {device} in campaign {campaign}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The signing identity of another role of the CI: its key and certificate from the lab's
/// PKI, as that role's host holds them.
fn role_signer(ctx: &Ctx, role: Role) -> Result<CoseSigner> {
    let path = ctx.lab.pki.dir().join(format!("{}.key", role.name()));
    let key = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(CoseSigner::from_pkcs8_pem(&key, ctx.lab.pki.role(&role)?.x5chain())?)
}

/// An order for `device`'s change in `campaign`, as the RO would issue it, signed by
/// `signer`.
fn order_by(
    signer: &CoseSigner,
    kind: OrderKind,
    device: &DeviceId,
    campaign: &str,
    sequence: Option<u64>,
) -> Result<Vec<u8>> {
    let order = Order {
        kind,
        device_id: device.clone(),
        campaign: campaign.to_owned(),
        sequence,
        reason: (kind == OrderKind::Abort).then(|| "forged".to_owned()),
        issued: protocol::ear::unix(SystemTime::now()),
    };
    Ok(sign_order(signer, &order)?)
}
