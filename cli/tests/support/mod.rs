//! Helpers shared by the tests that run the real `tresor` binary: a directory prepared from
//! `examples/` as a newcomer would (examples/README.md), served roles stopped on drop, and
//! the processes of a run as /proc shows them.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod campaign;
pub mod pinned;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const TRESOR: &str = env!("CARGO_BIN_EXE_tresor");

pub fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Copies every example configuration and the sample image into `dir`, creates the PKI
/// (`tresor pki init pki`), the manufacturer roots and both operators' secret files.
pub fn prepare(dir: &Path) {
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::create_dir(dir.join("image")).unwrap();
    for entry in std::fs::read_dir(examples().join("image")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join("image").join(path.file_name().unwrap())).unwrap();
    }
    tresor(dir, &["pki", "init", "pki"]);
    std::fs::create_dir(dir.join("manufacturers")).unwrap();
    std::fs::copy(dir.join("pki/manufacturer.pem"), dir.join("manufacturers/manufacturer.pem"))
        .unwrap();
    for mno in ["mno-a", "mno-b"] {
        secret_file(&dir.join(format!("{mno}-store.key")), 32);
        secret_file(&dir.join(format!("{mno}-op.key")), 16);
    }
}

/// A served role; stopped with SIGTERM (then killed) when dropped, also on panic.
pub struct Service {
    pub name: &'static str,
    pub child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ =
            Command::new("kill").arg(self.child.id().to_string()).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tresor ARGS` in `dir` and insists that it succeeds.
pub fn tresor(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(TRESOR).current_dir(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tresor {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Starts `tresor serve ROLE --config CONFIG [EXTRA…] --ready-file DIR/NAME.url`, stderr
/// to `DIR/NAME.log`.
pub fn spawn_serve(
    dir: &Path,
    name: &'static str,
    role: &str,
    config: &str,
    extra: &[&str],
) -> Service {
    spawn_serve_logging(dir, name, role, config, extra, "info")
}

/// [`spawn_serve`] with `RUST_LOG=rust_log`.
pub fn spawn_serve_logging(
    dir: &Path,
    name: &'static str,
    role: &str,
    config: &str,
    extra: &[&str],
    rust_log: &str,
) -> Service {
    let ready = dir.join(format!("{name}.url"));
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(TRESOR)
        .current_dir(dir)
        .args(["serve", role, "--config", config])
        .args(extra)
        .arg("--ready-file")
        .arg(&ready)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Service { name, child }
}

/// [`spawn_serve`], then waits for the URL it reports.
pub fn serve(dir: &Path, name: &'static str, role: &str, config: &str) -> (Service, String) {
    serve_with(dir, name, role, config, &[])
}

pub fn serve_with(
    dir: &Path,
    name: &'static str,
    role: &str,
    config: &str,
    extra: &[&str],
) -> (Service, String) {
    wait_ready(dir, spawn_serve(dir, name, role, config, extra))
}

/// [`serve`] with `RUST_LOG=rust_log`.
pub fn serve_logging(
    dir: &Path,
    name: &'static str,
    role: &str,
    config: &str,
    rust_log: &str,
) -> (Service, String) {
    wait_ready(dir, spawn_serve_logging(dir, name, role, config, &[], rust_log))
}

/// Waits for the URL a served role reports in its ready file.
fn wait_ready(dir: &Path, mut service: Service) -> (Service, String) {
    let name = service.name;
    let ready = dir.join(format!("{name}.url"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(url) = std::fs::read_to_string(&ready) {
            return (service, url.trim().to_owned());
        }
        if let Ok(Some(status)) = service.child.try_wait() {
            panic!("{name} exited with {status}:\n{}", log(dir, name));
        }
        assert!(Instant::now() < deadline, "{name} did not start:\n{}", log(dir, name));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The stderr log of a process started by [`spawn_serve`] or [`spawn_logged`].
pub fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// Starts `tresor ARGS` in `dir` with stderr (warnings and up) to `DIR/NAME.log`.
pub fn spawn_logged(dir: &Path, name: &str, args: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Command::new(TRESOR)
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits up to `within` for `child` to exit.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` every 20 ms for up to `within`.
pub fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn edit(path: &Path, edits: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(path).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{} has no {from:?}", path.display());
        text = text.replace(from, to);
    }
    std::fs::write(path, text).unwrap();
}

pub fn secret_file(path: &Path, bytes: usize) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut value = vec![0u8; bytes];
    for (i, b) in value.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(bytes as u8);
    }
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    std::io::Write::write_all(&mut f, hex.as_bytes()).unwrap();
}

/// A loopback port nothing listens on (bound, then released).
/// A free loopback port for a role that must come back on the same port after a restart.
/// Taken from 10000–19999, below swtpm's range (20000–32000, `swtpm-config/swtpm.toml`) and
/// below the kernel's ephemeral range (32768–60999 on Linux): a port the system hands out
/// for `:0` can meanwhile become some connection's source port, and a restarted role then
/// finds it taken ("Address already in use").
pub fn unused_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() as u16).wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u16);
    let _ = NEXT.compare_exchange(0, seed % 10_000 + 1, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..10_000 {
        let port = 10_000 + NEXT.fetch_add(1, Ordering::SeqCst) % 10_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 10000-19999");
}

/// A process as /proc/PID/stat shows it: command name, state, parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    pub ppid: u32,
}

pub fn proc(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(Proc { pid, comm, state, ppid })
}

pub fn processes() -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter_map(proc)
        .collect()
}

/// Whether `pid` runs (a zombie has exited: it holds no socket and no lock).
pub fn alive(pid: u32) -> bool {
    proc(pid).is_some_and(|p| !matches!(p.state, 'Z' | 'X'))
}

/// Live swtpm processes whose parent is `parent`.
pub fn swtpm_children(parent: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.comm == "swtpm" && p.ppid == parent && !matches!(p.state, 'Z' | 'X'))
        .map(|p| p.pid)
        .collect()
}

/// Live swtpm processes whose command line mentions a path under `dir`.
pub fn swtpms_under(dir: &Path) -> Vec<u32> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let needle = dir.display().to_string();
    processes()
        .into_iter()
        .filter(|p| p.comm == "swtpm" && !matches!(p.state, 'Z' | 'X'))
        .filter(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.pid))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .map(|p| p.pid)
        .collect()
}

/// Sends `signal` (e.g. "TERM", "KILL") to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let status =
        Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}
