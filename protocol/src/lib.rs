//! Wire types shared by every tresor role (DESIGN.md §3).
//!
//! Layout:
//! - [`bundle`]: the subscription bundle: MNO-signed profile (COSE_Sign1) in a COSE_Encrypt.
//! - [`device_api`]: the RO's device API: tasks and the device's answers (CBOR).
//! - [`device_auth`]: the device channel: AK-signed requests with RO nonces, AK binding by credential activation.
//! - [`ear`]: EAT attestation results (EAR): claims, COSE signing, relying-party verification.
//! - [`ekcert`]: TCG EK certificates: TPM manufacturer/model/version, validation, encoders.
//! - [`es256`]: ES256 signatures in their one accepted encoding (low S).
//! - [`evidence`]: the evidence the TRE presents to the PVA (CBOR, versioned).
//! - [`fault`]: named fault points for the crash-safety tests (`TRESOR_FAULT`).
//! - [`eventlog`]: TCG PC Client event logs: parse, write, replay to PCR values.
//! - [`ids`]: device id (EK name), nonce, IMSI, ICCID.
//! - [`image`]: device images: manifest, measurement into PCR events.
//! - [`milenage`]: Milenage (TS 35.206), GSM conversion, AuC vectors and resynchronisation.
//! - [`ota`]: the operator's MACed OTA commands to the card (activate / deactivate TRE).
//! - [`order`]: the RO's signed commit and abort orders that end a device's change.
//! - [`pva_api`]: the PVA's API messages: enrol, activate, challenge, appraise (CBOR).
//! - [`receipt`]: the TRE's install receipt, signed by the AK (TPM2_Hash + TPM2_Sign).
//! - [`role`]: role-bound certificates: the role OID and name every CI certificate carries.
//! - [`secret`]: K, OPc, OTA keys and the subscription profile; zeroizing, never printed.
//! - [`tpm`]: TPM 2.0 structures and software-side TPM protocols.
//! - [`wire`]: the two encodings of API messages: CBOR, and JSON with base64url byte strings.
//! - [`x509`]: X.509 path validation (x509-parser + ring), trust anchors, PEM loading.

#![forbid(unsafe_code)]

pub mod bundle;
mod der;
pub mod device_api;
pub mod device_auth;
pub mod ear;
pub mod ekcert;
pub mod es256;
pub mod eventlog;
pub mod evidence;
pub mod fault;
pub mod ids;
pub mod image;
pub mod milenage;
pub mod order;
pub mod ota;
pub mod pva_api;
pub mod receipt;
pub mod role;
pub mod secret;
pub mod tpm;
pub mod wire;
pub mod x509;

pub use ids::{DeviceId, Iccid, IdError, Imsi, Nonce};
pub use secret::{Amf, Opc, OtaKey, OtaKeys, SecretError, SubscriberKey, SubscriptionProfile};
