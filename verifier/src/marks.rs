//! The devices' TPM-clock high-water marks (`docs/appraisal.md` "Clock"): held in memory,
//! where every appraisal reads and raises its device's mark under one lock, and written
//! behind to the store by a flusher thread. An appraisal never waits for the disk; a mark
//! reaches it at most one flush interval (100 ms by default) plus one fsync after it rose.
//! A crash loses at most the marks raised in that window; `docs/appraisal.md` ("What a
//! crash of the PVA can lose") argues what that can loosen: with equal counters the
//! wall-time check measures a restored TPM state against the older mark almost as tightly
//! as against the lost one; a lost counter raise leaves a copy of the previous boot cycle
//! to the wall-time check instead of the counters.
//!
//! A mark is raised only by a quote that passed the wall-time check: a restored state whose
//! clock lags must not become the reference its next quotes are measured against.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use protocol::DeviceId;

use crate::appraisal::clock::{self, ClockTolerance};
use crate::error::{AppraisalError, StoreError};
use crate::store::{self, ClockMark, SeenClock, Store};

/// Default time between two flushes of raised marks.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// What an appraisal learns from the device's mark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Observed {
    /// The mark before this quote.
    pub previous: Option<SeenClock>,
    /// The wall-time check's finding, if the quote's clock lags.
    pub behind: Option<AppraisalError>,
}

struct Pending {
    marks: HashMap<DeviceId, SeenClock>,
    stop: bool,
}

struct Shared {
    /// Devices whose mark is loaded; `None`: loaded, never seen.
    marks: Mutex<HashMap<DeviceId, Option<SeenClock>>>,
    pending: Mutex<Pending>,
    wake: Condvar,
    store: Arc<Store>,
    interval: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The marks of every device this PVA appraised, and their flusher.
pub(crate) struct ClockMarks {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ClockMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClockMarks")
    }
}

impl ClockMarks {
    /// Starts the flusher for `store`.
    pub(crate) fn start(store: Arc<Store>, interval: Duration) -> Result<Self, std::io::Error> {
        let shared = Arc::new(Shared {
            marks: Mutex::new(HashMap::new()),
            pending: Mutex::new(Pending { marks: HashMap::new(), stop: false }),
            wake: Condvar::new(),
            store,
            interval,
        });
        let for_thread = shared.clone();
        let flusher = std::thread::Builder::new()
            .name("pva-clock-marks".into())
            .spawn(move || flush_loop(&for_thread))?;
        Ok(Self { shared, flusher: Some(flusher) })
    }

    /// Makes the store's mark of a device known, keeping the higher of it and the one held:
    /// a lone PVA's memory is never behind its store, but another instance sharing the
    /// store may have raised the mark since this one last saw the device.
    pub(crate) fn load(&self, device: &DeviceId, stored: Option<SeenClock>) {
        let mut marks = lock(&self.shared.marks);
        let held = marks.entry(device.clone()).or_insert(stored);
        if let Some(stored) = stored
            && held.is_none_or(|h| stored.mark > h.mark)
        {
            *held = Some(stored);
        }
    }

    /// The quote of `device` reports `seen`, answering a nonce issued at `issued_at_ms`; the
    /// PVA appraises it at `now_ms`. Returns the previous mark and the wall-time finding,
    /// and raises the mark (written behind) if the quote is higher and not behind.
    pub(crate) fn observe(
        &self,
        device: &DeviceId,
        seen: ClockMark,
        issued_at_ms: u64,
        now_ms: u64,
        tolerance: ClockTolerance,
    ) -> Result<Observed, StoreError> {
        if !lock(&self.shared.marks).contains_key(device) {
            let id = device.clone();
            let stored = self.shared.store.call(move |c| store::get_device(c, &id))?;
            self.load(device, stored.and_then(|(_, mark)| mark));
        }
        let raised = {
            let mut marks = lock(&self.shared.marks);
            let slot = marks.entry(device.clone()).or_insert(None);
            let previous = *slot;
            let behind = previous
                .as_ref()
                .and_then(|last| clock::behind_wall_time(seen, last, issued_at_ms, tolerance));
            let higher = previous.is_none_or(|p| seen > p.mark);
            let raised = (higher && behind.is_none())
                .then_some(SeenClock { mark: seen, seen_at_ms: now_ms });
            if let Some(r) = raised {
                *slot = Some(r);
            }
            (Observed { previous, behind }, raised)
        };
        if let (_, Some(r)) = &raised {
            let mut pending = lock(&self.shared.pending);
            let entry = pending.marks.entry(device.clone()).or_insert(*r);
            if r.mark > entry.mark {
                *entry = *r;
            }
            self.shared.wake.notify_one();
        }
        Ok(raised.0)
    }

    /// The mark held for `device`, if loaded.
    pub(crate) fn get(&self, device: &DeviceId) -> Option<SeenClock> {
        lock(&self.shared.marks).get(device).copied().flatten()
    }
}

impl Drop for ClockMarks {
    /// Stops the flusher after it wrote what is pending.
    fn drop(&mut self) {
        lock(&self.shared.pending).stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.flusher.take() {
            let _ = t.join();
        }
    }
}

/// Waits for raised marks, writes them in one durable transaction, then rests for the
/// interval so that marks raised meanwhile share the next one.
fn flush_loop(shared: &Shared) {
    loop {
        let (batch, stop) = {
            let mut pending = lock(&shared.pending);
            while pending.marks.is_empty() && !pending.stop {
                pending = shared.wake.wait(pending).unwrap_or_else(PoisonError::into_inner);
            }
            (std::mem::take(&mut pending.marks), pending.stop)
        };
        if !batch.is_empty() {
            let retry = batch.clone();
            let written = shared.store.call(move |c| {
                for (id, seen) in &batch {
                    store::raise_clock_mark(c, id, *seen)?;
                }
                Ok(())
            });
            if let Err(e) = written {
                tracing::error!(error = %e, marks = retry.len(), "clock marks not written; will retry");
                let mut pending = lock(&shared.pending);
                for (id, seen) in retry {
                    let entry = pending.marks.entry(id).or_insert(seen);
                    if seen.mark > entry.mark {
                        *entry = seen;
                    }
                }
                if stop {
                    return;
                }
            }
        }
        if stop {
            return;
        }
        let pending = lock(&shared.pending);
        let _ = shared.wake.wait_timeout_while(pending, shared.interval, |p| !p.stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DeviceRecord;

    fn device(b: u8) -> DeviceId {
        let mut name = vec![0x00, 0x0B];
        name.extend([b; 32]);
        DeviceId::from_name(&name).unwrap()
    }

    fn enrol(store: &Store, b: u8) {
        let record = DeviceRecord {
            device_id: device(b),
            ek_public: vec![1],
            ek_certificate: vec![2],
            ak_public: vec![3],
            ak_name: vec![4],
            enrolled_at: 5,
        };
        store.call(move |c| store::put_device(c, &record, None)).unwrap();
    }

    fn mark(reset: u32, clock: u64) -> ClockMark {
        ClockMark { reset_count: reset, restart_count: 0, clock }
    }

    fn stored(store: &Store, b: u8) -> Option<SeenClock> {
        store.call(move |c| store::get_device(c, &device(b))).unwrap().unwrap().1
    }

    const T: ClockTolerance = ClockTolerance { drift_percent: 15, slack: Duration::from_secs(2) };

    #[test]
    fn marks_rise_in_memory_at_once_and_reach_the_store_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pva.sqlite");
        let store = Arc::new(Store::open(&path).unwrap());
        enrol(&store, 1);
        let marks = ClockMarks::start(store.clone(), Duration::from_millis(10)).unwrap();
        let first = marks.observe(&device(1), mark(1, 1_000), 0, 10_000, T).unwrap();
        assert_eq!(first, Observed { previous: None, behind: None });
        let expected = SeenClock { mark: mark(1, 1_000), seen_at_ms: 10_000 };
        assert_eq!(marks.get(&device(1)), Some(expected));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while stored(&store, 1) != Some(expected) {
            assert!(std::time::Instant::now() < deadline, "mark never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        // A lower quote leaves the mark.
        let lower = marks.observe(&device(1), mark(0, 5_000), 10_000, 11_000, T).unwrap();
        assert_eq!(lower.previous, Some(expected));
        assert_eq!(marks.get(&device(1)), Some(expected));
        // Dropping flushes what is pending; a new PVA reads it back.
        marks.observe(&device(1), mark(2, 7), 12_000, 13_000, T).unwrap();
        drop(marks);
        let raised = SeenClock { mark: mark(2, 7), seen_at_ms: 13_000 };
        assert_eq!(stored(&store, 1), Some(raised));
        let marks = ClockMarks::start(store.clone(), DEFAULT_FLUSH_INTERVAL).unwrap();
        let again = marks.observe(&device(1), mark(2, 8), 14_000, 14_000, T).unwrap();
        assert_eq!(again.previous, Some(raised));
    }

    #[test]
    fn a_lagging_quote_is_reported_and_does_not_become_the_reference() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        enrol(&store, 2);
        let marks = ClockMarks::start(store, DEFAULT_FLUSH_INTERVAL).unwrap();
        marks.observe(&device(2), mark(1, 1_000), 0, 100_000, T).unwrap();
        // An hour of wall time later, the clock has moved on by a minute only.
        let hour = 3_600_000;
        let lagging = marks.observe(&device(2), mark(1, 61_000), 100_000 + hour, 100_000 + hour, T);
        let behind = lagging.unwrap().behind;
        assert!(matches!(behind, Some(AppraisalError::ClockBehindWallTime { .. })), "{behind:?}");
        let reference = SeenClock { mark: mark(1, 1_000), seen_at_ms: 100_000 };
        assert_eq!(marks.get(&device(2)), Some(reference));
        // Its next quote, a second later, lags as much: still behind.
        let next =
            marks.observe(&device(2), mark(1, 62_000), 101_000 + hour, 101_000 + hour, T).unwrap();
        assert!(next.behind.is_some());
        // A running TPM's quote keeps the pace and raises the mark.
        let genuine = 1_000 + hour + 2_000;
        let ok = marks.observe(&device(2), mark(1, genuine), 102_000 + hour, 102_000 + hour, T);
        assert_eq!(ok.unwrap().behind, None);
        assert_eq!(marks.get(&device(2)).map(|s| s.mark), Some(mark(1, genuine)));
    }
}
