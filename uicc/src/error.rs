//! The one error type of the `uicc` crate. Variants say what a caller can act on; none
//! carries key material or state file content.

use std::io;
use std::path::PathBuf;

use protocol::ota::OtaError;

use crate::change::Phase;
use crate::store::WriteStep;

#[derive(Debug, thiserror::Error)]
pub enum UiccError {
    #[error("card state {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("card state {} already exists", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("card state {} is in use by another process", path.display())]
    Locked { path: PathBuf },
    #[error("card state {} is not valid: {reason}", path.display())]
    BadState { path: PathBuf, reason: String },
    #[error("card state could not be encoded: {0}")]
    Encode(String),
    #[error("could not save the card state while {step}: {source}")]
    Persist { step: WriteStep, source: io::Error },
    /// TR 33.812 §5.4.4.3: a profile is installed by the TRE, so only while it is active.
    #[error("the TRE is not active: a profile can only be installed while the TRE is active")]
    TreNotActive,
    #[error("OTA command rejected: {0}")]
    Ota(#[from] OtaError),
    /// The install did not complete. `committed` tells which profile the card now runs: the
    /// new one on trial (the write reached the disk) or the old one, with the USIM active
    /// again.
    #[error(
        "profile install failed while {step}: {source}; the card runs the {} with the USIM active",
        if *committed { "new profile on trial" } else { "old profile" }
    )]
    InstallFailed { step: WriteStep, committed: bool, source: io::Error },
    /// The TRE runs without an authenticated activation (one made under state version 2,
    /// whose command named no campaign): nothing installs under it.
    #[error("the TRE's activation names no campaign: activate it again to install")]
    NotActivated,
    /// The install is for another campaign than MNO-A activated the TRE for.
    #[error("the TRE is activated for campaign {activated:?}, not {campaign:?}")]
    ActivationMismatch { activated: String, campaign: String },
    /// Another change is on trial: it must be committed or fall back first. Also the answer
    /// to an OTA "activate TRE" during a trial.
    #[error("change {sequence} of campaign {campaign:?} is on trial: commit it or fall back first")]
    ChangeOnTrial { campaign: String, sequence: u64 },
    /// The change on trial was installed with another subscription than this re-delivery.
    #[error("change {sequence} of campaign {campaign:?} is on trial with another subscription")]
    ChangeMismatch { campaign: String, sequence: u64 },
    /// The change was already settled; a new attempt needs a new sequence number.
    #[error("change {sequence} of campaign {campaign:?} is already settled ({phase})")]
    ChangeSettled { campaign: String, sequence: u64, phase: Phase },
    /// The card's last change is not this one (or there is none).
    #[error("change {sequence} of campaign {campaign:?} is not the card's last change")]
    NoSuchChange { campaign: String, sequence: u64 },
    /// The commit point has passed: nothing may bring the old profile back.
    #[error("change {sequence} of campaign {campaign:?} is committed: the old profile is gone")]
    AlreadyCommitted { campaign: String, sequence: u64 },
    #[error("a PIN is 4 to 8 decimal digits, an ADM key 16 hex digits")]
    BadPin,
    #[error("the MNC length is 2 or 3 digits")]
    MncLength,
    #[error("the system random number generator failed")]
    Random,
    #[error("vpcd at {addr}: {source}")]
    Vpcd { addr: String, source: io::Error },
}
