//! No swtpm outlives the process it belongs to, with the real binary: a device agent killed
//! with SIGKILL takes its swtpm with it and starts again on the same state; an orphaned
//! swtpm that an older agent left on the state is stopped by the next `device run`; and
//! `tresor demo` stopped by SIGTERM or SIGINT stops its lab, leaves no swtpm behind and
//! exits with 143 or 130.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use support::{
    alive, edit, log, prepare, signal, spawn_logged, swtpm_children, swtpms_under, tresor,
    unused_port, wait_exit, wait_until,
};

/// A manufactured device whose RO is an https URL where nothing listens: its agent keeps
/// asking for a task, for as long as the test lets it.
fn manufactured_device() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    prepare(dir);
    let nowhere = format!("https://localhost:{}", unused_port());
    edit(&dir.join("device.toml"), &[("https://localhost:8443", &nowhere)]);
    tresor(
        dir,
        &[
            "device",
            "manufacture",
            "--config",
            "device.toml",
            "--mno",
            "mno-a.toml",
            "--manufacturer-cert",
            "pki/manufacturer.pem",
            "--manufacturer-key",
            "pki/manufacturer.key",
        ],
    );
    let state = dir.join("m2me-001/tpm").canonicalize().unwrap();
    assert!(swtpms_under(&state).is_empty(), "manufacturing left its swtpm running");
    (temp, state)
}

/// Kills the agent when dropped, also on panic.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tresor device run` and waits until its swtpm runs; returns the agent and the
/// swtpm's pid.
fn run_device(dir: &Path, name: &str) -> (Agent, u32) {
    let mut agent = Agent(spawn_logged(dir, name, &["device", "run", "--config", "device.toml"]));
    let pid = agent.0.id();
    let mut swtpm = None;
    let up = wait_until(Duration::from_secs(60), || {
        if let Ok(Some(status)) = agent.0.try_wait() {
            panic!("device run exited with {status}:\n{}", log(dir, name));
        }
        swtpm = swtpm_children(pid).first().copied();
        swtpm.is_some()
    });
    assert!(up, "no swtpm under the agent:\n{}", log(dir, name));
    (agent, swtpm.unwrap_or_default())
}

/// The agent got past its swtpm and is still working a second later (polling the RO that
/// is not there), with no complaint about the TPM's state.
fn assert_running(agent: &mut Agent, dir: &Path, name: &str) {
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.0.try_wait().unwrap().is_none(), "device run stopped:\n{}", log(dir, name));
    let text = log(dir, name);
    for word in ["in use", " lock", "swtpm exited"] {
        assert!(!text.contains(word), "{word:?} in the log of {name}:\n{text}");
    }
}

#[test]
fn a_killed_agent_takes_its_swtpm_with_it_and_starts_again_on_the_same_state() {
    let (temp, state) = manufactured_device();
    let dir = temp.path();
    let (mut agent, swtpm) = run_device(dir, "run-1");
    assert_eq!(swtpms_under(&state), vec![swtpm]);
    assert_running(&mut agent, dir, "run-1");

    agent.0.kill().unwrap(); // SIGKILL: no destructor runs in the agent
    agent.0.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || !alive(swtpm)),
        "swtpm {swtpm} outlived its agent"
    );

    let (mut again, second) = run_device(dir, "run-2");
    assert_ne!(second, swtpm);
    assert_running(&mut again, dir, "run-2");
    again.0.kill().unwrap();
    again.0.wait().unwrap();
    assert!(wait_until(Duration::from_secs(2), || swtpms_under(&state).is_empty()));
}

#[test]
fn device_run_stops_an_orphaned_swtpm_left_on_its_state() {
    let (temp, state) = manufactured_device();
    let dir = temp.path();
    // What an agent killed before swtpms died with it leaves: a swtpm on the device's state
    // whose parent is gone (the shell exits at once; init adopts the swtpm).
    let pid_file = dir.join("orphan.pid");
    let mut orphan = 0;
    // Its port pair is picked at random and may be taken (one of a TIME_WAIT connection,
    // say): a few tries.
    for _ in 0..5 {
        let port = unused_port();
        let script = format!(
            "setsid swtpm socket --tpm2 --tpmstate dir={} \
             --server type=tcp,port={port},bindaddr=127.0.0.1 \
             --ctrl type=tcp,port={},bindaddr=127.0.0.1 --flags not-need-init,startup-clear \
             --pid file={} </dev/null >/dev/null 2>&1 &",
            state.display(),
            port + 1,
            pid_file.display()
        );
        assert!(Command::new("sh").arg("-c").arg(&script).status().unwrap().success());
        let started = wait_until(Duration::from_secs(3), || {
            orphan = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            orphan != 0 && swtpms_under(&state).contains(&orphan)
        });
        if started {
            break;
        }
        let _ = std::fs::remove_file(&pid_file);
        orphan = 0;
    }
    assert!(orphan != 0, "the orphan swtpm did not start");

    let (mut agent, swtpm) = run_device(dir, "run");
    assert_ne!(swtpm, orphan);
    assert!(!alive(orphan), "the orphan was stopped before the agent's swtpm started");
    assert_eq!(swtpms_under(&state), vec![swtpm]);
    assert!(log(dir, "run").contains("stopped a stale swtpm"), "{}", log(dir, "run"));
    assert_running(&mut agent, dir, "run");
}

/// Starts `tresor demo --devices 3 --keep DIR`, waits until its swtpm children run, sends
/// `sig`, and checks the exit code and that no swtpm of the demo is left.
fn demo_stops_on(sig: &str, code: i32) {
    let temp = tempfile::tempdir().unwrap();
    let lab = temp.path().join("lab");
    let demo = spawn_logged(
        temp.path(),
        "demo",
        &["demo", "--devices", "3", "--keep", lab.to_str().unwrap()],
    );
    let mut demo = Agent(demo);
    let pid = demo.0.id();
    let mut children = Vec::new();
    let up = wait_until(Duration::from_secs(120), || {
        if let Ok(Some(status)) = demo.0.try_wait() {
            panic!("the demo exited with {status}:\n{}", log(temp.path(), "demo"));
        }
        children = swtpm_children(pid);
        !children.is_empty()
    });
    assert!(up, "the demo started no swtpm:\n{}", log(temp.path(), "demo"));

    signal(pid, sig);
    let status = wait_exit(&mut demo.0, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the demo ignored SIG{sig}:\n{}", log(temp.path(), "demo")));
    assert_eq!(status.code(), Some(code), "{}", log(temp.path(), "demo"));
    for child in &children {
        assert!(!alive(*child), "swtpm {child} outlived the demo");
    }
    assert!(
        wait_until(Duration::from_secs(2), || swtpms_under(&lab).is_empty()),
        "swtpm processes on {} remain: {:?}",
        lab.display(),
        swtpms_under(&lab)
    );
    assert!(log(temp.path(), "demo").contains(&format!("stopped by SIG{sig}")));
}

#[test]
fn demo_stops_its_lab_on_sigterm() {
    demo_stops_on("TERM", 143);
}

#[test]
fn demo_stops_its_lab_on_sigint() {
    demo_stops_on("INT", 130);
}
