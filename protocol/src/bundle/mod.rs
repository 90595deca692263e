//! The subscription bundle (DESIGN.md §3 "Bundle"; docs/flow.md steps 10–11): the new
//! operator's signed profile inside a COSE_Encrypt to the device's certified bundle key.
//!
//! - Inner ([`profile`]): COSE_Sign1 (RFC 9052 §4.2), ES256, x5chain (RFC 9360) with MNO-B's
//!   certificate under the CI, over a CBOR [`ProfilePayload`] naming the device, the
//!   operator, the campaign, the EAR hash, the anti-rollback sequence and a validity window.
//! - Outer ([`encrypt`]): COSE_Encrypt (RFC 9052 §5.1), one recipient with ECDH-ES +
//!   HKDF-256 (RFC 9053 §6.3), A256GCM, external AAD = device id ‖ SHA-256(EAR). The device
//!   computes Z in its TPM (TPM2_ECDH_ZGen under PolicyPCR), so [`decrypt_bundle`] takes Z
//!   from a callback.
//!
//! Who calls what: MNO-B builds a [`ProfilePayload`], signs it with a [`ProfileSigner`] and
//! encrypts it with [`encrypt_bundle`] to the bundle key of the EAR it verified, so the
//! profile is end to end between MNO-B and the device (issue 12): the RO's DPF relays the
//! bundle and can only check its binding ([`check_bundle_binding`]); the device opens it
//! with [`open_bundle`] (decrypt, verify, EAR hash) and checks [`check_sequence`] against
//! its NV counter. `docs/bundle.md` documents every byte.

mod cbor;
mod cose;
mod encrypt;
mod profile;
mod sign1;

use std::fmt;
use std::time::SystemTime;

use zeroize::Zeroizing;

pub use encrypt::{
    HEADER_DEVICE_ID, HEADER_EAR_HASH, SoftwareRecipient, check_bundle_binding, decrypt_bundle,
    encrypt_bundle, external_aad,
};
pub use profile::{
    MAX_CLOCK_SKEW_SECS, ProfilePayload, ProfileSigner, VerifiedProfile, verify_profile,
};
pub use sign1::CoseSigner;
pub(crate) use sign1::verify_sign1;

pub(crate) use cbor::{decode_exact, encode};

use crate::ids::DeviceId;
use crate::x509::{ChainError, TrustAnchors};

/// Largest signed profile accepted or produced: the payload is a few hundred bytes, the
/// x5chain a few certificates.
pub const MAX_SIGNED_PROFILE_LEN: usize = 64 * 1024;
/// Largest bundle accepted: a signed profile plus the COSE_Encrypt overhead.
pub const MAX_BUNDLE_LEN: usize = MAX_SIGNED_PROFILE_LEN + 1024;

/// Why a profile could not be signed, or a bundle or signed profile was refused. One
/// variant per check; none carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    // Producing.
    #[error("profile signing key: {0}")]
    SigningKey(&'static str),
    #[error("the signing key is not the key of the first x5chain certificate")]
    KeyCertificateMismatch,
    #[error("x5chain holds {count} certificates; 1 to {max} are allowed")]
    X5chainLength { count: usize, max: usize },
    #[error("recipient public key is not a point on P-256")]
    InvalidRecipientKey,
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("no randomness available")]
    Rng,
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge { what: &'static str, len: usize, max: usize },

    // A COSE_Sign1: the signed profile (inner), the RO's orders.
    #[error("not a tagged COSE_Sign1: {0}")]
    MalformedSign1(String),
    #[error("a critical header parameter is present; none is supported")]
    UnsupportedCriticalHeader,
    #[error("signature algorithm is {found}; ES256 (-7) in the protected header is required")]
    SignatureAlgorithm { found: String },
    #[error("the {structure} names an algorithm in its unprotected header, which is not signed")]
    UnprotectedAlgorithm { structure: &'static str },
    #[error("no x5chain (label 33) in the protected header")]
    MissingX5chain,
    #[error("x5chain: {0}")]
    MalformedX5chain(&'static str),
    #[error("signer's certificate path: {0}")]
    SignerChain(ChainError),
    #[error("signer's certificate has no single common name")]
    SignerName,
    #[error("signed by \"{found}\", expected \"{expected}\"")]
    WrongSigner { expected: String, found: String },
    #[error("signer's certificate: {0}")]
    SignerRole(crate::role::RoleError),
    #[error("signer's certificate does not allow digitalSignature")]
    SignerKeyUsage,
    #[error("signer's key is not an ECDSA P-256 key")]
    SignerKeyType,
    #[error("COSE_Sign1 signature does not verify")]
    BadSignature,
    #[error("the ES256 signature is not in its low-S form (s > n/2): another encoding of it")]
    NonCanonicalSignature,
    #[error("no payload (detached payloads are not accepted)")]
    MissingPayload,
    #[error("profile payload: {0}")]
    MalformedPayload(String),
    #[error("profile payload names operator \"{payload}\" but is signed by \"{signer}\"")]
    OperatorMismatch { payload: String, signer: String },
    #[error("profile is for device {found}, expected {expected}")]
    WrongDevice { expected: DeviceId, found: DeviceId },
    #[error("profile validity is empty: issued {issued}, expires {expires}")]
    EmptyValidity { issued: u64, expires: u64 },
    #[error("profile expired at {expires} (now {now}, Unix seconds)")]
    Expired { expires: u64, now: u64 },
    #[error("profile issued at {issued}, more than {skew} s after now ({now}, Unix seconds)")]
    IssuedInFuture { issued: u64, now: u64, skew: u64 },
    #[error("profile was made for EAR {found}, expected {expected} (SHA-256)")]
    WrongEar { expected: String, found: String },
    #[error("bundle sequence {sequence} is not above the anti-rollback counter {counter}")]
    Replayed { sequence: u64, counter: u64 },

    // The encrypted bundle (outer).
    #[error("bundle is not a tagged COSE_Encrypt: {0}")]
    MalformedEncrypt(String),
    #[error("bundle content algorithm is {found}; A256GCM (3) in the protected header is required")]
    ContentAlgorithm { found: String },
    #[error("bundle protected header lacks the {0} parameter")]
    MissingHeader(&'static str),
    #[error("bundle is for device {found}, this is {expected}")]
    BundleForAnotherDevice { expected: DeviceId, found: DeviceId },
    #[error("bundle was released on EAR {found}, expected {expected} (SHA-256)")]
    BundleForAnotherEar { expected: String, found: String },
    #[error("bundle IV: {0}")]
    BadIv(&'static str),
    #[error("bundle has {count} recipients; exactly one is required")]
    RecipientCount { count: usize },
    #[error(
        "recipient algorithm is {found}; ECDH-ES + HKDF-256 (-25) in the protected header is required"
    )]
    KeyAgreementAlgorithm { found: String },
    #[error("recipient structure: unexpected {0}")]
    RecipientStructure(&'static str),
    #[error("recipient has no ephemeral key (label -1)")]
    MissingEphemeralKey,
    #[error("ephemeral key: {0}")]
    MalformedEphemeralKey(&'static str),
    #[error("ephemeral key is not a point on P-256")]
    EphemeralKeyNotOnCurve,
    #[error("bundle has no ciphertext, or one shorter than the authentication tag")]
    MissingCiphertext,
    #[error("key agreement (ECDH ZGen) failed: {0}")]
    KeyAgreement(String),
    #[error("shared secret Z has {len} bytes; P-256 gives 1 to 32")]
    SharedSecretLength { len: usize },
    #[error(
        "bundle does not decrypt: another bundle key, an altered ciphertext or protected header, \
         or another device id or EAR in the external AAD"
    )]
    DecryptionFailed,
}

/// SHA-256 of an EAR's COSE_Sign1 bytes as sent: what the profile's `ear_hash` and the
/// bundle's external AAD carry.
pub fn ear_hash(ear: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(ear).into()
}

/// Anti-rollback (DESIGN.md §3 "Bundle"): a bundle is installed only if its sequence is above
/// the TRE's NV counter, which the TRE increments after each install.
pub fn check_sequence(sequence: u64, counter: u64) -> Result<(), BundleError> {
    if sequence > counter { Ok(()) } else { Err(BundleError::Replayed { sequence, counter }) }
}

/// What the device expects of a bundle it was given with an `install` task.
#[derive(Clone, Copy, Debug)]
pub struct BundleExpectations<'a> {
    /// The CI root(s) the signer's certificate must chain to.
    pub ci_roots: &'a TrustAnchors,
    /// The time the validity windows are checked at.
    pub now: SystemTime,
    /// The new operator's role name: on the device, the one MNO-A's authenticated
    /// activate-TRE command named (the card's TRE activation), never what a task says.
    pub operator: &'a str,
    /// This device.
    pub device_id: &'a DeviceId,
    /// SHA-256 of the EAR that came with the task ([`ear_hash`]).
    pub ear_hash: &'a [u8; 32],
}

/// The device's whole check of a bundle: [`decrypt_bundle`], then [`verify_profile`], then
/// the profile's EAR hash. The anti-rollback check ([`check_sequence`]) stays with the
/// caller, which owns the NV counter.
pub fn open_bundle<E: fmt::Display>(
    cose: &[u8],
    expected: &BundleExpectations<'_>,
    zgen: impl FnOnce(&[u8; 32], &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, E>,
) -> Result<VerifiedProfile, BundleError> {
    let signed = decrypt_bundle(cose, expected.device_id, expected.ear_hash, zgen)?;
    let verified = verify_profile(
        &signed,
        expected.ci_roots,
        expected.now,
        expected.operator,
        expected.device_id,
    )?;
    verified.check_ear_hash(expected.ear_hash)?;
    Ok(verified)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::secret::{Amf, Opc, OtaKey, OtaKeys, SubscriberKey, SubscriptionProfile};

    /// A profile with recognisable secret bytes (0xA1…, 0xB2…, 0xC3…, 0xD4…).
    pub(crate) fn profile() -> SubscriptionProfile {
        SubscriptionProfile {
            iccid: "89883030000000000015".parse().unwrap(),
            imsi: "001010000000042".parse().unwrap(),
            k: SubscriberKey::new([0xA1; 16]),
            opc: Opc::new([0xB2; 16]),
            amf: Amf([0x80, 0x00]),
            ota: OtaKeys { kic: OtaKey::new([0xC3; 16]), kid: OtaKey::new([0xD4; 16]), counter: 5 },
        }
    }

    #[test]
    fn sequence_must_exceed_the_counter() {
        assert_eq!(check_sequence(5, 4), Ok(()));
        assert_eq!(check_sequence(4, 4), Err(BundleError::Replayed { sequence: 4, counter: 4 }));
        assert_eq!(
            check_sequence(0, u64::MAX),
            Err(BundleError::Replayed { sequence: 0, counter: u64::MAX })
        );
    }

    #[test]
    fn ear_hash_is_sha256() {
        // FIPS 180-2 Appendix B.1: SHA-256("abc").
        assert_eq!(
            hex::encode(ear_hash(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
