//! The operator's OTA commands on the card ([`protocol::ota`], ETSI TS 102 225 §5.1–5.2) and
//! what the card keeps of an "activate TRE": the campaign and new operator MNO-A's MACed
//! command named, the counter it carried, and the card's MACed response that proves them
//! (TR 33.812 alternative 3d step 4).
//!
//! The activation is the TRE's authenticated word on which change it runs: an install on
//! trial must be for its campaign ([`crate::change`]), and the device agent accepts a
//! profile only from its operator. It lives exactly as long as that change can still
//! install or fall back: set by "activate TRE" (replacing any earlier one), kept through the
//! trial, gone when the change ends — committed, fallen back, the TRE given up without an
//! install, or "deactivate TRE" outside a trial. Each of these is the same atomic write as
//! the rest of the transition.

use protocol::SubscriptionProfile;
use protocol::ota::{self, Action, Activation, OtaCommand, Response, ResponseStatus};
use serde::{Deserialize, Serialize};

use crate::card::{self, Card};
use crate::error::UiccError;
use crate::state::{Active, HexBytes};
use crate::store::FaultPlan;

/// An authenticated TRE activation: what MNO-A's command said, and the card's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreActivation {
    /// The campaign and new operator, as the command named them.
    activation: Activation,
    /// The counter of the command.
    counter: u64,
    /// The card's MACed response ([`protocol::ota::response`]), to be handed to MNO-A.
    response: HexBytes,
}

impl TreActivation {
    /// The campaign the TRE is activated for.
    pub fn campaign(&self) -> &str {
        self.activation.campaign()
    }

    /// The campaign's new operator, as MNO-A named it: the only signer of a profile the TRE
    /// may install.
    pub fn operator(&self) -> &str {
        self.activation.operator()
    }

    /// The OTA counter of the command.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// The card's MACed response to the command.
    pub fn response(&self) -> &[u8] {
        &self.response.0
    }

    /// The response this activation must carry under `profile` (the profile the command was
    /// MACed for).
    fn expected(&self, profile: &SubscriptionProfile) -> Response {
        Response {
            command: OtaCommand::ActivateTre,
            counter: self.counter,
            status: ResponseStatus::PorOk,
            iccid: profile.iccid.clone(),
            imsi: profile.imsi.clone(),
            activation: Some(self.activation.clone()),
        }
    }

    /// The check of a loaded state: the activation belongs to `profile` — its counter is the
    /// profile's last, its response verifies with the profile's KID and names the profile.
    pub(crate) fn validate(&self, profile: &SubscriptionProfile) -> Result<(), String> {
        if self.counter != profile.ota.counter {
            return Err("the activation's counter is not the profile's last OTA counter".into());
        }
        ota::verify_response(self.response(), &profile.ota.kid, &self.expected(profile))
            .map_err(|e| format!("the activation's response does not fit its profile: {e}"))
    }
}

impl Card {
    /// Runs an operator OTA command (the APDU of [`protocol::ota`]): verifies it with the
    /// current profile's KID and counter, then activates or deactivates the TRE, and returns
    /// the card's MACed response. The new counter, mode and activation are saved together;
    /// if that fails before the rename nothing changes. While a change is on trial the TRE
    /// cannot be activated (`ChangeOnTrial`, nothing saved).
    pub fn ota(&mut self, apdu: &[u8]) -> Result<Vec<u8>, UiccError> {
        self.ota_with(apdu, &FaultPlan::default())
    }

    pub(crate) fn ota_with(
        &mut self,
        apdu: &[u8],
        faults: &FaultPlan,
    ) -> Result<Vec<u8>, UiccError> {
        let profile = &self.state.profile;
        let verified = ota::verify(apdu, &profile.ota.kid, &profile.iccid, profile.ota.counter)?;
        let on_trial = self.state.change.as_ref().filter(|c| c.on_trial());
        if let (Action::ActivateTre(_), Some(change)) = (&verified.action, on_trial) {
            // §5.4.4.3 during a trial: the USIM runs the new profile until the change is
            // committed or falls back; the TRE may not take over in between.
            let (campaign, sequence) = (change.campaign.clone(), change.sequence);
            return Err(UiccError::ChangeOnTrial { campaign, sequence });
        }
        let counter = verified.counter;
        let response = ota::seal_response(
            &profile.ota.kid,
            &Response {
                command: verified.action.command(),
                counter,
                status: ResponseStatus::PorOk,
                iccid: profile.iccid.clone(),
                imsi: profile.imsi.clone(),
                activation: verified.action.activation().cloned(),
            },
        )?;
        let mut next = self.state.clone();
        next.profile.ota.counter = counter;
        match &verified.action {
            Action::ActivateTre(activation) => {
                next.active = Active::Tre;
                next.activation = Some(TreActivation {
                    activation: activation.clone(),
                    counter,
                    response: HexBytes(response.clone()),
                });
            }
            Action::DeactivateTre => {
                next.active = Active::Usim;
                // A trial keeps the activation it was installed under.
                if on_trial.is_none() {
                    next.activation = None;
                }
            }
        }
        self.save(next, faults, card::OTA).map_err(card::persist_error)?;
        let command = verified.action.command();
        match verified.action.activation() {
            Some(a) => tracing::info!(
                ?command,
                counter,
                campaign = a.campaign(),
                operator = a.operator(),
                "OTA command accepted"
            ),
            None => tracing::info!(?command, counter, "OTA command accepted"),
        }
        Ok(response)
    }

    /// The TRE activation in force: from MNO-A's "activate TRE" until its change ends (see
    /// the module comment). `None` on the USIM outside a trial, and for a TRE activated
    /// under an older state version, whose command named no campaign.
    pub fn tre_activation(&self) -> Option<&TreActivation> {
        self.state.activation.as_ref()
    }
}
