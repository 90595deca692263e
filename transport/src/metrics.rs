//! Prometheus metrics over HTTP: every role serves its registry at `GET /metrics` in the
//! OpenMetrics text format (OpenMetrics 1.0, which Prometheus scrapes natively), with no
//! client certificate, like `/health` and `/ready`. The families themselves belong to each
//! role; a metric never carries a secret or a device identity as a label, so the number of
//! series stays bounded whatever the fleet size.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;

/// The media type of the exposition.
pub const OPENMETRICS_MEDIA_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets of latency histograms in seconds: 1 ms to about 65 s, doubling.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17)
}

/// `registry` encoded as an HTTP answer.
pub fn response(registry: &Registry) -> Response {
    let mut text = String::with_capacity(4096);
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS_MEDIA_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
