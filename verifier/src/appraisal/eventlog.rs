//! Event log against the reference values (TCG PFP 1.05 §10.4): every event that extends a
//! PCR must be a reference event of the same PCR and event type with the same digest in every
//! bank the quote covers, and in every other bank both the event and the reference values
//! carry (the event type is not covered by the digest, so an event retyped keeps its digest
//! but no longer matches). A separator's data must hash to its digest. A reference event of a component must carry the
//! component's own event data (name and version, `protocol::image::component_of`), since
//! the data is not covered by the digest either. Then policy: required components measured,
//! versions (of the reference entry the digest matched, never of the unauthenticated data)
//! not below their minimums.

use protocol::eventlog::{EventLog, EventType};
use protocol::image::component_of;
use protocol::tpm::HashAlg;

use super::failures::Failures;
use crate::error::AppraisalError;
use crate::policy::{Severity, Version};
use crate::refvalues::ReferenceValues;

/// The evidence has no event log: nothing was measured, so every required component is
/// missing, and a policy with reference events cannot be met ([`AppraisalError::EventLogMissing`]
/// is reported by the PCR checks, which know whether the quoted PCRs are all pinned).
pub(super) fn check_absent(refs: &ReferenceValues, failures: &mut Failures) {
    for component in &refs.policy().required_components {
        failures.push(AppraisalError::RequiredComponentMissing { component: component.clone() });
    }
}

pub(super) fn check(
    log: &EventLog,
    quoted_banks: &[HashAlg],
    refs: &ReferenceValues,
    failures: &mut Failures,
) {
    let policy = refs.policy();
    let banks: Vec<HashAlg> =
        quoted_banks.iter().copied().filter(|b| policy.allows_bank(*b)).collect();
    let mut measured: Vec<(&str, &str)> = Vec::new();
    // Records are numbered as tpm2_eventlog numbers them: the Spec ID header of a
    // crypto-agile log is record 0.
    let first = u32::from(log.spec_id().is_some());
    for (index, event) in log.events().iter().enumerate() {
        let number = first.saturating_add(u32::try_from(index).unwrap_or(u32::MAX));
        if event.event_type == EventType::EV_NO_ACTION || banks.is_empty() {
            continue;
        }
        let mut candidates: Option<Vec<usize>> = None;
        let mut failure = None;
        // The quoted banks must be there and match; other banks the event carries must
        // match too where the reference values record them (the quote does not vouch for
        // them, but a log that lies about them is not the device's).
        let extra = event
            .digests
            .iter()
            .filter_map(|d| d.alg().map(|b| (b, d.digest.as_slice())))
            .filter(|(b, _)| !banks.contains(b) && refs.records_bank(*b));
        let required = banks.iter().map(|&bank| (bank, event.digest(bank)));
        for (bank, digest) in required.chain(extra.map(|(b, d)| (b, Some(d)))) {
            let Some(digest) = digest else {
                failure = Some(AppraisalError::EventMissingDigest {
                    pcr: event.pcr,
                    event_type: event.event_type,
                    bank,
                });
                break;
            };
            let matching: Vec<usize> = refs
                .lookup(bank, digest)
                .iter()
                .copied()
                .filter(|i| {
                    refs.event(*i)
                        .is_some_and(|r| r.pcr == event.pcr && r.event_type == event.event_type)
                })
                .filter(|i| candidates.as_ref().is_none_or(|c| c.contains(i)))
                .collect();
            if matching.is_empty() {
                failure = Some(AppraisalError::EventNotInReferenceValues {
                    pcr: event.pcr,
                    event_type: event.event_type,
                    bank,
                    digest: digest.to_vec(),
                });
                break;
            }
            candidates = Some(matching);
        }
        // A separator's digest is the digest of its data (PFP 1.05 §10.4.1): data that says
        // otherwise (0x00000001 is the error separator) contradicts the measurement.
        if failure.is_none()
            && event.event_type == EventType::EV_SEPARATOR
            && banks.iter().any(|b| event.digest(*b) != Some(b.digest(&event.data).as_slice()))
        {
            failure = Some(AppraisalError::EventDataMismatch {
                pcr: event.pcr,
                component: "EV_SEPARATOR".into(),
            });
        }
        if let Some(f) = failure {
            failures.push_at_event(f, number);
            continue;
        }
        let Some(entry) = candidates.and_then(|c| c.first().copied()).and_then(|i| refs.event(i))
        else {
            continue;
        };
        if let Some((name, version)) = &entry.component {
            if component_of(event.event_type, &event.data)
                == Some((name.as_str(), version.as_str()))
            {
                measured.push((name, version));
            } else {
                failures.push_at_event(
                    AppraisalError::EventDataMismatch { pcr: event.pcr, component: name.clone() },
                    number,
                );
            }
        }
    }
    for component in &policy.required_components {
        if !measured.iter().any(|(n, _)| n == component) {
            failures
                .push(AppraisalError::RequiredComponentMissing { component: component.clone() });
        }
    }
    for (name, version) in measured {
        let Some(minimum) = policy.minimum_versions.get(name) else { continue };
        let below = Version::parse(version).map_or(true, |v| v < *minimum);
        if below {
            failures.push(AppraisalError::ComponentBelowMinimumVersion {
                component: name.to_owned(),
                version: version.to_owned(),
                minimum: minimum.to_string(),
                warning: policy.below_minimum_version == Severity::Warning,
            });
        }
    }
}
