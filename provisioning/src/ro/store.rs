//! The RO's durable state (DESIGN.md §5): campaigns and the step of their creation, each
//! device's state machine, step timings, the AKs the PVA enrolled, and the outbox of
//! messages to peers. One SQLite file, WAL, synchronous=FULL; every transition is one
//! transaction together with the outbox messages it causes (the outbox pattern of a saga),
//! so a crash leaves either the old state or the new state with its messages, and a
//! restarted RO resumes where it stopped and delivers what it owes.
//!
//! No plaintext profile is ever stored: the DPF keeps only the encrypted bundle.

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use protocol::{DeviceId, Iccid};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::error::RoError;
use super::state::DeviceState;

const SCHEMA: storage::Schema = storage::Schema {
    role: "ro",
    version: 3,
    ddl: "
CREATE TABLE campaigns (
    id TEXT PRIMARY KEY,
    from_op TEXT NOT NULL,
    to_op TEXT NOT NULL,
    -- preparing, ready, completed, failed, cancelling, cancelled
    state TEXT NOT NULL,
    -- preparing: how many of the creation steps (announce from, announce to, prepare) are done
    prep_step INTEGER NOT NULL DEFAULT 0,
    failure TEXT,
    created_ms INTEGER NOT NULL,
    step2_ms INTEGER,
    step3_ms INTEGER
);
CREATE TABLE devices (
    campaign_id TEXT NOT NULL REFERENCES campaigns(id),
    device_id TEXT NOT NULL,
    iccid TEXT NOT NULL,
    state_name TEXT NOT NULL,
    state BLOB NOT NULL,
    final INTEGER NOT NULL DEFAULT 0,
    since_ms INTEGER NOT NULL,
    -- a transient failure of the step under way, retried from next_attempt_ms
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, device_id)
);
CREATE INDEX devices_by_device ON devices (device_id, final);
CREATE TABLE step_times (
    campaign_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    ms INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, device_id, step)
);
CREATE TABLE enrolled (
    device_id TEXT PRIMARY KEY,
    ak_public BLOB NOT NULL
);
CREATE TABLE bound_aks (
    device_id TEXT PRIMARY KEY,
    ak_public BLOB NOT NULL,
    bound_ms INTEGER NOT NULL
);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    peer TEXT NOT NULL,
    path TEXT NOT NULL,
    body BLOB NOT NULL,
    missing_ok INTEGER NOT NULL,
    campaign_id TEXT NOT NULL,
    device_id TEXT,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    delivered_ms INTEGER,
    dead INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_due ON outbox (delivered_ms, dead, next_attempt_ms);
CREATE INDEX outbox_by_device ON outbox (campaign_id, device_id);
",
};

/// Tables added since schema version 3, created at open where missing (a store of version 3
/// made by an earlier build gains them; nothing else changes).
const ADDED_TABLES: &str = "
CREATE TABLE IF NOT EXISTS idempotency_keys (
    caller TEXT NOT NULL,
    key TEXT NOT NULL,
    request_sha256 BLOB NOT NULL,
    campaign_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX IF NOT EXISTS campaigns_by_time ON campaigns (created_ms, id);
";

/// What [`RoStore::create_campaign`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New,
    /// The caller's idempotency key names this earlier campaign of the same request.
    Earlier(String),
}

/// A caller's `Idempotency-Key` and the SHA-256 of its request.
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    pub caller: &'a str,
    pub key: &'a str,
    pub request_sha256: &'a [u8],
}

/// A page of [`RoStore::campaigns_page`].
#[derive(Debug, Clone, Default)]
pub struct CampaignQuery<'a> {
    pub state: Option<&'a str>,
    /// Campaigns this operator is in (as `from` or `to`).
    pub operator: Option<&'a str>,
    /// The id of the last campaign of the previous page.
    pub after: Option<&'a str>,
    pub limit: usize,
}

const ADD_STEP_TIME: &str =
    "INSERT INTO step_times (campaign_id, device_id, step, ms) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (campaign_id, device_id, step) DO UPDATE SET ms = ms + excluded.ms";

/// A campaign as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignRow {
    pub id: String,
    pub from: String,
    pub to: String,
    /// `preparing`, `ready`, `completed`, `failed`, `cancelling` or `cancelled`.
    pub state: String,
    /// While preparing: the creation steps done (0–3).
    pub prep_step: u8,
    pub failure: Option<String>,
    pub created_ms: u64,
    /// Durations of the campaign-wide steps 2 and 3.
    pub step2_ms: Option<u64>,
    pub step3_ms: Option<u64>,
}

/// A transient failure of a device's current step, and when it is tried again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    pub attempts: u32,
    pub last_error: String,
    pub next_attempt_ms: u64,
}

/// One device of a campaign as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRow {
    pub campaign_id: String,
    pub device_id: DeviceId,
    pub iccid: Iccid,
    pub state: DeviceState,
    /// When the device entered its current state (Unix ms): the start of the next step.
    pub since_ms: u64,
    pub retry: Option<Retry>,
    pub steps: Vec<(u8, u64)>,
}

/// A message to a peer that changes its state, kept until the peer acknowledges it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Unique per message: a repeated write of the same message is one message.
    pub key: String,
    /// The operator it goes to.
    pub peer: String,
    pub path: String,
    /// JSON.
    pub body: Vec<u8>,
    /// A 404 from the peer counts as delivered (e.g. releasing a campaign it never heard of).
    pub missing_ok: bool,
    pub campaign_id: String,
    pub device_id: Option<DeviceId>,
}

/// The RO's store.
#[derive(Debug)]
pub struct RoStore {
    conn: Mutex<Connection>,
}

impl RoStore {
    /// What a start would find at `path`, without writing to it (`tresor serve ro --check`).
    pub fn check(path: &Path) -> Result<storage::StoreCheck, RoError> {
        storage::check_sqlite(path, &SCHEMA).map_err(|e| RoError::Store(e.to_string()))
    }

    /// Opens the store at `path`: creates it where no file exists (or, with `mode`
    /// [`storage::OpenMode::Init`], where an empty one does) and refuses a file that is not
    /// an RO store of this version.
    pub fn open(path: &Path, mode: storage::OpenMode) -> Result<Self, RoError> {
        let conn =
            storage::open_sqlite(path, &SCHEMA, mode).map_err(|e| RoError::Store(e.to_string()))?;
        conn.execute_batch("PRAGMA foreign_keys = ON;")
            .and_then(|()| conn.execute_batch(ADDED_TABLES))
            .map_err(|e| RoError::store("configure", e))?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    /// A store in memory only: not durable (`tresor serve ro --check`).
    pub fn open_in_memory() -> Result<Self, RoError> {
        let conn =
            storage::open_sqlite_in_memory(&SCHEMA).map_err(|e| RoError::Store(e.to_string()))?;
        conn.execute_batch("PRAGMA foreign_keys = ON;")
            .and_then(|()| conn.execute_batch(ADDED_TABLES))
            .map_err(|e| RoError::store("configure", e))?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    /// Whether the store answers a query (`/ready`).
    pub fn healthy(&self) -> bool {
        self.conn().is_ok_and(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).is_ok())
    }

    pub(super) fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, RoError> {
        self.conn.lock().map_err(|_| RoError::Store("store lock poisoned".into()))
    }

    /// Runs `f` in one write transaction, with the fault points of durable write `what`.
    pub(super) fn write<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, RoError>,
    ) -> Result<T, RoError> {
        fault(&format!("ro.{what}.before"))?;
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| RoError::store("begin", e))?;
        let out = f(&tx)?;
        tx.commit().map_err(|e| RoError::store("commit", e))?;
        drop(conn);
        fault(&format!("ro.{what}.after"))?;
        Ok(out)
    }

    /// Creates a campaign in state `preparing` with its devices `pending`. Refuses a device
    /// that is still in an unfinished campaign: a device is switched by one campaign at a time.
    pub fn create_campaign(
        &self,
        id: &str,
        from: &str,
        to: &str,
        devices: &[(DeviceId, Iccid)],
        idempotency: Option<Idempotency<'_>>,
    ) -> Result<Created, RoError> {
        self.write("campaign-created", |tx| {
            if let Some(i) = idempotency {
                let earlier: Option<(Vec<u8>, String)> = tx
                    .query_row(
                        "SELECT request_sha256, campaign_id FROM idempotency_keys
                         WHERE caller = ?1 AND key = ?2",
                        params![i.caller, i.key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(|e| RoError::store("check idempotency key", e))?;
                match earlier {
                    Some((hash, campaign)) if hash == i.request_sha256 => {
                        return Ok(Created::Earlier(campaign));
                    }
                    Some((_, campaign)) => {
                        return Err(RoError::IdempotencyKeyReused { key: i.key.into(), campaign });
                    }
                    None => {
                        tx.execute(
                            "INSERT INTO idempotency_keys (caller, key, request_sha256, campaign_id, created_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![i.caller, i.key, i.request_sha256, id, now_ms() as i64],
                        )
                        .map_err(|e| RoError::store("record idempotency key", e))?;
                    }
                }
            }
            for (device, _) in devices {
                let busy: Option<String> = tx
                    .query_row(
                        "SELECT campaign_id FROM devices WHERE device_id = ?1 AND final = 0",
                        [device.to_hex()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(|e| RoError::store("check device", e))?;
                if let Some(campaign) = busy {
                    return Err(RoError::DeviceBusy { device: device.clone(), campaign });
                }
            }
            let now = now_ms() as i64;
            tx.execute(
                "INSERT INTO campaigns (id, from_op, to_op, state, created_ms)
                 VALUES (?1, ?2, ?3, 'preparing', ?4)",
                params![id, from, to, now],
            )
            .map_err(|e| RoError::store("insert campaign", e))?;
            let pending = encode(&DeviceState::Pending)?;
            for (device, iccid) in devices {
                tx.execute(
                    "INSERT INTO devices (campaign_id, device_id, iccid, state_name, state, since_ms)
                     VALUES (?1, ?2, ?3, 'pending', ?4, ?5)",
                    params![id, device.to_hex(), iccid.as_str(), pending, now],
                )
                .map_err(|e| RoError::store("insert device", e))?;
            }
            Ok(Created::New)
        })
    }

    /// Campaigns matching `query`, oldest first, at most `query.limit`.
    pub fn campaigns_page(&self, query: &CampaignQuery<'_>) -> Result<Vec<CampaignRow>, RoError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached(&format!(
                "{CAMPAIGN_SELECT}
                 WHERE (?1 IS NULL OR state = ?1)
                   AND (?2 IS NULL OR from_op = ?2 OR to_op = ?2)
                   AND (?3 IS NULL OR (created_ms, id) >
                        (SELECT created_ms, id FROM campaigns WHERE id = ?3))
                 ORDER BY created_ms, id LIMIT ?4"
            ))
            .map_err(|e| RoError::store("read campaigns", e))?;
        stmt.query_map(
            params![query.state, query.operator, query.after, query.limit as i64],
            campaign_row,
        )
        .and_then(|rows| rows.collect())
        .map_err(|e| RoError::store("read campaigns", e))
    }

    /// A campaign's devices counted by state.
    pub fn campaign_counts(&self, id: &str) -> Result<Vec<(String, u32)>, RoError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT state_name, COUNT(*) FROM devices WHERE campaign_id = ?1 GROUP BY state_name",
            )
            .map_err(|e| RoError::store("count devices", e))?;
        stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| RoError::store("count devices", e))
    }

    /// How many of a campaign's devices are not final yet: a COUNT on the `final` column
    /// (kept with every state write), so that the outbox loop's completion check costs the
    /// same at 1,000 devices as at one instead of decoding every device's state.
    pub fn campaign_unfinished(&self, id: &str) -> Result<u64, RoError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached("SELECT COUNT(*) FROM devices WHERE campaign_id = ?1 AND final = 0")
            .map_err(|e| RoError::store("count devices", e))?;
        stmt.query_row([id], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| RoError::store("count devices", e))
    }

    /// Devices of every campaign between their first step and their final state: the
    /// RO's admission control bounds it (`ro::admission`).
    pub fn devices_in_flight(&self) -> Result<u64, RoError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM devices WHERE final = 0 AND state_name != 'pending'",
            )
            .map_err(|e| RoError::store("count devices", e))?;
        stmt.query_row([], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| RoError::store("count devices", e))
    }

    /// One device of a campaign.
    pub fn campaign_device(
        &self,
        id: &str,
        device: &DeviceId,
    ) -> Result<Option<DeviceRow>, RoError> {
        let conn = self.conn()?;
        let raw = conn
            .query_row(
                &format!("{DEVICE_SELECT} WHERE d.campaign_id = ?1 AND d.device_id = ?2"),
                params![id, device.to_hex()],
                raw_device,
            )
            .optional()
            .map_err(|e| RoError::store("read device", e))?;
        raw.map(|raw| device_row(&conn, raw)).transpose()
    }

    /// Records that creation step `done` (1–3) of a preparing campaign completed, with the
    /// campaign-wide timings when known; after the third the campaign is ready and its
    /// devices' clocks start.
    pub fn prepared_step(
        &self,
        id: &str,
        done: u8,
        step2_ms: Option<u64>,
        step3_ms: Option<u64>,
    ) -> Result<(), RoError> {
        self.write(&format!("campaign-step-{done}"), |tx| {
            tx.execute(
                "UPDATE campaigns SET prep_step = ?2, step2_ms = COALESCE(?3, step2_ms),
                        step3_ms = COALESCE(?4, step3_ms)
                 WHERE id = ?1 AND state = 'preparing'",
                params![id, done, step2_ms.map(|v| v as i64), step3_ms.map(|v| v as i64)],
            )
            .map_err(|e| RoError::store("update campaign", e))?;
            if done >= 3 {
                tx.execute(
                    "UPDATE campaigns SET state = 'ready' WHERE id = ?1 AND state = 'preparing'",
                    [id],
                )
                .map_err(|e| RoError::store("update campaign", e))?;
                tx.execute(
                    "UPDATE devices SET since_ms = ?2 WHERE campaign_id = ?1",
                    params![id, now_ms() as i64],
                )
                .map_err(|e| RoError::store("update devices", e))?;
            }
            Ok(())
        })
    }

    /// Ends a campaign that never became ready, or a cancelled one once its devices are
    /// final: `state` (`failed` or `cancelled`), every device still pending rolled back
    /// (none of them received a command), and the `messages` that release the campaign at
    /// the operators.
    /// `reports(device)` gives each such device's final reports, queued in the same
    /// transaction.
    pub fn close_campaign(
        &self,
        id: &str,
        state: &str,
        failure: &str,
        reports: impl Fn(&DeviceId) -> Result<Vec<OutboxMessage>, RoError>,
        finished: &[OutboxMessage],
    ) -> Result<(), RoError> {
        self.write(&format!("campaign-{state}"), |tx| {
            for m in finished {
                insert_message(tx, m)?;
            }
            tx.execute(
                "UPDATE campaigns SET state = ?2, failure = ?3 WHERE id = ?1",
                params![id, state, failure],
            )
            .map_err(|e| RoError::store("update campaign", e))?;
            let pending: Vec<String> = tx
                .prepare("SELECT device_id FROM devices WHERE campaign_id = ?1 AND state_name = 'pending'")
                .and_then(|mut stmt| stmt.query_map([id], |r| r.get(0))?.collect())
                .map_err(|e| RoError::store("read devices", e))?;
            let rolled = encode(&DeviceState::RolledBack { step: 4, reason: failure.into() })?;
            for device in pending {
                tx.execute(
                    "UPDATE devices SET state_name = 'rolled-back', state = ?3, final = 1, since_ms = ?4
                     WHERE campaign_id = ?1 AND device_id = ?2",
                    params![id, device, rolled, now_ms() as i64],
                )
                .map_err(|e| RoError::store("update devices", e))?;
                let device: DeviceId =
                    device.parse().map_err(|e| RoError::Store(format!("device id: {e}")))?;
                for m in reports(&device)? {
                    insert_message(tx, &m)?;
                }
            }
            Ok(())
        })
    }

    /// Sets a campaign's state (`cancelling`, `completed`).
    pub fn set_campaign_state(&self, id: &str, state: &str) -> Result<(), RoError> {
        self.set_campaign_state_with(id, state, &[])
    }

    /// [`RoStore::set_campaign_state`] with `messages` queued in the same transaction.
    pub fn set_campaign_state_with(
        &self,
        id: &str,
        state: &str,
        messages: &[OutboxMessage],
    ) -> Result<(), RoError> {
        self.write(&format!("campaign-{state}"), |tx| {
            tx.execute("UPDATE campaigns SET state = ?2 WHERE id = ?1", params![id, state])
                .map_err(|e| RoError::store("update campaign", e))?;
            for m in messages {
                insert_message(tx, m)?;
            }
            Ok(())
        })
    }

    pub fn campaign(&self, id: &str) -> Result<Option<CampaignRow>, RoError> {
        let conn = self.conn()?;
        conn.query_row(&format!("{CAMPAIGN_SELECT} WHERE id = ?1"), [id], campaign_row)
            .optional()
            .map_err(|e| RoError::store("read campaign", e))
    }

    /// Every campaign, oldest first.
    pub fn campaigns(&self) -> Result<Vec<CampaignRow>, RoError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(&format!("{CAMPAIGN_SELECT} ORDER BY created_ms, id"))
            .map_err(|e| RoError::store("read campaigns", e))?;
        stmt.query_map([], campaign_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| RoError::store("read campaigns", e))
    }

    /// Campaigns in `state`, oldest first.
    pub fn campaigns_in(&self, state: &str) -> Result<Vec<CampaignRow>, RoError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(&format!("{CAMPAIGN_SELECT} WHERE state = ?1 ORDER BY created_ms"))
            .map_err(|e| RoError::store("read campaigns", e))?;
        stmt.query_map([state], campaign_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| RoError::store("read campaigns", e))
    }

    /// Every device of a campaign, with its step timings.
    pub fn campaign_devices(&self, id: &str) -> Result<Vec<DeviceRow>, RoError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(&format!("{DEVICE_SELECT} WHERE d.campaign_id = ?1 ORDER BY d.rowid"))
            .map_err(|e| RoError::store("read devices", e))?;
        let rows = stmt
            .query_map([id], raw_device)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| RoError::store("read devices", e))?;
        drop(stmt);
        rows.into_iter().map(|raw| device_row(&conn, raw)).collect()
    }

    /// The device's row in its current campaign: the unfinished one in a campaign past its
    /// preparation, or else the most recent one.
    pub fn device(&self, device: &DeviceId) -> Result<Option<DeviceRow>, RoError> {
        let conn = self.conn()?;
        let raw = conn
            .query_row(
                &format!(
                    "{DEVICE_SELECT} JOIN campaigns c ON c.id = d.campaign_id
                     WHERE d.device_id = ?1 AND c.state != 'preparing'
                     ORDER BY d.final ASC, d.rowid DESC LIMIT 1"
                ),
                [device.to_hex()],
                raw_device,
            )
            .optional()
            .map_err(|e| RoError::store("read device", e))?;
        raw.map(|raw| device_row(&conn, raw)).transpose()
    }

    /// Moves a device to `state` and queues `messages`, in one transaction; `completed`
    /// records how long the steps that brought it there took (from when the device entered
    /// its previous state). Clears a pending retry: the step moved on.
    pub fn transition(
        &self,
        campaign: &str,
        device: &DeviceId,
        state: &DeviceState,
        completed: &[u8],
        messages: &[OutboxMessage],
    ) -> Result<(), RoError> {
        self.write(state.name(), |tx| {
            update_device(tx, campaign, device, state, completed)?;
            for m in messages {
                insert_message(tx, m)?;
            }
            Ok(())
        })
    }

    /// Notes a transient failure of the device's current step; it is tried again from
    /// `next_attempt_ms`.
    pub fn note_retry(
        &self,
        campaign: &str,
        device: &DeviceId,
        error: &str,
        next_attempt_ms: u64,
    ) -> Result<(), RoError> {
        self.conn()?
            .execute(
                "UPDATE devices SET attempts = attempts + 1, last_error = ?3, next_attempt_ms = ?4
                 WHERE campaign_id = ?1 AND device_id = ?2",
                params![campaign, device.to_hex(), error, next_attempt_ms as i64],
            )
            .map_err(|e| RoError::store("note retry", e))?;
        Ok(())
    }

    /// Adds `ms` to a step's time (a step may run in several requests: its parts add up).
    pub fn record_step(
        &self,
        campaign: &str,
        device: &DeviceId,
        step: u8,
        ms: u64,
    ) -> Result<(), RoError> {
        self.conn()?
            .execute(ADD_STEP_TIME, params![campaign, device.to_hex(), i64::from(step), ms as i64])
            .map_err(|e| RoError::store("record step", e))?;
        Ok(())
    }

    /// The AK the PVA enrolled for `device`, if the RO relayed its enrolment.
    pub fn enrolled_ak(&self, device: &DeviceId) -> Result<Option<Vec<u8>>, RoError> {
        self.conn()?
            .query_row(
                "SELECT ak_public FROM enrolled WHERE device_id = ?1",
                [device.to_hex()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| RoError::store("read enrolment", e))
    }

    /// The AK the device channel bound to `device` (`protocol::device_auth`): the key every
    /// request of the device must be signed with.
    pub fn bound_ak(&self, device: &DeviceId) -> Result<Option<Vec<u8>>, RoError> {
        self.conn()?
            .query_row(
                "SELECT ak_public FROM bound_aks WHERE device_id = ?1",
                [device.to_hex()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| RoError::store("read bound AK", e))
    }

    /// Binds `ak_public` to `device` after the device proved, by credential activation, that
    /// the AK lives beside the device's EK. A new proof replaces an older binding (a TPM
    /// whose AK was recreated).
    pub fn bind_ak(&self, device: &DeviceId, ak_public: &[u8]) -> Result<(), RoError> {
        fault("ro.bind-ak.before")?;
        self.conn()?
            .execute(
                "INSERT OR REPLACE INTO bound_aks (device_id, ak_public, bound_ms) VALUES (?1, ?2, ?3)",
                params![device.to_hex(), ak_public, now_ms() as i64],
            )
            .map_err(|e| RoError::store("bind AK", e))?;
        fault("ro.bind-ak.after")
    }

    /// Records the enrolled AK and moves the device on, with `messages`, in one transaction.
    pub fn set_enrolled(
        &self,
        campaign: &str,
        device: &DeviceId,
        ak_public: &[u8],
        messages: &[OutboxMessage],
    ) -> Result<(), RoError> {
        self.write(DeviceState::Enrolled.name(), |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO enrolled (device_id, ak_public) VALUES (?1, ?2)",
                params![device.to_hex(), ak_public],
            )
            .map_err(|e| RoError::store("write enrolment", e))?;
            for m in messages {
                insert_message(tx, m)?;
            }
            update_device(tx, campaign, device, &DeviceState::Enrolled, &[7])
        })
    }
}

/// The device's row moved to `state` (see [`RoStore::transition`]).
fn update_device(
    tx: &Transaction<'_>,
    campaign: &str,
    device: &DeviceId,
    state: &DeviceState,
    completed: &[u8],
) -> Result<(), RoError> {
    let since: i64 = tx
        .query_row(
            "SELECT since_ms FROM devices WHERE campaign_id = ?1 AND device_id = ?2",
            params![campaign, device.to_hex()],
            |r| r.get(0),
        )
        .map_err(|e| RoError::store("read device", e))?;
    let now = now_ms() as i64;
    // A transition that completes several steps at once splits the time evenly: the steps
    // ran in one request and cannot be told apart from outside.
    let share = match completed.len() {
        0 => 0,
        n => (now - since).max(0) / n as i64,
    };
    for step in completed {
        tx.execute(ADD_STEP_TIME, params![campaign, device.to_hex(), i64::from(*step), share])
            .map_err(|e| RoError::store("record step", e))?;
    }
    tx.execute(
        "UPDATE devices SET state_name = ?3, state = ?4, final = ?5, since_ms = ?6,
                attempts = 0, last_error = NULL, next_attempt_ms = 0
         WHERE campaign_id = ?1 AND device_id = ?2",
        params![
            campaign,
            device.to_hex(),
            state.name(),
            encode(state)?,
            i64::from(state.is_final()),
            now
        ],
    )
    .map_err(|e| RoError::store("update device", e))?;
    Ok(())
}

const CAMPAIGN_SELECT: &str = "SELECT id, from_op, to_op, state, prep_step, failure, created_ms,
    step2_ms, step3_ms FROM campaigns";

fn campaign_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CampaignRow> {
    Ok(CampaignRow {
        id: r.get(0)?,
        from: r.get(1)?,
        to: r.get(2)?,
        state: r.get(3)?,
        prep_step: r.get::<_, i64>(4)?.clamp(0, 3) as u8,
        failure: r.get(5)?,
        created_ms: r.get::<_, i64>(6)?.max(0) as u64,
        step2_ms: r.get::<_, Option<i64>>(7)?.map(|v| v.max(0) as u64),
        step3_ms: r.get::<_, Option<i64>>(8)?.map(|v| v.max(0) as u64),
    })
}

fn insert_message(tx: &Transaction<'_>, m: &OutboxMessage) -> Result<(), RoError> {
    let now = now_ms() as i64;
    tx.execute(
        "INSERT INTO outbox (key, peer, path, body, missing_ok, campaign_id, device_id,
                             created_ms, next_attempt_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) ON CONFLICT (key) DO NOTHING",
        params![
            m.key,
            m.peer,
            m.path,
            m.body,
            m.missing_ok,
            m.campaign_id,
            m.device_id.as_ref().map(DeviceId::to_hex),
            now
        ],
    )
    .map_err(|e| RoError::store("queue message", e))?;
    Ok(())
}

const DEVICE_SELECT: &str = "SELECT d.campaign_id, d.device_id, d.iccid, d.state, d.since_ms,
    d.attempts, d.last_error, d.next_attempt_ms FROM devices d";

type RawDevice = (String, String, String, Vec<u8>, i64, i64, Option<String>, i64);

fn raw_device(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDevice> {
    RawDevice::try_from(r)
}

fn device_row(conn: &Connection, raw: RawDevice) -> Result<DeviceRow, RoError> {
    let (campaign_id, device, iccid, state, since, attempts, last_error, next_attempt) = raw;
    let device_id: DeviceId =
        device.parse().map_err(|e| RoError::Store(format!("device id: {e}")))?;
    let mut stmt = conn
        .prepare(
            "SELECT step, ms FROM step_times WHERE campaign_id = ?1 AND device_id = ?2 ORDER BY step",
        )
        .map_err(|e| RoError::store("read steps", e))?;
    let steps = stmt
        .query_map(params![campaign_id, device], |r| {
            Ok((r.get::<_, i64>(0)?.clamp(0, 255) as u8, r.get::<_, i64>(1)?.max(0) as u64))
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| RoError::store("read steps", e))?;
    let retry = last_error.map(|last_error| Retry {
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        last_error,
        next_attempt_ms: next_attempt.max(0) as u64,
    });
    Ok(DeviceRow {
        campaign_id,
        device_id,
        iccid: iccid.parse().map_err(|e| RoError::Store(format!("ICCID: {e}")))?,
        state: ciborium::from_reader(state.as_slice())
            .map_err(|e| RoError::Store(format!("device state: {e}")))?,
        since_ms: since.max(0) as u64,
        retry,
        steps,
    })
}

fn encode(state: &DeviceState) -> Result<Vec<u8>, RoError> {
    let mut out = Vec::new();
    ciborium::into_writer(state, &mut out)
        .map_err(|e| RoError::Store(format!("encode state: {e}")))?;
    Ok(out)
}

fn fault(point: &str) -> Result<(), RoError> {
    protocol::fault::point(point).map_err(|e| RoError::Store(e.to_string()))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u8) -> (DeviceId, Iccid) {
        let mut name = vec![0x00, 0x0B];
        name.extend([n; 32]);
        (
            DeviceId::from_name(&name).unwrap(),
            Iccid::with_check_digit("8949000000000000001").unwrap(),
        )
    }

    fn open(path: &Path) -> RoStore {
        RoStore::open(path, storage::OpenMode::CreateIfMissing).unwrap()
    }

    fn report(key: &str, campaign: &str, device: &DeviceId) -> OutboxMessage {
        OutboxMessage {
            key: key.into(),
            peer: "mno-a".into(),
            path: "/v1/reports".into(),
            body: b"{}".to_vec(),
            missing_ok: false,
            campaign_id: campaign.into(),
            device_id: Some(device.clone()),
        }
    }

    #[test]
    fn campaign_life_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.sqlite");
        let (d1, i1) = device(1);
        {
            let store = open(&path);
            store
                .create_campaign("c1", "mno-a", "mno-b", &[(d1.clone(), i1.clone())], None)
                .unwrap();
            assert!(store.device(&d1).unwrap().is_none(), "not ready yet");
            store.prepared_step("c1", 1, None, None).unwrap();
            assert_eq!(store.campaign("c1").unwrap().unwrap().prep_step, 1);
            store.prepared_step("c1", 2, Some(5), None).unwrap();
            store.prepared_step("c1", 3, None, Some(7)).unwrap();
            let state = DeviceState::RolledBack { step: 8, reason: "x".into() };
            store.transition("c1", &d1, &state, &[4, 5], &[report("r1", "c1", &d1)]).unwrap();
        }
        let store = open(&path);
        let row = store.device(&d1).unwrap().unwrap();
        assert_eq!(row.state, DeviceState::RolledBack { step: 8, reason: "x".into() });
        assert_eq!(row.steps.iter().map(|s| s.0).collect::<Vec<_>>(), vec![4, 5]);
        let campaign = store.campaign("c1").unwrap().unwrap();
        assert_eq!(
            (campaign.state.as_str(), campaign.step2_ms, campaign.step3_ms),
            ("ready", Some(5), Some(7))
        );
        assert_eq!(store.outbox_due(u64::MAX, 10).unwrap().len(), 1, "the report survived");
    }

    #[test]
    fn unfinished_devices_are_counted_from_the_final_column() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("ro.sqlite"));
        let ((d1, i1), (d2, i2)) = (device(1), device(2));
        store.create_campaign("c1", "mno-a", "mno-b", &[(d1.clone(), i1), (d2, i2)], None).unwrap();
        assert_eq!(store.campaign_unfinished("c1").unwrap(), 2);
        let state = DeviceState::RolledBack { step: 8, reason: "x".into() };
        store.transition("c1", &d1, &state, &[], &[]).unwrap();
        assert_eq!(store.campaign_unfinished("c1").unwrap(), 1);
        assert_eq!(store.campaign_unfinished("no-such-campaign").unwrap(), 0);
    }

    #[test]
    fn a_device_is_in_one_unfinished_campaign_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("ro.sqlite"));
        let (d1, i1) = device(1);
        store.create_campaign("c1", "mno-a", "mno-b", &[(d1.clone(), i1.clone())], None).unwrap();
        let err = store
            .create_campaign("c2", "mno-a", "mno-b", &[(d1.clone(), i1.clone())], None)
            .unwrap_err();
        assert!(matches!(err, RoError::DeviceBusy { .. }));
        // nothing of c2 was written
        assert!(store.campaign("c2").unwrap().is_none());
        // a campaign that failed during creation releases its devices
        store.close_campaign("c1", "failed", "mno-b unreachable", |_| Ok(Vec::new()), &[]).unwrap();
        assert!(store.campaign_devices("c1").unwrap()[0].state.is_final());
        store.create_campaign("c3", "mno-b", "mno-a", &[(d1, i1)], None).unwrap();
    }

    #[test]
    fn the_outbox_keeps_a_message_until_it_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("ro.sqlite"));
        let (d1, i1) = device(1);
        store.create_campaign("c1", "mno-a", "mno-b", &[(d1.clone(), i1)], None).unwrap();
        store.prepared_step("c1", 3, None, None).unwrap();
        let m = report("report/c1/x/mno-a", "c1", &d1);
        store
            .transition("c1", &d1, &DeviceState::Switched, &[12], std::slice::from_ref(&m))
            .unwrap();
        // queued twice (a repeated transition): one message
        store.transition("c1", &d1, &DeviceState::Switched, &[], &[m]).unwrap();
        let due = store.outbox_due(now_ms(), 10).unwrap();
        assert_eq!(due.len(), 1);
        store.outbox_failed(due[0].id, "unreachable", now_ms() + 60_000, false).unwrap();
        assert!(store.outbox_due(now_ms(), 10).unwrap().is_empty(), "backing off");
        let state = store.outbox_state("c1", Some(&d1)).unwrap();
        assert_eq!((state.pending, state.delivered), (1, 0));
        assert_eq!(state.last_error.as_deref(), Some("unreachable"));
        store.outbox_delivered(due[0].id).unwrap();
        assert_eq!(store.outbox_state("c1", None).unwrap().delivered, 1);
        assert_eq!(store.outbox_next_due().unwrap(), None);
    }
}
