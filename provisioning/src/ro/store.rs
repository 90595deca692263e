//! The RO's durable state (DESIGN.md §5): campaigns, each device's state machine, step
//! timings and the AKs the PVA enrolled. One SQLite file, WAL, synchronous=FULL, created on
//! first start; every transition is one transaction, so a crash leaves either the old or
//! the new state, and a restarted RO resumes where it stopped.
//!
//! No plaintext profile is ever stored: the DPF keeps only the encrypted bundle.

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use protocol::{DeviceId, Iccid};
use rusqlite::{Connection, OptionalExtension, params};

use super::error::RoError;
use super::state::DeviceState;

const SCHEMA_VERSION: i64 = 1;

const ADD_STEP_TIME: &str =
    "INSERT INTO step_times (campaign_id, device_id, step, ms) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (campaign_id, device_id, step) DO UPDATE SET ms = ms + excluded.ms";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS campaigns (
    id TEXT PRIMARY KEY,
    from_op TEXT NOT NULL,
    to_op TEXT NOT NULL,
    state TEXT NOT NULL,
    failure TEXT,
    created_ms INTEGER NOT NULL,
    step2_ms INTEGER,
    step3_ms INTEGER
);
CREATE TABLE IF NOT EXISTS devices (
    campaign_id TEXT NOT NULL REFERENCES campaigns(id),
    device_id TEXT NOT NULL,
    iccid TEXT NOT NULL,
    state_name TEXT NOT NULL,
    state BLOB NOT NULL,
    final INTEGER NOT NULL DEFAULT 0,
    reported INTEGER NOT NULL DEFAULT 0,
    since_ms INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, device_id)
);
CREATE INDEX IF NOT EXISTS devices_by_device ON devices (device_id, final);
CREATE TABLE IF NOT EXISTS step_times (
    campaign_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    ms INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, device_id, step)
);
CREATE TABLE IF NOT EXISTS enrolled (
    device_id TEXT PRIMARY KEY,
    ak_public BLOB NOT NULL
);
";

/// A campaign as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignRow {
    pub id: String,
    pub from: String,
    pub to: String,
    /// `preparing`, `ready` or `failed`.
    pub state: String,
    pub failure: Option<String>,
    /// Durations of the campaign-wide steps 2 and 3.
    pub step2_ms: Option<u64>,
    pub step3_ms: Option<u64>,
}

/// One device of a campaign as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRow {
    pub campaign_id: String,
    pub device_id: DeviceId,
    pub iccid: Iccid,
    pub state: DeviceState,
    pub reported: bool,
    /// When the device entered its current state (Unix ms): the start of the next step.
    pub since_ms: u64,
    pub steps: Vec<(u8, u64)>,
}

/// The RO's store.
#[derive(Debug)]
pub struct RoStore {
    conn: Mutex<Connection>,
}

impl RoStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, RoError> {
        let conn = Connection::open(path).map_err(|e| RoError::store("open", e))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(|e| RoError::store("configure", e))?;
        conn.execute_batch(SCHEMA).map_err(|e| RoError::store("create schema", e))?;
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
            .optional()
            .map_err(|e| RoError::store("read schema version", e))?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(|e| RoError::store("write schema version", e))?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(RoError::Store(format!(
                    "{} has schema version {other}; this RO understands {SCHEMA_VERSION}",
                    path.display()
                )));
            }
        }
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, RoError> {
        self.conn.lock().map_err(|_| RoError::Store("store lock poisoned".into()))
    }

    /// Creates a campaign in state `preparing` with its devices `pending`. Refuses a device
    /// that is still in an unfinished campaign: a device is switched by one campaign at a time.
    pub fn create_campaign(
        &self,
        id: &str,
        from: &str,
        to: &str,
        devices: &[(DeviceId, Iccid)],
    ) -> Result<(), RoError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| RoError::store("begin", e))?;
        for (device, _) in devices {
            let busy: Option<String> = tx
                .query_row(
                    "SELECT d.campaign_id FROM devices d JOIN campaigns c ON c.id = d.campaign_id
                     WHERE d.device_id = ?1 AND d.final = 0 AND c.state != 'failed'",
                    [device.to_hex()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| RoError::store("check device", e))?;
            if let Some(campaign) = busy {
                return Err(RoError::DeviceBusy { device: device.clone(), campaign });
            }
        }
        let now = now_ms();
        tx.execute(
            "INSERT INTO campaigns (id, from_op, to_op, state, created_ms) VALUES (?1, ?2, ?3, 'preparing', ?4)",
            params![id, from, to, now as i64],
        )
        .map_err(|e| RoError::store("insert campaign", e))?;
        let pending = encode(&DeviceState::Pending)?;
        for (device, iccid) in devices {
            tx.execute(
                "INSERT INTO devices (campaign_id, device_id, iccid, state_name, state, since_ms)
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?5)",
                params![id, device.to_hex(), iccid.as_str(), pending, now as i64],
            )
            .map_err(|e| RoError::store("insert device", e))?;
        }
        tx.commit().map_err(|e| RoError::store("commit", e))
    }

    /// Marks the campaign ready (steps 2–3 done) or failed, with the campaign-wide timings.
    pub fn finish_preparation(
        &self,
        id: &str,
        outcome: Result<(u64, u64), String>,
    ) -> Result<(), RoError> {
        let conn = self.conn()?;
        match outcome {
            // The devices' clocks start now: their first step is the TRE activation.
            Ok((step2, step3)) => conn
                .execute(
                    "UPDATE devices SET since_ms = ?2 WHERE campaign_id = ?1",
                    params![id, now_ms() as i64],
                )
                .and_then(|_| {
                    conn.execute(
                        "UPDATE campaigns SET state = 'ready', step2_ms = ?2, step3_ms = ?3 WHERE id = ?1",
                        params![id, step2 as i64, step3 as i64],
                    )
                }),
            Err(reason) => conn.execute(
                "UPDATE campaigns SET state = 'failed', failure = ?2 WHERE id = ?1",
                params![id, reason],
            ),
        }
        .map_err(|e| RoError::store("update campaign", e))?;
        Ok(())
    }

    pub fn campaign(&self, id: &str) -> Result<Option<CampaignRow>, RoError> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT id, from_op, to_op, state, failure, step2_ms, step3_ms FROM campaigns WHERE id = ?1",
            [id],
            |r| {
                Ok(CampaignRow {
                    id: r.get(0)?,
                    from: r.get(1)?,
                    to: r.get(2)?,
                    state: r.get(3)?,
                    failure: r.get(4)?,
                    step2_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                    step3_ms: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                })
            },
        )
        .optional()
        .map_err(|e| RoError::store("read campaign", e))
    }

    /// Every device of a campaign, with its step timings.
    pub fn campaign_devices(&self, id: &str) -> Result<Vec<DeviceRow>, RoError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT campaign_id, device_id, iccid, state, reported, since_ms FROM devices
                 WHERE campaign_id = ?1 ORDER BY rowid",
            )
            .map_err(|e| RoError::store("read devices", e))?;
        let rows = stmt
            .query_map([id], raw_device)
            .map_err(|e| RoError::store("read devices", e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RoError::store("read devices", e))?;
        drop(stmt);
        rows.into_iter().map(|raw| device_row(&conn, raw)).collect()
    }

    /// The device's row in its current campaign: the unfinished one in a ready campaign,
    /// or else the most recent one.
    pub fn device(&self, device: &DeviceId) -> Result<Option<DeviceRow>, RoError> {
        let conn = self.conn()?;
        let raw = conn
            .query_row(
                "SELECT d.campaign_id, d.device_id, d.iccid, d.state, d.reported, d.since_ms
                 FROM devices d JOIN campaigns c ON c.id = d.campaign_id
                 WHERE d.device_id = ?1 AND c.state = 'ready'
                 ORDER BY d.final ASC, d.rowid DESC LIMIT 1",
                [device.to_hex()],
                raw_device,
            )
            .optional()
            .map_err(|e| RoError::store("read device", e))?;
        raw.map(|raw| device_row(&conn, raw)).transpose()
    }

    /// Moves a device to `state`; `completed` records how long the step that brought it
    /// there took (from when the device entered its previous state).
    pub fn transition(
        &self,
        campaign: &str,
        device: &DeviceId,
        state: &DeviceState,
        completed: &[u8],
    ) -> Result<(), RoError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| RoError::store("begin", e))?;
        let since: i64 = tx
            .query_row(
                "SELECT since_ms FROM devices WHERE campaign_id = ?1 AND device_id = ?2",
                params![campaign, device.to_hex()],
                |r| r.get(0),
            )
            .map_err(|e| RoError::store("read device", e))?;
        let now = now_ms() as i64;
        // A transition that completes several steps at once splits the time evenly: the
        // steps ran in one request and cannot be told apart from outside.
        let share =
            if completed.is_empty() { 0 } else { (now - since).max(0) / completed.len() as i64 };
        for step in completed {
            tx.execute(ADD_STEP_TIME, params![campaign, device.to_hex(), i64::from(*step), share])
                .map_err(|e| RoError::store("record step", e))?;
        }
        tx.execute(
            "UPDATE devices SET state_name = ?3, state = ?4, final = ?5, since_ms = ?6
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
        tx.commit().map_err(|e| RoError::store("commit", e))
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

    /// Notes that both operators received the device's final report.
    pub fn mark_reported(&self, campaign: &str, device: &DeviceId) -> Result<(), RoError> {
        self.conn()?
            .execute(
                "UPDATE devices SET reported = 1 WHERE campaign_id = ?1 AND device_id = ?2",
                params![campaign, device.to_hex()],
            )
            .map_err(|e| RoError::store("mark reported", e))?;
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

    pub fn set_enrolled(&self, device: &DeviceId, ak_public: &[u8]) -> Result<(), RoError> {
        self.conn()?
            .execute(
                "INSERT OR REPLACE INTO enrolled (device_id, ak_public) VALUES (?1, ?2)",
                params![device.to_hex(), ak_public],
            )
            .map_err(|e| RoError::store("write enrolment", e))?;
        Ok(())
    }
}

type RawDevice = (String, String, String, Vec<u8>, bool, i64);

fn raw_device(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDevice> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn device_row(conn: &Connection, raw: RawDevice) -> Result<DeviceRow, RoError> {
    let (campaign_id, device, iccid, state, reported, since) = raw;
    let device_id: DeviceId =
        device.parse().map_err(|e| RoError::Store(format!("device id: {e}")))?;
    let mut stmt = conn
        .prepare("SELECT step, ms FROM step_times WHERE campaign_id = ?1 AND device_id = ?2 ORDER BY step")
        .map_err(|e| RoError::store("read steps", e))?;
    let steps = stmt
        .query_map(params![campaign_id, device], |r| {
            Ok((r.get::<_, i64>(0)? as u8, r.get::<_, i64>(1)? as u64))
        })
        .map_err(|e| RoError::store("read steps", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RoError::store("read steps", e))?;
    Ok(DeviceRow {
        campaign_id,
        device_id,
        iccid: iccid.parse().map_err(|e| RoError::Store(format!("ICCID: {e}")))?,
        state: ciborium::from_reader(state.as_slice())
            .map_err(|e| RoError::Store(format!("device state: {e}")))?,
        reported,
        since_ms: since.max(0) as u64,
        steps,
    })
}

fn encode(state: &DeviceState) -> Result<Vec<u8>, RoError> {
    let mut out = Vec::new();
    ciborium::into_writer(state, &mut out)
        .map_err(|e| RoError::Store(format!("encode state: {e}")))?;
    Ok(out)
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

    #[test]
    fn campaign_life_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.sqlite");
        let (d1, i1) = device(1);
        {
            let store = RoStore::open(&path).unwrap();
            store.create_campaign("c1", "mno-a", "mno-b", &[(d1.clone(), i1.clone())]).unwrap();
            assert!(store.device(&d1).unwrap().is_none(), "not ready yet");
            store.finish_preparation("c1", Ok((5, 7))).unwrap();
            let state = DeviceState::Failed { step: 8, reason: "x".into() };
            store.transition("c1", &d1, &state, &[4, 5]).unwrap();
        }
        let store = RoStore::open(&path).unwrap();
        let row = store.device(&d1).unwrap().unwrap();
        assert_eq!(row.state, DeviceState::Failed { step: 8, reason: "x".into() });
        assert_eq!(row.steps.iter().map(|s| s.0).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(store.campaign("c1").unwrap().unwrap().step3_ms, Some(7));
    }

    #[test]
    fn a_device_is_in_one_unfinished_campaign_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = RoStore::open(&dir.path().join("ro.sqlite")).unwrap();
        let (d1, i1) = device(1);
        store.create_campaign("c1", "mno-a", "mno-b", &[(d1.clone(), i1.clone())]).unwrap();
        let err =
            store.create_campaign("c2", "mno-a", "mno-b", &[(d1.clone(), i1.clone())]).unwrap_err();
        assert!(matches!(err, RoError::DeviceBusy { .. }));
        // nothing of c2 was written
        assert!(store.campaign("c2").unwrap().is_none());
        store.finish_preparation("c1", Ok((1, 1))).unwrap();
        store.transition("c1", &d1, &DeviceState::Switched, &[12]).unwrap();
        store.create_campaign("c3", "mno-b", "mno-a", &[(d1, i1)]).unwrap();
    }
}
