//! The device side of tresor (DESIGN.md §1): the TPM of an M2ME and the TRE agent on it.
//!
//! Layout:
//! - [`swtpm`]: the swtpm lab: start, reach and stop software TPM processes.
//! - [`tpm`]: the TPM wrapped once; methods named after TPM commands.
//! - [`device`]: a device as its own process: configuration, power-on, agent run.
//! - [`ekcert`]: issuing EK certificates under a TPM manufacturer CA.
//! - [`agent`]: the device agent: RO tasks carried out with the TPM and the UICC.
//! - [`card`]: what the agent asks of its UICC (trial install, commit, fall-back, AKA).
//! - [`journal`]: the agent's durable record of the receipts it signed.
//! - [`attester`]: measured boot, event log, enrolment and evidence (quote, bundle key).
//! - [`manufacture`]: the equipment supplier's step: EK, EK certificate in NV, counter.
//! - [`plain`]: an attester for any TPM (`tresor attest`): the PCRs as they are.

#![deny(unsafe_code)]

pub mod agent;
pub mod attester;
pub mod card;
pub mod device;
pub mod ekcert;
pub mod journal;
pub mod manufacture;
pub mod plain;
pub mod swtpm;
pub mod tpm;

mod error;

pub use error::{Error, Result};
