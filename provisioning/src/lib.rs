//! The operator side of tresor (DESIGN.md §1): the registration operator RO (DRF, DPF), the
//! MNOs, and the certificate infrastructure under the CI that authenticates them.
//!
//! Layout:
//! - [`mno`]: the MNO-A / MNO-B service: IMSI pool, encrypted subscriber store, AuC, API.
//! - [`ro`]: the registration operator: DRF, relay, DPF, campaigns and device states.
//! - [`pki`]: `tresor pki init`: CI root, PVA/RO/MNO certificates, TPM manufacturer CA; loading.

#![forbid(unsafe_code)]

pub mod mno;
pub mod pki;
pub mod ro;
