//! The operator's SQLite store (docs/flow.md "Who holds what"; DESIGN.md §5): the IMSI pool
//! and its allocations, subscriber records with their secrets encrypted ([`super::seal`]),
//! the campaigns this operator takes part in and their devices, received IMSI lists, the
//! cards' verified answers to activate-TRE, outstanding AKA challenges and the DPF's
//! reports.
//!
//! One file per process, opened under the policy of `storage::open_sqlite`: created with
//! mode 0600 only where no file exists (or in an empty file with [`OpenMode::Init`]), never
//! over an empty or foreign file (MNO-B once re-issued IMSIs that were live on cards after
//! its store file was emptied). WAL journal with `synchronous=FULL` (a committed allocation
//! survives power loss), foreign keys on, `secure_delete` on. The store is stamped as the
//! `mno` store and its schema versioned with `PRAGMA user_version`; a store of another role,
//! another version, another operator, another IMSI range or another storage key is refused
//! at start.
//! Every change runs in one `BEGIN IMMEDIATE` transaction, which takes the write lock first,
//! so concurrent requests (and processes) serialise instead of deadlocking on upgrade.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
pub use storage::OpenMode;
use storage::{OpenError, Schema};

use super::error::{MnoError, Result};
use super::pool::PoolConfig;
use super::seal::{Field, Sealer};

/// The schema this build writes and reads.
pub const SCHEMA_VERSION: i64 = 1;
/// How long a transaction waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const KEY_CHECK_PLAINTEXT: &[u8] = b"tresor operator store";

/// The operator's store as `storage` opens it.
const SCHEMA: Schema = Schema { role: "mno", version: SCHEMA_VERSION, ddl: DDL };

const DDL: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE pool (
    id         INTEGER PRIMARY KEY CHECK (id = 0),
    next_index INTEGER NOT NULL CHECK (next_index >= 0)
);
INSERT INTO pool (id, next_index) VALUES (0, 0);
CREATE TABLE allocations (
    pool_index   INTEGER PRIMARY KEY,
    imsi         TEXT NOT NULL UNIQUE,
    iccid        TEXT NOT NULL UNIQUE,
    purpose      TEXT NOT NULL CHECK (purpose IN ('manufacture', 'campaign')),
    campaign     TEXT,
    device_id    TEXT,
    allocated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX allocations_by_device ON allocations (campaign, device_id)
    WHERE campaign IS NOT NULL;
CREATE TABLE subscribers (
    imsi        TEXT PRIMARY KEY REFERENCES allocations (imsi),
    iccid       TEXT NOT NULL UNIQUE,
    k           BLOB NOT NULL,
    opc         BLOB NOT NULL,
    kic         BLOB NOT NULL,
    kid         BLOB NOT NULL,
    amf         BLOB NOT NULL,
    sqn         INTEGER NOT NULL CHECK (sqn >= 0),
    ota_counter INTEGER NOT NULL CHECK (ota_counter >= 0),
    status      TEXT NOT NULL CHECK (status IN ('active', 'pending', 'live', 'retired')),
    device_id   TEXT,
    campaign    TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE campaigns (
    id            TEXT PRIMARY KEY,
    from_operator TEXT NOT NULL,
    to_operator   TEXT NOT NULL,
    digest        BLOB NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE campaign_devices (
    campaign          TEXT NOT NULL REFERENCES campaigns (id),
    device_id         TEXT NOT NULL,
    iccid             TEXT NOT NULL,
    old_imsi          TEXT REFERENCES subscribers (imsi),
    imsi_list_sent_at INTEGER,
    tre_command       BLOB,
    tre_counter       INTEGER,
    tre_issued_at     INTEGER,
    registered_at     INTEGER,
    ear_hash          BLOB,
    profile           BLOB,
    profile_issued_at INTEGER,
    PRIMARY KEY (campaign, device_id)
);
CREATE INDEX campaign_devices_by_iccid ON campaign_devices (iccid);
CREATE TABLE imsi_lists (
    campaign    TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    iccid       TEXT NOT NULL,
    new_imsi    TEXT NOT NULL,
    sender      TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (campaign, device_id),
    FOREIGN KEY (campaign, device_id) REFERENCES campaign_devices (campaign, device_id)
);
CREATE TABLE tre_activations (
    campaign    TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    iccid       TEXT NOT NULL,
    imsi        TEXT NOT NULL,
    counter     INTEGER NOT NULL,
    response    BLOB NOT NULL,
    verified_at INTEGER NOT NULL,
    PRIMARY KEY (campaign, device_id),
    FOREIGN KEY (campaign, device_id) REFERENCES campaign_devices (campaign, device_id)
);
CREATE INDEX tre_activations_by_iccid ON tre_activations (iccid);
CREATE TABLE aka_challenges (
    imsi       TEXT PRIMARY KEY REFERENCES subscribers (imsi),
    rand       BLOB NOT NULL,
    autn       BLOB NOT NULL,
    xres       BLOB NOT NULL,
    sqn        INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE aka_accepted (
    imsi        TEXT PRIMARY KEY REFERENCES subscribers (imsi),
    res         BLOB NOT NULL,
    accepted_at INTEGER NOT NULL
);
CREATE TABLE closed_campaigns (
    id        TEXT PRIMARY KEY,
    closed_at INTEGER NOT NULL
);
CREATE TABLE reports (
    campaign    TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    step        INTEGER,
    reason      TEXT,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (campaign, device_id),
    FOREIGN KEY (campaign, device_id) REFERENCES campaign_devices (campaign, device_id)
);
";

/// Tables added to the schema after its first release, which stores made before get at
/// start: campaigns that ended before this operator heard of them (a failure report for an
/// unknown campaign: an announcement arriving late is refused, so no device is held by a
/// campaign the RO has given up), and the RES that made a subscription live (sealed like
/// XRES: the same answer repeated, whose verdict was lost, is answered live again; any
/// other is not), and the cards' verified answers to activate-TRE (the ICCID binding: only
/// a card that proved its ICCID and IMSI for a campaign has its old subscription retired).
const ADDED_TABLES: &str = "
CREATE TABLE IF NOT EXISTS closed_campaigns (id TEXT PRIMARY KEY, closed_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tre_activations (
    campaign TEXT NOT NULL,
    device_id TEXT NOT NULL,
    iccid TEXT NOT NULL,
    imsi TEXT NOT NULL,
    counter INTEGER NOT NULL,
    response BLOB NOT NULL,
    verified_at INTEGER NOT NULL,
    PRIMARY KEY (campaign, device_id),
    FOREIGN KEY (campaign, device_id) REFERENCES campaign_devices (campaign, device_id)
);
CREATE INDEX IF NOT EXISTS tre_activations_by_iccid ON tre_activations (iccid);
CREATE TABLE IF NOT EXISTS aka_accepted (
    imsi TEXT PRIMARY KEY REFERENCES subscribers (imsi),
    res BLOB NOT NULL,
    accepted_at INTEGER NOT NULL
);";

/// The store of one operator process.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    /// [`Store::open_with`] in [`OpenMode::CreateIfMissing`] (the tests' shorthand).
    #[cfg(test)]
    pub(crate) fn open(
        path: &Path,
        owner: &str,
        pool: &PoolConfig,
        sealer: &Sealer,
    ) -> Result<Self> {
        Self::open_with(path, owner, pool, sealer, OpenMode::CreateIfMissing)
    }

    /// Opens the store at `path` for operator `owner` with IMSI range `pool` — creating it
    /// where no file exists, or in an empty file with [`OpenMode::Init`] — checking that it
    /// is this operator's, of this schema and range, and that `sealer`'s key is the one its
    /// secrets were encrypted with.
    pub(crate) fn open_with(
        path: &Path,
        owner: &str,
        pool: &PoolConfig,
        sealer: &Sealer,
        mode: OpenMode,
    ) -> Result<Self> {
        let shown = path.display().to_string();
        let check = sealer.seal("", Field::KeyCheck, KEY_CHECK_PLAINTEXT)?;
        // The owner, range and key check are written with the schema, in one transaction.
        let mut conn = storage::open_sqlite_with(path, &SCHEMA, mode, |c| {
            write_meta(c, owner, pool, &check)?;
            tracing::info!(path = %shown, owner, "operator store created");
            Ok(())
        })?;
        configure(&conn)?;

        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        verify_meta(&tx, &shown, owner, pool, sealer)?;
        tx.commit()?;
        Ok(Self { conn: Mutex::new(conn), path: path.to_owned() })
    }

    /// A store in memory only, made for `owner` and `pool`: not durable (`tresor serve mno
    /// --check`).
    pub(crate) fn open_in_memory(owner: &str, pool: &PoolConfig, sealer: &Sealer) -> Result<Self> {
        let conn = storage::open_sqlite_in_memory(&SCHEMA)?;
        write_meta(&conn, owner, pool, &sealer.seal("", Field::KeyCheck, KEY_CHECK_PLAINTEXT)?)?;
        configure(&conn)?;
        Ok(Self { conn: Mutex::new(conn), path: PathBuf::from(":memory:") })
    }

    /// What a start with this configuration would find at `path`, reading only (`tresor
    /// serve mno --check`): the store checks of [`storage::check_sqlite`], then the owner,
    /// the pool and the storage key, as [`Store::open_with`] checks them.
    pub fn check(
        path: &Path,
        owner: &str,
        pool: &PoolConfig,
        storage_key: &crate::mno::StorageKey,
    ) -> Result<storage::StoreCheck> {
        let sealer = Sealer::new(storage_key)?;
        let found = storage::check_sqlite(path, &SCHEMA)?;
        if found == storage::StoreCheck::Missing {
            return Ok(found);
        }
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        verify_meta(&tx, &path.display().to_string(), owner, pool, &sealer)?;
        Ok(found)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one write transaction (BEGIN IMMEDIATE): committed if `f` returns `Ok`,
    /// rolled back otherwise.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().map_err(|_| MnoError::Internal("store lock poisoned"))?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs `f` in one read transaction: a consistent snapshot.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().map_err(|_| MnoError::Internal("store lock poisoned"))?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        f(&tx)
    }
}

impl From<OpenError> for MnoError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::NewerVersion { path, found, supported, .. } => MnoError::SchemaVersion {
                path: path.display().to_string(),
                found,
                known: supported,
            },
            other => MnoError::StoreOpen(other),
        }
    }
}

/// The rows a new store is made with: its owner, the pool it was made for, the key check.
fn write_meta(
    conn: &Connection,
    owner: &str,
    pool: &PoolConfig,
    key_check: &[u8],
) -> rusqlite::Result<()> {
    let meta = "INSERT INTO meta (key, value) VALUES (?1, ?2)";
    conn.execute(meta, rusqlite::params!["owner", owner.as_bytes()])?;
    conn.execute(meta, rusqlite::params!["pool", pool.fingerprint().as_bytes()])?;
    conn.execute(meta, rusqlite::params!["key_check", key_check])?;
    Ok(())
}

/// The connection settings and the tables added since version 1 (`IF NOT EXISTS`).
fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.execute_batch(ADDED_TABLES)?;
    Ok(())
}

/// The store belongs to `owner`, was made for `pool`, and `sealer` holds its storage key.
fn verify_meta(
    tx: &Transaction<'_>,
    shown: &str,
    owner: &str,
    pool: &PoolConfig,
    sealer: &Sealer,
) -> Result<()> {
    let found = meta_text(tx, "owner")?;
    if found != owner {
        return Err(MnoError::StoreOwner { path: shown.into(), found, expected: owner.into() });
    }
    let found = meta_text(tx, "pool")?;
    if found != pool.fingerprint() {
        return Err(MnoError::PoolChanged { path: shown.into(), found });
    }
    let check: Vec<u8> =
        tx.query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| r.get(0))?;
    match sealer.open("", Field::KeyCheck, &check) {
        Ok(plain) if plain.as_slice() == KEY_CHECK_PLAINTEXT => Ok(()),
        _ => Err(MnoError::WrongStorageKey),
    }
}

fn meta_text(tx: &Transaction<'_>, key: &str) -> Result<String> {
    let value: Option<Vec<u8>> =
        tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?;
    value.and_then(|v| String::from_utf8(v).ok()).ok_or(MnoError::Corrupt("store metadata"))
}

/// Seconds since the Unix epoch, as stored.
pub(crate) fn now_unix() -> Result<i64> {
    unix(SystemTime::now())
}

pub(crate) fn unix(t: SystemTime) -> Result<i64> {
    let secs = t.duration_since(UNIX_EPOCH).map_err(|_| MnoError::Internal("clock before 1970"))?;
    i64::try_from(secs.as_secs()).map_err(|_| MnoError::Internal("clock out of range"))
}

/// SQLite integers are signed: counters and SQNs go through these.
pub(crate) fn to_sql_u64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| MnoError::Internal("value out of SQLite's range"))
}

pub(crate) fn from_sql_u64(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| MnoError::Corrupt("negative counter"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mno::config::StorageKey;

    fn pool() -> PoolConfig {
        PoolConfig::new("001", "01", "0000000001", 5, "8900101").unwrap()
    }

    #[test]
    fn reopening_checks_owner_range_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mno.sqlite");
        let sealer = Sealer::new(&StorageKey::new([1; 32])).unwrap();
        drop(Store::open(&path, "mno-a", &pool(), &sealer).unwrap());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        drop(Store::open(&path, "mno-a", &pool(), &sealer).unwrap());
        assert!(matches!(
            Store::open(&path, "mno-b", &pool(), &sealer),
            Err(MnoError::StoreOwner { .. })
        ));
        let other = PoolConfig::new("001", "01", "0000000100", 5, "8900101").unwrap();
        assert!(matches!(
            Store::open(&path, "mno-a", &other, &sealer),
            Err(MnoError::PoolChanged { .. })
        ));
        let grown = PoolConfig::new("001", "01", "0000000001", 50, "8900101").unwrap();
        assert!(Store::open(&path, "mno-a", &grown, &sealer).is_ok(), "the range may grow");
        let wrong = Sealer::new(&StorageKey::new([2; 32])).unwrap();
        assert!(matches!(
            Store::open(&path, "mno-a", &pool(), &wrong),
            Err(MnoError::WrongStorageKey)
        ));
    }

    #[test]
    fn a_future_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mno.sqlite");
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 7).unwrap();
        drop(c);
        let sealer = Sealer::new(&StorageKey::new([1; 32])).unwrap();
        assert!(matches!(
            Store::open(&path, "mno-a", &pool(), &sealer),
            Err(MnoError::SchemaVersion { found: 7, .. })
        ));
    }
}
