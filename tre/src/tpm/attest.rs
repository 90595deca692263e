//! Attestation with the AK: creating it, credential activation with the EK, quotes and
//! certification (TPM 2.0 Part 3 §12.5 ActivateCredential, §18.4 Quote, §18.2 Certify).
//!
//! The AK is a restricted signing key made with TPM2_CreatePrimary in the endorsement
//! hierarchy, so it lives next to the EK that vouches for it, and persisted so a device
//! keeps the identity the PVA enrolled across restarts.

use protocol::tpm::pcr::PcrSelection;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, Digest, EccPoint, EccScheme, EncryptedSecret, HashScheme, IdObject,
    KeyDerivationFunctionScheme, MaxBuffer, Nonce, PublicBuilder, PublicEccParametersBuilder,
    PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent, RsaScheme, SignatureScheme,
    SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::traits::Marshall;
use zeroize::Zeroizing;

use super::{Key, KeyAlg, Tpm, selection_list};
use crate::error::{Error, Result, TpmResultExt};

/// Persistent handle of the TRE's AK (owner range; "TR" in the low bytes).
pub const AK_HANDLE: u32 = 0x8100_5452;

/// A signed TPM attestation as the TPM returned it: the marshalled TPMS_ATTEST (the signed
/// message) and the marshalled TPMT_SIGNATURE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedAttest {
    pub attest: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Tpm {
    /// The AK at [`AK_HANDLE`], created and persisted on first use.
    pub fn ak(&mut self, alg: KeyAlg) -> Result<Key> {
        if let Some(key) = self.persistent_key(AK_HANDLE)? {
            return Ok(key);
        }
        let key = self.create_ak(alg)?;
        self.persist(key, AK_HANDLE)
    }

    /// TPM2_CreatePrimary of a restricted signing key in the endorsement hierarchy:
    /// fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, restricted, sign; ECDSA
    /// P-256 or RSASSA 2048 with SHA-256 (the attributes the PVA insists on). And noDA: its
    /// authValue is empty, so dictionary-attack protection guards nothing, while every
    /// power loss counts as a failed try (TPM 2.0 Part 1 §19.8.6) — a device that lost power
    /// a few times would find its AK locked out and could never attest again
    /// (go-attestation's AK templates set noDA for the same reason).
    pub fn create_ak(&mut self, alg: KeyAlg) -> Result<Key> {
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_no_da(true)
            .with_restricted(true)
            .with_sign_encrypt(true)
            .with_decrypt(false)
            .build()
            .tpm("AK attributes")?;
        let builder = PublicBuilder::new()
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes);
        let template = match alg {
            KeyAlg::Ecc => builder
                .with_public_algorithm(PublicAlgorithm::Ecc)
                .with_ecc_parameters(
                    PublicEccParametersBuilder::new()
                        .with_symmetric(SymmetricDefinitionObject::Null)
                        .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(
                            HashingAlgorithm::Sha256,
                        )))
                        .with_curve(EccCurve::NistP256)
                        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                        .with_is_signing_key(true)
                        .with_is_decryption_key(false)
                        .with_restricted(true)
                        .build()
                        .tpm("AK parameters")?,
                )
                .with_ecc_unique_identifier(EccPoint::default()),
            KeyAlg::Rsa => builder
                .with_public_algorithm(PublicAlgorithm::Rsa)
                .with_rsa_parameters(
                    PublicRsaParametersBuilder::new()
                        .with_symmetric(SymmetricDefinitionObject::Null)
                        .with_scheme(RsaScheme::RsaSsa(HashScheme::new(HashingAlgorithm::Sha256)))
                        .with_key_bits(RsaKeyBits::Rsa2048)
                        .with_exponent(RsaExponent::default())
                        .with_is_signing_key(true)
                        .with_is_decryption_key(false)
                        .with_restricted(true)
                        .build()
                        .tpm("AK parameters")?,
                )
                .with_rsa_unique_identifier(PublicKeyRsa::default()),
        }
        .build()
        .tpm("AK template")?;
        let created = self
            .with_password(|ctx| {
                ctx.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
            })
            .tpm("TPM2_CreatePrimary")?;
        self.key(created.key_handle, true)
    }

    /// TPM2_ActivateCredential: recovers the secret a verifier sealed to `ak`'s name under
    /// `ek` with MakeCredential. The EK's policy (PolicySecret(TPM_RH_ENDORSEMENT), TCG EK
    /// Credential Profile §2.1.5.1) authorizes its use; the TPM releases the secret only if
    /// the credential names this AK and was made for this EK.
    pub fn activate_credential(
        &mut self,
        ak: &Key,
        ek: &Key,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let blob = IdObject::try_from(credential_blob.to_vec())
            .map_err(|e| Error::Structure(format!("credential blob: {e}")))?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec())
            .map_err(|e| Error::Structure(format!("encrypted secret: {e}")))?;
        let session = self.ek_policy_session()?;
        let result = self
            .ctx
            .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |ctx| {
                ctx.activate_credential(ak.handle, ek.handle, blob, secret)
            })
            .tpm("TPM2_ActivateCredential");
        self.flush_session(session)?;
        Ok(Zeroizing::new(result?.as_bytes().to_vec()))
    }

    /// TPM2_Quote by `ak` over `selection` with `qualifying_data` (the verifier's nonce).
    pub fn quote(
        &mut self,
        ak: &Key,
        qualifying_data: &[u8],
        selection: &PcrSelection,
    ) -> Result<SignedAttest> {
        let data = Data::try_from(qualifying_data.to_vec()).tpm("qualifying data")?;
        let list = selection_list(selection)?;
        let (attest, signature) = self
            .with_password(|ctx| ctx.quote(ak.handle, data, SignatureScheme::Null, list))
            .tpm("TPM2_Quote")?;
        signed(attest.marshall(), signature.marshall())
    }

    /// TPM2_Certify of `object` by `ak` with `qualifying_data`: the TPM's statement that
    /// it holds an object of this name (and so of this public area and policy).
    pub fn certify(
        &mut self,
        object: &Key,
        ak: &Key,
        qualifying_data: &[u8],
    ) -> Result<SignedAttest> {
        let data = Data::try_from(qualifying_data.to_vec()).tpm("qualifying data")?;
        let (attest, signature) = self
            .ctx
            .execute_with_sessions(
                (Some(AuthSession::Password), Some(AuthSession::Password), None),
                |ctx| {
                    ctx.certify(
                        ObjectHandle::from(object.handle),
                        ak.handle,
                        data,
                        SignatureScheme::Null,
                    )
                },
            )
            .tpm("TPM2_Certify")?;
        signed(attest.marshall(), signature.marshall())
    }

    /// TPM2_Hash then TPM2_Sign by `ak` over `data` (at most 1024 bytes): a restricted key
    /// signs external data only with the hash ticket proving that the data does not start
    /// with TPM_GENERATED_VALUE, so nothing signed this way can pass for a quote (Part 1
    /// §36.3). Returns the marshalled TPMT_SIGNATURE.
    pub fn sign(&mut self, ak: &Key, data: &[u8]) -> Result<Vec<u8>> {
        let buffer = MaxBuffer::try_from(data.to_vec()).tpm("data to sign")?;
        let (digest, ticket) = self
            .ctx
            .hash(buffer, HashingAlgorithm::Sha256, Hierarchy::Endorsement)
            .tpm("TPM2_Hash")?;
        let signature = self
            .with_password(|ctx| ctx.sign(ak.handle, digest, SignatureScheme::Null, ticket))
            .tpm("TPM2_Sign")?;
        signature.marshall().map_err(|e| Error::Structure(format!("TPMT_SIGNATURE: {e}")))
    }

    /// A policy session satisfying the EK's policy A: PolicySecret(TPM_RH_ENDORSEMENT).
    fn ek_policy_session(&mut self) -> Result<AuthSession> {
        let session = self.policy_session()?;
        let policy = PolicySession::try_from(session).tpm("policy session")?;
        let result = self
            .with_password(|ctx| {
                ctx.policy_secret(
                    policy,
                    AuthHandle::Endorsement,
                    Nonce::default(),
                    Digest::default(),
                    Nonce::default(),
                    None,
                )
            })
            .tpm("TPM2_PolicySecret");
        if let Err(e) = result {
            self.flush_session(session)?;
            return Err(e);
        }
        Ok(session)
    }

    /// TPM2_StartAuthSession of an unbound, unsalted policy session with SHA-256 as its
    /// hash. Nothing secret crosses the TPM interface in the commands it authorizes
    /// (ZGen's output is protected by HKDF and the AEAD around it), so no parameter
    /// encryption, which an unsalted, unbound session could not key anyway.
    pub(crate) fn policy_session(&mut self) -> Result<AuthSession> {
        self.ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .tpm("TPM2_StartAuthSession")?
            .ok_or_else(|| Error::Structure("TPM returned no session".into()))
    }

    /// TPM2_FlushContext of a session: without a resource manager, sessions are a
    /// scarce resource (three on swtpm) and must not leak on error paths.
    pub(crate) fn flush_session(&mut self, session: AuthSession) -> Result<()> {
        let handle = SessionHandle::from(session);
        self.ctx.flush_context(ObjectHandle::from(handle)).tpm("TPM2_FlushContext")
    }
}

fn signed(
    attest: tss_esapi::Result<Vec<u8>>,
    signature: tss_esapi::Result<Vec<u8>>,
) -> Result<SignedAttest> {
    Ok(SignedAttest {
        attest: attest.map_err(|e| Error::Structure(format!("TPMS_ATTEST: {e}")))?,
        signature: signature.map_err(|e| Error::Structure(format!("TPMT_SIGNATURE: {e}")))?,
    })
}
