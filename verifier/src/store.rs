//! The PVA's durable state in SQLite (DESIGN.md §5): enrolled devices (EK, AK, TPM-clock
//! high-water mark), the history of their enrolments, and pending credential activations.
//! Nonces are not here: they live in memory only (`nonce`). Opened under the policy of
//! `storage::open_sqlite`: WAL journal, `synchronous=FULL`, created only where no file
//! exists (or in an empty file with [`OpenMode::Init`]), stamped as the `pva` store, schema
//! versioned with `PRAGMA user_version`; an empty, foreign, older or newer file is refused.
//!
//! Operations commit in groups, leader/follower style: a caller queues its operation; if no
//! commit is under way it becomes the leader and runs everything queued in one transaction
//! (each operation in its own savepoint, so one failing does not undo the others), sharing
//! one fsync; otherwise it waits for the leader. An uncontended call therefore runs on the
//! caller's thread with no hand-off, and concurrent calls share commits. An operation's
//! result is handed back only after its transaction committed durably.
//!
//! What is written when: an enrolment (device, history row) commits before the activation
//! is answered; the clock marks are written behind the appraisals by `marks` (at most one
//! flush interval later), with [`raise_clock_mark`], which never lowers a stored mark.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use protocol::DeviceId;
use rusqlite::{Connection, OptionalExtension, params};
pub use storage::OpenMode;
use storage::Schema;

use crate::error::StoreError;

/// The schema this code writes and reads.
///
/// 2: nonces left the store (memory only); the clock mark records when it was seen; every
/// enrolment is kept in `enrolments`. A version 1 store is refused (no migration: its
/// devices enrol again, which version 1 would have let reset their marks anyway).
pub const SCHEMA_VERSION: i64 = 2;

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
    -- high-water mark of the TPM clock seen in appraisals, and the PVA's Unix milliseconds
    -- when it was seen; NULL before the first. Never lowered, also not by an enrolment.
    reset_count    INTEGER,
    restart_count  INTEGER,
    clock          INTEGER,
    clock_seen_at  INTEGER
);
-- Every enrolment ever activated, oldest first: append-only.
CREATE TABLE enrolments (
    device_id      BLOB NOT NULL,
    ak_name        BLOB NOT NULL,
    ak_public      BLOB NOT NULL,
    enrolled_at    INTEGER NOT NULL,
    -- the role of the relying party that asked for it (its TLS client certificate), if any
    requested_by   TEXT
);
CREATE INDEX enrolments_by_device ON enrolments (device_id, enrolled_at);
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
    requested_by   TEXT,
    PRIMARY KEY (device_id, ak_name)
);
";

type Deliver = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type Run = Box<dyn FnOnce(&Connection) -> (bool, Deliver) + Send>;

/// A queued operation: `run` executes it and returns whether it succeeded and how to
/// deliver its result once the commit is known; `abort` answers it when it never ran.
struct Job {
    run: Run,
    abort: Deliver,
}

struct Queue {
    jobs: Vec<Job>,
    committing: bool,
}

struct Writer {
    conn: Connection,
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
        Self::start(storage::open_sqlite(path, &SCHEMA, mode)?)
    }

    /// What a start would find at `path`, without writing to it (`tresor serve pva --check`).
    pub fn check(path: &Path) -> Result<storage::StoreCheck, StoreError> {
        Ok(storage::check_sqlite(path, &SCHEMA)?)
    }

    /// A store that lives in memory only: not durable. For tests and for measuring the
    /// appraisal core without the disk (`tresor bench appraisal`).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::start(storage::open_sqlite_in_memory(&SCHEMA)?)
    }

    fn start(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self {
            queue: Mutex::new(Queue { jobs: Vec::new(), committing: false }),
            done: Condvar::new(),
            writer: Mutex::new(Writer { conn }),
        })
    }

    /// Runs `op` in a transaction and returns its result once the transaction committed
    /// durably (fsync). An `Err` from `op` rolls back what `op` wrote.
    pub fn call<R: Send + 'static>(
        &self,
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

/// A TPM clock state: (resetCount, restartCount, clock), ordered the way a TPM's only grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClockMark {
    pub reset_count: u32,
    pub restart_count: u32,
    pub clock: u64,
}

/// The highest clock state seen for a device, and when the PVA saw it: the quote that
/// reported it was made no later than `seen_at_ms` (the PVA's Unix milliseconds when it
/// appraised it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenClock {
    pub mark: ClockMark,
    pub seen_at_ms: u64,
}

/// One activated enrolment, as the history keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrolmentRecord {
    pub ak_name: Vec<u8>,
    pub ak_public: Vec<u8>,
    /// Unix seconds.
    pub enrolled_at: u64,
    /// The role of the relying party that asked for the enrolment (its TLS client
    /// certificate), when known.
    pub requested_by: Option<String>,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(what.into()))
}

/// The device and its clock mark.
pub(crate) fn get_device(
    conn: &Connection,
    id: &DeviceId,
) -> Result<Option<(DeviceRecord, Option<SeenClock>)>, StoreError> {
    type Row = (DeviceRecord, [Option<i64>; 4]);
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT ek_public, ek_certificate, ak_public, ak_name, enrolled_at,
                    reset_count, restart_count, clock, clock_seen_at
             FROM devices WHERE device_id = ?1",
        )?
        .query_row(params![id.as_bytes()], |r| {
            Ok((
                DeviceRecord {
                    device_id: id.clone(),
                    ek_public: r.get(0)?,
                    ek_certificate: r.get(1)?,
                    ak_public: r.get(2)?,
                    ak_name: r.get(3)?,
                    enrolled_at: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                },
                [r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?],
            ))
        })
        .optional()?;
    let Some((record, mark)) = row else { return Ok(None) };
    let seen = match mark {
        [Some(reset), Some(restart), Some(clock), Some(at)] => Some(SeenClock {
            mark: ClockMark {
                reset_count: u32::try_from(reset)
                    .map_err(|_| StoreError::Corrupt("reset_count".into()))?,
                restart_count: u32::try_from(restart)
                    .map_err(|_| StoreError::Corrupt("restart_count".into()))?,
                clock: u64_of(clock, "clock")?,
            },
            seen_at_ms: u64_of(at, "clock_seen_at")?,
        }),
        [None, None, None, None] => None,
        _ => return Err(StoreError::Corrupt("clock mark partly missing".into())),
    };
    Ok(Some((record, seen)))
}

/// Enrols a device (or enrols it again: another AK, or the same) and appends the enrolment
/// to its history. The clock mark is kept as it is: the TPM's counters belong to the TPM,
/// not to the AK, and an enrolment must not make an older TPM state acceptable again.
pub(crate) fn put_device(
    conn: &Connection,
    d: &DeviceRecord,
    requested_by: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO devices (device_id, ek_public, ek_certificate, ak_public, ak_name, enrolled_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (device_id) DO UPDATE SET
            ek_public = excluded.ek_public, ek_certificate = excluded.ek_certificate,
            ak_public = excluded.ak_public, ak_name = excluded.ak_name,
            enrolled_at = excluded.enrolled_at",
    )?
    .execute(params![
        d.device_id.as_bytes(),
        d.ek_public,
        d.ek_certificate,
        d.ak_public,
        d.ak_name,
        i64_of(d.enrolled_at)
    ])?;
    conn.prepare_cached(
        "INSERT INTO enrolments (device_id, ak_name, ak_public, enrolled_at, requested_by)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        d.device_id.as_bytes(),
        d.ak_name,
        d.ak_public,
        i64_of(d.enrolled_at),
        requested_by
    ])?;
    Ok(())
}

/// Every enrolment of a device, oldest first.
pub(crate) fn enrolments(
    conn: &Connection,
    id: &DeviceId,
) -> Result<Vec<EnrolmentRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT ak_name, ak_public, enrolled_at, requested_by FROM enrolments
         WHERE device_id = ?1 ORDER BY enrolled_at, rowid",
    )?;
    let rows = stmt.query_map(params![id.as_bytes()], |r| {
        Ok(EnrolmentRecord {
            ak_name: r.get(0)?,
            ak_public: r.get(1)?,
            enrolled_at: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
            requested_by: r.get(3)?,
        })
    })?;
    rows.collect::<Result<Vec<_>, _>>().map_err(StoreError::from)
}

/// Raises the stored clock mark of a device to `seen` if `seen` is higher; a lower or
/// equal one leaves it as it is, so marks written late or twice never lower it.
pub(crate) fn raise_clock_mark(
    conn: &Connection,
    id: &DeviceId,
    seen: SeenClock,
) -> Result<(), StoreError> {
    let m = seen.mark;
    conn.prepare_cached(
        "UPDATE devices SET reset_count = ?2, restart_count = ?3, clock = ?4, clock_seen_at = ?5
         WHERE device_id = ?1
           AND (reset_count IS NULL OR (reset_count, restart_count, clock) < (?2, ?3, ?4))",
    )?
    .execute(params![
        id.as_bytes(),
        i64::from(m.reset_count),
        i64::from(m.restart_count),
        i64_of(m.clock),
        i64_of(seen.seen_at_ms)
    ])?;
    Ok(())
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

    fn seen(reset: u32, restart: u32, clock: u64, at: u64) -> SeenClock {
        SeenClock {
            mark: ClockMark { reset_count: reset, restart_count: restart, clock },
            seen_at_ms: at,
        }
    }

    #[test]
    fn creates_the_schema_once_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pva.sqlite");
        {
            let store = Store::open(&path).unwrap();
            store.call(|c| put_device(c, &record(1), Some("ro"))).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let got = store.call(|c| get_device(c, &device(1))).unwrap();
        assert_eq!(got, Some((record(1), None)));
        let mode: String =
            store.call(|c| Ok(c.pragma_query_value(None, "journal_mode", |r| r.get(0))?)).unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 =
            store.call(|c| Ok(c.pragma_query_value(None, "synchronous", |r| r.get(0))?)).unwrap();
        assert_eq!(sync, 2, "FULL");
        drop(store);
        // A newer schema is refused, not silently used; so is the older one.
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(Store::open(&path), Err(StoreError::SchemaTooNew { found: 99, .. })));
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);
        assert!(matches!(Store::open(&path), Err(StoreError::Open(_))));
    }

    #[test]
    fn a_failing_operation_rolls_back_only_itself() {
        let store = Store::open_in_memory().unwrap();
        let result: Result<(), _> = store.call(|c| {
            put_device(c, &record(2), None)?;
            Err(StoreError::Corrupt("on purpose".into()))
        });
        assert!(result.is_err());
        assert_eq!(store.call(|c| get_device(c, &device(2))).unwrap(), None);
        assert_eq!(store.call(|c| enrolments(c, &device(2))).unwrap(), []);
        store.call(|c| put_device(c, &record(3), None)).unwrap();
        assert!(store.call(|c| get_device(c, &device(3))).unwrap().is_some());
    }

    #[test]
    fn the_stored_mark_only_rises_and_enrolling_again_keeps_it_and_the_history() {
        let store = Store::open_in_memory().unwrap();
        store.call(|c| put_device(c, &record(4), Some("ro"))).unwrap();
        let raise = |m: SeenClock| store.call(move |c| raise_clock_mark(c, &device(4), m)).unwrap();
        let mark = || store.call(|c| get_device(c, &device(4))).unwrap().unwrap().1;
        assert_eq!(mark(), None);
        raise(seen(2, 0, 100, 10));
        assert_eq!(mark(), Some(seen(2, 0, 100, 10)));
        // Lower or equal marks, written late, leave it.
        for lower in [seen(1, 9, 999, 20), seen(2, 0, 99, 30), seen(2, 0, 100, 40)] {
            raise(lower);
            assert_eq!(mark(), Some(seen(2, 0, 100, 10)));
        }
        raise(seen(2, 1, 5, 50));
        assert_eq!(mark(), Some(seen(2, 1, 5, 50)));
        // A new enrolment (another AK) neither lowers the mark nor forgets the first one.
        let mut again = record(4);
        again.ak_name = vec![9];
        again.ak_public = vec![8];
        again.enrolled_at = 6;
        store.call(move |c| put_device(c, &again, None)).unwrap();
        assert_eq!(mark(), Some(seen(2, 1, 5, 50)));
        raise(seen(0, 0, 0, 60));
        assert_eq!(mark(), Some(seen(2, 1, 5, 50)));
        let history = store.call(|c| enrolments(c, &device(4))).unwrap();
        assert_eq!(
            history,
            [
                EnrolmentRecord {
                    ak_name: vec![4],
                    ak_public: vec![3],
                    enrolled_at: 5,
                    requested_by: Some("ro".into())
                },
                EnrolmentRecord {
                    ak_name: vec![9],
                    ak_public: vec![8],
                    enrolled_at: 6,
                    requested_by: None
                },
            ]
        );
    }

    #[test]
    fn a_partly_missing_mark_is_corrupt() {
        let store = Store::open_in_memory().unwrap();
        store.call(|c| put_device(c, &record(5), None)).unwrap();
        store.call(|c| Ok(c.execute("UPDATE devices SET reset_count = 1", [])?)).unwrap();
        assert!(matches!(store.call(|c| get_device(c, &device(5))), Err(StoreError::Corrupt(_))));
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
                        store.call(move |c| put_device(c, &r, None)).unwrap();
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
