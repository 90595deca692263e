//! The PVA's Prometheus metrics (`GET /metrics`, `transport::metrics`): appraisals by
//! outcome (the EAR's trust tier, or the refusal) and by the first failed check, their
//! duration, challenges and enrolments by outcome, and the devices enrolled. Counted since
//! the process started; labels are check names, never devices or nonces.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::Error;
use crate::pva::Appraised;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppraisalLabels {
    /// `affirming`, `warning`, `contraindicated` (an EAR was signed) or `refused` (none).
    outcome: String,
    /// The first failed check (`pcr-mismatch`, `nonce-reused`, …) or `none`.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    /// `ok` or the refusal's problem slug.
    outcome: String,
}

pub(crate) struct PvaMetrics {
    registry: Registry,
    appraisals: Family<AppraisalLabels, Counter>,
    appraisal_seconds: Histogram,
    challenges: Family<OutcomeLabel, Counter>,
    enrolments: Family<OutcomeLabel, Counter>,
    devices: Gauge,
}

impl PvaMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tresor_pva");
        let appraisals = Family::<AppraisalLabels, Counter>::default();
        registry.register(
            "appraisals",
            "Appraisals by outcome and first failed check",
            appraisals.clone(),
        );
        let appraisal_seconds = Histogram::new(transport::metrics::latency_buckets());
        registry.register(
            "appraisal_seconds",
            "Time to appraise evidence and sign the EAR",
            appraisal_seconds.clone(),
        );
        let challenges = Family::<OutcomeLabel, Counter>::default();
        registry.register("challenges", "Nonces asked for, by outcome", challenges.clone());
        let enrolments = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "enrolments",
            "Enrolment steps (enrol, activate) by outcome",
            enrolments.clone(),
        );
        let devices = Gauge::default();
        registry.register("enrolled_devices", "Devices with an enrolled AK", devices.clone());
        Self { registry, appraisals, appraisal_seconds, challenges, enrolments, devices }
    }

    pub fn appraised(&self, result: &Result<Appraised, Error>, took: Duration) {
        let (outcome, reason) = match result {
            Ok(a) => {
                (a.status().to_string(), a.failures.first().map_or("none", |f| f.slug()).to_owned())
            }
            Err(e) => ("refused".to_owned(), slug(e).to_owned()),
        };
        self.appraisals.get_or_create(&AppraisalLabels { outcome, reason }).inc();
        self.appraisal_seconds.observe(took.as_secs_f64());
    }

    pub fn challenged<T>(&self, result: &Result<T, Error>) {
        self.challenges.get_or_create(&OutcomeLabel { outcome: outcome(result) }).inc();
    }

    pub fn enrolled<T>(&self, result: &Result<T, Error>) {
        self.enrolments.get_or_create(&OutcomeLabel { outcome: outcome(result) }).inc();
    }

    pub fn response(&self, enrolled_devices: usize) -> axum::response::Response {
        self.devices.set(enrolled_devices as i64);
        transport::metrics::response(&self.registry)
    }
}

fn outcome<T>(result: &Result<T, Error>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => slug(e).to_owned(),
    }
}

fn slug(e: &Error) -> &'static str {
    match e {
        Error::Appraisal(e) => e.slug(),
        Error::Enrolment(e) => e.slug(),
        Error::Challenge(e) => e.slug(),
        _ => "internal",
    }
}
