//! HTTPS between tresor's network roles (DESIGN.md §3 "Transport"): rustls with the ring
//! provider, mutual TLS between MNOs, RO and PVA with certificates under the CI, server-only
//! TLS towards devices (which authenticate by attestation), RFC 7807 problem documents.
//!
//! Layout:
//! - [`tls`]: identities (chain + key), server and client configurations, PEM loading.
//! - [`server`]: the HTTPS serve loop and the client's [`PeerIdentity`] for handlers.
//! - [`client`]: the reqwest client over rustls and problem-aware response decoding.
//! - [`negotiate`]: request and answer bodies in CBOR or JSON, by Content-Type and Accept.

//! - [`openapi`]: what every role's OpenAPI 3.1 document shares, and its `/openapi.json` route.
//! - [`problem`]: problem documents (`application/problem+json`) and the body-size limit.
//! - [`retry`]: exponential backoff with jitter for clients that ask a peer again.

#![forbid(unsafe_code)]

pub mod client;
pub mod health;
pub mod metrics;
pub mod negotiate;
pub mod openapi;
pub mod problem;
pub mod retry;
pub mod server;
pub mod tls;

mod deadline;
mod error;

pub use error::{Error, Result};
pub use problem::{Problem, limit_body};
pub use server::{
    AcceptLimits, LISTEN_BACKLOG, PeerIdentity, ServeOptions, accept_until, bind, serve, serve_with,
};
pub use tls::{ClientAuth, Identity, ServerRole, client_config, crypto_provider, server_config};
