//! The agent's journal: what the device signed for the change under way, kept on disk next
//! to the card's state so that an agent killed and restarted at any point answers a
//! repeated task exactly as before — a re-delivered bundle that is already installed gets
//! the same signed receipt, never a failure (docs/flow.md, "The device").
//!
//! The card's state file is the truth about the subscription (which profile runs, whether
//! the change is on trial, committed or fell back); the journal only remembers signed
//! answers derived from it. It is written atomically (temporary file, fsync, rename) and
//! holds nothing secret: a receipt names an ICCID, a hash of the IMSI and a sequence.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The journal file's `format` field.
const FORMAT: &str = "tresor-agent-journal";

/// Where the journal of the card at `card` lives: beside it, `<card file>.journal`.
pub fn journal_path(card: &Path) -> PathBuf {
    let name = card.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    card.with_file_name(format!("{name}.journal"))
}

/// The signed install receipt of one change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalReceipt {
    pub campaign: String,
    pub sequence: u64,
    /// `protocol::receipt::SignedReceipt` CBOR, hex.
    #[serde(with = "hex::serde")]
    pub receipt: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    /// The campaign whose change is under way: the one whose activate-TRE command the
    /// device carried out last. Only that campaign's orders are obeyed.
    #[serde(default)]
    campaign: Option<String>,
    receipt: Option<JournalReceipt>,
    /// The nonce of the device's latest evidence (hex): the only challenge whose
    /// attestation result the device accepts with a bundle.
    #[serde(default, with = "hex_option")]
    nonce: Option<Vec<u8>>,
}

/// The journal of one device.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Opens the journal at `path`; a missing file is an empty journal, a damaged one an
    /// error (the agent must not forget what it signed).
    pub fn open(path: &Path) -> Result<Self> {
        let file = match std::fs::read(path) {
            Ok(bytes) => {
                let file: File = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Config(format!("agent journal {}: {e}", path.display())))?;
                if file.format != FORMAT {
                    return Err(Error::Config(format!(
                        "agent journal {}: not a {FORMAT} file",
                        path.display()
                    )));
                }
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                File { format: FORMAT.into(), ..File::default() }
            }
            Err(source) => {
                return Err(Error::Io {
                    what: format!("agent journal {}", path.display()),
                    source,
                });
            }
        };
        Ok(Self { path: path.to_owned(), file })
    }

    /// The receipt signed for the install of (`campaign`, `sequence`), if any.
    pub fn receipt(&self, campaign: &str, sequence: u64) -> Option<&[u8]> {
        self.file
            .receipt
            .as_ref()
            .filter(|r| r.campaign == campaign && r.sequence == sequence)
            .map(|r| r.receipt.as_slice())
    }

    /// The campaign whose change is under way, if the device took part in one.
    pub fn campaign(&self) -> Option<&str> {
        self.file.campaign.as_deref()
    }

    /// Records that the change of `campaign` begins (before its activate-TRE command).
    pub fn set_campaign(&mut self, campaign: &str) -> Result<()> {
        if self.campaign() == Some(campaign) {
            return Ok(());
        }
        let mut next = self.file.clone();
        next.campaign = Some(campaign.to_owned());
        self.save(next)
    }

    /// The nonce the device's latest evidence answered.
    pub fn nonce(&self) -> Option<&[u8]> {
        self.file.nonce.as_deref()
    }

    /// Records the nonce of evidence, durably, before the evidence is sent: the attestation
    /// result that comes back with a bundle must answer it.
    pub fn set_nonce(&mut self, nonce: &[u8]) -> Result<()> {
        if self.nonce() == Some(nonce) {
            return Ok(());
        }
        let mut next = self.file.clone();
        next.nonce = Some(nonce.to_vec());
        self.save(next)
    }

    /// Records the receipt of a change, durably, before it is sent.
    pub fn set_receipt(&mut self, receipt: JournalReceipt) -> Result<()> {
        let mut next = self.file.clone();
        next.receipt = Some(receipt);
        self.save(next)
    }

    fn save(&mut self, next: File) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| Error::Protocol(format!("agent journal: {e}")))?;
        protocol::fault::point("device.journal.before").map_err(|e| Error::Uicc(e.to_string()))?;
        uicc::store::write_atomic(&self.path, &bytes, &uicc::store::FaultPlan::default()).map_err(
            |f| Error::Io {
                what: format!("agent journal {} ({})", self.path.display(), f.step),
                source: f.source,
            },
        )?;
        self.file = next;
        Ok(())
    }
}

/// `Option<Vec<u8>>` as an optional hex string.
mod hex_option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_some(&hex::encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| hex::decode(text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn receipts_survive_reopening_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        let mut journal = Journal::open(&path).unwrap();
        assert_eq!(journal.receipt("c", 1), None);
        journal
            .set_receipt(JournalReceipt { campaign: "c".into(), sequence: 1, receipt: vec![1, 2] })
            .unwrap();
        let journal = Journal::open(&path).unwrap();
        assert_eq!(journal.receipt("c", 1), Some(&[1u8, 2][..]));
        assert_eq!(journal.receipt("c", 2), None);
        assert_eq!(journal.receipt("d", 1), None);
        let mut journal = journal;
        journal.set_campaign("c").unwrap();
        assert_eq!(Journal::open(&path).unwrap().campaign(), Some("c"));
        assert_eq!(Journal::open(&path).unwrap().receipt("c", 1), Some(&[1u8, 2][..]));
        std::fs::write(&path, b"{").unwrap();
        assert!(Journal::open(&path).is_err());
    }

    #[test]
    fn the_nonce_survives_reopening_and_old_journals_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        std::fs::write(
            &path,
            br#"{"format":"tresor-agent-journal","campaign":"c","receipt":null}"#,
        )
        .unwrap();
        let mut journal = Journal::open(&path).unwrap();
        assert_eq!((journal.campaign(), journal.nonce()), (Some("c"), None));
        journal.set_nonce(&[0xAB; 32]).unwrap();
        let journal = Journal::open(&path).unwrap();
        assert_eq!(journal.nonce(), Some(&[0xAB; 32][..]));
        assert_eq!(journal.campaign(), Some("c"));
    }
}
