//! The PVA as a library object: enrolment, challenges and appraisal over one store, one set
//! of manufacturer roots, the configured appraisal policies and the EAR signer. The HTTP
//! service, the benchmark and the tests all call these methods; every method takes the
//! current time so that expiry can be tested without waiting.
//!
//! Cached per device, never per evidence: the parsed enrolment (AK public area) stays in
//! memory after its first use. Held in memory only: the nonce key and the outstanding
//! nonces (`nonce`), and the devices' clock marks, which are written behind (`marks`).
//! Nothing on the appraisal path waits for the disk.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use protocol::ear::{EarClaims, TrustTier, VerifierId};
use protocol::evidence::Evidence;
use protocol::pva_api::{
    ActivateRequest, ActivateResponse, ChallengeRequest, ChallengeResponse, EnrolRequest,
    EnrolResponse,
};
use protocol::role::Role;
use protocol::x509::TrustAnchors;
use protocol::{DeviceId, Nonce};
use serde_bytes::ByteBuf;

pub use crate::appraisal::clock::ClockTolerance;
use crate::appraisal::{self, Findings};
use crate::config::Config;
use crate::ear::{self as ear_signing, EarSigner};
use crate::ek_allow::EkAllowList;
use crate::enrol::{self, EnrolledDevice};
use crate::error::{AppraisalError, ChallengeError, Error, StoreError};
use crate::marks::{self, ClockMarks};
use crate::metrics::PvaMetrics;
use crate::nonce::{self, Nonces};
use crate::policies::PolicySet;
use crate::refvalues::ReferenceValues;
use crate::store::{self, EnrolmentRecord, OpenMode, SeenClock, Store};

/// Who may reach enrolment (`/v1/enrol`, `/v1/activate`) over HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrolmentAccess {
    /// Anyone, with or without a client certificate (`open_enrolment = true`).
    pub open: bool,
    /// Otherwise: clients whose certificate carries one of these roles (`enrol_roles`).
    pub roles: Vec<Role>,
}

impl Default for EnrolmentAccess {
    fn default() -> Self {
        Self { open: false, roles: vec![Role::Ro, Role::Operator] }
    }
}

/// Tunables of a PVA.
#[derive(Clone, Debug)]
pub struct Settings {
    pub nonce_ttl: Duration,
    pub enrolment_ttl: Duration,
    pub max_outstanding_challenges: u32,
    /// The policy a challenge gets when it names none; `None`: the only one configured.
    pub default_policy: Option<String>,
    pub verifier_id: VerifierId,
    pub enrolment: EnrolmentAccess,
    /// How far a running TPM's clock may lag the wall time (`docs/appraisal.md` "Clock").
    pub clock: ClockTolerance,
    /// Time between two writes of raised clock marks to the store.
    pub mark_flush_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            nonce_ttl: nonce::DEFAULT_TTL,
            enrolment_ttl: Duration::from_secs(300),
            max_outstanding_challenges: nonce::DEFAULT_MAX_OUTSTANDING,
            default_policy: None,
            enrolment: EnrolmentAccess::default(),
            clock: ClockTolerance::default(),
            mark_flush_interval: marks::DEFAULT_FLUSH_INTERVAL,
            verifier_id: VerifierId {
                developer: "https://example.invalid/tresor".into(),
                build: concat!("tresor-pva/", env!("CARGO_PKG_VERSION")).into(),
            },
        }
    }
}

/// The outcome of an appraisal of authentic, fresh evidence.
#[derive(Clone, Debug)]
pub struct Appraised {
    /// The signed EAR (COSE_Sign1).
    pub ear: Vec<u8>,
    pub claims: EarClaims,
    /// The checks that failed, in order; empty when affirming.
    pub failures: Vec<AppraisalError>,
}

impl Appraised {
    pub fn status(&self) -> TrustTier {
        self.claims.appraisal.status()
    }
}

/// A platform validation authority.
pub struct Pva {
    store: Arc<Store>,
    manufacturer_roots: TrustAnchors,
    /// Replaced whole by [`Pva::reload_policies`].
    policies: RwLock<Arc<PolicySet>>,
    /// The configuration file [`Pva::reload`] reads again.
    source: Option<std::path::PathBuf>,
    /// EKs that may enrol without a certificate.
    ek_allow_list: EkAllowList,
    signer: EarSigner,
    settings: Settings,
    devices: RwLock<HashMap<DeviceId, Arc<EnrolledDevice>>>,
    nonces: Nonces,
    marks: ClockMarks,
    metrics: PvaMetrics,
}

impl std::fmt::Debug for Pva {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pva").field("policies", &self.policy_ids()).finish_non_exhaustive()
    }
}

impl Pva {
    /// A PVA from its parts. At least one policy; the default policy must exist.
    pub fn new(
        store: Store,
        manufacturer_roots: TrustAnchors,
        policies: Vec<ReferenceValues>,
        signer: EarSigner,
        settings: Settings,
    ) -> Result<Self, Error> {
        if manufacturer_roots.is_empty() {
            return Err(Error::Config("no TPM manufacturer roots".into()));
        }
        let policies = PolicySet::build(policies, settings.default_policy.as_deref(), None)?;
        let store = Arc::new(store);
        let (ttl, max) = (settings.nonce_ttl, settings.max_outstanding_challenges);
        let nonces = if store.is_shared() {
            Nonces::shared(store.clone(), ttl, max)?
        } else {
            Nonces::new(ttl, max)?
        };
        let marks = ClockMarks::start(store.clone(), settings.mark_flush_interval)?;
        Ok(Self {
            store,
            manufacturer_roots,
            policies: RwLock::new(Arc::new(policies)),
            source: None,
            ek_allow_list: EkAllowList::default(),
            signer,
            settings,
            devices: RwLock::new(HashMap::new()),
            nonces,
            marks,
            metrics: PvaMetrics::new(),
        })
    }

    /// Loads everything `config` names; any missing piece is an error.
    pub fn from_config(config: &Config) -> Result<Self, Error> {
        Self::from_config_with(config, OpenMode::CreateIfMissing)
    }

    /// [`Pva::from_config`], opening the store with `mode` (`--init` initialises an empty
    /// store file).
    pub fn from_config_with(config: &Config, mode: OpenMode) -> Result<Self, Error> {
        Self::from_config_using(config, || Store::open_at(&config.database, mode))
    }

    /// Loads everything `config` names as a start does, with the store in memory, then
    /// judges the store file without writing to it (`tresor serve pva --check`).
    pub fn check_config(config: &Config) -> Result<storage::StoreCheck, Error> {
        Self::from_config_using(config, Store::open_in_memory)?;
        Ok(Store::check_at(&config.database)?)
    }

    /// Loads the files `config` names, then opens the store with `open_store`, last.
    fn from_config_using(
        config: &Config,
        open_store: impl FnOnce() -> Result<Store, StoreError>,
    ) -> Result<Self, Error> {
        let signer = EarSigner::load(&config.signing_certificate, &config.signing_key)?
            .with_profile(config.ear_profile);
        let roots = TrustAnchors::from_dir(&config.manufacturer_roots)
            .map_err(|e| Error::Config(format!("manufacturer roots: {e}")))?;
        let policies = config
            .policies
            .iter()
            .map(|p| ReferenceValues::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        let store = open_store()?;
        let settings = Settings {
            nonce_ttl: config.nonce_ttl,
            enrolment_ttl: config.enrolment_ttl,
            max_outstanding_challenges: config.max_outstanding_challenges,
            default_policy: config.default_policy.clone(),
            enrolment: EnrolmentAccess {
                open: config.open_enrolment,
                roles: config.enrol_roles.clone(),
            },
            clock: config.clock,
            ..Settings::default()
        };
        let mut pva = Self::new(store, roots, policies, signer, settings)?;
        pva.source = config.source.clone();
        if let Some(path) = &config.ek_allow_list {
            pva = pva.with_ek_allow_list(EkAllowList::load(path)?);
        }
        Ok(pva)
    }

    /// Admits the EKs of `list` without an EK certificate (`verifier::ek_allow`).
    pub fn with_ek_allow_list(mut self, list: EkAllowList) -> Self {
        if !list.is_empty() {
            tracing::warn!(eks = list.len(), "EKs on the allow-list enrol without a certificate");
        }
        self.ek_allow_list = list;
        self
    }

    pub fn policy(&self, id: &str) -> Option<Arc<ReferenceValues>> {
        self.policy_set().get(id).map(|(_, p)| p)
    }

    pub fn default_policy(&self) -> String {
        self.policy_set().default_id().to_owned()
    }

    /// The ids of the configured policies.
    pub fn policy_ids(&self) -> Vec<String> {
        self.policy_set().ids()
    }

    fn policy_set(&self) -> Arc<PolicySet> {
        // A poisoned lock still holds a complete set: sets are replaced whole.
        match self.policies.read() {
            Ok(set) => Arc::clone(&set),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the policies with `policies` (default `default`): all or nothing, the old
    /// set stays on any error. Nonces already issued keep their policy by id (`policies`
    /// module); returns the ids now configured.
    pub fn reload_policies(
        &self,
        policies: Vec<ReferenceValues>,
        default: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        let mut current = self
            .policies
            .write()
            .map_err(|_| Error::Config("the policy set lock is poisoned".into()))?;
        let next = PolicySet::build(policies, default, Some(&current))?;
        let ids = next.ids();
        *current = Arc::new(next);
        tracing::info!(policies = ?ids, "policies reloaded");
        Ok(ids)
    }

    /// [`Pva::reload_policies`] from the configuration file the PVA was started from (its
    /// `policies` and `default_policy`; every other setting needs a restart).
    pub fn reload(&self) -> Result<Vec<String>, Error> {
        let path = self.source.as_deref().ok_or_else(|| {
            Error::Config("this PVA was not started from a configuration file".into())
        })?;
        let config = Config::load(path)?;
        let policies = config
            .policies
            .iter()
            .map(|p| ReferenceValues::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        self.reload_policies(policies, config.default_policy.as_deref())
    }

    /// Step 5: validate the EK and AK, answer with a credential for the AK.
    pub fn enrol(&self, req: &EnrolRequest, now: SystemTime) -> Result<EnrolResponse, Error> {
        self.enrol_for(req, None, now)
    }

    /// [`Pva::enrol`] asked for by the relying party with role `requested_by` (the HTTP
    /// service passes the client certificate's); the device's history records it.
    pub fn enrol_for(
        &self,
        req: &EnrolRequest,
        requested_by: Option<&str>,
        now: SystemTime,
    ) -> Result<EnrolResponse, Error> {
        let result = enrol::begin(
            &self.store,
            &enrol::EkTrust { roots: &self.manufacturer_roots, allowed: &self.ek_allow_list },
            req,
            requested_by,
            now,
            self.settings.enrolment_ttl,
        );
        self.metrics.enrolled(&result);
        result
    }

    /// Step 5, second half: the secret came back; the AK is enrolled.
    pub fn activate(
        &self,
        req: &ActivateRequest,
        now: SystemTime,
    ) -> Result<ActivateResponse, Error> {
        let activated = enrol::activate(&self.store, req, now);
        self.metrics.enrolled(&activated);
        let record = activated?;
        let device = Arc::new(EnrolledDevice::from_record(&record)?);
        self.devices_write().insert(record.device_id.clone(), device);
        Ok(ActivateResponse { device_id: record.device_id, ak_name: ByteBuf::from(record.ak_name) })
    }

    /// Every enrolment of `device` the store holds, oldest first.
    pub fn enrolments(&self, device: &DeviceId) -> Result<Vec<EnrolmentRecord>, Error> {
        let id = device.clone();
        Ok(self.store.call(move |c| store::enrolments(c, &id))?)
    }

    /// The device's TPM-clock high-water mark as this PVA holds it (in memory; the store's
    /// copy may be up to one flush interval older).
    pub fn clock_mark(&self, device: &DeviceId) -> Result<Option<SeenClock>, Error> {
        self.device(device)?;
        Ok(self.marks.get(device))
    }

    /// Step 8: a nonce for an enrolled device.
    pub fn challenge(
        &self,
        req: &ChallengeRequest,
        now: SystemTime,
    ) -> Result<ChallengeResponse, Error> {
        let result = self.issue_challenge(req, now);
        self.metrics.challenged(&result);
        result
    }

    fn issue_challenge(
        &self,
        req: &ChallengeRequest,
        now: SystemTime,
    ) -> Result<ChallengeResponse, Error> {
        let set = self.policy_set();
        let policy_id = req.policy_id.as_deref().unwrap_or(set.default_id());
        let (index, policy) =
            set.get(policy_id).ok_or_else(|| ChallengeError::UnknownPolicy(policy_id.into()))?;
        match self.device(&req.device_id) {
            Ok(_) => {}
            Err(Error::Appraisal(AppraisalError::UnknownDevice(id))) => {
                return Err(ChallengeError::UnknownDevice(id).into());
            }
            Err(other) => return Err(other),
        }
        let ch = self.nonces.issue(&req.device_id, index, now)?;
        Ok(ChallengeResponse {
            device_id: ch.device_id,
            nonce: ch.nonce,
            expires_at: ch.expires_at_ms / 1000,
            policy_id: policy.id().to_owned(),
            pcr_selection: policy.policy().selection.to_string(),
        })
    }

    /// Steps 8–9: appraise CBOR evidence. `Err` is a refusal (no EAR); `Ok` carries a
    /// signed EAR, affirming or not.
    pub fn appraise(&self, evidence: &[u8], now: SystemTime) -> Result<Appraised, Error> {
        let timer = std::time::Instant::now();
        let result = Evidence::from_cbor(evidence)
            .map_err(|e| AppraisalError::EvidenceMalformed(e.to_string()).into())
            .and_then(|evidence| self.appraise_evidence(&evidence, now));
        self.metrics.appraised(&result, timer.elapsed());
        match &result {
            Ok(a) => tracing::info!(
                device = %a.claims.appraisal.device_id,
                status = %a.status(),
                failures = a.failures.len(),
                ms = timer.elapsed().as_millis() as u64,
                "appraised"
            ),
            Err(e) => tracing::info!(error = %e, "appraisal refused"),
        }
        result
    }

    /// The PVA's metrics, encoded (`GET /metrics`).
    pub fn metrics_response(&self) -> axum::response::Response {
        let enrolled = self.devices.read().map_or(0, |d| d.len());
        self.metrics.response(enrolled)
    }

    /// [`Pva::appraise`] of decoded evidence.
    pub fn appraise_evidence(
        &self,
        evidence: &Evidence,
        now: SystemTime,
    ) -> Result<Appraised, Error> {
        let device = self.device(&evidence.device_id)?;
        let auth = appraisal::authenticate(evidence, &device)?;
        let consumed = self.nonces.consume(&auth.device_id, &auth.nonce, now)??;
        // The nonce is used from here on: whatever happens next, no instance accepts it
        // again (a lone PVA's key dies with its process; shared nonces are deleted).
        let refs = self.policy_set().by_index(consumed.policy).ok_or_else(|| {
            Error::Config(format!(
                "the policy of this nonce (index {}) was removed by a reload",
                consumed.policy
            ))
        })?;
        let refs = refs.as_ref();
        let observed = self.observe_clock(&auth, consumed.issued_at_ms, now)?;
        let mut findings: Findings =
            appraisal::evaluate(&auth, refs, observed.previous.map(|p| p.mark));
        if let Some(behind) = observed.behind {
            findings.failures.push(behind);
            findings.vector = appraisal::vector_of(&findings.failures, refs.policy().bundle_key);
        }
        let claims = ear_signing::claims(&auth, &findings, refs, &self.settings.verifier_id, now)?;
        let ear = self.signer.sign(&claims)?;
        Ok(Appraised { ear, claims, failures: findings.failures })
    }

    /// Makes `nonce`, which this PVA issued to `device`, outstanding again, so that recorded
    /// evidence qualified with it can be appraised again (until the nonce expires). For
    /// benchmarks and tests only: it defeats single use, and the HTTP service never calls
    /// it. A nonce this PVA did not issue is refused ([`AppraisalError::NonceUnknown`]).
    #[doc(hidden)]
    pub fn reissue_nonce_for_benchmark(
        &self,
        device: &DeviceId,
        nonce: Nonce,
    ) -> Result<(), Error> {
        Ok(self.nonces.reissue(device, &nonce)??)
    }

    /// Reads the device's clock mark, checks the quote's clock against it and the wall time,
    /// and raises it.
    pub(crate) fn observe_clock(
        &self,
        auth: &appraisal::Authenticated,
        issued_at_ms: u64,
        now: SystemTime,
    ) -> Result<marks::Observed, Error> {
        Ok(self.marks.observe(
            &auth.device_id,
            auth.clock_mark(),
            issued_at_ms,
            nonce::unix_ms(now),
            self.settings.clock,
        )?)
    }

    /// The store (benchmarks measure its writes).
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub(crate) fn nonces(&self) -> &Nonces {
        &self.nonces
    }

    /// Whether the store answers (for health checks).
    pub fn store_healthy(&self) -> bool {
        self.store.call(|c| Ok(c.query_one("SELECT 1", &[])?)).is_ok()
    }

    pub(crate) fn signer(&self) -> &EarSigner {
        &self.signer
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The enrolled device, from the cache or the store.
    ///
    /// Instances sharing a store read it every time: another instance may have enrolled
    /// the device again (another AK) or raised its clock mark since.
    pub(crate) fn device(&self, id: &DeviceId) -> Result<Arc<EnrolledDevice>, Error> {
        let shared = self.store.is_shared();
        if !shared && let Some(d) = self.devices_read().get(id) {
            return Ok(d.clone());
        }
        let key = id.clone();
        let (record, mark) = self
            .store
            .call(move |c| store::get_device(c, &key))?
            .ok_or_else(|| AppraisalError::UnknownDevice(id.clone()))?;
        self.marks.load(id, mark);
        let device = Arc::new(EnrolledDevice::from_record(&record)?);
        self.devices_write().insert(id.clone(), device.clone());
        Ok(device)
    }

    fn devices_read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<DeviceId, Arc<EnrolledDevice>>> {
        self.devices.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn devices_write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<DeviceId, Arc<EnrolledDevice>>> {
        self.devices.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
