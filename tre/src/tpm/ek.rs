//! The endorsement key: created from the TCG default templates (EK Credential Profile 2.x
//! §2.1.5, templates L-1 RSA 2048 and L-2 ECC P-256), found at its persistent handle.

use tss_esapi::abstraction::ek as templates;
use tss_esapi::interface_types::resource_handles::Hierarchy;

use super::{Key, KeyAlg, Tpm};
use crate::error::{Result, TpmResultExt};

impl Tpm {
    /// TPM2_CreatePrimary in the endorsement hierarchy from the TCG default EK template
    /// (EK Credential Profile 2.x, templates L-1 and L-2). Deterministic: the same TPM
    /// always yields the same EK.
    pub fn create_ek(&mut self, alg: KeyAlg) -> Result<Key> {
        let template = templates::create_ek_public_from_default_template(alg.ek_template(), None)
            .tpm("EK template")?;
        let created = self
            .with_password(|ctx| {
                ctx.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
            })
            .tpm("TPM2_CreatePrimary")?;
        self.key(created.key_handle, true)
    }

    /// The EK: the persistent one if manufacturing made it persistent, else a transient
    /// one created from the template (release it when done).
    pub fn ek(&mut self, alg: KeyAlg) -> Result<Key> {
        match self.persistent_key(alg.ek_handle())? {
            Some(key) => Ok(key),
            None => self.create_ek(alg),
        }
    }
}
