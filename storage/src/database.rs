//! A role's database on either backend, for stores whose transactions run one at a time per
//! process (the RO's, an operator's): an SQLite connection behind a lock, or a PostgreSQL
//! pool that several instances share. [`Database::transaction`] is the one way in.

use std::sync::Mutex;

use rusqlite::Connection;

use crate::Postgres;
use crate::sql::{SqlError, SqlErrorKind, Tx};
use crate::sqlite_tx::{SqliteTx, sql_error};

pub enum Database {
    Sqlite(Mutex<Connection>),
    Postgres(Postgres),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(_) => f.write_str("Database(sqlite)"),
            Self::Postgres(db) => write!(f, "Database({})", db.database()),
        }
    }
}

impl Database {
    pub fn sqlite(conn: Connection) -> Self {
        Self::Sqlite(Mutex::new(conn))
    }

    /// Whether several instances of the role may share this database (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Runs `f` in a transaction and commits it (durably: SQLite `synchronous=FULL`,
    /// PostgreSQL synchronous commit); an `Err` from `f` rolls everything back. On
    /// PostgreSQL a conflict with another transaction runs `f` again.
    pub fn transaction<R, E: From<SqlError>>(
        &self,
        mut f: impl FnMut(&mut dyn Tx) -> Result<R, E>,
    ) -> Result<R, E> {
        match self {
            Self::Postgres(db) => db.transaction(f),
            Self::Sqlite(conn) => {
                let mut conn = conn.lock().map_err(|_| SqlError {
                    kind: SqlErrorKind::Unavailable,
                    detail: "store lock poisoned".into(),
                })?;
                let tx = conn.transaction().map_err(sql_error)?;
                let out = f(&mut SqliteTx(&tx))?;
                tx.commit().map_err(sql_error)?;
                Ok(out)
            }
        }
    }

    /// Runs `f` with each statement committed on its own ([`Postgres::autocommit`]; on
    /// SQLite, whose one connection runs one thing at a time, in a transaction): for reads
    /// and single-statement writes.
    pub fn autocommit<R, E: From<SqlError>>(
        &self,
        f: impl FnMut(&mut dyn Tx) -> Result<R, E>,
    ) -> Result<R, E> {
        match self {
            Self::Postgres(db) => db.autocommit(f),
            Self::Sqlite(_) => self.transaction(f),
        }
    }

    /// Whether the database answers a trivial query.
    pub fn healthy(&self) -> bool {
        self.autocommit(|tx| tx.query("SELECT 1", &[])).is_ok()
    }
}
