//! Shared pieces of tresor's fuzz targets: the fixed trust anchors, keys and identities the
//! seed generator (`seeds/`) recorded from one real lab run (`fixtures/`), the card profile
//! of the `apdu` target, input splitting, and an ES256 COSE_Sign1 signer that lets a target
//! put fuzzed claims or profiles behind a valid signature.
//!
//! Everything here is test material: the keys in `fixtures/` belong to a throw-away PKI
//! made for fuzzing and protect nothing.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use ciborium::Value;
use coset::{CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};
use protocol::DeviceId;
use protocol::x509::TrustAnchors;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

#[path = "card_profile.rs"]
pub mod card_profile;

/// The COSE header label of x5chain (RFC 9360).
const X5CHAIN: i64 = 33;

/// Files written by `seeds` (see fixtures/README.md).
pub mod raw {
    pub const CI_ROOT: &[u8] = include_bytes!("../fixtures/ci.der");
    pub const MANUFACTURER_ROOT: &[u8] = include_bytes!("../fixtures/manufacturer.der");
    pub const PVA_CERT: &[u8] = include_bytes!("../fixtures/pva.der");
    pub const PVA_KEY: &[u8] = include_bytes!("../fixtures/pva.pk8");
    pub const MNO_B_CERT: &[u8] = include_bytes!("../fixtures/mno-b.der");
    pub const MNO_B_KEY: &[u8] = include_bytes!("../fixtures/mno-b.pk8");
    pub const DEVICE_ID: &[u8] = include_bytes!("../fixtures/device-id.bin");
    pub const EAR_HASH: &[u8] = include_bytes!("../fixtures/ear-hash.bin");
    pub const AK_PUBLIC: &[u8] = include_bytes!("../fixtures/ak-public.tpmt");
    pub const RECEIPT: &[u8] = include_bytes!("../fixtures/receipt.cbor");
    pub const NOW: &str = include_str!("../fixtures/now.txt");
}

/// Everything a target checks against, parsed once per process.
pub struct Fixtures {
    pub ci_roots: TrustAnchors,
    pub manufacturer_roots: TrustAnchors,
    /// The lab device whose EAR, bundle and receipt are in the seeds.
    pub device_id: DeviceId,
    pub ear_hash: [u8; 32],
    /// The instant the lab ran: certificates, EARs and profiles of the seeds are valid then.
    pub now: SystemTime,
    pub ak_public: protocol::tpm::Public,
    pub receipt: protocol::receipt::Receipt,
}

pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        use protocol::tpm::Unmarshal;
        let anchors = |der: &[u8]| {
            let mut a = TrustAnchors::new();
            a.add_der(der).unwrap();
            a
        };
        let secs: u64 = raw::NOW.trim().parse().unwrap();
        Fixtures {
            ci_roots: anchors(raw::CI_ROOT),
            manufacturer_roots: anchors(raw::MANUFACTURER_ROOT),
            device_id: DeviceId::from_name(raw::DEVICE_ID).unwrap(),
            ear_hash: raw::EAR_HASH.try_into().unwrap(),
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            ak_public: protocol::tpm::Public::from_bytes(raw::AK_PUBLIC).unwrap(),
            receipt: protocol::receipt::Receipt::from_cbor(raw::RECEIPT).unwrap(),
        }
    })
}

/// Wraps `payload` in a tagged COSE_Sign1 (ES256, x5chain = `cert` in the protected
/// header), the way the PVA signs an EAR and an operator signs a profile, so that a target
/// can fuzz what a verifier does after the signature check.
pub fn sign_es256(pkcs8: &[u8], cert: &[u8], payload: &[u8]) -> Vec<u8> {
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng).unwrap();
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .value(X5CHAIN, Value::Bytes(cert.to_vec()))
        .build();
    CoseSign1Builder::new()
        .protected(protected)
        .payload(payload.to_vec())
        // Low S, as every tresor signer makes it: verifiers refuse the other encoding.
        .create_signature(&[], |tbs| {
            protocol::es256::to_low_s(key.sign(&rng, tbs).unwrap().as_ref())
        })
        .build()
        .to_tagged_vec()
        .unwrap()
}

/// Splits `data` into frames the way vpcd frames APDUs (2-byte big-endian length, then
/// that many bytes); a last frame shorter than its length is taken as it is, so every
/// input is a sequence of commands.
pub fn frames(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = data.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
        let (frame, tail) = rest.split_at(len);
        data = tail;
        Some(frame)
    })
}

/// Encodes frames for [`frames`] (used by the seed generator).
pub fn encode_frames<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&u16::try_from(f.len()).unwrap().to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}
