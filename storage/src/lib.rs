//! Durable stores shared by the network roles (DESIGN.md §5): how a role opens its store,
//! in an SQLite file (the embedded default) or in a PostgreSQL database that several
//! instances of the role share (issue 15), and the SQL both backends run.
//!
//! A store is refused, never silently replaced: a role starts only on a store that is its
//! own — stamped with its role name and of its schema version — and creates a store only
//! where no file exists (or, with [`OpenMode::Init`], in an existing *empty* file the
//! operator named explicitly), or in a PostgreSQL database without tables. An empty file
//! where a store should be usually means the store was lost; treating it as a fresh store
//! once made MNO-B re-issue IMSIs that were live on cards, and the RO forget its campaigns.
//!
//! Layout:
//! - `sqlite`: [`open_sqlite`] and its variants, [`Schema`], [`OpenMode`], [`OpenError`],
//!   and [`check_sqlite`], which judges a store the same way without writing to it.
//! - [`sql`]: [`Tx`], the statements of a transaction, and [`Value`], for either backend.
//! - `sqlite_tx`: [`SqliteTx`], [`Tx`] on an SQLite connection.
//! - `database`: [`Database`], either backend behind one `transaction`.
//! - `location`: [`Location`], a store's file or database URL as configured.
//! - `postgres`: [`Postgres`], a pooled PostgreSQL store with versioned migrations.
//! - [`pg_server`]: a private PostgreSQL server in a temporary directory (tests, the lab).
//! - `private`: state directories 0700 and files 0600 ([`private_dir`], [`private_file`]).

#![forbid(unsafe_code)]

mod database;
mod location;
pub mod pg_server;
mod postgres;
mod private;
pub mod sql;
mod sqlite;
mod sqlite_tx;

pub use database::Database;
pub use location::Location;
pub use postgres::{DEFAULT_POOL_SIZE, PgSchema, Postgres, is_postgres_url};
pub use private::{DIR_MODE, FILE_MODE, private_dir, private_file, private_files_in};
pub use sql::{Dialect, Row, SqlError, SqlErrorKind, Tx, Value};
pub use sqlite::{
    OpenError, OpenMode, STAMP_TABLE, Schema, StoreCheck, check_sqlite, open_sqlite,
    open_sqlite_in_memory, open_sqlite_with,
};
pub use sqlite_tx::{SqliteTx, sql_error as sqlite_error};
