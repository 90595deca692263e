//! State is private to the user that runs the role: directories 0700, files 0600 (issue 12,
//! "Hygiene"). A store, a card, a TPM's state or a key readable by the group or by others
//! hands them to every local account; the evaluation found swtpm state 0640 in 0755
//! directories and SQLite stores 0644.
//!
//! Files are created private by whoever writes them (`OpenOptions::mode(0o600)`, swtpm's
//! `mode=0600`); this module makes the directories and tightens what an older version, a
//! copy or a restore left wider. It never widens anything.

use std::fs::{DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The mode of state directories.
pub const DIR_MODE: u32 = 0o700;
/// The mode of state files.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) with mode 0700, or tightens an existing `dir` to
/// 0700: the caller names it a state directory, which nobody else needs to read. A shared
/// sticky directory (`/tmp`) is never changed: a warning says to use a directory of its own.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    if std::fs::metadata(dir)?.permissions().mode() & 0o1000 != 0 {
        tracing::warn!(dir = %dir.display(), "a shared sticky directory holds state; left as it is: give the state a directory of its own");
        return Ok(());
    }
    tighten(dir, DIR_MODE)
}

/// Takes group and other permissions off the file at `path`, if it exists: 0644 becomes
/// 0600. Returns whether it changed anything (logged at info).
pub fn private_file(path: &Path) -> io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {
            let before = meta.permissions().mode() & 0o777;
            match tighten(path, FILE_MODE) {
                Ok(()) => Ok(before & 0o077 != 0),
                // Gone since it was looked at (an SQLite journal another connection just
                // deleted): a missing file needs no tightening, as above.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every file directly in `dir` made private ([`private_file`]); returns how many changed.
pub fn private_files_in(dir: &Path) -> io::Result<usize> {
    let mut changed = 0;
    for entry in std::fs::read_dir(dir)? {
        if private_file(&entry?.path())? {
            changed += 1;
        }
    }
    Ok(changed)
}

fn tighten(path: &Path, most: u32) -> io::Result<()> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    let tight = mode & most & 0o777;
    if mode & 0o777 != tight {
        std::fs::set_permissions(path, Permissions::from_mode(tight))?;
        tracing::info!(path = %path.display(), from = format!("{:o}", mode & 0o777), to = format!("{tight:o}"), "made private");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_are_made_and_tightened_to_0700() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!((mode(&dir), mode(&root.path().join("a"))), (0o700, 0o700));
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // A shared sticky directory stays as it is.
        std::fs::set_permissions(&dir, Permissions::from_mode(0o1777)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777, 0o1777);
    }

    #[test]
    fn files_lose_group_and_other_bits_and_nothing_widens() {
        let dir = tempfile::tempdir().unwrap();
        let wide = dir.path().join("store.sqlite");
        std::fs::write(&wide, b"x").unwrap();
        std::fs::set_permissions(&wide, Permissions::from_mode(0o644)).unwrap();
        assert!(private_file(&wide).unwrap());
        assert_eq!(mode(&wide), 0o600);
        assert!(!private_file(&wide).unwrap());
        let narrow = dir.path().join("read-only");
        std::fs::write(&narrow, b"x").unwrap();
        std::fs::set_permissions(&narrow, Permissions::from_mode(0o400)).unwrap();
        assert!(!private_file(&narrow).unwrap());
        assert_eq!(mode(&narrow), 0o400);
        assert!(!private_file(&dir.path().join("missing")).unwrap());
        std::fs::set_permissions(&wide, Permissions::from_mode(0o640)).unwrap();
        assert_eq!(private_files_in(dir.path()).unwrap(), 1);
    }
}
