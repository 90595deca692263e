//! The per-device state machine of a campaign at the RO (docs/flow.md, "Per-device states").
//!
//! Each state names the last step that completed and carries what the next one needs, so
//! that a restarted RO knows exactly which task to hand the device next and a repeated
//! request gets the same answer. States are stored as CBOR in the RO's SQLite store; every
//! transition is one transaction.

use protocol::Nonce;

use super::dpf::ExpectedReceipt;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Where one device of a campaign stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceState {
    /// Campaign prepared (steps 1–3); the TRE is not yet activated.
    Pending,
    /// Step 4: MNO-A's activate-TRE command, handed to the device until it attaches.
    TreActivation { command: ByteBuf },
    /// Steps 5–7: attached to the DRF and registered with the new operator, which asked for
    /// validation.
    Registered,
    /// Step 8: the PVA's credential-activation challenge for the AK the device presented.
    Enrolling { id_object: ByteBuf, encrypted_secret: ByteBuf, ak_public: ByteBuf },
    /// Step 8: the AK is enrolled at the PVA.
    Enrolled,
    /// Step 8: the PVA's nonce and the PCRs it appraises, waiting for evidence.
    Attesting { nonce: Nonce, pcr_selection: String },
    /// Steps 9–11: the EAR went to the new operator, the DPF released the bundle; the
    /// receipt must name `expected`.
    /// `bundle_key` is the TPM name of the certified bundle key: the device's answer to the
    /// install must be signed for it (`protocol::receipt::AnswerStatement::install_task`).
    Delivering {
        bundle: ByteBuf,
        ear: ByteBuf,
        operator: String,
        expected: ExpectedReceipt,
        #[serde(default)]
        bundle_key: ByteBuf,
    },
    /// Step 11–12: the install receipt verified; the new operator's AKA is next.
    Installed,
    /// Step 12: the AuC's challenge for the new USIM.
    Aka { rand: ByteBuf, autn: ByteBuf },
    /// Step 12: AKA succeeded and both operators were told.
    Switched,
    /// A step failed; the device must restore its old profile.
    Failed { step: u8, reason: String },
    /// After a failure, the device confirmed its old profile is active again.
    RolledBack { step: u8, reason: String },
}

impl DeviceState {
    /// The state's name, as stored in its own column and shown in campaign status.
    pub fn name(&self) -> &'static str {
        match self {
            DeviceState::Pending => "pending",
            DeviceState::TreActivation { .. } => "tre-activation-issued",
            DeviceState::Registered => "registered",
            DeviceState::Enrolling { .. } => "enrolling",
            DeviceState::Enrolled => "enrolled",
            DeviceState::Attesting { .. } => "attesting",
            DeviceState::Delivering { .. } => "delivered",
            DeviceState::Installed => "installed",
            DeviceState::Aka { .. } => "aka",
            DeviceState::Switched => "switched",
            DeviceState::Failed { .. } => "failed",
            DeviceState::RolledBack { .. } => "rolled-back",
        }
    }

    /// Whether the device is done with this campaign, one way or the other.
    pub fn is_final(&self) -> bool {
        matches!(self, DeviceState::Switched | DeviceState::RolledBack { .. })
    }

    /// The TR 33.812 step (DESIGN.md §2) a failure in this state belongs to.
    pub fn step(&self) -> u8 {
        match self {
            DeviceState::Pending => 4,
            DeviceState::TreActivation { .. } => 5,
            DeviceState::Registered | DeviceState::Enrolling { .. } | DeviceState::Enrolled => 8,
            DeviceState::Attesting { .. } => 8,
            DeviceState::Delivering { .. } => 11,
            DeviceState::Installed | DeviceState::Aka { .. } | DeviceState::Switched => 12,
            DeviceState::Failed { step, .. } | DeviceState::RolledBack { step, .. } => *step,
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
    "profile signed, released by DPF",
    "download and install",
    "receipt, AKA, reports",
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
            DeviceState::Attesting {
                nonce: Nonce::from_bytes(&[4; 32]).unwrap(),
                pcr_selection: "sha256:0,2".into(),
            },
            DeviceState::Failed { step: 8, reason: "contraindicated".into() },
        ];
        for state in states {
            let mut bytes = Vec::new();
            ciborium::into_writer(&state, &mut bytes).unwrap();
            let back: DeviceState = ciborium::from_reader(&bytes[..]).unwrap();
            assert_eq!(back, state);
        }
    }

    #[test]
    fn step_names_cover_one_to_twelve() {
        assert_eq!(step_name(1), "manufacture with MNO-A profile");
        assert_eq!(step_name(12), "receipt, AKA, reports");
        assert_eq!(step_name(0), "unknown step");
        assert_eq!(step_name(13), "unknown step");
    }
}
