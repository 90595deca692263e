//! The processes of a deployment: a role or a device agent started with its next fault,
//! restarted when it dies, thawed when it stayed frozen long enough.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Device, Role};
use crate::support::{self, TRESOR};

impl Role {
    pub(super) fn spawn(&mut self, dir: &Path) {
        let _ = std::fs::remove_file(dir.join(format!("{}.url", self.name)));
        self.current = self.schedule.pop_front();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{}.log", self.name)))
            .unwrap();
        let mut command = Command::new(TRESOR);
        command
            .current_dir(dir)
            .args([
                "serve",
                self.kind,
                "--config",
                &self.config,
                "--ready-file",
                &format!("{}.url", self.name),
            ])
            .env("RUST_LOG", "info")
            .env_remove(protocol::fault::FAULT_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(fault) = &self.current {
            command.env(protocol::fault::FAULT_ENV, fault);
        }
        self.child = Some(command.spawn().unwrap());
        self.starts += 1;
    }

    pub(super) fn wait_ready(&mut self, dir: &Path) {
        let ready = dir.join(format!("{}.url", self.name));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                // Died during start-up (a fault there): tend() starts it again.
                if self.current.is_some() {
                    return;
                }
                panic!("{} exited with {status}:\n{}", self.name, support::log(dir, &self.name));
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start:\n{}",
                self.name,
                support::log(dir, &self.name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn tend(&mut self, dir: &Path, thaw: Duration) {
        if self.held {
            return;
        }
        let Some(child) = self.child.as_mut() else {
            self.spawn(dir);
            self.wait_ready(dir);
            return;
        };
        match child.try_wait().unwrap() {
            Some(status) => {
                // Only a fault (or the test) kills a role; any other end is a bug.
                assert_eq!(
                    status.signal(),
                    Some(9),
                    "{} exited with {status}:\n{}",
                    self.name,
                    support::log(dir, &self.name)
                );
                let fault = self.current.take().unwrap_or_else(|| "killed".into());
                self.fired.push(fault);
                self.spawn(dir);
                self.wait_ready(dir);
            }
            None => {
                let pid = child.id();
                let stopped = support::proc(pid).is_some_and(|p| p.state == 'T');
                match (stopped, self.frozen_since) {
                    (true, None) => self.frozen_since = Some(Instant::now()),
                    (true, Some(since)) if since.elapsed() > thaw => {
                        support::signal(pid, "CONT");
                        self.frozen_since = None;
                        if let Some(fault) = self.current.take() {
                            self.fired.push(fault);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Kills the process and keeps it down (a peer that is gone) until [`Role::release`].
    pub fn hold(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.held = true;
    }

    /// Lets `tend` start a held role again.
    pub fn release(&mut self) {
        self.held = false;
    }

    /// Kills the process (SIGKILL) now; `tend` restarts it with its next fault.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
            self.current.get_or_insert_with(|| "kill -9 by the test".into());
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(super) fn stop(&mut self) {
        self.held = true;
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let _ = Command::new("kill").arg("-CONT").arg(pid.to_string()).status();
            let _ = Command::new("kill").arg(pid.to_string()).status();
            if support::wait_exit(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Device {
    pub(super) fn spawn(&mut self, dir: &Path) {
        self.current = self.schedule.pop_front();
        let name = format!("device-{}", self.index);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}.log")))
            .unwrap();
        let out = std::fs::File::create(dir.join(format!("{name}.out"))).unwrap();
        let mut command = Command::new(TRESOR);
        command
            .current_dir(dir)
            .args(["device", "run", "--config", &self.config, "--json"])
            .env("RUST_LOG", "info")
            .env_remove(protocol::fault::FAULT_ENV)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log);
        if let Some(fault) = &self.current {
            command.env(protocol::fault::FAULT_ENV, fault);
        }
        self.child = Some(command.spawn().unwrap());
        self.starts += 1;
    }

    pub(super) fn tend(&mut self, dir: &Path) {
        let Some(child) = self.child.as_mut() else { return };
        let Some(status) = child.try_wait().unwrap() else { return };
        self.child = None;
        let name = format!("device-{}", self.index);
        if status.signal().is_some() {
            self.fired.push(self.current.take().unwrap_or_else(|| format!("killed ({status})")));
            self.spawn(dir);
            return;
        }
        let out = std::fs::read(dir.join(format!("{name}.out"))).unwrap_or_default();
        match serde_json::from_slice::<Value>(&out) {
            Ok(outcome) => self.outcome = Some(outcome),
            Err(_) => {
                panic!("{name} exited with {status} and no outcome:\n{}", support::log(dir, &name))
            }
        }
    }

    /// Kills the agent (SIGKILL) now; `tend` restarts it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}
