//! What the agent asks of its UICC (TR 33.812 §5.4.4.3): the operator's OTA command that
//! activates the TRE (with the card's MACed response, the proof MNO-A checks, and the
//! activation it leaves: which campaign and new operator MNO-A named), the install of a new
//! profile *on trial* with the old one kept as fallback, the commit that makes it permanent,
//! the fall-back that restores the old one, and the USIM's AKA. [`uicc::Card`] is the implementation; the trait lets end-to-end tests
//! wrap a real card to make one operation fail and watch the system's reaction.

use protocol::milenage::{Autn, Rand};
use protocol::{Iccid, Imsi, SubscriptionProfile};
use uicc::auth::Outcome as AkaOutcome;
use uicc::{Card, Change, ChangeRef, FallBack, Phase, TreActivation, UiccError};

/// The card operations the agent uses.
pub trait Uicc {
    /// The operator's OTA command (activate TRE): MAC and counter checked by the card, which
    /// answers with its MACed response packet (`protocol::ota::response`).
    fn ota(&mut self, apdu: &[u8]) -> Result<Vec<u8>, UiccError>;
    /// The TRE activation in force: the campaign and new operator MNO-A's command named,
    /// and the card's response to it.
    fn tre_activation(&self) -> Option<TreActivation>;
    /// The new profile on trial: the USIM runs it, the old profile is kept as fallback.
    fn install_on_trial(
        &mut self,
        profile: SubscriptionProfile,
        change: ChangeRef,
    ) -> Result<(), UiccError>;
    /// The commit point: the new profile becomes permanent (or the card says it fell back).
    fn commit_change(&mut self, campaign: &str, sequence: u64) -> Result<Phase, UiccError>;
    /// Back to the old profile with the USIM active; refused once committed.
    fn fall_back(&mut self, reason: &str) -> Result<FallBack, UiccError>;
    /// The change under way or the last one.
    fn change(&self) -> Option<Change>;
    /// Whether the fallback timer of a change on trial has expired at `now` (Unix seconds).
    fn fallback_due(&self, now: u64) -> bool;
    /// SELECT ADF_USIM and AUTHENTICATE (3G context).
    fn run_aka(&mut self, rand: &Rand, autn: &Autn) -> AkaOutcome;
    fn usim_active(&self) -> bool;
    fn tre_active(&self) -> bool;
    fn iccid(&self) -> Iccid;
    fn imsi(&self) -> Imsi;
}

impl Uicc for Card {
    fn ota(&mut self, apdu: &[u8]) -> Result<Vec<u8>, UiccError> {
        Card::ota(self, apdu)
    }
    fn tre_activation(&self) -> Option<TreActivation> {
        Card::tre_activation(self).cloned()
    }
    fn install_on_trial(
        &mut self,
        profile: SubscriptionProfile,
        change: ChangeRef,
    ) -> Result<(), UiccError> {
        Card::install_on_trial(self, profile, change)
    }
    fn commit_change(&mut self, campaign: &str, sequence: u64) -> Result<Phase, UiccError> {
        Card::commit_change(self, campaign, sequence)
    }
    fn fall_back(&mut self, reason: &str) -> Result<FallBack, UiccError> {
        Card::fall_back(self, reason)
    }
    fn change(&self) -> Option<Change> {
        Card::change(self).cloned()
    }
    fn fallback_due(&self, now: u64) -> bool {
        Card::fallback_due(self, now)
    }
    fn run_aka(&mut self, rand: &Rand, autn: &Autn) -> AkaOutcome {
        Card::run_aka(self, rand, autn)
    }
    fn usim_active(&self) -> bool {
        Card::usim_active(self)
    }
    fn tre_active(&self) -> bool {
        Card::tre_active(self)
    }
    fn iccid(&self) -> Iccid {
        Card::iccid(self).clone()
    }
    fn imsi(&self) -> Imsi {
        Card::imsi(self).clone()
    }
}
