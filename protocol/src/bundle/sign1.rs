//! COSE_Sign1 (RFC 9052 §4.2, tag 18) with ES256 (RFC 9053 §2.1) by a role's key, its
//! certificate in an x5chain header (RFC 9360 §2, label 33) validated to the CI root: the
//! signature of MNO-B's profiles ([`super::profile`]) and of the RO's orders
//! ([`crate::order`]). The signer is named by its certificate's common name, the role name
//! the PKI gives every certificate; a verifier names the signer it expects.

use std::time::SystemTime;

use coset::cbor::value::Value;
use coset::iana;
use coset::{CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, KeyPair as _};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry as oids;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use super::BundleError;
use super::cose::{alg_name, has_alg, header_value};
use crate::role::{CertifiedRole, Expected, RoleError};
use crate::x509::{self, ChainPolicy, MAX_INTERMEDIATES, TrustAnchors};

/// x5chain (RFC 9360 §2).
const X5CHAIN: i64 = iana::HeaderParameter::X5Chain as i64;

/// A role's signing identity: its ES256 key and its certificate chain.
pub struct CoseSigner {
    key: EcdsaKeyPair,
    x5chain: Vec<Vec<u8>>,
    name: String,
}

impl std::fmt::Debug for CoseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoseSigner")
            .field("name", &self.name)
            .field("x5chain", &self.x5chain.len())
            .finish_non_exhaustive()
    }
}

impl CoseSigner {
    /// A PKCS#8 PEM "PRIVATE KEY" (ECDSA P-256) as `tresor pki init` writes it, and the
    /// chain for the x5chain header: the role's certificate first, then any intermediates
    /// (not the CI root, which verifiers hold).
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
        let name = common_name(&cert)?;
        Ok(Self { key, x5chain, name })
    }

    /// The signer's name as verifiers see it: the certificate's common name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `payload` signed as a tagged COSE_Sign1 of at most `max_len` bytes. The encoding is
    /// zeroized when dropped (a profile's payload holds K and OPc).
    pub fn sign(&self, payload: &[u8], max_len: usize) -> Result<Zeroizing<Vec<u8>>, BundleError> {
        let chain = match self.x5chain.as_slice() {
            [single] => Value::Bytes(single.clone()),
            many => Value::Array(many.iter().cloned().map(Value::Bytes).collect()),
        };
        let protected =
            HeaderBuilder::new().algorithm(iana::Algorithm::ES256).value(X5CHAIN, chain).build();
        let rng = SystemRandom::new();
        let sign1 = CoseSign1Builder::new()
            .protected(protected)
            .payload(payload.to_vec())
            .try_create_signature(&[], |tbs| {
                // ring leaves s as it comes; verifiers accept the low-S form only.
                self.key
                    .sign(&rng, tbs)
                    .map(|s| crate::es256::to_low_s(s.as_ref()))
                    .map_err(|_| BundleError::Rng)
            })?
            .build();
        let out =
            Zeroizing::new(sign1.to_tagged_vec().map_err(|e| BundleError::Encode(e.to_string()))?);
        if out.len() > max_len {
            return Err(BundleError::TooLarge { what: "COSE_Sign1", len: out.len(), max: max_len });
        }
        Ok(out)
    }
}

/// A COSE_Sign1 whose signature, signer and chain verified.
pub(crate) struct VerifiedSign1 {
    /// The payload, in a zeroizing buffer.
    pub payload: Zeroizing<Vec<u8>>,
    /// The signer's common name.
    pub signer: String,
    /// The signer certificate's subject (RFC 4514 string).
    pub subject: String,
    /// The validated path, signer first, CI root last (DER).
    pub chain: Vec<Vec<u8>>,
}

/// Verifies a COSE_Sign1 of at most `max_len` bytes (`what` names it in the size error).
/// Checks, in order, each with its own error: size, COSE_Sign1 structure (tagged), no
/// critical headers, no algorithm in the unprotected header, algorithm ES256 in the
/// protected one, x5chain in the protected header, the certificate path to `ci_roots` valid
/// at `now`, the signer's role and name (`crate::role`) = `expected_signer`, its key usage
/// and key type, the
/// payload's presence, the signature's low-S form (`crate::es256`), the signature.
pub(crate) fn verify_sign1(
    cose_bytes: &[u8],
    what: &'static str,
    max_len: usize,
    ci_roots: &TrustAnchors,
    now: SystemTime,
    expected_signer: &Expected,
) -> Result<VerifiedSign1, BundleError> {
    if cose_bytes.len() > max_len {
        return Err(BundleError::TooLarge { what, len: cose_bytes.len(), max: max_len });
    }
    let mut sign1 = CoseSign1::from_tagged_slice(cose_bytes)
        .map_err(|e| BundleError::MalformedSign1(e.to_string()))?;
    // The payload may hold K and OPc: from here on it lives in a zeroizing buffer.
    let payload_bytes = Zeroizing::new(sign1.payload.take());

    let header = &sign1.protected.header;
    if !header.crit.is_empty() || !sign1.unprotected.crit.is_empty() {
        return Err(BundleError::UnsupportedCriticalHeader);
    }
    if sign1.unprotected.alg.is_some() {
        return Err(BundleError::UnprotectedAlgorithm { structure: "COSE_Sign1" });
    }
    if !has_alg(header, iana::Algorithm::ES256) {
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
    // The role is in the certificate the CI issued: nothing the sender says decides it.
    let certified = CertifiedRole::of(&cert).map_err(BundleError::SignerRole)?;
    match certified.require(expected_signer) {
        Ok(()) => {}
        Err(RoleError::WrongName { expected, found, .. }) => {
            return Err(BundleError::WrongSigner { expected, found });
        }
        Err(e) => return Err(BundleError::SignerRole(e)),
    }
    let signer = certified.name;
    check_key_usage(&cert)?;
    let point = p256_point(&cert)?;

    let payload = payload_bytes.as_deref().ok_or(BundleError::MissingPayload)?;
    // The Sig_structure holds the payload: zeroize it too.
    let tbs = Zeroizing::new(coset::sig_structure_data(
        coset::SignatureContext::CoseSign1,
        sign1.protected.clone(),
        None,
        &[],
        payload,
    ));
    if sign1.signature.len() == crate::es256::SIGNATURE_LEN
        && !crate::es256::is_low_s(&sign1.signature)
    {
        return Err(BundleError::NonCanonicalSignature);
    }
    sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
        .verify(&tbs, &sign1.signature)
        .map_err(|_| BundleError::BadSignature)?;
    Ok(VerifiedSign1 {
        payload: Zeroizing::new(payload.to_vec()),
        signer,
        subject: verified.subject,
        chain: verified.chain,
    })
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
