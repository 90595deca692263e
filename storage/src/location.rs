//! Where a role keeps its store, as its configuration's `database` names it: a file path
//! (SQLite, the default) or a `postgres://` URL (PostgreSQL, for several instances of the
//! role). A URL may carry a password: it is never printed, only the database's name and
//! host (`Display` and `Debug` both).

use std::path::{Path, PathBuf};

use crate::postgres::{describe_url, is_postgres_url};

#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file.
    File(PathBuf),
    /// A PostgreSQL database: the connection URL as configured.
    Postgres(String),
}

impl Location {
    /// `raw` as configured; a relative file path is resolved by `resolve` (against the
    /// configuration file's directory).
    pub fn parse(raw: &str, resolve: impl FnOnce(PathBuf) -> PathBuf) -> Self {
        if is_postgres_url(raw) {
            Self::Postgres(raw.to_owned())
        } else {
            Self::File(resolve(PathBuf::from(raw)))
        }
    }

    /// The SQLite file, if the store is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::File(path) => Some(path),
            Self::Postgres(_) => None,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&describe_url(url)),
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Location({self})")
    }
}

impl<'de> serde::Deserialize<'de> for Location {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Ok(Self::parse(&raw, |p| p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_postgres_and_never_show_their_password() {
        let l = Location::parse("postgres://pva:hunter2@db.example:5432/pva", |p| p);
        assert!(l.file().is_none());
        let shown = format!("{l} {l:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("pva") && shown.contains("db.example"), "{shown}");
        let l = Location::parse("pva.sqlite", |p| Path::new("/etc/tresor").join(p));
        assert_eq!(l.file(), Some(Path::new("/etc/tresor/pva.sqlite")));
    }
}
