//! `GET /health` and `GET /ready`, the same on every role and open to anyone (no client
//! certificate: a load balancer or an orchestrator has none):
//!
//! - `/health` (liveness): the process serves requests. Always 200.
//! - `/ready` (readiness): the role can do its work now; each check named (`store`, …).
//!   200 when every check passes, else 503 with the same document.
//!
//! Both answer `{"status": "ok"|"unavailable", "role": "pva", "name": "pva", "version":
//! "0.1.0", "checks": {"store": "ok"}}` (`/health` without `checks`). Nothing in them is
//! secret or specific to a device.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The document both routes answer with.
#[derive(Debug, Clone, Serialize)]
pub struct HealthDocument {
    pub status: &'static str,
    pub role: &'static str,
    pub name: String,
    pub version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<BTreeMap<&'static str, &'static str>>,
}

/// `/health`: the process is up.
pub fn live(role: &'static str, name: &str) -> Response {
    let doc = HealthDocument {
        status: "ok",
        role,
        name: name.to_owned(),
        version: env!("CARGO_PKG_VERSION"),
        checks: None,
    };
    (StatusCode::OK, Json(doc)).into_response()
}

/// `/ready`: 200 when every one of `checks` (name, passed) passed, else 503.
pub fn ready(role: &'static str, name: &str, checks: &[(&'static str, bool)]) -> Response {
    let ok = checks.iter().all(|(_, passed)| *passed);
    let doc = HealthDocument {
        status: if ok { "ok" } else { "unavailable" },
        role,
        name: name.to_owned(),
        version: env!("CARGO_PKG_VERSION"),
        checks: Some(checks.iter().map(|(n, p)| (*n, if *p { "ok" } else { "failing" })).collect()),
    };
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(doc)).into_response()
}
