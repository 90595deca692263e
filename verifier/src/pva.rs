//! The PVA as a library object: enrolment, challenges and appraisal over one store, one set
//! of manufacturer roots, the configured appraisal policies and the EAR signer. The HTTP
//! service, the benchmark and the tests all call these methods; every method takes the
//! current time so that expiry can be tested without waiting.
//!
//! Cached per device, never per evidence: the parsed enrolment (AK public area) stays in
//! memory after its first use.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use protocol::ear::{EarClaims, TrustTier, VerifierId};
use protocol::evidence::Evidence;
use protocol::pva_api::{
    ActivateRequest, ActivateResponse, ChallengeRequest, ChallengeResponse, EnrolRequest,
    EnrolResponse,
};
use protocol::x509::TrustAnchors;
use protocol::{DeviceId, Nonce};
use serde_bytes::ByteBuf;

use crate::appraisal::{self, Findings};
use crate::config::Config;
use crate::ear::{self as ear_signing, EarSigner};
use crate::enrol::{self, EnrolledDevice};
use crate::error::{AppraisalError, ChallengeError, Error};
use crate::nonce::{self, Challenge};
use crate::refvalues::ReferenceValues;
use crate::store::{self, OpenMode, Store};

/// Tunables of a PVA.
#[derive(Clone, Debug)]
pub struct Settings {
    pub nonce_ttl: Duration,
    pub enrolment_ttl: Duration,
    pub max_outstanding_challenges: u32,
    /// The policy a challenge gets when it names none; `None`: the only one configured.
    pub default_policy: Option<String>,
    pub verifier_id: VerifierId,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            nonce_ttl: nonce::DEFAULT_TTL,
            enrolment_ttl: Duration::from_secs(300),
            max_outstanding_challenges: nonce::DEFAULT_MAX_OUTSTANDING,
            default_policy: None,
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

/// Every cleanup of expired nonces runs after this many issued.
const CLEANUP_EVERY: u64 = 256;

/// A platform validation authority.
pub struct Pva {
    store: Store,
    manufacturer_roots: TrustAnchors,
    policies: BTreeMap<String, Arc<ReferenceValues>>,
    default_policy: String,
    signer: EarSigner,
    settings: Settings,
    devices: RwLock<HashMap<DeviceId, Arc<EnrolledDevice>>>,
    issued: AtomicU64,
}

impl std::fmt::Debug for Pva {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pva").field("policies", &self.policies.keys()).finish_non_exhaustive()
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
        let mut map = BTreeMap::new();
        for p in policies {
            let id = p.id().to_owned();
            if map.insert(id.clone(), Arc::new(p)).is_some() {
                return Err(Error::Config(format!("policy id {id:?} configured twice")));
            }
        }
        let default_policy = match &settings.default_policy {
            Some(id) if map.contains_key(id) => id.clone(),
            Some(id) => {
                return Err(Error::Config(format!("default policy {id:?} is not configured")));
            }
            None if map.len() == 1 => map.keys().next().cloned().unwrap_or_default(),
            None => return Err(Error::Config("several policies: name the default one".into())),
        };
        Ok(Self {
            store,
            manufacturer_roots,
            policies: map,
            default_policy,
            signer,
            settings,
            devices: RwLock::new(HashMap::new()),
            issued: AtomicU64::new(0),
        })
    }

    /// Loads everything `config` names; any missing piece is an error.
    pub fn from_config(config: &Config) -> Result<Self, Error> {
        Self::from_config_with(config, OpenMode::CreateIfMissing)
    }

    /// [`Pva::from_config`], opening the store with `mode` (`--init` initialises an empty
    /// store file).
    pub fn from_config_with(config: &Config, mode: OpenMode) -> Result<Self, Error> {
        let signer = EarSigner::load(&config.signing_certificate, &config.signing_key)?
            .with_profile(config.ear_profile);
        let roots = TrustAnchors::from_dir(&config.manufacturer_roots)
            .map_err(|e| Error::Config(format!("manufacturer roots: {e}")))?;
        let policies = config
            .policies
            .iter()
            .map(|p| ReferenceValues::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        let store = Store::open_with(&config.database, mode)?;
        let settings = Settings {
            nonce_ttl: config.nonce_ttl,
            enrolment_ttl: config.enrolment_ttl,
            max_outstanding_challenges: config.max_outstanding_challenges,
            default_policy: config.default_policy.clone(),
            ..Settings::default()
        };
        Self::new(store, roots, policies, signer, settings)
    }

    pub fn policy(&self, id: &str) -> Option<&ReferenceValues> {
        self.policies.get(id).map(Arc::as_ref)
    }

    pub fn default_policy(&self) -> &str {
        &self.default_policy
    }

    /// Step 5: validate the EK and AK, answer with a credential for the AK.
    pub fn enrol(&self, req: &EnrolRequest, now: SystemTime) -> Result<EnrolResponse, Error> {
        enrol::begin(&self.store, &self.manufacturer_roots, req, now, self.settings.enrolment_ttl)
    }

    /// Step 5, second half: the secret came back; the AK is enrolled.
    pub fn activate(
        &self,
        req: &ActivateRequest,
        now: SystemTime,
    ) -> Result<ActivateResponse, Error> {
        let record = enrol::activate(&self.store, req, now)?;
        let device = Arc::new(EnrolledDevice::from_record(&record)?);
        self.devices_write().insert(record.device_id.clone(), device);
        Ok(ActivateResponse { device_id: record.device_id, ak_name: ByteBuf::from(record.ak_name) })
    }

    /// Step 8: a nonce for an enrolled device.
    pub fn challenge(
        &self,
        req: &ChallengeRequest,
        now: SystemTime,
    ) -> Result<ChallengeResponse, Error> {
        let policy_id = req.policy_id.as_deref().unwrap_or(&self.default_policy);
        let policy = self
            .policies
            .get(policy_id)
            .ok_or_else(|| ChallengeError::UnknownPolicy(policy_id.into()))?;
        match self.device(&req.device_id) {
            Ok(_) => {}
            Err(Error::Appraisal(AppraisalError::UnknownDevice(id))) => {
                return Err(ChallengeError::UnknownDevice(id).into());
            }
            Err(other) => return Err(other),
        }
        let cleanup = self.issued.fetch_add(1, Ordering::Relaxed).is_multiple_of(CLEANUP_EVERY);
        let ch = nonce::issue(
            &self.store,
            &req.device_id,
            policy.id(),
            self.settings.nonce_ttl,
            self.settings.max_outstanding_challenges,
            now,
            cleanup,
        )?;
        Ok(ChallengeResponse {
            device_id: ch.device_id,
            nonce: ch.nonce,
            expires_at: ch.expires_at,
            policy_id: ch.policy_id,
            pcr_selection: policy.policy().selection.to_string(),
        })
    }

    /// Steps 8–9: appraise CBOR evidence. `Err` is a refusal (no EAR); `Ok` carries a
    /// signed EAR, affirming or not.
    pub fn appraise(&self, evidence: &[u8], now: SystemTime) -> Result<Appraised, Error> {
        let evidence = Evidence::from_cbor(evidence)
            .map_err(|e| AppraisalError::EvidenceMalformed(e.to_string()))?;
        self.appraise_evidence(&evidence, now)
    }

    /// [`Pva::appraise`] of decoded evidence.
    pub fn appraise_evidence(
        &self,
        evidence: &Evidence,
        now: SystemTime,
    ) -> Result<Appraised, Error> {
        let device = self.device(&evidence.device_id)?;
        let auth = appraisal::authenticate(evidence, &device)?;
        let consumed =
            nonce::consume(&self.store, &auth.device_id, &auth.nonce, auth.clock_mark(), now)?;
        // The nonce is durably used from here on: whatever happens next, it cannot be
        // presented again.
        let refs = self.policies.get(&consumed.policy_id).ok_or_else(|| {
            Error::Config(format!("policy {:?} is no longer configured", consumed.policy_id))
        })?;
        let findings: Findings = appraisal::evaluate(&auth, refs, consumed.previous_clock);
        let claims = ear_signing::claims(&auth, &findings, refs, &self.settings.verifier_id, now)?;
        let ear = self.signer.sign(&claims)?;
        Ok(Appraised { ear, claims, failures: findings.failures })
    }

    /// Registers `nonce` as freshly issued for `device` under the default policy, so that
    /// recorded evidence qualified with it can be appraised again. For benchmarks and tests
    /// only: it defeats freshness, and the HTTP service never calls it.
    #[doc(hidden)]
    pub fn reissue_nonce_for_benchmark(
        &self,
        device: &DeviceId,
        nonce: Nonce,
        now: SystemTime,
    ) -> Result<(), Error> {
        nonce::reissue(
            &self.store,
            Challenge {
                device_id: device.clone(),
                nonce,
                expires_at: protocol::ear::unix(now)
                    .saturating_add(self.settings.nonce_ttl.as_secs()),
                policy_id: self.default_policy.clone(),
            },
        )
    }

    /// Whether the store answers (for health checks).
    pub fn store_healthy(&self) -> bool {
        self.store.call(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)).is_ok()
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn signer(&self) -> &EarSigner {
        &self.signer
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The enrolled device, from the cache or the store.
    pub(crate) fn device(&self, id: &DeviceId) -> Result<Arc<EnrolledDevice>, Error> {
        if let Some(d) = self.devices_read().get(id) {
            return Ok(d.clone());
        }
        let key = id.clone();
        let record = self
            .store
            .call(move |c| store::get_device(c, &key))?
            .ok_or_else(|| AppraisalError::UnknownDevice(id.clone()))?;
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
