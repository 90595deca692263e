//! Challenges (DESIGN.md §2 step 8): 32-byte nonces from the system CSPRNG, bound to one
//! device and one appraisal policy, valid for a short time (60 s by default), used at most
//! once. They live in SQLite, so a restart cannot make a used nonce usable again.
//!
//! A nonce is looked up by its SHA-256, then compared with the presented one in constant
//! time, so the lookup's timing depends on a hash, not on how many nonce bytes matched.
//! Consuming marks it used in the same transaction that raises the device's TPM-clock
//! high-water mark; the caller gets the answer only after that transaction committed (with
//! fsync), and signs an EAR only then. Issuing does not wait for the disk: a nonce lost in
//! a crash is unknown afterwards, which fails closed.

use std::time::{Duration, SystemTime};

use protocol::{DeviceId, Nonce};
use rusqlite::{OptionalExtension, params};

use crate::enrol::sha256;
use crate::error::{AppraisalError, ChallengeError, Error, StoreError};
use crate::store::{self, ClockMark, Store};

/// Default lifetime of a nonce.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Default bound on unused, unexpired nonces per device.
pub const DEFAULT_MAX_OUTSTANDING: u32 = 16;
/// How long used and expired nonces are kept before they are deleted: long enough that a
/// replay is reported as a replay; after that it is reported as unknown (still refused).
pub const RETENTION: Duration = Duration::from_secs(3600);

/// A nonce as issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub device_id: DeviceId,
    pub nonce: Nonce,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
    pub policy_id: String,
}

/// What consuming a nonce tells the appraisal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumed {
    pub policy_id: String,
    /// The device's TPM-clock high-water mark before this evidence.
    pub previous_clock: Option<ClockMark>,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Issues a nonce for `device` under `policy_id`.
pub(crate) fn issue(
    store: &Store,
    device: &DeviceId,
    policy_id: &str,
    ttl: Duration,
    max_outstanding: u32,
    now: SystemTime,
    cleanup: bool,
) -> Result<Challenge, Error> {
    let nonce = Nonce::random().map_err(|_| Error::Random)?;
    let now_s = protocol::ear::unix(now);
    let challenge = Challenge {
        device_id: device.clone(),
        nonce,
        expires_at: now_s.saturating_add(ttl.as_secs()),
        policy_id: policy_id.to_owned(),
    };
    let c2 = challenge.clone();
    // Lazy: a crash that loses an issued nonce makes it unknown, which fails closed.
    let outcome = store.call_lazy(move |c| -> Result<Result<(), ChallengeError>, StoreError> {
        if cleanup {
            c.prepare_cached("DELETE FROM nonces WHERE expires_at < ?1")?
                .execute(params![i64_of(now_s.saturating_sub(RETENTION.as_secs()))])?;
        }
        let outstanding: i64 = c
            .prepare_cached(
                "SELECT count(*) FROM nonces WHERE device_id = ?1 AND used_at IS NULL AND expires_at > ?2",
            )?
            .query_row(params![c2.device_id.as_bytes(), i64_of(now_s)], |r| r.get(0))?;
        if outstanding >= i64::from(max_outstanding) {
            return Ok(Err(ChallengeError::TooManyOutstanding {
                device: c2.device_id.clone(),
                max: max_outstanding,
            }));
        }
        insert(c, &c2)?;
        Ok(Ok(()))
    })?;
    outcome?;
    Ok(challenge)
}

fn insert(c: &rusqlite::Connection, ch: &Challenge) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO nonces (nonce_hash, nonce, device_id, policy_id, expires_at, used_at)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
    )?
    .execute(params![
        sha256(ch.nonce.as_bytes()),
        ch.nonce.as_bytes().as_slice(),
        ch.device_id.as_bytes(),
        ch.policy_id,
        i64_of(ch.expires_at)
    ])?;
    Ok(())
}

/// Registers a nonce chosen by the caller as freshly issued. Only for benchmarks and tests
/// that appraise recorded evidence again; the service never calls it.
pub(crate) fn reissue(store: &Store, challenge: Challenge) -> Result<(), Error> {
    store.call_lazy(move |c| insert(c, &challenge))?;
    Ok(())
}

/// Consumes `nonce` for `device` and raises the device's clock mark to `seen`; returns the
/// policy the nonce was issued under and the mark as it was before.
pub(crate) fn consume(
    store: &Store,
    device: &DeviceId,
    nonce: &Nonce,
    seen: ClockMark,
    now: SystemTime,
) -> Result<Consumed, Error> {
    let device = device.clone();
    let nonce = *nonce;
    let now_s = protocol::ear::unix(now);
    let outcome = store.call(move |c| -> Result<Result<Consumed, AppraisalError>, StoreError> {
        let hash = sha256(nonce.as_bytes());
        let row = c
            .prepare_cached(
                "SELECT nonce, device_id, policy_id, expires_at, used_at FROM nonces WHERE nonce_hash = ?1",
            )?
            .query_row(params![hash], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .optional()?;
        let Some((stored, stored_device, policy_id, expires_at, used_at)) = row else {
            return Ok(Err(AppraisalError::NonceUnknown));
        };
        let stored = Nonce::from_bytes(&stored).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Constant time (Nonce's PartialEq).
        if stored != nonce {
            return Ok(Err(AppraisalError::NonceUnknown));
        }
        if stored_device != device.as_bytes() {
            return Ok(Err(AppraisalError::NonceForAnotherDevice));
        }
        if used_at.is_some() {
            return Ok(Err(AppraisalError::NonceReused));
        }
        if expires_at <= i64_of(now_s) {
            return Ok(Err(AppraisalError::NonceExpired));
        }
        let updated = c
            .prepare_cached("UPDATE nonces SET used_at = ?2 WHERE nonce_hash = ?1 AND used_at IS NULL")?
            .execute(params![hash, i64_of(now_s)])?;
        if updated != 1 {
            return Ok(Err(AppraisalError::NonceReused));
        }
        let previous_clock = store::raise_clock_mark(c, &device, seen)?;
        Ok(Ok(Consumed { policy_id, previous_clock }))
    })?;
    Ok(outcome?)
}
