//! A private PostgreSQL server for tests and the lab (issue 15): `initdb` into a temporary
//! directory, `postgres` listening on a Unix socket in that directory only (no TCP port, so
//! servers of parallel tests never meet), run as an unprivileged user (PostgreSQL refuses
//! root: when this process is root, the server runs as `nobody`), and stopped when dropped.
//! Nothing here touches a system-wide cluster.
//!
//! The binaries are Debian's `postgresql` package (`make deps` installs it): the directory
//! `TRESOR_PG_BIN` names, else the newest `/usr/lib/postgresql/*/bin`, else the `PATH`.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The superuser of a private server.
pub const SUPERUSER: &str = "tresor";
/// The port number names the socket file (`.s.PGSQL.5432`); no TCP port is opened.
const PORT: u16 = 5432;
/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How the server trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fsync` and synchronous commit on, as in production: what benchmarks measure.
    #[default]
    Durable,
    /// `fsync` off: for tests that kill the roles, never the server.
    Fast,
}

/// A running private server.
#[derive(Debug)]
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
    user: Option<(u32, u32)>,
    durability: Durability,
}

impl PgServer {
    /// Initialises a cluster and starts a durable server on it.
    pub fn start() -> io::Result<Self> {
        Self::start_with(Durability::Durable)
    }

    pub fn start_with(durability: Durability) -> io::Result<Self> {
        let bin = binaries()?;
        let dir = tempfile::Builder::new().prefix("tresor-pg-").tempdir()?;
        let user = unprivileged_user()?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("initdb.log"))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path().join("initdb.log"), Some(uid), Some(gid))?;
        }
        let status = as_user(Command::new(bin.join("initdb")), user)
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()?;
        if !status.success() {
            return Err(failed(dir.path(), "initdb.log", "initdb"));
        }
        watch(&bin, &data, dir.path(), user)?;
        let mut server = Self { dir, bin, child: None, user, durability };
        server.resume()?;
        Ok(server)
    }

    /// Starts `postgres` on the cluster (again, after [`PgServer::pause`]) and waits until
    /// it accepts connections.
    pub fn resume(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log_path = self.dir.path().join("postgres.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(&log_path, Some(uid), Some(gid))?;
        }
        let fsync = if self.durability == Durability::Durable { "on" } else { "off" };
        let child = as_user(Command::new(self.bin.join("postgres")), self.user)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path())
            .args(["-p", &PORT.to_string(), "-c", "listen_addresses="])
            .args(["-c", &format!("fsync={fsync}"), "-c", "max_connections=300"])
            .args(["-c", "shared_buffers=64MB", "-c", "log_min_messages=warning"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Stops the server (fast shutdown: sessions are ended, committed data stays) until
    /// [`PgServer::resume`]: a database that is down for a while, as the roles see it.
    pub fn pause(&mut self) -> io::Result<()> {
        self.shut_down()
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(failed(
                    self.dir.path(),
                    "postgres.log",
                    &format!("postgres ({status})"),
                ));
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(self.dir.path())
                .args(["-p", &PORT.to_string(), "-U", SUPERUSER])
                .status()?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(failed(self.dir.path(), "postgres.log", "postgres did not start"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id (the postmaster), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The directory of the server's socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of database `name` on this server (which may not exist yet).
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres:///{name}?host={}&port={PORT}&user={SUPERUSER}",
            self.dir.path().display()
        )
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> io::Result<String> {
        let out = Command::new(self.bin.join("createdb"))
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &PORT.to_string(), "-U", SUPERUSER, name])
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "createdb {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(self.url(name))
    }

    /// Stops the server (fast shutdown: open sessions are ended, committed data stays).
    pub fn stop(mut self) -> io::Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let stopped = as_user(Command::new(self.bin.join("pg_ctl")), self.user)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(stopped, Ok(s) if s.success()) {
            let _ = child.kill();
        }
        child.wait().map(drop)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

/// A server outlives a process that ends without dropping it (a killed test, a `static`):
/// a watchdog stops it and removes its directory once this process is gone (a drop removes
/// the directory, which ends the watchdog too; a pause leaves both).
fn watch(bin: &Path, data: &Path, dir: &Path, user: Option<(u32, u32)>) -> io::Result<()> {
    let script = format!(
        "while [ -d /proc/{me} ] && [ -d '{dir}' ]; do sleep 0.5; done; \
         '{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
        me = std::process::id(),
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
    );
    as_user(Command::new("sh"), user)
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
}

/// A fresh database on this process's shared server (started at the first call, with
/// [`Durability::Fast`]): for tests, each of which takes a database of its own.
pub fn scratch_database(prefix: &str) -> io::Result<String> {
    static SERVER: std::sync::OnceLock<Result<PgServer, String>> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let server = SERVER
        .get_or_init(|| PgServer::start_with(Durability::Fast).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))?;
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    server.create_database(&format!("{name}_{n}"))
}

fn as_user(mut command: Command, user: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

fn failed(dir: &Path, log: &str, what: &str) -> io::Error {
    let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(8).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    io::Error::other(format!("{what} failed: {}", tail.join(" | ")))
}

/// The directory of the PostgreSQL server binaries.
pub fn binaries() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("TRESOR_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join("postgres").exists() && dir.join("initdb").exists())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no PostgreSQL server binaries (install Debian's postgresql package: make deps; \
                 or set TRESOR_PG_BIN)",
            )
        })
}

/// `nobody`'s user and group when this process is root (PostgreSQL refuses root), else
/// none: the server runs as this process's user.
fn unprivileged_user() -> io::Result<Option<(u32, u32)>> {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is this process's effective user.
    if std::fs::metadata("/proc/self")?.uid() != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == "nobody")
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            io::Error::other("running as root and there is no user nobody to run PostgreSQL as")
        })
}
