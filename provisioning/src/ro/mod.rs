//! The registration operator (TR 33.812 §5.1.3.5.3): the DRF, where devices attach and are
//! registered with their new operator; the relay between the PVA and the devices; and the
//! DPF, which releases a profile only against a verified attestation result and checks the
//! install receipt. It drives each device of a campaign through the state machine of
//! `state.rs`, persisted in SQLite at every step, and owes the operators its reports
//! through a durable outbox (docs/flow.md).
//!
//! Layout:
//! - `config`: the configuration file.
//! - `store`: campaigns, device states, step timings, enrolled AKs, the outbox (SQLite or
//!   PostgreSQL).
//! - `state`: the per-device state machine.
//! - `campaign`: campaign creation (steps 2–3) as a resumable step machine, cancel, status.
//! - `device`: the device API's logic: tasks, signed orders, answers (steps 4–12).
//! - `steps`: the peer steps between the device's answers, retries and abandonment.
//! - `outbox`: delivery of reports with retries until acknowledged.
//! - `leases`: what one of several instances sharing a store holds for a while (a device's
//!   steps, a campaign's creation).
//! - `dpf`: the DPF's release and receipt checks.
//! - `peers`: the PVA and operator clients.
//! - `service`: the HTTPS routes.

mod admission;
mod campaign;
mod channel;
mod config;
mod device;
mod dpf;
mod error;
pub mod events;
mod leases;
mod metrics;
mod outbox;
mod peers;
mod service;
mod state;
mod steps;
mod store;
pub mod webhooks;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::DeviceId;
use protocol::bundle::CoseSigner;
use protocol::x509::TrustAnchors;
use tokio::net::TcpListener;

pub use campaign::{
    CampaignPage, CampaignReport, CampaignSummary, DeviceReport, NewCampaign, StepTime, Summary,
};
pub use config::{Peers as PeerUrls, PkiPaths, RoConfig, StorePath};
pub use dpf::{Dpf, ExpectedReceipt};
pub use error::RoError;
pub use events::Event;
pub use service::openapi;
pub use state::{DeviceState, STEP_NAMES, step_name};
pub use store::RoStore;
pub use webhooks::WebhookConfig;

/// The RO's TLS identity and the CI root, in the forms rustls and `protocol::x509` take,
/// and its signing identity (the same key and certificate) for its orders.
struct Tls {
    identity: transport::Identity,
    ci_der: Vec<rustls_pki_types::CertificateDer<'static>>,
    ci: TrustAnchors,
    signer: CoseSigner,
}

impl Tls {
    fn load(config: &RoConfig) -> Result<Self, RoError> {
        let identity =
            transport::Identity::from_pem_files(&config.pki.certificate, &config.pki.key)
                .map_err(|e| RoError::Config(format!("RO certificate and key: {e}")))?;
        let ci_der = transport::tls::roots_from_pem_file(&config.pki.ci_root)
            .map_err(|e| RoError::Config(format!("CI root: {e}")))?;
        let ci = TrustAnchors::from_file(&config.pki.ci_root)
            .map_err(|e| RoError::Config(format!("CI root: {e}")))?;
        let key = std::fs::read_to_string(&config.pki.key)
            .map_err(|e| RoError::Config(format!("RO key {}: {e}", config.pki.key.display())))?;
        let chain: Vec<Vec<u8>> = identity.chain().iter().map(|c| c.to_vec()).collect();
        let signer = CoseSigner::from_pkcs8_pem(&key, chain)
            .map_err(|e| RoError::Config(format!("RO signing key: {e}")))?;
        Ok(Self { identity, ci_der, ci, signer })
    }
}

/// The running RO: its store, its peers, and a lock per device.
pub struct Ro {
    config: RoConfig,
    store: RoStore,
    peers: peers::Peers,
    dpf: Dpf,
    /// Signs the commit and abort orders.
    signer: CoseSigner,
    manufacturer_roots: TrustAnchors,
    locks: Mutex<HashMap<DeviceId, Arc<tokio::sync::Mutex<()>>>>,
    /// Woken when work appears (a campaign becomes ready), so long polls answer at once.
    wake: tokio::sync::Notify,
    /// Woken when one device's own work changes (after its answer), so that only its long
    /// poll looks again: waking every poll on every answer made a fleet's polls storm the
    /// store.
    device_wakes: Mutex<HashMap<DeviceId, Arc<tokio::sync::Notify>>>,
    /// Woken when a message is queued in the outbox.
    outbox_wake: tokio::sync::Notify,
    /// Campaigns whose creation this process is driving.
    driving: Mutex<HashSet<String>>,
    /// The device channel's nonce key, spent nonces and pending AK bindings (in memory, or
    /// in a shared store).
    channel: channel::Channel,
    /// This instance among those sharing a store: the holder of its leases.
    instance: String,
    metrics: metrics::RoMetrics,
    /// Paces devices into their change (memory only).
    admission: admission::Admission,
    webhooks: webhooks::Webhooks,
    /// Every event as it is committed, for the event stream (memory only).
    events: tokio::sync::broadcast::Sender<events::Event>,
}

/// Events an event-stream subscriber may fall behind by before it is told it lost some.
const EVENT_BUFFER: usize = 4096;

impl std::fmt::Debug for Ro {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ro").field("listen", &self.config.listen).finish_non_exhaustive()
    }
}

impl Ro {
    /// Opens the store (creating it only where no file exists) and loads the certificates.
    pub fn new(config: RoConfig) -> Result<Self, RoError> {
        Self::open(config, storage::OpenMode::CreateIfMissing)
    }

    /// As [`Ro::new`], with the store opened in `mode` (`tresor serve ro --init`).
    pub fn open(config: RoConfig, mode: storage::OpenMode) -> Result<Self, RoError> {
        Self::open_using(config, |config| RoStore::open_at(&config.store.location(), mode))
    }

    /// Loads everything `config` names as a start does, with the store in memory, then
    /// judges the store file without writing to it (`tresor serve ro --check`).
    pub fn check_config(config: RoConfig) -> Result<storage::StoreCheck, RoError> {
        let location = config.store.location();
        Self::open_using(config, |_| RoStore::open_in_memory())?;
        RoStore::check_at(&location)
    }

    /// Loads the files `config` names, then opens the store with `open_store`, last.
    fn open_using(
        config: RoConfig,
        open_store: impl FnOnce(&RoConfig) -> Result<RoStore, RoError>,
    ) -> Result<Self, RoError> {
        let tls = Tls::load(&config)?;
        let timeout = config.peer_timeout();
        let client = |server: protocol::role::Expected| {
            let server = transport::ServerRole::Expected(server);
            transport::client::client_builder(&tls.ci_der, Some(&tls.identity), &server)
                .map(|b| b.timeout(timeout).connect_timeout(timeout.min(Duration::from_secs(10))))
                .and_then(|b| b.build().map_err(transport::Error::from))
                .map_err(|e| RoError::Config(format!("TLS client: {e}")))
        };
        let peers = peers::Peers::new(&config, client)?;
        let webhooks = webhooks::Webhooks::load(&config.webhooks, timeout)?;
        let manufacturer_roots = if config.pki.manufacturer_roots.is_dir() {
            TrustAnchors::from_dir(&config.pki.manufacturer_roots)
        } else {
            TrustAnchors::from_file(&config.pki.manufacturer_roots)
        }
        .map_err(|e| RoError::Config(format!("manufacturer roots: {e}")))?;
        let store = open_store(&config)?;
        let channel = if store.is_shared() {
            channel::Channel::shared(&store)?
        } else {
            channel::Channel::new()?
        };
        Ok(Self {
            store,
            instance: leases::instance_id()?,
            peers,
            dpf: Dpf::new(tls.ci),
            signer: tls.signer,
            manufacturer_roots,
            locks: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            device_wakes: Mutex::new(HashMap::new()),
            outbox_wake: tokio::sync::Notify::new(),
            driving: Mutex::new(HashSet::new()),
            channel,
            metrics: metrics::RoMetrics::new(),
            admission: admission::Admission::new(config.max_in_flight),
            webhooks,
            events: tokio::sync::broadcast::channel(EVENT_BUFFER).0,
            config,
        })
    }

    /// The device's own wake-up (see `device_wakes`).
    fn device_wake(&self, device: &DeviceId) -> Arc<tokio::sync::Notify> {
        let mut wakes = self.device_wakes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        wakes.entry(device.clone()).or_default().clone()
    }

    /// Serializes the handling of one device: a device's answers are applied one at a time,
    /// in this process by a lock, across the instances sharing a store by a lease
    /// (`leases`).
    async fn lock(&self, device: &DeviceId) -> Result<leases::DeviceGuard<'_>, RoError> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            locks.entry(device.clone()).or_default().clone()
        };
        let local = lock.lock_owned().await;
        self.lease_device(device, local).await
    }
}

/// Runs the RO on `listener` until `shutdown` completes. Devices connect without client
/// certificates; operators present theirs (mutual TLS, optional at the handshake, required
/// by the campaign routes).
pub async fn serve(
    config: RoConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RoError> {
    serve_ro(Arc::new(Ro::new(config)?), listener, shutdown).await
}

/// Runs an opened RO (its store is open: a `--ready-file` may be written before this).
/// Besides the routes, it resumes what a previous run left: the creation of campaigns
/// still preparing, and the delivery of the outbox.
pub async fn serve_ro(
    ro: Arc<Ro>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RoError> {
    let keys = Tls::load(&ro.config)?;
    let tls =
        transport::server_config(&keys.identity, transport::ClientAuth::Optional(keys.ci_der))
            .map_err(|e| RoError::Config(format!("TLS: {e}")))?;
    ro.resume_creations()?;
    let outbox = tokio::spawn(Arc::clone(&ro).run_outbox());
    let served = transport::serve(listener, tls, service::router(Arc::clone(&ro)), shutdown)
        .await
        .map_err(|e| RoError::Config(format!("serve: {e}")));
    outbox.abort();
    served
}
