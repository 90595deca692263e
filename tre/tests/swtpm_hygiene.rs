//! A swtpm never outlives its owner, and a start on a state directory deals with the swtpm a
//! previous owner left there: an orphan is stopped, one a live process owns is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tre::swtpm::{PID_FILE, Swtpm, SwtpmConfig, SwtpmError};

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has exited: it holds no sockets and no lock.
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !alive(pid)
}

/// How an orphan listens: on the Unix sockets in its state directory, as tresor starts
/// swtpm now, or on a loopback port pair, as older versions did.
enum Listen {
    Unix,
    Tcp(u16),
}

/// Starts a swtpm on `state` whose parent exits at once (as if its owner had died), and
/// returns its pid once it listens.
fn orphan_swtpm(state: &Path, listen: Listen) -> u32 {
    std::fs::create_dir_all(state).unwrap();
    let state = state.canonicalize().unwrap();
    let pid_file = state.join("orphan.pid");
    let ctrl = state.join("tpm.sock.ctrl");
    let channels = match listen {
        Listen::Unix => format!(
            "--server type=unixio,path={}/tpm.sock --ctrl type=unixio,path={}",
            state.display(),
            ctrl.display()
        ),
        Listen::Tcp(port) => format!(
            "--server type=tcp,port={port},bindaddr=127.0.0.1 \
             --ctrl type=tcp,port={},bindaddr=127.0.0.1",
            port + 1
        ),
    };
    let script = format!(
        "swtpm socket --tpm2 --tpmstate dir={} {channels} --flags not-need-init,startup-clear \
         --pid file={} </dev/null >/dev/null 2>&1 &",
        state.display(),
        pid_file.display()
    );
    assert!(Command::new("sh").arg("-c").arg(&script).status().unwrap().success());
    let listening = || match listen {
        Listen::Unix => std::os::unix::net::UnixStream::connect(&ctrl).is_ok(),
        Listen::Tcp(port) => std::net::TcpStream::connect(("127.0.0.1", port + 1)).is_ok(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) =
            std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse().ok())
            && listening()
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "the orphan swtpm did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_start_on_a_state_in_use_is_refused_not_hung() {
    let config = SwtpmConfig::load().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = Swtpm::start(dir.path(), &config).unwrap();
    let pid_file = std::fs::read_to_string(first.state_dir().join(PID_FILE)).unwrap();
    assert_eq!(pid_file, format!("{} {}\n", first.pid(), std::process::id()));
    let started = Instant::now();
    match Swtpm::start(dir.path(), &config) {
        Err(SwtpmError::InUse { pid, owner, .. }) => {
            assert_eq!(pid, first.pid());
            assert_eq!(owner, std::process::id());
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(alive(first.pid()), "the owner's swtpm is left alone");
    let state = first.state_dir().to_owned();
    drop(first);
    assert!(!state.join(PID_FILE).exists(), "the pid file goes with the process");
    drop(Swtpm::start(dir.path(), &config).unwrap());
}

fn an_orphan_is_stopped_and_the_start_succeeds(listen: Listen) {
    let config = SwtpmConfig::load().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tpm");
    let orphan = orphan_swtpm(&state, listen);
    assert!(alive(orphan));
    let swtpm = Swtpm::start(&state, &config).unwrap();
    assert!(!alive(orphan), "the orphan was stopped before the new swtpm started");
    assert_ne!(swtpm.pid(), orphan);
    // The new one holds the state and works.
    let tpm = tre::tpm::Tpm::connect(&swtpm.tcti());
    assert!(tpm.is_ok(), "{:?}", tpm.err());
}

#[test]
fn an_orphaned_swtpm_on_the_state_is_stopped_and_the_start_succeeds() {
    an_orphan_is_stopped_and_the_start_succeeds(Listen::Unix);
}

#[test]
fn an_orphan_of_an_older_version_on_loopback_ports_is_stopped_too() {
    // Below the kernel's ephemeral range and the tests' fixed ports (10000-19999).
    let port = 20_000 + (std::process::id() % 4000) as u16 * 2;
    an_orphan_is_stopped_and_the_start_succeeds(Listen::Tcp(port));
}

#[test]
fn an_owned_swtpm_dies_with_the_thread_that_started_it() {
    // What die_with_parent promises, and its caveat: the kernel's parent is the spawning
    // thread. A thread that starts an owned swtpm and ends takes the swtpm with it.
    let config = SwtpmConfig::load().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let swtpm =
        std::thread::spawn(move || Swtpm::start_owned(&path, &config).unwrap()).join().unwrap();
    assert!(wait_gone(swtpm.pid(), Duration::from_secs(2)), "PR_SET_PDEATHSIG took effect");
    drop(swtpm);

    // Without the option the swtpm lives on after its spawning thread.
    let config = SwtpmConfig::load().unwrap();
    let path = dir.path().to_owned();
    let swtpm = std::thread::spawn(move || Swtpm::start(&path, &config).unwrap()).join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(swtpm.pid()));
}

/// The mode bits of `path`.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_tpm_state_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("tpm");
    // As an older tresor left it: swtpm's default 0640 in a 0755 directory.
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let old = state.join("tpm2-00.volatilestate");
    std::fs::write(&old, b"").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o640)).unwrap();
    let config = SwtpmConfig::load().unwrap();
    let swtpm = Swtpm::start(&state, &config).unwrap();
    // Make swtpm write its NV state.
    let mut tpm = tre::tpm::Tpm::connect(&swtpm.tcti()).unwrap();
    tpm.ek(tre::tpm::KeyAlg::Ecc).unwrap();
    drop(tpm);
    assert_eq!(swtpm.tcti(), format!("swtpm:path={}", state.join("tpm.sock").display()));
    assert_eq!(mode(swtpm.tpm_socket()), 0o600);
    assert_eq!(mode(swtpm.control_socket()), 0o600);
    swtpm.stop();
    assert!(!state.join("tpm.sock").exists(), "the sockets go with the process");
    assert_eq!(mode(&state), 0o700);
    let files: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(files.iter().any(|f| f.ends_with("tpm2-00.permall")), "{files:?}");
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}
