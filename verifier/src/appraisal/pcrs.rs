//! PCR selection and values (TPM 2.0 Part 2 §10.12.4 TPMS_QUOTE_INFO): the quote may only
//! select banks the policy allows (SHA-1 refused unless listed), must cover every PCR of
//! the policy selection, and its PCR digest must be the digest (with the signature's hash)
//! of the PCR values obtained by replaying the event log (TCG PFP 1.05 §10.2). Then the
//! replayed values of the policy selection must be the ones the reference values predict:
//! an event log whose every event is known can still describe a boot in another order, or
//! with a component measured twice.
//!
//! A PCR the reference values pin without events (`pcr_values`, as Keylime's `tpm_policy`)
//! is appraised by value: its value is the one presented with the quote (TPM2_PCR_Read,
//! bound by the quote's digest), or the pinned one itself when none is presented, and the
//! event log need not explain it. When every PCR of the policy selection is pinned, the
//! evidence may come without an event log (a plain TPM, swtpm); otherwise it is required.

use std::collections::BTreeMap;

use protocol::eventlog::PcrBanks;
use protocol::tpm::{Attest, HashAlg, PcrSelection, PcrValues, QuoteInfo};
use serde_bytes::ByteBuf;

use super::failures::Failures;
use crate::error::AppraisalError;
use crate::policy::Policy;
use crate::refvalues::ReferenceValues;

pub(super) fn check_selection(selection: &PcrSelection, policy: &Policy, failures: &mut Failures) {
    let mut reported: Vec<HashAlg> = Vec::new();
    for bank in selection.banks() {
        let hash = bank.hash();
        if policy.allows_bank(hash) || reported.contains(&hash) {
            continue;
        }
        reported.push(hash);
        failures.push(if hash == HashAlg::Sha1 {
            AppraisalError::Sha1BankRefused
        } else {
            AppraisalError::BankNotAllowed { bank: hash }
        });
    }
    if let Some((_, pcr)) = selection.iter().find(|(_, pcr)| *pcr >= 24) {
        failures.push(AppraisalError::PcrSelectionInvalid { pcr });
    }
    for (bank, pcr) in policy.selection.iter() {
        if !selection.contains(bank, pcr) {
            failures.push(AppraisalError::PolicyPcrNotQuoted { bank, pcr });
        }
    }
}

/// Where the value of a quoted PCR comes from: the values presented with the quote
/// (TPM2_PCR_Read, authenticated only through the quote's digest), else the pinned value
/// of a PCR the reference values appraise by value, else the event log's replay.
pub(super) struct Values<'a> {
    pub(super) presented: Option<&'a PcrValues>,
    pub(super) replayed: Option<&'a PcrBanks>,
    pub(super) refs: &'a ReferenceValues,
}

impl Values<'_> {
    fn value(&self, bank: HashAlg, pcr: u8) -> Option<&[u8]> {
        if let Some(presented) = self.presented {
            return presented.get(bank, pcr);
        }
        self.refs
            .pinned_only(bank, pcr)
            .or_else(|| self.replayed.and_then(|r| r.value(bank, u32::from(pcr))))
    }
}

/// The PCR values presented with the quote, checked: exactly the quote's selection, each of
/// its bank's size. Anything else is refused: they are what the PCR digest is checked over.
pub(super) fn presented_values(
    presented: &BTreeMap<HashAlg, BTreeMap<u8, ByteBuf>>,
    quote: &Attest,
) -> Result<PcrValues, AppraisalError> {
    let bad = |m: String| AppraisalError::PcrValuesMalformed(m);
    let selection =
        &quote.quote().ok_or_else(|| bad("the quote has no PCR selection".into()))?.pcr_select;
    let mut values = PcrValues::new();
    for (bank, pcrs) in presented {
        for (pcr, value) in pcrs {
            if !selection.contains(*bank, *pcr) {
                return Err(bad(format!("{bank} PCR {pcr} is not quoted")));
            }
            values.insert(*bank, *pcr, value.to_vec()).map_err(|e| bad(e.to_string()))?;
        }
    }
    if let Some((bank, pcr)) = selection.iter().find(|(b, p)| values.get(*b, *p).is_none()) {
        return Err(bad(format!("{bank} PCR {pcr} is quoted but its value is not given")));
    }
    Ok(values)
}

/// The quote's PCR digest against the PCR values ([`Values`]), and the event log against
/// the quote: every quoted PCR that the reference values do not pin must be explained by the
/// log (its replay is the value presented, or, without presented values, the value the
/// digest is computed over).
pub(super) fn check_digest(
    quote: &QuoteInfo,
    digest_hash: HashAlg,
    values: &Values<'_>,
    failures: &mut Failures,
) {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(quote.pcr_select.count());
    let mut complete = true;
    let mut missing: Vec<HashAlg> = Vec::new();
    let mut log_missing = values.replayed.is_none() && values.refs.needs_event_log();
    for (bank, pcr) in quote.pcr_select.iter() {
        if values.refs.pinned_only(bank, pcr).is_none() {
            match values.replayed.map(|r| r.bank(bank)) {
                // No log: unexplained unless presented and outside what the policy appraises.
                None => log_missing |= values.presented.is_none(),
                Some(None) => {
                    if !missing.contains(&bank) {
                        missing.push(bank);
                        failures.push(AppraisalError::EventLogMissingBank { bank });
                    }
                }
                Some(Some(replayed)) => {
                    let presented = values.presented.and_then(|p| p.get(bank, pcr));
                    let logged = replayed.value(u32::from(pcr));
                    if presented.is_some() && logged.is_some() && presented != logged {
                        failures.push(AppraisalError::EventLogNotPcrValue { bank, pcr });
                    }
                }
            }
        }
        match values.value(bank, pcr) {
            Some(v) => parts.push(v),
            // No log, or a PCR ≥ 24 (reported by check_selection).
            None => complete = false,
        }
    }
    if log_missing {
        failures.push(AppraisalError::EventLogMissing);
    }
    if complete && digest_hash.digest_parts(&parts) != quote.pcr_digest.as_bytes() {
        failures.push(AppraisalError::PcrDigestMismatch);
    }
}

/// The values of the policy selection against the reference prediction (for a pinned PCR,
/// its pinned value).
pub(super) fn check_reference(values: &Values<'_>, failures: &mut Failures) {
    for (bank, pcr) in values.refs.policy().selection.iter() {
        let (Some(value), Some(predicted)) =
            (values.value(bank, pcr), values.refs.predicted(bank, pcr))
        else {
            continue;
        };
        if value != predicted {
            failures.push(AppraisalError::PcrNotReferenceValue { bank, pcr });
        }
    }
}

#[cfg(test)]
mod tests {
    use protocol::tpm::Unmarshal;

    use super::*;

    #[test]
    fn selections_beyond_pcr_23_are_invalid() {
        // A conforming TPM has 24 PCRs and cannot quote more; a TPMS_PCR_SELECTION with
        // sizeofSelect 4 can still name PCR 31 (TPM 2.0 Part 2 §10.6.2).
        let selection =
            PcrSelection::from_bytes(&hex::decode("00000001000b0401000080").unwrap()).unwrap();
        let text = crate::refvalues::derive(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/image"),
            &[HashAlg::Sha256],
        )
        .unwrap();
        let refs = ReferenceValues::parse(&text).unwrap();
        let mut failures = Failures::default();
        check_selection(&selection, refs.policy(), &mut failures);
        assert!(
            failures.errors().contains(&AppraisalError::PcrSelectionInvalid { pcr: 31 }),
            "{failures:?}"
        );
    }
}
