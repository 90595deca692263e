//! Errors of the TPM module, one enum per family: parsing (`WireError`), key conversion
//! (`KeyError`), signature checks (`SignatureError`), PCR selections and values (`PcrError`)
//! and credential protection (`CredentialError`). Each variant names what the peer or the
//! caller did wrong, so a verifier can map it to its own appraisal error without guessing.

use super::alg::HashAlg;

/// Bytes that are not a well-formed TPM structure (TPM 2.0 Part 2 marshalling rules) or
/// tpm2-tools file. `what` names the structure and field, e.g. `TPMS_ATTEST.extraData`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{what}: input ends early")]
    Truncated { what: &'static str },
    #[error("{what}: {extra} unexpected bytes after the structure")]
    TrailingBytes { what: &'static str, extra: usize },
    #[error("{what}: size {size} exceeds the maximum {max}")]
    TooLarge { what: &'static str, size: usize, max: usize },
    #[error("{what}: algorithm {id:#06x} is unknown or not supported here")]
    UnsupportedAlg { what: &'static str, id: u16 },
    #[error("{what}: invalid value {value:#x}")]
    BadValue { what: &'static str, value: u64 },
    #[error("{what}: size field says {declared} bytes but the structure has {actual}")]
    SizeMismatch { what: &'static str, declared: usize, actual: usize },
}

/// A public key that cannot be converted or compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("curve {0} has no SubjectPublicKeyInfo encoding here (P-256, P-384, P-521 only)")]
    UnsupportedCurve(&'static str),
    #[error("public key is malformed: {0}")]
    Malformed(&'static str),
    #[error("not a PEM \"PUBLIC KEY\": {0}")]
    Pem(String),
    #[error("not a SubjectPublicKeyInfo this module supports: {0}")]
    Spki(String),
}

/// Why a TPMT_SIGNATURE does not verify. Only `BadSignature` means the cryptographic check
/// ran and failed; the others mean it was refused before.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the key does not have the sign attribute")]
    KeyCannotSign,
    #[error("{signature} signature with a {key} key")]
    KeyTypeMismatch { key: &'static str, signature: &'static str },
    #[error("the key's scheme is {key}, the signature's is {signature}")]
    SchemeNotAllowed { key: &'static str, signature: &'static str },
    #[error("the key's scheme hash is {key}, the signature's is {signature}")]
    HashNotAllowed { key: HashAlg, signature: HashAlg },
    #[error("{0} is not accepted for signatures")]
    UnsupportedHash(HashAlg),
    #[error("curve {0} is not supported for signature verification")]
    UnsupportedCurve(&'static str),
    #[error("the key is not usable: {0}")]
    BadKey(&'static str),
    #[error("the signature is malformed: {0}")]
    Malformed(&'static str),
    #[error("the signature does not verify")]
    BadSignature,
}

/// A PCR selection string, PCR index or PCR value set that does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcrError {
    #[error("PCR selection {input:?}: {reason}")]
    Syntax { input: String, reason: &'static str },
    #[error("PCR {0} is outside 0..=23")]
    IndexOutOfRange(u32),
    #[error("a PCR selection holds at most {max} banks, got {got}")]
    TooManyBanks { got: usize, max: usize },
    #[error("no value for {bank} PCR {pcr}")]
    MissingValue { bank: HashAlg, pcr: u8 },
    #[error("{bank} PCR {pcr}: value has {got} bytes, the bank's digest has {expected}")]
    ValueSize { bank: HashAlg, pcr: u8, expected: usize, got: usize },
    #[error("{alg} digest must have {expected} bytes, got {got}")]
    DigestSize { alg: HashAlg, expected: usize, got: usize },
    #[error("{count} PCR values do not fit the tpm2-tools PCR file (at most {max})")]
    TooManyValues { count: usize, max: usize },
}

/// Why MakeCredential (TPM 2.0 Part 1 §24) could not protect a credential for a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the EK is not a restricted decryption key (attributes {0})")]
    NotAStorageKey(String),
    #[error("the EK's symmetric algorithm must be AES in CFB mode with 128, 192 or 256 bits")]
    UnsupportedSymmetric,
    #[error("curve {0} is not supported for ECDH here (P-256, P-384 only)")]
    UnsupportedCurve(&'static str),
    #[error("the EK public key is not usable: {0}")]
    BadEkKey(&'static str),
    #[error("credential has {size} bytes; the EK's name algorithm allows at most {max}")]
    CredentialTooLarge { size: usize, max: usize },
    #[error("object name is not a TPM name: {0}")]
    BadObjectName(&'static str),
    #[error("KDF output of {0} bits is out of range")]
    KdfLength(u64),
    #[error("name algorithm {0} has no HMAC here: credential protection needs SHA-1 or SHA-2")]
    UnsupportedNameAlg(HashAlg),
    #[error("the system random generator failed")]
    Random,
}
