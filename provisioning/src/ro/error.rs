//! The RO's errors: one variant per thing a caller (a device, an operator, the CLI) can act
//! on, each with its own problem type (RFC 7807) on the wire.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::DeviceId;
use transport::Problem;
use transport::problem::problem_type;

/// Everything that can go wrong at the RO.
#[derive(Debug, thiserror::Error)]
pub enum RoError {
    #[error("RO store: {0}")]
    Store(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("device {device} is still in campaign {campaign}")]
    DeviceBusy { device: DeviceId, campaign: String },
    #[error("no campaign {0}")]
    UnknownCampaign(String),
    #[error("no {0}")]
    NotFound(String),
    /// An `Idempotency-Key` the caller already used for another request
    /// (draft-ietf-httpapi-idempotency-key-header §2.7: 422).
    #[error("Idempotency-Key {key:?} was used for another request (campaign {campaign})")]
    IdempotencyKeyReused { key: String, campaign: String },
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("device {0} is in no ready campaign")]
    NotInCampaign(DeviceId),
    #[error("campaign must name a known operator for from and to, and they must differ: {0}")]
    BadCampaign(String),
    #[error("device {device} is {state}; this request belongs to another step")]
    WrongState { device: DeviceId, state: &'static str },
    #[error("request body: {0}")]
    Decode(String),
    #[error("{0}")]
    UnsupportedMediaType(#[from] transport::negotiate::UnsupportedMediaType),
    #[error("attach refused: {0}")]
    Attach(String),
    /// The peer's problem type is part of the message, so a campaign's failure names the
    /// check that refused (e.g. `pva refused (pva/nonce-reused): …`).
    #[error("{peer} refused ({}): {detail}", short_problem_type(.problem_type))]
    PeerRefused { peer: String, status: u16, problem_type: String, detail: String },
    #[error("{peer} unreachable: {detail}")]
    PeerUnreachable { peer: String, detail: String },
    #[error("DPF refuses to release: {0}")]
    Release(String),
    #[error("install receipt: {0}")]
    Receipt(String),
    #[error("AKA with the new operator: {0}")]
    Aka(String),
    #[error("the answer is not signed by the device's enrolled AK: {0}")]
    AnswerNotSigned(String),
    /// A device request without a valid AK signature (or before the device bound its AK).
    #[error("device not authenticated: {0}")]
    DeviceNotAuthenticated(String),
    /// A device request whose nonce is not one this RO issued, expired, or spent (a replay):
    /// the refusal carries a fresh nonce.
    #[error("device nonce refused: {0}")]
    DeviceNonce(String),
    #[error("the caller's certificate does not allow this: {0}")]
    Forbidden(String),
    /// A peer or the store failed in a way that may pass (down, busy, disk full): the step
    /// is tried again later and the device should ask again.
    #[error("not now, try again: {0}")]
    Busy(String),
}

/// A statement failed: the store's error (retried like every store error: a full disk, an
/// unreachable database and a conflict with another instance may all pass).
impl From<storage::SqlError> for RoError {
    fn from(e: storage::SqlError) -> Self {
        RoError::Store(e.to_string())
    }
}

/// A tresor problem type without its common prefix (`pva/nonce-reused`); others unchanged.
fn short_problem_type(problem_type: &str) -> &str {
    problem_type.strip_prefix(transport::problem::PROBLEM_TYPE_BASE).unwrap_or(problem_type)
}

impl RoError {
    pub(crate) fn store(what: &str, e: impl std::fmt::Display) -> Self {
        RoError::Store(format!("{what}: {e}"))
    }

    /// Whether the failure may pass on its own, so the step is retried (with backoff, within
    /// its deadline) rather than the change abandoned: a peer that is unreachable, overloaded
    /// or failing inside, and a store that could not write (a full disk).
    pub fn is_transient(&self) -> bool {
        match self {
            RoError::PeerUnreachable { .. } | RoError::Busy(_) | RoError::Store(_) => true,
            RoError::PeerRefused { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            _ => false,
        }
    }

    /// The peer's problem type without its common prefix, if a peer refused.
    pub fn peer_problem(&self) -> Option<&str> {
        match self {
            RoError::PeerRefused { problem_type, .. } => Some(short_problem_type(problem_type)),
            _ => None,
        }
    }

    fn status_and_slug(&self) -> (StatusCode, &'static str) {
        match self {
            RoError::Store(_) | RoError::Config(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "ro-internal")
            }
            RoError::DeviceBusy { .. } => (StatusCode::CONFLICT, "device-busy"),
            RoError::UnknownCampaign(_) => (StatusCode::NOT_FOUND, "unknown-campaign"),
            RoError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            RoError::IdempotencyKeyReused { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused")
            }
            RoError::BadQuery(_) => (StatusCode::BAD_REQUEST, "bad-query"),
            RoError::NotInCampaign(_) => (StatusCode::NOT_FOUND, "not-in-campaign"),
            RoError::BadCampaign(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad-campaign"),
            RoError::WrongState { .. } => (StatusCode::CONFLICT, "wrong-state"),
            RoError::Decode(_) => (StatusCode::BAD_REQUEST, "malformed-body"),
            RoError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type")
            }
            RoError::Attach(_) => (StatusCode::FORBIDDEN, "attach-refused"),
            RoError::PeerRefused { .. } => (StatusCode::BAD_GATEWAY, "peer-refused"),
            RoError::PeerUnreachable { .. } => (StatusCode::BAD_GATEWAY, "peer-unreachable"),
            RoError::Release(_) => (StatusCode::FORBIDDEN, "release-refused"),
            RoError::Receipt(_) => (StatusCode::FORBIDDEN, "receipt-refused"),
            RoError::Aka(_) => (StatusCode::FORBIDDEN, "aka-failed"),
            RoError::AnswerNotSigned(_) => (StatusCode::UNAUTHORIZED, "answer-not-signed"),
            RoError::DeviceNotAuthenticated(_) => {
                (StatusCode::UNAUTHORIZED, "device-not-authenticated")
            }
            RoError::DeviceNonce(_) => (StatusCode::UNAUTHORIZED, "device-nonce"),
            RoError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            RoError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "ro-busy"),
        }
    }
}

impl IntoResponse for RoError {
    fn into_response(self) -> Response {
        let (status, slug) = self.status_and_slug();
        // Internal errors say what failed, never how: no paths or SQL reach a client.
        let detail = match &self {
            RoError::Store(_) | RoError::Config(_) => {
                tracing::error!(error = %self, "RO internal error");
                "internal error; see the RO's log".to_owned()
            }
            other => other.to_string(),
        };
        Problem::new(status, problem_type(slug), slug.replace('-', " "))
            .with_detail(detail)
            .into_response()
    }
}
