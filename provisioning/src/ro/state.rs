//! The per-device state machine of a campaign at the RO (docs/flow.md, "The RO").
//!
//! A device's change is a distributed transaction whose one commit point is on the card:
//! the UICC keeps the old profile as a fallback until the RO's commit order reaches it, and
//! falls back by itself when its timer expires first. The RO therefore never guesses: it
//! moves a device to `switched` only on the device's signed word that the card committed,
//! and to `rolled-back` only on the device's signed word that the old profile runs again
//! (or on the certainty that the device never received a command). Everything in between
//! is a state that waits for a peer or for the device, retried until it answers.
//!
//! Each state names what the RO knows and carries what the next step needs, so a restarted
//! RO continues exactly where it stopped and a repeated request gets the same answer. States
//! are stored as CBOR in the RO's store; every transition is one transaction, together with
//! the outbox messages it causes.

use protocol::Nonce;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::dpf::ExpectedReceipt;

/// Where one device of a campaign stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceState {
    /// Campaign prepared (steps 1–3); nothing was sent to the device yet. Next: MNO-A's
    /// activate-TRE command.
    Pending,
    /// Step 4: MNO-A's activate-TRE command, handed to the device until it attaches.
    TreActivation { command: ByteBuf },
    /// Step 5, then 4 confirmed: the DRF checked the attaching device's identity; the card's
    /// MACed answer to the command (`protocol::ota::response`) goes to MNO-A, which checks
    /// that the card the campaign pairs with the device ran it. Next: attached.
    TreActivated { proof: ByteBuf },
    /// Step 5: the DRF checked the device's identity; next the new operator registers it.
    Attached,
    /// Steps 6–7: registered with the new operator, which asked for validation.
    Registered,
    /// Step 8: the PVA's credential-activation challenge for the AK the device presented.
    Enrolling { id_object: ByteBuf, encrypted_secret: ByteBuf, ak_public: ByteBuf },
    /// Step 8: the AK is enrolled at the PVA; next a nonce.
    Enrolled,
    /// Step 8: the PVA's nonce and the PCRs it appraises, waiting for evidence.
    Attesting { nonce: Nonce, pcr_selection: String },
    /// Step 8: the device's evidence for `nonce`, to be appraised by the PVA.
    Appraising { nonce: Nonce, evidence: ByteBuf },
    /// Step 9: the PVA's EAR (checked by the DPF), to be sent to the new operator.
    Attested { ear: ByteBuf, bundle_key: ByteBuf },
    /// Steps 10–11: the DPF took MNO-B's bundle (encrypted to the device) for release; the
    /// receipt must name `expected`.
    /// `bundle_key` is the TPM name of the certified bundle key: the device's answer to the
    /// install is signed for it (`protocol::receipt::AnswerStatement::install_task`).
    Delivering {
        bundle: ByteBuf,
        ear: ByteBuf,
        operator: String,
        expected: ExpectedReceipt,
        bundle_key: ByteBuf,
    },
    /// Step 11–12: the receipt verified: the card runs the new profile on trial, the old one
    /// kept as its fallback. Next: the new operator's AKA challenge. `expected` (carried on
    /// to the commit) names the installed profile.
    Installed { expected: ExpectedReceipt },
    /// Step 12: the AuC's challenge for the new USIM.
    Aka { rand: ByteBuf, autn: ByteBuf, expected: ExpectedReceipt },
    /// Step 12: the USIM's answer (CBOR `AkaResult`), to be forwarded to the AuC.
    AkaAnswered { rand: ByteBuf, autn: ByteBuf, answer: ByteBuf, expected: ExpectedReceipt },
    /// Step 12, the commit decision: the AuC accepted the new USIM. The device is told to
    /// commit the profile of `sequence`; only its signed answer says whether the card
    /// committed (then it runs `imsi`) or had fallen back.
    Committing { sequence: u64, imsi: protocol::Imsi },
    /// The change is being abandoned (a check refused, a peer stayed down past its step's
    /// deadline, the campaign was cancelled): the device is told to restore its old profile
    /// and the RO waits for its signed acknowledgement.
    Aborting { step: u8, reason: String },
    /// The device said something the protocol does not allow (e.g. it committed when the
    /// RO had decided to abort). Nothing is reported; an operator must look.
    Reconciling { reason: String },
    /// Final: the card committed the new profile; both operators are told.
    Switched,
    /// Final: the device runs its old profile again (or never received a command); both
    /// operators are told.
    RolledBack { step: u8, reason: String },
}

impl DeviceState {
    /// The state's name, as stored in its own column and shown in campaign status.
    pub fn name(&self) -> &'static str {
        match self {
            DeviceState::Pending => "pending",
            DeviceState::TreActivation { .. } => "tre-activation-issued",
            DeviceState::TreActivated { .. } => "tre-activated",
            DeviceState::Attached => "attached",
            DeviceState::Registered => "registered",
            DeviceState::Enrolling { .. } => "enrolling",
            DeviceState::Enrolled => "enrolled",
            DeviceState::Attesting { .. } => "attesting",
            DeviceState::Appraising { .. } => "appraising",
            DeviceState::Attested { .. } => "attested",
            DeviceState::Delivering { .. } => "delivered",
            DeviceState::Installed { .. } => "installed",
            DeviceState::Aka { .. } => "aka",
            DeviceState::AkaAnswered { .. } => "aka-answered",
            DeviceState::Committing { .. } => "committing",
            DeviceState::Aborting { .. } => "aborting",
            DeviceState::Reconciling { .. } => "reconciling",
            DeviceState::Switched => "switched",
            DeviceState::RolledBack { .. } => "rolled-back",
        }
    }

    /// Whether the device is done with this campaign, one way or the other.
    pub fn is_final(&self) -> bool {
        matches!(self, DeviceState::Switched | DeviceState::RolledBack { .. })
    }

    /// Whether the RO decided to commit: from here on nothing may abort the change.
    pub fn past_commit_decision(&self) -> bool {
        matches!(self, DeviceState::Committing { .. } | DeviceState::Switched)
    }

    /// Whether the device may have changed anything on its card: before the activate-TRE
    /// command was handed out it cannot have, and an abandoned change needs no answer.
    pub fn device_involved(&self) -> bool {
        !matches!(self, DeviceState::Pending)
    }

    /// The TR 33.812 step (DESIGN.md §2) a failure in this state belongs to.
    pub fn step(&self) -> u8 {
        match self {
            DeviceState::Pending => 4,
            DeviceState::TreActivation { .. } => 5,
            DeviceState::TreActivated { .. } => 4,
            DeviceState::Attached => 6,
            DeviceState::Registered | DeviceState::Enrolling { .. } | DeviceState::Enrolled => 8,
            DeviceState::Attesting { .. } | DeviceState::Appraising { .. } => 8,
            DeviceState::Attested { .. } => 9,
            DeviceState::Delivering { .. } => 11,
            DeviceState::Installed { .. }
            | DeviceState::Aka { .. }
            | DeviceState::AkaAnswered { .. }
            | DeviceState::Committing { .. }
            | DeviceState::Reconciling { .. }
            | DeviceState::Switched => 12,
            DeviceState::Aborting { step, .. } | DeviceState::RolledBack { step, .. } => *step,
        }
    }
}

/// The twelve steps of DESIGN.md §2 by number, for timings and reports.
pub const STEP_NAMES: [&str; 12] = [
    "manufacture with MNO-A profile",
    "campaign created",
    "IMSI list MNO-B → MNO-A",
    "TRE activated by MNO-A",
    "attach to DRF",
    "registered with MNO-B",
    "validation requested",
    "challenge, evidence, appraisal",
    "attestation result to MNO-B",
    "bundle checked, relayed by DPF",
    "download and install",
    "receipt, AKA, commit, reports",
];

/// The name of step `step` (1–12).
pub fn step_name(step: u8) -> &'static str {
    usize::from(step)
        .checked_sub(1)
        .and_then(|i| STEP_NAMES.get(i))
        .copied()
        .unwrap_or("unknown step")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_cbor() {
        let states = [
            DeviceState::Pending,
            DeviceState::TreActivation { command: ByteBuf::from(vec![1, 2, 3]) },
            DeviceState::TreActivated { proof: ByteBuf::from(vec![4, 5]) },
            DeviceState::Attesting {
                nonce: Nonce::from_bytes(&[4; 32]).unwrap(),
                pcr_selection: "sha256:0,2".into(),
            },
            DeviceState::Aborting { step: 8, reason: "contraindicated".into() },
            DeviceState::Committing { sequence: 3, imsi: "001020000000001".parse().unwrap() },
            DeviceState::RolledBack { step: 8, reason: "contraindicated".into() },
        ];
        for state in states {
            let mut bytes = Vec::new();
            ciborium::into_writer(&state, &mut bytes).unwrap();
            let back: DeviceState = ciborium::from_reader(&bytes[..]).unwrap();
            assert_eq!(back, state);
        }
    }

    #[test]
    fn only_the_commit_decision_and_after_are_past_it() {
        let imsi = "001020000000001".parse().unwrap();
        assert!(DeviceState::Committing { sequence: 1, imsi }.past_commit_decision());
        assert!(DeviceState::Switched.past_commit_decision());
        assert!(!DeviceState::Attached.past_commit_decision());
        assert!(!DeviceState::Pending.device_involved());
        assert!(DeviceState::TreActivation { command: ByteBuf::new() }.device_involved());
    }

    #[test]
    fn step_names_cover_one_to_twelve() {
        assert_eq!(step_name(1), "manufacture with MNO-A profile");
        assert_eq!(step_name(12), "receipt, AKA, commit, reports");
        assert_eq!(step_name(0), "unknown step");
        assert_eq!(step_name(13), "unknown step");
    }
}
