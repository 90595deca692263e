//! PCR selection and values (TPM 2.0 Part 2 §10.12.4 TPMS_QUOTE_INFO): the quote may only
//! select banks the policy allows (SHA-1 refused unless listed), must cover every PCR of
//! the policy selection, and its PCR digest must be the digest (with the signature's hash)
//! of the PCR values obtained by replaying the event log (TCG PFP 1.05 §10.2). Then the
//! replayed values of the policy selection must be the ones the reference values predict:
//! an event log whose every event is known can still describe a boot in another order, or
//! with a component measured twice.

use protocol::eventlog::PcrBanks;
use protocol::tpm::{HashAlg, PcrSelection, QuoteInfo};

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

/// The quote's PCR digest against the replayed event log: is the log the TPM's history?
pub(super) fn check_digest(
    quote: &QuoteInfo,
    digest_hash: HashAlg,
    replayed: &PcrBanks,
    failures: &mut Failures,
) {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(quote.pcr_select.count());
    let mut complete = true;
    let mut missing: Vec<HashAlg> = Vec::new();
    for (bank, pcr) in quote.pcr_select.iter() {
        match replayed.bank(bank) {
            None => {
                complete = false;
                if !missing.contains(&bank) {
                    missing.push(bank);
                    failures.push(AppraisalError::EventLogMissingBank { bank });
                }
            }
            Some(values) => match values.value(u32::from(pcr)) {
                Some(v) => parts.push(v),
                // PCR ≥ 24: reported by check_selection.
                None => complete = false,
            },
        }
    }
    if complete && digest_hash.digest_parts(&parts) != quote.pcr_digest.as_bytes() {
        failures.push(AppraisalError::PcrDigestMismatch);
    }
}

/// The replayed values of the policy selection against the reference prediction.
pub(super) fn check_reference(
    replayed: &PcrBanks,
    refs: &ReferenceValues,
    failures: &mut Failures,
) {
    for (bank, pcr) in refs.policy().selection.iter() {
        let (Some(value), Some(predicted)) =
            (replayed.value(bank, u32::from(pcr)), refs.predicted(bank, pcr))
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
