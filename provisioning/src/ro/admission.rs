//! Admission control of the RO (issue 14): at most `max_in_flight` devices between their
//! first step (4, activate TRE) and their final state at once. A device the RO cannot admit
//! yet stays `pending` and its task request answers `idle` after the long poll — "come back
//! later" — so a fleet goes through the expensive steps (the appraisal at the PVA, the
//! bundle at the new operator, AKA) paced instead of all at once, where peers time out and
//! devices roll back for no reason of their own.
//!
//! Nothing here is durable, nor needs to be: the devices in flight are those the store
//! holds neither `pending` nor final, counted again from the store at most every
//! [`RECOUNT`]; between counts each admission is added here, so the bound holds within the
//! devices admitted since the last count. A restarted RO counts afresh, and RO instances
//! sharing a store (issue 15) each count from it: a device one admitted and another
//! finished frees its place at the next count.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::RoError;
use super::store::RoStore;

/// How often the number of devices in flight is read from the store again.
const RECOUNT: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(crate) struct Admission {
    limit: u64,
    /// Devices in flight as last counted plus those admitted since, and when it was counted.
    counted: Mutex<Option<(Instant, u64)>>,
}

impl Admission {
    /// `limit` 0: no bound.
    pub(crate) fn new(limit: u64) -> Self {
        Self { limit, counted: Mutex::new(None) }
    }

    /// Whether one more device may start its change now; if so it counts as in flight.
    pub(crate) fn admit(&self, store: &RoStore) -> Result<bool, RoError> {
        if self.limit == 0 {
            return Ok(true);
        }
        let mut counted = self.counted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The count's time is its reading's, not the last call's: polls come more often than
        // RECOUNT, and a device another instance finished is seen only in the store.
        let (at, in_flight) = match *counted {
            Some((at, n)) if at.elapsed() < RECOUNT => (at, n),
            _ => (Instant::now(), store.devices_in_flight()?),
        };
        let admitted = in_flight < self.limit;
        *counted = Some((at, in_flight + u64::from(admitted)));
        Ok(admitted)
    }

    /// Forget the count: a device left the flight (it became final) and the next
    /// admission should see it at once.
    pub(crate) fn released(&self) {
        let mut counted = self.counted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, n)) = *counted {
            *counted = Some((at, n.saturating_sub(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ro::state::DeviceState;
    use protocol::{DeviceId, Iccid};

    fn device(n: u8) -> (DeviceId, Iccid) {
        let mut name = vec![0x00, 0x0B];
        name.extend([n; 32]);
        (
            DeviceId::from_name(&name).unwrap(),
            Iccid::with_check_digit("8949000000000000001").unwrap(),
        )
    }

    #[test]
    fn admits_up_to_the_limit_and_again_when_one_is_final() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            RoStore::open(&dir.path().join("ro.sqlite"), storage::OpenMode::CreateIfMissing)
                .unwrap();
        let devices: Vec<_> = (1..=3).map(device).collect();
        store.create_campaign("c1", "mno-a", "mno-b", &devices, None).unwrap();
        let admission = Admission::new(2);
        assert!(admission.admit(&store).unwrap());
        assert!(admission.admit(&store).unwrap());
        assert!(!admission.admit(&store).unwrap(), "a third device waits");
        // The store says the same once the admitted devices moved on.
        let issued = DeviceState::TreActivated { proof: serde_bytes::ByteBuf::new() };
        for (d, _) in &devices[..2] {
            store.transition("c1", d, &issued, &[4], &[]).unwrap();
        }
        std::thread::sleep(RECOUNT);
        assert_eq!(store.devices_in_flight().unwrap(), 2);
        assert!(!admission.admit(&store).unwrap());
        let done = DeviceState::RolledBack { step: 8, reason: "x".into() };
        store.transition("c1", &devices[0].0, &done, &[], &[]).unwrap();
        admission.released();
        assert!(admission.admit(&store).unwrap(), "a final device frees its place");
        assert!(Admission::new(0).admit(&store).unwrap(), "0: no bound");
    }

    #[test]
    fn a_device_finished_elsewhere_frees_its_place_at_the_next_count_however_often_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            RoStore::open(&dir.path().join("ro.sqlite"), storage::OpenMode::CreateIfMissing)
                .unwrap();
        let devices: Vec<_> = (1..=2).map(device).collect();
        store.create_campaign("c1", "mno-a", "mno-b", &devices, None).unwrap();
        let admission = Admission::new(1);
        assert!(admission.admit(&store).unwrap());
        let issued = DeviceState::TreActivated { proof: serde_bytes::ByteBuf::new() };
        store.transition("c1", &devices[0].0, &issued, &[4], &[]).unwrap();
        assert!(!admission.admit(&store).unwrap());
        // Another instance finishes the device: no `released` here, only the store knows.
        let done = DeviceState::RolledBack { step: 8, reason: "x".into() };
        store.transition("c1", &devices[0].0, &done, &[], &[]).unwrap();
        // Polls keep asking, more often than RECOUNT: the count is read again all the same.
        let deadline = Instant::now() + RECOUNT * 5;
        while !admission.admit(&store).unwrap() {
            assert!(Instant::now() < deadline, "the count was never read again");
            std::thread::sleep(RECOUNT / 10);
        }
    }
}
