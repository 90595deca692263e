//! The swtpm lab: one software TPM process per device, started in its own state directory,
//! reachable over loopback TCP with the tpm2-tss `swtpm` TCTI, stopped when its handle drops.
//!
//! swtpm speaks the TPM 2.0 command protocol on port P and the swtpm control protocol
//! (swtpm's `man swtpm`, "CMD_*" control commands) on port P + 1; the tpm2-tss swtpm TCTI
//! assumes exactly that pairing. tss-esapi cannot reach swtpm over a Unix socket, so the lab
//! hands out loopback port pairs and proves after start that the listening sockets belong
//! to the child it started (not to a process that raced it for the port).
//!
//! Process hygiene: a swtpm never outlives the device process that owns it. Dropping the
//! handle kills it; [`Swtpm::start_owned`] also has the kernel kill it when its owner dies
//! without dropping anything (`PR_SET_PDEATHSIG`); and a start on a state directory first
//! clears a swtpm that a dead owner left on it ([`stale`]), or refuses with
//! [`SwtpmError::InUse`] when a live process still owns one.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
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
    #[error("no free loopback port pair in {lo}..{hi} after {tries} tries")]
    NoPorts { lo: u16, hi: u16, tries: usize },
    #[error("too many swtpm instances in this process (limit {0}; see max_instances)")]
    TooManyInstances(usize),
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
    pub port_range: [u16; 2],
    pub max_instances: usize,
    pub startup_timeout_ms: u64,
}

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
        let config: Self = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let [lo, hi] = config.port_range;
        if lo < 1024 || hi <= lo.saturating_add(2) {
            return Err(bad(format!("port_range [{lo}, {hi}] must be above 1023 and hold a pair")));
        }
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

/// Instances alive in this process, to enforce `max_instances`.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Next candidate port; seeded from the process id so concurrent processes start apart.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

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
    port: u16,
    state_dir: PathBuf,
    _slot: Slot,
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
        let slot = Slot::reserve(config.max_instances)?;
        // Private, and so is what an older version (or a restored copy) left in it.
        storage::private_dir(state_dir)
            .and_then(|()| storage::private_files_in(state_dir).map(drop))
            .map_err(|source| SwtpmError::StateDir { path: state_dir.to_owned(), source })?;
        // swtpm resolves relative paths against its own working directory.
        let state_dir = std::fs::canonicalize(state_dir)
            .map_err(|source| SwtpmError::StateDir { path: state_dir.to_owned(), source })?;
        stale::clear(&state_dir, &config.binary)?;
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
        const TRIES: usize = 64;
        for _ in 0..TRIES {
            let Some(port) = free_port_pair(config) else { break };
            // None: another process took the ports between our probe and swtpm's bind.
            if let Some(process) = spawn_on(&state_dir, port, config, options)? {
                let pid_file = stale::PidFile::write(&state_dir, process.0.id())?;
                let tpm = Self {
                    process,
                    _pid_file: pid_file,
                    port,
                    state_dir,
                    _slot: slot,
                    _temp: None,
                };
                if fresh {
                    tpm.allocate_pcr_banks(&config.pcr_banks)?;
                }
                return Ok(tpm);
            }
        }
        let [lo, hi] = config.port_range;
        Err(SwtpmError::NoPorts { lo, hi, tries: TRIES })
    }

    /// The tpm2-tss TCTI configuration string for this instance.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// TPM command port; the control channel is `port() + 1`.
    pub fn port(&self) -> u16 {
        self.port
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
    /// hold a connection to the TPM port meanwhile.
    pub fn power_cycle(&self) -> Result<(), SwtpmError> {
        // An orderly TPM2_Shutdown first: after an unorderly reset the TPM reports its clock
        // as not safe (TPMS_CLOCK_INFO.safe = NO), which a strict verifier refuses.
        tpm_command(self.port, "TPM2_Shutdown", &shutdown_clear_command())?;
        control(self.port, CMD_INIT, &0u32.to_be_bytes(), 0)?;
        tpm_command(self.port, "TPM2_Startup", &startup_clear_command())?;
        Ok(())
    }

    /// After a power loss (no TPM2_Shutdown before the last stop) the TPM reports its clock
    /// as not safe; this sets Clock forward past anything it can have reported, which makes
    /// it safe again (`clock`). Returns whether it had to. No client may hold a connection
    /// to the TPM port meanwhile.
    pub fn recover_clock(&self) -> Result<bool, SwtpmError> {
        let (now, safe) = clock::read(self.port)?;
        if safe {
            return Ok(false);
        }
        clock::set(self.port, now.saturating_add(clock::ADVANCE_MS))?;
        let (_, safe) = clock::read(self.port)?;
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
        tpm_command(self.port, "TPM2_PCR_Allocate", &pcr_allocate_command(&HashAlg::ALL, keep))?;
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
                self.port,
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

/// One of the `max_instances` places; given back on drop.
#[derive(Debug)]
struct Slot;

impl Slot {
    fn reserve(max: usize) -> Result<Self, SwtpmError> {
        if LIVE.fetch_add(1, Ordering::SeqCst) >= max {
            LIVE.fetch_sub(1, Ordering::SeqCst);
            return Err(SwtpmError::TooManyInstances(max));
        }
        Ok(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Spawns swtpm on `port`/`port + 1`; `None` when it lost the ports to someone else.
fn spawn_on(
    state_dir: &Path,
    port: u16,
    config: &SwtpmConfig,
    options: StartOptions,
) -> Result<Option<Process>, SwtpmError> {
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
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
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
            if log.contains("Address already in use") {
                return Ok(None);
            }
            return Err(SwtpmError::Exited {
                status: status.to_string(),
                log: log.trim().to_owned(),
            });
        }
        if control(port, CMD_GET_CAPABILITY, &[], 4).is_ok() {
            // The answer might have come from a process that owns the port instead of our
            // child; only the child's own sockets count.
            let pid = process.0.id();
            if owns_listener(pid, port) && owns_listener(pid, port + 1) {
                return Ok(Some(process));
            }
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
    port: u16,
    command: u32,
    payload: &[u8],
    response_len: usize,
) -> Result<Vec<u8>, SwtpmError> {
    let mut stream = connect(port + 1)?;
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

/// Sends a raw TPM command on the TPM port and checks its response code.
fn tpm_command(port: u16, name: &'static str, command: &[u8]) -> Result<Vec<u8>, SwtpmError> {
    tpm_command_within(port, name, command, Duration::from_secs(10))
}

/// [`tpm_command`] giving up after `timeout` (swtpm serves one connection at a time).
fn tpm_command_within(
    port: u16,
    name: &'static str,
    command: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, SwtpmError> {
    let mut stream = connect(port)?;
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

fn connect(port: u16) -> Result<TcpStream, SwtpmError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The next port P in the configured range where P and P + 1 are both free right now.
fn free_port_pair(config: &SwtpmConfig) -> Option<u16> {
    let [lo, hi] = config.port_range;
    let span = (hi - lo) / 2;
    if NEXT_PORT.load(Ordering::Relaxed) == 0 {
        let seed = (std::process::id() as u16).wrapping_mul(7919) % span;
        let _ = NEXT_PORT.compare_exchange(0, seed.max(1), Ordering::SeqCst, Ordering::SeqCst);
    }
    for _ in 0..span {
        let slot = NEXT_PORT.fetch_add(1, Ordering::SeqCst) % span;
        let port = lo + slot * 2;
        let bind = |p: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok();
        if bind(port) && bind(port + 1) {
            return Some(port);
        }
    }
    None
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port` (Linux /proc).
fn owns_listener(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else { return false };
    let wanted = format!("0100007F:{port:04X}");
    let inode = table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // local_address, st (0A = LISTEN), inode
        match (cols.get(1), cols.get(3), cols.get(9)) {
            (Some(local), Some(&"0A"), Some(inode)) if *local == wanted => Some(inode.to_string()),
            _ => None,
        }
    });
    let Some(inode) = inode else { return false };
    let target = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target.as_str())
    })
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
        assert!(c.max_instances >= 32);
    }

    #[test]
    fn bad_config_is_refused() {
        let base = DEFAULT_CONFIG.replace("pcr_banks = [\"sha1\", \"sha256\"]", "pcr_banks = []");
        assert!(matches!(SwtpmConfig::parse(&base, "t"), Err(SwtpmError::Config { .. })));
        let ports = DEFAULT_CONFIG.replace("port_range = [20000, 32000]", "port_range = [80, 81]");
        assert!(SwtpmConfig::parse(&ports, "t").is_err());
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
