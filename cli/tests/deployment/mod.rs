//! A whole deployment as separate processes, for the crash-safety tests (docs/flow.md,
//! "Crash safety"): `tresor serve pva|mno|ro` and one `tresor device run` per device, each
//! configured from `examples/` on fixed loopback ports so that a role restarted after a
//! crash is found where its peers expect it.
//!
//! Each process may carry a schedule of faults (`TRESOR_FAULT`, `protocol::fault`): it
//! starts with the first; whenever it dies, the deployment starts it again with the next,
//! and without any once the schedule is spent. A process frozen by a `stop` fault is
//! thawed (SIGCONT) after a while, past its peers' timeouts. Once the campaign settled, the
//! invariants of the issue are checked on the stores, the cards and with a real Milenage
//! AKA against each operator's AuC.
//!
//! With [`Options::instances`] above 1 the PVA and the RO run as that many instances on a
//! shared PostgreSQL, behind one front each (`scale_out`, issue 15).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, TRESOR};

mod invariants;
mod process;
mod random;
mod scale_out;

pub use random::{XorShift, env_u64, soak_seed};
pub use scale_out::Served;

/// What a deployment looks like.
#[derive(Clone, Debug)]
pub struct Options {
    pub devices: usize,
    /// The devices' fallback timer.
    pub fallback_secs: u64,
    /// The RO's step deadline (how long a peer may stay down before a change is abandoned).
    pub step_deadline_secs: u64,
    /// Devices (by index) that boot an image the reference values do not know: their change
    /// is abandoned at the appraisal.
    pub tampered: Vec<usize>,
    /// How long a process frozen by a `stop` fault stays frozen.
    pub thaw_after: Duration,
    /// Processes ("ro", "pva", "mno-b", "device-0", …) whose store lives on a small tmpfs of
    /// its own, which [`Deployment::fill`] fills up (a full disk, for real).
    pub small_disks: Vec<String>,
    /// Instances of the PVA and of the RO (`pva-1`, `pva-2`, …, `ro-1`, …): above 1, they
    /// share a private PostgreSQL and sit behind one `tresor front` per role.
    pub instances: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            devices: 2,
            fallback_secs: 120,
            step_deadline_secs: 30,
            tampered: Vec::new(),
            thaw_after: Duration::from_secs(5),
            small_disks: Vec::new(),
            instances: 1,
        }
    }
}

/// One network role's process.
pub struct Role {
    pub name: String,
    kind: &'static str,
    config: String,
    child: Option<Child>,
    schedule: VecDeque<String>,
    /// Every fault planned, in order: one `TRESOR_FAULT` value per process start.
    planned: Vec<String>,
    /// The fault the current process carries.
    current: Option<String>,
    frozen_since: Option<Instant>,
    /// Held down by the test: not restarted until released.
    pub held: bool,
    /// Faults that fired (the process died or froze with them).
    pub fired: Vec<String>,
    pub starts: u32,
}

/// One device's agent process.
pub struct Device {
    pub index: usize,
    config: String,
    pub dir: PathBuf,
    pub card: PathBuf,
    pub device_id: String,
    pub iccid: String,
    pub old_imsi: String,
    child: Option<Child>,
    schedule: VecDeque<String>,
    planned: Vec<String>,
    current: Option<String>,
    pub fired: Vec<String>,
    pub starts: u32,
    /// The agent's outcome once it exited by itself (JSON of `tresor device run --json`).
    pub outcome: Option<Value>,
}

pub struct Deployment {
    pub dir: PathBuf,
    pub roles: Vec<Role>,
    pub devices: Vec<Device>,
    pub ro_url: String,
    options: Options,
    /// The fronts of the scaled roles (none with one instance each).
    fronts: Vec<scale_out::Front>,
    /// The PostgreSQL server the instances share; stopped after them.
    pg: Option<storage::pg_server::PgServer>,
    _temp: Option<tempfile::TempDir>,
}

/// Every role, in start order; with several instances, a scaled role's processes are
/// named after it (`pva-1`, `pva-2`: [`Deployment::roles`]).
pub const ROLES: [&str; 4] = ["pva", "mno-a", "mno-b", "ro"];

impl Deployment {
    /// Prepares the directory, manufactures the devices (with MNO-A subscriptions) and
    /// starts the four roles, `faults[role]` being each role's fault schedule.
    pub fn start(options: Options, faults: &BTreeMap<&str, Vec<String>>) -> Self {
        let temp = tempfile::Builder::new().prefix("tresor-crash-").tempdir().unwrap();
        let dir = temp.path().to_owned();
        support::prepare(&dir);
        let ports: BTreeMap<&str, u16> =
            ROLES.iter().map(|r| (*r, support::unused_port())).collect();
        let (pva, a, b, ro) = (ports["pva"], ports["mno-a"], ports["mno-b"], ports["ro"]);
        let urls = [
            ("127.0.0.1:8440", format!("127.0.0.1:{pva}")),
            ("127.0.0.1:8441", format!("127.0.0.1:{a}")),
            ("127.0.0.1:8442", format!("127.0.0.1:{b}")),
            ("127.0.0.1:8443", format!("127.0.0.1:{ro}")),
            ("https://localhost:8440", format!("https://localhost:{pva}")),
            ("https://localhost:8441", format!("https://localhost:{a}")),
            ("https://localhost:8442", format!("https://localhost:{b}")),
            ("https://localhost:8443", format!("https://localhost:{ro}")),
        ];
        for config in ["pva.toml", "mno-a.toml", "mno-b.toml", "ro.toml", "device.toml"] {
            let path = dir.join(config);
            let mut text = std::fs::read_to_string(&path).unwrap();
            for (from, to) in &urls {
                text = text.replace(from, to);
            }
            std::fs::write(&path, text).unwrap();
        }
        support::edit(
            &dir.join("ro.toml"),
            &[
                (
                    "step_deadline_secs = 300",
                    &format!("step_deadline_secs = {}", options.step_deadline_secs),
                ),
                ("peer_timeout_ms = 30000", "peer_timeout_ms = 3000\npoll_timeout_ms = 2000"),
            ],
        );
        let (pg, mut fronts) = match options.instances {
            0 | 1 => (None, Vec::new()),
            n => {
                assert!(
                    !options.small_disks.iter().any(|d| scale_out::SCALED.contains(&d.as_str())),
                    "the instances' stores live in PostgreSQL, not on small disks"
                );
                let (pg, fronts) = scale_out::prepare(&dir, &ports, n);
                (Some(pg), fronts)
            }
        };
        for name in &options.small_disks {
            let disk = match name.strip_prefix("device-") {
                Some(n) => format!("m2me-{:03}", n.parse::<usize>().unwrap()),
                None => format!("disk-{name}"),
            };
            mount_tmpfs(&dir.join(&disk));
            let (config, from, to) = match name.as_str() {
                "ro" => ("ro.toml", "path = \"ro.sqlite\"", format!("path = \"{disk}/ro.sqlite\"")),
                "pva" => (
                    "pva.toml",
                    "database = \"pva.sqlite\"",
                    format!("database = \"{disk}/pva.sqlite\""),
                ),
                "mno-a" | "mno-b" => (
                    if name == "mno-a" { "mno-a.toml" } else { "mno-b.toml" },
                    if name == "mno-a" {
                        "path = \"mno-a.sqlite\""
                    } else {
                        "path = \"mno-b.sqlite\""
                    },
                    format!("path = \"{disk}/{name}.sqlite\""),
                ),
                _ => continue,
            };
            support::edit(&dir.join(config), &[(from, &to)]);
        }
        tresor::lab::write_tampered_image(&dir.join("tampered-image")).unwrap();
        let mut devices = Vec::new();
        for index in 0..options.devices {
            let name = format!("device-{index}.toml");
            let image = if options.tampered.contains(&index) { "tampered-image" } else { "image" };
            let text = std::fs::read_to_string(dir.join("device.toml"))
                .unwrap()
                .replace("m2me-001", &format!("m2me-{index:03}"))
                .replace("image = \"image\"", &format!("image = \"{image}\""))
                .replace(
                    "fallback_secs = 600",
                    &format!("fallback_secs = {}", options.fallback_secs),
                )
                .replace("deadline_secs = 600", "deadline_secs = 900");
            std::fs::write(dir.join(&name), text).unwrap();
            let out = support::tresor(
                &dir,
                &[
                    "device",
                    "manufacture",
                    "--config",
                    &name,
                    "--mno",
                    "mno-a.toml",
                    "--manufacturer-cert",
                    "pki/manufacturer.pem",
                    "--manufacturer-key",
                    "pki/manufacturer.key",
                    "--devices-file",
                    "devices.txt",
                ],
            );
            // "manufactured ID with ICCID X, IMSI Y (mno-a)"
            let line = String::from_utf8_lossy(&out.stdout).to_string();
            let words: Vec<&str> = line.split_whitespace().collect();
            let device_dir = dir.join(format!("m2me-{index:03}"));
            devices.push(Device {
                index,
                config: name,
                card: device_dir.join("uicc.json"),
                dir: device_dir,
                device_id: words[1].to_owned(),
                iccid: words[4].trim_end_matches(',').to_owned(),
                old_imsi: words[6].to_owned(),
                child: None,
                schedule: faults
                    .get(format!("device-{index}").as_str())
                    .cloned()
                    .unwrap_or_default()
                    .into(),
                planned: faults
                    .get(format!("device-{index}").as_str())
                    .cloned()
                    .unwrap_or_default(),
                current: None,
                fired: Vec::new(),
                starts: 0,
                outcome: None,
            });
        }
        let mut roles: Vec<Role> = ROLES
            .iter()
            .flat_map(|kind| {
                scale_out::instance_names(kind, options.instances)
                    .into_iter()
                    .map(|name| (*kind, name))
            })
            .map(|(kind, name)| Role {
                kind: if kind.starts_with("mno") { "mno" } else { kind },
                config: format!("{name}.toml"),
                child: None,
                schedule: faults.get(name.as_str()).cloned().unwrap_or_default().into(),
                planned: faults.get(name.as_str()).cloned().unwrap_or_default(),
                name,
                current: None,
                frozen_since: None,
                held: false,
                fired: Vec::new(),
                starts: 0,
            })
            .collect();
        for front in &mut fronts {
            front.start(&dir);
        }
        for role in &mut roles {
            role.spawn(&dir);
            role.wait_ready(&dir);
        }
        Self {
            ro_url: format!("https://localhost:{ro}"),
            dir,
            roles,
            devices,
            options,
            fronts,
            pg,
            _temp: Some(temp),
        }
    }

    /// The names of the role processes, in start order (`ROLES`, each scaled role as its
    /// instances).
    pub fn role_names(&self) -> Vec<String> {
        self.roles.iter().map(|r| r.name.clone()).collect()
    }

    /// Which instances served which devices (scale-out), from their logs.
    pub fn served(&self) -> Served {
        Served::read(&self.dir, &self.role_names())
    }

    /// Per front (`front-pva`, `front-ro`), the connections it handed to each instance, in
    /// the instances' order; complete once the deployment is stopped.
    pub fn front_connections(&self) -> BTreeMap<String, Vec<usize>> {
        self.fronts
            .iter()
            .map(|f| (f.name.clone(), f.connections(&self.dir).into_values().collect()))
            .collect()
    }

    pub fn role(&mut self, name: &str) -> &mut Role {
        self.roles.iter_mut().find(|r| r.name == name).unwrap()
    }

    /// Restarts every role or device process that died (with its next fault) and thaws
    /// frozen ones that stayed frozen long enough.
    pub fn tend(&mut self) {
        let dir = self.dir.clone();
        let thaw = self.options.thaw_after;
        for front in &mut self.fronts {
            front.check(&dir);
        }
        for role in &mut self.roles {
            role.tend(&dir, thaw);
        }
        for device in &mut self.devices {
            device.tend(&dir);
        }
    }

    /// Creates the campaign of every device (`tresor campaign create`), retrying while the
    /// RO or the operators die; a campaign the RO recorded before it died is picked up.
    pub fn create_campaign(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "no campaign could be created");
            self.tend();
            if let Some(id) = self.campaigns().and_then(|list| list.first().cloned()) {
                return id;
            }
            // The RO answers once the campaign is ready, which may take a while when peers
            // die: keep tending them meanwhile.
            let out = self.dir.join("campaign.json");
            let args = ["campaign", "create", "--from", "mno-a", "--to", "mno-b"];
            let mut create = Command::new(TRESOR)
                .current_dir(&self.dir)
                .args(args)
                .args(["--devices", "devices.txt", "--ro", &self.ro_url, "--json"])
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let status = loop {
                if let Some(status) = create.try_wait().unwrap() {
                    break status;
                }
                self.tend();
                std::thread::sleep(Duration::from_millis(100));
            };
            if status.success() {
                let report: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
                return report["id"].as_str().unwrap().to_owned();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The RO's campaign ids, if it answers.
    pub fn campaigns(&self) -> Option<Vec<String>> {
        let out = Command::new(TRESOR)
            .current_dir(&self.dir)
            .args(["campaign", "list", "--ro", &self.ro_url, "--json"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
        Some(list.iter().filter_map(|c| c["id"].as_str().map(str::to_owned)).collect())
    }

    /// The campaign's status at the RO, if it answers.
    pub fn status(&self, id: &str) -> Option<Value> {
        let out = Command::new(TRESOR)
            .current_dir(&self.dir)
            .args(["campaign", "status", id, "--ro", &self.ro_url, "--json"])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Powers every device on.
    pub fn run_devices(&mut self) {
        for index in 0..self.devices.len() {
            self.run_device(index);
        }
    }

    /// Powers device `index` on (again, after its agent exited).
    pub fn run_device(&mut self, index: usize) {
        let dir = self.dir.clone();
        let device = &mut self.devices[index];
        device.outcome = None;
        device.spawn(&dir);
    }

    /// Polls the campaign's status until `f` holds for it, tending the processes.
    pub fn wait_for(&mut self, id: &str, within: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            self.tend();
            if let Some(status) = self.status(id) {
                if f(&status) {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "condition not reached within {within:?}:\n{status:#}\n{}",
                    self.logs()
                );
            }
            assert!(Instant::now() < deadline, "no status within {within:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `tresor ARGS` in the deployment's directory against the RO; its JSON answer.
    pub fn cli(&self, args: &[&str]) -> Value {
        let out = Command::new(TRESOR)
            .current_dir(&self.dir)
            .args(args)
            .args(["--ro", &self.ro_url, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "tresor {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Creates a campaign of every device; its id (the RO must be up).
    pub fn new_campaign(&mut self) -> String {
        let report = self.cli(&[
            "campaign",
            "create",
            "--from",
            "mno-a",
            "--to",
            "mno-b",
            "--devices",
            "devices.txt",
        ]);
        report["id"].as_str().unwrap().to_owned()
    }

    /// Waits until every agent exited by itself, tending the processes.
    pub fn wait_agents(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.devices.iter().all(|d| d.outcome.is_some()) {
            self.tend();
            assert!(
                Instant::now() < deadline,
                "agents still running after {within:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the campaign is over at the RO, every report acknowledged, and every
    /// agent exited by itself — tending the processes meanwhile. Returns the final status.
    pub fn settle(&mut self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        let mut last = Value::Null;
        loop {
            self.tend();
            if let Some(status) = self.status(id) {
                let done =
                    matches!(status["state"].as_str(), Some("completed" | "failed" | "cancelled"))
                        && status["summary"]["reports_pending"] == 0;
                let agents_done = self.devices.iter().all(|d| d.child.is_none());
                if done && agents_done {
                    return status;
                }
                last = status;
            }
            if Instant::now() > deadline {
                panic!(
                    "the campaign did not settle within {within:?}:\n{last:#}\nfaults fired: {:?}\n{}",
                    self.fired(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Every fault that fired, by process.
    pub fn fired(&self) -> Vec<String> {
        let roles =
            self.roles.iter().flat_map(|r| r.fired.iter().map(move |f| format!("{}: {f}", r.name)));
        let devices = self
            .devices
            .iter()
            .flat_map(|d| d.fired.iter().map(move |f| format!("device-{}: {f}", d.index)));
        roles.chain(devices).collect()
    }

    /// Faults scheduled whose point the process never reached: each fault point announces
    /// itself in its process's log when it fires (`protocol::fault`).
    pub fn unfired(&self) -> Vec<String> {
        let planned = self
            .roles
            .iter()
            .map(|r| (r.name.to_owned(), &r.planned))
            .chain(self.devices.iter().map(|d| (format!("device-{}", d.index), &d.planned)));
        let mut unfired = Vec::new();
        for (name, specs) in planned {
            let log = support::log(&self.dir, &name);
            for point in
                specs.iter().flat_map(|spec| spec.split(',')).filter_map(|p| p.split(':').next())
            {
                if !log.contains(&format!("{}: {point}: ", protocol::fault::FAULT_ENV)) {
                    unfired.push(format!("{name}: {point}"));
                }
            }
        }
        unfired
    }

    /// The tail of every process's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in self
            .fronts
            .iter()
            .map(|f| f.name.clone())
            .chain(self.role_names())
            .chain(self.devices.iter().map(|d| format!("device-{}", d.index)))
        {
            let log = support::log(&self.dir, &name);
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out.push_str(&format!("--- {name}.log (last lines)\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The pid of role or device `name` ("ro", "device-0", …), if it runs.
    fn pid_of(&self, name: &str) -> Option<u32> {
        match name.strip_prefix("device-") {
            Some(n) => self.devices[n.parse::<usize>().unwrap()].child.as_ref().map(Child::id),
            None => self.roles.iter().find(|r| r.name == name)?.pid(),
        }
    }

    /// Waits until `name` froze at its `stop` fault, tending the other processes.
    pub fn wait_frozen(&mut self, name: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.pid_of(name).and_then(support::proc).is_some_and(|p| p.state == 'T') {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not freeze within {within:?}\n{}",
                self.logs()
            );
            self.tend();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lets a frozen `name` go on (SIGCONT).
    pub fn thaw(&mut self, name: &str) {
        if let Some(pid) = self.pid_of(name) {
            support::signal(pid, "CONT");
        }
        if let Some(role) = self.roles.iter_mut().find(|r| r.name == name) {
            role.frozen_since = None;
            if let Some(fault) = role.current.take() {
                role.fired.push(fault);
            }
        }
    }

    /// Tends the processes for `d`.
    pub fn tend_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.tend();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fills the small disk of `name` (see [`Options::small_disks`]) to the last byte.
    pub fn fill(&self, name: &str) {
        let filler = self.disk(name).join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            if std::io::Write::write_all(&mut file, &block).is_err() {
                break;
            }
        }
        let mut byte = 0;
        while std::io::Write::write_all(&mut file, &[0]).is_ok() && byte < 64 * 1024 {
            byte += 1;
        }
    }

    /// Frees the small disk of `name` again.
    pub fn unfill(&self, name: &str) {
        let _ = std::fs::remove_file(self.disk(name).join("filler"));
    }

    /// Where the store of operator `name` lives.
    fn store_path(&self, name: &str) -> PathBuf {
        if self.options.small_disks.iter().any(|d| d == name) {
            self.disk(name).join(format!("{name}.sqlite"))
        } else {
            self.dir.join(format!("{name}.sqlite"))
        }
    }

    fn disk(&self, name: &str) -> PathBuf {
        match name.strip_prefix("device-") {
            Some(n) => self.dir.join(format!("m2me-{:03}", n.parse::<usize>().unwrap())),
            None => self.dir.join(format!("disk-{name}")),
        }
    }

    /// Stops every process (SIGCONT first for a frozen one, then SIGTERM).
    pub fn stop(&mut self) {
        for role in &mut self.roles {
            role.stop();
        }
        for front in &mut self.fronts {
            front.stop();
        }
        for device in &mut self.devices {
            if let Some(mut child) = device.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.stop();
        for name in self.options.small_disks.clone() {
            let _ = Command::new("umount").arg("-l").arg(self.disk(&name)).status();
        }
        if std::thread::panicking() {
            // Keep the directory for a post-mortem.
            if let Some(temp) = self._temp.take() {
                eprintln!("deployment kept at {}", temp.keep().display());
            }
        }
    }
}

/// Mounts a 16 MiB tmpfs at `dir` (the tests run as root, as CI does).
fn mount_tmpfs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs at {} (the disk-full tests need root)", dir.display());
}
