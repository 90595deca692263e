//! The bundle key: an ECC P-256 ECDH key that only works in the measured PCR state
//! (DESIGN.md §3 "Bundle"). Its authPolicy is PolicyPCR over the measured PCRs (TPM 2.0
//! Part 3 §23.7) and userWithAuth is clear, so TPM2_ECDH_ZGen (Part 3 §14.5) needs a
//! policy session that the TPM only completes while those PCRs hold the attested values.

use protocol::tpm::pcr::PcrSelection;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::PolicySession;
use tss_esapi::structures::{
    Digest, EccParameter, EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme,
    PublicBuilder, PublicEccParametersBuilder, SymmetricDefinitionObject,
};
use zeroize::Zeroizing;

use super::{Key, Tpm, selection_list};
use crate::error::{Error, Result, TpmResultExt};

/// Persistent handle of the bundle key.
pub const BUNDLE_KEY_HANDLE: u32 = 0x8100_5453;

impl Tpm {
    /// TPM2_CreatePrimary in the owner hierarchy of a fresh ECDH key bound to
    /// `auth_policy`: fixedTPM, fixedParent, sensitiveDataOrigin, decrypt, noDA; not sign,
    /// not restricted, and no userWithAuth, so its empty authValue opens nothing. `unique`
    /// (32 random bytes) makes each creation a new key although the template repeats.
    pub fn create_bundle_key(&mut self, auth_policy: &[u8], unique: &[u8; 32]) -> Result<Key> {
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(false)
            .with_admin_with_policy(false)
            .with_no_da(true)
            .with_restricted(false)
            .with_decrypt(true)
            .with_sign_encrypt(false)
            .build()
            .tpm("bundle key attributes")?;
        let parameters = PublicEccParametersBuilder::new()
            .with_symmetric(SymmetricDefinitionObject::Null)
            .with_ecc_scheme(EccScheme::EcDh(HashScheme::new(HashingAlgorithm::Sha256)))
            .with_curve(EccCurve::NistP256)
            .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
            .with_is_signing_key(false)
            .with_is_decryption_key(true)
            .with_restricted(false)
            .build()
            .tpm("bundle key parameters")?;
        let unique = EccPoint::new(
            EccParameter::try_from(unique.to_vec()).tpm("unique")?,
            EccParameter::try_from(vec![0u8; 32]).tpm("unique")?,
        );
        let template = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes)
            .with_auth_policy(Digest::try_from(auth_policy.to_vec()).tpm("authPolicy")?)
            .with_ecc_parameters(parameters)
            .with_ecc_unique_identifier(unique)
            .build()
            .tpm("bundle key template")?;
        let created = self
            .with_password(|ctx| {
                ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .tpm("TPM2_CreatePrimary")?;
        self.key(created.key_handle, true)
    }

    /// Makes `key` the device's bundle key at [`BUNDLE_KEY_HANDLE`], replacing any earlier.
    pub fn persist_bundle_key(&mut self, key: Key) -> Result<Key> {
        self.evict(BUNDLE_KEY_HANDLE)?;
        self.persist(key, BUNDLE_KEY_HANDLE)
    }

    /// The persisted bundle key, if the device has one.
    pub fn bundle_key(&mut self) -> Result<Option<Key>> {
        self.persistent_key(BUNDLE_KEY_HANDLE)
    }

    /// TPM2_PolicyPCR over `selection` (current values) then TPM2_ECDH_ZGen with the
    /// bundle key: Z = d·P, returned as the x-coordinate (the ECDH shared secret of
    /// RFC 9053 §6.3.1). Fails with TPM_RC_POLICY_FAIL once any selected PCR moved.
    pub fn ecdh_z_gen(
        &mut self,
        key: &Key,
        selection: &PcrSelection,
        peer_x: &[u8],
        peer_y: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let point = EccPoint::new(
            EccParameter::try_from(peer_x.to_vec()).tpm("peer point")?,
            EccParameter::try_from(peer_y.to_vec()).tpm("peer point")?,
        );
        let list = selection_list(selection)?;
        let session = self.policy_session()?;
        let result = PolicySession::try_from(session)
            .tpm("policy session")
            .and_then(|policy| {
                self.ctx.policy_pcr(policy, Digest::default(), list).tpm("TPM2_PolicyPCR")
            })
            .and_then(|()| {
                self.ctx
                    .execute_with_session(Some(session), |ctx| ctx.ecdh_z_gen(key.handle, point))
                    .tpm("TPM2_ECDH_ZGen")
            });
        self.flush_session(session)?;
        let z = result?;
        if z.x().as_bytes().is_empty() {
            return Err(Error::Structure("TPM2_ECDH_ZGen returned an empty point".into()));
        }
        Ok(Zeroizing::new(z.x().as_bytes().to_vec()))
    }
}
