//! The operator's store (docs/flow.md "Who holds what"; DESIGN.md §5): the IMSI pool and
//! its allocations, subscriber records with their secrets encrypted ([`super::seal`]), the
//! campaigns this operator takes part in and their devices, received IMSI lists, the cards'
//! verified answers to activate-TRE, outstanding AKA challenges and the DPF's reports.
//!
//! Two backends behind [`storage::Database`] (issue 15), the same statements on both
//! ([`Tx`]); secrets are sealed before they are stored, whichever holds them:
//! - SQLite (the default; one file per process), opened under the policy of
//!   `storage::open_sqlite`: created with mode 0600 only where no file exists (or in an
//!   empty file with [`OpenMode::Init`]), never over an empty or foreign file (MNO-B once
//!   re-issued IMSIs that were live on cards after its store file was emptied). WAL journal
//!   with `synchronous=FULL` (a committed allocation survives power loss), foreign keys on,
//!   `secure_delete` on, stamped as the `mno` store, schema versioned with `PRAGMA
//!   user_version`. Every change runs in one `BEGIN IMMEDIATE` transaction, which takes the
//!   write lock first, so concurrent requests (and processes) serialise instead of
//!   deadlocking on upgrade.
//! - PostgreSQL (`path = "postgres://…"`; several instances of one operator), with
//!   versioned migrations ([`PG_SCHEMA`]). Transactions run concurrently at READ COMMITTED,
//!   so every read-modify-write is one conditional statement (the pool's next index) or
//!   reads what it changes `FOR UPDATE` ([`locking`]): a campaign's device, a subscriber
//!   (SQN, OTA counter), a campaign being prepared, the list of campaigns (created or
//!   closed). Reads run in a REPEATABLE READ snapshot.
//!
//! Either store records its owner, IMSI range and a storage-key check when it is created; a
//! store of another role, another version, another operator, another IMSI range or another
//! storage key is refused at start.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, TransactionBehavior};
pub use storage::OpenMode;
use storage::{
    Database, Dialect, Location, OpenError, PgSchema, Postgres, Schema, SqlError, SqliteTx, Tx,
    args, sqlite_error,
};

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

/// The operator's store on PostgreSQL: the SQLite schema (the tables added since included)
/// in PostgreSQL's types; the meta rows are written by the transaction that creates it.
pub const PG_SCHEMA: PgSchema = PgSchema { role: "mno", migrations: &[PG_V1] };

const PG_V1: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE pool (
    id         BIGINT PRIMARY KEY CHECK (id = 0),
    next_index BIGINT NOT NULL CHECK (next_index >= 0)
);
INSERT INTO pool (id, next_index) VALUES (0, 0);
CREATE TABLE allocations (
    pool_index   BIGINT PRIMARY KEY,
    imsi         TEXT NOT NULL UNIQUE,
    iccid        TEXT NOT NULL UNIQUE,
    purpose      TEXT NOT NULL CHECK (purpose IN ('manufacture', 'campaign')),
    campaign     TEXT,
    device_id    TEXT,
    allocated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX allocations_by_device ON allocations (campaign, device_id)
    WHERE campaign IS NOT NULL;
CREATE TABLE subscribers (
    imsi        TEXT PRIMARY KEY REFERENCES allocations (imsi),
    iccid       TEXT NOT NULL UNIQUE,
    k           BYTEA NOT NULL,
    opc         BYTEA NOT NULL,
    kic         BYTEA NOT NULL,
    kid         BYTEA NOT NULL,
    amf         BYTEA NOT NULL,
    sqn         BIGINT NOT NULL CHECK (sqn >= 0),
    ota_counter BIGINT NOT NULL CHECK (ota_counter >= 0),
    status      TEXT NOT NULL CHECK (status IN ('active', 'pending', 'live', 'retired')),
    device_id   TEXT,
    campaign    TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE TABLE campaigns (
    id            TEXT PRIMARY KEY,
    from_operator TEXT NOT NULL,
    to_operator   TEXT NOT NULL,
    digest        BYTEA NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE TABLE campaign_devices (
    campaign          TEXT NOT NULL REFERENCES campaigns (id),
    device_id         TEXT NOT NULL,
    iccid             TEXT NOT NULL,
    old_imsi          TEXT REFERENCES subscribers (imsi),
    imsi_list_sent_at BIGINT,
    tre_command       BYTEA,
    tre_counter       BIGINT,
    tre_issued_at     BIGINT,
    registered_at     BIGINT,
    ear_hash          BYTEA,
    profile           BYTEA,
    profile_issued_at BIGINT,
    PRIMARY KEY (campaign, device_id)
);
CREATE INDEX campaign_devices_by_iccid ON campaign_devices (iccid);
CREATE TABLE imsi_lists (
    campaign    TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    iccid       TEXT NOT NULL,
    new_imsi    TEXT NOT NULL,
    sender      TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (campaign, device_id),
    FOREIGN KEY (campaign, device_id) REFERENCES campaign_devices (campaign, device_id)
);
CREATE TABLE tre_activations (
    campaign    TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    iccid       TEXT NOT NULL,
    imsi        TEXT NOT NULL,
    counter     BIGINT NOT NULL,
    response    BYTEA NOT NULL,
    verified_at BIGINT NOT NULL,
    PRIMARY KEY (campaign, device_id),
    FOREIGN KEY (campaign, device_id) REFERENCES campaign_devices (campaign, device_id)
);
CREATE INDEX tre_activations_by_iccid ON tre_activations (iccid);
CREATE TABLE aka_challenges (
    imsi       TEXT PRIMARY KEY REFERENCES subscribers (imsi),
    rand       BYTEA NOT NULL,
    autn       BYTEA NOT NULL,
    xres       BYTEA NOT NULL,
    sqn        BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE aka_accepted (
    imsi        TEXT PRIMARY KEY REFERENCES subscribers (imsi),
    res         BYTEA NOT NULL,
    accepted_at BIGINT NOT NULL
);
CREATE TABLE closed_campaigns (
    id        TEXT PRIMARY KEY,
    closed_at BIGINT NOT NULL
);
CREATE TABLE reports (
    campaign    TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    step        BIGINT,
    reason      TEXT,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (campaign, device_id),
    FOREIGN KEY (campaign, device_id) REFERENCES campaign_devices (campaign, device_id)
)
";

/// The store of one operator process.
pub struct Store {
    db: Database,
    location: Location,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("location", &self.location).finish_non_exhaustive()
    }
}

impl Store {
    /// [`Store::open_with`] of an SQLite file in [`OpenMode::CreateIfMissing`] (the tests'
    /// shorthand).
    #[cfg(test)]
    pub(crate) fn open(
        path: &std::path::Path,
        owner: &str,
        pool: &PoolConfig,
        sealer: &Sealer,
    ) -> Result<Self> {
        let location = Location::File(path.to_owned());
        Self::open_with(&location, owner, pool, sealer, OpenMode::CreateIfMissing)
    }

    /// Opens the store at `location` for operator `owner` with IMSI range `pool` — creating
    /// it where no file exists (or in an empty file with [`OpenMode::Init`]), or in a
    /// PostgreSQL database without tables — checking that it is this operator's, of this
    /// schema and range, and that `sealer`'s key is the one its secrets were encrypted with.
    pub(crate) fn open_with(
        location: &Location,
        owner: &str,
        pool: &PoolConfig,
        sealer: &Sealer,
        mode: OpenMode,
    ) -> Result<Self> {
        let shown = location.to_string();
        let check = sealer.seal("", Field::KeyCheck, KEY_CHECK_PLAINTEXT)?;
        // The owner, range and key check are written with the schema, in one transaction.
        let created = || tracing::info!(store = %shown, owner, "operator store created");
        let db = match location {
            Location::File(path) => {
                let conn = storage::open_sqlite_with(path, &SCHEMA, mode, |c| {
                    write_meta(&mut SqliteTx(c), owner, pool, &check)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    created();
                    Ok(())
                })?;
                sqlite(conn)?
            }
            Location::Postgres(url) => Database::Postgres(Postgres::open(url, &PG_SCHEMA, |tx| {
                write_meta(tx, owner, pool, &check)?;
                created();
                Ok(())
            })?),
        };
        let store = Self { db, location: location.clone() };
        store.read(|tx| verify_meta(tx, &shown, owner, pool, sealer))?;
        Ok(store)
    }

    /// A store in memory only, made for `owner` and `pool`: not durable (`tresor serve mno
    /// --check`).
    pub(crate) fn open_in_memory(owner: &str, pool: &PoolConfig, sealer: &Sealer) -> Result<Self> {
        let conn = storage::open_sqlite_in_memory(&SCHEMA)?;
        let check = sealer.seal("", Field::KeyCheck, KEY_CHECK_PLAINTEXT)?;
        write_meta(&mut SqliteTx(&conn), owner, pool, &check)?;
        Ok(Self { db: sqlite(conn)?, location: Location::File(":memory:".into()) })
    }

    /// What a start with this configuration would find at `location`, without writing to it
    /// (`tresor serve mno --check`): the store checks of [`storage::check_sqlite`] or
    /// [`Postgres::check`], then the owner, the pool and the storage key, as
    /// [`Store::open_with`] checks them.
    pub fn check(
        location: &Location,
        owner: &str,
        pool: &PoolConfig,
        storage_key: &crate::mno::StorageKey,
    ) -> Result<storage::StoreCheck> {
        let sealer = Sealer::new(storage_key)?;
        let shown = location.to_string();
        let (found, db) = match location {
            Location::File(path) => {
                let found = storage::check_sqlite(path, &SCHEMA)?;
                if found == storage::StoreCheck::Missing {
                    return Ok(found);
                }
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(path, flags).map_err(sqlite_error)?;
                conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
                (found, Database::sqlite(conn))
            }
            Location::Postgres(url) => {
                let found = Postgres::check(url, &PG_SCHEMA)?;
                if found == storage::StoreCheck::Missing {
                    return Ok(found);
                }
                // The store is judged ready, so of this schema version: opening it applies
                // no migration. Should it vanish meanwhile, nothing is created in its place.
                let db = Postgres::open_sized(url, &PG_SCHEMA, 1, |_| {
                    Err(SqlError::other("the store disappeared while it was being checked"))
                })?;
                (found, Database::Postgres(db))
            }
        };
        let store = Self { db, location: location.clone() };
        store.read(|tx| verify_meta(tx, &shown, owner, pool, &sealer))?;
        Ok(found)
    }

    /// Where the store is: its file or its database (never a password).
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Whether several instances of the operator may share this store (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.db.is_shared()
    }

    /// Whether the store answers a trivial query (`/ready`).
    pub(crate) fn healthy(&self) -> bool {
        self.db.healthy()
    }

    /// Runs `f` in one write transaction, committed if `f` returns `Ok`, rolled back
    /// otherwise: on SQLite `BEGIN IMMEDIATE`; on PostgreSQL at READ COMMITTED, where a
    /// transaction that conflicted with another instance's runs `f` again (so `f` acts on
    /// the store only, and locks what it reads to change: [`locking`]).
    pub(crate) fn write<T>(&self, f: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        self.db.transaction(f)
    }

    /// Runs `f` in one read transaction: a consistent snapshot (SQLite's deferred
    /// transaction, PostgreSQL's REPEATABLE READ, READ ONLY), never committed.
    pub(crate) fn read<T>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        match &self.db {
            Database::Sqlite(conn) => {
                let mut conn =
                    conn.lock().map_err(|_| MnoError::Internal("store lock poisoned"))?;
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Deferred)
                    .map_err(sqlite_error)?;
                f(&mut SqliteTx(&tx))
            }
            Database::Postgres(_) => self.db.transaction(|tx| {
                tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", &[])?;
                f(tx)
            }),
        }
    }
}

/// An SQLite store's connection as the operator runs it: busy timeout, foreign keys,
/// `secure_delete`, the tables added since version 1 (`IF NOT EXISTS`), and write
/// transactions that take the write lock first (`BEGIN IMMEDIATE`).
fn sqlite(mut conn: Connection) -> Result<Database> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(sqlite_error)?;
    conn.pragma_update(None, "secure_delete", "ON").map_err(sqlite_error)?;
    conn.execute_batch(ADDED_TABLES).map_err(sqlite_error)?;
    conn.set_transaction_behavior(TransactionBehavior::Immediate);
    Ok(Database::sqlite(conn))
}

/// `clause` (`FOR UPDATE`, `FOR UPDATE OF t`) where the backend runs transactions
/// concurrently (PostgreSQL): a row read to be changed is locked until the transaction
/// ends, so another instance's transaction waits for it and then reads the change. SQLite's
/// write transaction holds the whole database from its start: nothing to add there.
pub(crate) fn locking(tx: &dyn Tx, clause: &'static str) -> &'static str {
    match tx.dialect() {
        Dialect::Postgres => clause,
        Dialect::Sqlite => "",
    }
}

/// Serialises the transactions that create or close campaigns (PostgreSQL: the owner row,
/// never written after creation, locked as a mutex), so that a campaign is never both
/// created and recorded as closed by two instances at once.
pub(crate) fn lock_campaigns(tx: &mut dyn Tx) -> Result<()> {
    if tx.dialect() == Dialect::Postgres {
        tx.query("SELECT key FROM meta WHERE key = 'owner' FOR UPDATE", &[])?;
    }
    Ok(())
}

impl From<OpenError> for MnoError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::NewerVersion { path, found, supported, .. } => MnoError::SchemaVersion {
                path: path.display().to_string(),
                found,
                known: supported,
            },
            OpenError::PgNewerVersion { database, found, supported, .. } => {
                MnoError::SchemaVersion { path: database, found, known: supported }
            }
            other => MnoError::StoreOpen(other),
        }
    }
}

/// The rows a new store is made with: its owner, the pool it was made for, the key check.
fn write_meta(
    tx: &mut dyn Tx,
    owner: &str,
    pool: &PoolConfig,
    key_check: &[u8],
) -> Result<(), SqlError> {
    let meta = "INSERT INTO meta (key, value) VALUES (?1, ?2)";
    tx.execute(meta, args!["owner", owner.as_bytes()])?;
    tx.execute(meta, args!["pool", pool.fingerprint().as_bytes()])?;
    tx.execute(meta, args!["key_check", key_check])?;
    Ok(())
}

/// The store belongs to `owner`, was made for `pool`, and `sealer` holds its storage key.
fn verify_meta(
    tx: &mut dyn Tx,
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
        tx.query_one("SELECT value FROM meta WHERE key = 'key_check'", &[])?.get(0)?;
    match sealer.open("", Field::KeyCheck, &check) {
        Ok(plain) if plain.as_slice() == KEY_CHECK_PLAINTEXT => Ok(()),
        _ => Err(MnoError::WrongStorageKey),
    }
}

fn meta_text(tx: &mut dyn Tx, key: &str) -> Result<String> {
    let row = tx.query_opt("SELECT value FROM meta WHERE key = ?1", args![key])?;
    let value: Option<Vec<u8>> = row.map(|r| r.get(0)).transpose()?;
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

/// Stored integers are signed (SQLite INTEGER, PostgreSQL BIGINT): counters and SQNs go
/// through these.
pub(crate) fn to_sql_u64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| MnoError::Internal("value out of the store's range"))
}

pub(crate) fn from_sql_u64(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| MnoError::Corrupt("negative counter"))
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
