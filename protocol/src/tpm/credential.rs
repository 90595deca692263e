//! TPM2_MakeCredential in software (TPM 2.0 Part 1 §24 "Credential Protection", Part 3
//! §12.6, Part 1 Annex B.10.3 / C.6.4 for the RSA and ECC secret sharing): the verifier
//! wraps a credential so that only the TPM holding the EK, and only for an object with the
//! given name loaded on that TPM, can recover it with TPM2_ActivateCredential.
//!
//! 1. A seed is shared with the EK. RSA EK: a random nameAlg-sized seed, encrypted with
//!    RSA-OAEP (hash = EK nameAlg, label "IDENTITY\0"). ECC EK: an ephemeral ECDH key on
//!    the EK's curve, Z = x-coordinate of the shared point,
//!    seed = KDFe(nameAlg, Z, "IDENTITY", ephemeral.x, EK.x, digest bits); the encrypted
//!    secret is the ephemeral public point as TPMS_ECC_POINT.
//! 2. symKey = KDFa(nameAlg, seed, "STORAGE", objectName, "", EK symmetric key bits);
//!    encIdentity = AES-CFB(symKey, IV = 0, TPM2B_DIGEST(credential)).
//! 3. HMACkey = KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits);
//!    outerHMAC = HMAC(HMACkey, encIdentity ‖ objectName).
//! 4. TPM2B_ID_OBJECT = TPM2B_DIGEST(outerHMAC) ‖ encIdentity.

use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use ring::agreement;
use ring::rand::{SecureRandom, SystemRandom};
use rsa::rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::alg::HashAlg;
use super::error::CredentialError;
use super::kdf::{kdfa, kdfe};
use super::public::{
    EccCurve, EccPoint, ObjectAttributes, Public, PublicKey, SymAlgorithm, SymDefObject, SymMode,
};
use super::spki::Spki;
use super::wire::{Digest, EccParameter, EncryptedSecret, IdObject, Marshal, Name, put_sized};

/// The label of credential protection, with the terminating NUL the TPM includes.
pub const IDENTITY_LABEL: &[u8] = b"IDENTITY\0";
const STORAGE_LABEL: &[u8] = b"STORAGE\0";
const INTEGRITY_LABEL: &[u8] = b"INTEGRITY\0";

/// The output of MakeCredential, in the form tss-esapi 7.7 takes for
/// `Context::activate_credential`: `IdObject::try_from(id_object.as_bytes())` and
/// `EncryptedSecret::try_from(encrypted_secret.as_bytes())` (the TPM2B bodies, no size).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MadeCredential {
    /// TPM2B_ID_OBJECT.credential: TPM2B_DIGEST(integrityHMAC) ‖ encIdentity.
    pub id_object: IdObject,
    /// TPM2B_ENCRYPTED_SECRET.secret: the OAEP ciphertext or the marshalled ephemeral point.
    pub encrypted_secret: EncryptedSecret,
}

/// What MakeCredential needs of the EK, checked once.
struct EkProtection {
    name_alg: HashAlg,
    sym_key_bits: u16,
}

impl EkProtection {
    /// The EK must be a restricted decryption (storage) key with an AES-CFB symmetric
    /// algorithm, as TPM2_MakeCredential requires of its handle.
    fn of(ek: &Public) -> Result<Self, CredentialError> {
        let attrs = ek.attributes;
        if !attrs.contains(ObjectAttributes::RESTRICTED | ObjectAttributes::DECRYPT)
            || attrs.contains(ObjectAttributes::SIGN_ENCRYPT)
        {
            return Err(CredentialError::NotAStorageKey(attrs.to_string()));
        }
        // KDFa and the outer HMAC use the nameAlg's HMAC, which SM3_256 lacks here.
        if ek.name_alg.hmac_algorithm().is_none() {
            return Err(CredentialError::UnsupportedNameAlg(ek.name_alg));
        }
        match ek.key.symmetric() {
            SymDefObject::Cipher {
                algorithm: SymAlgorithm::Aes,
                key_bits: bits @ (128 | 192 | 256),
                mode: SymMode::Cfb,
            } => Ok(Self { name_alg: ek.name_alg, sym_key_bits: bits }),
            _ => Err(CredentialError::UnsupportedSymmetric),
        }
    }
}

/// Wraps `credential` (at most the EK nameAlg's digest size, e.g. a 32-byte secret) for the
/// TPM holding `ek`, bound to the object named `object_name` (the AK's name).
pub fn make_credential(
    ek: &Public,
    object_name: &Name,
    credential: &[u8],
) -> Result<MadeCredential, CredentialError> {
    let protection = EkProtection::of(ek)?;
    check_object_name(object_name)?;
    let max = protection.name_alg.size();
    if credential.len() > max {
        return Err(CredentialError::CredentialTooLarge { size: credential.len(), max });
    }
    let rng = SystemRandom::new();
    let (seed, encrypted_secret) = match &ek.key {
        PublicKey::Rsa { .. } => share_seed_rsa(protection.name_alg, ek, &rng)?,
        PublicKey::Ecc { parms, point } => {
            share_seed_ecc(protection.name_alg, parms.curve, point, ek, &rng)?
        }
    };
    let id_object = protect(&protection, &seed, object_name, credential)?;
    Ok(MadeCredential { id_object, encrypted_secret })
}

/// Steps 2–4: the deterministic part, given the seed.
fn protect(
    p: &EkProtection,
    seed: &[u8],
    name: &Name,
    credential: &[u8],
) -> Result<IdObject, CredentialError> {
    let sym_key = kdfa(p.name_alg, seed, STORAGE_LABEL, name, &[], u32::from(p.sym_key_bits))?;
    let mut enc_identity = Zeroizing::new(Vec::with_capacity(2 + credential.len()));
    put_sized(&mut enc_identity, |out| out.extend_from_slice(credential));
    aes_cfb_encrypt(&sym_key, &mut enc_identity)?;
    let digest_bits = u32::try_from(p.name_alg.size() * 8).unwrap_or(0);
    let hmac_key = kdfa(p.name_alg, seed, INTEGRITY_LABEL, &[], &[], digest_bits)?;
    let outer_hmac = p
        .name_alg
        .hmac_parts(&hmac_key, &[&enc_identity, name])
        .ok_or(CredentialError::UnsupportedNameAlg(p.name_alg))?;
    let outer_hmac = Digest::from_bounded(outer_hmac);
    let mut id_object = outer_hmac.to_bytes();
    id_object.extend_from_slice(&enc_identity);
    IdObject::new(id_object)
        .map_err(|_| CredentialError::CredentialTooLarge { size: credential.len(), max: 64 })
}

fn aes_cfb_encrypt(key: &[u8], buf: &mut [u8]) -> Result<(), CredentialError> {
    let iv = [0u8; 16];
    let bad = |_| CredentialError::UnsupportedSymmetric;
    match key.len() {
        16 => {
            cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(key, &iv).map_err(bad)?.encrypt(buf)
        }
        24 => {
            cfb_mode::Encryptor::<aes::Aes192>::new_from_slices(key, &iv).map_err(bad)?.encrypt(buf)
        }
        32 => {
            cfb_mode::Encryptor::<aes::Aes256>::new_from_slices(key, &iv).map_err(bad)?.encrypt(buf)
        }
        _ => return Err(CredentialError::UnsupportedSymmetric),
    }
    Ok(())
}

/// An object name: nameAlg ‖ H_nameAlg(…) (TPM 2.0 Part 1 §16), not a handle.
fn check_object_name(name: &Name) -> Result<(), CredentialError> {
    let [hi, lo, digest @ ..] = name.as_bytes() else {
        return Err(CredentialError::BadObjectName("shorter than a name algorithm"));
    };
    let alg = HashAlg::from_id(u16::from_be_bytes([*hi, *lo]))
        .ok_or(CredentialError::BadObjectName("unknown name algorithm"))?;
    if digest.len() != alg.size() {
        return Err(CredentialError::BadObjectName(
            "digest length does not match the name algorithm",
        ));
    }
    Ok(())
}

/// RSA secret sharing (Part 1 Annex B.10.3): OAEP-encrypt a random seed.
fn share_seed_rsa(
    name_alg: HashAlg,
    ek: &Public,
    rng: &SystemRandom,
) -> Result<(Zeroizing<Vec<u8>>, EncryptedSecret), CredentialError> {
    let Ok(Spki::Rsa { modulus, exponent }) = Spki::from_public(ek) else {
        return Err(CredentialError::BadEkKey("RSA modulus does not match keyBits"));
    };
    let key =
        rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(&modulus), rsa::BigUint::from(exponent))
            .map_err(|_| CredentialError::BadEkKey("RSA key refused (size or exponent)"))?;
    let mut seed = Zeroizing::new(vec![0u8; name_alg.size()]);
    rng.fill(&mut seed).map_err(|_| CredentialError::Random)?;
    let mut oaep_rng = PrefilledRng::new(rng)?;
    let label = "IDENTITY\0";
    let result = match name_alg {
        HashAlg::Sha1 => {
            key.encrypt(&mut oaep_rng, rsa::Oaep::new_with_label::<sha1::Sha1, _>(label), &seed)
        }
        HashAlg::Sha256 => {
            key.encrypt(&mut oaep_rng, rsa::Oaep::new_with_label::<sha2::Sha256, _>(label), &seed)
        }
        HashAlg::Sha384 => {
            key.encrypt(&mut oaep_rng, rsa::Oaep::new_with_label::<sha2::Sha384, _>(label), &seed)
        }
        HashAlg::Sha512 => {
            key.encrypt(&mut oaep_rng, rsa::Oaep::new_with_label::<sha2::Sha512, _>(label), &seed)
        }
        // EkProtection::of refused it already; kept so that the refusal is local too.
        HashAlg::Sm3_256 => return Err(CredentialError::UnsupportedNameAlg(name_alg)),
    };
    let ciphertext = result
        .map_err(|_| CredentialError::BadEkKey("RSA key too small for OAEP with this hash"))?;
    if oaep_rng.overrun {
        return Err(CredentialError::Random);
    }
    let secret = EncryptedSecret::new(ciphertext)
        .map_err(|_| CredentialError::BadEkKey("RSA key larger than 4096 bits"))?;
    Ok((seed, secret))
}

/// ECC secret sharing (Part 1 Annex C.6.4): one-pass ECDH with an ephemeral key, then KDFe.
fn share_seed_ecc(
    name_alg: HashAlg,
    curve: EccCurve,
    ek_point: &EccPoint,
    ek: &Public,
    rng: &SystemRandom,
) -> Result<(Zeroizing<Vec<u8>>, EncryptedSecret), CredentialError> {
    let alg = match curve {
        EccCurve::NistP256 => &agreement::ECDH_P256,
        EccCurve::NistP384 => &agreement::ECDH_P384,
        other => return Err(CredentialError::UnsupportedCurve(other.name())),
    };
    let ek_sec1 = Spki::from_public(ek)
        .ok()
        .and_then(|k| k.sec1_point())
        .ok_or(CredentialError::BadEkKey("EC point does not fit the curve"))?;
    let private =
        agreement::EphemeralPrivateKey::generate(alg, rng).map_err(|_| CredentialError::Random)?;
    let public = private.compute_public_key().map_err(|_| CredentialError::Random)?;
    let size = curve.coordinate_size();
    let xy = public.as_ref().get(1..).unwrap_or_default();
    if xy.len() != 2 * size {
        return Err(CredentialError::BadEkKey("ephemeral point has the wrong size"));
    }
    let (ex, ey) = xy.split_at(size);
    let z = agreement::agree_ephemeral(
        private,
        &agreement::UnparsedPublicKey::new(alg, &ek_sec1),
        |z| Zeroizing::new(z.to_vec()),
    )
    .map_err(|_| CredentialError::BadEkKey("EC point is not on the curve"))?;
    let digest_bits = u32::try_from(name_alg.size() * 8).unwrap_or(0);
    // partyVInfo is the EK's x exactly as its public area holds it, as the TPM uses it.
    let seed = kdfe(name_alg, &z, IDENTITY_LABEL, ex, &ek_point.x, digest_bits)?;
    // Neither conversion can fail: a coordinate of a ring curve fits TPM2B_ECC_PARAMETER.
    let too_large = |_| CredentialError::BadEkKey("ephemeral point does not fit a TPM2B");
    let point = EccPoint {
        x: EccParameter::new(ex).map_err(too_large)?,
        y: EccParameter::new(ey).map_err(too_large)?,
    };
    let secret = EncryptedSecret::new(point.to_bytes()).map_err(too_large)?;
    Ok((seed, secret))
}

/// Random bytes drawn from ring up front for the rsa crate's OAEP padding, whose RNG
/// trait cannot report failure. Asking for more than was drawn sets `overrun` and the
/// caller discards the result.
struct PrefilledRng {
    bytes: Zeroizing<[u8; 64]>,
    used: usize,
    overrun: bool,
}

impl PrefilledRng {
    fn new(rng: &SystemRandom) -> Result<Self, CredentialError> {
        let mut bytes = Zeroizing::new([0u8; 64]);
        rng.fill(&mut bytes[..]).map_err(|_| CredentialError::Random)?;
        Ok(Self { bytes, used: 0, overrun: false })
    }
}

impl RngCore for PrefilledRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        match self.bytes.get(self.used..self.used + dest.len()) {
            Some(src) => {
                dest.copy_from_slice(src);
                self.used += dest.len();
            }
            None => {
                self.overrun = true;
                dest.fill(0);
            }
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for PrefilledRng {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::public::tests::{AK_ECC_TPM2B, EK_ECC_TPM2B};
    use cfb_mode::cipher::AsyncStreamCipher;

    fn ek() -> Public {
        Public::from_tpm2b(
            &hex::decode(EK_ECC_TPM2B.split_whitespace().collect::<String>()).unwrap(),
        )
        .unwrap()
    }

    fn ak_name() -> Name {
        Public::from_tpm2b(
            &hex::decode(AK_ECC_TPM2B.split_whitespace().collect::<String>()).unwrap(),
        )
        .unwrap()
        .name()
    }

    /// Software ActivateCredential given the seed: checks the HMAC and decrypts.
    fn unwrap_with_seed(
        p: &EkProtection,
        seed: &[u8],
        name: &[u8],
        id_object: &[u8],
    ) -> Option<Vec<u8>> {
        let d = p.name_alg.size();
        let (hmac, enc) = (id_object.get(2..2 + d)?, id_object.get(2 + d..)?);
        let hmac_key = kdfa(p.name_alg, seed, b"INTEGRITY", &[], &[], (d * 8) as u32).ok()?;
        if p.name_alg.hmac_parts(&hmac_key, &[enc, name])? != hmac {
            return None;
        }
        let key = kdfa(p.name_alg, seed, b"STORAGE", name, &[], u32::from(p.sym_key_bits)).ok()?;
        let mut plain = enc.to_vec();
        cfb_mode::Decryptor::<aes::Aes128>::new_from_slices(&key, &[0u8; 16])
            .ok()?
            .decrypt(&mut plain);
        let len = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
        (plain.len() == 2 + len).then(|| plain[2..].to_vec())
    }

    /// Independent computation with Python 3 (hmac, hashlib and the `cryptography` package's
    /// AES-CFB) of steps 2–4 for seed = 32 × 0x5A, AES-128, SHA-256, the AK name of
    /// `AK_ECC_TPM2B` and credential = 00 01 … 1F.
    #[test]
    fn protect_matches_an_independent_computation() {
        let p = EkProtection { name_alg: HashAlg::Sha256, sym_key_bits: 128 };
        let credential: Vec<u8> = (0u8..32).collect();
        let id_object = protect(&p, &[0x5A; 32], &ak_name(), &credential).unwrap();
        assert_eq!(hex::encode(id_object.as_bytes()), PROTECT_PY);
        assert_eq!(unwrap_with_seed(&p, &[0x5A; 32], &ak_name(), &id_object).unwrap(), credential);
        assert!(unwrap_with_seed(&p, &[0x5B; 32], &ak_name(), &id_object).is_none());
    }
    const PROTECT_PY: &str = "0020f0a00a4c05403246722d6853bc75bea8c890c5cdbb81c9b58e2f6a43a955f880ab75d93159e8ba82e1888ee75984322bb59ecf55d85fe19bbad5866f2b9d1c65909f";

    /// A full ECC round trip in software: the "EK" private key is a ring ephemeral key,
    /// used once to recompute Z from the credential's ephemeral point.
    #[test]
    fn ecc_round_trip_in_software() {
        let rng = SystemRandom::new();
        let ek_private =
            agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng).unwrap();
        let ek_public = ek_private.compute_public_key().unwrap();
        let mut ek = ek();
        if let PublicKey::Ecc { point, .. } = &mut ek.key {
            point.x = EccParameter::new(&ek_public.as_ref()[1..33]).unwrap();
            point.y = EccParameter::new(&ek_public.as_ref()[33..]).unwrap();
        }
        let name = ak_name();
        let made = make_credential(&ek, &name, b"a secret of 32 bytes, not more..").unwrap();
        let point = crate::tpm::wire::Unmarshal::from_bytes(made.encrypted_secret.as_bytes())
            .map(|p: EccPoint| p)
            .unwrap();
        assert_eq!((point.x.len(), point.y.len()), (32, 32));
        let peer = [&[4u8][..], &point.x, &point.y].concat();
        let z = agreement::agree_ephemeral(
            ek_private,
            &agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &peer),
            |z| z.to_vec(),
        )
        .unwrap();
        let seed =
            kdfe(HashAlg::Sha256, &z, b"IDENTITY", &point.x, &ek_public.as_ref()[1..33], 256)
                .unwrap();
        let p = EkProtection::of(&ek).unwrap();
        assert_eq!(
            unwrap_with_seed(&p, &seed, &name, &made.id_object).unwrap(),
            b"a secret of 32 bytes, not more.."
        );
        // Bound to the name: another object's name does not pass the HMAC.
        let mut other = name.to_vec();
        other[5] ^= 1;
        assert!(unwrap_with_seed(&p, &seed, &other, &made.id_object).is_none());
    }

    #[test]
    fn refuses_what_makecredential_refuses() {
        let name = ak_name();
        assert_eq!(
            make_credential(&ek(), &name, &[0; 33]),
            Err(CredentialError::CredentialTooLarge { size: 33, max: 32 })
        );
        let ak = Public::from_tpm2b(
            &hex::decode(AK_ECC_TPM2B.split_whitespace().collect::<String>()).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            make_credential(&ak, &name, b"x"),
            Err(CredentialError::NotAStorageKey(_))
        ));
        let mut no_aes = ek();
        if let PublicKey::Ecc { parms, .. } = &mut no_aes.key {
            parms.symmetric = SymDefObject::Null;
        }
        assert_eq!(
            make_credential(&no_aes, &name, b"x"),
            Err(CredentialError::UnsupportedSymmetric)
        );
        assert!(matches!(
            make_credential(&ek(), &Name::new(vec![0x40, 0, 0, 1]).unwrap(), b"x"),
            Err(CredentialError::BadObjectName(_))
        ));
        let mut off_curve = ek();
        if let PublicKey::Ecc { point, .. } = &mut off_curve.key {
            point.y = EccParameter::new(vec![1; 32]).unwrap();
        }
        assert!(matches!(
            make_credential(&off_curve, &name, b"x"),
            Err(CredentialError::BadEkKey(_))
        ));
        // An SM3_256 name algorithm parses (it is a PCR bank) but has no HMAC here.
        let mut sm3 = ek();
        sm3.name_alg = HashAlg::Sm3_256;
        assert_eq!(
            make_credential(&sm3, &name, b"x"),
            Err(CredentialError::UnsupportedNameAlg(HashAlg::Sm3_256))
        );
    }
}
