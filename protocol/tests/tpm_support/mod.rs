//! A software TPM for the `tpm_*` integration tests: one swtpm process per test on a free
//! loopback port pair, a private working directory, and the tpm2-tools programs pointed at
//! it. The process is killed and the directory removed on drop, also when a test panics.
//!
//! Kept private to protocol's tests: protocol must not depend on `tre` (which links the
//! TSS), so it cannot use the lab in `tre::swtpm`.

#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Tpm {
    // Field order is drop order: the process dies before its directory goes.
    _child: ChildGuard,
    port: u16,
    dir: PathBuf,
    _dir_guard: DirGuard,
}

/// Kills and reaps the swtpm process on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Tpm {
    /// Starts a fresh swtpm (TPM 2.0, not-need-init, startup-clear).
    pub fn start() -> Tpm {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tresor-tpmwire-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let dir_guard = DirGuard(dir.clone());
        for _ in 0..20 {
            let port = free_port_pair();
            let mut child = ChildGuard(
                Command::new("swtpm")
                    .args(["socket", "--tpm2", "--tpmstate"])
                    .arg(format!("dir={}", dir.join("state").display()))
                    .arg("--server")
                    .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                    .arg("--ctrl")
                    .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                    .args(["--flags", "not-need-init,startup-clear"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("swtpm is not installed (make deps)"),
            );
            if wait_ready(&mut child.0, port, &dir) {
                return Tpm { _child: child, port, dir, _dir_guard: dir_guard };
            }
            // Lost the ports to another process: the guard kills this child; next pair.
        }
        panic!("could not start swtpm");
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    pub fn write(&self, file: &str, bytes: &[u8]) {
        std::fs::write(self.path(file), bytes).unwrap();
    }

    /// A tpm2-tools command reaching this TPM, run in the working directory.
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        cmd.current_dir(&self.dir).env("TPM2TOOLS_TCTI", self.tcti()).stdin(Stdio::null());
        cmd
    }

    /// Runs a tool, then flushes transient objects (there is no resource manager).
    pub fn try_run(&self, tool: &str, args: &[&str]) -> Output {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e} (make deps)"));
        self.flush();
        out
    }

    /// Runs a tool that must succeed; returns its stdout.
    pub fn run(&self, tool: &str, args: &[&str]) -> String {
        let out = self.try_run(tool, args);
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Flushes transient objects; sessions are saved to files by the tools and flushed
    /// explicitly by the tests that start them.
    pub fn flush(&self) {
        let _ = self.command("tpm2_flushcontext").arg("-t").output();
    }
}

/// Waits until the swtpm on `port` answers a command; false if it exited (port taken).
fn wait_ready(child: &mut Child, port: u16, dir: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let addr = (Ipv4Addr::LOCALHOST, port + 1).into();
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            let out = Command::new("tpm2_getrandom")
                .args(["8", "--hex"])
                .current_dir(dir)
                .env("TPM2TOOLS_TCTI", format!("swtpm:host=127.0.0.1,port={port}"))
                .output()
                .expect("tpm2-tools are not installed (make deps)");
            return out.status.success();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A port P with P and P + 1 free right now (swtpm's TCTI takes the control port as P + 1).
fn free_port_pair() -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
}
