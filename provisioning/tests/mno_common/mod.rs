//! Shared set-up of the operator tests: a PKI from `provisioning::pki` in a temporary
//! directory, MNO-A and MNO-B running in-process on loopback HTTPS with real SQLite files
//! (or PostgreSQL databases on the tests' private server), clients for every role, EARs
//! signed with the PVA's key, devices and cards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use protocol::bundle::{BundleExpectations, SoftwareRecipient, VerifiedProfile};
use protocol::ear::{Appraisal, BundleKey, Claim, EarClaims, TrustVector, VerifierId, unix, value};
use protocol::{DeviceId, SubscriptionProfile};
use provisioning::mno::api::{AttestationResponse, CampaignDevice, CampaignRequest};
use provisioning::mno::{CampaignId, MnoClient, MnoConfig, Operator};
use provisioning::pki::{Pki, Role};
use ring::rand::SystemRandom;
use tokio::sync::oneshot;

pub const OP_HEX: &str = "cdc202d5123e20f62b6d676ac72cb318";

/// A running operator service.
pub struct Service {
    pub operator: Arc<Operator>,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), provisioning::mno::MnoError>>>,
}

impl Service {
    pub async fn start(config: &MnoConfig, listener: tokio::net::TcpListener) -> Self {
        let operator = Arc::new(Operator::open(config).unwrap());
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(provisioning::mno::serve_operator(
            Arc::clone(&operator),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        Self { operator, addr, stop: Some(stop), task: Some(task) }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
        }
    }
}

/// Where the operators keep their stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

    /// The `store.path` of `role`'s store.
    fn store(self, role: &str) -> String {
        match self {
            Self::Sqlite => format!("{role}.sqlite"),
            Self::Postgres => storage::pg_server::scratch_database(role).expect("PostgreSQL"),
        }
    }
}

/// PKI, both operators' configurations and services.
pub struct World {
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub mno_a: Service,
    pub mno_b: Service,
    pub config_a: String,
    pub config_b: String,
}

pub fn config_text(
    role: &str,
    pki: &Path,
    db: &str,
    mnc: &str,
    count: u64,
    prefix: &str,
    peers: &str,
) -> String {
    let key_byte = if role == "mno-a" { "a" } else { "b" };
    format!(
        r#"
role = "{role}"
listen = "127.0.0.1:0"
[pki]
certificate = "{pki}/{role}.pem"
key = "{pki}/{role}.key"
ci_root = "{pki}/ci.pem"
[store]
path = "{db}"
key = "{key}"
[subscribers]
mcc = "001"
mnc = "{mnc}"
first_msin = "0000000001"
count = {count}
iccid_prefix = "{prefix}"
op = "{OP_HEX}"
[peers]
{peers}
"#,
        pki = pki.display(),
        key = key_byte.repeat(64),
    )
}

pub fn load(text: &str, dir: &Path) -> MnoConfig {
    MnoConfig::from_toml(text, dir).unwrap()
}

impl World {
    /// MNO-A (pool of 100) and MNO-B (pool of `b_count`), MNO-B knowing MNO-A's URL.
    pub async fn start(b_count: u64) -> Self {
        Self::start_on(b_count, Backend::Sqlite).await
    }

    /// [`World::start`] with both stores on `backend`.
    pub async fn start_on(b_count: u64, backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let pki = provisioning::pki::init(&pki_dir, false).unwrap();
        let la = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a_url = format!("https://localhost:{}", la.local_addr().unwrap().port());
        let b_url = format!("https://localhost:{}", lb.local_addr().unwrap().port());
        let config_a = config_text(
            "mno-a",
            &pki_dir,
            &backend.store("mno-a"),
            "01",
            100,
            "8900101",
            &format!("mno-b = \"{b_url}\""),
        );
        let config_b = config_text(
            "mno-b",
            &pki_dir,
            &backend.store("mno-b"),
            "02",
            b_count,
            "8900102",
            &format!("mno-a = \"{a_url}\""),
        );
        let mno_a = Service::start(&load(&config_a, dir.path()), la).await;
        let mno_b = Service::start(&load(&config_b, dir.path()), lb).await;
        for s in [&mno_a, &mno_b] {
            assert_eq!(s.operator.store().is_shared(), backend == Backend::Postgres);
        }
        Self { dir, pki, mno_a, mno_b, config_a, config_b }
    }

    pub fn client(&self, role: Role, service: &Service) -> MnoClient {
        MnoClient::new(self.pki.client(role).unwrap(), &service.url())
    }

    /// The RO's client of MNO-A and of MNO-B.
    pub fn ro(&self) -> (MnoClient, MnoClient) {
        (self.client(Role::Ro, &self.mno_a), self.client(Role::Ro, &self.mno_b))
    }

    pub fn http(&self, role: Role) -> reqwest::Client {
        self.pki.client(role).unwrap()
    }

    /// Stops MNO-A and starts it again on the same port from the same store.
    pub async fn restart_a(&mut self) {
        self.mno_a.stop().await;
        let listener = tokio::net::TcpListener::bind(self.mno_a.addr).await.unwrap();
        let config = load(&self.config_a, self.dir.path());
        self.mno_a = Service::start(&config, listener).await;
    }

    pub fn db(&self, role: &str) -> PathBuf {
        self.dir.path().join(format!("{role}.sqlite"))
    }

    /// Manufactures `n` cards with MNO-A profiles: (device id, profile, card).
    pub fn manufacture(&self, n: u8) -> Vec<(DeviceId, SubscriptionProfile, uicc::Card)> {
        (0..n)
            .map(|i| {
                let profile = self.mno_a.operator.issue_subscription().unwrap();
                let path = self.dir.path().join(format!("card-{i}.json"));
                let card =
                    uicc::Card::create(&path, profile.clone(), uicc::CardOptions::new().unwrap())
                        .unwrap();
                (device(i + 1), profile, card)
            })
            .collect()
    }
}

pub fn device(byte: u8) -> DeviceId {
    let mut name = vec![0x00, 0x0B];
    name.extend([byte; 32]);
    DeviceId::from_name(&name).unwrap()
}

pub fn campaign(
    id: &str,
    devices: &[(DeviceId, SubscriptionProfile, uicc::Card)],
) -> CampaignRequest {
    CampaignRequest {
        id: id.parse().unwrap(),
        from: "mno-a".into(),
        to: "mno-b".into(),
        devices: devices
            .iter()
            .map(|(d, p, _)| CampaignDevice { device_id: d.clone(), iccid: p.iccid.clone() })
            .collect(),
    }
}

pub fn cid(s: &str) -> CampaignId {
    s.parse().unwrap()
}

pub fn affirming() -> TrustVector {
    let mut v = TrustVector::new();
    v.set(Claim::InstanceIdentity, value::RECOGNIZED_INSTANCE)
        .set(Claim::Configuration, value::APPROVED_CONFIG)
        .set(Claim::Executables, value::APPROVED_BOOT)
        .set(Claim::Hardware, value::GENUINE_HARDWARE)
        .set(Claim::StorageOpaque, value::HW_KEYS_ENCRYPTED_SECRETS);
    v
}

/// EAR claims for `device`: affirming, valid five minutes, rollback counter 7, naming the
/// bundle key of a software key nobody keeps.
pub fn ear_claims(device: &DeviceId, vector: TrustVector) -> EarClaims {
    ear_claims_for(device, vector, &SoftwareRecipient::generate().unwrap())
}

/// [`ear_claims`] naming `key` as the device's bundle key (a software key stands in for the
/// TPM's).
pub fn ear_claims_for(
    device: &DeviceId,
    vector: TrustVector,
    key: &SoftwareRecipient,
) -> EarClaims {
    let now = SystemTime::now();
    let mut appraisal = Appraisal::new(vector, "policy-1".into(), device.clone());
    appraisal.bundle_key = Some(BundleKey::new(*key.x(), *key.y(), vec![0, 0x0B, 3]));
    appraisal.rollback_counter = Some(7);
    EarClaims {
        issued_at: unix(now),
        expires_at: unix(now) + 300,
        nonce: None,
        verifier_id: VerifierId { developer: "tresor".into(), build: "test".into() },
        appraisal,
    }
}

/// Signs `claims` with `role`'s key from the PKI (the PVA's for a genuine EAR).
pub fn sign_ear(pki: &Pki, role: Role, claims: &EarClaims) -> Vec<u8> {
    let creds = pki.role(&role).unwrap();
    let key = creds.signing_key().unwrap();
    let rng = SystemRandom::new();
    claims
        .sign(&creds.x5chain(), |tbs| {
            key.sign(&rng, tbs).map(|s| s.as_ref().to_vec()).map_err(|_| "sign")
        })
        .unwrap()
}

pub fn ear(pki: &Pki, device: &DeviceId) -> Vec<u8> {
    sign_ear(pki, Role::Pva, &ear_claims(device, affirming()))
}

/// A genuine EAR for `device` and the bundle key it names, which opens the bundle once.
pub fn attested(pki: &Pki, device: &DeviceId) -> (Vec<u8>, SoftwareRecipient) {
    let key = SoftwareRecipient::generate().unwrap();
    (sign_ear(pki, Role::Pva, &ear_claims_for(device, affirming(), &key)), key)
}

/// What the device does with the new operator's answer: decrypts the bundle with its bundle
/// key and verifies the profile (signer `mno-b`, this device, this EAR).
pub fn open(
    pki: &Pki,
    answer: &AttestationResponse,
    key: SoftwareRecipient,
    ear: &[u8],
) -> VerifiedProfile {
    let anchors = pki.ci_trust_anchors().unwrap();
    let expectations = BundleExpectations {
        ci_roots: &anchors,
        now: SystemTime::now(),
        operator: "mno-b",
        device_id: &answer.device_id,
        ear_hash: &protocol::bundle::ear_hash(ear),
    };
    protocol::bundle::open_bundle(&answer.bundle, &expectations, |x, y| key.zgen(x, y)).unwrap()
}

/// Asserts a refusal with the given status and problem slug.
pub fn assert_problem<T: std::fmt::Debug>(
    result: Result<T, transport::Error>,
    status: u16,
    slug: &str,
) {
    match result {
        Err(transport::Error::Problem(p)) => {
            assert_eq!(p.status, status, "{p}");
            assert_eq!(p.type_uri, transport::problem::problem_type(slug), "{p}");
        }
        other => panic!("expected {status} {slug}, got {other:?}"),
    }
}
