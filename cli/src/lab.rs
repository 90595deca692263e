//! The lab: a whole tresor deployment on one machine — a fresh PKI, the PVA, the RO and
//! both operators on loopback HTTPS (in this process), and devices manufactured on swtpm
//! with MNO-A profiles in their UICCs. `tresor demo`, `tresor attack` and the end-to-end
//! tests build on it; every part is the real one, started through the same `serve`
//! functions as `tresor serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use protocol::tpm::HashAlg;
use protocol::x509::TrustAnchors;
use protocol::{DeviceId, Iccid, Imsi};
use provisioning::mno::{self, MnoConfig, Operator};
use provisioning::pki::{self, Pki, Role};
use provisioning::ro::{self, CampaignReport, NewCampaign, RoConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tre::agent::{Agent, AgentConfig, Outcome};
use tre::attester::{Attester, AttesterOptions};
use tre::ekcert::ManufacturerCa;
use tre::manufacture::{ManufactureOptions, manufacture};
use tre::swtpm::{Swtpm, SwtpmConfig};
use tre::tpm::{KeyAlg, Tpm};
use uicc::{Card, CardOptions};

/// Base URLs of the lab's services.
#[derive(Clone, Debug)]
pub struct Urls {
    pub pva: String,
    pub ro: String,
    pub mno_a: String,
    pub mno_b: String,
}

/// A running deployment. Dropping it stops the services (their tasks end with the runtime).
pub struct Lab {
    pub dir: PathBuf,
    pub pki: Pki,
    pub urls: Urls,
    /// The image the PVA's reference values were derived from.
    pub image: PathBuf,
    /// MNO-A's operator, shared with its service, for manufacturing subscriptions.
    pub mno_a: Arc<Operator>,
    pub swtpm: SwtpmConfig,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Result<()>>>,
    /// The RO runs apart from the others so that tests can restart it.
    ro: Option<(watch::Sender<bool>, tokio::task::JoinHandle<Result<()>>)>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab").field("dir", &self.dir).field("urls", &self.urls).finish()
    }
}

/// A device made by [`Lab::manufacture`]: its TPM (running), its UICC state file and what
/// it carries.
#[derive(Debug)]
pub struct LabDevice {
    pub index: usize,
    pub dir: PathBuf,
    pub swtpm: Swtpm,
    pub device_id: DeviceId,
    /// The EK the device was manufactured with; its agent attests with that EK and an AK of
    /// the same algorithm.
    pub ek_alg: KeyAlg,
    pub iccid: Iccid,
    pub imsi: Imsi,
    pub card: PathBuf,
    /// How long manufacturing took (step 1).
    pub manufacture_ms: u64,
}

/// What a lab may set differently from a default deployment.
#[derive(Clone, Debug, Default)]
pub struct LabOptions {
    /// The PVA's nonce lifetime (`nonce_ttl_seconds`); `None`: the PVA's default, 60 s.
    /// The attack matrix shortens it to present evidence for an expired nonce.
    pub nonce_ttl_seconds: Option<u64>,
}

impl Lab {
    /// Creates the PKI in `dir/pki`, derives reference values from `image`, and starts the
    /// four services on 127.0.0.1 ports of the system's choosing.
    pub async fn start(dir: &Path, image: &Path) -> Result<Self> {
        Self::start_with(dir, image, &LabOptions::default()).await
    }

    /// [`Lab::start`] with `options`.
    pub async fn start_with(dir: &Path, image: &Path, options: &LabOptions) -> Result<Self> {
        storage::private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let image =
            image.canonicalize().with_context(|| format!("device image {}", image.display()))?;
        let pki = pki::init(&dir.join("pki"), false).context("PKI")?;
        let swtpm = SwtpmConfig::load()?;

        // Listeners first: every service needs the others' addresses in its configuration.
        let bind = || async { transport::bind("127.0.0.1:0").await };
        let (pva_l, ro_l, a_l, b_l) = (bind().await?, bind().await?, bind().await?, bind().await?);
        let url = |l: &TcpListener| -> Result<String> {
            let addr: SocketAddr = l.local_addr()?;
            Ok(format!("https://localhost:{}", addr.port()))
        };
        let urls =
            Urls { pva: url(&pva_l)?, ro: url(&ro_l)?, mno_a: url(&a_l)?, mno_b: url(&b_l)? };

        let (shutdown, watcher) = watch::channel(false);
        let stop = move || {
            let mut w = watcher.clone();
            async move {
                let _ = w.wait_for(|stop| *stop).await;
            }
        };
        let mut tasks = Vec::new();

        let pva = write_pva_config(&dir, &image, &swtpm.pcr_banks, options)?;
        let pva = verifier::Config::load(&pva)?;
        let stopping = stop();
        tasks.push(tokio::spawn(async move {
            verifier::serve(pva, pva_l, stopping).await.context("PVA")
        }));

        let mut operators = Vec::new();
        for (role, listener, peer) in [("mno-a", a_l, &urls.mno_b), ("mno-b", b_l, &urls.mno_a)] {
            let config = write_mno_config(&dir, role, peer)?;
            let operator = Arc::new(Operator::open(&MnoConfig::load(&config)?)?);
            operators.push(Arc::clone(&operator));
            let stopping = stop();
            tasks.push(tokio::spawn(async move {
                mno::serve_operator(operator, listener, stopping).await.context(role)
            }));
        }

        write_ro_config(&dir, &urls)?;
        let mut lab = Self {
            dir,
            pki,
            urls,
            image,
            mno_a: Arc::clone(&operators[0]),
            swtpm,
            shutdown,
            tasks,
            ro: None,
        };
        lab.start_ro(ro_l)?;
        lab.wait_ready().await?;
        Ok(lab)
    }

    fn start_ro(&mut self, listener: TcpListener) -> Result<()> {
        let config = RoConfig::load(&self.dir.join("ro/ro.toml"))?;
        let (stop, mut watcher) = watch::channel(false);
        let stopping = async move {
            let _ = watcher.wait_for(|stop| *stop).await;
        };
        let task =
            tokio::spawn(async move { ro::serve(config, listener, stopping).await.context("RO") });
        self.ro = Some((stop, task));
        Ok(())
    }

    /// Stops the RO (it finishes the requests under way) and starts it again on the same
    /// port and store: what a crash-and-restart of the RO looks like to devices and peers.
    pub async fn restart_ro(&mut self) -> Result<()> {
        if let Some((stop, task)) = self.ro.take() {
            let _ = stop.send(true);
            task.await??;
        }
        let port = self.urls.ro.rsplit(':').next().unwrap_or_default().parse::<u16>()?;
        let listener = transport::bind(("127.0.0.1", port)).await?;
        self.start_ro(listener)?;
        self.wait_ready().await
    }

    /// Waits until every service answers its health check, or fails with the error of the
    /// one that stopped.
    async fn wait_ready(&mut self) -> Result<()> {
        let client = self.pki.client(Role::Ro)?;
        let checks = [
            format!("{}/v1/health", self.urls.pva),
            format!("{}/health", self.urls.ro),
            format!("{}/health", self.urls.mno_a),
            format!("{}/health", self.urls.mno_b),
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in checks {
            loop {
                if let Some((_, task)) = self.ro.take_if(|(_, task)| task.is_finished()) {
                    return Err(match task.await {
                        Ok(Err(e)) => e.context("the RO stopped during start-up"),
                        _ => anyhow::anyhow!("the RO stopped during start-up"),
                    });
                }
                if let Some(i) = self.tasks.iter().position(|t| t.is_finished()) {
                    let stopped = self.tasks.swap_remove(i).await;
                    return Err(match stopped {
                        Ok(Err(e)) => e.context("a service stopped during start-up"),
                        Ok(Ok(())) => anyhow::anyhow!("a service stopped during start-up"),
                        Err(e) => anyhow::anyhow!("a service task failed: {e}"),
                    });
                }
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => break,
                    _ if Instant::now() > deadline => anyhow::bail!("{url} did not become healthy"),
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
        Ok(())
    }

    /// Manufactures device `index`: a swtpm with EK, EK certificate and counter, and a UICC
    /// with a subscription MNO-A issued (step 1).
    pub fn manufacture(&self, index: usize, ek_alg: KeyAlg) -> Result<LabDevice> {
        let timer = Instant::now();
        let dir = self.dir.join("devices").join(format!("m2me-{index:03}"));
        storage::private_dir(&dir)?;
        let swtpm = Swtpm::start(&dir.join("tpm"), &self.swtpm)?;
        let ca = ManufacturerCa::from_pem(
            self.pki.manufacturer_cert_pem(),
            self.pki.manufacturer_key_pem(),
        )?;
        let made = {
            let mut tpm = Tpm::connect(&swtpm.tcti())?;
            manufacture(&mut tpm, &ca, &ManufactureOptions { ek_alg, ..Default::default() })?
        };
        let profile = self.mno_a.issue_subscription()?;
        let (iccid, imsi) = (profile.iccid.clone(), profile.imsi.clone());
        let card = dir.join("uicc.json");
        drop(Card::create(&card, profile, CardOptions::new()?)?);
        std::fs::write(
            dir.join("ek.pem"),
            pem::encode(&pem::Pem::new("CERTIFICATE", made.ek_certificate)),
        )?;
        Ok(LabDevice {
            index,
            dir,
            swtpm,
            device_id: made.device_id,
            ek_alg,
            iccid,
            imsi,
            card,
            manufacture_ms: timer.elapsed().as_millis() as u64,
        })
    }

    /// Creates a campaign at the RO as the new operator (steps 2–3).
    pub async fn create_campaign(&self, devices: &[&LabDevice]) -> Result<CampaignReport> {
        let devices: Vec<_> = devices
            .iter()
            .map(|d| mno::api::CampaignDevice {
                device_id: d.device_id.clone(),
                iccid: d.iccid.clone(),
            })
            .collect();
        self.create_campaign_between(Role::MnoA, Role::MnoB, devices).await
    }

    /// Creates a campaign from one operator to the other, as the new one, for devices given
    /// with the ICCIDs of the profiles they run now.
    pub async fn create_campaign_between(
        &self,
        from: Role,
        to: Role,
        devices: Vec<mno::api::CampaignDevice>,
    ) -> Result<CampaignReport> {
        let new = NewCampaign { from: from.name().into(), to: to.name().into(), devices };
        let client = self.pki.client(to)?;
        let response =
            client.post(format!("{}/v1/campaigns", self.urls.ro)).json(&new).send().await?;
        Ok(transport::client::json(response).await?)
    }

    /// The campaign's status at the RO.
    pub async fn campaign(&self, id: &str) -> Result<CampaignReport> {
        let client = self.pki.client(Role::MnoB)?;
        let response = client.get(format!("{}/v1/campaigns/{id}", self.urls.ro)).send().await?;
        Ok(transport::client::json(response).await?)
    }

    /// The agent configuration of a lab device.
    pub fn agent_config(&self, device: &LabDevice, deadline: Duration) -> Result<AgentConfig> {
        let ci_pem = std::fs::read(self.dir.join("pki/ci.pem"))?;
        Ok(AgentConfig {
            ro_url: self.urls.ro.clone(),
            ci_roots: TrustAnchors::from_pem(&ci_pem)?,
            ci_roots_der: vec![self.pki.ci_root().to_vec()],
            deadline,
            fallback: Duration::from_secs(600),
            journal: tre::journal::journal_path(&device.card),
            artifacts: Some(device.dir.clone()),
        })
    }

    /// Stops the services.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let mut tasks = self.tasks;
        if let Some((stop, task)) = self.ro {
            let _ = stop.send(true);
            tasks.push(task);
        }
        for task in tasks {
            if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(15), task).await {
                tracing::error!(error = format!("{e:#}"), "service ended with an error");
            }
        }
    }
}

/// Boots device `device` (measured boot of `image`) and runs its agent to the end, on a
/// thread of its own: the TPM context cannot move between threads.
pub fn run_agent(
    device: &LabDevice,
    image: &Path,
    config: AgentConfig,
) -> std::thread::JoinHandle<Result<Outcome>> {
    let tcti = device.swtpm.tcti();
    let options = AttesterOptions { ek_alg: device.ek_alg, ak_alg: device.ek_alg, selection: None };
    let card = device.card.clone();
    let image = image.to_path_buf();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let tpm = Tpm::connect(&tcti)?;
        let attester = Attester::boot(tpm, &image, options)?;
        let card = Card::open(&card)?;
        let mut agent = Agent::new(attester, card, config)?;
        Ok(runtime.block_on(agent.run())?)
    })
}

/// The sample device image (`examples/image`), built into the binary so that the demo needs
/// nothing but the machine.
const SAMPLE_IMAGE: [(&str, &[u8]); 6] = [
    ("manifest.toml", include_bytes!("../../examples/image/manifest.toml")),
    ("bootloader.bin", include_bytes!("../../examples/image/bootloader.bin")),
    ("modem-firmware.bin", include_bytes!("../../examples/image/modem-firmware.bin")),
    ("os.img", include_bytes!("../../examples/image/os.img")),
    ("tre-agent.bin", include_bytes!("../../examples/image/tre-agent.bin")),
    ("config.toml", include_bytes!("../../examples/image/config.toml")),
];

/// Writes the sample device image into `dir` and returns `dir`.
pub fn write_sample_image(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in SAMPLE_IMAGE {
        std::fs::write(dir.join(name), bytes).with_context(|| format!("cannot write {name}"))?;
    }
    Ok(dir.to_path_buf())
}

/// Writes into `dir` a copy of the sample image whose TRE agent changed after the reference
/// values were made (one bit of `tre-agent.bin`): the PVA appraises it contraindicated.
/// Returns `dir`.
pub fn write_tampered_image(dir: &Path) -> Result<PathBuf> {
    write_sample_image(dir)?;
    let agent = dir.join("tre-agent.bin");
    let mut bytes = std::fs::read(&agent)?;
    let bit = bytes.get_mut(100).context("the sample tre-agent.bin is too short")?;
    *bit ^= 0x01;
    std::fs::write(agent, bytes)?;
    Ok(dir.to_path_buf())
}

fn write(path: &Path, text: &str) -> Result<PathBuf> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// The PVA's configuration and its reference values, derived from the known-good image.
fn write_pva_config(
    dir: &Path,
    image: &Path,
    banks: &[HashAlg],
    options: &LabOptions,
) -> Result<PathBuf> {
    let pva = dir.join("pva");
    storage::private_dir(&pva)?;
    write(&pva.join("reference-values.toml"), &verifier::refvalues::derive(image, banks)?)?;
    let roots = pva.join("manufacturer_roots");
    storage::private_dir(&roots)?;
    std::fs::copy(dir.join("pki/manufacturer.pem"), roots.join("manufacturer.pem"))?;
    let mut config = "database = \"pva.sqlite\"\n\
         tls_certificate = \"../pki/pva.pem\"\n\
         tls_key = \"../pki/pva.key\"\n\
         client_ca = \"../pki/ci.pem\"\n\
         signing_certificate = \"../pki/pva.pem\"\n\
         signing_key = \"../pki/pva.key\"\n\
         manufacturer_roots = \"manufacturer_roots\"\n\
         policies = [\"reference-values.toml\"]\n"
        .to_owned();
    if let Some(ttl) = options.nonce_ttl_seconds {
        config.push_str(&format!("nonce_ttl_seconds = {ttl}\n"));
    }
    write(&pva.join("pva.toml"), &config)
}

/// An operator's configuration with a fresh storage key and OP.
fn write_mno_config(dir: &Path, role: &str, peer_url: &str) -> Result<PathBuf> {
    let own = dir.join(role);
    storage::private_dir(&own)?;
    mno::StorageKey::generate_file(&own.join("store.key"))?;
    let op = protocol::SubscriberKey::random().map_err(|_| anyhow::anyhow!("no randomness"))?;
    let op_file = own.join("op.key");
    write_private(&op_file, &hex::encode(op.expose()))?;
    let (mnc, prefix, peer) = match role {
        "mno-a" => ("01", "8900101", "mno-b"),
        _ => ("02", "8900102", "mno-a"),
    };
    write(
        &own.join(format!("{role}.toml")),
        &format!(
            "role = \"{role}\"\nlisten = \"127.0.0.1:0\"\n\n\
             [pki]\ncertificate = \"../pki/{role}.pem\"\nkey = \"../pki/{role}.key\"\nci_root = \"../pki/ci.pem\"\n\n\
             [store]\npath = \"{role}.sqlite\"\nkey_file = \"store.key\"\n\n\
             [subscribers]\nmcc = \"001\"\nmnc = \"{mnc}\"\nfirst_msin = \"0000000001\"\ncount = 100000\n\
             iccid_prefix = \"{prefix}\"\nop_file = \"op.key\"\n\n\
             [peers]\n{peer} = \"{peer_url}\"\n"
        ),
    )
}

fn write_ro_config(dir: &Path, urls: &Urls) -> Result<PathBuf> {
    let own = dir.join("ro");
    storage::private_dir(&own)?;
    write(
        &own.join("ro.toml"),
        &format!(
            "listen = \"127.0.0.1:0\"\n\
             # Short long polls: a restarted RO waits for open requests to finish.\n\
             poll_timeout_ms = 2000\n\n\
             [pki]\ncertificate = \"../pki/ro.pem\"\nkey = \"../pki/ro.key\"\nci_root = \"../pki/ci.pem\"\n\
             manufacturer_roots = \"../pki/manufacturer.pem\"\n\n\
             [store]\npath = \"ro.sqlite\"\n\n\
             [peers]\npva = \"{}\"\nmno-a = \"{}\"\nmno-b = \"{}\"\n",
            urls.pva, urls.mno_a, urls.mno_b
        ),
    )
}

/// A secret file, created with mode 0600.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
