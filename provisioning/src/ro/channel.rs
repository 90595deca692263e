//! The RO's end of the device channel (`protocol::device_auth`, docs/flow.md "The device
//! channel"): binding a device's AK by credential activation, the nonces the RO hands out,
//! and the check every device request passes before a handler looks at it.
//!
//! Nonces are stateless to issue and single-use to spend: a nonce is its issue time and a
//! MAC (HMAC-SHA-256, truncated to 24 bytes) over the device id and that time under a key
//! that lives only in this process's memory. Issuing stores nothing, so nobody can crowd out
//! a device's nonces by asking for more; a spent nonce is remembered until it expires, and
//! only once its request verified (a forged request spends nothing). A restart draws a new
//! key, so every nonce issued before it is void at once and no replay survives a crash; the
//! device retries with the nonce that its refusal carried.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use protocol::DeviceId;
use protocol::device_auth::{
    CredentialChallenge, CredentialProof, CredentialRequest, NONCE_LEN, NONCE_TTL_SECS,
    RequestStatement, check_ak_attributes,
};
use protocol::pva_api::CredentialSecret;
use protocol::tpm::credential::make_credential;
use protocol::tpm::{Public, Unmarshal};
use ring::hmac;
use ring::rand::SystemRandom;
use serde_bytes::ByteBuf;
use subtle::ConstantTimeEq;

use storage::args;

use super::Ro;
use super::error::RoError;
use super::store::{RoStore, ms, now_ms};

/// Bindings under way (challenge issued, proof pending) the RO keeps at most.
const MAX_PENDING: usize = 100_000;
/// Challenges one device may have open at once: an anonymous client asking for more (for
/// an AK it does not hold) replaces its own oldest, never crowding out the device's.
const MAX_PENDING_PER_DEVICE: usize = 4;
/// How long a binding challenge may be answered.
const BINDING_TTL: Duration = Duration::from_secs(120);
/// Length of a nonce's MAC.
const MAC_LEN: usize = NONCE_LEN - 8;

/// The RO's state of the device channel: in memory for a lone RO; for instances sharing a
/// store, the key is the store's and spent nonces and binding challenges are its rows
/// (tables `channel_key`, `channel_spent`, `channel_bindings`), so that a nonce one
/// instance issued is spent once at any, and a challenge one instance issued is answered
/// at any.
pub(crate) struct Channel {
    key: hmac::Key,
    spent: Mutex<HashMap<[u8; NONCE_LEN], u64>>,
    bindings: Bindings,
    shared: bool,
}

/// A key for the device channel from the system CSPRNG (a shared store's, drawn when the
/// store is created).
pub(crate) fn fresh_key() -> Result<zeroize::Zeroizing<[u8; 32]>, RoError> {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    ring::rand::SecureRandom::fill(&SystemRandom::new(), key.as_mut())
        .map_err(|_| RoError::Config("no randomness for the device channel key".into()))?;
    Ok(key)
}

/// The binding challenges issued and not yet answered, by device.
#[derive(Default)]
struct Bindings(Mutex<HashMap<DeviceId, Vec<Pending>>>);

/// A binding challenge that waits for its proof.
struct Pending {
    ak_public: Vec<u8>,
    secret: CredentialSecret,
    until: Instant,
}

impl Bindings {
    /// Keeps the challenge for `ak_public` until `now + BINDING_TTL`. One challenge per AK
    /// (asking again replaces it), at most [`MAX_PENDING_PER_DEVICE`] per device (a new one
    /// evicts the oldest): however many challenges others ask for an AK they hold, the
    /// device's own stays answerable while it asks again.
    fn open(
        &self,
        device: &DeviceId,
        ak_public: Vec<u8>,
        secret: CredentialSecret,
        now: Instant,
    ) -> Result<(), RoError> {
        let mut all = self.0.lock().map_err(|_| RoError::Store("bindings poisoned".into()))?;
        if all.len() >= MAX_PENDING && !all.contains_key(device) {
            all.retain(|_, open| {
                open.retain(|p| p.until > now);
                !open.is_empty()
            });
            if all.len() >= MAX_PENDING {
                return Err(RoError::Busy("too many bindings under way".into()));
            }
        }
        let open = all.entry(device.clone()).or_default();
        open.retain(|p| p.until > now && p.ak_public != ak_public);
        if open.len() >= MAX_PENDING_PER_DEVICE {
            open.remove(0);
        }
        open.push(Pending { ak_public, secret, until: now + BINDING_TTL });
        Ok(())
    }

    /// The AK whose unexpired challenge `secret` answers, which is then spent. A wrong
    /// secret spends nothing: a guesser cannot void the device's own challenge.
    fn answer(&self, device: &DeviceId, secret: &[u8], now: Instant) -> Result<Vec<u8>, RoError> {
        let refused = |why: &str| RoError::DeviceNotAuthenticated(why.to_owned());
        let mut all = self.0.lock().map_err(|_| RoError::Store("bindings poisoned".into()))?;
        let open = all.get_mut(device).ok_or_else(|| refused("no binding challenge under way"))?;
        open.retain(|p| p.until > now);
        let answered = open.iter().position(|p| p.secret.ct_eq(secret)).map(|i| open.remove(i));
        if open.is_empty() {
            all.remove(device);
        }
        answered.map(|p| p.ak_public).ok_or_else(|| {
            refused("wrong credential secret or an expired challenge: the AK is not beside this EK")
        })
    }
}

impl Channel {
    /// A lone RO's channel: a fresh key, everything in memory.
    pub(crate) fn new() -> Result<Self, RoError> {
        Ok(Self::with_key(&fresh_key()?[..], false))
    }

    /// The channel of the instances sharing `store`: its key, its rows.
    pub(crate) fn shared(store: &RoStore) -> Result<Self, RoError> {
        Ok(Self::with_key(&store.channel_key()?, true))
    }

    fn with_key(key: &[u8], shared: bool) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            spent: Mutex::new(HashMap::new()),
            bindings: Bindings::default(),
            shared,
        }
    }

    /// A fresh nonce for `device` (hex).
    pub(crate) fn issue(&self, device: &DeviceId) -> String {
        let issued = now_ms();
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&issued.to_be_bytes());
        nonce[8..].copy_from_slice(&self.mac(device, issued).as_ref()[..MAC_LEN]);
        hex::encode(nonce)
    }

    fn mac(&self, device: &DeviceId, issued: u64) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(b"tresor-device-nonce\0");
        ctx.update(device.as_bytes());
        ctx.update(&issued.to_be_bytes());
        ctx.sign()
    }

    /// Whether `nonce` is one this process issued to `device` and still valid; its expiry.
    fn check(&self, device: &DeviceId, nonce: &[u8; NONCE_LEN]) -> Result<u64, RoError> {
        let stale = || RoError::DeviceNonce("unknown or expired nonce".into());
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&nonce[..8]);
        let issued = u64::from_be_bytes(issued);
        let expires = issued.saturating_add(NONCE_TTL_SECS * 1000);
        let now = now_ms();
        if issued > now.saturating_add(5_000) || expires < now {
            return Err(stale());
        }
        let tag = self.mac(device, issued);
        if !bool::from(tag.as_ref()[..MAC_LEN].ct_eq(&nonce[8..])) {
            return Err(stale());
        }
        Ok(expires)
    }

    /// Spends a verified request's nonce; a second spend is a replay.
    fn spend(&self, store: &RoStore, nonce: [u8; NONCE_LEN], expires: u64) -> Result<(), RoError> {
        if self.shared {
            return if store.spend_channel_nonce(&nonce, expires)? {
                Ok(())
            } else {
                Err(RoError::DeviceNonce("nonce already used: a replayed request".into()))
            };
        }
        let mut spent =
            self.spent.lock().map_err(|_| RoError::Store("nonce set poisoned".into()))?;
        let now = now_ms();
        if spent.len() > 10_000 {
            spent.retain(|_, until| *until >= now);
        }
        if spent.insert(nonce, expires).is_some() {
            return Err(RoError::DeviceNonce("nonce already used: a replayed request".into()));
        }
        Ok(())
    }
}

impl Ro {
    /// Every device request but the binding passes here first: the nonce must be one this RO
    /// issued to this device and unspent, the signature the bound AK's over the request.
    pub(crate) fn authenticate(
        &self,
        device: &DeviceId,
        method: &str,
        path: &str,
        nonce: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), RoError> {
        let unauthenticated = |why: &str| RoError::DeviceNotAuthenticated(why.to_owned());
        let nonce = nonce.and_then(protocol::device_auth::parse_nonce).ok_or_else(|| {
            RoError::DeviceNonce("no nonce: use the one this answer carries".into())
        })?;
        let expires = self.channel.check(device, &nonce)?;
        let signature = signature
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(|| unauthenticated("no request signature"))?;
        let ak = self.store.bound_ak(device)?.ok_or_else(|| {
            unauthenticated("no AK is bound to this device: bind one at /credential first")
        })?;
        let ak = Public::from_bytes(&ak).map_err(|e| RoError::Store(format!("bound AK: {e}")))?;
        RequestStatement::new(device.clone(), method, path, nonce, body)
            .verify(&ak, &signature)
            .map_err(|e| unauthenticated(&format!("request signature: {e}")))?;
        self.channel.spend(&self.store, nonce, expires)
    }

    /// A fresh nonce for the device's next request.
    pub(crate) fn next_nonce(&self, device: &DeviceId) -> String {
        self.channel.issue(device)
    }

    /// Binding, step 1: checks the EK certificate (the DRF's identity check) and the AK's
    /// attributes, and challenges the EK to release a secret for the AK's name. Nothing is
    /// written and no peer is called: an anonymous client learns only a challenge it cannot
    /// answer without the TPM.
    pub(crate) fn credential(
        &self,
        device: &DeviceId,
        request: CredentialRequest,
    ) -> Result<CredentialChallenge, RoError> {
        if self.store.device(device)?.is_none() {
            return Err(RoError::NotInCampaign(device.clone()));
        }
        self.check_identity(device, &request.ek_certificate, &request.ek_public)?;
        let ek = Public::from_bytes(&request.ek_public)
            .map_err(|e| RoError::Attach(format!("EK public area: {e}")))?;
        let ak = Public::from_bytes(&request.ak_public)
            .map_err(|e| RoError::Attach(format!("AK public area: {e}")))?;
        check_ak_attributes(&ak).map_err(RoError::Attach)?;
        let secret = CredentialSecret::random()
            .map_err(|_| RoError::Config("no randomness for a credential".into()))?;
        let made = make_credential(&ek, &ak.name(), secret.expose())
            .map_err(|e| RoError::Attach(format!("credential for the EK: {e}")))?;
        if self.channel.shared {
            let until = now_ms().saturating_add(BINDING_TTL.as_millis() as u64);
            self.store.open_binding(device, &request.ak_public, &sha256(secret.expose()), until)?;
        } else {
            self.channel.bindings.open(
                device,
                request.ak_public.into_vec(),
                secret,
                Instant::now(),
            )?;
        }
        Ok(CredentialChallenge {
            id_object: ByteBuf::from(made.id_object.as_bytes().to_vec()),
            encrypted_secret: ByteBuf::from(made.encrypted_secret.as_bytes().to_vec()),
        })
    }

    /// Binding, step 2: the secret proves the AK lives beside the EK; the AK is bound to the
    /// device (durably) and signs its requests from now on.
    pub(crate) fn credential_proof(
        &self,
        device: &DeviceId,
        proof: CredentialProof,
    ) -> Result<(), RoError> {
        let ak_public = if self.channel.shared {
            self.store.answer_binding(device, &sha256(&proof.secret), now_ms())?.ok_or_else(
                || {
                    RoError::DeviceNotAuthenticated(
                    "wrong credential secret or an expired challenge: the AK is not beside this EK"
                        .into(),
                )
                },
            )?
        } else {
            self.channel.bindings.answer(device, &proof.secret, Instant::now())?
        };
        self.store.bind_ak(device, &ak_public)?;
        tracing::info!(device = %device, "device AK bound");
        Ok(())
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

/// The shared channel's rows.
impl RoStore {
    fn channel_key(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, RoError> {
        let key = self.autocommit(|tx| {
            let row = tx.query_one("SELECT key FROM channel_key WHERE id = 1", &[])?;
            Ok(zeroize::Zeroizing::new(row.get::<Vec<u8>>(0)?))
        })?;
        if key.len() < 32 {
            return Err(RoError::Store("device channel key shorter than 32 bytes".into()));
        }
        Ok(key)
    }

    /// Whether `nonce` was unspent (and is spent now): one insert, so two instances
    /// presented the same request at once let exactly one through.
    fn spend_channel_nonce(&self, nonce: &[u8], until_ms: u64) -> Result<bool, RoError> {
        let now = ms(now_ms());
        self.autocommit(|tx| {
            // Spent nonces are kept until they expire; each spend sweeps a few expired ones.
            tx.execute(
                "DELETE FROM channel_spent WHERE nonce IN
                 (SELECT nonce FROM channel_spent WHERE until_ms < ?1 LIMIT 16)",
                args![now],
            )?;
            let inserted = tx.execute(
                "INSERT INTO channel_spent (nonce, until_ms) VALUES (?1, ?2) ON CONFLICT (nonce) DO NOTHING",
                args![nonce, ms(until_ms)],
            )?;
            Ok(inserted == 1)
        })
    }

    /// Keeps a binding challenge (the SHA-256 of its secret: the secret is never stored),
    /// one per AK, at most [`MAX_PENDING_PER_DEVICE`] per device (the oldest evicted).
    fn open_binding(
        &self,
        device: &DeviceId,
        ak_public: &[u8],
        secret_sha256: &[u8],
        until_ms: u64,
    ) -> Result<(), RoError> {
        let (id, now) = (device.to_hex(), ms(now_ms()));
        self.autocommit(|tx| {
            tx.execute(
                "DELETE FROM channel_bindings WHERE device_id = ?1 AND (until_ms <= ?2 OR ak_public = ?3)",
                args![&id, now, ak_public],
            )?;
            tx.execute(
                "DELETE FROM channel_bindings WHERE device_id = ?1 AND ak_public NOT IN
                 (SELECT ak_public FROM channel_bindings WHERE device_id = ?1
                  ORDER BY until_ms DESC LIMIT ?2)",
                args![&id, MAX_PENDING_PER_DEVICE as i64 - 1],
            )?;
            tx.execute(
                "INSERT INTO channel_bindings (device_id, ak_public, secret_sha256, until_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                args![&id, ak_public, secret_sha256, ms(until_ms)],
            )?;
            Ok(())
        })
    }

    /// The AK whose unexpired challenge the secret answers, which is then spent (one
    /// statement: at most one instance binds it). A wrong secret spends nothing.
    fn answer_binding(
        &self,
        device: &DeviceId,
        secret_sha256: &[u8],
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, RoError> {
        self.autocommit(|tx| {
            let row = tx.query_opt(
                "DELETE FROM channel_bindings
                 WHERE device_id = ?1 AND secret_sha256 = ?2 AND until_ms > ?3 RETURNING ak_public",
                args![device.to_hex(), secret_sha256, ms(now_ms)],
            )?;
            Ok(row.map(|r| r.get(0)).transpose()?)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn device(n: u8) -> DeviceId {
        let mut name = vec![0x00, 0x0B];
        name.extend([n; 32]);
        DeviceId::from_name(&name).unwrap()
    }

    fn nonce(hex_nonce: &str) -> [u8; NONCE_LEN] {
        protocol::device_auth::parse_nonce(hex_nonce).unwrap()
    }

    #[test]
    fn a_nonce_is_for_its_device_and_spent_once() {
        let channel = Channel::new().unwrap();
        let n = nonce(&channel.issue(&device(1)));
        let expires = channel.check(&device(1), &n).unwrap();
        assert!(matches!(channel.check(&device(2), &n), Err(RoError::DeviceNonce(_))));
        let store = RoStore::open_in_memory().unwrap();
        channel.spend(&store, n, expires).unwrap();
        assert!(matches!(channel.spend(&store, n, expires), Err(RoError::DeviceNonce(_))));
        // Another process's nonce (another key), a changed MAC, a changed issue time.
        let other = Channel::new().unwrap();
        assert!(other.check(&device(1), &n).is_err());
        let mut bent = nonce(&channel.issue(&device(1)));
        bent[NONCE_LEN - 1] ^= 1;
        assert!(channel.check(&device(1), &bent).is_err());
        let mut early = nonce(&channel.issue(&device(1)));
        early[7] ^= 1;
        assert!(channel.check(&device(1), &early).is_err());
    }

    #[test]
    fn an_expired_or_future_nonce_is_refused() {
        let channel = Channel::new().unwrap();
        let at = |issued: u64| {
            let mut n = [0u8; NONCE_LEN];
            n[..8].copy_from_slice(&issued.to_be_bytes());
            n[8..].copy_from_slice(&channel.mac(&device(1), issued).as_ref()[..MAC_LEN]);
            n
        };
        let now = now_ms();
        assert!(channel.check(&device(1), &at(now)).is_ok());
        let stale = now - NONCE_TTL_SECS * 1000 - 1000;
        assert!(matches!(channel.check(&device(1), &at(stale)), Err(RoError::DeviceNonce(_))));
        assert!(matches!(
            channel.check(&device(1), &at(now + 60_000)),
            Err(RoError::DeviceNonce(_))
        ));
    }

    fn secret(byte: u8) -> CredentialSecret {
        CredentialSecret::new([byte; CredentialSecret::LEN])
    }

    #[test]
    fn others_challenges_do_not_void_the_devices_own() {
        let bindings = Bindings::default();
        let now = Instant::now();
        bindings.open(&device(1), b"own AK".to_vec(), secret(1), now).unwrap();
        // An attacker asks for three challenges for AKs it holds, and guesses answers.
        for n in 2..5u8 {
            bindings.open(&device(1), vec![n], secret(n), now).unwrap();
        }
        for _ in 0..10 {
            assert!(matches!(
                bindings.answer(&device(1), &[9; CredentialSecret::LEN], now),
                Err(RoError::DeviceNotAuthenticated(_))
            ));
        }
        assert_eq!(bindings.answer(&device(1), secret(1).expose(), now).unwrap(), b"own AK");
        // Spent: the same answer binds nothing again.
        assert!(bindings.answer(&device(1), secret(1).expose(), now).is_err());
        // Another device's challenge is not this one's.
        bindings.open(&device(2), b"two".to_vec(), secret(7), now).unwrap();
        assert!(bindings.answer(&device(1), secret(7).expose(), now).is_err());
        assert_eq!(bindings.answer(&device(2), secret(7).expose(), now).unwrap(), b"two");
    }

    #[test]
    fn a_device_holds_a_few_challenges_and_they_expire() {
        let bindings = Bindings::default();
        let now = Instant::now();
        for n in 0..=MAX_PENDING_PER_DEVICE as u8 {
            bindings.open(&device(1), vec![n], secret(n), now).unwrap();
        }
        // The oldest was evicted; the others answer.
        assert!(bindings.answer(&device(1), secret(0).expose(), now).is_err());
        assert_eq!(bindings.answer(&device(1), secret(1).expose(), now).unwrap(), [1]);
        // Asking again for the same AK replaces its challenge.
        bindings.open(&device(1), vec![2], secret(42), now).unwrap();
        assert!(bindings.answer(&device(1), secret(2).expose(), now).is_err());
        assert_eq!(bindings.answer(&device(1), secret(42).expose(), now).unwrap(), [2]);
        // Past its time a challenge is gone.
        let later = now + BINDING_TTL + Duration::from_secs(1);
        assert!(bindings.answer(&device(1), secret(3).expose(), later).is_err());
    }

    /// The channel of RO instances sharing a PostgreSQL store: two instances, one database.
    fn shared_pair() -> (RoStore, RoStore) {
        let url = storage::pg_server::scratch_database("ro_channel").unwrap();
        let location = storage::Location::Postgres(url);
        let open = || RoStore::open_at(&location, storage::OpenMode::CreateIfMissing).unwrap();
        (open(), open())
    }

    #[test]
    fn instances_sharing_a_store_accept_each_others_nonces_and_spend_them_once() {
        let (a, b) = shared_pair();
        let (on_a, on_b) = (Channel::shared(&a).unwrap(), Channel::shared(&b).unwrap());
        let n = nonce(&on_a.issue(&device(1)));
        let expires = on_b.check(&device(1), &n).unwrap();
        assert!(on_b.check(&device(2), &n).is_err(), "bound to its device");
        on_b.spend(&b, n, expires).unwrap();
        assert!(matches!(on_a.spend(&a, n, expires), Err(RoError::DeviceNonce(_))), "a replay");
        assert!(matches!(on_b.spend(&b, n, expires), Err(RoError::DeviceNonce(_))));
        // A lone RO's nonce (its own key) is not the shared channel's.
        let lone = Channel::new().unwrap();
        assert!(on_a.check(&device(1), &nonce(&lone.issue(&device(1)))).is_err());
    }

    #[test]
    fn a_binding_challenge_of_one_instance_is_answered_once_at_another() {
        let (a, b) = shared_pair();
        let until = now_ms() + 60_000;
        a.open_binding(&device(1), b"own AK", &sha256(secret(1).expose()), until).unwrap();
        // Wrong secrets spend nothing; the right one binds once, at the other instance.
        for guess in 2..6u8 {
            assert_eq!(
                b.answer_binding(&device(1), &sha256(secret(guess).expose()), now_ms()).unwrap(),
                None
            );
        }
        assert_eq!(
            b.answer_binding(&device(2), &sha256(secret(1).expose()), now_ms()).unwrap(),
            None
        );
        let bound = b.answer_binding(&device(1), &sha256(secret(1).expose()), now_ms()).unwrap();
        assert_eq!(bound.as_deref(), Some(&b"own AK"[..]));
        assert_eq!(
            a.answer_binding(&device(1), &sha256(secret(1).expose()), now_ms()).unwrap(),
            None
        );
        // At most a few per device, the oldest evicted; past its time a challenge is gone.
        for n in 0..=MAX_PENDING_PER_DEVICE as u8 {
            a.open_binding(&device(3), &[n], &sha256(secret(n).expose()), until + u64::from(n))
                .unwrap();
        }
        assert_eq!(
            b.answer_binding(&device(3), &sha256(secret(0).expose()), now_ms()).unwrap(),
            None
        );
        assert!(
            b.answer_binding(&device(3), &sha256(secret(1).expose()), now_ms()).unwrap().is_some()
        );
        assert_eq!(
            b.answer_binding(&device(3), &sha256(secret(2).expose()), until + 10).unwrap(),
            None
        );
    }
}
