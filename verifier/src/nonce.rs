//! Challenges (DESIGN.md §2 step 8; `docs/appraisal.md` "Freshness"): nonces bound to one
//! device and one appraisal policy, valid for a short time (60 s by default), used at most
//! once, and kept only in memory.
//!
//! A nonce is 32 bytes, the size of the quote's qualifying data:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..2 | instance: which PVA issued it (0 for a lone PVA; issue 15 routes on it) |
//! | 2..8 | serial: the number of nonces this PVA issued before it (big-endian) |
//! | 8..14 | issued: Unix milliseconds at issue (big-endian) |
//! | 14..16 | policy: index of the appraisal policy in the PVA's configuration |
//! | 16..32 | tag: the first 16 bytes of HMAC-SHA-256(key, label ‖ bytes 0..16) |
//!
//! The key is drawn from the system CSPRNG when the PVA starts and never leaves its memory
//! (not stored, not logged, no `Debug`). A tag that verifies therefore proves this PVA
//! process issued the nonce, with exactly this serial, issue time and policy; the tag's 128
//! bits are what an attacker cannot predict. Outstanding nonces (issued, unused, unexpired)
//! are kept in a map by serial with the device they were issued for: consuming one removes
//! it, so a nonce with a valid tag, unexpired, that is not outstanding was used — replays
//! are recognised without remembering used nonces. A restart draws a new key: every nonce
//! of the previous process, outstanding or used, no longer verifies and is refused as
//! unknown, with nothing written to disk on the way.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::{DeviceId, Nonce};
use ring::hmac;
use ring::rand::SecureRandom;
use subtle::ConstantTimeEq;

use crate::error::{AppraisalError, ChallengeError, Error};

/// Default lifetime of a nonce.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Default bound on unused, unexpired nonces per device.
pub const DEFAULT_MAX_OUTSTANDING: u32 = 16;

/// Domain separation of the tag: this key signs nothing else, but the label keeps it so.
const TAG_LABEL: &[u8] = b"tresor PVA nonce v1";
/// Serials and issue times are 48-bit fields.
const FIELD_48: u64 = (1 << 48) - 1;

/// A nonce as issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub device_id: DeviceId,
    pub nonce: Nonce,
    /// Unix milliseconds from which the nonce is refused.
    pub expires_at_ms: u64,
}

/// What consuming a nonce tells the appraisal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consumed {
    /// Index of the policy the nonce was issued under.
    pub policy: u16,
    /// Unix milliseconds at which the nonce was issued: the quote answering it was made
    /// after this instant.
    pub issued_at_ms: u64,
}

/// The authenticated fields of a nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fields {
    instance: u16,
    serial: u64,
    issued_at_ms: u64,
    policy: u16,
}

impl Fields {
    fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[0..2].copy_from_slice(&self.instance.to_be_bytes());
        out[2..8].copy_from_slice(&self.serial.to_be_bytes()[2..]);
        out[8..14].copy_from_slice(&self.issued_at_ms.to_be_bytes()[2..]);
        out[14..16].copy_from_slice(&self.policy.to_be_bytes());
        out
    }

    fn from_bytes(b: &[u8; 32]) -> Self {
        let u48 = |s: &[u8]| s.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
        Self {
            instance: u16::from_be_bytes([b[0], b[1]]),
            serial: u48(&b[2..8]),
            issued_at_ms: u48(&b[8..14]),
            policy: u16::from_be_bytes([b[14], b[15]]),
        }
    }
}

struct Outstanding {
    device: DeviceId,
    expires_at_ms: u64,
}

#[derive(Default)]
struct Book {
    next_serial: u64,
    outstanding: HashMap<u64, Outstanding>,
    per_device: HashMap<DeviceId, u32>,
    /// (expiry, serial) in issue order, which is expiry order: swept from the front.
    expiry: VecDeque<(u64, u64)>,
}

impl Book {
    fn remove(&mut self, serial: u64) -> Option<Outstanding> {
        let o = self.outstanding.remove(&serial)?;
        if let Some(n) = self.per_device.get_mut(&o.device) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_device.remove(&o.device);
            }
        }
        Some(o)
    }

    fn insert(&mut self, serial: u64, o: Outstanding) {
        let device = o.device.clone();
        if self.outstanding.insert(serial, o).is_none() {
            *self.per_device.entry(device).or_insert(0) += 1;
        }
    }

    /// Forgets the nonces that expired by `now_ms`.
    fn sweep(&mut self, now_ms: u64) {
        while let Some(&(expires, serial)) = self.expiry.front() {
            if expires > now_ms {
                break;
            }
            self.expiry.pop_front();
            if self.outstanding.get(&serial).is_some_and(|o| o.expires_at_ms <= now_ms) {
                self.remove(serial);
            }
        }
    }
}

/// One PVA process's nonces: the key and the outstanding ones.
pub(crate) struct Nonces {
    key: hmac::Key,
    instance: u16,
    ttl_ms: u64,
    max_outstanding: u32,
    book: Mutex<Book>,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces").field("instance", &self.instance).finish_non_exhaustive()
    }
}

/// Unix milliseconds of `t` (0 before the epoch).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Nonces {
    /// A fresh key from the system CSPRNG.
    pub(crate) fn new(ttl: Duration, max_outstanding: u32) -> Result<Self, Error> {
        let mut key = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut key).map_err(|_| Error::Random)?;
        let nonces = Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            instance: 0,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            max_outstanding,
            book: Mutex::new(Book::default()),
        };
        zeroize::Zeroize::zeroize(&mut key);
        Ok(nonces)
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tag(&self, fields: &[u8; 16]) -> [u8; 16] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(TAG_LABEL);
        ctx.update(fields);
        let full = ctx.sign();
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&full.as_ref()[..16]);
        tag
    }

    fn nonce_of(&self, fields: Fields) -> Result<Nonce, Error> {
        let head = fields.to_bytes();
        let mut bytes = [0u8; Nonce::LEN];
        bytes[..16].copy_from_slice(&head);
        bytes[16..].copy_from_slice(&self.tag(&head));
        Nonce::from_bytes(&bytes).map_err(|e| Error::Config(format!("nonce encoding: {e}")))
    }

    /// The fields of `nonce` if this process issued it (constant-time tag comparison).
    fn verify(&self, nonce: &Nonce) -> Option<Fields> {
        let bytes = nonce.as_bytes();
        let mut head = [0u8; 16];
        head.copy_from_slice(&bytes[..16]);
        let ok = bool::from(self.tag(&head).ct_eq(&bytes[16..]));
        let fields = Fields::from_bytes(bytes);
        (ok && fields.instance == self.instance).then_some(fields)
    }

    /// Issues a nonce for `device` under the policy with index `policy`.
    pub(crate) fn issue(
        &self,
        device: &DeviceId,
        policy: u16,
        now: SystemTime,
    ) -> Result<Challenge, Error> {
        let now_ms = unix_ms(now).min(FIELD_48);
        let expires_at_ms = now_ms.saturating_add(self.ttl_ms);
        let serial = {
            let mut book = self.book();
            book.sweep(now_ms);
            if book.per_device.get(device).copied().unwrap_or(0) >= self.max_outstanding {
                return Err(ChallengeError::TooManyOutstanding {
                    device: device.clone(),
                    max: self.max_outstanding,
                }
                .into());
            }
            let serial = book.next_serial;
            if serial > FIELD_48 {
                return Err(Error::Config("nonce serials exhausted: restart the PVA".into()));
            }
            book.next_serial += 1;
            book.insert(serial, Outstanding { device: device.clone(), expires_at_ms });
            book.expiry.push_back((expires_at_ms, serial));
            serial
        };
        let fields = Fields { instance: self.instance, serial, issued_at_ms: now_ms, policy };
        Ok(Challenge { device_id: device.clone(), nonce: self.nonce_of(fields)?, expires_at_ms })
    }

    /// Consumes `nonce` for `device`: after `Ok`, it can never be consumed again.
    pub(crate) fn consume(
        &self,
        device: &DeviceId,
        nonce: &Nonce,
        now: SystemTime,
    ) -> Result<Consumed, AppraisalError> {
        let fields = self.verify(nonce).ok_or(AppraisalError::NonceUnknown)?;
        let expires_at_ms = fields.issued_at_ms.saturating_add(self.ttl_ms);
        let mut book = self.book();
        if expires_at_ms <= unix_ms(now) {
            if book.outstanding.get(&fields.serial).is_some_and(|o| o.device == *device) {
                book.remove(fields.serial);
            }
            return Err(AppraisalError::NonceExpired);
        }
        match book.outstanding.get(&fields.serial) {
            // Issued by this process, unexpired, not outstanding: consumed before.
            None => Err(AppraisalError::NonceReused),
            Some(o) if o.device != *device => Err(AppraisalError::NonceForAnotherDevice),
            Some(_) => {
                book.remove(fields.serial);
                Ok(Consumed { policy: fields.policy, issued_at_ms: fields.issued_at_ms })
            }
        }
    }

    /// Makes a nonce this process issued to `device` outstanding again. Only for benchmarks
    /// and tests that appraise recorded evidence again; the service never calls it.
    pub(crate) fn reissue(&self, device: &DeviceId, nonce: &Nonce) -> Result<(), AppraisalError> {
        let fields = self.verify(nonce).ok_or(AppraisalError::NonceUnknown)?;
        let expires_at_ms = fields.issued_at_ms.saturating_add(self.ttl_ms);
        self.book().insert(fields.serial, Outstanding { device: device.clone(), expires_at_ms });
        Ok(())
    }

    /// How many nonces are outstanding (for tests and the memory bound).
    #[cfg(test)]
    fn outstanding(&self) -> usize {
        self.book().outstanding.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(b: u8) -> DeviceId {
        let mut name = vec![0x00, 0x0B];
        name.extend([b; 32]);
        DeviceId::from_name(&name).unwrap()
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    const T0: u64 = 1_750_000_000_000;

    #[test]
    fn fields_round_trip_and_are_authenticated() {
        let nonces = Nonces::new(DEFAULT_TTL, 4).unwrap();
        let ch = nonces.issue(&device(1), 3, at(T0)).unwrap();
        let fields = nonces.verify(&ch.nonce).unwrap();
        assert_eq!(fields, Fields { instance: 0, serial: 0, issued_at_ms: T0, policy: 3 });
        assert_eq!(ch.expires_at_ms, T0 + 60_000);
        // Every single bit of the nonce is covered: a changed one is not ours.
        for bit in 0..256 {
            let mut bytes = *ch.nonce.as_bytes();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let changed = Nonce::from_bytes(&bytes).unwrap();
            assert_eq!(nonces.verify(&changed), None, "bit {bit}");
            assert_eq!(
                nonces.consume(&device(1), &changed, at(T0)),
                Err(AppraisalError::NonceUnknown)
            );
        }
        assert_eq!(
            nonces.consume(&device(1), &ch.nonce, at(T0 + 1)),
            Ok(Consumed { policy: 3, issued_at_ms: T0 })
        );
    }

    #[test]
    fn a_nonce_is_consumed_once_by_its_device_before_it_expires() {
        let nonces = Nonces::new(DEFAULT_TTL, 4).unwrap();
        let (a, b) = (device(1), device(2));
        let ch = nonces.issue(&a, 0, at(T0)).unwrap();
        assert_eq!(
            nonces.consume(&b, &ch.nonce, at(T0)),
            Err(AppraisalError::NonceForAnotherDevice)
        );
        assert!(nonces.consume(&a, &ch.nonce, at(T0)).is_ok());
        assert_eq!(nonces.consume(&a, &ch.nonce, at(T0)), Err(AppraisalError::NonceReused));
        assert_eq!(nonces.consume(&b, &ch.nonce, at(T0)), Err(AppraisalError::NonceReused));

        let late = nonces.issue(&a, 0, at(T0)).unwrap();
        assert_eq!(
            nonces.consume(&a, &late.nonce, at(T0 + 60_000)),
            Err(AppraisalError::NonceExpired)
        );
        assert_eq!(nonces.outstanding(), 0);
        // Random bytes, and a nonce of another PVA process (another key).
        let random = Nonce::random().unwrap();
        assert_eq!(nonces.consume(&a, &random, at(T0)), Err(AppraisalError::NonceUnknown));
        let other = Nonces::new(DEFAULT_TTL, 4).unwrap();
        let foreign = other.issue(&a, 0, at(T0)).unwrap();
        assert_eq!(nonces.consume(&a, &foreign.nonce, at(T0)), Err(AppraisalError::NonceUnknown));
    }

    #[test]
    fn outstanding_nonces_are_bounded_per_device_and_expire_from_memory() {
        let nonces = Nonces::new(DEFAULT_TTL, 2).unwrap();
        let a = device(1);
        let first = nonces.issue(&a, 0, at(T0)).unwrap();
        nonces.issue(&a, 0, at(T0)).unwrap();
        assert!(matches!(
            nonces.issue(&a, 0, at(T0)),
            Err(Error::Challenge(ChallengeError::TooManyOutstanding { max: 2, .. }))
        ));
        nonces.issue(&device(2), 0, at(T0)).unwrap();
        // Using one frees its place; expiry frees the rest.
        nonces.consume(&a, &first.nonce, at(T0)).unwrap();
        nonces.issue(&a, 0, at(T0)).unwrap();
        assert_eq!(nonces.outstanding(), 3);
        nonces.issue(&a, 0, at(T0 + 60_000)).unwrap();
        assert_eq!(nonces.outstanding(), 1);
    }

    #[test]
    fn reissue_only_takes_nonces_of_this_process() {
        let nonces = Nonces::new(DEFAULT_TTL, 2).unwrap();
        let a = device(1);
        let ch = nonces.issue(&a, 0, at(T0)).unwrap();
        nonces.consume(&a, &ch.nonce, at(T0)).unwrap();
        nonces.reissue(&a, &ch.nonce).unwrap();
        nonces.consume(&a, &ch.nonce, at(T0)).unwrap();
        assert_eq!(
            nonces.reissue(&a, &Nonce::random().unwrap()),
            Err(AppraisalError::NonceUnknown)
        );
    }

    #[test]
    fn the_key_is_not_printed() {
        let nonces = Nonces::new(DEFAULT_TTL, 2).unwrap();
        assert_eq!(format!("{nonces:?}"), "Nonces { instance: 0, .. }");
    }
}
