//! Leases (issue 15): what one of several RO instances sharing a store holds for a while —
//! a device's steps, a campaign's creation — so that the others wait for it, and take over
//! once it lapses if the instance died holding it.
//!
//! A lease is a row of `leases` (name, holder, until): taken by one conditional upsert that
//! succeeds only if the row is free, lapsed, or already this instance's, and given back by
//! deleting it. Nothing but PostgreSQL-compatible SQL (no advisory locks, which CockroachDB
//! lacks). A lone RO (SQLite) takes no leases: its in-process locks serialise everything.
//!
//! A lease lasts twice the peer timeout: a device's handling holds it across at most a few
//! peer calls, and must not lose it to another instance while a call is under way. An
//! instance killed while it held a lease delays that device or campaign by at most that long.

use std::time::Duration;

use protocol::DeviceId;
use ring::rand::SecureRandom;
use storage::args;

use super::Ro;
use super::error::RoError;
use super::store::{RoStore, ms, now_ms};

/// How often a waiter tries again for a lease another instance holds.
const RETRY: Duration = Duration::from_millis(20);
/// How long a device's request waits for its lease before the device is told to ask again.
const WAIT: Duration = Duration::from_secs(3);

/// A random name for this instance (the holder of its leases).
pub(super) fn instance_id() -> Result<String, RoError> {
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RoError::Config("no randomness for the instance id".into()))?;
    Ok(hex::encode(bytes))
}

/// A device's lock: this process's, and on a shared store the device's lease too.
pub(crate) struct DeviceGuard<'a> {
    _local: tokio::sync::OwnedMutexGuard<()>,
    lease: Option<(&'a Ro, String)>,
}

impl Drop for DeviceGuard<'_> {
    fn drop(&mut self) {
        if let Some((ro, name)) = self.lease.take()
            && let Err(e) = ro.store.release_lease(&name, &ro.instance)
        {
            // Not given back: it lapses by itself.
            tracing::warn!(lease = %name, error = %e, "lease not released");
        }
    }
}

impl Ro {
    /// How long a lease lasts.
    pub(super) fn lease_ttl(&self) -> Duration {
        self.config.peer_timeout() * 2
    }

    /// Adds the device's lease to its local lock (a shared store only), waiting a while for
    /// another instance that holds it.
    pub(super) async fn lease_device(
        &self,
        device: &DeviceId,
        local: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<DeviceGuard<'_>, RoError> {
        if !self.store.is_shared() {
            return Ok(DeviceGuard { _local: local, lease: None });
        }
        let name = format!("device:{}", device.to_hex());
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.store.take_lease(&name, &self.instance, self.lease_ttl())? {
                return Ok(DeviceGuard { _local: local, lease: Some((self, name)) });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RoError::Busy(
                    "another RO instance is handling this device; ask again".into(),
                ));
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Takes (or renews) the lease on driving a campaign's creation: false when another
    /// live instance drives it.
    pub(super) fn lease_campaign(&self, id: &str) -> Result<bool, RoError> {
        if !self.store.is_shared() {
            return Ok(true);
        }
        self.store.take_lease(&format!("campaign:{id}"), &self.instance, self.lease_ttl())
    }

    pub(super) fn release_campaign(&self, id: &str) {
        if self.store.is_shared()
            && let Err(e) = self.store.release_lease(&format!("campaign:{id}"), &self.instance)
        {
            tracing::warn!(campaign = %id, error = %e, "campaign lease not released");
        }
    }
}

impl RoStore {
    /// Takes lease `name` for `holder` until `ttl` from now if it is free, lapsed or
    /// `holder`'s already; whether it did.
    pub(super) fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, RoError> {
        let now = now_ms();
        let until = now.saturating_add(ttl.as_millis() as u64);
        self.autocommit(|tx| {
            let taken = tx.execute(
                "INSERT INTO leases (name, holder, until_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
                 WHERE leases.until_ms < ?4 OR leases.holder = excluded.holder",
                args![name, holder, ms(until), ms(now)],
            )?;
            Ok(taken == 1)
        })
    }

    /// Gives lease `name` back, if `holder` still holds it.
    pub(super) fn release_lease(&self, name: &str, holder: &str) -> Result<(), RoError> {
        self.autocommit(|tx| {
            tx.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2", args![name, holder])?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn shared() -> RoStore {
        let url = storage::pg_server::scratch_database("ro_leases").unwrap();
        RoStore::open_at(&storage::Location::Postgres(url), storage::OpenMode::CreateIfMissing)
            .unwrap()
    }

    #[test]
    fn a_lease_has_one_holder_until_it_is_released_or_lapses() {
        let store = shared();
        let ttl = Duration::from_millis(300);
        assert!(store.take_lease("device:1", "a", ttl).unwrap());
        assert!(!store.take_lease("device:1", "b", ttl).unwrap(), "held by a");
        assert!(store.take_lease("device:1", "a", ttl).unwrap(), "a renews its own");
        assert!(store.take_lease("device:2", "b", ttl).unwrap(), "another name is free");
        store.release_lease("device:1", "b").unwrap();
        assert!(!store.take_lease("device:1", "b", ttl).unwrap(), "only the holder releases");
        store.release_lease("device:1", "a").unwrap();
        assert!(store.take_lease("device:1", "b", ttl).unwrap());
        // b dies holding it: a takes it once it lapsed.
        std::thread::sleep(Duration::from_millis(350));
        assert!(store.take_lease("device:1", "a", ttl).unwrap());
    }

    #[test]
    fn instances_racing_for_a_lease_get_it_once() {
        let store = std::sync::Arc::new(shared());
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let takers: Vec<_> = (0..8)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store
                        .take_lease("campaign:c", &format!("i{i}"), Duration::from_secs(30))
                        .unwrap()
                })
            })
            .collect();
        let won = takers.into_iter().map(|t| t.join().unwrap()).filter(|won| *won).count();
        assert_eq!(won, 1);
    }
}
