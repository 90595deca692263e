//! Challenges (DESIGN.md §2 step 8; `docs/appraisal.md` "Freshness"): nonces bound to one
//! device and one appraisal policy, valid for a short time (60 s by default), used at most
//! once — in the memory of a lone PVA, or in the store that several PVA instances share.
//!
//! A nonce is 32 bytes, the size of the quote's qualifying data:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..2 | instance: 0 (reserved for routing nonces to instances; no instance routes on it) |
//! | 2..8 | serial: a lone PVA's count of nonces issued before it; random when shared (big-endian) |
//! | 8..14 | issued: Unix milliseconds at issue (big-endian) |
//! | 14..16 | policy: index of the appraisal policy in the PVA's configuration |
//! | 16..32 | tag: the first 16 bytes of HMAC-SHA-256(key, label ‖ bytes 0..16) |
//!
//! A tag that verifies proves that this PVA issued the nonce, with exactly this serial,
//! issue time and policy; the tag's 128 bits are what an attacker cannot predict.
//! Outstanding nonces (issued, unused, unexpired) are kept with the device they were issued
//! for: consuming one removes it, so a nonce with a valid tag, unexpired, that is not
//! outstanding was used — replays are recognised without remembering used nonces.
//!
//! - A lone PVA (SQLite store): the key is drawn from the system CSPRNG when the PVA starts
//!   and never leaves its memory (not stored, not logged, no `Debug`); outstanding nonces
//!   are a map by serial. A restart draws a new key: every nonce of the previous process,
//!   outstanding or used, no longer verifies and is refused as unknown, with nothing
//!   written to disk on the way.
//! - PVA instances sharing a PostgreSQL store (issue 15): the key is drawn once, when the
//!   store is created, and kept in it (whoever reads the PVA's database could already
//!   rewrite its enrolments); outstanding nonces are rows of `nonces`, inserted at issue and
//!   deleted by the consuming statement itself, so a nonce one instance issued is accepted
//!   by any instance, once: two instances presented it at the same instant delete one row
//!   between them. Both commits are durable before the answer, so a crash of an instance,
//!   or of all of them, neither revives a used nonce nor loses an issued one. The per-device
//!   bound counts the rows, across instances.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::{DeviceId, Nonce};
use ring::hmac;
use ring::rand::SecureRandom;
use subtle::ConstantTimeEq;

use storage::args;

use crate::error::{AppraisalError, ChallengeError, Error, StoreError};
use crate::store::Store;

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

/// The outstanding nonces of a lone PVA, in memory.
#[derive(Default)]
struct LocalBook {
    next_serial: u64,
    outstanding: HashMap<u64, Outstanding>,
    per_device: HashMap<DeviceId, u32>,
    /// (expiry, serial) in issue order, which is expiry order: swept from the front.
    expiry: VecDeque<(u64, u64)>,
}

impl LocalBook {
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

/// Where the outstanding nonces are kept.
enum Book {
    /// In this process's memory (a lone PVA).
    Local(Mutex<LocalBook>),
    /// In the store that every instance shares (PostgreSQL): table `nonces`.
    Shared(Arc<Store>),
}

/// The PVA's nonces: the key and the outstanding ones.
pub(crate) struct Nonces {
    key: hmac::Key,
    instance: u16,
    ttl_ms: u64,
    max_outstanding: u32,
    book: Book,
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

/// A key from the system CSPRNG (the shared store's, drawn when it is created).
pub(crate) fn fresh_key() -> Result<zeroize::Zeroizing<[u8; 32]>, Error> {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    ring::rand::SystemRandom::new().fill(key.as_mut()).map_err(|_| Error::Random)?;
    Ok(key)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Nonces {
    /// A lone PVA's nonces: a fresh key from the system CSPRNG, outstanding ones in memory.
    pub(crate) fn new(ttl: Duration, max_outstanding: u32) -> Result<Self, Error> {
        let key = fresh_key()?;
        Ok(Self::with_key(&key[..], ttl, max_outstanding, Book::Local(Mutex::default())))
    }

    /// The nonces every PVA instance on `store` shares: the key the store was created with,
    /// outstanding ones in the store.
    pub(crate) fn shared(
        store: Arc<Store>,
        ttl: Duration,
        max_outstanding: u32,
    ) -> Result<Self, Error> {
        let key = store.call(|tx| {
            let row = tx.query_one("SELECT key FROM nonce_key WHERE id = 1", &[])?;
            Ok(zeroize::Zeroizing::new(row.get::<Vec<u8>>(0)?))
        })?;
        if key.len() < 32 {
            return Err(StoreError::Corrupt("nonce key shorter than 32 bytes".into()).into());
        }
        Ok(Self::with_key(&key, ttl, max_outstanding, Book::Shared(store)))
    }

    fn with_key(key: &[u8], ttl: Duration, max_outstanding: u32, book: Book) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            instance: 0,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            max_outstanding,
            book,
        }
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

    /// The fields of `nonce` if this PVA issued it (constant-time tag comparison).
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
        let too_many = || ChallengeError::TooManyOutstanding {
            device: device.clone(),
            max: self.max_outstanding,
        };
        let serial = match &self.book {
            Book::Local(book) => {
                let mut book = book.lock().unwrap_or_else(PoisonError::into_inner);
                book.sweep(now_ms);
                if book.per_device.get(device).copied().unwrap_or(0) >= self.max_outstanding {
                    return Err(too_many().into());
                }
                let serial = book.next_serial;
                if serial > FIELD_48 {
                    return Err(Error::Config("nonce serials exhausted: restart the PVA".into()));
                }
                book.next_serial += 1;
                book.insert(serial, Outstanding { device: device.clone(), expires_at_ms });
                book.expiry.push_back((expires_at_ms, serial));
                serial
            }
            // Instances share no counter: a random serial (48 bits; the tag still makes
            // every nonce unpredictable), its nonce the row's primary key.
            Book::Shared(store) => {
                let mut serial = [0u8; 8];
                ring::rand::SystemRandom::new()
                    .fill(&mut serial[2..])
                    .map_err(|_| Error::Random)?;
                let serial = u64::from_be_bytes(serial);
                let fields =
                    Fields { instance: self.instance, serial, issued_at_ms: now_ms, policy };
                let nonce = self.nonce_of(fields)?;
                let (id, max) = (device.as_bytes().to_vec(), i64::from(self.max_outstanding));
                let row = nonce.as_bytes().to_vec();
                let admitted = store.call(move |tx| {
                    tx.execute(
                        "DELETE FROM nonces WHERE expires_at_ms <= ?1",
                        args![i64_of(now_ms)],
                    )?;
                    let open = tx.query_one(
                        "SELECT COUNT(*) FROM nonces WHERE device_id = ?1",
                        args![&id],
                    )?;
                    if open.get::<i64>(0)? >= max {
                        return Ok(false);
                    }
                    tx.execute(
                        "INSERT INTO nonces (nonce, device_id, expires_at_ms) VALUES (?1, ?2, ?3)",
                        args![&row, &id, i64_of(expires_at_ms)],
                    )?;
                    Ok(true)
                })?;
                if !admitted {
                    return Err(too_many().into());
                }
                return Ok(Challenge { device_id: device.clone(), nonce, expires_at_ms });
            }
        };
        let fields = Fields { instance: self.instance, serial, issued_at_ms: now_ms, policy };
        Ok(Challenge { device_id: device.clone(), nonce: self.nonce_of(fields)?, expires_at_ms })
    }

    /// Consumes `nonce` for `device`: after `Ok(Ok(_))`, no instance ever consumes it again.
    /// The outer error is the store's; the inner one the verdict on the nonce.
    pub(crate) fn consume(
        &self,
        device: &DeviceId,
        nonce: &Nonce,
        now: SystemTime,
    ) -> Result<Result<Consumed, AppraisalError>, StoreError> {
        let Some(fields) = self.verify(nonce) else { return Ok(Err(AppraisalError::NonceUnknown)) };
        let expires_at_ms = fields.issued_at_ms.saturating_add(self.ttl_ms);
        let expired = expires_at_ms <= unix_ms(now);
        let consumed = Consumed { policy: fields.policy, issued_at_ms: fields.issued_at_ms };
        let book = match &self.book {
            Book::Local(book) => book,
            Book::Shared(store) => {
                let (row, id) = (nonce.as_bytes().to_vec(), device.as_bytes().to_vec());
                return store.call(move |tx| {
                    // The one statement that takes the nonce: two instances presented it at
                    // once delete one row between them, and only one sees it returned.
                    let taken = tx.query_opt(
                        "DELETE FROM nonces WHERE nonce = ?1 AND device_id = ?2 RETURNING expires_at_ms",
                        args![&row, &id],
                    )?;
                    if taken.is_some() {
                        return Ok(if expired { Err(AppraisalError::NonceExpired) } else { Ok(consumed) });
                    }
                    if expired {
                        return Ok(Err(AppraisalError::NonceExpired));
                    }
                    let other = tx.query_opt("SELECT 1 FROM nonces WHERE nonce = ?1", args![&row])?;
                    Ok(Err(if other.is_some() {
                        AppraisalError::NonceForAnotherDevice
                    } else {
                        // Issued under this key, unexpired, not outstanding: consumed before.
                        AppraisalError::NonceReused
                    }))
                });
            }
        };
        let mut book = book.lock().unwrap_or_else(PoisonError::into_inner);
        if expired {
            if book.outstanding.get(&fields.serial).is_some_and(|o| o.device == *device) {
                book.remove(fields.serial);
            }
            return Ok(Err(AppraisalError::NonceExpired));
        }
        Ok(match book.outstanding.get(&fields.serial) {
            // Issued by this process, unexpired, not outstanding: consumed before.
            None => Err(AppraisalError::NonceReused),
            Some(o) if o.device != *device => Err(AppraisalError::NonceForAnotherDevice),
            Some(_) => {
                book.remove(fields.serial);
                Ok(consumed)
            }
        })
    }

    /// Makes a nonce this PVA issued to `device` outstanding again. Only for benchmarks
    /// and tests that appraise recorded evidence again; the service never calls it.
    pub(crate) fn reissue(
        &self,
        device: &DeviceId,
        nonce: &Nonce,
    ) -> Result<Result<(), AppraisalError>, StoreError> {
        let Some(fields) = self.verify(nonce) else { return Ok(Err(AppraisalError::NonceUnknown)) };
        let expires_at_ms = fields.issued_at_ms.saturating_add(self.ttl_ms);
        match &self.book {
            Book::Local(book) => {
                let mut book = book.lock().unwrap_or_else(PoisonError::into_inner);
                book.insert(fields.serial, Outstanding { device: device.clone(), expires_at_ms });
            }
            Book::Shared(store) => {
                let (row, id) = (nonce.as_bytes().to_vec(), device.as_bytes().to_vec());
                store.call(move |tx| {
                    tx.execute(
                        "INSERT INTO nonces (nonce, device_id, expires_at_ms) VALUES (?1, ?2, ?3)
                         ON CONFLICT (nonce) DO UPDATE SET device_id = excluded.device_id",
                        args![&row, &id, i64_of(expires_at_ms)],
                    )?;
                    Ok(())
                })?;
            }
        }
        Ok(Ok(()))
    }

    /// How many nonces are outstanding (for tests and the memory bound).
    #[cfg(test)]
    fn outstanding(&self) -> usize {
        match &self.book {
            Book::Local(book) => {
                book.lock().unwrap_or_else(PoisonError::into_inner).outstanding.len()
            }
            Book::Shared(store) => store
                .call(|tx| Ok(tx.query_one("SELECT COUNT(*) FROM nonces", &[])?.get::<i64>(0)?))
                .map_or(0, |n| n as usize),
        }
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

    /// A lone PVA's nonces, and those of instances sharing a PostgreSQL store.
    fn books(max: u32) -> Vec<Nonces> {
        let url = storage::pg_server::scratch_database("pva_nonces").expect("PostgreSQL");
        let location = storage::Location::Postgres(url);
        let store =
            Arc::new(Store::open_at(&location, storage::OpenMode::CreateIfMissing).unwrap());
        vec![
            Nonces::new(DEFAULT_TTL, max).unwrap(),
            Nonces::shared(store, DEFAULT_TTL, max).unwrap(),
        ]
    }

    fn consume(
        n: &Nonces,
        d: &DeviceId,
        nonce: &Nonce,
        t: SystemTime,
    ) -> Result<Consumed, AppraisalError> {
        n.consume(d, nonce, t).unwrap()
    }

    #[test]
    fn fields_round_trip_and_are_authenticated() {
        for nonces in books(4) {
            let ch = nonces.issue(&device(1), 3, at(T0)).unwrap();
            let fields = nonces.verify(&ch.nonce).unwrap();
            assert_eq!((fields.instance, fields.issued_at_ms, fields.policy), (0, T0, 3));
            if matches!(nonces.book, Book::Local(_)) {
                assert_eq!(fields.serial, 0);
            }
            assert_eq!(ch.expires_at_ms, T0 + 60_000);
            // Every single bit of the nonce is covered: a changed one is not ours.
            for bit in 0..256 {
                let mut bytes = *ch.nonce.as_bytes();
                bytes[bit / 8] ^= 1 << (bit % 8);
                let changed = Nonce::from_bytes(&bytes).unwrap();
                assert_eq!(nonces.verify(&changed), None, "bit {bit}");
                assert_eq!(
                    consume(&nonces, &device(1), &changed, at(T0)),
                    Err(AppraisalError::NonceUnknown)
                );
            }
            assert_eq!(
                consume(&nonces, &device(1), &ch.nonce, at(T0 + 1)),
                Ok(Consumed { policy: 3, issued_at_ms: T0 })
            );
        }
    }

    #[test]
    fn a_nonce_is_consumed_once_by_its_device_before_it_expires() {
        for nonces in books(4) {
            let (a, b) = (device(1), device(2));
            let ch = nonces.issue(&a, 0, at(T0)).unwrap();
            assert_eq!(
                consume(&nonces, &b, &ch.nonce, at(T0)),
                Err(AppraisalError::NonceForAnotherDevice)
            );
            assert!(consume(&nonces, &a, &ch.nonce, at(T0)).is_ok());
            assert_eq!(consume(&nonces, &a, &ch.nonce, at(T0)), Err(AppraisalError::NonceReused));
            assert_eq!(consume(&nonces, &b, &ch.nonce, at(T0)), Err(AppraisalError::NonceReused));

            let late = nonces.issue(&a, 0, at(T0)).unwrap();
            assert_eq!(
                consume(&nonces, &a, &late.nonce, at(T0 + 60_000)),
                Err(AppraisalError::NonceExpired)
            );
            assert_eq!(nonces.outstanding(), 0);
            // Random bytes, and a nonce of another PVA (another key).
            let random = Nonce::random().unwrap();
            assert_eq!(consume(&nonces, &a, &random, at(T0)), Err(AppraisalError::NonceUnknown));
            let other = Nonces::new(DEFAULT_TTL, 4).unwrap();
            let foreign = other.issue(&a, 0, at(T0)).unwrap();
            assert_eq!(
                consume(&nonces, &a, &foreign.nonce, at(T0)),
                Err(AppraisalError::NonceUnknown)
            );
        }
    }

    #[test]
    fn outstanding_nonces_are_bounded_per_device_and_expire() {
        for nonces in books(2) {
            let a = device(1);
            let first = nonces.issue(&a, 0, at(T0)).unwrap();
            nonces.issue(&a, 0, at(T0)).unwrap();
            assert!(matches!(
                nonces.issue(&a, 0, at(T0)),
                Err(Error::Challenge(ChallengeError::TooManyOutstanding { max: 2, .. }))
            ));
            nonces.issue(&device(2), 0, at(T0)).unwrap();
            // Using one frees its place; expiry frees the rest.
            consume(&nonces, &a, &first.nonce, at(T0)).unwrap();
            nonces.issue(&a, 0, at(T0)).unwrap();
            assert_eq!(nonces.outstanding(), 3);
            nonces.issue(&a, 0, at(T0 + 60_000)).unwrap();
            assert_eq!(nonces.outstanding(), 1);
        }
    }

    #[test]
    fn reissue_only_takes_nonces_of_this_pva() {
        for nonces in books(2) {
            let a = device(1);
            let ch = nonces.issue(&a, 0, at(T0)).unwrap();
            consume(&nonces, &a, &ch.nonce, at(T0)).unwrap();
            nonces.reissue(&a, &ch.nonce).unwrap().unwrap();
            consume(&nonces, &a, &ch.nonce, at(T0)).unwrap();
            assert_eq!(
                nonces.reissue(&a, &Nonce::random().unwrap()).unwrap(),
                Err(AppraisalError::NonceUnknown)
            );
        }
    }

    #[test]
    fn instances_sharing_a_store_accept_each_others_nonces_exactly_once() {
        let url = storage::pg_server::scratch_database("pva_nonces_shared").expect("PostgreSQL");
        let location = storage::Location::Postgres(url);
        let open =
            || Arc::new(Store::open_at(&location, storage::OpenMode::CreateIfMissing).unwrap());
        let instances: Vec<_> =
            (0..4).map(|_| Arc::new(Nonces::shared(open(), DEFAULT_TTL, 64).unwrap())).collect();
        let a = device(1);
        for round in 0..20u64 {
            let issuer = &instances[(round % 4) as usize];
            let ch = issuer.issue(&a, 0, at(T0)).unwrap();
            // Every instance is presented the nonce at the same instant: exactly one takes it.
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let verdicts: Vec<_> = instances
                .iter()
                .map(|n| {
                    let (n, barrier, nonce, a) = (n.clone(), barrier.clone(), ch.nonce, a.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        n.consume(&a, &nonce, at(T0 + round)).unwrap()
                    })
                })
                .collect();
            let verdicts: Vec<_> = verdicts.into_iter().map(|t| t.join().unwrap()).collect();
            assert_eq!(verdicts.iter().filter(|v| v.is_ok()).count(), 1, "{verdicts:?}");
            assert!(
                verdicts
                    .iter()
                    .filter(|v| v.is_err())
                    .all(|v| *v == Err(AppraisalError::NonceReused))
            );
        }
        // A restart of every instance keeps the key: an outstanding nonce survives it, once.
        let ch = instances[0].issue(&a, 0, at(T0)).unwrap();
        drop(instances);
        let restarted = Nonces::shared(open(), DEFAULT_TTL, 64).unwrap();
        assert!(consume(&restarted, &a, &ch.nonce, at(T0 + 1)).is_ok());
        assert_eq!(
            consume(&restarted, &a, &ch.nonce, at(T0 + 2)),
            Err(AppraisalError::NonceReused)
        );
    }

    #[test]
    fn the_key_is_not_printed() {
        for nonces in books(2) {
            assert_eq!(format!("{nonces:?}"), "Nonces { instance: 0, .. }");
        }
    }
}
