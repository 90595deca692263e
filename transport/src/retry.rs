//! How a client waits before it asks a peer again: exponential backoff with jitter. The
//! RO's outbox, its peer steps and the device agent all retry this way, so that the many
//! retries one outage starts do not arrive together when the peer comes back.

use std::time::Duration;

use ring::rand::SecureRandom;

/// A backoff policy: the first retry after about `base`, each further one twice as long,
/// none longer than `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// How long to wait before attempt `failures + 1`: `base · 2^failures`, capped, with
    /// ±50 % jitter.
    pub fn wait(&self, failures: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << failures.min(16)).min(self.cap);
        let mut byte = [0u8; 1];
        let jitter = match ring::rand::SystemRandom::new().fill(&mut byte) {
            Ok(()) => 0.5 + f64::from(byte[0]) / 255.0,
            Err(_) => 1.0,
        };
        exp.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_with_jitter() {
        let b = Backoff { base: Duration::from_millis(250), cap: Duration::from_secs(30) };
        for failures in 0..40 {
            let d = b.wait(failures);
            let exp = b.base.saturating_mul(1 << failures.min(16)).min(b.cap);
            assert!(d >= exp / 2 && d <= exp.mul_f64(1.5), "{failures}: {d:?}");
        }
        assert!(b.wait(30) <= b.cap.mul_f64(1.5));
    }
}
