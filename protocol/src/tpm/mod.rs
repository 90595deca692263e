//! TPM 2.0 structures and the software side of TPM protocols (TPM 2.0 Library, Parts 1–2).
//!
//! Layout:
//! - [`alg`]: hash algorithm identifiers (TPM_ALG_ID) and their digests.

pub mod alg;

pub use alg::HashAlg;
