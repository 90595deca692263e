//! The install receipt: signed by a restricted AK in a real software TPM (swtpm, tpm2-tools:
//! tpm2_sign hashes with TPM2_Hash for the ticket, then TPM2_Sign) and verified with
//! `SignedReceipt::verify`; every field check refuses its own forgery with its own error.
//! A software ECDSA key stands in for the AK in the field checks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bundle_support;
mod tpm_support;

use bundle_support::device;
use protocol::receipt::{MAX_SIGNED_RECEIPT_LEN, Receipt, ReceiptError, SignedReceipt, imsi_hash};
use protocol::tpm::HashAlg;
use protocol::tpm::error::SignatureError;
use protocol::tpm::public::{EccCurve, Public};
use protocol::tpm::signature::Signature;
use protocol::tpm::spki::Spki;
use protocol::tpm::wire::{EccParameter, Marshal};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, KeyPair as _};
use serde_bytes::ByteBuf;
use tpm_support::Tpm;

fn receipt(sequence: u64) -> Receipt {
    Receipt::new(
        device(1),
        "89883030000000000015".parse().unwrap(),
        &"001010000000042".parse().unwrap(),
        sequence,
    )
}

/// A software P-256 "AK" producing TPMT_SIGNATUREs.
struct SoftAk(EcdsaKeyPair);

impl SoftAk {
    fn new() -> SoftAk {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        SoftAk(
            EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    fn spki(&self) -> Spki {
        let p = self.0.public_key().as_ref();
        Spki::Ecc { curve: EccCurve::NistP256, x: p[1..33].to_vec(), y: p[33..].to_vec() }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rs = self.0.sign(&SystemRandom::new(), message).unwrap();
        let (r, s) = rs.as_ref().split_at(32);
        Signature::Ecdsa {
            hash: HashAlg::Sha256,
            r: EccParameter::new(r.to_vec()).unwrap(),
            s: EccParameter::new(s.to_vec()).unwrap(),
        }
        .to_bytes()
    }

    fn signed(&self, r: &Receipt) -> SignedReceipt {
        let bytes = r.to_cbor().unwrap();
        SignedReceipt { signature: ByteBuf::from(self.sign(&bytes)), receipt: ByteBuf::from(bytes) }
    }
}

#[test]
fn a_receipt_signed_by_a_tpm_ak_verifies() {
    let tpm = Tpm::start();
    tpm.run("tpm2_createek", &["-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub"]);
    tpm.run(
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u",
            "ak.pub",
        ],
    );
    let ak = Public::from_tpm2b(&tpm.read("ak.pub")).unwrap();
    let ek = Public::from_tpm2b(&tpm.read("ek.pub")).unwrap();

    let expected = receipt(9);
    tpm.write("receipt.cbor", &expected.to_cbor().unwrap());
    // tpm2_sign runs TPM2_Hash (ticket: not TPM-generated data) and TPM2_Sign with the AK.
    tpm.run("tpm2_sign", &["-c", "ak.ctx", "-g", "sha256", "-o", "receipt.sig", "receipt.cbor"]);
    let signed = SignedReceipt {
        receipt: ByteBuf::from(tpm.read("receipt.cbor")),
        signature: ByteBuf::from(tpm.read("receipt.sig")),
    };
    let wire = signed.to_cbor().unwrap();
    assert!(wire.len() < MAX_SIGNED_RECEIPT_LEN);
    let signed = SignedReceipt::from_cbor(&wire).unwrap();
    assert_eq!(signed.verify(&ak, &expected).unwrap(), expected);
    assert_eq!(signed.verify_spki(&Spki::from_public(&ak).unwrap(), &expected).unwrap(), expected);
    // The EK cannot sign; a forged receipt under the same signature does not verify.
    assert_eq!(
        signed.verify(&ek, &expected).unwrap_err(),
        ReceiptError::BadSignature(SignatureError::KeyCannotSign)
    );
    let mut forged = signed.clone();
    forged.receipt = ByteBuf::from(receipt(10).to_cbor().unwrap());
    assert_eq!(
        forged.verify(&ak, &receipt(10)).unwrap_err(),
        ReceiptError::BadSignature(SignatureError::BadSignature)
    );

    // Data that starts with TPM_GENERATED_VALUE gets no ticket: the restricted AK refuses to
    // sign it, which is why a receipt must never start with those bytes.
    tpm.write("forged.bin", b"\xffTCG\x80\x18 a forged TPMS_ATTEST");
    let out = tpm
        .try_run("tpm2_sign", &["-c", "ak.ctx", "-g", "sha256", "-o", "forged.sig", "forged.bin"]);
    assert!(!out.status.success());
}

#[test]
fn every_field_is_checked() {
    let ak = SoftAk::new();
    let expected = receipt(9);
    let good = ak.signed(&expected);
    assert_eq!(good.verify_spki(&ak.spki(), &expected).unwrap(), expected);

    let mut other = expected.clone();
    other.device_id = device(2);
    assert_eq!(
        ak.signed(&other).verify_spki(&ak.spki(), &expected).unwrap_err(),
        ReceiptError::WrongDevice { expected: device(1), found: device(2) }
    );
    let mut other = expected.clone();
    other.iccid = "89883030000000000023".parse().unwrap();
    assert!(matches!(
        ak.signed(&other).verify_spki(&ak.spki(), &expected).unwrap_err(),
        ReceiptError::WrongIccid { .. }
    ));
    let mut other = expected.clone();
    other.imsi_hash = imsi_hash(&"001010000000001".parse().unwrap());
    assert_eq!(
        ak.signed(&other).verify_spki(&ak.spki(), &expected).unwrap_err(),
        ReceiptError::WrongImsiHash
    );
    assert_eq!(
        ak.signed(&receipt(8)).verify_spki(&ak.spki(), &expected).unwrap_err(),
        ReceiptError::WrongSequence { expected: 9, found: 8 }
    );
    // Another key.
    assert_eq!(
        good.verify_spki(&SoftAk::new().spki(), &expected).unwrap_err(),
        ReceiptError::BadSignature(SignatureError::BadSignature)
    );
}

#[test]
fn malformed_receipts_are_refused_before_or_at_the_signature() {
    let ak = SoftAk::new();
    let expected = receipt(9);
    let good = ak.signed(&expected);

    let mut bad_sig = good.clone();
    bad_sig.signature = ByteBuf::from(vec![0x00, 0x18]);
    assert!(matches!(
        bad_sig.verify_spki(&ak.spki(), &expected),
        Err(ReceiptError::SignatureFormat(_))
    ));

    // Signed but not a receipt: an array, trailing bytes, an unknown field.
    let array = vec![0x84, 1, 2, 3, 4];
    let s =
        SignedReceipt { signature: ByteBuf::from(ak.sign(&array)), receipt: ByteBuf::from(array) };
    assert_eq!(s.verify_spki(&ak.spki(), &expected).unwrap_err(), ReceiptError::NotAMap);
    let mut trailing = expected.to_cbor().unwrap();
    trailing.push(0);
    let s = SignedReceipt {
        signature: ByteBuf::from(ak.sign(&trailing)),
        receipt: ByteBuf::from(trailing),
    };
    assert!(matches!(s.verify_spki(&ak.spki(), &expected), Err(ReceiptError::Malformed { .. })));
    let generated = b"\xffTCG rest".to_vec();
    let s = SignedReceipt {
        signature: ByteBuf::from(ak.sign(&generated)),
        receipt: ByteBuf::from(generated),
    };
    assert_eq!(s.verify_spki(&ak.spki(), &expected).unwrap_err(), ReceiptError::TpmGeneratedPrefix);
    let big = SignedReceipt { receipt: ByteBuf::from(vec![0xA0; 600]), signature: ByteBuf::new() };
    assert!(matches!(big.verify_spki(&ak.spki(), &expected), Err(ReceiptError::TooLarge { .. })));

    // The signed-receipt envelope itself.
    assert!(matches!(SignedReceipt::from_cbor(&[0xA0]), Err(ReceiptError::Malformed { .. })));
    assert!(matches!(SignedReceipt::from_cbor(&[]), Err(ReceiptError::Malformed { .. })));
}

#[test]
fn receipts_never_start_with_tpm_generated() {
    // Whatever the field values, the encoding starts with a CBOR map of four entries.
    for seq in [0, 1, 23, 24, 255, 65_536, u64::MAX] {
        let bytes = receipt(seq).to_cbor().unwrap();
        assert_eq!(bytes[0], 0xA4, "{seq}");
        assert!(!bytes.starts_with(&[0xFF, 0x54, 0x43, 0x47]));
    }
}
