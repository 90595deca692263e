//! The error type of the transport crate: one variant per thing a caller can act on.

use crate::problem::Problem;

/// Why a TLS configuration could not be built, a server could not run, or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{what}: no certificate")]
    NoCertificate { what: String },
    #[error("private key: {0}")]
    PrivateKey(String),
    #[error("PEM: {0}")]
    Pem(String),
    #[error("no trust anchors configured")]
    NoTrustAnchors,
    #[error("trust anchor rejected: {0}")]
    TrustAnchor(String),
    #[error("client certificate verifier: {0}")]
    ClientVerifier(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The peer answered with an RFC 7807 problem document.
    #[error("{0}")]
    Problem(Problem),
    /// The peer answered with an error status and no problem document.
    #[error("HTTP status {status} without a problem document")]
    Status { status: u16 },
    #[error("response body larger than {limit} bytes")]
    ResponseTooLarge { limit: usize },
    #[error("response body: {0}")]
    Decode(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
