//! The PVA's durable state in SQLite (DESIGN.md §5): enrolled devices (EK, AK, clock
//! high-water mark), pending credential activations and issued nonces. Opened under the
//! policy of `storage::open_sqlite`: WAL journal, `synchronous=FULL`, created only where no
//! file exists (or in an empty file with [`OpenMode::Init`]), stamped as the `pva` store,
//! schema versioned with `PRAGMA user_version`; an empty, foreign or newer file is refused.
//!
//! Operations commit in groups, leader/follower style: a caller queues its operation; if no
//! commit is under way it becomes the leader and runs everything queued in one transaction
//! (each operation in its own savepoint, so one failing does not undo the others), sharing
//! one fsync; otherwise it waits for the leader. An uncontended call therefore runs on the
//! caller's thread with no hand-off, and concurrent calls share commits. An operation's
//! result is handed back only after its transaction committed, so nothing a caller releases
//! (an EAR after a nonce was consumed) can outlive a crash that loses the write.
//!
//! Durability per operation: [`Store::call`] commits with `synchronous=FULL` (fsync before
//! the answer); [`Store::call_lazy`] with `synchronous=NORMAL` (WAL stays consistent, the
//! last commits may be lost in a power failure). Only issuing nonces is lazy: losing an
//! issued nonce makes it unknown, which fails closed.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use protocol::DeviceId;
use rusqlite::{Connection, OptionalExtension, params};
pub use storage::OpenMode;
use storage::Schema;

use crate::error::StoreError;

/// The schema this code writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// The PVA's store as `storage` opens it.
const SCHEMA: Schema = Schema { role: "pva", version: SCHEMA_VERSION, ddl: DDL };

const DDL: &str = "
CREATE TABLE devices (
    device_id      BLOB PRIMARY KEY,
    ek_public      BLOB NOT NULL,
    ek_certificate BLOB NOT NULL,
    ak_public      BLOB NOT NULL,
    ak_name        BLOB NOT NULL,
    enrolled_at    INTEGER NOT NULL,
    -- high-water mark of the TPM clock seen in appraisals; NULL before the first
    reset_count    INTEGER,
    restart_count  INTEGER,
    clock          INTEGER
);
CREATE TABLE pending_enrolments (
    device_id      BLOB NOT NULL,
    ak_name        BLOB NOT NULL,
    ek_public      BLOB NOT NULL,
    ek_certificate BLOB NOT NULL,
    ak_public      BLOB NOT NULL,
    -- SHA-256 of the credential secret: the secret itself is never stored
    secret_hash    BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    PRIMARY KEY (device_id, ak_name)
);
CREATE TABLE nonces (
    -- SHA-256 of the nonce: lookups never compare the nonce itself
    nonce_hash  BLOB PRIMARY KEY,
    nonce       BLOB NOT NULL,
    device_id   BLOB NOT NULL,
    policy_id   TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX nonces_by_device ON nonces (device_id, used_at, expires_at);
CREATE INDEX nonces_by_expiry ON nonces (expires_at);
";

type Deliver = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type Run = Box<dyn FnOnce(&Connection) -> (bool, Deliver) + Send>;

/// A queued operation: `run` executes it and returns whether it succeeded and how to
/// deliver its result once the commit is known; `abort` answers it when it never ran.
struct Job {
    run: Run,
    abort: Deliver,
    durable: bool,
}

struct Queue {
    jobs: Vec<Job>,
    committing: bool,
}

struct Writer {
    conn: Connection,
    /// A file database (in memory, `synchronous` means nothing).
    file: bool,
    /// The connection's current `synchronous` setting is FULL.
    full: bool,
}

/// A handle to the store; share it behind an `Arc`.
pub struct Store {
    queue: Mutex<Queue>,
    done: Condvar,
    writer: Mutex<Writer>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    /// Opens the PVA's database at `path`, creating it if no file is there; refuses an
    /// empty file or one that is not the PVA's store ([`StoreError::Open`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, OpenMode::CreateIfMissing)
    }

    /// [`Store::open`]; with [`OpenMode::Init`] an existing empty file is initialised too
    /// (`tresor serve pva --init`).
    pub fn open_with(path: &Path, mode: OpenMode) -> Result<Self, StoreError> {
        Self::start(storage::open_sqlite(path, &SCHEMA, mode)?, true)
    }

    /// A store that lives in memory only: not durable. For tests and for measuring the
    /// appraisal core without the disk (`tresor bench appraisal`).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::start(storage::open_sqlite_in_memory(&SCHEMA)?, false)
    }

    fn start(conn: Connection, file: bool) -> Result<Self, StoreError> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self {
            queue: Mutex::new(Queue { jobs: Vec::new(), committing: false }),
            done: Condvar::new(),
            writer: Mutex::new(Writer { conn, file, full: true }),
        })
    }

    /// Runs `op` in a transaction and returns its result once the transaction committed
    /// durably (fsync). An `Err` from `op` rolls back what `op` wrote.
    pub fn call<R: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.submit(true, op)
    }

    /// [`Store::call`] without waiting for the disk: the commit is consistent but may be
    /// lost in a power failure. Only for writes whose loss fails closed.
    pub fn call_lazy<R: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.submit(false, op)
    }

    fn submit<R: Send + 'static>(
        &self,
        durable: bool,
        op: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let slot: Arc<Mutex<Option<Result<R, StoreError>>>> = Arc::new(Mutex::new(None));
        let (run_slot, abort_slot) = (slot.clone(), slot.clone());
        let job = Job {
            run: Box::new(move |conn| {
                let result = op(conn);
                let ok = result.is_ok();
                let deliver: Deliver = Box::new(move |commit_error| {
                    *lock(&run_slot) = Some(match commit_error {
                        Some(e) => Err(e.clone()),
                        None => result,
                    });
                });
                (ok, deliver)
            }),
            abort: Box::new(move |e| {
                *lock(&abort_slot) = Some(Err(e.cloned().unwrap_or(StoreError::Closed)));
            }),
            durable,
        };
        let mut queue = lock(&self.queue);
        queue.jobs.push(job);
        loop {
            if let Some(result) = lock(&slot).take() {
                return result;
            }
            if queue.committing {
                queue = self.done.wait(queue).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Lead: commit everything queued, this call's operation included.
            queue.committing = true;
            let batch = std::mem::take(&mut queue.jobs);
            drop(queue);
            {
                let _leading = Leading(self);
                run_batch(&mut lock(&self.writer), batch);
            }
            queue = lock(&self.queue);
        }
    }
}

/// Ends a leader's turn even if its batch unwound, so followers never wait forever.
struct Leading<'a>(&'a Store);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        lock(&self.0.queue).committing = false;
        self.0.done.notify_all();
    }
}

/// One group commit: every job in its savepoint, one COMMIT, then the answers.
fn run_batch(writer: &mut Writer, batch: Vec<Job>) {
    let durable = batch.iter().any(|j| j.durable);
    if writer.file && writer.full != durable {
        let mode = if durable { "FULL" } else { "NORMAL" };
        match writer.conn.pragma_update(None, "synchronous", mode) {
            Ok(()) => writer.full = durable,
            Err(e) => {
                let e = StoreError::from(e);
                batch.into_iter().for_each(|job| (job.abort)(Some(&e)));
                return;
            }
        }
    }
    let conn = &writer.conn;
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = StoreError::from(e);
        tracing::error!(error = %e, "store cannot begin a transaction");
        batch.into_iter().for_each(|job| (job.abort)(Some(&e)));
        return;
    }
    let mut delivers = Vec::with_capacity(batch.len());
    let mut poisoned = None;
    for job in batch {
        if let Err(e) = conn.execute_batch("SAVEPOINT op") {
            (job.abort)(Some(&StoreError::from(e)));
            continue;
        }
        let (ok, deliver) = (job.run)(conn);
        let end = if ok { "RELEASE op" } else { "ROLLBACK TO op; RELEASE op" };
        if let Err(e) = conn.execute_batch(end) {
            // The savepoint could not be closed: this operation's writes are in doubt,
            // so the whole transaction is abandoned.
            poisoned = Some(StoreError::from(e));
        }
        delivers.push(deliver);
    }
    if let Some(e) = poisoned {
        let _ = conn.execute_batch("ROLLBACK");
        tracing::error!(error = %e, "store savepoint failed; transaction rolled back");
        delivers.into_iter().for_each(|d| d(Some(&e)));
        return;
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => delivers.into_iter().for_each(|d| d(None)),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            let e = StoreError::from(e);
            tracing::error!(error = %e, "store commit failed");
            delivers.into_iter().for_each(|d| d(Some(&e)));
        }
    }
}

/// An enrolled device as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device_id: DeviceId,
    pub ek_public: Vec<u8>,
    pub ek_certificate: Vec<u8>,
    pub ak_public: Vec<u8>,
    pub ak_name: Vec<u8>,
    pub enrolled_at: u64,
}

/// The highest TPM clock state seen for a device: (resetCount, restartCount, clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClockMark {
    pub reset_count: u32,
    pub restart_count: u32,
    pub clock: u64,
}

pub(crate) fn get_device(
    conn: &Connection,
    id: &DeviceId,
) -> Result<Option<DeviceRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT ek_public, ek_certificate, ak_public, ak_name, enrolled_at FROM devices WHERE device_id = ?1",
    )?
    .query_row(params![id.as_bytes()], |r| {
        Ok(DeviceRecord {
            device_id: id.clone(),
            ek_public: r.get(0)?,
            ek_certificate: r.get(1)?,
            ak_public: r.get(2)?,
            ak_name: r.get(3)?,
            enrolled_at: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
        })
    })
    .optional()
    .map_err(StoreError::from)
}

/// Inserts or replaces a device; a new AK starts a new clock history.
pub(crate) fn put_device(conn: &Connection, d: &DeviceRecord) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO devices (device_id, ek_public, ek_certificate, ak_public, ak_name, enrolled_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (device_id) DO UPDATE SET
            ek_public = excluded.ek_public, ek_certificate = excluded.ek_certificate,
            ak_public = excluded.ak_public, ak_name = excluded.ak_name,
            enrolled_at = excluded.enrolled_at,
            reset_count = NULL, restart_count = NULL, clock = NULL",
    )?
    .execute(params![
        d.device_id.as_bytes(),
        d.ek_public,
        d.ek_certificate,
        d.ak_public,
        d.ak_name,
        i64::try_from(d.enrolled_at).unwrap_or(i64::MAX)
    ])?;
    Ok(())
}

/// Raises the device's clock high-water mark to `seen` if it is higher, and returns the
/// mark as it was before.
pub(crate) fn raise_clock_mark(
    conn: &Connection,
    id: &DeviceId,
    seen: ClockMark,
) -> Result<Option<ClockMark>, StoreError> {
    let previous = conn
        .prepare_cached(
            "SELECT reset_count, restart_count, clock FROM devices WHERE device_id = ?1",
        )?
        .query_row(params![id.as_bytes()], |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .optional()?;
    let previous = match previous {
        Some((Some(reset), Some(restart), Some(clock))) => Some(ClockMark {
            reset_count: u32::try_from(reset)
                .map_err(|_| StoreError::Corrupt("reset_count".into()))?,
            restart_count: u32::try_from(restart)
                .map_err(|_| StoreError::Corrupt("restart_count".into()))?,
            clock: u64::try_from(clock).map_err(|_| StoreError::Corrupt("clock".into()))?,
        }),
        _ => None,
    };
    if previous.is_none_or(|p| seen > p) {
        conn.prepare_cached(
            "UPDATE devices SET reset_count = ?2, restart_count = ?3, clock = ?4 WHERE device_id = ?1",
        )?
        .execute(params![
            id.as_bytes(),
            i64::from(seen.reset_count),
            i64::from(seen.restart_count),
            i64::try_from(seen.clock).unwrap_or(i64::MAX)
        ])?;
    }
    Ok(previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(b: u8) -> DeviceId {
        let mut name = vec![0x00, 0x0B];
        name.extend([b; 32]);
        DeviceId::from_name(&name).unwrap()
    }

    fn record(b: u8) -> DeviceRecord {
        DeviceRecord {
            device_id: device(b),
            ek_public: vec![1],
            ek_certificate: vec![2],
            ak_public: vec![3],
            ak_name: vec![4],
            enrolled_at: 5,
        }
    }

    #[test]
    fn creates_the_schema_once_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pva.sqlite");
        {
            let store = Store::open(&path).unwrap();
            store.call(|c| put_device(c, &record(1))).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let got = store.call(|c| get_device(c, &device(1))).unwrap();
        assert_eq!(got, Some(record(1)));
        let mode: String =
            store.call(|c| Ok(c.pragma_query_value(None, "journal_mode", |r| r.get(0))?)).unwrap();
        assert_eq!(mode, "wal");
        drop(store);
        // A newer schema is refused, not silently used.
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(Store::open(&path), Err(StoreError::SchemaTooNew { found: 99, .. })));
    }

    #[test]
    fn lazy_and_durable_commits_both_persist_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pva.sqlite");
        {
            let store = Store::open(&path).unwrap();
            store.call_lazy(|c| put_device(c, &record(7))).unwrap();
            store.call(|c| put_device(c, &record(8))).unwrap();
            store.call_lazy(|c| put_device(c, &record(9))).unwrap();
        }
        let store = Store::open(&path).unwrap();
        for b in [7, 8, 9] {
            assert!(store.call(move |c| get_device(c, &device(b))).unwrap().is_some(), "{b}");
        }
        let mode: i64 =
            store.call(|c| Ok(c.pragma_query_value(None, "synchronous", |r| r.get(0))?)).unwrap();
        assert_eq!(mode, 2, "FULL after a durable call");
    }

    #[test]
    fn a_failing_operation_rolls_back_only_itself() {
        let store = Store::open_in_memory().unwrap();
        let result: Result<(), _> = store.call(|c| {
            put_device(c, &record(2))?;
            Err(StoreError::Corrupt("on purpose".into()))
        });
        assert!(result.is_err());
        assert_eq!(store.call(|c| get_device(c, &device(2))).unwrap(), None);
        store.call(|c| put_device(c, &record(3))).unwrap();
        assert!(store.call(|c| get_device(c, &device(3))).unwrap().is_some());
    }

    #[test]
    fn clock_mark_only_rises_and_resets_with_a_new_ak() {
        let store = Store::open_in_memory().unwrap();
        store.call(|c| put_device(c, &record(4))).unwrap();
        let mark =
            |reset, restart, clock| ClockMark { reset_count: reset, restart_count: restart, clock };
        let raise = |m: ClockMark| store.call(move |c| raise_clock_mark(c, &device(4), m)).unwrap();
        assert_eq!(raise(mark(2, 0, 100)), None);
        assert_eq!(raise(mark(1, 9, 999)), Some(mark(2, 0, 100)));
        assert_eq!(raise(mark(2, 1, 5)), Some(mark(2, 0, 100)));
        assert_eq!(raise(mark(2, 1, 6)), Some(mark(2, 1, 5)));
        store.call(|c| put_device(c, &record(4))).unwrap();
        assert_eq!(raise(mark(0, 0, 0)), None);
    }

    #[test]
    fn concurrent_callers_share_commits() {
        let store = std::sync::Arc::new(Store::open_in_memory().unwrap());
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for j in 0..20u8 {
                        let r = record(i.wrapping_mul(20).wrapping_add(j));
                        store.call(move |c| put_device(c, &r)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let count: i64 = store
            .call(|c| Ok(c.query_row("SELECT count(*) FROM devices", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(count, 160);
    }
}
