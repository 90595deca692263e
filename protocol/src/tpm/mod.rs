//! TPM 2.0 structures and the software side of TPM protocols (TPM 2.0 Library, Parts 1–2).
//!
//! Layout:
//! - [`alg`]: hash algorithm identifiers (TPM_ALG_ID) and their digests.
//! - [`wire`]: the marshalling codec: bounded `Reader`, `Marshal`/`Unmarshal`, `Tpm2b`.
//! - [`public`]: TPMT_PUBLIC / TPM2B_PUBLIC, object attributes, names.
//! - [`pcr`]: PCR selections (TPML_PCR_SELECTION), PCR values, PCR digests.
//! - [`attest`]: TPMS_ATTEST of quotes and certifications.
//! - [`signature`]: TPMT_SIGNATURE and its verification.
//! - [`spki`]: public keys as X.509 SubjectPublicKeyInfo and PEM (`ak.pem`).
//! - [`policy`]: policy digests (TPM2_PolicyPCR) computed in software.
//! - [`kdf`]: KDFa and KDFe.
//! - [`credential`]: TPM2_MakeCredential in software.
//! - [`tools`]: tpm2-tools file formats (quote.pcrs, PCR values, credential blobs).
//! - [`error`]: the error enums of this module.

pub mod alg;
pub mod attest;
pub mod credential;
pub mod error;
pub mod kdf;
pub mod pcr;
pub mod policy;
pub mod public;
pub mod signature;
pub mod spki;
pub mod tools;
pub mod wire;

pub use alg::HashAlg;
pub use attest::{Attest, Attested, CertifyInfo, ClockInfo, QuoteInfo};
pub use credential::{MadeCredential, make_credential};
pub use error::{CredentialError, KeyError, PcrError, SignatureError, WireError};
pub use pcr::{BankSelection, PcrSelection, PcrValues};
pub use policy::{PolicyDigest, policy_pcr};
pub use public::{ObjectAttributes, Public, PublicKey};
pub use signature::Signature;
pub use spki::Spki;
pub use tools::QuotePcrs;
pub use wire::{Data, Digest, Marshal, Name, Reader, Tpm2b, Unmarshal};
