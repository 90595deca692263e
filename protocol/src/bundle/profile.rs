//! The inner bundle: the subscription profile signed by the new operator (MNO-B) as a
//! COSE_Sign1 (RFC 9052 §4.2, tag 18) with ES256 (RFC 9053 §2.1) and the signer's
//! certificate in an x5chain header (RFC 9360 §2, label 33), validated to the CI root.
//!
//! `docs/bundle.md` documents the payload fields and the order of the checks.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use coset::cbor::value::Value;
use coset::iana;
use coset::{CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry as oids;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use super::cose::{alg_name, has_alg, header_value};
use super::{BundleError, MAX_SIGNED_PROFILE_LEN, cbor};
use crate::ids::DeviceId;
use crate::secret::SubscriptionProfile;
use crate::x509::{self, ChainPolicy, MAX_INTERMEDIATES, TrustAnchors};

/// How far in the future `issued` may lie, for clocks that disagree a little.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// x5chain (RFC 9360 §2).
const X5CHAIN: i64 = iana::HeaderParameter::X5Chain as i64;

/// What MNO-B signs: the profile and everything it is bound to. CBOR map with text keys
/// (field names below); `docs/bundle.md` gives the encoding of each field.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilePayload {
    /// The device the profile is for (TPM name of its EK).
    pub device_id: DeviceId,
    /// The signer's role name, which is its certificate's common name (e.g. `mno-b`).
    pub operator: String,
    /// The campaign this change belongs to.
    pub campaign: String,
    /// IMSI, ICCID, K, OPc, AMF and OTA keys for the card.
    pub profile: SubscriptionProfile,
    /// Anti-rollback sequence: the TRE installs it only above its NV counter.
    pub sequence: u64,
    /// Unix seconds.
    pub issued: u64,
    /// Unix seconds; the profile is refused at and after this instant.
    pub expires: u64,
    /// SHA-256 of the EAR (COSE_Sign1 bytes) the operator based the release on.
    #[serde(with = "serde_bytes")]
    pub ear_hash: [u8; 32],
}

/// A signed profile whose every check passed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifiedProfile {
    pub payload: ProfilePayload,
    /// The signer certificate's subject (RFC 4514 string).
    pub signer_subject: String,
    /// The validated path, signer first, CI root last (DER).
    pub signer_chain: Vec<Vec<u8>>,
}

impl VerifiedProfile {
    /// The anti-rollback sequence number, for [`super::check_sequence`].
    pub fn sequence(&self) -> u64 {
        self.payload.sequence
    }

    /// The profile must have been made for the EAR whose hash is `ear_hash`.
    pub fn check_ear_hash(&self, ear_hash: &[u8; 32]) -> Result<(), BundleError> {
        if &self.payload.ear_hash == ear_hash {
            Ok(())
        } else {
            Err(BundleError::WrongEar {
                expected: hex::encode(ear_hash),
                found: hex::encode(self.payload.ear_hash),
            })
        }
    }
}

/// An operator's profile-signing identity: its ES256 key and its certificate chain.
pub struct ProfileSigner {
    key: EcdsaKeyPair,
    x5chain: Vec<Vec<u8>>,
    operator: String,
}

impl fmt::Debug for ProfileSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileSigner")
            .field("operator", &self.operator)
            .field("x5chain", &self.x5chain.len())
            .finish_non_exhaustive()
    }
}

impl ProfileSigner {
    /// A PKCS#8 PEM "PRIVATE KEY" (ECDSA P-256) as `tresor pki init` writes `mno-b.key`, and
    /// the chain for the x5chain header: the operator certificate first, then any
    /// intermediates (not the CI root, which verifiers hold).
    pub fn from_pkcs8_pem(key_pem: &str, x5chain: Vec<Vec<u8>>) -> Result<Self, BundleError> {
        let block = pem::parse(key_pem).map_err(|_| BundleError::SigningKey("not PEM"))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(BundleError::SigningKey("not a PKCS#8 PRIVATE KEY block"));
        }
        let der = Zeroizing::new(block.into_contents());
        Self::from_pkcs8_der(&der, x5chain)
    }

    /// As [`Self::from_pkcs8_pem`], from the PKCS#8 DER.
    pub fn from_pkcs8_der(pkcs8: &[u8], x5chain: Vec<Vec<u8>>) -> Result<Self, BundleError> {
        let key = EcdsaKeyPair::from_pkcs8(
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|_| BundleError::SigningKey("not an ECDSA P-256 PKCS#8 key"))?;
        if x5chain.is_empty() || x5chain.len() > 1 + MAX_INTERMEDIATES {
            return Err(BundleError::X5chainLength {
                count: x5chain.len(),
                max: 1 + MAX_INTERMEDIATES,
            });
        }
        let leaf = x5chain.first().map(Vec::as_slice).unwrap_or_default();
        let cert = parse_certificate(leaf)?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key().as_ref() {
            return Err(BundleError::KeyCertificateMismatch);
        }
        let operator = common_name(&cert)?;
        Ok(Self { key, x5chain, operator })
    }

    /// The operator name verifiers will see: the certificate's common name.
    pub fn operator(&self) -> &str {
        &self.operator
    }

    /// Signs `payload` as a tagged COSE_Sign1. `payload.operator` must be this signer's
    /// name, or verifiers would refuse the result.
    pub fn sign(&self, payload: &ProfilePayload) -> Result<Vec<u8>, BundleError> {
        if payload.operator != self.operator {
            return Err(BundleError::OperatorMismatch {
                payload: payload.operator.clone(),
                signer: self.operator.clone(),
            });
        }
        let chain = match self.x5chain.as_slice() {
            [single] => Value::Bytes(single.clone()),
            many => Value::Array(many.iter().cloned().map(Value::Bytes).collect()),
        };
        let protected =
            HeaderBuilder::new().algorithm(iana::Algorithm::ES256).value(X5CHAIN, chain).build();
        let body = Zeroizing::new(cbor::encode(payload).map_err(BundleError::Encode)?);
        if body.len() > MAX_SIGNED_PROFILE_LEN {
            return Err(BundleError::TooLarge {
                what: "profile payload",
                len: body.len(),
                max: MAX_SIGNED_PROFILE_LEN,
            });
        }
        let rng = SystemRandom::new();
        let sign1 = CoseSign1Builder::new()
            .protected(protected)
            .payload(body.to_vec())
            .try_create_signature(&[], |tbs| {
                self.key.sign(&rng, tbs).map(|s| s.as_ref().to_vec()).map_err(|_| BundleError::Rng)
            })?
            .build();
        // The encoding holds the payload's secrets: zeroize it when it is dropped.
        let out =
            Zeroizing::new(sign1.to_tagged_vec().map_err(|e| BundleError::Encode(e.to_string()))?);
        if out.len() > MAX_SIGNED_PROFILE_LEN {
            return Err(BundleError::TooLarge {
                what: "signed profile",
                len: out.len(),
                max: MAX_SIGNED_PROFILE_LEN,
            });
        }
        Ok(out.to_vec())
    }
}

/// Verifies a signed profile. Checks, in order, each with its own error: size, COSE_Sign1
/// structure (tagged), no critical headers, algorithm ES256 in the protected header,
/// x5chain in the protected header, the certificate path to `ci_roots` valid at `now`, the
/// signer's common name = `expected_operator`, its key usage and key type, the signature,
/// the payload's presence and decoding, payload operator = signer, device =
/// `expected_device`, a non-empty validity, not expired, not issued in the future (beyond
/// [`MAX_CLOCK_SKEW_SECS`]). The EAR hash and the sequence are the caller's checks
/// ([`VerifiedProfile::check_ear_hash`], [`super::check_sequence`]).
pub fn verify_profile(
    cose_bytes: &[u8],
    ci_roots: &TrustAnchors,
    now: SystemTime,
    expected_operator: &str,
    expected_device: &DeviceId,
) -> Result<VerifiedProfile, BundleError> {
    if cose_bytes.len() > MAX_SIGNED_PROFILE_LEN {
        return Err(BundleError::TooLarge {
            what: "signed profile",
            len: cose_bytes.len(),
            max: MAX_SIGNED_PROFILE_LEN,
        });
    }
    let mut sign1 = CoseSign1::from_tagged_slice(cose_bytes)
        .map_err(|e| BundleError::MalformedSign1(e.to_string()))?;
    // The payload holds K and OPc: from here on it lives in a zeroizing buffer.
    let payload_bytes = Zeroizing::new(sign1.payload.take());

    let header = &sign1.protected.header;
    if !header.crit.is_empty() || !sign1.unprotected.crit.is_empty() {
        return Err(BundleError::UnsupportedCriticalHeader);
    }
    if !has_alg(header, iana::Algorithm::ES256) || sign1.unprotected.alg.is_some() {
        return Err(BundleError::SignatureAlgorithm { found: alg_name(header) });
    }
    if header_value(&sign1.unprotected, X5CHAIN).is_some() {
        return Err(BundleError::MalformedX5chain("x5chain in the unprotected header"));
    }
    let chain = parse_x5chain(header_value(header, X5CHAIN).ok_or(BundleError::MissingX5chain)?)?;
    let (leaf, intermediates) = chain.split_first().ok_or(BundleError::MissingX5chain)?;
    let intermediates: Vec<&[u8]> = intermediates.iter().map(Vec::as_slice).collect();
    let verified = x509::verify_chain(leaf, &intermediates, ci_roots, &ChainPolicy::at(now))
        .map_err(BundleError::SignerChain)?;

    let cert = parse_certificate(leaf)?;
    let signer = common_name(&cert)?;
    if signer != expected_operator {
        return Err(BundleError::WrongSigner { expected: expected_operator.into(), found: signer });
    }
    check_key_usage(&cert)?;
    let point = p256_point(&cert)?;

    let payload = payload_bytes.as_deref().ok_or(BundleError::MissingPayload)?;
    // The Sig_structure holds the payload, so K and OPc: zeroize it too.
    let tbs = Zeroizing::new(coset::sig_structure_data(
        coset::SignatureContext::CoseSign1,
        sign1.protected.clone(),
        None,
        &[],
        payload,
    ));
    sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
        .verify(&tbs, &sign1.signature)
        .map_err(|_| BundleError::BadSignature)?;

    let payload: ProfilePayload =
        cbor::decode_exact(payload).map_err(BundleError::MalformedPayload)?;
    if payload.operator != signer {
        return Err(BundleError::OperatorMismatch { payload: payload.operator, signer });
    }
    if &payload.device_id != expected_device {
        return Err(BundleError::WrongDevice {
            expected: expected_device.clone(),
            found: payload.device_id,
        });
    }
    check_validity(&payload, unix_seconds(now))?;
    Ok(VerifiedProfile { payload, signer_subject: verified.subject, signer_chain: verified.chain })
}

fn check_validity(payload: &ProfilePayload, now: u64) -> Result<(), BundleError> {
    let (issued, expires) = (payload.issued, payload.expires);
    if expires <= issued {
        return Err(BundleError::EmptyValidity { issued, expires });
    }
    if now >= expires {
        return Err(BundleError::Expired { expires, now });
    }
    if issued > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(BundleError::IssuedInFuture { issued, now, skew: MAX_CLOCK_SKEW_SECS });
    }
    Ok(())
}

/// x5chain: one certificate as a bstr, or several as an array of bstr, signer first
/// (RFC 9360 §2). An array of one is accepted too.
fn parse_x5chain(value: &Value) -> Result<Vec<Vec<u8>>, BundleError> {
    let bad = BundleError::MalformedX5chain;
    match value {
        Value::Bytes(der) => Ok(vec![der.clone()]),
        Value::Array(items) => {
            if items.is_empty() || items.len() > 1 + MAX_INTERMEDIATES {
                return Err(BundleError::X5chainLength {
                    count: items.len(),
                    max: 1 + MAX_INTERMEDIATES,
                });
            }
            items
                .iter()
                .map(|v| match v {
                    Value::Bytes(der) => Ok(der.clone()),
                    _ => Err(bad("an x5chain element is not a byte string")),
                })
                .collect()
        }
        _ => Err(bad("neither a byte string nor an array")),
    }
}

fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, BundleError> {
    if der.len() > x509::MAX_CERTIFICATE_LEN {
        return Err(BundleError::MalformedX5chain("certificate too large"));
    }
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(BundleError::MalformedX5chain("not a DER certificate")),
    }
}

/// The subject's single common name, the role name the PKI gives every certificate
/// (the same attribute `transport::PeerIdentity` reads for TLS peers).
fn common_name(cert: &X509Certificate<'_>) -> Result<String, BundleError> {
    let mut names = cert.subject().iter_common_name();
    match (names.next(), names.next()) {
        (Some(cn), None) => cn.as_str().map(str::to_owned).map_err(|_| BundleError::SignerName),
        _ => Err(BundleError::SignerName),
    }
}

/// A keyUsage extension, when present, must allow digitalSignature (RFC 5280 §4.2.1.3).
fn check_key_usage(cert: &X509Certificate<'_>) -> Result<(), BundleError> {
    match cert.key_usage() {
        Ok(None) => Ok(()),
        Ok(Some(ku)) if ku.value.digital_signature() => Ok(()),
        _ => Err(BundleError::SignerKeyUsage),
    }
}

/// The signer's public key, which ES256 requires to be on P-256.
fn p256_point<'c>(cert: &'c X509Certificate<'_>) -> Result<&'c [u8], BundleError> {
    let spki = cert.public_key();
    let on_p256 = spki.algorithm.algorithm == oids::OID_KEY_TYPE_EC_PUBLIC_KEY
        && spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|curve| curve == oids::OID_EC_P256);
    if !on_p256 {
        return Err(BundleError::SignerKeyType);
    }
    Ok(spki.subject_public_key.data.as_ref())
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es256_verifies_the_cose_wg_example() {
        // cose-wg/Examples ecdsa-examples/ecdsa-sig-01.json ("ECDSA-01: ECDSA - P-256 -
        // sign0"); the key's x and y are the example's base64url values in hex.
        let cose = hex::decode(
            "D28445A201260300A10442313154546869732069732074686520636F6E74656E742E58406520BBAF\
        2081D7E0ED0F95F76EB0733D667005F7467CEC4B87B9381A6BA1EDE8E00DF29F32A37230F39A842A\
        54821FDD223092819D7728EFB9D3A0080B75380B",
        )
        .unwrap();
        let x = "bac5b11cad8f99f9c72b05cf4b9e26d244dc189f745228255a219a86d6a09eff";
        let y = "20138bf82dc1b6d562be0fa54ab7804a3a64b6d72ccfed6b6fb6ed28bbfc117e";
        let point = hex::decode(format!("04{x}{y}")).unwrap();
        let sign1 = CoseSign1::from_tagged_slice(&cose).unwrap();
        assert!(has_alg(&sign1.protected.header, iana::Algorithm::ES256));
        let tbs = sign1.tbs_data(&[]);
        assert_eq!(
            hex::encode_upper(&tbs),
            "846A5369676E61747572653145A2012603004054546869732069732074686520636F6E74656E742E"
        );
        sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, &point)
            .verify(&tbs, &sign1.signature)
            .unwrap();
    }

    #[test]
    fn validity_window() {
        let mut p = ProfilePayload {
            device_id: DeviceId::from_name(
                &[0, 0x0B].iter().chain(&[1u8; 32]).copied().collect::<Vec<_>>(),
            )
            .unwrap(),
            operator: "mno-b".into(),
            campaign: "c".into(),
            profile: crate::bundle::tests::profile(),
            sequence: 1,
            issued: 1000,
            expires: 2000,
            ear_hash: [0; 32],
        };
        assert!(check_validity(&p, 1000).is_ok());
        assert!(check_validity(&p, 1999).is_ok());
        assert_eq!(
            check_validity(&p, 2000),
            Err(BundleError::Expired { expires: 2000, now: 2000 })
        );
        assert_eq!(
            check_validity(&p, 600),
            Err(BundleError::IssuedInFuture { issued: 1000, now: 600, skew: 300 })
        );
        assert!(check_validity(&p, 700).is_ok());
        p.expires = 1000;
        assert_eq!(
            check_validity(&p, 1000),
            Err(BundleError::EmptyValidity { issued: 1000, expires: 1000 })
        );
    }

    #[test]
    fn x5chain_forms() {
        assert_eq!(parse_x5chain(&Value::Bytes(vec![1])).unwrap(), vec![vec![1]]);
        assert_eq!(
            parse_x5chain(&Value::Array(vec![Value::Bytes(vec![1]), Value::Bytes(vec![2])]))
                .unwrap(),
            vec![vec![1], vec![2]]
        );
        assert!(matches!(
            parse_x5chain(&Value::Array(vec![])),
            Err(BundleError::X5chainLength { count: 0, .. })
        ));
        assert!(matches!(
            parse_x5chain(&Value::Array(vec![Value::Bytes(vec![1]); 10])),
            Err(BundleError::X5chainLength { count: 10, .. })
        ));
        assert!(matches!(
            parse_x5chain(&Value::Array(vec![Value::from(1)])),
            Err(BundleError::MalformedX5chain(_))
        ));
        assert!(matches!(parse_x5chain(&Value::from(1)), Err(BundleError::MalformedX5chain(_))));
    }
}
