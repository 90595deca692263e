//! The scale-out shape of a deployment (issue 15, docs/scale-out.md): several PVA and RO
//! instances on their own ports sharing one private PostgreSQL (`storage::pg_server`,
//! databases `pva` and `ro`), and one `tresor front` per role on the port its peers and the
//! devices already use, so that no peer's or device's configuration changes. The fronts are
//! never killed; the instances are, like any role.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use storage::pg_server::{Durability, PgServer};

use crate::support::{self, TRESOR};

/// The roles that run as several instances.
pub const SCALED: [&str; 2] = ["pva", "ro"];

/// The RO's device transitions that a device's own request makes (`ro::device`): the
/// instance that logs one served that device's request.
const DEVICE_REQUEST_STATES: [&str; 5] =
    ["tre-activated", "enrolling", "appraising", "installed", "aka-answered"];

/// The process names of role `kind` with `instances` instances: `pva-1`, `pva-2`, … for a
/// scaled role, else the role's own name.
pub fn instance_names(kind: &str, instances: usize) -> Vec<String> {
    if instances > 1 && SCALED.contains(&kind) {
        (1..=instances).map(|i| format!("{kind}-{i}")).collect()
    } else {
        vec![kind.to_owned()]
    }
}

/// Starts the private PostgreSQL server with the databases `pva` and `ro`, and writes
/// `pva-N.toml` and `ro-N.toml` from `pva.toml` and `ro.toml` (already pointing at the
/// fronts' ports in `ports`): each instance listens on a port of its own and keeps its
/// store in the shared database. Returns the server and the fronts to start.
pub fn prepare(
    dir: &Path,
    ports: &BTreeMap<&str, u16>,
    instances: usize,
) -> (PgServer, Vec<Front>) {
    let pg = PgServer::start_with(Durability::Fast).expect("a private PostgreSQL server");
    let mut fronts = Vec::new();
    for kind in SCALED {
        let url = pg.create_database(kind).unwrap();
        let template = std::fs::read_to_string(dir.join(format!("{kind}.toml"))).unwrap();
        let listen = format!("listen = \"127.0.0.1:{}\"", ports[kind]);
        let store = match kind {
            "pva" => "database = \"pva.sqlite\"",
            _ => "path = \"ro.sqlite\"",
        };
        assert!(template.contains(&listen) && template.contains(store), "{kind}.toml changed");
        let mut backends = Vec::new();
        for name in instance_names(kind, instances) {
            let port = support::unused_port();
            let text = template
                .replace(&listen, &format!("listen = \"127.0.0.1:{port}\""))
                .replace(store, &format!("database = \"{url}\""));
            std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
            backends.push(port);
        }
        fronts.push(Front {
            name: format!("front-{kind}"),
            listen: ports[kind],
            backends,
            child: None,
        });
    }
    (pg, fronts)
}

/// The shared RO store once the campaign settled and the instances stopped: no device left
/// in a non-final state, no outbox message left undelivered or given up, whichever instance
/// wrote or claimed it.
pub fn check_shared_store(pg: &PgServer) {
    let count = |sql: &str| psql(pg, "ro", sql).parse::<u64>().unwrap();
    assert_eq!(count("SELECT count(*) FROM devices WHERE final = 0"), 0, "devices not final");
    let stuck = psql(
        pg,
        "ro",
        "SELECT peer || ' ' || path || ' attempts=' || attempts || ' dead=' || dead FROM outbox \
         WHERE delivered_ms IS NULL OR dead <> 0",
    );
    assert!(stuck.is_empty(), "outbox messages not delivered:\n{stuck}");
    assert!(count("SELECT count(*) FROM outbox") > 0, "the outbox was used");
}

/// `psql`'s unaligned answer to `sql` in database `db`.
fn psql(pg: &PgServer, db: &str, sql: &str) -> String {
    let out = Command::new(storage::pg_server::binaries().unwrap().join("psql"))
        .arg("-h")
        .arg(pg.socket_dir())
        .args(["-p", "5432", "-U", storage::pg_server::SUPERUSER, "-d", db, "-At", "-c", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One role's `tresor front`: round robin over the role's instances, TLS passed through.
pub struct Front {
    pub name: String,
    listen: u16,
    backends: Vec<u16>,
    child: Option<Child>,
}

impl Front {
    /// Starts the front and waits until it listens. Its connections are logged (debug) with
    /// the backend each went to.
    pub fn start(&mut self, dir: &Path) {
        let log = std::fs::File::create(dir.join(format!("{}.log", self.name))).unwrap();
        let out = dir.join(format!("{}.out", self.name));
        let mut command = Command::new(TRESOR);
        command.current_dir(dir).args(["front", "--listen", &format!("127.0.0.1:{}", self.listen)]);
        for port in &self.backends {
            command.args(["--backend", &format!("127.0.0.1:{port}")]);
        }
        let child = command
            .env("RUST_LOG", "info,tresor::front=debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&out).unwrap_or_default().contains("listening on") {
            self.check(dir);
            assert!(Instant::now() < deadline, "{} did not start", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fronts are not killed: one that ended is a bug.
    pub fn check(&mut self, dir: &Path) {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait().unwrap()
        {
            panic!("{} exited with {status}:\n{}", self.name, support::log(dir, &self.name));
        }
    }

    /// How many connections the front handed to each backend, by backend port (from its
    /// log: one debug line per connection that ended).
    pub fn connections(&self, dir: &Path) -> BTreeMap<u16, usize> {
        let log = support::log(dir, &self.name);
        self.backends
            .iter()
            .map(|port| {
                let field = format!("backend=127.0.0.1:{port} ");
                let handed = log
                    .lines()
                    .filter(|l| l.contains(&field))
                    .filter(|l| l.contains("closed") || l.contains("ended with an error"));
                (*port, handed.count())
            })
            .collect()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            support::signal(child.id(), "TERM");
            if support::wait_exit(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Which instances served what, from their logs (appended across restarts).
#[derive(Debug, Default)]
pub struct Served {
    /// Per RO instance, the devices whose own requests it served.
    pub ro_devices: BTreeMap<String, BTreeSet<String>>,
    /// Per PVA instance, the devices it appraised.
    pub pva_appraised: BTreeMap<String, BTreeSet<String>>,
}

impl Served {
    /// Reads the logs of the instances `names` in `dir`.
    pub fn read(dir: &Path, names: &[String]) -> Self {
        let mut served = Self::default();
        for name in names {
            let log = support::log(dir, name);
            if name.starts_with("ro-") {
                let devices = log
                    .lines()
                    .filter(|l| l.contains("device transition"))
                    .filter(|l| {
                        DEVICE_REQUEST_STATES.iter().any(|s| l.contains(&format!(" to=\"{s}\"")))
                    })
                    .filter_map(|l| field(l, "device"))
                    .collect();
                served.ro_devices.insert(name.clone(), devices);
            } else if name.starts_with("pva-") {
                let devices = log
                    .lines()
                    .filter(|l| l.ends_with(" appraised") || l.contains(" appraised "))
                    .filter_map(|l| field(l, "device"))
                    .collect();
                served.pva_appraised.insert(name.clone(), devices);
            }
        }
        served
    }

    /// Devices whose requests more than one RO instance served.
    pub fn devices_on_several_ros(&self) -> BTreeSet<String> {
        let mut seen = BTreeMap::<&String, usize>::new();
        for devices in self.ro_devices.values() {
            for device in devices {
                *seen.entry(device).or_default() += 1;
            }
        }
        seen.into_iter().filter(|(_, n)| *n > 1).map(|(d, _)| d.clone()).collect()
    }
}

/// The value of `name=value` in a log line (tracing's plain format).
fn field(line: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    line.split_whitespace().find_map(|w| w.strip_prefix(&prefix)).map(str::to_owned)
}
