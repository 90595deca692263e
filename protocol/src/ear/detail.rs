//! tresor's failure details (private claim −76004 of the appraisal, `docs/ear.md`): for each
//! check that failed, where it failed — the PCR, the bank, the event-log record and its
//! type, the component — so that an operator reading an EAR (or the PVA's log line) knows
//! what to look at without the evidence. Only names and indices: never a digest of a
//! secret, never event data, never key material.

use std::fmt;

use ciborium::Value;

use super::EarError;

/// Most details an EAR carries; further failures are still named in the failed checks.
pub const MAX_FAILURE_DETAILS: usize = 32;
/// Longest text member (a check name, a bank, a component name).
const MAX_TEXT: usize = 128;

/// Map keys of a detail (text, so that the claim reads on its own in CBOR diagnostics).
mod member {
    pub const CHECK: &str = "check";
    pub const PCR: &str = "pcr";
    pub const BANK: &str = "bank";
    pub const EVENT: &str = "event";
    pub const EVENT_TYPE: &str = "event-type";
    pub const COMPONENT: &str = "component";
}

/// Where one check failed. Every member but `check` is present only when that check is
/// about it.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct FailureDetail {
    /// The check's name, as in the failed checks (−76003): `pcr-not-reference-value`, …
    pub check: String,
    /// PCR index.
    pub pcr: Option<u32>,
    /// PCR bank: `sha1`, `sha256`, `sha384` or `sha512`.
    pub bank: Option<String>,
    /// The event-log record, numbered as `tpm2_eventlog` numbers it (`EventNum`: the Spec ID
    /// header of a crypto-agile log is 0).
    pub event: Option<u32>,
    /// The record's TCG_EVENTTYPE (PFP 1.05 §10.4.1).
    pub event_type: Option<u32>,
    /// The reference-values component the check is about.
    pub component: Option<String>,
}

impl FailureDetail {
    pub fn new(check: impl Into<String>) -> Self {
        Self { check: check.into(), ..Self::default() }
    }

    pub(super) fn to_cbor_value(&self) -> Value {
        let text = |k: &str, v: &str| (Value::Text(k.into()), Value::Text(v.into()));
        let uint = |k: &str, v: u32| (Value::Text(k.into()), Value::Integer(v.into()));
        let mut map = vec![text(member::CHECK, &self.check)];
        map.extend(self.pcr.map(|v| uint(member::PCR, v)));
        map.extend(self.bank.as_deref().map(|v| text(member::BANK, v)));
        map.extend(self.event.map(|v| uint(member::EVENT, v)));
        map.extend(self.event_type.map(|v| uint(member::EVENT_TYPE, v)));
        map.extend(self.component.as_deref().map(|v| text(member::COMPONENT, v)));
        Value::Map(map)
    }

    pub(super) fn from_cbor_value(value: Value) -> Result<Self, EarError> {
        let bad = |m: &str| EarError::Malformed(format!("failure detail: {m}"));
        let Value::Map(entries) = value else { return Err(bad("not a map")) };
        let mut out = Self::default();
        let mut check = None;
        let mut seen: Vec<String> = Vec::new();
        for (k, v) in entries {
            let Value::Text(k) = k else { return Err(bad("a key is not text")) };
            if seen.contains(&k) {
                return Err(bad("a key appears twice"));
            }
            let text = |v: Value| match v {
                Value::Text(t)
                    if !t.is_empty() && t.len() <= MAX_TEXT && !t.contains(char::is_control) =>
                {
                    Ok(t)
                }
                _ => Err(bad("a text member is not 1 to 128 printable characters")),
            };
            let uint = |v: Value| match v {
                Value::Integer(i) => u32::try_from(i).map_err(|_| bad("an index is out of range")),
                _ => Err(bad("an index is not an integer")),
            };
            match k.as_str() {
                member::CHECK => check = Some(text(v)?),
                member::PCR => out.pcr = Some(uint(v)?),
                member::BANK => out.bank = Some(text(v)?),
                member::EVENT => out.event = Some(uint(v)?),
                member::EVENT_TYPE => out.event_type = Some(uint(v)?),
                member::COMPONENT => out.component = Some(text(v)?),
                _ => return Err(bad("unknown member")),
            }
            seen.push(k);
        }
        out.check = check.ok_or_else(|| bad("no check"))?;
        Ok(out)
    }
}

/// `check (sha256 PCR 7, event 12 EV_POST_CODE, component os)`: the form of the PVA's log
/// line and of tools that print an EAR.
impl fmt::Display for FailureDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.check)?;
        let mut parts = Vec::new();
        match (&self.bank, self.pcr) {
            (Some(bank), Some(pcr)) => parts.push(format!("{bank} PCR {pcr}")),
            (Some(bank), None) => parts.push(format!("{bank} bank")),
            (None, Some(pcr)) => parts.push(format!("PCR {pcr}")),
            (None, None) => {}
        }
        match (self.event, self.event_type) {
            (Some(n), Some(t)) => {
                parts.push(format!("event {n} {}", crate::eventlog::EventType(t)))
            }
            (Some(n), None) => parts.push(format!("event {n}")),
            (None, Some(t)) => parts.push(format!("{}", crate::eventlog::EventType(t))),
            (None, None) => {}
        }
        if let Some(c) = &self.component {
            parts.push(format!("component {c}"));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// Encodes at most [`MAX_FAILURE_DETAILS`].
pub(super) fn encode_all(details: &[FailureDetail]) -> Value {
    Value::Array(
        details.iter().take(MAX_FAILURE_DETAILS).map(FailureDetail::to_cbor_value).collect(),
    )
}

pub(super) fn decode_all(value: Value) -> Result<Vec<FailureDetail>, EarError> {
    match value {
        Value::Array(items) if items.len() <= MAX_FAILURE_DETAILS => {
            items.into_iter().map(FailureDetail::from_cbor_value).collect()
        }
        Value::Array(_) => Err(EarError::Malformed("more than 32 failure details".into())),
        _ => Err(EarError::Malformed("failure details is not an array".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> FailureDetail {
        FailureDetail {
            check: "event-not-in-reference-values".into(),
            pcr: Some(4),
            bank: Some("sha256".into()),
            event: Some(12),
            event_type: Some(0x8000_0003),
            component: Some("bootloader".into()),
        }
    }

    #[test]
    fn round_trips_and_prints() {
        for d in [full(), FailureDetail::new("clock-not-safe")] {
            assert_eq!(FailureDetail::from_cbor_value(d.to_cbor_value()).unwrap(), d);
        }
        assert_eq!(
            full().to_string(),
            "event-not-in-reference-values (sha256 PCR 4, event 12 \
             EV_EFI_BOOT_SERVICES_APPLICATION, component bootloader)"
        );
        assert_eq!(FailureDetail::new("clock-not-safe").to_string(), "clock-not-safe");
    }

    #[test]
    fn malformed_details_are_refused() {
        let with = |k: &str, v: Value| {
            let Value::Map(mut m) = full().to_cbor_value() else { unreachable!() };
            m.push((Value::Text(k.into()), v));
            Value::Map(m)
        };
        for bad in [
            Value::Integer(1.into()),
            Value::Map(vec![]),
            with("pcr", Value::Integer(1.into())),
            with("digest", Value::Bytes(vec![1])),
            Value::Map(vec![(Value::Text("check".into()), Value::Text(String::new()))]),
            Value::Map(vec![(Value::Text("check".into()), Value::Text("a\nb".into()))]),
            Value::Map(vec![
                (Value::Text("check".into()), Value::Text("x".into())),
                (Value::Text("pcr".into()), Value::Integer((-1).into())),
            ]),
            Value::Map(vec![(Value::Integer(0.into()), Value::Text("x".into()))]),
        ] {
            assert!(
                matches!(FailureDetail::from_cbor_value(bad.clone()), Err(EarError::Malformed(_))),
                "{bad:?}"
            );
        }
        let many = Value::Array(vec![full().to_cbor_value(); MAX_FAILURE_DETAILS + 1]);
        assert!(decode_all(many).is_err());
        let all = vec![full(); MAX_FAILURE_DETAILS + 5];
        assert_eq!(decode_all(encode_all(&all)).unwrap().len(), MAX_FAILURE_DETAILS);
    }
}
