//! TCG PC Client event logs: parse, write and replay (TCG PC Client Platform Firmware
//! Profile 1.05, §10 "Event Logging").
//!
//! Two binary formats, both little-endian, both read by [`EventLog::parse`] and written back
//! byte for byte by [`EventLog::to_bytes`]:
//! - **crypto-agile** (§10.2.1): one TCG_PCR_EVENT (SHA-1 format) header whose event is the
//!   TCG_EfiSpecIDEvent "Spec ID Event03" listing every digest algorithm and its size, then
//!   TCG_PCR_EVENT2 records carrying a TPML_DIGEST_VALUES each;
//! - **SHA-1** (TCG 1.2 style, §10.2.2): every record is a TCG_PCR_EVENT with one SHA-1 digest.
//!
//! Hostile input is the normal case here: the log arrives from the device being appraised.
//! Every read goes through a bounded `reader::Reader`, every length is checked against the
//! bytes that are really there before anything is allocated, and every defect is a precise
//! [`EventLogError`] naming the byte offset of the record at fault.
//!
//! Layout:
//! - [`types`]: event types, digests, events, the Spec ID event and the log itself.
//! - `reader`: the bounded little-endian reader.
//! - `parse`: the two binary formats into an [`EventLog`].
//! - `write`: an [`EventLog`] back into bytes; building a log from [`Measurement`]s.
//! - [`replay`]: per-bank PCR values ([`PcrBanks`]) from the events.

mod parse;
mod reader;
pub mod replay;
pub mod types;
mod write;

pub use replay::{PcrBank, PcrBanks};
pub use types::{
    AlgorithmSize, BankDigest, Event, EventDigest, EventLog, EventType, LogFormat, Measurement,
    SpecIdEvent,
};

use crate::tpm::HashAlg;

/// PCRs 0–23: the PC Client PTP's PCR bank size, and the only indices a record that
/// extends a PCR may name.
pub const PCR_COUNT: u32 = 24;

/// The PCR index 0xFFFFFFFF that Windows gives EV_NO_ACTION records it logs for itself
/// (its boot configuration log carries them next to the firmware's). Such a record
/// extends nothing (PFP 1.05 §10.4.1), so the index names no PCR; it is accepted on
/// EV_NO_ACTION records only.
pub const NO_ACTION_PCR: u32 = u32::MAX;

/// Largest log accepted (and written). Linux firmware logs are tens of kilobytes; 8 MiB
/// leaves two orders of magnitude of headroom while bounding what a hostile log can cost.
pub const MAX_LOG_SIZE: usize = 8 * 1024 * 1024;

/// Most records accepted in one log. Caps the per-event bookkeeping a hostile log of tiny
/// records can make us allocate.
pub const MAX_EVENTS: usize = 65_536;

/// Most algorithms a Spec ID event may declare. The TCG algorithm registry has eight hash
/// algorithms today; sixteen leaves room without letting a header declare thousands.
pub const MAX_ALGORITHMS: usize = 16;

/// Largest digest size accepted for an algorithm we do not know (SHA-512's and SHA3-512's).
pub const MAX_DIGEST_SIZE: u16 = 64;

/// Why a log could not be parsed, built or replayed. Offsets are byte offsets of the
/// record (or field) at fault from the start of the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    #[error("event log is empty")]
    Empty,
    #[error("event log is {size} bytes, more than the {max} accepted")]
    TooLarge { size: usize, max: usize },
    #[error("event log has more than {max} records")]
    TooManyEvents { max: usize },
    #[error("truncated at offset {offset}: {what} needs {needed} bytes, only {available} left")]
    Truncated { offset: usize, what: &'static str, needed: usize, available: usize },
    #[error("Spec ID event at offset {offset} names PCR {pcr}, must be PCR 0")]
    SpecIdNotPcr0 { offset: usize, pcr: u32 },
    #[error("Spec ID event at offset {offset} has a non-zero SHA-1 digest")]
    SpecIdDigestNotZero { offset: usize },
    #[error(
        "Spec ID event at offset {offset}: eventSize is {event_size} but the structure is {parsed} bytes"
    )]
    SpecIdSizeMismatch { offset: usize, event_size: usize, parsed: usize },
    #[error("Spec ID event at offset {offset} declares no digest algorithm")]
    NoAlgorithms { offset: usize },
    #[error(
        "Spec ID event at offset {offset} declares {count} algorithms, more than the {max} accepted"
    )]
    TooManyAlgorithms { offset: usize, count: u32, max: usize },
    #[error("algorithm 0x{alg_id:04x} appears twice at offset {offset}")]
    DuplicateAlgorithm { offset: usize, alg_id: u16 },
    #[error(
        "Spec ID event at offset {offset} declares {alg} with {declared}-byte digests, {alg} digests are {expected} bytes"
    )]
    WrongDigestSize { offset: usize, alg: HashAlg, declared: u16, expected: usize },
    #[error(
        "Spec ID event at offset {offset} declares unknown algorithm 0x{alg_id:04x} with {size}-byte digests (must be 1 to 64)"
    )]
    BadDigestSize { offset: usize, alg_id: u16, size: u16 },
    #[error(
        "record at offset {offset} names PCR {pcr}; PCRs are 0 to 23 (0xffffffff only on EV_NO_ACTION)"
    )]
    PcrOutOfRange { offset: usize, pcr: u32 },
    #[error("record at offset {offset} carries no digest")]
    NoDigests { offset: usize },
    #[error(
        "record at offset {offset} carries {count} digests, the Spec ID event declares {max} algorithms"
    )]
    TooManyDigests { offset: usize, count: u32, max: usize },
    #[error(
        "record at offset {offset} carries a digest for algorithm 0x{alg_id:04x}, which the Spec ID event does not declare (its size is unknown)"
    )]
    UndeclaredAlgorithm { offset: usize, alg_id: u16 },
    #[error("StartupLocality event at offset {offset} is malformed: {problem}")]
    StartupLocalityMalformed { offset: usize, problem: &'static str },
    #[error(
        "StartupLocality event at offset {offset} gives locality {locality}; only 0, 3 and 4 are defined"
    )]
    InvalidStartupLocality { offset: usize, locality: u8 },
    #[error("StartupLocality event at offset {offset} comes after PCR 0 was extended")]
    StartupLocalityAfterMeasurement { offset: usize },
    #[error("second StartupLocality event at offset {offset}")]
    DuplicateStartupLocality { offset: usize },
    #[error("EV_EFI_HCRTM_EVENT at offset {offset} is {problem}")]
    HcrtmEventMisplaced { offset: usize, problem: &'static str },
    #[error("a log needs at least one PCR bank")]
    NoBanks,
    #[error("PCR bank {alg} given twice")]
    DuplicateBank { alg: HashAlg },
    #[error("measurement for PCR {pcr} has no {alg} digest")]
    MissingDigest { pcr: u32, alg: HashAlg },
    #[error("measurement for PCR {pcr} has a {alg} digest but the log has no {alg} bank")]
    UnexpectedDigest { pcr: u32, alg: HashAlg },
    #[error("measurement for PCR {pcr} has a {len}-byte {alg} digest")]
    DigestLength { pcr: u32, alg: HashAlg, len: usize },
}
