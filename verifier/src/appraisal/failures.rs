//! The failures of an appraisal as the checks report them, and where each happened: the
//! [`AppraisalError`] (which names the PCR, bank, event type or component it is about) and,
//! for a check of one event-log record, that record's number. Together they make the EAR's
//! failure details (`protocol::ear::FailureDetail`, `docs/ear.md`) and the PVA's log line.
//! Only indices and names go into a detail: no digest, no event data, nothing secret.

use protocol::ear::FailureDetail;

use crate::error::AppraisalError;

/// What the checks of stage 3 collect, in the order they ran.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    errors: Vec<AppraisalError>,
    /// The event-log record of each error, as `tpm2_eventlog` numbers it.
    events: Vec<Option<u32>>,
}

impl Failures {
    pub(crate) fn push(&mut self, error: AppraisalError) {
        self.errors.push(error);
        self.events.push(None);
    }

    /// A failure of the check of record `event`.
    pub(crate) fn push_at_event(&mut self, error: AppraisalError, event: u32) {
        self.errors.push(error);
        self.events.push(Some(event));
    }

    #[cfg(test)]
    pub(crate) fn errors(&self) -> &[AppraisalError] {
        &self.errors
    }

    /// The errors and their details, in the same order.
    pub(crate) fn into_parts(self) -> (Vec<AppraisalError>, Vec<FailureDetail>) {
        let details = self.errors.iter().zip(&self.events).map(|(e, n)| detail_of(e, *n)).collect();
        (self.errors, details)
    }
}

/// The detail of `error`: its check's name and whatever the error names of PCR, bank, event
/// type and component, with the record number when the check knows it.
pub fn detail_of(error: &AppraisalError, event: Option<u32>) -> FailureDetail {
    use AppraisalError as E;
    let mut d = FailureDetail::new(error.slug());
    d.event = event;
    match error {
        E::BankNotAllowed { bank } | E::EventLogMissingBank { bank } => {
            d.bank = Some(bank.to_string());
        }
        E::Sha1BankRefused => d.bank = Some("sha1".into()),
        E::PolicyPcrNotQuoted { bank, pcr }
        | E::PcrNotReferenceValue { bank, pcr }
        | E::EventLogNotPcrValue { bank, pcr } => {
            d.bank = Some(bank.to_string());
            d.pcr = Some(u32::from(*pcr));
        }
        E::PcrSelectionInvalid { pcr } => d.pcr = Some(u32::from(*pcr)),
        E::EventMissingDigest { pcr, event_type, bank }
        | E::EventNotInReferenceValues { pcr, event_type, bank, .. } => {
            d.pcr = Some(*pcr);
            d.event_type = Some(event_type.0);
            d.bank = Some(bank.to_string());
        }
        E::EventDataMismatch { pcr, component } => {
            d.pcr = Some(*pcr);
            d.component = Some(component.clone());
        }
        E::RequiredComponentMissing { component }
        | E::ComponentBelowMinimumVersion { component, .. } => {
            d.component = Some(component.clone());
        }
        _ => {}
    }
    d
}

#[cfg(test)]
mod tests {
    use protocol::eventlog::EventType;
    use protocol::tpm::HashAlg;

    use super::*;

    #[test]
    fn details_name_the_pcr_bank_event_and_component() {
        let mut f = Failures::default();
        f.push(AppraisalError::PcrNotReferenceValue { bank: HashAlg::Sha256, pcr: 9 });
        f.push_at_event(
            AppraisalError::EventNotInReferenceValues {
                pcr: 4,
                event_type: EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
                bank: HashAlg::Sha384,
                digest: vec![0xAB; 48],
            },
            7,
        );
        f.push(AppraisalError::ComponentBelowMinimumVersion {
            component: "os".into(),
            version: "1".into(),
            minimum: "2".into(),
            warning: true,
        });
        f.push(AppraisalError::ClockNotSafe);
        let (errors, details) = f.into_parts();
        assert_eq!(errors.len(), 4);
        assert_eq!(details[0].to_string(), "pcr-not-reference-value (sha256 PCR 9)");
        assert_eq!(
            details[1].to_string(),
            "event-not-in-reference-values (sha384 PCR 4, event 7 EV_EFI_BOOT_SERVICES_APPLICATION)"
        );
        assert_eq!(details[1].event_type, Some(0x8000_0003));
        assert_eq!(details[2].to_string(), "component-below-minimum-version (component os)");
        assert_eq!(details[3], FailureDetail::new("clock-not-safe"));
        // The digest of the unknown event is not part of the detail.
        assert!(!format!("{:?}", details[1]).to_lowercase().contains("abab"));
    }
}
