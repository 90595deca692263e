//! The RO's Prometheus metrics (`GET /metrics`, `transport::metrics`). Counted as they
//! happen, since the process started: device transitions by new state, step latencies, peer
//! errors, outbox deliveries. Read from the store at each scrape, so that they agree with it
//! whatever restarts happened: devices by state, campaigns by state, the outbox's depth.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::error::RoError;
use super::store::RoStore;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StepLabel {
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabel {
    pub peer: String,
    pub outcome: String,
}

pub(crate) struct RoMetrics {
    registry: Registry,
    pub transitions: Family<StateLabel, Counter>,
    pub step_seconds: Family<StepLabel, Histogram>,
    pub deliveries: Family<PeerLabel, Counter>,
    peer_errors: Family<PeerLabel, Counter>,
    devices: Family<StateLabel, Gauge>,
    campaigns: Family<StateLabel, Gauge>,
    outbox: Family<StateLabel, Gauge>,
}

impl std::fmt::Debug for RoMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoMetrics").finish_non_exhaustive()
    }
}

impl RoMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tresor_ro");
        let transitions = Family::<StateLabel, Counter>::default();
        registry.register(
            "device_transitions",
            "Device state changes by new state, since start",
            transitions.clone(),
        );
        let step_seconds = Family::<StepLabel, Histogram>::new_with_constructor(
            step_histogram as fn() -> Histogram,
        );
        registry.register(
            "step_seconds",
            "Duration of the steps of TR 33.812 alternative 3d",
            step_seconds.clone(),
        );
        let deliveries = Family::<PeerLabel, Counter>::default();
        registry.register(
            "outbox_deliveries",
            "Outbox delivery attempts by peer and outcome (delivered, retry, dead), since start",
            deliveries.clone(),
        );
        let peer_errors = Family::<PeerLabel, Counter>::default();
        registry.register(
            "peer_errors",
            "Failed calls of a device step to a peer, by peer and outcome (unreachable: retried; refused), since start",
            peer_errors.clone(),
        );
        let devices = Family::<StateLabel, Gauge>::default();
        registry.register("devices", "Devices of every campaign by current state", devices.clone());
        let campaigns = Family::<StateLabel, Gauge>::default();
        registry.register("campaigns", "Campaigns by state", campaigns.clone());
        let outbox = Family::<StateLabel, Gauge>::default();
        registry.register(
            "outbox_messages",
            "Outbox messages by state (pending, delivered, dead)",
            outbox.clone(),
        );
        Self {
            registry,
            transitions,
            step_seconds,
            deliveries,
            peer_errors,
            devices,
            campaigns,
            outbox,
        }
    }

    /// Counts `error` if a peer caused it.
    pub fn peer_error(&self, error: &RoError) {
        let (peer, outcome) = match error {
            RoError::PeerUnreachable { peer, .. } => (peer, "unreachable"),
            RoError::PeerRefused { peer, .. } => (peer, "refused"),
            _ => return,
        };
        let label = PeerLabel { peer: peer.clone(), outcome: outcome.into() };
        self.peer_errors.get_or_create(&label).inc();
    }

    /// Reads the store's counts into the gauges, then encodes the registry.
    pub fn scrape(&self, store: &RoStore) -> Result<axum::response::Response, RoError> {
        let counts = store.counts()?;
        for (family, rows) in [
            (&self.devices, &counts.devices),
            (&self.campaigns, &counts.campaigns),
            (&self.outbox, &counts.outbox),
        ] {
            family.clear();
            for (state, n) in rows {
                family.get_or_create(&StateLabel { state: state.clone() }).set(*n);
            }
        }
        Ok(transport::metrics::response(&self.registry))
    }
}

fn step_histogram() -> Histogram {
    Histogram::new(transport::metrics::latency_buckets())
}

/// Row counts by state, as one scrape reads them.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub devices: Vec<(String, i64)>,
    pub campaigns: Vec<(String, i64)>,
    pub outbox: Vec<(String, i64)>,
}

impl RoStore {
    pub(crate) fn counts(&self) -> Result<Counts, RoError> {
        self.autocommit(|tx| {
            let mut group = |sql: &str| -> Result<Vec<(String, i64)>, RoError> {
                tx.query(sql, &[])?.iter().map(|r| Ok((r.get(0)?, r.get(1)?))).collect()
            };
            Ok(Counts {
                devices: group("SELECT state_name, COUNT(*) FROM devices GROUP BY state_name")?,
                campaigns: group("SELECT state, COUNT(*) FROM campaigns GROUP BY state")?,
                outbox: group(
                    "SELECT CASE WHEN delivered_ms IS NOT NULL THEN 'delivered'
                                 WHEN dead = 1 THEN 'dead' ELSE 'pending' END AS s, COUNT(*)
                     FROM outbox GROUP BY s",
                )?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_errors_are_counted_by_peer_and_outcome_and_nothing_else() {
        let m = RoMetrics::new();
        let down = || RoError::PeerUnreachable { peer: "mno-b".into(), detail: "refused".into() };
        m.peer_error(&down());
        m.peer_error(&down());
        m.peer_error(&RoError::PeerRefused {
            peer: "pva".into(),
            status: 403,
            problem_type: String::new(),
            detail: "no".into(),
        });
        m.peer_error(&RoError::Busy("a full disk is not a peer".into()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        assert!(
            text.contains("tresor_ro_peer_errors_total{peer=\"mno-b\",outcome=\"unreachable\"} 2"),
            "{text}"
        );
        assert!(text.contains("tresor_ro_peer_errors_total{peer=\"pva\",outcome=\"refused\"} 1"));
        assert_eq!(text.matches("tresor_ro_peer_errors_total{").count(), 2, "{text}");
    }
}
