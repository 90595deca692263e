//! The install receipt (DESIGN.md §3 "Receipt"; docs/flow.md step 11–12): after installing
//! a profile the TRE signs {device id, ICCID, SHA-256(IMSI), sequence} with its restricted
//! AK, and the DPF verifies it with the AK named in the EAR before it reports success.
//!
//! The TRE signs the exact CBOR bytes of the [`Receipt`] with TPM2_Hash (whose ticket
//! proves the data does not start with TPM_GENERATED_VALUE, TPM 2.0 Part 3 §15.4) and
//! TPM2_Sign (Part 3 §20.2); the signature is the marshalled TPMT_SIGNATURE. A receipt's
//! encoding starts with a CBOR map header (0xA4), never with 0xFF544347, so it can neither
//! be refused a ticket nor be mistaken for a TPMS_ATTEST. `docs/bundle.md` gives the bytes.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::bundle::{decode_exact, encode};
use crate::ids::{DeviceId, Iccid, Imsi};
use crate::tpm::error::{SignatureError, WireError};
use crate::tpm::public::Public;
use crate::tpm::signature::Signature;
use crate::tpm::spki::Spki;
use crate::tpm::wire::Unmarshal;

/// Largest receipt encoding: a 66-byte name, a 20-digit ICCID, a hash and a u64 need ~170.
pub const MAX_RECEIPT_LEN: usize = 512;
/// Largest signed receipt: the receipt and a TPMT_SIGNATURE (at most 4 + 512 bytes, RSA 4096).
pub const MAX_SIGNED_RECEIPT_LEN: usize = 2048;
/// TPM_GENERATED_VALUE (TPM 2.0 Part 2 §6.2), big-endian, as a signed message's first bytes.
const TPM_GENERATED: [u8; 4] = [0xFF, 0x54, 0x43, 0x47];

/// Why a receipt was refused. One variant per check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge { what: &'static str, len: usize, max: usize },
    #[error("{what} is not the expected CBOR: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("receipt does not start with a CBOR map header")]
    NotAMap,
    #[error("receipt starts with TPM_GENERATED_VALUE")]
    TpmGeneratedPrefix,
    #[error("receipt signature is not a TPMT_SIGNATURE: {0}")]
    SignatureFormat(WireError),
    #[error("receipt signature: {0}")]
    BadSignature(SignatureError),
    #[error("receipt is from device {found}, expected {expected}")]
    WrongDevice { expected: DeviceId, found: DeviceId },
    #[error("receipt names ICCID {found}, expected {expected}")]
    WrongIccid { expected: Iccid, found: Iccid },
    #[error("receipt's IMSI hash does not match the issued IMSI")]
    WrongImsiHash,
    #[error("receipt has sequence {found}, expected {expected}")]
    WrongSequence { expected: u64, found: u64 },
    #[error("encoding failed: {0}")]
    Encode(String),
}

/// What the TRE states after an install. CBOR map with text keys, in this order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub device_id: DeviceId,
    pub iccid: Iccid,
    /// SHA-256 of the IMSI's ASCII digits (the IMSI itself stays between card and operator).
    #[serde(with = "serde_bytes")]
    pub imsi_hash: [u8; 32],
    /// The installed profile's sequence, now the TRE's NV counter.
    pub sequence: u64,
}

impl Receipt {
    pub fn new(device_id: DeviceId, iccid: Iccid, imsi: &Imsi, sequence: u64) -> Self {
        Self { device_id, iccid, imsi_hash: imsi_hash(imsi), sequence }
    }

    /// The bytes the TRE signs. Always a CBOR map: never TPM_GENERATED_VALUE.
    pub fn to_cbor(&self) -> Result<Vec<u8>, ReceiptError> {
        let bytes = encode(self).map_err(ReceiptError::Encode)?;
        check_prefix(&bytes)?;
        Ok(bytes)
    }

    /// Strict decoding: bounded, one CBOR map, no unknown fields, nothing after it.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ReceiptError> {
        if bytes.len() > MAX_RECEIPT_LEN {
            return Err(ReceiptError::TooLarge {
                what: "receipt",
                len: bytes.len(),
                max: MAX_RECEIPT_LEN,
            });
        }
        check_prefix(bytes)?;
        decode_exact(bytes).map_err(|reason| ReceiptError::Malformed { what: "receipt", reason })
    }
}

/// SHA-256 of the IMSI's ASCII digits.
pub fn imsi_hash(imsi: &Imsi) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(imsi.as_str().as_bytes()).into()
}

/// The first byte must be a CBOR map header (major type 5: 0xA0–0xBF), which also rules
/// out TPM_GENERATED_VALUE (0xFF…).
fn check_prefix(bytes: &[u8]) -> Result<(), ReceiptError> {
    if bytes.starts_with(&TPM_GENERATED) {
        return Err(ReceiptError::TpmGeneratedPrefix);
    }
    match bytes.first() {
        Some(b) if b >> 5 == 5 => Ok(()),
        _ => Err(ReceiptError::NotAMap),
    }
}

/// A receipt as the device posts it: the exact signed bytes and the TPM's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedReceipt {
    /// [`Receipt::to_cbor`] bytes, exactly as signed.
    pub receipt: ByteBuf,
    /// Marshalled TPMT_SIGNATURE by the AK over `receipt`.
    pub signature: ByteBuf,
}

impl SignedReceipt {
    pub fn to_cbor(&self) -> Result<Vec<u8>, ReceiptError> {
        encode(self).map_err(ReceiptError::Encode)
    }

    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ReceiptError> {
        if bytes.len() > MAX_SIGNED_RECEIPT_LEN {
            return Err(ReceiptError::TooLarge {
                what: "signed receipt",
                len: bytes.len(),
                max: MAX_SIGNED_RECEIPT_LEN,
            });
        }
        decode_exact(bytes)
            .map_err(|reason| ReceiptError::Malformed { what: "signed receipt", reason })
    }

    /// Verifies with the AK's TPM public area (its sign attribute and scheme are enforced),
    /// then compares every field with `expected`. Checks, each with its own error: the
    /// receipt's form, the signature's form, the signature, the receipt's decoding, device,
    /// ICCID, IMSI hash, sequence.
    pub fn verify(&self, ak: &Public, expected: &Receipt) -> Result<Receipt, ReceiptError> {
        self.verify_with(expected, |sig, msg| sig.verify(ak, msg))
    }

    /// As [`Self::verify`], with the AK as a plain public key (e.g. from an `ak.pem`).
    pub fn verify_spki(&self, ak: &Spki, expected: &Receipt) -> Result<Receipt, ReceiptError> {
        self.verify_with(expected, |sig, msg| sig.verify_spki(ak, msg))
    }

    fn verify_with(
        &self,
        expected: &Receipt,
        check: impl FnOnce(&Signature, &[u8]) -> Result<(), SignatureError>,
    ) -> Result<Receipt, ReceiptError> {
        let bytes = self.receipt.as_slice();
        if bytes.len() > MAX_RECEIPT_LEN {
            return Err(ReceiptError::TooLarge {
                what: "receipt",
                len: bytes.len(),
                max: MAX_RECEIPT_LEN,
            });
        }
        check_prefix(bytes)?;
        let signature =
            Signature::from_bytes(&self.signature).map_err(ReceiptError::SignatureFormat)?;
        check(&signature, bytes).map_err(ReceiptError::BadSignature)?;
        let receipt = Receipt::from_cbor(bytes)?;
        if receipt.device_id != expected.device_id {
            return Err(ReceiptError::WrongDevice {
                expected: expected.device_id.clone(),
                found: receipt.device_id,
            });
        }
        if receipt.iccid != expected.iccid {
            return Err(ReceiptError::WrongIccid {
                expected: expected.iccid.clone(),
                found: receipt.iccid,
            });
        }
        if receipt.imsi_hash != expected.imsi_hash {
            return Err(ReceiptError::WrongImsiHash);
        }
        if receipt.sequence != expected.sequence {
            return Err(ReceiptError::WrongSequence {
                expected: expected.sequence,
                found: receipt.sequence,
            });
        }
        Ok(receipt)
    }
}

/// What the TRE signs when it answers a task that decides the change — the install's result
/// and the USIM's AKA answer (docs/flow.md steps 11–12). The RO acts on such an answer only
/// if the device's enrolled AK signed it: the device API takes anonymous clients, and a
/// "failed" from anyone else, arriving after the card installed the new profile, would make
/// both operators give up the subscription the card now runs. Signed like a receipt
/// (TPM2_Hash + TPM2_Sign over [`AnswerStatement::to_cbor`], a CBOR map of three, never
/// TPM_GENERATED_VALUE); the signature travels in the [`ANSWER_SIGNATURE_HEADER`] header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerStatement {
    pub device_id: DeviceId,
    /// What the task was about: [`AnswerStatement::install_task`] or
    /// [`AnswerStatement::aka_task`], so an answer cannot be replayed for another task. Both
    /// sides know it even when someone changed the task on its way to the device.
    #[serde(with = "serde_bytes")]
    pub task: [u8; 32],
    /// SHA-256 of the answer's body exactly as posted.
    #[serde(with = "serde_bytes")]
    pub answer: [u8; 32],
}

/// The HTTP header carrying an answer's signature: the marshalled TPMT_SIGNATURE, hex.
pub const ANSWER_SIGNATURE_HEADER: &str = "tresor-answer-signature";

impl AnswerStatement {
    pub fn new(device_id: DeviceId, task: [u8; 32], answer_body: &[u8]) -> Self {
        Self { device_id, task, answer: sha256(&[answer_body]) }
    }

    /// An install task is about the bundle key the device attested (a new one for every
    /// attestation): SHA-256 of its TPM name.
    pub fn install_task(bundle_key_name: &[u8]) -> [u8; 32] {
        sha256(&[bundle_key_name])
    }

    /// An AKA task is about its challenge: SHA-256 of RAND ‖ AUTN (the device's answer to
    /// one challenge must not count for the next, after a resynchronisation).
    pub fn aka_task(rand: &[u8], autn: &[u8]) -> [u8; 32] {
        sha256(&[rand, autn])
    }

    /// A commit or abort task is about the change it ends: SHA-256 of a domain label, the
    /// campaign and the task's kind, so a device's answer to one order cannot stand for the
    /// other or for another campaign.
    pub fn order_task(kind: &str, campaign: &str) -> [u8; 32] {
        sha256(&[b"tresor-order\0", kind.as_bytes(), b"\0", campaign.as_bytes()])
    }

    /// The bytes the TRE signs. Always a CBOR map: never TPM_GENERATED_VALUE.
    pub fn to_cbor(&self) -> Result<Vec<u8>, ReceiptError> {
        let bytes = encode(self).map_err(ReceiptError::Encode)?;
        check_prefix(&bytes)?;
        Ok(bytes)
    }

    /// Checks that `signature` (a marshalled TPMT_SIGNATURE) is the AK's over this statement.
    pub fn verify(&self, ak: &Public, signature: &[u8]) -> Result<(), ReceiptError> {
        let signature = Signature::from_bytes(signature).map_err(ReceiptError::SignatureFormat)?;
        signature.verify(ak, &self.to_cbor()?).map_err(ReceiptError::BadSignature)
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    for part in parts {
        hash.update(part);
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceId {
        let mut name = vec![0x00, 0x0B];
        name.extend([0x5A; 32]);
        DeviceId::from_name(&name).unwrap()
    }

    fn receipt() -> Receipt {
        Receipt::new(
            device(),
            "89883030000000000015".parse().unwrap(),
            &"001010000000042".parse().unwrap(),
            7,
        )
    }

    #[test]
    fn encoding_is_a_map_of_four_and_round_trips() {
        let bytes = receipt().to_cbor().unwrap();
        assert_eq!(bytes[0], 0xA4);
        assert!(!bytes.starts_with(&TPM_GENERATED));
        assert!(bytes.len() < MAX_RECEIPT_LEN);
        assert_eq!(Receipt::from_cbor(&bytes).unwrap(), receipt());
    }

    #[test]
    fn imsi_hash_is_sha256_of_the_digits() {
        // sha256sum of the 15 ASCII digits "001010000000042".
        assert_eq!(
            imsi_hash(&"001010000000042".parse().unwrap()).as_slice(),
            ring::digest::digest(&ring::digest::SHA256, b"001010000000042").as_ref()
        );
    }

    #[test]
    fn prefix_checks() {
        assert_eq!(
            check_prefix(&[0xFF, 0x54, 0x43, 0x47, 0]),
            Err(ReceiptError::TpmGeneratedPrefix)
        );
        assert_eq!(check_prefix(&[0x84]), Err(ReceiptError::NotAMap));
        assert_eq!(check_prefix(&[]), Err(ReceiptError::NotAMap));
        assert_eq!(check_prefix(&[0xA0]), Ok(()));
        assert_eq!(check_prefix(&[0xBF]), Ok(()));
    }

    #[test]
    fn answer_statements_are_maps_of_three_bound_to_task_and_body() {
        let a = AnswerStatement::new(device(), AnswerStatement::install_task(b"key"), b"body");
        let bytes = a.to_cbor().unwrap();
        assert_eq!(bytes[0], 0xA3);
        let other_task =
            AnswerStatement::new(device(), AnswerStatement::aka_task(b"r", b"a"), b"body");
        assert_ne!(other_task.to_cbor().unwrap(), bytes);
        let other_body =
            AnswerStatement::new(device(), AnswerStatement::install_task(b"key"), b"other");
        assert_ne!(other_body.to_cbor().unwrap(), bytes);
        // RAND ‖ AUTN: the split matters only through the fixed 16-byte lengths.
        assert_eq!(AnswerStatement::aka_task(b"ab", b"c"), AnswerStatement::aka_task(b"a", b"bc"));
        assert!(matches!(
            a.verify(&sample_public(), &[0x00, 0x18]),
            Err(ReceiptError::SignatureFormat(_))
        ));
    }

    /// A TPMT_PUBLIC of an ECDSA P-256 signing key (the TRE's AK template).
    fn sample_public() -> Public {
        use crate::tpm::wire::Marshal as _;
        // tpm2_createak -G ecc -g sha256 -s ecdsa: type 0023, nameAlg 000B, attributes
        // 00050072, empty policy, symmetric NULL, ECDSA/SHA-256, NIST P-256, KDF NULL, x, y.
        let mut bytes = vec![0x00, 0x23, 0x00, 0x0B, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00];
        bytes.extend([0x00, 0x10, 0x00, 0x18, 0x00, 0x0B, 0x00, 0x03, 0x00, 0x10]);
        bytes.extend([0x00, 0x20]);
        bytes.extend([0x11; 32]);
        bytes.extend([0x00, 0x20]);
        bytes.extend([0x22; 32]);
        let public = Public::from_bytes(&bytes).unwrap();
        assert_eq!(public.to_bytes(), bytes);
        public
    }

    #[test]
    fn decoding_is_strict() {
        let mut bytes = receipt().to_cbor().unwrap();
        bytes.push(0);
        assert!(matches!(Receipt::from_cbor(&bytes), Err(ReceiptError::Malformed { .. })));
        assert!(matches!(
            Receipt::from_cbor(&vec![0xA0; MAX_RECEIPT_LEN + 1]),
            Err(ReceiptError::TooLarge { .. })
        ));
        assert!(matches!(
            SignedReceipt::from_cbor(&vec![0xA0; MAX_SIGNED_RECEIPT_LEN + 1]),
            Err(ReceiptError::TooLarge { .. })
        ));
    }
}
