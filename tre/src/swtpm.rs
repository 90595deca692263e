//! The swtpm lab: one software TPM process per device, started in its own state directory,
//! reachable over a Unix socket with the tpm2-tss `swtpm` TCTI (`swtpm:path=…`, tpm2-tss
//! 3.2), stopped when its handle drops.
//!
//! swtpm speaks the TPM 2.0 command protocol on `tpm.sock` and the swtpm control protocol
//! (swtpm's `man swtpm`, "CMD_*" control commands) on `tpm.sock.ctrl`, both in the state
//! directory: the tpm2-tss swtpm TCTI derives the control socket's path by appending
//! `.ctrl`. Unix sockets rather than loopback TCP because the TCTI opens a connection per
//! TPM command: over TCP each one left a TIME_WAIT socket behind (about 240 per device
//! through a subscription change), and a loopback port may be bound by anyone.
//!
//! Ownership by construction: the state directory is private (mode 0700, owned by this
//! process's user; [`Swtpm::start`] refuses any other), so only this user can create an
//! entry in it. Before the spawn no swtpm serves the directory ([`stale::clear`]), and the
//! child binds both sockets itself (mode 0600). Whatever answers on those paths is then the
//! child — or a process of the same user, which could as well ptrace this one: no check of
//! listening sockets in /proc is needed, and no port can be lost to a race.
//! AF_UNIX limits a socket path to 107 bytes: a state directory too deep for that is
//! refused with [`SwtpmError::SocketPath`].
//!
//! Process hygiene: a swtpm never outlives the device process that owns it. Dropping the
//! handle kills it; [`Swtpm::start_owned`] also has the kernel kill it when its owner dies
//! without dropping anything (`PR_SET_PDEATHSIG`); and a start on a state directory first
//! clears a swtpm that a dead owner left on it ([`stale`]), or refuses with
//! [`SwtpmError::InUse`] when a live process still owns one.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protocol::tpm::HashAlg;
use serde::Deserialize;

/// The built-in settings: `swtpm-config/swtpm.toml`, embedded so a bare binary has them.
const DEFAULT_CONFIG: &str = include_str!("../../swtpm-config/swtpm.toml");

/// Environment variable naming a settings file that replaces the built-in one.
pub const CONFIG_ENV: &str = "TRESOR_SWTPM_CONFIG";

mod clock;
mod stale;

pub use stale::PID_FILE;

/// Why a swtpm instance could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    #[error("swtpm settings {path}: {reason}")]
    Config { path: String, reason: String },
    #[error(
        "cannot start {binary:?}: {source} (is the Debian package swtpm installed? `make deps`)"
    )]
    Spawn { binary: String, source: std::io::Error },
    #[error("swtpm exited during start-up ({status}): {log}")]
    Exited { status: String, log: String },
    #[error("swtpm did not answer on its control channel within {0:?}")]
    Timeout(Duration),
    #[error(
        "swtpm socket path {} is {len} bytes, more than the {MAX_SOCKET_PATH} a Unix socket \
         allows: give the TPM a shorter state directory (e.g. a shorter TMPDIR or --keep \
         directory)",
        path.display()
    )]
    SocketPath { path: PathBuf, len: usize },
    #[error(
        "swtpm state directory {} must be private to this user (mode 0700 and owned by uid \
         {uid}), since the TPM's sockets live there; it has mode {mode:o}, owner uid {owner}",
        path.display()
    )]
    NotPrivate { path: PathBuf, mode: u32, owner: u32, uid: u32 },
    #[error("swtpm state directory {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("swtpm control channel: {0}")]
    Control(String),
    #[error("TPM command {command} failed with response code {rc:#010x}")]
    Tpm { command: &'static str, rc: u32 },
    #[error(
        "swtpm state directory {} is in use: swtpm (pid {pid}) serves it for the live process \
         {owner} ({owner_command}); stop that process first — a second TPM on the same state \
         would corrupt it",
        state_dir.display()
    )]
    InUse { state_dir: PathBuf, pid: u32, owner: u32, owner_command: String },
    #[error(
        "a stale swtpm (pid {pid}) left on {} by a process that is gone could not be stopped: \
         {reason}",
        state_dir.display()
    )]
    StaleNotStopped { state_dir: PathBuf, pid: u32, reason: String },
    #[error("swtpm I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Lab settings; see `swtpm-config/swtpm.toml` for the meaning of each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwtpmConfig {
    pub binary: String,
    pub pcr_banks: Vec<HashAlg>,
    pub state_root: PathBuf,
    pub log_level: u8,
    pub startup_timeout_ms: u64,
}

/// Settings of earlier versions that mean nothing now (swtpm listened on loopback port
/// pairs, and one process ran at most `max_instances`): an old file that has them still
/// loads, with a warning.
const RETIRED_KEYS: [&str; 2] = ["port_range", "max_instances"];

impl SwtpmConfig {
    /// The settings from `$TRESOR_SWTPM_CONFIG` if set, else the built-in ones.
    pub fn load() -> Result<Self, SwtpmError> {
        match std::env::var_os(CONFIG_ENV) {
            Some(path) => Self::from_file(Path::new(&path)),
            None => Self::parse(DEFAULT_CONFIG, "built-in swtpm-config/swtpm.toml"),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, SwtpmError> {
        let text = std::fs::read_to_string(path).map_err(|e| SwtpmError::Config {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Self, SwtpmError> {
        let bad = |reason: String| SwtpmError::Config { path: origin.to_owned(), reason };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        for key in RETIRED_KEYS {
            if table.remove(key).is_some() {
                tracing::warn!(
                    settings = origin,
                    key,
                    "ignored: swtpm listens on Unix sockets in its state directory now, \
                     with no port range or instance limit; remove the key"
                );
            }
        }
        let config: Self = table.try_into().map_err(|e: toml::de::Error| bad(e.to_string()))?;
        if config.pcr_banks.is_empty() {
            return Err(bad("pcr_banks must name at least one bank".into()));
        }
        if config.log_level > 20 {
            return Err(bad("log_level must be 0..=20".into()));
        }
        Ok(config)
    }

    fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.startup_timeout_ms)
    }
}

/// The TPM command socket's name in the state directory; the control socket is this name
/// with `.ctrl` appended, as the tpm2-tss swtpm TCTI expects.
const TPM_SOCKET: &str = "tpm.sock";

/// The longest path a Unix socket address holds: `sun_path` is 108 bytes with its NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// How a started swtpm is tied to the process that starts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// The kernel SIGKILLs the swtpm when its parent dies (`prctl(PR_SET_PDEATHSIG)`), so
    /// that a device process killed with SIGKILL leaves no TPM behind holding its state.
    ///
    /// Caveat: Linux sends the signal when the *thread* that spawned the child exits, not
    /// when the process does. Only set this where the calling thread lives as long as the
    /// process — the main thread, or a thread of one's own that outlives the TPM. Never
    /// from a tokio worker or `spawn_blocking` thread: the blocking pool ends idle threads,
    /// which would kill a swtpm still in use.
    pub die_with_parent: bool,
}

/// A running swtpm. Dropping it kills and reaps the process and, for a temporary state
/// directory, removes the state.
#[derive(Debug)]
pub struct Swtpm {
    // Field order is drop order: the process dies before its pid file and its state
    // directory go.
    process: Process,
    _pid_file: stale::PidFile,
    _socket_files: SocketFiles,
    sockets: Sockets,
    state_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Swtpm {
    /// Starts a swtpm whose state lives in a new temporary directory.
    pub fn start_temp(config: &SwtpmConfig) -> Result<Self, SwtpmError> {
        let root = if config.state_root.as_os_str().is_empty() {
            std::env::temp_dir()
        } else {
            config.state_root.clone()
        };
        std::fs::create_dir_all(&root)
            .map_err(|source| SwtpmError::StateDir { path: root.clone(), source })?;
        let temp = tempfile::Builder::new()
            .prefix("swtpm-")
            .tempdir_in(&root)
            .map_err(|source| SwtpmError::StateDir { path: root.clone(), source })?;
        let mut tpm = Self::start(temp.path(), config)?;
        tpm._temp = Some(temp);
        Ok(tpm)
    }

    /// Starts a swtpm on an existing or new state directory (a device's TPM across
    /// restarts). A fresh state gets the configured PCR banks allocated. A swtpm that a
    /// dead process left on the directory is stopped first; one that a live process owns
    /// makes this fail with [`SwtpmError::InUse`].
    pub fn start(state_dir: &Path, config: &SwtpmConfig) -> Result<Self, SwtpmError> {
        Self::start_with(state_dir, config, StartOptions::default())
    }

    /// [`Swtpm::start`] for a swtpm that must die with the calling thread's process
    /// ([`StartOptions::die_with_parent`]; read its caveat): a device process's own TPM,
    /// started from its main thread.
    pub fn start_owned(state_dir: &Path, config: &SwtpmConfig) -> Result<Self, SwtpmError> {
        Self::start_with(state_dir, config, StartOptions { die_with_parent: true })
    }

    /// [`Swtpm::start`] with `options`.
    pub fn start_with(
        state_dir: &Path,
        config: &SwtpmConfig,
        options: StartOptions,
    ) -> Result<Self, SwtpmError> {
        // Private, and so is what an older version (or a restored copy) left in it.
        storage::private_dir(state_dir)
            .and_then(|()| storage::private_files_in(state_dir).map(drop))
            .map_err(|source| SwtpmError::StateDir { path: state_dir.to_owned(), source })?;
        // swtpm resolves relative paths against its own working directory.
        let state_dir = std::fs::canonicalize(state_dir)
            .map_err(|source| SwtpmError::StateDir { path: state_dir.to_owned(), source })?;
        require_private(&state_dir)?;
        let sockets = Sockets::in_dir(&state_dir)?;
        stale::clear(&state_dir, &config.binary)?;
        sockets.remove_stale()?;
        // swtpm creates its lock file 0640 whatever `mode=` says, when it first needs it;
        // one that exists keeps its mode.
        let lock = state_dir.join(".lock");
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(storage::FILE_MODE)
            .open(&lock)
            .and_then(|_| storage::private_file(&lock))
            .map_err(|source| SwtpmError::StateDir { path: lock.clone(), source })?;
        let fresh = !state_dir.join("tpm2-00.permall").exists();
        let process = spawn(&state_dir, &sockets, config, options)?;
        let pid_file = stale::PidFile::write(&state_dir, process.0.id())?;
        let tpm = Self {
            process,
            _pid_file: pid_file,
            _socket_files: SocketFiles(sockets.clone()),
            sockets,
            state_dir,
            _temp: None,
        };
        if fresh {
            tpm.allocate_pcr_banks(&config.pcr_banks)?;
        }
        Ok(tpm)
    }

    /// The tpm2-tss TCTI configuration string for this instance (tss-esapi and tpm2-tools
    /// alike): `swtpm:path=STATE_DIR/tpm.sock`.
    pub fn tcti(&self) -> String {
        format!("swtpm:path={}", self.sockets.tpm.display())
    }

    /// The TPM command socket.
    pub fn tpm_socket(&self) -> &Path {
        &self.sockets.tpm
    }

    /// The control socket (`swtpm_ioctl --unix PATH`).
    pub fn control_socket(&self) -> &Path {
        &self.sockets.ctrl
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Operating-system process id of the swtpm.
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// Stops the process now (also done on drop).
    pub fn stop(self) {}

    /// Power-cycles the TPM (control CMD_INIT, then TPM2_Startup(CLEAR)): PCRs return to
    /// their reset values, transient objects and sessions are gone, NV stays. No client may
    /// hold a connection to the TPM socket meanwhile.
    pub fn power_cycle(&self) -> Result<(), SwtpmError> {
        // An orderly TPM2_Shutdown first: after an unorderly reset the TPM reports its clock
        // as not safe (TPMS_CLOCK_INFO.safe = NO), which a strict verifier refuses.
        tpm_command(&self.sockets.tpm, "TPM2_Shutdown", &shutdown_clear_command())?;
        control(&self.sockets.ctrl, CMD_INIT, &0u32.to_be_bytes(), 0)?;
        tpm_command(&self.sockets.tpm, "TPM2_Startup", &startup_clear_command())?;
        Ok(())
    }

    /// After a power loss (no TPM2_Shutdown before the last stop) the TPM reports its clock
    /// as not safe; this sets Clock forward past anything it can have reported, which makes
    /// it safe again (`clock`). Returns whether it had to. No client may hold a connection
    /// to the TPM socket meanwhile.
    pub fn recover_clock(&self) -> Result<bool, SwtpmError> {
        let (now, safe) = clock::read(&self.sockets.tpm)?;
        if safe {
            return Ok(false);
        }
        clock::set(&self.sockets.tpm, now.saturating_add(clock::ADVANCE_MS))?;
        let (_, safe) = clock::read(&self.sockets.tpm)?;
        if !safe {
            return Err(SwtpmError::Control(
                "the TPM's clock stayed unsafe after TPM2_ClockSet".into(),
            ));
        }
        Ok(true)
    }

    /// TPM2_PCR_Allocate with platform authorization, then a power cycle so it takes effect.
    fn allocate_pcr_banks(&self, keep: &[HashAlg]) -> Result<(), SwtpmError> {
        if HashAlg::ALL.iter().all(|alg| keep.contains(alg)) {
            return Ok(());
        }
        tpm_command(
            &self.sockets.tpm,
            "TPM2_PCR_Allocate",
            &pcr_allocate_command(&HashAlg::ALL, keep),
        )?;
        self.power_cycle()
    }
}

impl Drop for Swtpm {
    /// Shuts the TPM down in order (TPM2_Shutdown(CLEAR)) so that it starts next time with
    /// its clock marked safe, as a device's OS does before power-off. Best effort: if a
    /// client still holds the TPM connection, the process is killed all the same.
    fn drop(&mut self) {
        if let Ok(None) = self.process.0.try_wait() {
            let _ = tpm_command_within(
                &self.sockets.tpm,
                "TPM2_Shutdown",
                &shutdown_clear_command(),
                Duration::from_millis(200),
            );
        }
    }
}

/// The swtpm child process; killed and reaped on drop, also when a test panics.
#[derive(Debug)]
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// The two Unix sockets of a swtpm, in its state directory.
#[derive(Debug, Clone)]
struct Sockets {
    tpm: PathBuf,
    ctrl: PathBuf,
}

impl Sockets {
    /// The sockets of `state_dir` (absolute), if their paths fit a Unix socket address.
    fn in_dir(state_dir: &Path) -> Result<Self, SwtpmError> {
        let tpm = state_dir.join(TPM_SOCKET);
        let mut ctrl = tpm.clone().into_os_string();
        ctrl.push(".ctrl");
        let ctrl = PathBuf::from(ctrl);
        let len = ctrl.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(SwtpmError::SocketPath { path: ctrl, len });
        }
        Ok(Self { tpm, ctrl })
    }

    /// Removes socket files a swtpm that is gone left behind (it was killed before it could
    /// unlink them); no swtpm serves the directory any more when this runs.
    fn remove_stale(&self) -> Result<(), SwtpmError> {
        for path in [&self.tpm, &self.ctrl] {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(SwtpmError::StateDir { path: path.clone(), source: e });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Removes the socket files when dropped, after the process that served them is gone (a
/// killed swtpm leaves them behind).
#[derive(Debug)]
struct SocketFiles(Sockets);

impl Drop for SocketFiles {
    fn drop(&mut self) {
        let _ = self.0.remove_stale();
    }
}

/// Refuses a state directory that another user could create entries in: the sockets'
/// ownership rests on it (module comment).
#[allow(unsafe_code)]
fn require_private(dir: &Path) -> Result<(), SwtpmError> {
    let meta = std::fs::metadata(dir)
        .map_err(|source| SwtpmError::StateDir { path: dir.to_owned(), source })?;
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory.
    let uid = unsafe { libc::geteuid() };
    let mode = meta.permissions().mode() & 0o7777;
    if meta.uid() != uid || mode & 0o077 != 0 {
        return Err(SwtpmError::NotPrivate { path: dir.to_owned(), mode, owner: meta.uid(), uid });
    }
    Ok(())
}

/// Spawns swtpm on `sockets` and waits until its control channel answers.
fn spawn(
    state_dir: &Path,
    sockets: &Sockets,
    config: &SwtpmConfig,
    options: StartOptions,
) -> Result<Process, SwtpmError> {
    let stderr_path = state_dir.join("swtpm.stderr");
    let stderr = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(storage::FILE_MODE)
        .open(&stderr_path)?;
    let mut cmd = Command::new(&config.binary);
    cmd.arg("socket")
        .arg("--tpm2")
        .arg("--tpmstate")
        // swtpm's own default is 0640; a TPM's state is nobody else's to read.
        .arg(format!("dir={},mode=0600", state_dir.display()))
        .arg("--server")
        .arg(format!("type=unixio,path={},mode=0600", sockets.tpm.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={},mode=0600", sockets.ctrl.display()))
        .arg("--flags")
        .arg("not-need-init,startup-clear")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    prepare_child(&mut cmd, options);
    if config.log_level > 0 {
        cmd.arg("--log").arg(format!(
            "level={},file={}",
            config.log_level,
            state_dir.join("swtpm.log").display()
        ));
    }
    let child = cmd
        .spawn()
        .map_err(|source| SwtpmError::Spawn { binary: config.binary.clone(), source })?;
    let mut process = Process(child);
    let deadline = Instant::now() + config.startup_timeout();
    loop {
        if let Some(status) = process.0.try_wait()? {
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            return Err(SwtpmError::Exited {
                status: status.to_string(),
                log: log.trim().to_owned(),
            });
        }
        // swtpm binds both sockets before it serves either: once the control channel
        // answers, the TPM socket is there too.
        if control(&sockets.ctrl, CMD_GET_CAPABILITY, &[], 4).is_ok() {
            return Ok(process);
        }
        if Instant::now() >= deadline {
            return Err(SwtpmError::Timeout(config.startup_timeout()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sets up the child between fork and exec: every descriptor above stderr close-on-exec,
/// and with [`StartOptions::die_with_parent`] a parent-death signal.
///
/// The TSS's TCTI opens its sockets without SOCK_CLOEXEC. A swtpm spawned while another
/// thread talks to its own TPM would inherit that socket, keep the connection alive after
/// the TSS closed it, and — since swtpm serves one connection at a time — starve the other
/// TPM's next connection forever. CLOSE_RANGE_CLOEXEC (Linux 5.11) rather than a plain
/// close keeps std's own exec-error pipe working.
///
/// PR_SET_PDEATHSIG fires when the spawning *thread* exits (see the caveat on
/// [`StartOptions::die_with_parent`]). If the parent died before the prctl took effect, the
/// signal would never come: the child then checks that its parent is still the process
/// that forked it, and fails the spawn otherwise.
#[allow(unsafe_code)]
fn prepare_child(cmd: &mut Command, options: StartOptions) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    let die_with_parent = options.die_with_parent;
    // SAFETY: the closure runs between fork and exec and calls only close_range(2),
    // prctl(2) and getppid(2), async-signal-safe system calls that take plain integers and
    // touch no memory of the parent; it allocates nothing (the captured values are Copy).
    unsafe {
        cmd.pre_exec(move || {
            if libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int)
                != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if die_with_parent {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
            Ok(())
        });
    }
}

/// swtpm control commands (swtpm's `tpm_ioctl.h`).
const CMD_GET_CAPABILITY: u32 = 0x01;
const CMD_INIT: u32 = 0x02;

/// Sends one control command; returns the `response_len` bytes after the result code.
fn control(
    socket: &Path,
    command: u32,
    payload: &[u8],
    response_len: usize,
) -> Result<Vec<u8>, SwtpmError> {
    let mut stream = connect(socket)?;
    let mut frame = command.to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    stream.write_all(&frame)?;
    let mut result = [0u8; 4];
    stream.read_exact(&mut result)?;
    let rc = u32::from_be_bytes(result);
    if rc != 0 {
        return Err(SwtpmError::Control(format!("command {command:#x} returned {rc:#x}")));
    }
    let mut rest = vec![0u8; response_len];
    stream.read_exact(&mut rest)?;
    Ok(rest)
}

/// Sends a raw TPM command on the TPM socket and checks its response code.
fn tpm_command(socket: &Path, name: &'static str, command: &[u8]) -> Result<Vec<u8>, SwtpmError> {
    tpm_command_within(socket, name, command, Duration::from_secs(10))
}

/// [`tpm_command`] giving up after `timeout` (swtpm serves one connection at a time).
fn tpm_command_within(
    socket: &Path,
    name: &'static str,
    command: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, SwtpmError> {
    let mut stream = connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(command)?;
    let mut header = [0u8; 10];
    stream.read_exact(&mut header)?;
    let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
    let rc = u32::from_be_bytes([header[6], header[7], header[8], header[9]]);
    // Responses of the commands sent here are small; refuse anything absurd.
    if !(10..=4096).contains(&size) {
        return Err(SwtpmError::Tpm { command: name, rc });
    }
    let mut body = vec![0u8; size - 10];
    stream.read_exact(&mut body)?;
    if rc != 0 {
        return Err(SwtpmError::Tpm { command: name, rc });
    }
    Ok(body)
}

fn connect(socket: &Path) -> Result<UnixStream, SwtpmError> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// TPM_ST_NO_SESSIONS TPM2_Startup(TPM_SU_CLEAR) (TPM 2.0 Part 3 §9.3).
fn startup_clear_command() -> Vec<u8> {
    let mut c = Vec::with_capacity(12);
    c.extend_from_slice(&0x8001u16.to_be_bytes());
    c.extend_from_slice(&12u32.to_be_bytes());
    c.extend_from_slice(&0x0000_0144u32.to_be_bytes());
    c.extend_from_slice(&0x0000u16.to_be_bytes());
    c
}

/// TPM_ST_NO_SESSIONS TPM2_Shutdown(TPM_SU_CLEAR) (TPM 2.0 Part 3 §9.4).
fn shutdown_clear_command() -> Vec<u8> {
    let mut c = startup_clear_command();
    c[6..10].copy_from_slice(&0x0000_0145u32.to_be_bytes());
    c
}

/// TPM2_PCR_Allocate(TPM_RH_PLATFORM, pcrAllocation) with an empty password session
/// (TPM 2.0 Part 3 §22.5): every bank in `all` appears, with all 24 PCRs set for the banks
/// to keep and none for the others.
fn pcr_allocate_command(all: &[HashAlg], keep: &[HashAlg]) -> Vec<u8> {
    let mut params = (all.len() as u32).to_be_bytes().to_vec();
    for alg in all {
        params.extend_from_slice(&alg.id().to_be_bytes());
        params.push(3);
        let bits = if keep.contains(alg) { 0xFF } else { 0x00 };
        params.extend_from_slice(&[bits; 3]);
    }
    // TPMS_AUTH_COMMAND: TPM_RS_PW, empty nonce, attributes 0, empty hmac.
    let auth: [u8; 9] = [0x40, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00];
    let mut c = Vec::new();
    c.extend_from_slice(&0x8002u16.to_be_bytes());
    let size = 10 + 4 + 4 + auth.len() + params.len();
    c.extend_from_slice(&(size as u32).to_be_bytes());
    c.extend_from_slice(&0x0000_012Bu32.to_be_bytes());
    c.extend_from_slice(&0x4000_000Cu32.to_be_bytes());
    c.extend_from_slice(&(auth.len() as u32).to_be_bytes());
    c.extend_from_slice(&auth);
    c.extend_from_slice(&params);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_config_parses() {
        let c = SwtpmConfig::parse(DEFAULT_CONFIG, "built-in").unwrap();
        assert!(c.pcr_banks.contains(&HashAlg::Sha256));
    }

    #[test]
    fn an_old_config_with_ports_still_loads() {
        let old = format!("{DEFAULT_CONFIG}\nport_range = [20000, 32000]\nmax_instances = 128\n");
        let c = SwtpmConfig::parse(&old, "old").unwrap();
        assert_eq!(c.startup_timeout_ms, 5000);
    }

    #[test]
    fn socket_paths_too_long_for_af_unix_are_refused() {
        let deep = PathBuf::from(format!("/tmp/{}", "d".repeat(100)));
        let err = Sockets::in_dir(&deep).unwrap_err();
        assert!(matches!(err, SwtpmError::SocketPath { len, .. } if len > MAX_SOCKET_PATH));
        assert!(err.to_string().contains("shorter"), "{err}");
        let fits = Sockets::in_dir(Path::new("/tmp/tresor-demo-abc/devices/m2me-000/tpm")).unwrap();
        assert_eq!(fits.ctrl, Path::new("/tmp/tresor-demo-abc/devices/m2me-000/tpm/tpm.sock.ctrl"));
    }

    #[test]
    fn a_state_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(matches!(require_private(dir.path()), Err(SwtpmError::NotPrivate { .. })));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        require_private(dir.path()).unwrap();
    }

    #[test]
    fn bad_config_is_refused() {
        let base = DEFAULT_CONFIG.replace("pcr_banks = [\"sha1\", \"sha256\"]", "pcr_banks = []");
        assert!(matches!(SwtpmConfig::parse(&base, "t"), Err(SwtpmError::Config { .. })));
        assert!(SwtpmConfig::parse("bogus = 1", "t").is_err());
    }

    #[test]
    fn pcr_allocate_command_is_well_formed() {
        let all = [HashAlg::Sha1, HashAlg::Sha256];
        let c = pcr_allocate_command(&all, &[HashAlg::Sha256]);
        assert_eq!(u32::from_be_bytes([c[2], c[3], c[4], c[5]]) as usize, c.len());
        assert_eq!(&c[c.len() - 12..], &[0, 4, 3, 0, 0, 0, 0, 0x0B, 3, 0xFF, 0xFF, 0xFF]);
    }
}
