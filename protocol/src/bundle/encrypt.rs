//! The outer bundle: the signed profile encrypted to the device's TPM-resident bundle key
//! as a COSE_Encrypt (RFC 9052 §5.1, tag 96) with one recipient, direct key agreement
//! ECDH-ES + HKDF-256 (RFC 9053 §6.3) and A256GCM content encryption.
//!
//! The device id and the EAR hash are bound twice: as the external AAD of the content's
//! Enc_structure (what the receiver expects), and as two private-use parameters of the
//! content's protected header (what the sender meant), so a bundle delivered to the wrong
//! device or with the wrong EAR is refused with a precise error before any key agreement,
//! and an altered header fails the AEAD. `docs/bundle.md` gives the bytes.

use std::fmt;

use coset::cbor::value::Value;
use coset::iana::{self, EnumI64};
use coset::{
    CoseEncrypt, CoseEncryptBuilder, CoseRecipientBuilder, HeaderBuilder, TaggedCborSerializable,
};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::cose::{self, IV_LEN, alg_name, has_alg, header_value};
use super::{BundleError, MAX_BUNDLE_LEN, MAX_SIGNED_PROFILE_LEN};
use crate::ids::DeviceId;

/// Private-use header parameter (RFC 9052 §16.2: labels below −65536) naming the device the
/// bundle is for: the TPM name of its EK, bstr.
pub const HEADER_DEVICE_ID: i64 = -65537;
/// Private-use header parameter holding SHA-256 of the EAR the bundle was released on, bstr.
pub const HEADER_EAR_HASH: i64 = -65538;

/// external_aad of the content's Enc_structure: the device id (TPM name: nameAlg, 2 bytes
/// big-endian, ‖ digest) ‖ SHA-256(EAR). The name algorithm fixes the name's length, so
/// the concatenation is unambiguous.
pub fn external_aad(device_id: &DeviceId, ear_hash: &[u8; 32]) -> Vec<u8> {
    [device_id.as_bytes(), ear_hash.as_slice()].concat()
}

/// Encrypts `signed_profile` (the inner COSE_Sign1) to the bundle key (x, y) for
/// `device_id`, bound to the EAR whose SHA-256 is `ear_hash`. A fresh ephemeral P-256 key
/// and IV are drawn for every call; a recipient key that is not a P-256 point is refused.
pub fn encrypt_bundle(
    signed_profile: &[u8],
    recipient_x: &[u8; 32],
    recipient_y: &[u8; 32],
    device_id: &DeviceId,
    ear_hash: &[u8; 32],
) -> Result<Vec<u8>, BundleError> {
    if signed_profile.len() > MAX_SIGNED_PROFILE_LEN {
        return Err(BundleError::TooLarge {
            what: "signed profile",
            len: signed_profile.len(),
            max: MAX_SIGNED_PROFILE_LEN,
        });
    }
    let rng = SystemRandom::new();
    let mut iv = [0u8; IV_LEN];
    rng.fill(&mut iv).map_err(|_| BundleError::Rng)?;
    let ephemeral =
        EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng).map_err(|_| BundleError::Rng)?;
    let public = ephemeral.compute_public_key().map_err(|_| BundleError::Rng)?;
    let (eph_x, eph_y) = cose::coordinates(public.as_ref())
        .ok_or(BundleError::Encode("ephemeral public key".into()))?;

    let recipient = CoseRecipientBuilder::new()
        .protected(HeaderBuilder::new().algorithm(iana::Algorithm::ECDH_ES_HKDF_256).build())
        .unprotected(
            HeaderBuilder::new()
                .value(
                    iana::HeaderAlgorithmParameter::EphemeralKey.to_i64(),
                    cose::ec2_public_key(&eph_x, &eph_y)?,
                )
                .build(),
        )
        .ciphertext(Vec::new())
        .build();
    let context = cose::kdf_context(&recipient.protected)?;
    let peer = UnparsedPublicKey::new(
        &agreement::ECDH_P256,
        cose::sec1_uncompressed(recipient_x, recipient_y),
    );
    let cek = agreement::agree_ephemeral(ephemeral, &peer, |z| cose::derive_cek(z, &context))
        .map_err(|_| BundleError::InvalidRecipientKey)??;

    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::A256GCM)
        .value(HEADER_DEVICE_ID, Value::Bytes(device_id.as_bytes().to_vec()))
        .value(HEADER_EAR_HASH, Value::Bytes(ear_hash.to_vec()))
        .build();
    let message = CoseEncryptBuilder::new()
        .protected(protected)
        .unprotected(HeaderBuilder::new().iv(iv.to_vec()).build())
        .add_recipient(recipient)
        .try_create_ciphertext(signed_profile, &external_aad(device_id, ear_hash), |pt, aad| {
            cose::seal(&cek, &iv, aad, pt)
        })?
        .build();
    message.to_tagged_vec().map_err(|e| BundleError::Encode(e.to_string()))
}

/// Decrypts a bundle on the device. `zgen` computes Z, the x-coordinate of the ECDH shared
/// point, from the ephemeral public key (x, y): on a device, TPM2_ECDH_ZGen with the bundle
/// key under its PolicyPCR session. Checks, each with its own error, in this order: size,
/// COSE_Encrypt structure (tagged), no critical headers, no algorithm in an unprotected
/// header, the content algorithm A256GCM, the
/// bundle's device id and EAR hash parameters against `device_id` and `ear_hash`, the IV, one
/// recipient with ECDH-ES + HKDF-256 and no ciphertext, the ephemeral key (EC2 P-256, on
/// the curve); then Z, the CEK and the AEAD over the external AAD. Returns the plaintext,
/// the signed profile, which the caller verifies with [`super::verify_profile`].
pub fn decrypt_bundle<E: fmt::Display>(
    cose: &[u8],
    device_id: &DeviceId,
    ear_hash: &[u8; 32],
    zgen: impl FnOnce(&[u8; 32], &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, E>,
) -> Result<Zeroizing<Vec<u8>>, BundleError> {
    let message = parse_bound(cose, device_id, ear_hash)?;
    cose::open_direct_ecdh(&message, &external_aad(device_id, ear_hash), zgen)
}

/// What a relay that cannot open a bundle can check of it (the RO's DPF, docs/flow.md step
/// 11): the first checks of [`decrypt_bundle`] — size, a tagged COSE_Encrypt, no critical
/// header, A256GCM, and its device id and EAR hash parameters equal to `device_id` and
/// `ear_hash`. These parameters are authenticated only by the AEAD, which the device checks:
/// they tell the relay what the sender meant, and catch a bundle for another device or
/// another EAR before it travels, not a forgery.
pub fn check_bundle_binding(
    cose: &[u8],
    device_id: &DeviceId,
    ear_hash: &[u8; 32],
) -> Result<(), BundleError> {
    parse_bound(cose, device_id, ear_hash).map(drop)
}

/// The bundle decoded, with the checks of [`check_bundle_binding`] passed.
fn parse_bound(
    cose: &[u8],
    device_id: &DeviceId,
    ear_hash: &[u8; 32],
) -> Result<CoseEncrypt, BundleError> {
    if cose.len() > MAX_BUNDLE_LEN {
        return Err(BundleError::TooLarge { what: "bundle", len: cose.len(), max: MAX_BUNDLE_LEN });
    }
    let message = CoseEncrypt::from_tagged_slice(cose)
        .map_err(|e| BundleError::MalformedEncrypt(e.to_string()))?;
    let header = &message.protected.header;
    let any_crit = std::iter::once(&message.unprotected)
        .chain(std::iter::once(header))
        .chain(message.recipients.iter().flat_map(|r| [&r.protected.header, &r.unprotected]))
        .any(|h| !h.crit.is_empty());
    if any_crit {
        return Err(BundleError::UnsupportedCriticalHeader);
    }
    if message.unprotected.alg.is_some() {
        return Err(BundleError::UnprotectedAlgorithm { structure: "COSE_Encrypt" });
    }
    if !has_alg(header, iana::Algorithm::A256GCM) {
        return Err(BundleError::ContentAlgorithm { found: alg_name(header) });
    }
    match header_value(header, HEADER_DEVICE_ID) {
        Some(Value::Bytes(b)) if b.as_slice() == device_id.as_bytes() => {}
        Some(Value::Bytes(b)) => {
            return Err(match DeviceId::from_name(b) {
                Ok(found) => {
                    BundleError::BundleForAnotherDevice { expected: device_id.clone(), found }
                }
                Err(_) => BundleError::MalformedEncrypt(
                    "the device id parameter is not a TPM name".into(),
                ),
            });
        }
        _ => return Err(BundleError::MissingHeader("device id (-65537)")),
    }
    match header_value(header, HEADER_EAR_HASH) {
        Some(Value::Bytes(b)) if b.as_slice() == ear_hash.as_slice() => {}
        Some(Value::Bytes(b)) => {
            return Err(BundleError::BundleForAnotherEar {
                expected: hex::encode(ear_hash),
                found: hex::encode(b),
            });
        }
        _ => return Err(BundleError::MissingHeader("EAR hash (-65538)")),
    }
    Ok(message)
}

/// A bundle key held in software, for tests and for hosts without a TPM: a P-256 key pair
/// whose private half can be used for exactly one decryption (ring offers ECDH only with
/// ephemeral keys). A TPM device uses [`decrypt_bundle`] with TPM2_ECDH_ZGen instead.
pub struct SoftwareRecipient {
    private: EphemeralPrivateKey,
    x: [u8; 32],
    y: [u8; 32],
}

impl fmt::Debug for SoftwareRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SoftwareRecipient({})", hex::encode(self.x))
    }
}

impl SoftwareRecipient {
    pub fn generate() -> Result<Self, BundleError> {
        let private = EphemeralPrivateKey::generate(&agreement::ECDH_P256, &SystemRandom::new())
            .map_err(|_| BundleError::Rng)?;
        let public = private.compute_public_key().map_err(|_| BundleError::Rng)?;
        let (x, y) = cose::coordinates(public.as_ref())
            .ok_or(BundleError::Encode("P-256 public key".into()))?;
        Ok(Self { private, x, y })
    }

    /// The public key's x-coordinate.
    pub fn x(&self) -> &[u8; 32] {
        &self.x
    }

    /// The public key's y-coordinate.
    pub fn y(&self) -> &[u8; 32] {
        &self.y
    }

    /// Z = x-coordinate of d · (x, y), as TPM2_ECDH_ZGen returns it.
    pub fn zgen(self, x: &[u8; 32], y: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, BundleError> {
        let peer = UnparsedPublicKey::new(&agreement::ECDH_P256, cose::sec1_uncompressed(x, y));
        agreement::agree_ephemeral(self.private, &peer, |z| Zeroizing::new(z.to_vec()))
            .map_err(|_| BundleError::EphemeralKeyNotOnCurve)
    }

    /// [`decrypt_bundle`] with this key.
    pub fn decrypt(
        self,
        cose: &[u8],
        device_id: &DeviceId,
        ear_hash: &[u8; 32],
    ) -> Result<Zeroizing<Vec<u8>>, BundleError> {
        decrypt_bundle(cose, device_id, ear_hash, |x, y| self.zgen(x, y))
    }
}
