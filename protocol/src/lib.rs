//! Wire types shared by every tresor role (DESIGN.md §3).
//!
//! Layout:
//! - [`ids`]: device id (EK name), nonce, IMSI, ICCID.
//! - [`secret`]: K, OPc, OTA keys and the subscription profile; zeroizing, never printed.
//! - [`tpm`]: TPM 2.0 structures and software-side TPM protocols.

#![forbid(unsafe_code)]

pub mod ids;
pub mod secret;
pub mod tpm;

pub use ids::{DeviceId, IdError, Iccid, Imsi, Nonce};
pub use secret::{Amf, Opc, OtaKey, OtaKeys, SecretError, SubscriberKey, SubscriptionProfile};
