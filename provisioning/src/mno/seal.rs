//! Encryption at rest of subscriber secrets (DESIGN.md §3 "Secrets"): AES-256-GCM (NIST SP
//! 800-38D, via ring) under the configured storage key.
//!
//! Every encryption draws a fresh random 96-bit nonce, so no nonce is ever reused under the
//! key (SP 800-38D §8.2.2 allows 2³² random-nonce encryptions per key; an operator store
//! makes a handful per subscriber). The additional authenticated data binds the ciphertext
//! to its row and column — `tresor-mno-store/v1 ‖ 0 ‖ owner ‖ 0 ‖ field` with the owner the
//! IMSI — so a ciphertext copied into another row or field does not decrypt. A stored value
//! is `nonce (12) ‖ ciphertext ‖ tag (16)`.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::config::StorageKey;
use super::error::{MnoError, Result};

const AAD_LABEL: &[u8] = b"tresor-mno-store/v1";
const TAG_LEN: usize = 16;

/// Which secret a ciphertext holds: part of the AAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    K,
    Opc,
    Kic,
    Kid,
    Xres,
    /// A signed profile (COSE_Sign1 whose payload holds K, OPc and the OTA keys).
    Profile,
    /// The store's key check value, proving at start-up that the key is the right one.
    KeyCheck,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::K => "k",
            Field::Opc => "opc",
            Field::Kic => "kic",
            Field::Kid => "kid",
            Field::Xres => "xres",
            Field::Profile => "profile",
            Field::KeyCheck => "key-check",
        }
    }
}

/// The AEAD of the store.
pub(crate) struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    pub(crate) fn new(key: &StorageKey) -> Result<Self> {
        let unbound = UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| MnoError::Crypto)?;
        Ok(Self { key: LessSafeKey::new(unbound), rng: SystemRandom::new() })
    }

    /// Encrypts `plaintext` for column `field` of the row `owner`.
    pub(crate) fn seal(&self, owner: &str, field: Field, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| MnoError::Rng)?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(NONCE_LEN);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(owner, field)),
                &mut body,
            )
            .map_err(|_| MnoError::Crypto)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts a value stored by [`Sealer::seal`] for the same `owner` and `field`.
    pub(crate) fn open(
        &self,
        owner: &str,
        field: Field,
        stored: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let Some((nonce, sealed)) = stored.split_first_chunk::<NONCE_LEN>() else {
            return Err(MnoError::Corrupt(field.name()));
        };
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad(owner, field)),
                &mut buf,
            )
            .map_err(|_| MnoError::Corrupt(field.name()))?;
        Ok(Zeroizing::new(plain.to_vec()))
    }

    /// [`Sealer::open`] into a fixed-size array.
    pub(crate) fn open_array<const N: usize>(
        &self,
        owner: &str,
        field: Field,
        stored: &[u8],
    ) -> Result<Zeroizing<[u8; N]>> {
        let plain = self.open(owner, field, stored)?;
        let arr: [u8; N] =
            plain.as_slice().try_into().map_err(|_| MnoError::Corrupt(field.name()))?;
        Ok(Zeroizing::new(arr))
    }
}

fn aad(owner: &str, field: Field) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + owner.len() + 16);
    aad.extend_from_slice(AAD_LABEL);
    aad.push(0);
    aad.extend_from_slice(owner.as_bytes());
    aad.push(0);
    aad.extend_from_slice(field.name().as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(&StorageKey::new([byte; 32])).unwrap()
    }

    #[test]
    fn round_trips_with_fresh_nonces() {
        let s = sealer(1);
        let a = s.seal("001010000000001", Field::K, &[7; 16]).unwrap();
        let b = s.seal("001010000000001", Field::K, &[7; 16]).unwrap();
        assert_ne!(a, b, "a fresh nonce per encryption");
        assert_eq!(a.len(), 12 + 16 + 16);
        assert_eq!(*s.open_array::<16>("001010000000001", Field::K, &a).unwrap(), [7; 16]);
    }

    #[test]
    fn ciphertexts_do_not_move_between_rows_fields_or_keys() {
        let s = sealer(1);
        let k = s.seal("001010000000001", Field::K, &[7; 16]).unwrap();
        assert!(matches!(s.open("001010000000002", Field::K, &k), Err(MnoError::Corrupt("k"))));
        assert!(matches!(s.open("001010000000001", Field::Opc, &k), Err(MnoError::Corrupt("opc"))));
        assert!(sealer(2).open("001010000000001", Field::K, &k).is_err());
        let mut flipped = k.clone();
        flipped[20] ^= 1;
        assert!(s.open("001010000000001", Field::K, &flipped).is_err());
        assert!(s.open("001010000000001", Field::K, &k[..11]).is_err());
    }
}
