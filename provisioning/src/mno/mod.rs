//! The mobile network operators of TR 33.812 alternative 3d (DESIGN.md §1 "MNO-A / MNO-B";
//! docs/flow.md): one library and HTTPS service that runs as the old operator (MNO-A, a
//! campaign's `from`) or the new one (MNO-B, its `to`). `docs/mno.md` documents the
//! configuration, every endpoint, the store and its encryption at rest.
//!
//! Layout:
//! - [`config`]: the TOML configuration, the storage key.
//! - [`api`]: the HTTP messages (JSON and CBOR) and routes.
//! - [`client`]: a typed client of the API (for the RO, MNO-B → MNO-A, tests).
//! - [`service`]: the HTTPS service: router, handlers, `serve`.
//! - `operator`: the operator, manufacturing support, campaigns, reports, status.
//! - `old_operator`: IMSI list reception and "activate TRE" (steps 3–4).
//! - `new_operator`: prepare, register, EAR → signed profile, AKA (steps 3, 6–10, 12).
//! - [`auc`]: the AuC: vectors, SQN management, resynchronisation (TS 33.102).
//! - `attach`: a vector for a subscription in service (an attach check).
//! - [`pool`]: the IMSI range and ICCIDs, durable allocation.
//! - `records`: subscriber records, encrypted secrets.
//! - `seal`: AES-256-GCM at rest with row- and field-bound AAD.
//! - [`store`]: the store on SQLite or PostgreSQL, its schemas.
//! - [`error`]: the error type and its problem documents.

pub mod api;
mod attach;
pub mod auc;
pub mod client;
pub mod config;
pub mod error;
mod metrics;
mod new_operator;
mod old_operator;
mod operator;
pub mod pool;
mod records;
mod seal;
pub mod service;
pub mod store;

pub use api::CampaignId;
pub use client::MnoClient;
pub use config::{ConfigError, EarSettings, MnoConfig, StorageKey};
pub use error::MnoError;
pub use operator::Operator;
pub use pool::PoolConfig;
pub use records::{SubscriberStatus, SubscriberView};
pub use service::{openapi, router, run, serve, serve_operator};
pub use store::Store;
