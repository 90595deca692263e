//! A subscription change on the card (3GPP TR 33.812 steps 11–12) as the card's half of a
//! distributed transaction with a single commit point on the card:
//!
//! 1. [`Card::install_on_trial`], only while the TRE is active: the USIM comes up with the
//!    new profile and the TRE is inactive, while the state keeps a *fallback* — the old
//!    profile, its SQN array (TS 33.102 Annex C) and its per-subscription EFs — and the
//!    change record ([`Change`]) in phase [`Phase::Trial`], with the time at which the device
//!    agent's timer falls back on its own.
//! 2. Either [`Card::commit_change`]: the fallback is dropped, the phase is
//!    [`Phase::Committed`], and from then on nothing brings the old profile back (the commit
//!    point); or [`Card::fall_back`]: the old profile, SQN array and EFs are restored exactly
//!    and the phase is [`Phase::FellBack`].
//!
//! Each step is one atomic, durable write of the whole state, so a crash leaves either phase
//! whole, and each is idempotent, so the agent and the RO can repeat a step whose answer they
//! lost. The exclusivity of TR 33.812 §5.4.4.3 (TRE xor USIM) holds in every phase: during the
//! trial the USIM is active and the TRE cannot be activated.
//!
//! The fallback exists only in the trial phase ([`Change`]'s phase is private and carries
//! it), so "committed with a fallback" and "on trial without one" cannot be represented.

use std::collections::BTreeMap;
use std::fmt;

use protocol::{Imsi, SubscriptionProfile};
use serde::{Deserialize, Serialize};

use crate::card::{self, Card};
use crate::error::UiccError;
use crate::fs;
use crate::state::{Active, HexBytes, SqnArray, State};
use crate::store::{FaultPlan, WriteFailure};

/// Which change an install belongs to, as the RO's campaign names it, and when the device
/// agent falls back if no commit has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRef {
    pub campaign: String,
    pub sequence: u64,
    /// Unix time in seconds.
    pub fallback_at: u64,
}

/// Where a change stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The new profile runs; the old one is kept to fall back to.
    Trial,
    /// The commit point has passed: the old profile is gone.
    Committed,
    /// The old profile was restored.
    FellBack { reason: String },
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Trial => f.write_str("on trial"),
            Self::Committed => f.write_str("committed"),
            Self::FellBack { reason } => write!(f, "fell back ({reason})"),
        }
    }
}

/// What [`Card::fall_back`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FallBack {
    /// A change was on trial: the old profile, its SQN array and EFs are back, USIM active.
    RestoredOldProfile,
    /// The TRE was active without a change on trial (the TRE gave up before installing):
    /// the USIM is active again with the profile it had.
    UsimReactivated,
    /// The last change had already fallen back; nothing changed.
    AlreadyFellBack,
    /// The USIM was active and no change was recorded; nothing changed.
    AlreadyOnUsim,
}

/// The record of the last subscription change, kept after its commit or fall-back until the
/// next install.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Change {
    pub campaign: String,
    pub sequence: u64,
    pub old_imsi: Imsi,
    pub new_imsi: Imsi,
    /// Unix time in seconds after which the device agent falls back on its own.
    pub fallback_at: u64,
    phase: Stage,
}

/// The phase as stored: the fallback lives in the trial phase and nowhere else.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Stage {
    Trial { fallback: Box<Fallback> },
    Committed,
    FellBack { reason: String },
}

/// The old subscription, kept during a trial so that a fall-back restores it exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Fallback {
    pub profile: SubscriptionProfile,
    pub sqn: SqnArray,
    /// The per-subscription EFs ([`fs::is_per_subscription`]) as they were.
    pub files: BTreeMap<String, HexBytes>,
}

impl Change {
    pub fn phase(&self) -> Phase {
        match &self.phase {
            Stage::Trial { .. } => Phase::Trial,
            Stage::Committed => Phase::Committed,
            Stage::FellBack { reason } => Phase::FellBack { reason: reason.clone() },
        }
    }

    pub fn on_trial(&self) -> bool {
        matches!(self.phase, Stage::Trial { .. })
    }

    /// Whether this is the change `(campaign, sequence)`.
    pub fn is(&self, campaign: &str, sequence: u64) -> bool {
        self.campaign == campaign && self.sequence == sequence
    }

    #[cfg(test)]
    pub(crate) fn fallback(&self) -> Option<&Fallback> {
        match &self.phase {
            Stage::Trial { fallback } => Some(fallback),
            _ => None,
        }
    }

    /// The checks of a loaded state: what each phase implies about the rest of it.
    pub(crate) fn validate(&self, state: &State) -> Result<(), String> {
        match &self.phase {
            Stage::Trial { fallback } => {
                if state.active != Active::Usim {
                    return Err("a change on trial needs the USIM active".into());
                }
                if self.new_imsi != state.profile.imsi || self.old_imsi != fallback.profile.imsi {
                    return Err("change IMSIs do not match the profiles".into());
                }
                if !fallback.sqn.is_valid() {
                    return Err("fallback sqn must hold 32 values below 2^43".into());
                }
                if fallback.profile.ota.counter > protocol::ota::COUNTER_MAX {
                    return Err("fallback OTA counter exceeds 5 bytes".into());
                }
                // The activation the change was installed under (absent only for a trial
                // begun under state version 2): for this campaign, by the old profile.
                if let Some(activation) = &state.activation {
                    if activation.campaign() != self.campaign {
                        return Err("the change on trial is not the activated campaign's".into());
                    }
                    activation.validate(&fallback.profile)?;
                }
                let expected = fs::EFS
                    .iter()
                    .filter(|e| e.source == fs::Source::Stored && fs::is_per_subscription(e));
                if fallback.files.len() != expected.clone().count() {
                    return Err("fallback files must be the per-subscription EFs".into());
                }
                for ef in expected {
                    match fallback.files.get(ef.name) {
                        Some(content) if content.0.len() == ef.size => {}
                        Some(_) => {
                            return Err(format!("fallback {} must be {} bytes", ef.name, ef.size));
                        }
                        None => return Err(format!("fallback file {} is missing", ef.name)),
                    }
                }
            }
            Stage::Committed if self.new_imsi != state.profile.imsi => {
                return Err("a committed change must leave the new IMSI".into());
            }
            Stage::FellBack { .. } if self.old_imsi != state.profile.imsi => {
                return Err("a change that fell back must leave the old IMSI".into());
            }
            Stage::Committed | Stage::FellBack { .. } => {}
        }
        Ok(())
    }
}

impl State {
    /// The state on trial with `profile`: the new profile as [`State::with_new_profile`]
    /// makes it, USIM active, and the old subscription kept as the fallback.
    pub(crate) fn on_trial(&self, profile: SubscriptionProfile, change: ChangeRef) -> State {
        let files = self
            .files
            .iter()
            .filter(|(name, _)| fs::ef_by_name(name).is_some_and(fs::is_per_subscription))
            .map(|(name, content)| (name.clone(), content.clone()))
            .collect();
        let fallback = Fallback { profile: self.profile.clone(), sqn: self.sqn.clone(), files };
        let mut next = self.with_new_profile(profile);
        next.change = Some(Change {
            campaign: change.campaign,
            sequence: change.sequence,
            old_imsi: self.profile.imsi.clone(),
            new_imsi: next.profile.imsi.clone(),
            fallback_at: change.fallback_at,
            phase: Stage::Trial { fallback: Box::new(fallback) },
        });
        next
    }

    /// The state with the change on trial committed: the fallback is gone, and with it the
    /// activation the change ran under.
    fn committed(&self) -> State {
        let mut next = self.clone();
        if let Some(change) = next.change.as_mut() {
            change.phase = Stage::Committed;
        }
        next.activation = None;
        next
    }

    /// The state with the change on trial fallen back, if one is on trial: the old profile,
    /// SQN array and per-subscription EFs, USIM active.
    fn fallen_back(&self, reason: &str) -> Option<State> {
        let mut next = self.clone();
        let change = next.change.as_mut()?;
        let before =
            std::mem::replace(&mut change.phase, Stage::FellBack { reason: reason.into() });
        let Stage::Trial { fallback } = before else { return None };
        let Fallback { profile, sqn, files } = *fallback;
        next.profile = profile;
        next.sqn = sqn;
        next.files.extend(files);
        next.active = Active::Usim;
        next.activation = None;
        Some(next)
    }
}

impl Card {
    /// Installs `profile` on trial for `change` (TR 33.812 step 11), only while the TRE is
    /// active. On success the card resets: the USIM comes up with the new IMSI, the TRE is
    /// inactive, and the old subscription is kept for [`Card::fall_back`].
    ///
    /// The same change again while it is on trial, with the same subscription, is `Ok` and
    /// changes nothing (a re-delivery). Checked in this order: a change on trial
    /// (`ChangeMismatch` for the same change with another subscription, `ChangeOnTrial` for
    /// another change), a change already settled (`ChangeSettled`), `TreNotActive`, then
    /// the TRE's activation ([`Card::tre_activation`]): none (`NotActivated`), or for
    /// another campaign (`ActivationMismatch`).
    ///
    /// A write that fails before the rename leaves the old profile and aborts the TRE: the
    /// USIM is active again — unless even that cannot be saved (a full disk): then the TRE
    /// stays active, in memory as on disk, so that what the card reports is what a restart
    /// shows, and the caller tries again. After the rename the new state counts: the card is
    /// on trial. `InstallFailed { committed }` says which.
    pub fn install_on_trial(
        &mut self,
        profile: SubscriptionProfile,
        change: ChangeRef,
    ) -> Result<(), UiccError> {
        self.install_with(profile, change, &FaultPlan::default())
    }

    pub(crate) fn install_with(
        &mut self,
        profile: SubscriptionProfile,
        change: ChangeRef,
        faults: &FaultPlan,
    ) -> Result<(), UiccError> {
        if let Some(last) = &self.state.change {
            let (campaign, sequence) = (last.campaign.clone(), last.sequence);
            match (last.is(&change.campaign, change.sequence), last.on_trial()) {
                (true, true) if same_subscription(&self.state.profile, &profile) => return Ok(()),
                (true, true) => return Err(UiccError::ChangeMismatch { campaign, sequence }),
                (false, true) => return Err(UiccError::ChangeOnTrial { campaign, sequence }),
                (true, false) => {
                    let phase = last.phase();
                    return Err(UiccError::ChangeSettled { campaign, sequence, phase });
                }
                (false, false) => {}
            }
        }
        if !self.tre_active() {
            return Err(UiccError::TreNotActive);
        }
        match self.tre_activation() {
            None => return Err(UiccError::NotActivated),
            Some(a) if a.campaign() != change.campaign => {
                return Err(UiccError::ActivationMismatch {
                    activated: a.campaign().to_owned(),
                    campaign: change.campaign,
                });
            }
            Some(_) => {}
        }
        let next = self.state.on_trial(profile, change);
        match self.save(next, faults, card::INSTALL) {
            Ok(()) => {
                self.reset();
                let imsi = &self.state.profile.imsi;
                tracing::info!(%imsi, "profile installed on trial, USIM active");
                Ok(())
            }
            Err(WriteFailure { step, source }) => {
                let committed = step.committed();
                if !committed {
                    // The TRE's abort path: back to the old profile, USIM active.
                    if let Err(e) = self.fall_back("install failed") {
                        tracing::error!(
                            error = %e,
                            "could not save the USIM reactivation; the TRE stays active"
                        );
                    }
                }
                self.reset();
                tracing::warn!(%step, committed, "profile install failed");
                Err(UiccError::InstallFailed { step, committed, source })
            }
        }
    }

    /// Commits the change `(campaign, sequence)`: the commit point. On trial with exactly
    /// that change, the fallback is dropped, durably, and the answer is `Committed`; already
    /// committed: `Committed` again; fallen back: `FellBack` unchanged (the caller reports
    /// that). Any other change, or none: `NoSuchChange`. A failed write leaves the trial
    /// unless it failed after the rename; asking again gives the card's answer.
    pub fn commit_change(&mut self, campaign: &str, sequence: u64) -> Result<Phase, UiccError> {
        self.commit_with(campaign, sequence, &FaultPlan::default())
    }

    pub(crate) fn commit_with(
        &mut self,
        campaign: &str,
        sequence: u64,
        faults: &FaultPlan,
    ) -> Result<Phase, UiccError> {
        let Some(change) = self.state.change.as_ref().filter(|c| c.is(campaign, sequence)) else {
            return Err(UiccError::NoSuchChange { campaign: campaign.to_owned(), sequence });
        };
        if !change.on_trial() {
            return Ok(change.phase());
        }
        let next = self.state.committed();
        self.save(next, faults, card::COMMIT).map_err(card::persist_error)?;
        tracing::info!(campaign, sequence, "subscription change committed");
        Ok(Phase::Committed)
    }

    /// Falls back (TR 33.812 step 12, failure; or the device agent's timer): on trial, the
    /// old profile, SQN array and per-subscription EFs come back, the USIM active, the phase
    /// `FellBack { reason }`, and the card resets; with the TRE active and nothing on trial,
    /// the USIM is active again. A committed change cannot be undone: `AlreadyCommitted`.
    /// Repeating it is harmless. A write that fails before the rename changes nothing.
    pub fn fall_back(&mut self, reason: &str) -> Result<FallBack, UiccError> {
        self.fall_back_with(reason, &FaultPlan::default())
    }

    pub(crate) fn fall_back_with(
        &mut self,
        reason: &str,
        faults: &FaultPlan,
    ) -> Result<FallBack, UiccError> {
        if let Some(next) = self.state.fallen_back(reason) {
            let saved = self.save(next, faults, card::FALL_BACK);
            if saved.as_ref().err().is_none_or(|f| f.step.committed()) {
                self.reset();
            }
            saved.map_err(card::persist_error)?;
            tracing::warn!(reason, imsi = %self.state.profile.imsi, "fell back to the old profile");
            return Ok(FallBack::RestoredOldProfile);
        }
        if self.tre_active() {
            let mut next = self.state.clone();
            next.active = Active::Usim;
            next.activation = None;
            self.save(next, faults, card::FALL_BACK).map_err(card::persist_error)?;
            tracing::info!(reason, "TRE aborted, USIM active");
            return Ok(FallBack::UsimReactivated);
        }
        match self.state.change.as_ref().map(|c| (c, c.phase())) {
            Some((c, Phase::Committed)) => Err(UiccError::AlreadyCommitted {
                campaign: c.campaign.clone(),
                sequence: c.sequence,
            }),
            Some((_, Phase::FellBack { .. })) => Ok(FallBack::AlreadyFellBack),
            // On trial was handled above.
            Some((_, Phase::Trial)) | None => Ok(FallBack::AlreadyOnUsim),
        }
    }

    /// The last subscription change, kept after its commit or fall-back until the next
    /// install.
    pub fn change(&self) -> Option<&Change> {
        self.state.change.as_ref()
    }

    /// Whether a change is on trial and its fallback time has come: the device agent's timer
    /// then calls [`Card::fall_back`]. `fallback_at` is in the state file, so the timer
    /// survives restarts.
    pub fn fallback_due(&self, now_unix: u64) -> bool {
        self.change().is_some_and(|c| c.on_trial() && now_unix >= c.fallback_at)
    }
}

/// The same subscription: everything but the OTA counter, which moves with each command.
pub(crate) fn same_subscription(a: &SubscriptionProfile, b: &SubscriptionProfile) -> bool {
    (&a.iccid, &a.imsi, &a.k, &a.opc, a.amf, &a.ota.kic, &a.ota.kid)
        == (&b.iccid, &b.imsi, &b.k, &b.opc, b.amf, &b.ota.kic, &b.ota.kid)
}

#[cfg(test)]
#[path = "change_tests.rs"]
mod tests;
