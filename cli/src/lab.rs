//! The lab: a whole tresor deployment on one machine — a fresh PKI, the PVA, the RO and
//! the operators (MNO-A and MNO-B, or any others [`LabOptions::operators`] names) on
//! loopback HTTPS (in this process), and devices manufactured on swtpm with profiles of the
//! first operator in their UICCs. `tresor demo`, `tresor attack` and the end-to-end
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

pub use crate::scale_out::Backend;
use crate::scale_out::ScaleOut;

/// Base URLs of the lab's services.
#[derive(Clone, Debug)]
pub struct Urls {
    pub pva: String,
    pub ro: String,
    /// The first operator's (MNO-A in a default lab).
    pub mno_a: String,
    /// The second operator's (MNO-B in a default lab).
    pub mno_b: String,
    /// Every operator's, by name, in the lab's order.
    pub operators: Vec<(String, String)>,
}

impl Urls {
    /// The base URL of operator `name`.
    pub fn operator(&self, name: &str) -> Option<&str> {
        self.operators.iter().find(|(n, _)| n == name).map(|(_, url)| url.as_str())
    }
}

/// A running deployment. Dropping it stops the services (their tasks end with the runtime).
pub struct Lab {
    pub dir: PathBuf,
    pub pki: Pki,
    pub urls: Urls,
    /// The image the PVA's reference values were derived from.
    pub image: PathBuf,
    /// The first operator (MNO-A), shared with its service, for manufacturing subscriptions.
    pub mno_a: Arc<Operator>,
    /// The operators' names, in order: devices are made with the first one's profiles.
    pub operators: Vec<String>,
    pub swtpm: SwtpmConfig,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Result<()>>>,
    /// The RO runs apart from the others so that tests can restart it.
    ro: Option<(watch::Sender<bool>, tokio::task::JoinHandle<Result<()>>)>,
    /// With [`LabOptions::processes`]: the roles' processes.
    processes: RoleProcesses,
    /// The database server, the instances and the fronts of a scaled-out lab.
    scale: ScaleOut,
}

/// The roles' `tresor serve` processes of a lab ([`LabOptions::processes`]), stopped
/// (SIGTERM, then SIGKILL) and reaped when dropped.
#[derive(Default)]
struct RoleProcesses(Vec<(String, std::process::Child)>);

impl RoleProcesses {
    /// Starts `tresor serve KIND --config CONFIG` as role `name`, its log in `dir/NAME.log`.
    fn spawn(
        &mut self,
        tresor: &Path,
        dir: &Path,
        name: &str,
        kind: &str,
        config: &Path,
    ) -> Result<()> {
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = std::process::Command::new(tresor)
            .current_dir(dir)
            .arg("serve")
            .arg(kind)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {} serve {kind}", tresor.display()))?;
        self.0.push((name.to_owned(), child));
        Ok(())
    }

    /// The first role that exited, with its status.
    fn exited(&mut self) -> Option<(String, std::process::ExitStatus)> {
        self.0.iter_mut().find_map(|(name, child)| {
            child.try_wait().ok().flatten().map(|status| (name.clone(), status))
        })
    }
}

impl Drop for RoleProcesses {
    fn drop(&mut self) {
        for (_, child) in &self.0 {
            // kill(1): the library forbids unsafe code; the pid is a child not reaped yet.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (_, child) in &mut self.0 {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
    /// The operators, at least two, by name; empty: MNO-A and MNO-B
    /// (`pki::DEFAULT_OPERATORS`). Devices are made with the first one's profiles.
    pub operators: Vec<String>,
    /// Webhooks of the RO (`ro::events`): name, URL, secret file.
    pub webhooks: Vec<(String, String, PathBuf)>,
    /// Every role (PVA, RO, each operator) as its own `tresor serve` process started from
    /// this `tresor` binary, instead of tasks of this process: what a deployment looks like.
    /// Devices stay in this process either way.
    pub processes: Option<PathBuf>,
    /// The RO's admission control (`max_in_flight`); `None`: the RO's default.
    pub max_in_flight: Option<u64>,
    /// Instances of the PVA and of the RO, each role behind a round-robin front
    /// (`scale_out`); 0 or 1: one of each. Several need [`LabOptions::processes`] and
    /// [`Backend::Postgres`].
    pub instances: usize,
    /// Where the PVA and the RO keep their stores.
    pub database: Backend,
}

impl LabOptions {
    fn operator_names(&self) -> Vec<String> {
        if self.operators.is_empty() {
            pki::DEFAULT_OPERATORS.iter().map(|n| (*n).to_owned()).collect()
        } else {
            self.operators.clone()
        }
    }
}

/// How many devices to manufacture at once: one per core. Started all at once, 1,000
/// swtpm and their EK creations share the cores anyway, each taking ~20 s instead of a
/// fraction of a second, and the first device is ready only when nearly all are.
pub fn manufacture_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |p| p.get())
}

/// The names of `count` operators: `mno-a`, `mno-b`, `mno-c`, … (at most 26).
pub fn operator_names(count: usize) -> Vec<String> {
    (b'a'..=b'z').take(count).map(|c| format!("mno-{}", c as char)).collect()
}

impl Lab {
    /// Creates the PKI in `dir/pki`, derives reference values from `image`, and starts the
    /// services (PVA, RO, MNO-A, MNO-B) on 127.0.0.1 ports of the system's choosing.
    pub async fn start(dir: &Path, image: &Path) -> Result<Self> {
        Self::start_with(dir, image, &LabOptions::default()).await
    }

    /// [`Lab::start`] with `options`.
    pub async fn start_with(dir: &Path, image: &Path, options: &LabOptions) -> Result<Self> {
        storage::private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let image =
            image.canonicalize().with_context(|| format!("device image {}", image.display()))?;
        let names = options.operator_names();
        anyhow::ensure!(names.len() >= 2, "a lab needs at least two operators");
        let pki = pki::init_with(
            &dir.join("pki"),
            false,
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .context("PKI")?;
        let swtpm = SwtpmConfig::load()?;

        // Listeners first: every service needs the others' addresses in its configuration.
        let bind = || async { transport::bind("127.0.0.1:0").await };
        let (pva_l, ro_l) = (bind().await?, bind().await?);
        let mut operator_listeners = Vec::new();
        for _ in &names {
            operator_listeners.push(bind().await?);
        }
        let url = |l: &TcpListener| -> Result<String> {
            let addr: SocketAddr = l.local_addr()?;
            Ok(format!("https://localhost:{}", addr.port()))
        };
        let operator_urls: Vec<(String, String)> = names
            .iter()
            .zip(&operator_listeners)
            .map(|(name, l)| Ok((name.clone(), url(l)?)))
            .collect::<Result<_>>()?;
        let port = |l: &TcpListener| -> Result<u16> { Ok(l.local_addr()?.port()) };
        let mut ports = vec![("pva".to_owned(), port(&pva_l)?), ("ro".to_owned(), port(&ro_l)?)];
        for (name, l) in names.iter().zip(&operator_listeners) {
            ports.push((name.clone(), port(l)?));
        }
        let urls = Urls {
            pva: url(&pva_l)?,
            ro: url(&ro_l)?,
            mno_a: operator_urls[0].1.clone(),
            mno_b: operator_urls[1].1.clone(),
            operators: operator_urls,
        };

        let scale = ScaleOut::prepare(options.instances, options.database).await?;
        anyhow::ensure!(
            !scale.scaled() || options.processes.is_some(),
            "several instances of a role run as processes (LabOptions::processes)"
        );
        let (shutdown, watcher) = watch::channel(false);
        let stop = move || {
            let mut w = watcher.clone();
            async move {
                let _ = w.wait_for(|stop| *stop).await;
            }
        };
        let mut tasks = Vec::new();

        let pva = write_pva_config(&dir, &image, &swtpm.pcr_banks, options, scale.pva_database())?;
        if let Some(tresor) = &options.processes {
            return Self::start_processes(
                tresor,
                (dir, pki, urls, image, names, swtpm),
                (pva, &ports, [pva_l, ro_l].into_iter().chain(operator_listeners).collect()),
                (options, scale),
                (shutdown, tasks),
            )
            .await;
        }
        let pva = verifier::Config::load(&pva)?;
        let stopping = stop();
        tasks.push(tokio::spawn(async move {
            verifier::serve(pva, pva_l, stopping).await.context("PVA")
        }));

        let mut operators = Vec::new();
        for (index, listener) in operator_listeners.into_iter().enumerate() {
            let config = write_mno_config(&dir, index, &urls.operators)?;
            let operator = Arc::new(Operator::open(&MnoConfig::load(&config)?)?);
            operators.push(Arc::clone(&operator));
            let stopping = stop();
            let name = names[index].clone();
            tasks.push(tokio::spawn(async move {
                mno::serve_operator(operator, listener, stopping).await.context(name)
            }));
        }

        write_ro_config(&dir, &urls, options, scale.ro_database())?;
        let mut lab = Self {
            dir,
            pki,
            urls,
            image,
            mno_a: Arc::clone(&operators[0]),
            operators: names,
            swtpm,
            shutdown,
            tasks,
            ro: None,
            processes: RoleProcesses::default(),
            scale,
        };
        lab.start_ro(ro_l)?;
        lab.wait_ready().await?;
        Ok(lab)
    }

    /// [`Lab::start_with`] for [`LabOptions::processes`]: the same configurations, each
    /// role listening on the port its listener here was given (released just before the
    /// roles start), every role a `tresor serve` process.
    #[allow(clippy::type_complexity)]
    async fn start_processes(
        tresor: &Path,
        (dir, pki, urls, image, names, swtpm): (
            PathBuf,
            Pki,
            Urls,
            PathBuf,
            Vec<String>,
            SwtpmConfig,
        ),
        (pva, ports, listeners): (PathBuf, &[(String, u16)], Vec<TcpListener>),
        (options, mut scale): (&LabOptions, ScaleOut),
        (shutdown, tasks): (watch::Sender<bool>, Vec<tokio::task::JoinHandle<Result<()>>>),
    ) -> Result<Self> {
        let port_of = |name: &str| ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
        let mut configs = vec![("pva".to_owned(), "pva", pva)];
        for (index, name) in names.iter().enumerate() {
            configs.push((name.clone(), "mno", write_mno_config(&dir, index, &urls.operators)?));
        }
        configs.push((
            "ro".to_owned(),
            "ro",
            write_ro_config(&dir, &urls, options, scale.ro_database())?,
        ));
        for (name, _, config) in &configs {
            let listen = format!("listen = \"127.0.0.1:{}\"", port_of(name).unwrap_or(0));
            let text = std::fs::read_to_string(config)?;
            let text = if text.contains("listen = \"127.0.0.1:0\"") {
                text.replace("listen = \"127.0.0.1:0\"", &listen)
            } else {
                format!("{listen}\n{text}")
            };
            write(config, &text)?;
        }
        // The first operator's store, open here too (SQLite, shared): devices are made with
        // its subscriptions while its process serves.
        let first = Arc::new(Operator::open(&MnoConfig::load(&configs[1].2)?)?);
        // Scaled out, each instance has the role's configuration but for its own port, and
        // the role's port is its front's.
        let mut configs_run = Vec::new();
        for (name, kind, config) in configs {
            let instances = scale.instances(&name);
            if instances.is_empty() {
                configs_run.push((name, kind, config));
                continue;
            }
            let public = format!("listen = \"127.0.0.1:{}\"", port_of(&name).unwrap_or(0));
            let text = std::fs::read_to_string(&config)?;
            for (instance, port) in instances {
                let own = config.with_file_name(format!("{instance}.toml"));
                write(&own, &text.replace(&public, &format!("listen = \"127.0.0.1:{port}\"")))?;
                configs_run.push((instance, kind, own));
            }
        }
        // Scaled out, the fronts keep the roles' ports; else the roles' processes take them.
        let mut listeners = listeners.into_iter();
        let publics =
            if scale.scaled() { (listeners.next(), listeners.next()) } else { (None, None) };
        drop(listeners);
        scale.release_instance_ports();
        let mut processes = RoleProcesses::default();
        for (name, kind, config) in &configs_run {
            processes.spawn(tresor, &dir, name, kind, config)?;
        }
        if let (Some(pva_public), Some(ro_public)) = publics {
            scale.start_front("pva", pva_public)?;
            scale.start_front("ro", ro_public)?;
        }
        let mut lab = Self {
            dir,
            pki,
            urls,
            image,
            mno_a: first,
            operators: names,
            swtpm,
            shutdown,
            tasks,
            ro: None,
            processes,
            scale,
        };
        lab.wait_ready().await?;
        Ok(lab)
    }

    /// Stops the PVA's and the RO's database server ([`Backend::Postgres`]) until
    /// [`Lab::resume_database`]: the roles see their database down.
    pub fn pause_database(&mut self) -> Result<()> {
        let server = self.scale.postgres_mut().context("the lab runs no database server")?;
        Ok(server.pause()?)
    }

    pub fn resume_database(&mut self) -> Result<()> {
        let server = self.scale.postgres_mut().context("the lab runs no database server")?;
        Ok(server.resume()?)
    }

    /// The database server's process (the postmaster), with [`Backend::Postgres`].
    pub fn database_pid(&self) -> Option<u32> {
        self.scale.postgres().and_then(storage::pg_server::PgServer::pid)
    }

    /// Scaled out ([`LabOptions::instances`]): each instance's name and the connections its
    /// front handed it so far.
    pub fn instance_connections(&self) -> Vec<(String, u64)> {
        let handed = self.scale.front_stats();
        ["pva", "ro"]
            .iter()
            .flat_map(|role| self.scale.instances(role))
            .map(|(name, port)| {
                let n = handed.iter().filter(|(a, _)| a.port() == port).map(|(_, n)| n).sum();
                (name, n)
            })
            .collect()
    }

    /// The roles' processes (name, pid) with [`LabOptions::processes`]; empty otherwise.
    pub fn role_pids(&self) -> Vec<(String, u32)> {
        self.processes.0.iter().map(|(name, child)| (name.clone(), child.id())).collect()
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
        anyhow::ensure!(self.processes.0.is_empty(), "a lab of processes cannot restart its RO");
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
        // Scaled out, every instance first (a front's answer shows only one of them).
        let mut checks = Vec::new();
        for (role, path) in [("pva", "/v1/health"), ("ro", "/health")] {
            for (_, port) in self.scale.instances(role) {
                checks.push(format!("https://localhost:{port}{path}"));
            }
        }
        checks.extend([format!("{}/v1/health", self.urls.pva), format!("{}/health", self.urls.ro)]);
        checks.extend(self.urls.operators.iter().map(|(_, url)| format!("{url}/health")));
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in checks {
            loop {
                if let Some((name, status)) = self.processes.exited() {
                    let log = std::fs::read_to_string(self.dir.join(format!("{name}.log")))
                        .unwrap_or_default();
                    anyhow::bail!("{name} exited during start-up with {status}:\n{log}");
                }
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

    /// Manufactures devices `0..count` ([`Lab::manufacture`]), at most `parallel` at a time
    /// ([`manufacture_parallelism`]): a swtpm start with its PCR banks, the EK and its
    /// certificate are CPU-bound work that only queues up behind itself when a whole fleet
    /// starts at once.
    pub fn manufacture_fleet(
        &self,
        count: usize,
        ek: KeyAlg,
        parallel: usize,
    ) -> Result<Vec<LabDevice>> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let made = std::sync::Mutex::new(Vec::with_capacity(count));
        std::thread::scope(|scope| -> Result<()> {
            let workers: Vec<_> = (0..parallel.min(count))
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if i >= count {
                                return Ok(());
                            }
                            let device = self.manufacture(i, ek)?;
                            made.lock()
                                .map_err(|_| anyhow::anyhow!("a manufacturing thread panicked"))?
                                .push(device);
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().map_err(|_| anyhow::anyhow!("manufacturing thread panicked"))??;
            }
            Ok(())
        })?;
        let mut devices =
            made.into_inner().map_err(|_| anyhow::anyhow!("a manufacturing thread panicked"))?;
        devices.sort_by_key(|d| d.index);
        Ok(devices)
    }

    /// Creates a campaign at the RO from the first operator to the second, as the new one
    /// (steps 2–3).
    pub async fn create_campaign(&self, devices: &[&LabDevice]) -> Result<CampaignReport> {
        let devices: Vec<_> = devices
            .iter()
            .map(|d| mno::api::CampaignDevice {
                device_id: d.device_id.clone(),
                iccid: d.iccid.clone(),
            })
            .collect();
        let [from, to] = [&self.operators[0], &self.operators[1]];
        self.create_campaign_between(Role::operator(from)?, Role::operator(to)?, devices).await
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

    /// The campaign's status at the RO, as the RO's own tooling reads it.
    pub async fn campaign(&self, id: &str) -> Result<CampaignReport> {
        let client = self.pki.client(Role::Ro)?;
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
        drop(self.processes);
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
    database: Option<&str>,
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
    if let Some(url) = database {
        config = config.replace("database = \"pva.sqlite\"", &format!("database = \"{url}\""));
    }
    write(&pva.join("pva.toml"), &config)
}

/// The configuration of operator `index` of `operators` (name, URL), with a fresh storage
/// key and OP: MNC `01` + index, ICCIDs `89001` + MNC, every other operator a peer.
fn write_mno_config(dir: &Path, index: usize, operators: &[(String, String)]) -> Result<PathBuf> {
    let role = operators[index].0.as_str();
    let own = dir.join(role);
    storage::private_dir(&own)?;
    mno::StorageKey::generate_file(&own.join("store.key"))?;
    let op = protocol::SubscriberKey::random().map_err(|_| anyhow::anyhow!("no randomness"))?;
    let op_file = own.join("op.key");
    write_private(&op_file, &hex::encode(op.expose()))?;
    let mnc = format!("{:02}", index + 1);
    let prefix = format!("89001{mnc}");
    let peers: String = operators
        .iter()
        .filter(|(name, _)| name != role)
        .map(|(name, url)| format!("{name} = \"{url}\"\n"))
        .collect();
    write(
        &own.join(format!("{role}.toml")),
        &format!(
            "role = \"{role}\"\nlisten = \"127.0.0.1:0\"\n\n\
             [pki]\ncertificate = \"../pki/{role}.pem\"\nkey = \"../pki/{role}.key\"\nci_root = \"../pki/ci.pem\"\n\n\
             [store]\npath = \"{role}.sqlite\"\nkey_file = \"store.key\"\n\n\
             [subscribers]\nmcc = \"001\"\nmnc = \"{mnc}\"\nfirst_msin = \"0000000001\"\ncount = 100000\n\
             iccid_prefix = \"{prefix}\"\nop_file = \"op.key\"\n\n\
             [peers]\n{peers}"
        ),
    )
}

fn write_ro_config(
    dir: &Path,
    urls: &Urls,
    options: &LabOptions,
    database: Option<&str>,
) -> Result<PathBuf> {
    let own = dir.join("ro");
    storage::private_dir(&own)?;
    let admission = match options.max_in_flight {
        Some(n) => format!("max_in_flight = {n}\n"),
        None => String::new(),
    };
    let webhooks: String = options
        .webhooks
        .iter()
        .map(|(name, url, secret)| {
            format!(
                "\n[[webhooks]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret_file = \"{}\"\n",
                secret.display()
            )
        })
        .collect();
    write(
        &own.join("ro.toml"),
        &(format!(
            "listen = \"127.0.0.1:0\"\n\
             # Short long polls: a restarted RO waits for open requests to finish.\n\
             poll_timeout_ms = 2000\n{}\n\
             [pki]\ncertificate = \"../pki/ro.pem\"\nkey = \"../pki/ro.key\"\nci_root = \"../pki/ci.pem\"\n\
             manufacturer_roots = \"../pki/manufacturer.pem\"\n\n\
             [store]\n{}\n\n\
             [peers]\npva = \"{}\"\n{}",
            admission,
            match database {
                Some(url) => format!("database = \"{url}\""),
                None => "path = \"ro.sqlite\"".to_owned(),
            },
            urls.pva,
            urls.operators
                .iter()
                .map(|(name, url)| format!("{name} = \"{url}\"\n"))
                .collect::<String>()
        ) + &webhooks),
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
