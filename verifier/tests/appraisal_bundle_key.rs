//! Bundle keys that the TPM made and the AK certified, for this nonce and with the right
//! PCR policy, but that are not fit to receive a subscription: usable with the empty
//! authValue (userWithAuth), signing keys, storage parents, other curves or algorithms.
//! The keys are created on the device's swtpm with tss-esapi directly, because the TRE
//! only ever makes the right one.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::str::FromStr;
use std::time::SystemTime;

use protocol::evidence::SignedAttest;
use protocol::tpm::ObjectAttributes;
use serde_bytes::ByteBuf;
use support::Lab;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Data, Digest, EccParameter, EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme,
    Public, PublicBuilder, PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder,
    RsaExponent, RsaScheme, SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::traits::Marshall;
use tss_esapi::{Context, TctiNameConf};
use verifier::AppraisalError;

/// What differs from the TRE's bundle key.
#[derive(Clone, Copy, Debug)]
enum Variant {
    UserWithAuth,
    Signing,
    StorageParent,
    P384,
    Rsa,
    Sha384Name,
}

fn template(variant: Variant, policy: &[u8]) -> Public {
    let mut attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_no_da(true)
        .with_user_with_auth(matches!(variant, Variant::UserWithAuth));
    attrs = match variant {
        Variant::Signing => attrs.with_sign_encrypt(true),
        Variant::StorageParent => attrs.with_decrypt(true).with_restricted(true),
        _ => attrs.with_decrypt(true),
    };
    let attrs = attrs.build().unwrap();
    let name_alg = match variant {
        Variant::Sha384Name => HashingAlgorithm::Sha384,
        _ => HashingAlgorithm::Sha256,
    };
    let policy = match variant {
        Variant::Sha384Name => Digest::default(),
        _ => Digest::try_from(policy.to_vec()).unwrap(),
    };
    let builder = PublicBuilder::new()
        .with_name_hashing_algorithm(name_alg)
        .with_object_attributes(attrs)
        .with_auth_policy(policy);
    if let Variant::Rsa = variant {
        return builder
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_rsa_parameters(
                PublicRsaParametersBuilder::new()
                    .with_symmetric(SymmetricDefinitionObject::Null)
                    .with_scheme(RsaScheme::Null)
                    .with_key_bits(RsaKeyBits::Rsa2048)
                    .with_exponent(RsaExponent::default())
                    .with_is_decryption_key(true)
                    .with_is_signing_key(false)
                    .with_restricted(false)
                    .build()
                    .unwrap(),
            )
            .with_rsa_unique_identifier(PublicKeyRsa::default())
            .build()
            .unwrap();
    }
    let (curve, scheme, symmetric, sign, decrypt, restricted, size) = match variant {
        Variant::Signing => (
            EccCurve::NistP256,
            EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
            SymmetricDefinitionObject::Null,
            true,
            false,
            false,
            32,
        ),
        Variant::StorageParent => (
            EccCurve::NistP256,
            EccScheme::Null,
            SymmetricDefinitionObject::AES_128_CFB,
            false,
            true,
            true,
            32,
        ),
        Variant::P384 => (
            EccCurve::NistP384,
            EccScheme::EcDh(HashScheme::new(HashingAlgorithm::Sha384)),
            SymmetricDefinitionObject::Null,
            false,
            true,
            false,
            48,
        ),
        _ => (
            EccCurve::NistP256,
            EccScheme::EcDh(HashScheme::new(HashingAlgorithm::Sha256)),
            SymmetricDefinitionObject::Null,
            false,
            true,
            false,
            32,
        ),
    };
    builder
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new()
                .with_symmetric(symmetric)
                .with_ecc_scheme(scheme)
                .with_curve(curve)
                .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                .with_is_signing_key(sign)
                .with_is_decryption_key(decrypt)
                .with_restricted(restricted)
                .build()
                .unwrap(),
        )
        .with_ecc_unique_identifier(EccPoint::new(
            EccParameter::try_from(vec![0x5A; size]).unwrap(),
            EccParameter::try_from(vec![0u8; size]).unwrap(),
        ))
        .build()
        .unwrap()
}

/// Creates the key on the TPM behind `tcti` and has the AK certify it for `nonce`:
/// (marshalled TPMT_PUBLIC, certification).
fn certified_key(
    tcti: &str,
    variant: Variant,
    policy: &[u8],
    nonce: &[u8],
) -> (Vec<u8>, SignedAttest) {
    let mut ctx = Context::new(TctiNameConf::from_str(tcti).unwrap()).unwrap();
    let created = ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.create_primary(Hierarchy::Owner, template(variant, policy), None, None, None, None)
        })
        .unwrap();
    let ak = ctx
        .tr_from_tpm_public(TpmHandle::Persistent(
            PersistentTpmHandle::new(tre::tpm::AK_HANDLE).unwrap(),
        ))
        .unwrap();
    let (attest, signature) = ctx
        .execute_with_sessions(
            (Some(AuthSession::Password), Some(AuthSession::Password), None),
            |ctx| {
                ctx.certify(
                    ObjectHandle::from(created.key_handle),
                    KeyHandle::from(ak),
                    Data::try_from(nonce.to_vec()).unwrap(),
                    SignatureScheme::Null,
                )
            },
        )
        .unwrap();
    ctx.flush_context(ObjectHandle::from(created.key_handle)).unwrap();
    (
        created.out_public.marshall().unwrap(),
        SignedAttest {
            attest: ByteBuf::from(attest.marshall().unwrap()),
            signature: ByteBuf::from(signature.marshall().unwrap()),
        },
    )
}

#[test]
fn certified_keys_unfit_for_the_bundle_are_contraindicated() {
    let lab = Lab::new();
    let pva = lab.pva();
    let expected_policy =
        verifier::ReferenceValues::parse(&lab.refvalues).unwrap().expected_auth_policy().to_vec();
    let mut device = lab.device();
    device.enrol(&pva);
    let attrs =
        |a: &[ObjectAttributes]| a.iter().fold(ObjectAttributes::empty(), |acc, b| acc | *b);
    let none = ObjectAttributes::empty();
    let cases: Vec<(Variant, Vec<AppraisalError>)> = vec![
        (
            Variant::UserWithAuth,
            vec![AppraisalError::BundleKeyAttributes {
                missing: none,
                forbidden: ObjectAttributes::USER_WITH_AUTH,
            }],
        ),
        (
            Variant::Signing,
            vec![
                AppraisalError::BundleKeyAttributes {
                    missing: ObjectAttributes::DECRYPT,
                    forbidden: ObjectAttributes::SIGN_ENCRYPT,
                },
                AppraisalError::BundleKeyAlgorithm(
                    "its scheme is neither ECDH with SHA-256 nor unset",
                ),
            ],
        ),
        (
            Variant::StorageParent,
            vec![
                AppraisalError::BundleKeyAttributes {
                    missing: none,
                    forbidden: attrs(&[ObjectAttributes::RESTRICTED]),
                },
                AppraisalError::BundleKeyAlgorithm("it has a symmetric algorithm or a KDF"),
            ],
        ),
        (Variant::P384, vec![AppraisalError::BundleKeyAlgorithm("it is not on NIST P-256")]),
        (Variant::Rsa, vec![AppraisalError::BundleKeyAlgorithm("it is not an ECC key")]),
        (
            Variant::Sha384Name,
            vec![
                AppraisalError::BundleKeyAlgorithm("its name algorithm is not SHA-256"),
                AppraisalError::BundleKeyPolicyMismatch,
            ],
        ),
    ];
    // Evidence for each case first: the device's TPM connection must be closed before
    // another client can reach its swtpm.
    let evidences: Vec<_> = cases
        .iter()
        .map(|_| {
            let nonce = device.challenge(&pva);
            (nonce, device.attester().evidence(&nonce).unwrap())
        })
        .collect();
    device.attester = None;
    let tcti = device.swtpm.tcti();
    for ((variant, expected), (nonce, mut evidence)) in cases.into_iter().zip(evidences) {
        let (public, certify) = certified_key(&tcti, variant, &expected_policy, nonce.as_bytes());
        evidence.bundle_key.as_mut().unwrap().public = ByteBuf::from(public);
        evidence.bundle_key.as_mut().unwrap().certify = certify;
        let a = pva.appraise_evidence(&evidence, SystemTime::now()).unwrap();
        assert_eq!(a.failures, expected, "{variant:?}");
        assert_eq!(a.status(), protocol::ear::TrustTier::Contraindicated);
    }
}
