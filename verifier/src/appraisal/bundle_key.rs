//! The bundle key (DESIGN.md §3 "Bundle"): the TPM key the DPF encrypts the subscription to.
//!
//! Authenticity (refused when it fails): TPM2_Certify (TPM 2.0 Part 3 §18.2) signed by the
//! enrolled AK, magic TPM_GENERATED_VALUE, type TPM_ST_ATTEST_CERTIFY, qualified with the
//! quote's nonce, and certifying the name of exactly the public area presented (the name
//! is a hash of the whole TPMT_PUBLIC, attributes and authPolicy included).
//!
//! Integrity (a contraindicated EAR when it fails): the key must be unusable outside the
//! attested state. Required: fixedTPM, fixedParent, sensitiveDataOrigin (created in this
//! TPM, never duplicated), decrypt. Forbidden: sign and x509sign (a decryption key only),
//! restricted (ECDH_ZGen needs an unrestricted key; a restricted decryption key is a
//! storage parent), userWithAuth (with it the empty authValue would open the key in any
//! PCR state). adminWithPolicy is not required: the ADMIN role (TPM2_Certify,
//! TPM2_ObjectChangeAuth, TPM2_ActivateCredential) cannot decrypt with the key, and the
//! DUP role always needs the policy and is excluded by fixedParent anyway. NIST P-256 with
//! ECDH (or no scheme), no symmetric algorithm or KDF, SHA-256 name algorithm, and an
//! authPolicy equal to PolicyPCR over the policy selection with the PCR values the
//! reference values predict: any other policy (an OR branch, a PolicyAuthValue, other
//! PCR values) gives another digest.

use protocol::Nonce;
use protocol::evidence::BundleKeyEvidence;
use protocol::tpm::attest::TPM_ST_ATTEST_CERTIFY;
use protocol::tpm::public::{EccCurve, EccScheme, KdfScheme, SymDefObject};
use protocol::tpm::{Attest, HashAlg, ObjectAttributes, Public, PublicKey, Signature, Unmarshal};
use subtle::ConstantTimeEq;

use super::failures::Failures;
use crate::enrol::attribute_diff;
use crate::error::{AppraisalError, Attestation};
use crate::refvalues::{POLICY_HASH, ReferenceValues};

/// Attributes a bundle key must have.
pub fn required() -> ObjectAttributes {
    ObjectAttributes::FIXED_TPM
        | ObjectAttributes::FIXED_PARENT
        | ObjectAttributes::SENSITIVE_DATA_ORIGIN
        | ObjectAttributes::DECRYPT
}

/// Attributes a bundle key must not have.
pub fn forbidden() -> ObjectAttributes {
    ObjectAttributes::SIGN_ENCRYPT
        | ObjectAttributes::X509_SIGN
        | ObjectAttributes::RESTRICTED
        | ObjectAttributes::USER_WITH_AUTH
}

/// The certification and the certified public area, after the authenticity checks.
pub(super) fn authenticate(
    evidence: &BundleKeyEvidence,
    ak: &Public,
    nonce: &Nonce,
) -> Result<(Attest, Public), AppraisalError> {
    let malformed =
        |error| AppraisalError::AttestationMalformed { what: Attestation::Certify, error };
    let signed = &evidence.certify;
    let attest = Attest::from_bytes(&signed.attest).map_err(malformed)?;
    let signature = Signature::from_bytes(&signed.signature).map_err(malformed)?;
    signature.verify(ak, &signed.attest).map_err(AppraisalError::CertifySignatureInvalid)?;
    if !attest.is_tpm_generated() {
        return Err(AppraisalError::NotTpmGenerated(Attestation::Certify));
    }
    let Some(info) = attest.certify().filter(|_| attest.tag() == TPM_ST_ATTEST_CERTIFY) else {
        return Err(AppraisalError::NotACertify { tag: attest.tag() });
    };
    if !bool::from(attest.extra_data.as_bytes().ct_eq(nonce.as_bytes())) {
        return Err(AppraisalError::CertifyNonceMismatch);
    }
    let public =
        Public::from_bytes(&evidence.public).map_err(AppraisalError::BundleKeyMalformed)?;
    if info.name.as_bytes() != public.name().as_bytes() {
        return Err(AppraisalError::BundleKeyNotCertified);
    }
    Ok((attest, public))
}

/// The integrity checks of the certified key.
pub(super) fn check(key: &Public, refs: &ReferenceValues, failures: &mut Failures) {
    let (missing, forbidden) = attribute_diff(key.attributes, required(), forbidden());
    if missing != ObjectAttributes::empty() || forbidden != ObjectAttributes::empty() {
        failures.push(AppraisalError::BundleKeyAttributes { missing, forbidden });
    }
    if let Some(reason) = algorithm_problem(key) {
        failures.push(AppraisalError::BundleKeyAlgorithm(reason));
    }
    if key.auth_policy.as_bytes() != refs.expected_auth_policy() {
        failures.push(AppraisalError::BundleKeyPolicyMismatch);
    }
}

fn algorithm_problem(key: &Public) -> Option<&'static str> {
    if key.name_alg != POLICY_HASH {
        return Some("its name algorithm is not SHA-256");
    }
    let PublicKey::Ecc { parms, point } = &key.key else {
        return Some("it is not an ECC key");
    };
    if parms.curve != EccCurve::NistP256 {
        return Some("it is not on NIST P-256");
    }
    if !matches!(parms.scheme, EccScheme::Null | EccScheme::Ecdh(HashAlg::Sha256)) {
        return Some("its scheme is neither ECDH with SHA-256 nor unset");
    }
    if parms.symmetric != SymDefObject::Null || parms.kdf != KdfScheme::Null {
        return Some("it has a symmetric algorithm or a KDF");
    }
    if point.x.len() != 32 || point.y.len() != 32 {
        return Some("its public point is not two 32-byte coordinates");
    }
    None
}
