//! EKs admitted without a certificate (issue 13; as Keylime's EK check admits TPMs whose
//! vendor issued none): a configured list of EK names — the device ids, `tpm2_readpublic
//! -c ek -n` in hex — whose holders may enrol with no EK certificate at all. Never silent:
//! each such enrolment is logged at warn with the EK's name. A certificate that is presented
//! is always verified, listed or not; an unlisted EK without one is refused as before.
//!
//! The file: one hex name per line; blank lines and `#` comments are ignored.

use std::collections::BTreeSet;
use std::path::Path;

use protocol::DeviceId;

use crate::error::Error;

/// The EK names admitted without a certificate.
#[derive(Clone, Debug, Default)]
pub struct EkAllowList(BTreeSet<DeviceId>);

impl EkAllowList {
    /// Parses the list; a line that is not an EK name is an error naming it.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut names = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let name: DeviceId = line.parse().map_err(|e| {
                Error::Config(format!(
                    "EK allow-list line {}: {line:?} is not an EK name: {e}",
                    n + 1
                ))
            })?;
            names.insert(name);
        }
        Ok(Self(names))
    }

    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("EK allow-list {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    pub fn admits(&self, ek_name: &DeviceId) -> bool {
        self.0.contains(ek_name)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_comments_and_bad_lines() {
        let name = format!("000b{}", "ab".repeat(32));
        let list = EkAllowList::parse(&format!("# lab TPMs\n\n{name}  # rack 3\n")).unwrap();
        assert_eq!(list.len(), 1);
        assert!(list.admits(&name.parse().unwrap()));
        assert!(!list.admits(&format!("000b{}", "cd".repeat(32)).parse().unwrap()));
        let e = EkAllowList::parse("000b00\nnot hex\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
