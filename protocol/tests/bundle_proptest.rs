//! Property tests of every bundle and receipt decoder: random bytes never panic, and every
//! single bit flipped in a valid signed profile, bundle or signed receipt is refused
//! (exhaustively).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bundle_support;

use std::sync::OnceLock;
use std::time::SystemTime;

use bundle_support::*;
use proptest::prelude::*;
use protocol::bundle::{
    SoftwareRecipient, decrypt_bundle, ear_hash, encrypt_bundle, verify_profile,
};
use protocol::receipt::{Receipt, SignedReceipt};
use protocol::tpm::spki::Spki;
use protocol::x509::TrustAnchors;
use zeroize::Zeroizing;

/// One valid signed profile, bundle and signed receipt, made once for all cases, with a
/// Z that stands in for the TPM: the recorded Z for the bundle's own ephemeral key, and for
/// any other point a value derived from it (as ECDH with another point would give).
struct Fixture {
    anchors: TrustAnchors,
    signed: Vec<u8>,
    bundle: Vec<u8>,
    eph: ([u8; 32], [u8; 32]),
    z: Vec<u8>,
    receipt: SignedReceipt,
    receipt_key: Spki,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ci = Ci::new("tresor CI");
        let signed = ci.role("mno-b").signer().sign(&payload(&device(1), "mno-b")).unwrap();
        let key = SoftwareRecipient::generate().unwrap();
        let bundle = encrypt_bundle(&signed, key.x(), key.y(), &device(1), &ear_hash(EAR)).unwrap();
        let mut seen = None;
        decrypt_bundle(&bundle, &device(1), &ear_hash(EAR), |x, y| {
            let z = key.zgen(x, y)?;
            seen = Some(((*x, *y), z.to_vec()));
            Ok::<_, protocol::bundle::BundleError>(z)
        })
        .unwrap();
        let (eph, z) = seen.unwrap();

        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let ak = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = ring::signature::KeyPair::public_key(&ak).as_ref().to_vec();
        let receipt_key = Spki::Ecc {
            curve: protocol::tpm::public::EccCurve::NistP256,
            x: point[1..33].to_vec(),
            y: point[33..].to_vec(),
        };
        let bytes = receipt().to_cbor().unwrap();
        let rs = ak.sign(&rng, &bytes).unwrap();
        let signature = protocol::tpm::wire::Marshal::to_bytes(&protocol::tpm::Signature::Ecdsa {
            hash: protocol::tpm::HashAlg::Sha256,
            r: protocol::tpm::wire::EccParameter::new(rs.as_ref()[..32].to_vec()).unwrap(),
            s: protocol::tpm::wire::EccParameter::new(rs.as_ref()[32..].to_vec()).unwrap(),
        });
        let receipt = SignedReceipt {
            receipt: serde_bytes::ByteBuf::from(bytes),
            signature: serde_bytes::ByteBuf::from(signature),
        };
        Fixture { anchors: ci.anchors(), signed, bundle, eph, z, receipt, receipt_key }
    })
}

fn receipt() -> Receipt {
    Receipt::new(
        device(1),
        "89883030000000000015".parse().unwrap(),
        &"001010000000042".parse().unwrap(),
        8,
    )
}

fn stand_in_zgen(
    f: &Fixture,
) -> impl FnOnce(&[u8; 32], &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, String> + '_ {
    move |x, y| {
        if (*x, *y) == f.eph {
            Ok(Zeroizing::new(f.z.clone()))
        } else {
            Ok(Zeroizing::new(
                protocol::bundle::ear_hash(&[x.as_slice(), y.as_slice()].concat()).to_vec(),
            ))
        }
    }
}

fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let bit = bit % (out.len() * 8);
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

#[test]
fn the_fixture_is_valid() {
    let f = fixture();
    verify_profile(&f.signed, &f.anchors, SystemTime::now(), "mno-b", &device(1)).unwrap();
    let plain = decrypt_bundle(&f.bundle, &device(1), &ear_hash(EAR), stand_in_zgen(f)).unwrap();
    assert_eq!(plain.as_slice(), f.signed.as_slice());
    f.receipt.verify_spki(&f.receipt_key, &receipt()).unwrap();
    SignedReceipt::from_cbor(&f.receipt.to_cbor().unwrap()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let f = fixture();
        let _ = verify_profile(&bytes, &f.anchors, SystemTime::now(), "mno-b", &device(1));
        let _ = decrypt_bundle(&bytes, &device(1), &ear_hash(EAR), stand_in_zgen(f));
        let _ = Receipt::from_cbor(&bytes);
        if let Ok(s) = SignedReceipt::from_cbor(&bytes) {
            let _ = s.verify_spki(&f.receipt_key, &receipt());
        }
        let s = SignedReceipt {
            receipt: serde_bytes::ByteBuf::from(bytes.clone()),
            signature: serde_bytes::ByteBuf::from(bytes),
        };
        let _ = s.verify_spki(&f.receipt_key, &receipt());
    }

    #[test]
    fn random_bytes_behind_valid_prefixes_never_panic(
        cut in 0usize..4096,
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        // A valid beginning and random rest reaches deeper into the decoders.
        let f = fixture();
        for valid in [&f.signed, &f.bundle] {
            let mut bytes = valid[..cut.min(valid.len())].to_vec();
            bytes.extend(&tail);
            let _ = verify_profile(&bytes, &f.anchors, SystemTime::now(), "mno-b", &device(1));
            let _ = decrypt_bundle(&bytes, &device(1), &ear_hash(EAR), stand_in_zgen(f));
        }
    }

    #[test]
    fn a_flipped_bit_in_a_signed_receipt_envelope_never_panics(bit in any::<usize>()) {
        // The envelope is not authenticated (serde accepts its keys as text or byte strings
        // alike); what it carries is, and `every_single_bit_flip_is_refused` covers that.
        let f = fixture();
        let wire = flip(&f.receipt.to_cbor().unwrap(), bit);
        if let Ok(s) = SignedReceipt::from_cbor(&wire) {
            let _ = s.verify_spki(&f.receipt_key, &receipt());
        }
    }
}

#[test]
fn every_single_bit_flip_is_refused() {
    // Exhaustive over every bit of the signed profile, the bundle, and the signed receipt's
    // receipt bytes and signature (a few seconds).
    let f = fixture();
    for bit in 0..f.signed.len() * 8 {
        let bytes = flip(&f.signed, bit);
        assert!(
            verify_profile(&bytes, &f.anchors, SystemTime::now(), "mno-b", &device(1)).is_err(),
            "signed profile, bit {bit}"
        );
    }
    for bit in 0..f.bundle.len() * 8 {
        let bytes = flip(&f.bundle, bit);
        assert!(
            decrypt_bundle(&bytes, &device(1), &ear_hash(EAR), stand_in_zgen(f)).is_err(),
            "bundle, bit {bit}"
        );
    }
    for bit in 0..f.receipt.receipt.len() * 8 {
        let mut s = f.receipt.clone();
        s.receipt = serde_bytes::ByteBuf::from(flip(&s.receipt, bit));
        assert!(s.verify_spki(&f.receipt_key, &receipt()).is_err(), "receipt, bit {bit}");
    }
    for bit in 0..f.receipt.signature.len() * 8 {
        let mut s = f.receipt.clone();
        s.signature = serde_bytes::ByteBuf::from(flip(&s.signature, bit));
        assert!(s.verify_spki(&f.receipt_key, &receipt()).is_err(), "signature, bit {bit}");
    }
}
