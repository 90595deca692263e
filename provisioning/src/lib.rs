//! The operator side of tresor (DESIGN.md §1): the registration operator RO (DRF, DPF), the
//! MNOs, and the certificate infrastructure under the CI that authenticates them.
//!
//! Layout:
//! - [`pki`]: `tresor pki init`: CI root, PVA/RO/MNO certificates, TPM manufacturer CA; loading.

#![forbid(unsafe_code)]

pub mod pki;
