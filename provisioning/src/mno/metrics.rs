//! An operator's Prometheus metrics (`GET /metrics`, `transport::metrics`), read from its
//! store at each scrape so that they agree with it: subscriptions by status (`active`,
//! `pending`, `live`, `retired`) and the campaigns it takes part in.

use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::error::Result;
use super::operator::Operator;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

impl Operator {
    /// Whether the store answers a query (`/ready`).
    pub fn store_healthy(&self) -> bool {
        self.store.healthy()
    }

    /// The metrics, encoded.
    pub fn metrics_response(&self) -> axum::response::Response {
        match self.scrape() {
            Ok(registry) => transport::metrics::response(&registry),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the store for the metrics");
                axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
        }
    }

    fn scrape(&self) -> Result<Registry> {
        let (subscribers, campaigns) = self.store.read(|tx| {
            let subscribers = tx
                .query("SELECT status, COUNT(*) FROM subscribers GROUP BY status", &[])?
                .iter()
                .map(|r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)))
                .collect::<Result<Vec<_>>>()?;
            let campaigns: i64 = tx.query_one("SELECT COUNT(*) FROM campaigns", &[])?.get(0)?;
            Ok((subscribers, campaigns))
        })?;
        let mut registry = Registry::with_prefix("tresor_mno");
        let by_status = Family::<StatusLabel, Gauge>::default();
        for (status, n) in subscribers {
            by_status.get_or_create(&StatusLabel { status }).set(n);
        }
        registry.register("subscribers", "Subscriptions by status", by_status);
        let count = Gauge::<i64>::default();
        count.set(campaigns);
        registry.register("campaigns", "Campaigns this operator takes part in", count);
        Ok(registry)
    }
}
