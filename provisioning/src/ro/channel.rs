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

use super::Ro;
use super::error::RoError;
use super::store::now_ms;

/// Bindings under way (challenge issued, proof pending) the RO keeps at most.
const MAX_PENDING: usize = 100_000;
/// Challenges one device may have open at once: an anonymous client asking for more (for
/// an AK it does not hold) replaces its own oldest, never crowding out the device's.
const MAX_PENDING_PER_DEVICE: usize = 4;
/// How long a binding challenge may be answered.
const BINDING_TTL: Duration = Duration::from_secs(120);
/// Length of a nonce's MAC.
const MAC_LEN: usize = NONCE_LEN - 8;

/// The RO's in-memory state of the device channel.
pub(crate) struct Channel {
    key: hmac::Key,
    spent: Mutex<HashMap<[u8; NONCE_LEN], u64>>,
    bindings: Bindings,
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
    pub(crate) fn new() -> Result<Self, RoError> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| RoError::Config("no randomness for the device channel key".into()))?;
        Ok(Self { key, spent: Mutex::new(HashMap::new()), bindings: Bindings::default() })
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
    fn spend(&self, nonce: [u8; NONCE_LEN], expires: u64) -> Result<(), RoError> {
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
        self.channel.spend(nonce, expires)
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
        self.channel.bindings.open(device, request.ak_public.into_vec(), secret, Instant::now())?;
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
        let ak_public = self.channel.bindings.answer(device, &proof.secret, Instant::now())?;
        self.store.bind_ak(device, &ak_public)?;
        tracing::info!(device = %device, "device AK bound");
        Ok(())
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
        channel.spend(n, expires).unwrap();
        assert!(matches!(channel.spend(n, expires), Err(RoError::DeviceNonce(_))));
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
}
