//! The UICC/USIM emulator of tresor (DESIGN.md §1): an ISO/IEC 7816-4 card with the MF and
//! ADF_USIM file system of ETSI TS 102 221 and 3GPP TS 31.102, Milenage AKA, PIN1/ADM1, the
//! operator's OTA "activate TRE" command, a subscription change that installs the new
//! profile on trial and then commits or falls back to the old one, an atomic on-disk state
//! with an integrity check, and the TRE/USIM exclusivity of 3GPP TR 33.812 §5.4.4.3. It
//! answers APDUs in process and over vsmartcard's vpcd protocol, so pcscd and any PC/SC tool
//! see it as a card.
//!
//! Layout:
//! - [`apdu`]: command APDU parsing (ISO/IEC 7816-4 §5.1) and status words.
//! - [`fs`]: the file tree, EF encodings (IMSI, ICCID, DIR, ARR) and FCP templates.
//! - `commands`: SELECT, STATUS, READ/UPDATE BINARY and RECORD, VERIFY, GET RESPONSE.
//! - [`auth`]: AUTHENTICATE (3G and GSM contexts) and its terminal side for tests.
//! - [`card`]: the card, its lifecycle and the durable write.
//! - [`activation`]: the OTA commands, their MACed response, the TRE activation they leave.
//! - [`change`]: the subscription change: install on trial, commit, fall back.
//! - [`state`]: the persistent state and its file format.
//! - [`store`]: atomic, durable state file replacement and the card lock.
//! - [`vpcd`]: the vpcd transport.
//! - [`error`]: the crate's error type.

#![forbid(unsafe_code)]

pub mod activation;
pub mod apdu;
pub mod auth;
pub mod card;
pub mod change;
mod commands;
pub mod error;
pub mod fs;
pub mod state;
pub mod store;
pub mod vpcd;

pub use activation::TreActivation;
pub use apdu::Sw;
pub use card::{ATR, Card, CardOptions};
pub use change::{Change, ChangeRef, FallBack, Phase};
pub use error::UiccError;
pub use state::Pin;
pub use store::WriteStep;
