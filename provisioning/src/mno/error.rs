//! The error type of the operator service: one variant per thing a caller can act on, each
//! mapped to an HTTP status and a stable RFC 9457 problem type
//! (`https://tresor.example/problems/<slug>`, listed in `docs/mno.md`). Details name
//! identifiers (campaign, device, IMSI) and never a secret or an internal error chain; store
//! and crypto failures are logged here and answered with a bare 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::ear::EarError;
use transport::Problem;
use transport::problem::problem_type;

use super::config::ConfigError;

/// Why an operator request or start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum MnoError {
    #[error(transparent)]
    Config(#[from] ConfigError),

    // Requests that do not parse.
    #[error("request body is not {expected} of the expected shape: {reason}")]
    BadBody { expected: &'static str, reason: String },
    #[error("request body must be {expected}")]
    UnsupportedMediaType { expected: &'static str },
    #[error("this endpoint takes no request body")]
    UnexpectedBody,
    #[error("{what} in the path is not valid: {reason}")]
    BadPath { what: &'static str, reason: String },
    #[error("campaign is not valid: {0}")]
    InvalidCampaign(String),
    #[error("request body larger than this route accepts")]
    TooLarge,
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// A transport-level refusal (role not allowed, no client certificate) passed through.
    #[error("{0}")]
    Refused(Problem),

    // Unknown things.
    #[error("campaign {0} is not known to this operator")]
    CampaignNotFound(String),
    #[error("device {device} is not part of campaign {campaign}")]
    DeviceNotInCampaign { campaign: String, device: String },
    #[error("subscriber {0} is not known to this operator")]
    SubscriberNotFound(String),

    // Campaign set-up (steps 2–3).
    #[error("campaign {0} already exists with different contents")]
    CampaignConflict(String),
    #[error("campaign {0} was closed by the RO before this operator heard of it")]
    CampaignClosed(String),
    #[error("this operator ({operator}) is not the {needed} operator of campaign {campaign}")]
    WrongParty { operator: String, campaign: String, needed: &'static str },
    #[error("ICCID {0} is not an active subscription of this operator")]
    UnknownIccid(String),
    #[error("the IMSI list for campaign {campaign} may only come from {expected}, not {sender}")]
    ImsiListSenderNotCampaignOperator { campaign: String, expected: String, sender: String },
    #[error("IMSI list does not match campaign {campaign}: {reason}")]
    ImsiListMismatch { campaign: String, reason: String },
    #[error("IMSI list for device {device} conflicts with the one received before")]
    ImsiListConflict { device: String },
    #[error("no IMSI list entry for device {device} has arrived yet")]
    ImsiListMissing { device: String },
    #[error("the IMSI pool is exhausted ({count} IMSIs configured)")]
    PoolExhausted { count: u64 },
    #[error("no URL is configured for peer operator {0}")]
    PeerNotConfigured(String),
    #[error("peer operator {peer} did not accept the request: {reason}")]
    PeerFailed { peer: String, reason: String },

    // Per device (steps 4–12).
    #[error("subscriber {imsi} is {status}, not {needed}")]
    SubscriberState { imsi: String, status: &'static str, needed: &'static str },
    #[error("device {device} of campaign {campaign} is already finished (report received)")]
    DeviceFinished { campaign: String, device: String },
    #[error("device {0} has no IMSI from this operator yet (prepare the campaign first)")]
    NotPrepared(String),
    #[error("the IMSI list for device {0} has not been delivered to the old operator yet")]
    ImsiListNotDelivered(String),
    #[error("device {0} is not registered with this operator")]
    NotRegistered(String),
    #[error("the EAR was refused: {0}")]
    Ear(#[from] EarError),
    #[error("the EAR carries no rollback counter, so no profile sequence can be chosen")]
    EarWithoutRollbackCounter,
    #[error("no profile has been issued for device {0}")]
    ProfileNotIssued(String),
    #[error("the EAR's bundle key is not a P-256 point: no bundle can be encrypted to it")]
    EarBundleKeyInvalid,
    #[error("profile could not be signed: {0}")]
    ProfileSigning(String),
    #[error("bundle could not be encrypted: {0}")]
    BundleEncryption(String),
    #[error("OTA command could not be made: {0}")]
    Ota(#[from] protocol::ota::OtaError),
    #[error("the activate-TRE command for device {0} has not been issued")]
    TreActivationNotIssued(String),
    /// The ICCID binding: the card the campaign pairs with the device did not prove that
    /// it ran the command (its MACed response does not verify, or says something else).
    #[error("device {device} has not proven the TRE activation of ICCID {iccid}: {reason}")]
    TreActivationNotProven { device: String, iccid: String, reason: String },
    #[error("ICCID {iccid} is in a change proven in open campaign {campaign} (device {device})")]
    SubscriptionInChange { iccid: String, campaign: String, device: String },
    #[error("SQN space of subscriber {0} is exhausted")]
    SqnExhausted(String),
    #[error("no authentication challenge is outstanding for device {0}")]
    AkaNoChallenge(String),
    #[error("RES does not match XRES")]
    AkaResMismatch,
    #[error("AUTS does not verify (MAC-S)")]
    AkaAutsInvalid,
    #[error("the card refused AUTHENTICATE: {0}")]
    AkaRefusedByCard(String),
    #[error("device {0} has not completed AKA; a success report cannot make it live")]
    AkaNotCompleted(String),
    #[error("a {previous} report for device {device} was received before")]
    ReportConflict { device: String, previous: &'static str },

    // Start-up and infrastructure.
    #[error("the storage key does not decrypt this store (wrong key file?)")]
    WrongStorageKey,
    #[error("store {path} has schema version {found}; this build knows {known}")]
    SchemaVersion { path: String, found: i64, known: i64 },
    #[error("store {path} belongs to {found}; this is {expected}")]
    StoreOwner { path: String, found: String, expected: String },
    #[error("store {path} was created for another IMSI range ({found}); the range may only grow")]
    PoolChanged { path: String, found: String },
    /// A statement failed (either backend); the detail names tables, never values.
    #[error("store: {0}")]
    Store(#[from] storage::SqlError),
    /// The store is not this operator's store (an empty file, not SQLite, another role's
    /// file or database, …): refused at start, left as it was.
    #[error("{0}")]
    StoreOpen(storage::OpenError),
    #[error("store file {path}: {source}")]
    StoreIo { path: String, source: std::io::Error },
    #[error("at-rest encryption failed")]
    Crypto,
    #[error("stored {0} does not decrypt or decode")]
    Corrupt(&'static str),
    #[error("no randomness available")]
    Rng,
    #[error("TLS: {0}")]
    Transport(#[from] transport::Error),
    #[error("HTTPS server: {0}")]
    Serve(std::io::Error),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

pub type Result<T, E = MnoError> = std::result::Result<T, E>;

impl MnoError {
    /// HTTP status and problem slug.
    fn status_and_slug(&self) -> (StatusCode, &'static str) {
        use MnoError as E;
        use StatusCode as S;
        match self {
            E::BadBody { .. } => (S::BAD_REQUEST, "bad-request-body"),
            E::UnsupportedMediaType { .. } => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type"),
            E::UnexpectedBody => (S::BAD_REQUEST, "unexpected-body"),
            E::BadPath { .. } => (S::BAD_REQUEST, "bad-path-parameter"),
            E::InvalidCampaign(_) => (S::UNPROCESSABLE_ENTITY, "invalid-campaign"),
            E::TooLarge => (S::PAYLOAD_TOO_LARGE, "payload-too-large"),
            E::NotFound => (S::NOT_FOUND, "not-found"),
            E::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method-not-allowed"),
            E::Refused(_) => (S::FORBIDDEN, "role-not-allowed"),
            E::CampaignNotFound(_) => (S::NOT_FOUND, "campaign-not-found"),
            E::DeviceNotInCampaign { .. } => (S::NOT_FOUND, "device-not-in-campaign"),
            E::SubscriberNotFound(_) => (S::NOT_FOUND, "subscriber-not-found"),
            E::CampaignConflict(_) => (S::CONFLICT, "campaign-conflict"),
            E::CampaignClosed(_) => (S::CONFLICT, "campaign-closed"),
            E::WrongParty { .. } => (S::CONFLICT, "wrong-campaign-party"),
            E::UnknownIccid(_) => (S::UNPROCESSABLE_ENTITY, "unknown-iccid"),
            E::ImsiListSenderNotCampaignOperator { .. } => {
                (S::FORBIDDEN, "imsi-list-sender-not-campaign-operator")
            }
            E::ImsiListMismatch { .. } => (S::UNPROCESSABLE_ENTITY, "imsi-list-mismatch"),
            E::ImsiListConflict { .. } => (S::CONFLICT, "imsi-list-conflict"),
            E::ImsiListMissing { .. } => (S::CONFLICT, "imsi-list-missing"),
            E::PoolExhausted { .. } => (S::CONFLICT, "imsi-pool-exhausted"),
            E::PeerNotConfigured(_) => (S::BAD_GATEWAY, "peer-not-configured"),
            E::PeerFailed { .. } => (S::BAD_GATEWAY, "peer-failed"),
            E::SubscriberState { .. } => (S::CONFLICT, "subscriber-state"),
            E::DeviceFinished { .. } => (S::CONFLICT, "device-finished"),
            E::NotPrepared(_) => (S::CONFLICT, "not-prepared"),
            E::ImsiListNotDelivered(_) => (S::CONFLICT, "imsi-list-not-delivered"),
            E::NotRegistered(_) => (S::CONFLICT, "not-registered"),
            E::Ear(e) => ear_status_and_slug(e),
            E::EarWithoutRollbackCounter => (S::FORBIDDEN, "ear-missing-rollback-counter"),
            E::EarBundleKeyInvalid => (S::FORBIDDEN, "ear-bundle-key-invalid"),
            E::ProfileNotIssued(_) => (S::CONFLICT, "profile-not-issued"),
            E::AkaNoChallenge(_) => (S::CONFLICT, "aka-no-challenge"),
            E::AkaResMismatch => (S::FORBIDDEN, "aka-res-mismatch"),
            E::AkaAutsInvalid => (S::FORBIDDEN, "aka-auts-invalid"),
            E::AkaRefusedByCard(_) => (S::UNPROCESSABLE_ENTITY, "aka-refused-by-card"),
            E::AkaNotCompleted(_) => (S::CONFLICT, "aka-not-completed"),
            E::ReportConflict { .. } => (S::CONFLICT, "report-conflict"),
            E::SqnExhausted(_) => (S::CONFLICT, "sqn-exhausted"),
            E::TreActivationNotIssued(_) => (S::CONFLICT, "tre-activation-not-issued"),
            E::TreActivationNotProven { .. } => (S::FORBIDDEN, "tre-activation-not-proven"),
            E::SubscriptionInChange { .. } => (S::CONFLICT, "subscription-in-change"),
            E::Config(_)
            | E::ProfileSigning(_)
            | E::BundleEncryption(_)
            | E::Ota(_)
            | E::WrongStorageKey
            | E::SchemaVersion { .. }
            | E::StoreOwner { .. }
            | E::PoolChanged { .. }
            | E::Store(_)
            | E::StoreOpen(_)
            | E::StoreIo { .. }
            | E::Crypto
            | E::Corrupt(_)
            | E::Rng
            | E::Transport(_)
            | E::Serve(_)
            | E::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The problem document a client gets.
    pub fn to_problem(&self) -> Problem {
        if let MnoError::Refused(problem) = self {
            return problem.clone();
        }
        let (status, slug) = self.status_and_slug();
        let title = title_of(slug);
        let problem = Problem::new(status, problem_type(slug), title);
        if status.is_server_error() {
            // Internal chains stay in the log.
            problem
        } else {
            problem.with_detail(self.to_string())
        }
    }
}

/// One problem type per EAR check, so the RO (and the attack matrix) sees which stopped it.
fn ear_status_and_slug(e: &EarError) -> (StatusCode, &'static str) {
    use EarError as E;
    use StatusCode as S;
    match e {
        E::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "ear-too-large"),
        E::Malformed(_) => (S::BAD_REQUEST, "ear-malformed"),
        E::UnsupportedAlgorithm => (S::FORBIDDEN, "ear-unsupported-algorithm"),
        E::MissingCertificateChain => (S::FORBIDDEN, "ear-missing-certificate-chain"),
        E::UntrustedSigner(_) => (S::FORBIDDEN, "ear-untrusted-signer"),
        E::SignerNotAllowed { .. } => (S::FORBIDDEN, "ear-signer-not-allowed"),
        E::BadSignature => (S::FORBIDDEN, "ear-bad-signature"),
        E::WrongProfile(_) => (S::FORBIDDEN, "ear-wrong-profile"),
        E::StatusInconsistent { .. } => (S::FORBIDDEN, "ear-status-inconsistent"),
        E::Expired { .. } => (S::FORBIDDEN, "ear-expired"),
        E::NotYetValid { .. } => (S::FORBIDDEN, "ear-not-yet-valid"),
        E::OtherDevice { .. } => (S::FORBIDDEN, "ear-other-device"),
        E::OtherNonce => (S::FORBIDDEN, "ear-other-nonce"),
        E::OtherBundleKey => (S::FORBIDDEN, "ear-other-bundle-key"),
        E::MissingBundleKey => (S::FORBIDDEN, "ear-missing-bundle-key"),
        E::NotAffirming { .. } => (S::FORBIDDEN, "ear-not-affirming"),
        E::Build(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// A short human title per problem slug.
fn title_of(slug: &str) -> String {
    let mut title = slug.replace('-', " ");
    if let Some(first) = title.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    title
}

impl IntoResponse for MnoError {
    fn into_response(self) -> Response {
        let problem = self.to_problem();
        if problem.status_code().is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::info!(problem = %problem.type_uri, status = problem.status, "request refused");
        }
        problem.into_response()
    }
}

impl From<Problem> for MnoError {
    fn from(p: Problem) -> Self {
        MnoError::Refused(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_their_detail() {
        let p = MnoError::Internal("secret detail").to_problem();
        assert_eq!(p.status, 500);
        assert!(p.detail.is_none());
        let p = MnoError::AkaResMismatch.to_problem();
        assert_eq!(p.status, 403);
        assert_eq!(p.type_uri, problem_type("aka-res-mismatch"));
        assert_eq!(p.title, "Aka res mismatch");
    }

    #[test]
    fn ear_checks_have_their_own_types() {
        let a = MnoError::Ear(EarError::BadSignature).to_problem().type_uri;
        let b = MnoError::Ear(EarError::OtherNonce).to_problem().type_uri;
        assert_ne!(a, b);
    }
}
