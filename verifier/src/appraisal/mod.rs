//! Appraisal of TPM evidence (DESIGN.md §3 "Appraisal"; `docs/appraisal.md` lists every
//! check with its error and the attack it stops). Two stages, kept apart so that nothing
//! about the evidence is written before it is known to be authentic:
//!
//! 1. [`authenticate`]: decoding and authenticity, pure, no state. The enrolled AK (never the
//!    one in the evidence) must have signed the quote and the bundle key's certification
//!    (when the evidence has one), both TPM-generated, of the right types, qualified with the
//!    same 32-byte nonce; the event log (when not empty) must parse and replay; PCR values
//!    presented with the quote must be exactly the quoted ones, of their banks' sizes. A
//!    failure here is refused with no EAR.
//! 2. (the caller consumes the nonce, atomically raising the device's clock mark)
//! 3. [`evaluate`]: integrity and policy against the reference values. Every check runs and
//!    every failure is collected; each degrades one AR4SI trustworthiness claim, and the
//!    EAR's status is the worst tier of the resulting vector.
//!
//! Layout: [`quote`], [`bundle_key`], [`pcrs`], [`eventlog`], [`clock`]: one module per check
//! family; [`failures`]: what they collect, and where each failure happened (the EAR's
//! failure details).

mod bundle_key;
pub(crate) mod clock;
mod eventlog;
mod failures;
mod pcrs;
mod quote;

pub use bundle_key::{forbidden as bundle_key_forbidden, required as bundle_key_required};
pub use failures::detail_of;

use protocol::ear::{Claim, FailureDetail, TrustTier, TrustVector, value};
use protocol::eventlog::{EventLog, PcrBanks};
use protocol::evidence::Evidence;
use protocol::tpm::{Attest, HashAlg, PcrValues, Public, QuoteInfo};
use protocol::{DeviceId, Nonce};

use crate::enrol::EnrolledDevice;
use crate::error::{AppraisalError, Outcome};
use crate::policy::BundleKeyPolicy;
use crate::refvalues::ReferenceValues;
use crate::store::ClockMark;

/// Evidence whose every authenticity check passed.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub device_id: DeviceId,
    pub nonce: Nonce,
    pub quote: Attest,
    /// The hash of the quote's signature, which is the hash of its PCR digest.
    pub quote_hash: HashAlg,
    /// The bundle key and its certification, if the evidence has them.
    pub bundle_key: Option<(Attest, Public)>,
    /// `None`: the evidence's event log is empty (a TPM without one).
    pub event_log: Option<EventLog>,
    /// The replay of `event_log`.
    pub replayed: Option<PcrBanks>,
    /// The PCR values presented with the quote, exactly its selection.
    pub pcr_values: Option<PcrValues>,
    pub rollback_counter: u64,
}

impl Authenticated {
    pub fn quote_info(&self) -> Option<&QuoteInfo> {
        self.quote.quote()
    }

    /// The TPM clock state the quote reports.
    pub fn clock_mark(&self) -> ClockMark {
        clock::mark_of(&self.quote)
    }
}

/// Stage 1. `device` is the enrolment of `evidence.device_id`.
pub fn authenticate(
    evidence: &Evidence,
    device: &EnrolledDevice,
) -> Result<Authenticated, AppraisalError> {
    if evidence.device_id != device.device_id {
        return Err(AppraisalError::UnknownDevice(evidence.device_id.clone()));
    }
    if evidence.ak_public.as_slice() != device.ak_public_bytes.as_slice() {
        return Err(AppraisalError::AkNotEnrolled(device.device_id.clone()));
    }
    if evidence.ek_certificate.as_slice() != device.ek_certificate.as_slice() {
        return Err(AppraisalError::EkCertificateNotEnrolled(device.device_id.clone()));
    }
    let (quote, quote_hash, nonce) = quote::authenticate(&evidence.quote, &device.ak)?;
    let bundle_key = evidence
        .bundle_key
        .as_ref()
        .map(|b| bundle_key::authenticate(b, &device.ak, &nonce))
        .transpose()?;
    let (event_log, replayed) = if evidence.event_log.is_empty() {
        (None, None)
    } else {
        let log =
            EventLog::parse(&evidence.event_log).map_err(AppraisalError::EventLogMalformed)?;
        let replayed = log.replay().map_err(AppraisalError::EventLogMalformed)?;
        (Some(log), Some(replayed))
    };
    let pcr_values = evidence
        .pcr_values
        .as_ref()
        .map(|presented| pcrs::presented_values(presented, &quote))
        .transpose()?;
    Ok(Authenticated {
        device_id: device.device_id.clone(),
        nonce,
        quote,
        quote_hash,
        bundle_key,
        event_log,
        replayed,
        pcr_values,
        rollback_counter: evidence.rollback_counter,
    })
}

/// What stage 3 found.
#[derive(Debug, Clone)]
pub struct Findings {
    /// Every failed check, in the order the checks ran.
    pub failures: Vec<AppraisalError>,
    /// Where each failure happened (PCR, bank, event, component), in the same order.
    pub details: Vec<FailureDetail>,
    pub vector: TrustVector,
}

impl Findings {
    pub fn status(&self) -> TrustTier {
        self.vector.worst_tier()
    }
}

/// Stage 3: every integrity and policy check of authenticated evidence.
pub fn evaluate(
    auth: &Authenticated,
    refs: &ReferenceValues,
    previous_clock: Option<ClockMark>,
) -> Findings {
    let mut failures = failures::Failures::default();
    if let Some(info) = auth.quote_info() {
        pcrs::check_selection(&info.pcr_select, refs.policy(), &mut failures);
        let values = pcrs::Values {
            presented: auth.pcr_values.as_ref(),
            replayed: auth.replayed.as_ref(),
            refs,
        };
        pcrs::check_digest(info, auth.quote_hash, &values, &mut failures);
        let mut banks: Vec<HashAlg> = info.pcr_select.banks().iter().map(|b| b.hash()).collect();
        banks.sort();
        banks.dedup();
        match &auth.event_log {
            Some(log) => eventlog::check(log, &banks, refs, &mut failures),
            None => eventlog::check_absent(refs, &mut failures),
        }
        pcrs::check_reference(&values, &mut failures);
    }
    let certify = auth.bundle_key.as_ref().map(|(certify, _)| certify);
    clock::check(&auth.quote, certify, previous_clock, &mut failures);
    match (refs.policy().bundle_key, &auth.bundle_key) {
        (BundleKeyPolicy::Required, Some((_, key))) => {
            bundle_key::check(key, refs, &mut failures);
        }
        (BundleKeyPolicy::Required, None) => failures.push(AppraisalError::BundleKeyMissing),
        (BundleKeyPolicy::None, Some(_)) => failures.push(AppraisalError::BundleKeyNotExpected),
        (BundleKeyPolicy::None, None) => {}
    }
    let (failures, details) = failures.into_parts();
    let vector = vector_of(&failures, refs.policy().bundle_key);
    Findings { failures, details, vector }
}

/// The event-log checks of stage 3 alone, for a log no quote covers: a golden log, or a
/// foreign one, against reference values derived from another (`tresor eventlog
/// refvalues`). The log is replayed as [`authenticate`] does, then checked as [`evaluate`]
/// checks a quoted one ([`eventlog`], then [`pcrs`]'s comparison with the prediction), as
/// if the quote selected exactly the policy's banks. Without a quote this says only that
/// the log describes the reference boot, not that any TPM holds it.
pub fn evaluate_event_log(
    log: &EventLog,
    refs: &ReferenceValues,
) -> Result<Vec<AppraisalError>, AppraisalError> {
    let replayed = log.replay().map_err(AppraisalError::EventLogMalformed)?;
    let mut banks: Vec<HashAlg> =
        refs.policy().selection.banks().iter().map(|b| b.hash()).collect();
    banks.sort();
    banks.dedup();
    let mut failures = failures::Failures::default();
    eventlog::check(log, &banks, refs, &mut failures);
    let values = pcrs::Values { presented: None, replayed: Some(&replayed), refs };
    pcrs::check_reference(&values, &mut failures);
    Ok(failures.into_parts().0)
}

/// The trustworthiness vector of an appraisal that passed authentication: every claim tresor
/// assesses starts at its affirming value, and each failure lowers its claim to the failure's
/// value if that is worse. Storage-opaque is assessed only when the policy appraises a
/// bundle key: an attestation-only appraisal (`BundleKeyPolicy::None`) says nothing about
/// keys, and AR4SI reads an absent claim as not assessed.
pub fn vector_of(failures: &[AppraisalError], bundle_key: BundleKeyPolicy) -> TrustVector {
    let mut v = TrustVector::new();
    v.set(Claim::InstanceIdentity, value::RECOGNIZED_INSTANCE)
        .set(Claim::Configuration, value::APPROVED_CONFIG)
        .set(Claim::Executables, value::APPROVED_BOOT)
        .set(Claim::Hardware, value::GENUINE_HARDWARE);
    if bundle_key == BundleKeyPolicy::Required {
        v.set(Claim::StorageOpaque, value::HW_KEYS_ENCRYPTED_SECRETS);
    }
    for failure in failures {
        if let Outcome::Degrades { claim, value } = failure.outcome() {
            let worse = v
                .get(claim)
                .is_none_or(|current| TrustTier::of_claim(value) > TrustTier::of_claim(current));
            if worse {
                v.set(claim, value);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_starts_affirming_and_takes_the_worst_value_per_claim() {
        let vector_of = |f: &[AppraisalError]| vector_of(f, BundleKeyPolicy::Required);
        let v = vector_of(&[]);
        assert_eq!(v.worst_tier(), TrustTier::Affirming);
        let below = |warning| AppraisalError::ComponentBelowMinimumVersion {
            component: "os".into(),
            version: "1".into(),
            minimum: "2".into(),
            warning,
        };
        assert_eq!(vector_of(&[below(true)]).worst_tier(), TrustTier::Warning);
        assert_eq!(vector_of(&[below(false)]).worst_tier(), TrustTier::Contraindicated);
        let v = vector_of(&[AppraisalError::PcrDigestMismatch, below(true)]);
        assert_eq!(v.get(Claim::Executables), Some(value::CONTRAINDICATED_RUNTIME));
        let v = vector_of(&[AppraisalError::ClockNotSafe]);
        assert_eq!(v.get(Claim::Hardware), Some(value::CONTRAINDICATED_HARDWARE));
        assert_eq!(v.get(Claim::Executables), Some(value::APPROVED_BOOT));
        // Refusals never reach a vector, and leave it unchanged if passed.
        assert_eq!(vector_of(&[AppraisalError::NonceReused]), vector_of(&[]));
    }

    #[test]
    fn attestation_only_vectors_leave_storage_opaque_unassessed() {
        let v = super::vector_of(&[], BundleKeyPolicy::None);
        assert_eq!(v.get(Claim::StorageOpaque), None);
        assert_eq!(v.worst_tier(), TrustTier::Affirming);
        let v = super::vector_of(&[AppraisalError::BundleKeyNotExpected], BundleKeyPolicy::None);
        assert_eq!(v.get(Claim::Configuration), Some(value::UNSUPPORTABLE_CONFIG));
        assert_eq!(v.worst_tier(), TrustTier::Contraindicated);
        let v = super::vector_of(&[AppraisalError::BundleKeyMissing], BundleKeyPolicy::Required);
        assert_eq!(v.get(Claim::StorageOpaque), Some(value::UNENCRYPTED_SECRETS));
        assert_eq!(v.worst_tier(), TrustTier::Contraindicated);
    }
}
