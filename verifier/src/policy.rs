//! The appraisal policy: which PCRs a quote must cover and the bundle key must be bound to,
//! which PCR banks are acceptable (SHA-1 only when listed), which components must have been
//! measured, their minimum versions, whether the evidence must certify a bundle key (the
//! subscription change) or must not (plain attestation), and how long an EAR is valid. It is the `[policy]`
//! table of a reference-values file (`docs/reference-values.md`); policy can only add
//! restrictions: every check of `docs/appraisal.md` runs whatever it says.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use protocol::tpm::{HashAlg, PcrSelection};
use serde::Deserialize;

use crate::refvalues::RefValuesError;

/// Longest EAR validity a policy may ask for: an EAR is a fresh statement, not a credential.
pub const MAX_EAR_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// EAR validity when the policy does not say.
pub const DEFAULT_EAR_VALIDITY: Duration = Duration::from_secs(300);

/// The verdict on a known component whose version is below the policy's minimum.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// AR4SI executables 32 "unsafe_rt": recognised, with known vulnerabilities.
    Warning,
    /// AR4SI executables 96 "contraindicated_rt".
    #[default]
    Contraindicated,
}

/// Whether an appraisal needs a certified bundle key (`[policy] bundle_key`).
///
/// Both ways fail closed: `required` refuses evidence without one (`BundleKeyMissing`);
/// `none` refuses evidence with one (`BundleKeyNotExpected`), since an EAR that left the
/// key out without saying so could be taken for one that had appraised it, and one that
/// carried it would certify a key no check looked at. An EAR of a `none` policy carries no
/// bundle-key claim and no storage-opaque claim, so no relying party can release a bundle
/// on it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleKeyPolicy {
    /// The evidence must certify a bundle key, which is appraised and named in the EAR.
    #[default]
    Required,
    /// Attestation only: the evidence must not carry a bundle key.
    None,
}

/// The `[policy]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pcr_selection: String,
    banks: Vec<HashAlg>,
    #[serde(default)]
    required_components: Vec<String>,
    #[serde(default)]
    minimum_versions: BTreeMap<String, String>,
    #[serde(default)]
    below_minimum_version: Severity,
    #[serde(default)]
    ear_validity_seconds: Option<u64>,
    #[serde(default)]
    bundle_key: BundleKeyPolicy,
}

/// A checked policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// What the quote must cover and what the bundle key's PolicyPCR is computed over.
    pub selection: PcrSelection,
    /// Banks a quote may select. SHA-1 appears only if the policy lists it.
    pub banks: Vec<HashAlg>,
    pub required_components: Vec<String>,
    pub minimum_versions: BTreeMap<String, Version>,
    pub below_minimum_version: Severity,
    pub ear_validity: Duration,
    pub bundle_key: BundleKeyPolicy,
}

impl Policy {
    pub(crate) fn from_raw(raw: RawPolicy) -> Result<Self, RefValuesError> {
        let bad = |reason: String| RefValuesError::Policy(reason);
        let selection: PcrSelection =
            raw.pcr_selection.parse().map_err(|e| bad(format!("pcr_selection: {e}")))?;
        if selection.count() == 0 {
            return Err(bad("pcr_selection selects no PCR".into()));
        }
        if raw.banks.is_empty() {
            return Err(bad("banks is empty".into()));
        }
        for (i, bank) in raw.banks.iter().enumerate() {
            if raw.banks.iter().skip(i + 1).any(|b| b == bank) {
                return Err(bad(format!("bank {bank} listed twice")));
            }
        }
        for bank in selection.banks() {
            if !raw.banks.contains(&bank.hash()) {
                return Err(bad(format!("pcr_selection uses bank {}, not in banks", bank.hash())));
            }
        }
        let mut minimum_versions = BTreeMap::new();
        for (component, minimum) in raw.minimum_versions {
            let version = Version::parse(&minimum)
                .map_err(|e| bad(format!("minimum version of {component}: {e}")))?;
            minimum_versions.insert(component, version);
        }
        let ear_validity = match raw.ear_validity_seconds {
            None => DEFAULT_EAR_VALIDITY,
            Some(0) => return Err(bad("ear_validity_seconds must be positive".into())),
            Some(s) if Duration::from_secs(s) > MAX_EAR_VALIDITY => {
                return Err(bad(format!(
                    "ear_validity_seconds exceeds {}",
                    MAX_EAR_VALIDITY.as_secs()
                )));
            }
            Some(s) => Duration::from_secs(s),
        };
        Ok(Self {
            selection,
            banks: raw.banks,
            required_components: raw.required_components,
            minimum_versions,
            below_minimum_version: raw.below_minimum_version,
            ear_validity,
            bundle_key: raw.bundle_key,
        })
    }

    pub fn allows_bank(&self, bank: HashAlg) -> bool {
        self.banks.contains(&bank)
    }
}

/// A component version compared numerically by dotted components: `6.1.55-m2me` has the
/// components `6`, `1`, `55-m2me`. Two components compare by their leading decimal numbers
/// (absent counts as 0), then by the rest as text; a missing trailing component counts as
/// `0`, so `1.4` = `1.4.0` < `1.4.2` < `1.10`.
#[derive(Clone, Debug)]
pub struct Version {
    text: String,
    parts: Vec<(u64, String)>,
}

/// Longest version accepted.
const MAX_VERSION_LEN: usize = 64;

impl Version {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > MAX_VERSION_LEN {
            return Err(format!("{text:?} is not 1 to {MAX_VERSION_LEN} characters"));
        }
        let mut parts = Vec::new();
        for part in text.split('.') {
            let digits = part.bytes().take_while(u8::is_ascii_digit).count();
            let (num, rest) = part.split_at(digits);
            let num = if num.is_empty() {
                0
            } else {
                num.parse::<u64>()
                    .map_err(|_| format!("{text:?}: component {part:?} is too large"))?
            };
            parts.push((num, rest.to_owned()));
        }
        Ok(Self { text: text.to_owned(), parts })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let zero = (0u64, String::new());
        let len = self.parts.len().max(other.parts.len());
        for i in 0..len {
            let a = self.parts.get(i).unwrap_or(&zero);
            let b = other.parts.get(i).unwrap_or(&zero);
            match a.cmp(b) {
                Ordering::Equal => continue,
                unequal => return unequal,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_compare_numerically_by_component() {
        assert!(v("1.10") > v("1.9"));
        assert!(v("1.4") == v("1.4.0"));
        assert!(v("1.4.2") > v("1.4"));
        assert!(v("6.1.55-m2me") > v("6.1.9"));
        assert!(v("6.1.55-m2me") > v("6.1.55"));
        assert!(v("11.2.7") > v("2.99.99"));
        assert!(v("3") < v("10"));
        assert!(v("2025.1") > v("2024.12"));
        assert!(Version::parse("").is_err());
        assert!(Version::parse("99999999999999999999999").is_err());
        assert!(Version::parse(&"1.".repeat(40)).is_err());
    }

    fn raw(selection: &str, banks: &[HashAlg]) -> RawPolicy {
        RawPolicy {
            pcr_selection: selection.into(),
            banks: banks.to_vec(),
            required_components: vec![],
            minimum_versions: BTreeMap::new(),
            below_minimum_version: Severity::default(),
            ear_validity_seconds: None,
            bundle_key: BundleKeyPolicy::default(),
        }
    }

    #[test]
    fn policy_checks_itself() {
        assert!(Policy::from_raw(raw("sha256:0,4", &[HashAlg::Sha256])).is_ok());
        assert!(Policy::from_raw(raw("sha1:0", &[HashAlg::Sha256])).is_err());
        assert!(Policy::from_raw(raw("sha256:0", &[])).is_err());
        assert!(Policy::from_raw(raw("sha256:none", &[HashAlg::Sha256])).is_err());
        assert!(Policy::from_raw(raw("sha256:0", &[HashAlg::Sha256, HashAlg::Sha256])).is_err());
        let mut r = raw("sha256:0", &[HashAlg::Sha256]);
        r.ear_validity_seconds = Some(0);
        assert!(Policy::from_raw(r).is_err());
        let mut r = raw("sha256:0", &[HashAlg::Sha256]);
        r.ear_validity_seconds = Some(100_000);
        assert!(Policy::from_raw(r).is_err());
        assert_eq!(Severity::default(), Severity::Contraindicated);
        // Existing files keep their meaning: a bundle key is required unless they say not.
        assert_eq!(BundleKeyPolicy::default(), BundleKeyPolicy::Required);
    }
}
