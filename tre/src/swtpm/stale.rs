//! Stale swtpm processes on a state directory. A device process that dies without dropping
//! its [`Swtpm`](super::Swtpm) (SIGKILL, a crash before [`StartOptions::die_with_parent`]
//! existed, a swtpm started by hand) can leave a swtpm running on its state: it holds the
//! state's lock, so the device's next start would fail, and a device must not run on a TPM
//! that someone else may still be talking to.
//!
//! Before a start, [`clear`] looks in /proc for swtpm processes whose `--tpmstate dir=` is
//! this state directory. One whose owner is gone — reparented to init, to a process younger
//! than itself, or to another process than the owner the pid file names — is an orphan: it
//! gets an orderly TPM2_Shutdown if it still answers, then SIGKILL through a pidfd (so a
//! recycled pid is never signalled), and the start waits for it to exit. One whose parent is
//! its live owner is refused with [`SwtpmError::InUse`]: that TPM is in use.
//!
//! The pid file ([`PID_FILE`] in the state directory, "SWTPM_PID OWNER_PID") records who
//! owns a running swtpm; it tells an orphan adopted by a subreaper from a swtpm its owner
//! still runs.
//!
//! [`StartOptions::die_with_parent`]: super::StartOptions::die_with_parent

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::SwtpmError;

/// The file in a state directory that names the running swtpm and its owner.
pub const PID_FILE: &str = "swtpm.pid";

/// How long a killed orphan may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The pid file of a running swtpm; removed when dropped (after the process is gone).
#[derive(Debug)]
pub(super) struct PidFile {
    path: PathBuf,
    swtpm: u32,
}

impl PidFile {
    /// Records that `swtpm` serves `state_dir` for this process.
    pub(super) fn write(state_dir: &Path, swtpm: u32) -> Result<Self, SwtpmError> {
        let path = state_dir.join(PID_FILE);
        let temp = state_dir.join(format!("{PID_FILE}.tmp"));
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(storage::FILE_MODE)
                .open(&temp)?;
            file.write_all(format!("{swtpm} {}\n", std::process::id()).as_bytes())?;
        }
        std::fs::rename(&temp, &path)?;
        Ok(Self { path, swtpm })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid_file(&self.path).is_some_and(|(pid, _)| pid == self.swtpm) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Stops every orphaned swtpm on `state_dir` (canonical); refuses if a live process owns
/// one.
pub(super) fn clear(state_dir: &Path, binary: &str) -> Result<(), SwtpmError> {
    let recorded = read_pid_file(&state_dir.join(PID_FILE));
    for swtpm in scan(state_dir, binary) {
        let parent = proc_info(swtpm.ppid);
        match judge(&swtpm, parent.as_ref(), recorded) {
            Verdict::Owned(owner) => {
                return Err(SwtpmError::InUse {
                    state_dir: state_dir.to_owned(),
                    pid: swtpm.pid,
                    owner,
                    owner_command: command_line(owner),
                });
            }
            Verdict::Orphan => stop(&swtpm, state_dir, binary)?,
        }
    }
    Ok(())
}

/// A process as /proc/PID/stat shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcInfo {
    pid: u32,
    state: char,
    ppid: u32,
    /// Start time in clock ticks since boot: with the pid, it names one process.
    start: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Orphan,
    /// Owned by this live parent.
    Owned(u32),
}

/// Whether `swtpm`'s owner is gone, given its parent now and the pid file's record.
fn judge(swtpm: &ProcInfo, parent: Option<&ProcInfo>, recorded: Option<(u32, u32)>) -> Verdict {
    if swtpm.ppid <= 1 {
        return Verdict::Orphan;
    }
    match parent {
        // Vanished since we looked.
        None => return Verdict::Orphan,
        // A process cannot have forked a child older than itself: it adopted it.
        Some(p) if p.start > swtpm.start => return Verdict::Orphan,
        Some(_) => {}
    }
    match recorded {
        // Its recorded owner is not its parent: a subreaper adopted it.
        Some((pid, owner)) if pid == swtpm.pid && owner != swtpm.ppid => Verdict::Orphan,
        _ => Verdict::Owned(swtpm.ppid),
    }
}

/// Live swtpm processes serving `state_dir`.
fn scan(state_dir: &Path, binary: &str) -> Vec<ProcInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id() && serves(pid, state_dir, binary))
        .filter_map(proc_info)
        .filter(|p| !matches!(p.state, 'Z' | 'X'))
        .collect()
}

/// Whether process `pid` is a swtpm whose state directory is `state_dir`.
fn serves(pid: u32, state_dir: &Path, binary: &str) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    let Some(dir) = state_dir_of(&args, binary) else { return false };
    let dir = if dir.is_relative() {
        match std::fs::read_link(format!("/proc/{pid}/cwd")) {
            Ok(cwd) => cwd.join(dir),
            Err(_) => return false,
        }
    } else {
        dir
    };
    std::fs::canonicalize(&dir).unwrap_or(dir) == state_dir
}

/// The `--tpmstate dir=…` of a swtpm command line; `None` if it is not swtpm's.
fn state_dir_of(args: &[&[u8]], binary: &str) -> Option<PathBuf> {
    let program = Path::new(std::ffi::OsStr::from_bytes(args.first()?)).file_name()?;
    let ours = Path::new(binary).file_name();
    if program != "swtpm" && Some(program) != ours {
        return None;
    }
    let value = option_value(args, "--tpmstate")?;
    value.split(|b| *b == b',').find_map(|part| {
        part.strip_prefix(b"dir=").map(|d| PathBuf::from(std::ffi::OsStr::from_bytes(d)))
    })
}

/// The value of `--name VALUE` or `--name=VALUE`.
fn option_value<'a>(args: &[&'a [u8]], name: &str) -> Option<&'a [u8]> {
    let name = name.as_bytes();
    args.iter().enumerate().skip(1).find_map(|(i, arg)| {
        if *arg == name {
            args.get(i + 1).copied()
        } else {
            arg.strip_prefix(name).and_then(|rest| rest.strip_prefix(b"="))
        }
    })
}

/// The TPM socket of a swtpm command line (`--server type=unixio,path=P`).
fn tpm_socket_of(args: &[&[u8]]) -> Option<PathBuf> {
    let value = option_value(args, "--server")?;
    let mut parts = value.split(|b| *b == b',');
    if !parts.clone().any(|part| part == b"type=unixio") {
        return None;
    }
    parts.find_map(|part| {
        part.strip_prefix(b"path=").map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(p)))
    })
}

fn proc_info(pid: u32) -> Option<ProcInfo> {
    parse_stat(pid, &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Fields 3 (state), 4 (ppid) and 22 (starttime) of /proc/PID/stat (proc(5)); the command
/// name in field 2 may hold spaces and parentheses, so fields count from its last ')'.
fn parse_stat(pid: u32, stat: &str) -> Option<ProcInfo> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcInfo {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn read_pid_file(path: &Path) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut numbers = text.split_whitespace().map(str::parse::<u32>);
    Some((numbers.next()?.ok()?, numbers.next()?.ok()?))
}

/// A process's command line for a message, arguments joined by spaces.
fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut text: String = String::from_utf8_lossy(&raw).replace('\0', " ").trim().to_owned();
    if text.chars().count() > 200 {
        text = text.chars().take(200).chain("…".chars()).collect();
    }
    if text.is_empty() { "command line unknown".into() } else { text }
}

/// Stops orphan `swtpm`: an orderly TPM2_Shutdown if it still answers on its TPM socket (so
/// its clock stays safe), then SIGKILL, then waits for it to exit. Only a socket in the
/// private state directory is spoken to (an older tresor's swtpm on a loopback port is just
/// killed, and the next start sets its clock safe again).
fn stop(swtpm: &ProcInfo, state_dir: &Path, binary: &str) -> Result<(), SwtpmError> {
    let raw = std::fs::read(format!("/proc/{}/cmdline", swtpm.pid)).unwrap_or_default();
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    if let Some(socket) = tpm_socket_of(&args).filter(|p| p.parent() == Some(state_dir)) {
        let _ = super::tpm_command_within(
            &socket,
            "TPM2_Shutdown",
            &super::shutdown_clear_command(),
            Duration::from_millis(200),
        );
    }
    let same = || proc_info(swtpm.pid).is_some_and(|now| now.start == swtpm.start);
    kill_and_wait(swtpm.pid, same, EXIT_TIMEOUT).map_err(|reason| SwtpmError::StaleNotStopped {
        state_dir: state_dir.to_owned(),
        pid: swtpm.pid,
        reason,
    })?;
    tracing::warn!(
        pid = swtpm.pid,
        state = %state_dir.display(),
        binary,
        "stopped a stale swtpm left by a process that is gone"
    );
    Ok(())
}

/// SIGKILLs `pid` through a pidfd and waits until it has exited. `still_it` is asked once
/// the pidfd pins the process: `false` means the process we judged is gone already (the
/// pid may belong to another process now, which is left alone).
#[allow(unsafe_code)]
fn kill_and_wait(pid: u32, still_it: impl Fn() -> bool, timeout: Duration) -> Result<(), String> {
    let gone = |e: &std::io::Error| e.raw_os_error() == Some(libc::ESRCH);
    let pid = libc::pid_t::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
    // SAFETY: pidfd_open(2) takes a pid and flags (plain integers) and returns a new
    // descriptor or -1; no memory is passed.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if raw < 0 {
        let e = std::io::Error::last_os_error();
        return if gone(&e) { Ok(()) } else { Err(format!("pidfd_open: {e}")) };
    }
    let raw = RawFd::try_from(raw).map_err(|_| "pidfd_open returned no descriptor".to_owned())?;
    // SAFETY: `raw` was just returned by pidfd_open for us alone; OwnedFd closes it once.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    if !still_it() {
        return Ok(());
    }
    // SAFETY: pidfd_send_signal(2) with a descriptor we own, a signal number, a null
    // siginfo (documented: the kernel then fills it in as kill(2) would) and flags 0.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if sent < 0 {
        let e = std::io::Error::last_os_error();
        return if gone(&e) { Ok(()) } else { Err(format!("SIGKILL: {e}")) };
    }
    // A pidfd becomes readable when its process exits.
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let left = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        let mut poll = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll(2) on one pollfd that lives on this stack frame for the whole call.
        let ready = unsafe { libc::poll(&mut poll, 1, left) };
        match ready {
            1.. => return Ok(()),
            0 => return Err(format!("it did not exit within {timeout:?} of SIGKILL")),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(format!("waiting for it to exit: {e}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<&[u8]> {
        line.split(' ').map(str::as_bytes).collect()
    }

    #[test]
    fn the_state_directory_and_socket_come_from_swtpm_command_lines_only() {
        let line = "/usr/bin/swtpm socket --tpm2 --tpmstate dir=/var/lib/d1/tpm,mode=0600 \
                    --server type=unixio,path=/var/lib/d1/tpm/tpm.sock,mode=0600";
        let a = args(line);
        assert_eq!(state_dir_of(&a, "swtpm"), Some(PathBuf::from("/var/lib/d1/tpm")));
        assert_eq!(tpm_socket_of(&a), Some(PathBuf::from("/var/lib/d1/tpm/tpm.sock")));
        let tcp = args("swtpm socket --tpmstate dir=/s --server type=tcp,port=20002");
        assert_eq!(tpm_socket_of(&tcp), None, "an older version's TCP port is not a socket");
        let a = args("swtpm socket --tpmstate=dir=tpm");
        assert_eq!(state_dir_of(&a, "swtpm"), Some(PathBuf::from("tpm")));
        let a = args("/opt/x/my-swtpm socket --tpmstate dir=/s");
        assert_eq!(state_dir_of(&a, "swtpm"), None);
        assert_eq!(state_dir_of(&a, "/opt/x/my-swtpm"), Some(PathBuf::from("/s")));
        assert_eq!(state_dir_of(&args("swtpm_setup --tpmstate dir=/s"), "swtpm"), None);
        assert_eq!(state_dir_of(&args("vim --tpmstate dir=/s"), "swtpm"), None);
    }

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let stat = "4242 (sw (tpm) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 2 0 \
                    987654 100000 200 18446744073709551615";
        let p = parse_stat(4242, stat).unwrap();
        assert_eq!(p, ProcInfo { pid: 4242, state: 'S', ppid: 1, start: 987_654 });
    }

    #[test]
    fn an_orphan_is_one_whose_owner_is_gone() {
        let swtpm = |ppid| ProcInfo { pid: 50, state: 'S', ppid, start: 1000 };
        let parent = |start| ProcInfo { pid: 40, state: 'S', ppid: 1, start };
        assert_eq!(judge(&swtpm(1), None, None), Verdict::Orphan);
        assert_eq!(judge(&swtpm(40), None, None), Verdict::Orphan, "parent vanished");
        assert_eq!(judge(&swtpm(40), Some(&parent(2000)), None), Verdict::Orphan, "adopted");
        assert_eq!(judge(&swtpm(40), Some(&parent(900)), None), Verdict::Owned(40));
        assert_eq!(judge(&swtpm(40), Some(&parent(900)), Some((50, 40))), Verdict::Owned(40));
        assert_eq!(
            judge(&swtpm(40), Some(&parent(900)), Some((50, 39))),
            Verdict::Orphan,
            "a subreaper adopted it from its recorded owner"
        );
        assert_eq!(
            judge(&swtpm(40), Some(&parent(900)), Some((51, 39))),
            Verdict::Owned(40),
            "a record of another swtpm says nothing about this one"
        );
    }
}
