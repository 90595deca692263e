//! The card: its state file, its session (what a reset clears), and the one durable write
//! every state change goes through (with the fault points of [`protocol::fault`] around
//! it). The OTA "activate TRE" command is in [`crate::activation`], the subscription change
//! — install on trial, commit, fall back — in [`crate::change`]. Together they keep the invariant of
//! TR 33.812 §5.4.4.3: exactly one of the TRE and the USIM is active, after every operation
//! and across restarts.
//!
//! APDUs reach the card through [`Card::transmit`], in process or over vpcd; the command
//! set is in `commands` and `auth`.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use protocol::fault;
use protocol::{Iccid, Imsi, SubscriptionProfile};

use crate::apdu::{Command, respond};
use crate::error::UiccError;
use crate::fs::Dir;
use crate::state::{Active, Pin, PinState, State};
use crate::store::{self, FaultPlan, WriteFailure, WriteStep};

/// The ATR of a T=0 UICC (ISO/IEC 7816-3 §8, ETSI TS 102 221 §6.3):
/// TS 3B (direct convention); T0 9E (TA1, TD1; 14 historical bytes); TA1 96 (Fi 512, Di 32);
/// TD1 80 (TD2 follows, T=0); TD2 1F (TA3 follows, T=15); TA3 C7 (clock stop no preference,
/// classes A, B and C); historical bytes 80 (compact-TLV), 31 E0 (selection by full and
/// partial DF name, EF_DIR), 73 FE 21 00 (card capabilities: selection methods, data coding
/// 21, no extended length, no logical channels), 66 "tresor" (pre-issuing data); TCK C6.
pub const ATR: [u8; 21] = [
    0x3B, 0x9E, 0x96, 0x80, 0x1F, 0xC7, 0x80, 0x31, 0xE0, 0x73, 0xFE, 0x21, 0x00, 0x66, 0x74, 0x72,
    0x65, 0x73, 0x6F, 0x72, 0xC6,
];

/// Retry counters of a new card (TS 102 221 §9.5: PIN 3, ADM issuer-defined).
pub const PIN1_RETRIES: u8 = 3;
pub const ADM1_RETRIES: u8 = 10;

/// Card settings chosen at manufacture.
#[derive(Clone, Debug)]
pub struct CardOptions {
    pub pin1: Pin,
    /// Whether PIN1 must be verified before reading IMSI or running AUTHENTICATE. M2M cards
    /// usually have it disabled.
    pub pin1_enabled: bool,
    pub adm1: Pin,
    /// MNC length for EF_AD (2 or 3).
    pub mnc_len: u8,
}

impl CardOptions {
    /// PIN1 "0000" disabled, a random 8-digit ADM1 (so UPDATE BINARY needs an explicit
    /// ADM1), 2-digit MNC.
    pub fn new() -> Result<Self, UiccError> {
        Ok(Self {
            pin1: Pin::from_digits("0000")?,
            pin1_enabled: false,
            adm1: Pin::random_digits()?,
            mnc_len: 2,
        })
    }
}

/// What a reset clears (TS 102 221 §6.2): selection, security status, pending response.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub df: Dir,
    pub ef: Option<&'static crate::fs::Ef>,
    /// Whether ADF_USIM has been selected since the reset (the current application).
    pub usim_selected: bool,
    pub pin1_verified: bool,
    pub adm1_verified: bool,
    /// The record pointer of the current linear fixed EF (1-based).
    pub record: Option<usize>,
    /// Response data awaiting GET RESPONSE (T=0, 61xx).
    pub pending: Vec<u8>,
}

impl Session {
    fn after_reset() -> Self {
        Self {
            df: Dir::Mf,
            ef: None,
            usim_selected: false,
            pin1_verified: false,
            adm1_verified: false,
            record: None,
            pending: Vec::new(),
        }
    }
}

/// A UICC with one USIM, backed by a state file.
pub struct Card {
    path: PathBuf,
    _lock: File,
    pub(crate) state: State,
    pub(crate) session: Session,
}

impl fmt::Debug for Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Card")
            .field("path", &self.path)
            .field("iccid", &self.state.profile.iccid)
            .field("imsi", &self.state.profile.imsi)
            .field("active", &self.state.active)
            .field(
                "activation",
                &self.state.activation.as_ref().map(|a| (a.campaign(), a.operator(), a.counter())),
            )
            .field(
                "change",
                &self.state.change.as_ref().map(|c| (&c.campaign, c.sequence, c.phase())),
            )
            .finish_non_exhaustive()
    }
}

impl Card {
    /// Manufactures a card for `profile` (TR 33.812 step 1: the MNO-A profile, USIM active)
    /// into a new state file at `path`.
    pub fn create(
        path: &Path,
        profile: SubscriptionProfile,
        options: CardOptions,
    ) -> Result<Self, UiccError> {
        if !matches!(options.mnc_len, 2 | 3) {
            return Err(UiccError::MncLength);
        }
        let lock = lock(path)?;
        if path.exists() {
            return Err(UiccError::AlreadyExists { path: path.to_owned() });
        }
        let state = State::new(
            profile,
            PinState::new(options.pin1, options.pin1_enabled, PIN1_RETRIES),
            PinState::new(options.adm1, true, ADM1_RETRIES),
            options.mnc_len,
        );
        store::write_atomic(path, &state.to_bytes()?, &FaultPlan::default())
            .map_err(|f| UiccError::Persist { step: f.step, source: f.source })?;
        tracing::info!(iccid = %state.profile.iccid, "card created");
        Ok(Self { path: path.to_owned(), _lock: lock, state, session: Session::after_reset() })
    }

    /// Opens an existing card, as a device agent does after a restart. A temporary file left
    /// by an interrupted write is discarded: the state file is whole by construction.
    pub fn open(path: &Path) -> Result<Self, UiccError> {
        let lock = lock(path)?;
        let tmp = store::temp_path(path);
        match std::fs::remove_file(&tmp) {
            Ok(()) => tracing::warn!(path = %tmp.display(), "discarded an interrupted state write"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(UiccError::Io { path: tmp, source }),
        }
        let state = State::load(path)?;
        Ok(Self { path: path.to_owned(), _lock: lock, state, session: Session::after_reset() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn atr(&self) -> &'static [u8] {
        &ATR
    }

    /// Processes one command APDU and returns response data ‖ SW1 SW2. Never panics; a
    /// malformed APDU gets the status word that names the problem.
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        match Command::parse(apdu) {
            Ok(cmd) => {
                let response = self.process(&cmd);
                let sw = response.len().checked_sub(2).and_then(|i| response.get(i..));
                tracing::debug!(
                    cla = cmd.cla, ins = cmd.ins, p1 = cmd.p1, p2 = cmd.p2,
                    sw = %sw.map(hex::encode).unwrap_or_default(),
                    "APDU"
                );
                response
            }
            Err(sw) => {
                self.session.pending.clear();
                respond(&[], sw)
            }
        }
    }

    /// Cold or warm reset: the MF is selected, security status and pending data are lost.
    /// Which of USIM and TRE is active is persistent and survives it.
    pub fn reset(&mut self) {
        self.session = Session::after_reset();
    }

    pub fn usim_active(&self) -> bool {
        self.state.active == Active::Usim
    }

    pub fn tre_active(&self) -> bool {
        self.state.active == Active::Tre
    }

    pub fn iccid(&self) -> &Iccid {
        &self.state.profile.iccid
    }

    pub fn imsi(&self) -> &Imsi {
        &self.state.profile.imsi
    }

    /// The last OTA counter the card accepted; MNO-A's next command must exceed it.
    pub fn ota_counter(&self) -> u64 {
        self.state.profile.ota.counter
    }

    /// Writes `next` and switches to it, between the fault points of `points`. If the write
    /// failed after the rename, the disk holds `next`, so the card switches to it all the
    /// same (and still reports the failure).
    ///
    /// An `error` at the `before` point is a failure at [`WriteStep::Write`] (nothing
    /// written); at the `after` point the write is durable and adopted, so it is a failure at
    /// [`WriteStep::Adopt`]: the caller hears an error although the new state counts, the
    /// ambiguous outcome a lost answer gives.
    pub(crate) fn save(
        &mut self,
        next: State,
        faults: &FaultPlan,
        points: FaultPoints,
    ) -> Result<(), WriteFailure> {
        let injected = |step: WriteStep| {
            move |e: fault::Injected| WriteFailure { step, source: io::Error::other(e) }
        };
        fault::point(points.before).map_err(injected(WriteStep::Write))?;
        let bytes = next.to_bytes().map_err(|e| WriteFailure {
            step: WriteStep::Write,
            source: io::Error::other(e.to_string()),
        })?;
        let result = store::write_atomic(&self.path, &bytes, faults);
        if result.as_ref().err().is_none_or(|f| f.step.committed()) {
            self.state = next;
        }
        result?;
        fault::point(points.after).map_err(injected(WriteStep::Adopt))
    }

    /// Saves the current state (PIN counters, SQN array, EF updates).
    pub(crate) fn persist(&mut self) -> Result<(), UiccError> {
        let bytes = self.state.to_bytes()?;
        store::write_atomic(&self.path, &bytes, &FaultPlan::default())
            .map_err(|f| UiccError::Persist { step: f.step, source: f.source })
    }
}

/// The fault points ([`protocol::fault`]) around one kind of durable write, named
/// `uicc.<op>.before` and `uicc.<op>.after`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FaultPoints {
    before: &'static str,
    after: &'static str,
}

pub(crate) const OTA: FaultPoints =
    FaultPoints { before: "uicc.ota.before", after: "uicc.ota.after" };
pub(crate) const INSTALL: FaultPoints =
    FaultPoints { before: "uicc.install.before", after: "uicc.install.after" };
pub(crate) const COMMIT: FaultPoints =
    FaultPoints { before: "uicc.commit.before", after: "uicc.commit.after" };
pub(crate) const FALL_BACK: FaultPoints =
    FaultPoints { before: "uicc.fall-back.before", after: "uicc.fall-back.after" };

pub(crate) fn persist_error(f: WriteFailure) -> UiccError {
    UiccError::Persist { step: f.step, source: f.source }
}

fn lock(path: &Path) -> Result<File, UiccError> {
    store::lock(path).map_err(|source| match source.kind() {
        io::ErrorKind::WouldBlock => UiccError::Locked { path: path.to_owned() },
        _ => UiccError::Io { path: store::lock_path(path), source },
    })
}

#[cfg(test)]
#[path = "card_tests.rs"]
pub(crate) mod tests;
