//! How a role opens its SQLite store (DESIGN.md §5).
//!
//! Every store carries a stamp: a table [`STAMP_TABLE`] with the role name (`pva`, `mno`,
//! `ro`), and its schema version in `PRAGMA user_version`. [`open_sqlite`] looks at the
//! file before SQLite may write to it and opens it only if it is this role's store of this
//! schema version; anything else is refused with an [`OpenError`] naming the file and what
//! is wrong with it, and the file is left as it was:
//!
//! | the file is …                                  | [`OpenMode::CreateIfMissing`] | [`OpenMode::Init`] |
//! | ---------------------------------------------- | ----------------------------- | ------------------ |
//! | missing                                        | created                       | created            |
//! | empty (0 bytes)                                | [`OpenError::Empty`]          | initialised        |
//! | not an SQLite database                         | [`OpenError::NotSqlite`]      | same               |
//! | an SQLite database without this role's tables  | [`OpenError::NoSchema`]       | same               |
//! | another role's store                           | [`OpenError::OtherRole`]      | same               |
//! | this role's store of a newer / older version   | [`OpenError::NewerVersion`] / [`OpenError::OlderVersion`] | same |
//! | this role's store                              | opened                        | opened             |
//!
//! A store is created whole or not at all: schema, stamp and the caller's initial rows are
//! written in one transaction into a private (0600) scratch file next to the store, which
//! is then linked into place (never over a file that appeared meanwhile). A crash while
//! creating leaves at most a scratch file, never a half-made store under the store's name.
//! A database that predates the stamp (tresor 0.1 stores) is adopted — stamped in place —
//! when its tables are exactly the schema's and its `user_version` is 0 or the schema's.
//!
//! Opened stores run with the WAL journal, `synchronous=FULL` and a busy timeout of five
//! seconds; the caller adds its own pragmas (foreign keys, `secure_delete`).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

/// The table that records whose store a database is (`key`/`value` rows: `role`,
/// `created_at`, `created_by`, and `adopted_at` for a stamped older store).
pub const STAMP_TABLE: &str = "tresor_store";

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The first 16 bytes of every SQLite 3 database file (sqlite.org/fileformat.html §1.3).
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// A role's store schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// The role whose store this is (`pva`, `mno`, `ro`): recorded when the store is created
    /// and checked at every open, so one role's store handed to another is refused.
    pub role: &'static str,
    /// The version this build reads and writes, kept in `PRAGMA user_version`.
    pub version: i64,
    /// The statements that create the schema in an empty database (plain `CREATE TABLE`,
    /// not `IF NOT EXISTS`: they only ever run on an empty database).
    pub ddl: &'static str,
}

/// Whether an existing empty file may become a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenMode {
    /// Create a store only where no file exists (every normal start).
    #[default]
    CreateIfMissing,
    /// Also initialise an existing empty (0-byte) file, as the operator asked for with
    /// `--init`. A file with content is refused all the same.
    Init,
}

/// Why a store was not opened. The file is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(
        "store {}: the file is empty (0 bytes), not a {role} store; refusing to start on it, \
         since an empty file where a store should be usually means the store was lost \
         (to create a new {role} store in it, start once with --init)",
        path.display()
    )]
    Empty { path: PathBuf, role: &'static str },
    #[error("store {}: not an SQLite database, so not a {role} store; refusing to use it", path.display())]
    NotSqlite { path: PathBuf, role: &'static str },
    #[error(
        "store {}: an SQLite database without the {role} schema (its tables: {}); refusing to use it",
        path.display(),
        list(tables)
    )]
    NoSchema { path: PathBuf, role: &'static str, tables: Vec<String> },
    #[error("store {}: a {found} store, not a {expected} store; refusing to use it", path.display())]
    OtherRole { path: PathBuf, expected: &'static str, found: String },
    #[error(
        "store {}: {role} schema version {found} is newer than this build's {supported}; \
         refusing to use it (run the newer tresor that wrote it)",
        path.display()
    )]
    NewerVersion { path: PathBuf, role: &'static str, found: i64, supported: i64 },
    #[error(
        "store {}: {role} schema version {found} is older than this build's {supported} and \
         there is no migration from it; refusing to use it",
        path.display()
    )]
    OlderVersion { path: PathBuf, role: &'static str, found: i64, supported: i64 },
    #[error(
        "store {}: missing or empty, but its journal {} is not: it may hold the store's \
         committed data; refusing to create a new {role} store over it (restore the store, \
         or move the journal away)",
        path.display(),
        journal.display()
    )]
    Leftover { path: PathBuf, journal: PathBuf, role: &'static str },
    #[error("store {}: {detail}", path.display())]
    Io { path: PathBuf, detail: String },
    #[error("store {database}: {detail}")]
    Postgres { database: String, detail: String },
    #[error(
        "store {database}: a database with tables that are not a {role} store ({}); refusing \
         to use it (give the {role} a database of its own)",
        list(tables)
    )]
    PgNoSchema { database: String, role: &'static str, tables: Vec<String> },
    #[error("store {database}: a {found} store, not a {expected} store; refusing to use it")]
    PgOtherRole { database: String, expected: &'static str, found: String },
    #[error(
        "store {database}: {role} schema version {found} is newer than this build's \
         {supported}; refusing to use it (run the newer tresor that migrated it)"
    )]
    PgNewerVersion { database: String, role: &'static str, found: i64, supported: i64 },
    #[error("store {}: SQLite: {detail}", path.display())]
    Sqlite { path: PathBuf, detail: String },
}

fn list(tables: &[String]) -> String {
    if tables.is_empty() { "none".to_owned() } else { tables.join(", ") }
}

/// Opens the store of `schema` at `path` under the policy of the module documentation.
pub fn open_sqlite(path: &Path, schema: &Schema, mode: OpenMode) -> Result<Connection, OpenError> {
    open_sqlite_with(path, schema, mode, |_| Ok(()))
}

/// [`open_sqlite`], running `init` when (and only when) the store is created, in the
/// transaction that creates the schema: the rows it writes (an owner, a key check) exist
/// exactly when the store does.
pub fn open_sqlite_with(
    path: &Path,
    schema: &Schema,
    mode: OpenMode,
    init: impl Fn(&Connection) -> rusqlite::Result<()>,
) -> Result<Connection, OpenError> {
    // Absolute, so that errors name the file whatever the working directory.
    let path = &absolute(path);
    // A second round only if another process created the store between our look and our
    // link: then we open (and check) theirs.
    for _ in 0..2 {
        match look(path, schema.role)? {
            Look::Store => return open_existing(path, schema),
            Look::Empty if mode == OpenMode::CreateIfMissing => {
                return Err(OpenError::Empty { path: path.to_owned(), role: schema.role });
            }
            Look::Missing | Look::Empty => {
                if create(path, schema, &init)? {
                    return open_existing(path, schema);
                }
            }
        }
    }
    Err(OpenError::Io {
        path: path.to_owned(),
        detail: "the file kept changing while the store was being created".into(),
    })
}

/// A store of `schema` in memory only: not durable (tests, benchmarks).
pub fn open_sqlite_in_memory(schema: &Schema) -> Result<Connection, OpenError> {
    let path = PathBuf::from(":memory:");
    let conn = Connection::open_in_memory().map_err(|e| sqlite(&path, &e))?;
    initialise(&conn, schema, &|_| Ok(())).map_err(|e| sqlite(&path, &e))?;
    Ok(conn)
}

/// What is at a store's path, judged without SQLite.
enum Look {
    Missing,
    Empty,
    /// Starts with the SQLite header; SQLite decides the rest.
    Store,
}

fn look(path: &Path, role: &'static str) -> Result<Look, OpenError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Look::Missing),
        Err(e) => return Err(io(path, &e)),
    };
    if !meta.is_file() {
        return Err(OpenError::Io { path: path.to_owned(), detail: "not a regular file".into() });
    }
    if meta.len() == 0 {
        return Ok(Look::Empty);
    }
    let mut magic = Vec::with_capacity(SQLITE_MAGIC.len());
    File::open(path)
        .and_then(|f| f.take(SQLITE_MAGIC.len() as u64).read_to_end(&mut magic))
        .map_err(|e| io(path, &e))?;
    if magic != SQLITE_MAGIC {
        return Err(OpenError::NotSqlite { path: path.to_owned(), role });
    }
    Ok(Look::Store)
}

/// Opens an existing store of `schema`, or refuses it.
fn open_existing(path: &Path, schema: &Schema) -> Result<Connection, OpenError> {
    // An older tresor, a copy or a restore may have left the store or its journals readable
    // by others; SQLite gives new journals the store's mode.
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let file = with_suffix(path, suffix);
        crate::private::private_file(&file).map_err(|e| io(&file, &e))?;
    }
    let conn = connect(path, schema.role)?;
    if verify_shape(&conn, path, schema)? == Stamp::Missing {
        adopt(&conn, schema).map_err(|e| sqlite(path, &e))?;
        tracing::info!(path = %path.display(), role = schema.role, "unstamped store adopted");
    }
    let journal: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| sqlite(path, &e))?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(OpenError::Sqlite {
            path: path.to_owned(),
            detail: format!("WAL mode refused (journal mode stays {journal})"),
        });
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(|e| sqlite(path, &e))?;
    Ok(conn)
}

/// Whether a database that is `schema`'s store carries the stamp or predates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Present,
    /// A tresor 0.1 store: adopted (stamped) when opened.
    Missing,
}

/// Checks, reading only, that the database is `schema`'s store of its version.
fn verify_shape(conn: &Connection, path: &Path, schema: &Schema) -> Result<Stamp, OpenError> {
    let (tables, version) = shape(conn, path, schema.role)?;
    let newer = |found| OpenError::NewerVersion {
        path: path.to_owned(),
        role: schema.role,
        found,
        supported: schema.version,
    };
    if tables.iter().any(|t| t == STAMP_TABLE) {
        let found = stamped_role(conn, path)?;
        if found != schema.role {
            return Err(OpenError::OtherRole {
                path: path.to_owned(),
                expected: schema.role,
                found,
            });
        }
        if version > schema.version {
            return Err(newer(version));
        }
        if version < schema.version {
            return Err(OpenError::OlderVersion {
                path: path.to_owned(),
                role: schema.role,
                found: version,
                supported: schema.version,
            });
        }
        return Ok(Stamp::Present);
    }
    if version > schema.version {
        return Err(newer(version));
    }
    let ours = !tables.is_empty()
        && tables == schema_tables(schema, path)?
        && (version == 0 || version == schema.version);
    if !ours {
        return Err(OpenError::NoSchema { path: path.to_owned(), role: schema.role, tables });
    }
    Ok(Stamp::Missing)
}

/// What [`check_sqlite`] found at a store's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreCheck {
    /// No file: a normal start creates the store.
    Missing,
    /// This role's store of this schema version, intact by SQLite's `quick_check`.
    Ready {
        /// The store predates the stamp; a start stamps it.
        unstamped: bool,
        /// The store or one of its journals is readable by others; a start tightens it.
        too_open: Vec<PathBuf>,
    },
}

/// Checks what a start would find at `path` without changing anything there (`tresor
/// serve --check`): every refusal of [`open_sqlite`] is reported as the same
/// [`OpenError`], and an existing store must also pass SQLite's `quick_check`. Reading a
/// WAL store may create its `-wal` and `-shm` files, which SQLite owns; nothing else is
/// written.
pub fn check_sqlite(path: &Path, schema: &Schema) -> Result<StoreCheck, OpenError> {
    use std::os::unix::fs::PermissionsExt;
    let path = &absolute(path);
    match look(path, schema.role)? {
        Look::Missing => {
            no_leftover(path, schema.role)?;
            return Ok(StoreCheck::Missing);
        }
        Look::Empty => return Err(OpenError::Empty { path: path.to_owned(), role: schema.role }),
        Look::Store => {}
    }
    let conn = connect(path, schema.role)?;
    let stamp = verify_shape(&conn, path, schema)?;
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| classify(path, schema.role, &e))?;
    if verdict != "ok" {
        return Err(OpenError::Sqlite {
            path: path.to_owned(),
            detail: format!("quick_check: {verdict}"),
        });
    }
    // Closed first: the journals this connection opened are SQLite's, gone once it closes.
    drop(conn);
    let too_open = ["", "-journal", "-wal", "-shm"]
        .iter()
        .map(|suffix| with_suffix(path, suffix))
        .filter(|file| std::fs::metadata(file).is_ok_and(|m| m.permissions().mode() & 0o077 != 0))
        .collect();
    Ok(StoreCheck::Ready { unstamped: stamp == Stamp::Missing, too_open })
}

/// A read-write connection to an existing file; never creates one.
fn connect(path: &Path, role: &'static str) -> Result<Connection, OpenError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, role, &e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| sqlite(path, &e))?;
    Ok(conn)
}

/// The database's tables (sorted, SQLite's own left out) and its `user_version`. Reads
/// only: a refused database is not written.
fn shape(
    conn: &Connection,
    path: &Path,
    role: &'static str,
) -> Result<(Vec<String>, i64), OpenError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| classify(path, role, &e))?;
    let tables = table_names(conn).map_err(|e| classify(path, role, &e))?;
    Ok((tables, version))
}

fn table_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
         ORDER BY name",
    )?;
    stmt.query_map([], |r| r.get(0))?.collect()
}

fn stamped_role(conn: &Connection, path: &Path) -> Result<String, OpenError> {
    conn.query_row(&format!("SELECT value FROM {STAMP_TABLE} WHERE key = 'role'"), [], |r| {
        r.get::<_, String>(0)
    })
    .optional()
    .map_err(|e| sqlite(path, &e))?
    .ok_or_else(|| OpenError::Sqlite {
        path: path.to_owned(),
        detail: format!("{STAMP_TABLE} names no role"),
    })
}

/// The tables `schema.ddl` creates (besides the stamp), as [`table_names`] lists them.
fn schema_tables(schema: &Schema, path: &Path) -> Result<Vec<String>, OpenError> {
    let bad = |e: rusqlite::Error| OpenError::Sqlite {
        path: path.to_owned(),
        detail: format!("the {} schema itself does not build: {e}", schema.role),
    };
    let conn = Connection::open_in_memory().map_err(bad)?;
    conn.execute_batch(schema.ddl).map_err(bad)?;
    table_names(&conn).map_err(bad)
}

/// Creates the store at `path` (missing, or an empty file the caller may replace).
/// `false`: another process created a file there meanwhile.
fn create(
    path: &Path,
    schema: &Schema,
    init: &dyn Fn(&Connection) -> rusqlite::Result<()>,
) -> Result<bool, OpenError> {
    no_leftover(path, schema.role)?;
    let name = path.file_name().ok_or_else(|| OpenError::Io {
        path: path.to_owned(),
        detail: "the store path names no file".into(),
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    static SCRATCH: AtomicU64 = AtomicU64::new(0);
    let scratch = Scratch(dir.join(format!(
        ".{}.new-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        SCRATCH.fetch_add(1, Ordering::Relaxed)
    )));
    let at = &scratch.0;
    // Private before SQLite writes a byte; SQLite gives its journals the same mode.
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(at).map_err(|e| io(at, &e))?;
    {
        let conn = Connection::open(at).map_err(|e| sqlite(at, &e))?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| sqlite(at, &e))?;
        initialise(&conn, schema, init).map_err(|e| sqlite(path, &e))?;
        conn.close().map_err(|(_, e)| sqlite(at, &e))?;
    }
    File::open(at).and_then(|f| f.sync_all()).map_err(|e| io(at, &e))?;
    let existing = match std::fs::metadata(path) {
        Ok(meta) => Some(meta.len()),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(io(path, &e)),
    };
    match existing {
        // The empty file the operator asked to initialise (OpenMode::Init).
        Some(0) => std::fs::rename(at, path).map_err(|e| io(path, &e))?,
        Some(_) => return Ok(false),
        None => match std::fs::hard_link(at, path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            // A file system without hard links: rename, which would replace a file that
            // appeared since the look above (a window of microseconds, not a policy).
            Err(_) => std::fs::rename(at, path).map_err(|e| io(path, &e))?,
        },
    }
    drop(scratch);
    if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot fsync the store's directory");
    }
    tracing::info!(path = %path.display(), role = schema.role, "store created");
    Ok(true)
}

/// Schema, stamp and the caller's rows, in one transaction.
fn initialise(
    conn: &Connection,
    schema: &Schema,
    init: &dyn Fn(&Connection) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    tx.execute_batch(schema.ddl)?;
    stamp(&tx, schema, "created_at")?;
    init(&tx)?;
    tx.commit()
}

/// Stamps an unstamped store of `schema` in place.
fn adopt(conn: &Connection, schema: &Schema) -> rusqlite::Result<()> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    // Another process may have adopted it since we looked.
    if !table_names(&tx)?.iter().any(|t| t == STAMP_TABLE) {
        stamp(&tx, schema, "adopted_at")?;
    }
    tx.commit()
}

fn stamp(conn: &Connection, schema: &Schema, when: &str) -> rusqlite::Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    conn.execute_batch(&format!(
        "CREATE TABLE {STAMP_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         PRAGMA user_version = {};",
        schema.version
    ))?;
    let insert = format!("INSERT INTO {STAMP_TABLE} (key, value) VALUES (?1, ?2)");
    conn.execute(&insert, ["role", schema.role])?;
    conn.execute(&insert, [when, &now.to_string()])?;
    conn.execute(&insert, ["created_by", concat!("tresor ", env!("CARGO_PKG_VERSION"))])?;
    Ok(())
}

/// Refuses to create a store where a non-empty rollback journal or WAL of a lost store
/// remains: SQLite would replay it into the new file.
fn no_leftover(path: &Path, role: &'static str) -> Result<(), OpenError> {
    for suffix in ["-wal", "-journal"] {
        let journal = with_suffix(path, suffix);
        match std::fs::metadata(&journal) {
            Ok(meta) if meta.len() > 0 => {
                return Err(OpenError::Leftover { path: path.to_owned(), journal, role });
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(&journal, &e)),
        }
    }
    Ok(())
}

/// Removes a scratch file (and any journal of it) unless it was linked into place.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let _ = std::fs::remove_file(with_suffix(&self.0, suffix));
        }
    }
}

/// `path` with `suffix` appended to its file name (SQLite's journal names).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn classify(path: &Path, role: &'static str, e: &rusqlite::Error) -> OpenError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => {
            OpenError::NotSqlite { path: path.to_owned(), role }
        }
        _ => sqlite(path, e),
    }
}

fn sqlite(path: &Path, e: &rusqlite::Error) -> OpenError {
    OpenError::Sqlite { path: path.to_owned(), detail: e.to_string() }
}

fn io(path: &Path, e: &std::io::Error) -> OpenError {
    OpenError::Io { path: path.to_owned(), detail: e.to_string() }
}
