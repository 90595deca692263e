//! Durable, atomic replacement of the card state file: write a temporary file beside it,
//! fsync it, rename it over the state file, fsync the directory. A crash at any point leaves
//! either the old file or the new one, each whole.
//!
//! Tests inject a failure at each step through [`FaultPlan`], which outside `cfg(test)` has
//! no way to fail: the hook is unreachable in normal use.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The steps of an atomic write, in order. A failure "at" a step happens just before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WriteStep {
    /// Creating and writing the temporary file.
    Write,
    /// fsync of the temporary file (a failure here leaves a torn temporary file).
    SyncFile,
    /// Renaming the temporary file over the state file.
    Rename,
    /// fsync of the directory, which makes the rename durable.
    SyncDir,
    /// After the write is durable, before the card switches to it in memory.
    Adopt,
}

impl WriteStep {
    pub const ALL: [WriteStep; 5] =
        [Self::Write, Self::SyncFile, Self::Rename, Self::SyncDir, Self::Adopt];

    /// Whether the new file has replaced the old one once this step was reached: rename is
    /// atomic, so everything from the directory fsync on sees the new state.
    pub fn committed(self) -> bool {
        self > Self::Rename
    }
}

impl fmt::Display for WriteStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Write => "writing the temporary file",
            Self::SyncFile => "syncing the temporary file",
            Self::Rename => "renaming it over the state file",
            Self::SyncDir => "syncing the state directory",
            Self::Adopt => "switching to the new state",
        })
    }
}

/// Where an atomic write fails on purpose. Only tests can make one that fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    #[cfg(test)]
    pub fail_at: Option<WriteStep>,
}

impl FaultPlan {
    #[cfg(test)]
    pub fn fail_at(step: WriteStep) -> Self {
        Self { fail_at: Some(step) }
    }

    fn check(&self, _step: WriteStep) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_at == Some(_step) {
            return Err(io::Error::other(format!("injected fault before {_step}")));
        }
        Ok(())
    }
}

/// A failed atomic write: the step and the cause.
#[derive(Debug)]
pub struct WriteFailure {
    pub step: WriteStep,
    pub source: io::Error,
}

/// The temporary file used while replacing `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// The lock file that keeps two processes from serving the same card.
pub fn lock_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{name}.lock"))
}

/// Replaces `path` with `bytes` atomically and durably, mode 0600.
///
/// The temporary file is created afresh (`O_CREAT|O_EXCL`, mode 0600): one an interrupted
/// write left behind is removed first, never reused with whatever mode it has, so the state
/// never passes through a file others can read.
pub fn write_atomic(path: &Path, bytes: &[u8], faults: &FaultPlan) -> Result<(), WriteFailure> {
    let at = |step: WriteStep| move |source: io::Error| WriteFailure { step, source };
    let tmp = temp_path(path);
    faults.check(WriteStep::Write).map_err(at(WriteStep::Write))?;
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(at(WriteStep::Write)(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(at(WriteStep::Write))?;
    if let Err(e) = faults.check(WriteStep::SyncFile) {
        // What a crash before the data reached the disk leaves: half a file.
        let _ = file.write_all(bytes.get(..bytes.len() / 2).unwrap_or_default());
        return Err(at(WriteStep::SyncFile)(e));
    }
    file.write_all(bytes).map_err(at(WriteStep::Write))?;
    file.sync_all().map_err(at(WriteStep::SyncFile))?;
    drop(file);
    faults.check(WriteStep::Rename).map_err(at(WriteStep::Rename))?;
    fs::rename(&tmp, path).map_err(at(WriteStep::Rename))?;
    faults.check(WriteStep::SyncDir).map_err(at(WriteStep::SyncDir))?;
    sync_dir(path).map_err(at(WriteStep::SyncDir))?;
    faults.check(WriteStep::Adopt).map_err(at(WriteStep::Adopt))?;
    Ok(())
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Takes the card's lock file; fails with `WouldBlock` if another process holds it.
pub fn lock(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(lock_path(path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.json");
        write_atomic(&path, b"old state", &FaultPlan::default()).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        for step in WriteStep::ALL {
            let r = write_atomic(&path, b"new state", &FaultPlan::fail_at(step));
            assert_eq!(r.unwrap_err().step, step);
            let now = fs::read(&path).unwrap();
            let expected: &[u8] = if step.committed() { b"new state" } else { b"old state" };
            assert_eq!(now, expected, "{step:?}");
            write_atomic(&path, b"old state", &FaultPlan::default()).unwrap();
        }
    }

    #[test]
    fn a_leftover_temporary_file_is_not_reused_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.json");
        let tmp = temp_path(&path);
        fs::write(&tmp, b"half a state from an interrupted write").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o666)).unwrap();
        write_atomic(&path, b"new state", &FaultPlan::default()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new state");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.json");
        let held = lock(&path).unwrap();
        assert_eq!(lock(&path).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        drop(held);
        assert!(lock(&path).is_ok());
    }
}
