//! tresor's PVA, the platform validation authority of 3GPP TR 33.812 (DESIGN.md §1–§3):
//! it enrols a device's AK by credential activation against its certified EK, challenges
//! it with single-use nonces, appraises its TPM evidence (quote, event log, certified
//! bundle key) against reference values and policy, and signs the result as an EAR that
//! MNO-B and the DPF verify with `protocol::ear`.
//!
//! Stricter than Keylime, go-attestation and trustee where they are lenient: the AK is the
//! enrolled one, never the one in the evidence; every check fails closed with its own
//! error ([`AppraisalError`]); policy can only add restrictions; a PVA without its signing
//! key does not start; nonces are single-use, and a restart refuses every nonce issued
//! before it. `docs/appraisal.md` lists each check, its error and the attack it stops.
//!
//! Layout:
//! - [`config`]: the configuration file.
//! - [`store`]: SQLite (WAL, synchronous=FULL, group commit), schema versioned; opened
//!   under `storage`'s policy (an empty or foreign file is refused).
//! - [`enrol`]: EK certificate validation, AK checks, MakeCredential, activation, history.
//! - [`nonce`]: challenges: MACed under a key held in memory only; issue, consume.
//! - [`marks`]: the devices' TPM-clock high-water marks, in memory, written behind.
//! - [`appraisal`]: the checks, one module per family (quote, PCRs, event log, clock,
//!   bundle key).
//! - [`refvalues`]: reference values (TOML), their derivation from an image, predictions.
//! - [`policy`]: the appraisal policy and version comparison.
//! - [`ear`]: EAR claims of an appraisal, and the signer.
//! - [`pva`]: [`Pva`], the library object every entry point calls.
//! - [`service`]: the HTTPS API (axum on `transport`).
//! - [`checkquote`]: `tpm2_checkquote` semantics for `tresor pva check-quote`.
//! - [`bench`]: throughput measurement for `tresor bench appraisal`.
//! - [`error`]: every error enum.

#![forbid(unsafe_code)]

pub mod appraisal;
pub mod bench;
pub mod checkquote;
pub mod config;
pub mod ear;
pub mod ek_allow;
pub mod enrol;
pub mod error;
pub mod marks;
mod metrics;
pub mod nonce;
mod policies;
pub mod policy;
pub mod pva;
pub mod refvalues;
pub mod service;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::Config;
pub use ear::EarSigner;
pub use error::{AppraisalError, ChallengeError, EnrolmentError, Error, Outcome, StoreError};
pub use pva::{Appraised, Pva, Settings};
pub use refvalues::ReferenceValues;
pub use store::OpenMode;

/// Runs the PVA of `config` over HTTPS on `listener` until `shutdown` completes. Start-up
/// (signing key, TLS identity, roots, policies, store) fails before anything is served.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (pva, tls) = start(config, OpenMode::CreateIfMissing).await?;
    serve_pva(pva, tls, listener, shutdown).await
}

/// Everything [`serve`] does before serving: TLS configuration, signing key, roots,
/// policies, and the store opened with `mode`. A caller that announces readiness (`tresor
/// serve pva --ready-file`) does so only after this succeeded, then calls [`serve_pva`].
pub async fn start(
    config: Config,
    mode: OpenMode,
) -> Result<(Arc<Pva>, Arc<rustls::ServerConfig>), Error> {
    let tls = config.tls()?;
    let pva = tokio::task::spawn_blocking(move || Pva::from_config_with(&config, mode))
        .await
        .map_err(|e| Error::Config(format!("start-up task failed: {e}")))??;
    Ok((Arc::new(pva), tls))
}

/// [`serve`] with an already built [`Pva`] and TLS configuration (tests, embedding).
pub async fn serve_pva(
    pva: Arc<Pva>,
    tls: Arc<rustls::ServerConfig>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    transport::serve(listener, tls, service::router(pva), shutdown).await?;
    Ok(())
}
