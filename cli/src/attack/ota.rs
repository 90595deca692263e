//! Attacks on the "activate TRE" command (issue 7, item 14; `docs/uicc.md`, ETSI TS 102 225
//! §5.1): only MNO-A, which shares the card's KID, can switch a card from its USIM to the
//! TRE, and each command works once. The attacker talks to the card directly (a network
//! attacker delivering OTA messages); the card must refuse and stay as it was.

use anyhow::{Context, Result};
use protocol::OtaKey;
use protocol::device_api::DeviceTask;

use super::device::{Act, Hostile, Target, attack_target, refuse_install};
use super::observe::variant_name;
use super::{Attacker, Ctx, Expect, Layer, Observed, Scenario, Stage};

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "activate-tre-wrong-mac",
            14,
            Attacker::Network,
            "sends the card an activate-TRE command for its ICCID with the next counter, MACed with a guessed KID",
            Expect::at(Stage::Uicc, "OtaError::BadMac"),
            wrong_mac,
        ),
        Scenario::new(
            "activate-tre-replayed",
            14,
            Attacker::Network,
            "replays MNO-A's genuine activate-TRE command after the change was rolled back and the USIM is active again",
            Expect::at(Stage::Uicc, "OtaError::Replay"),
            replayed,
        ),
    ]
}

fn wrong_mac(ctx: &Ctx) -> Result<Observed> {
    let target = Target::new(ctx.manufacture()?);
    let guess = OtaKey::random().map_err(|_| anyhow::anyhow!("no randomness"))?;
    let (iccid, counter) = {
        let card = super::observe::open_card(&target.card)?;
        (card.iccid().clone(), card.ota_counter())
    };
    let activation = protocol::ota::Activation::new("guessed", "mno-b")?;
    let command = protocol::ota::seal_activate_tre(&guess, &iccid, counter + 1, &activation)?;
    present(&target, &command)
}

fn replayed(ctx: &Ctx) -> Result<Observed> {
    let mut recorded = None;
    let attacked = attack_target(
        ctx,
        Target::new(ctx.manufacture()?),
        &ctx.image,
        |d: &mut Hostile, task| match task {
            DeviceTask::ActivateTre { ref command, .. } => {
                recorded = Some(command.to_vec());
                Ok(Act::Agent(task))
            }
            DeviceTask::Install { .. } => refuse_install(d),
            task => Ok(Act::Agent(task)),
        },
    )?;
    let command = recorded.context("MNO-A's command never came")?;
    present(&attacked.target, &command)
}

/// Hands `command` to the card; the card's answer decides, and its state must not change.
fn present(target: &Target, command: &[u8]) -> Result<Observed> {
    let before = std::fs::read(&target.card)?;
    let mut card = super::observe::open_card(&target.card)?;
    anyhow::ensure!(
        card.usim_active() && !card.tre_active(),
        "the card is not on its USIM before the attack"
    );
    let layer = match card.ota(command) {
        Ok(accepted) => Layer::accepted(Stage::Uicc, format!("the card ran {accepted:?}")),
        Err(e) => Layer::rejected(
            Stage::Uicc,
            vec![format!("OtaError::{}", variant_name(&e))],
            e.to_string(),
        ),
    };
    let unchanged = card.usim_active() && !card.tre_active();
    drop(card);
    if !unchanged || std::fs::read(&target.card)? != before {
        return Ok(
            Observed::new(Layer::accepted(Stage::Uicc, "the card's state changed")).with(layer)
        );
    }
    Ok(Observed::new(layer))
}
