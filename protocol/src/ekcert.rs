//! TPM endorsement key (EK) certificates: TCG EK Credential Profile for TPM Family 2.0
//! (version 2.x), §3.2 (certificate fields and extensions) and §2.2.1 (NV indices).
//!
//! Validation ([`verify_ek_certificate`]) chains the certificate to a configured TPM
//! manufacturer root with [`crate::x509`], then checks the profile: keyUsage keyEncipherment
//! (RSA EK) or keyAgreement (ECC EK), extKeyUsage tcg-kp-EKCertificate when the extension is
//! present, not a CA, the subject alternative name's directoryName with
//! tcg-at-tpmManufacturer / tpmModel / tpmVersion (returned as [`TpmInfo`]), and that the
//! certified key is the TPM's EK public key (compared as a key, not as an encoding).
//!
//! The encoders ([`subject_alt_name_der`], [`subject_directory_attributes_der`],
//! [`rsa_spki_der`], [`ecc_spki_der`]) are the single codec the issuer (`tre::ekcert`) and the
//! verifier share.
//!
//! Deviation accepted on purpose: `swtpm_setup --create-ek-cert` (swtpm-localca, swtpm 0.7)
//! writes the subject `CN=unknown` instead of an empty subject; the profile allows a
//! non-empty subject, so it is accepted. An empty subject requires a critical SAN (RFC 5280
//! §4.2.1.6). swtpm 0.7 stores its ECC EK certificate (NIST P-384) at the high-range index
//! 0x01C00016, not at 0x01C0000A (which holds the low-range P-256 EK certificate).

use std::time::SystemTime;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry as oids;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::der::{self, strip};
use crate::x509::{self, ChainError, ChainPolicy, EXT_SUBJECT_ALT_NAME, TrustAnchors};

/// NV index of the RSA 2048 EK certificate (profile §2.2.1.4, low range).
pub const NV_EK_CERT_RSA2048: u32 = 0x01C0_0002;
/// NV index of the ECC NIST P-256 EK certificate (low range).
pub const NV_EK_CERT_ECC_P256: u32 = 0x01C0_000A;
/// NV index of the ECC NIST P-384 EK certificate (high range, H-3); swtpm 0.7 uses it.
pub const NV_EK_CERT_ECC_P384: u32 = 0x01C0_0016;
/// NV index of the RSA 3072 EK certificate (high range, H-6).
pub const NV_EK_CERT_RSA3072: u32 = 0x01C0_001C;

/// tcg-kp-EKCertificate, the EK certificate's extended key usage.
pub const OID_TCG_KP_EK_CERTIFICATE: &str = "2.23.133.8.1";
const TCG_KP_EK_CERTIFICATE: [u64; 5] = [2, 23, 133, 8, 1];
const TPM_MANUFACTURER: [u64; 5] = [2, 23, 133, 2, 1];
const TPM_MODEL: [u64; 5] = [2, 23, 133, 2, 2];
const TPM_VERSION: [u64; 5] = [2, 23, 133, 2, 3];
const TPM_SPECIFICATION: [u64; 5] = [2, 23, 133, 2, 16];
/// id-ce-subjectDirectoryAttributes (RFC 5280 §4.2.1.8).
const SUBJECT_DIRECTORY_ATTRIBUTES: &str = "2.5.29.9";

/// Longest TPM attribute string accepted or issued.
pub const MAX_ATTRIBUTE_LEN: usize = 128;

/// Why an EK certificate was rejected. One variant per check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EkCertError {
    #[error("EK certificate chain: {0}")]
    Chain(#[from] ChainError),
    #[error("malformed EK certificate: {0}")]
    Malformed(String),
    #[error("EK certificate has no subject alternative name")]
    MissingSubjectAltName,
    #[error("EK certificate has an empty subject but a non-critical subject alternative name")]
    SubjectAltNameNotCritical,
    #[error("EK certificate lacks {attribute} in its subject alternative name")]
    MissingTpmAttribute { attribute: &'static str },
    #[error("EK certificate carries {attribute} more than once")]
    DuplicateTpmAttribute { attribute: &'static str },
    #[error("{attribute}: {reason}")]
    BadTpmAttribute { attribute: &'static str, reason: String },
    #[error("EK certificate keyUsage lacks {required}")]
    MissingKeyUsage { required: &'static str },
    #[error("EK certificate extKeyUsage lacks tcg-kp-EKCertificate (2.23.133.8.1)")]
    WrongExtendedKeyUsage,
    #[error("EK certificate is a CA certificate")]
    IsCa,
    #[error("EK key algorithm {algorithm} is neither RSA nor ECC")]
    UnsupportedKeyType { algorithm: String },
    #[error("the certified key is not the TPM's EK public key")]
    PublicKeyMismatch,
    #[error("EK public key: {0}")]
    BadEkPublicKey(String),
}

/// The TPM identification of the subject alternative name (profile §3.2.9):
/// tcg-at-tpmManufacturer ("id:" + the 4-byte TPM vendor id in hex, e.g. "id:00001014"),
/// tcg-at-tpmModel (free text) and tcg-at-tpmVersion ("id:" + firmware version in hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmInfo {
    pub manufacturer: String,
    pub model: String,
    pub version: String,
}

impl TpmInfo {
    /// The TPM vendor id of `manufacturer` (TPM_PT_MANUFACTURER), if it has the profile's form.
    pub fn manufacturer_id(&self) -> Option<u32> {
        let hex = self.manufacturer.strip_prefix("id:")?;
        (hex.len() == 8).then(|| u32::from_str_radix(hex, 16).ok()).flatten()
    }

    /// The strict form required to issue a certificate: manufacturer "id:" + 8 hex digits,
    /// version "id:" + 1 to 16 hex digits, model 1 to [`MAX_ATTRIBUTE_LEN`] printable chars.
    pub fn check(&self) -> Result<(), EkCertError> {
        let hex_id = |attribute: &'static str, s: &str, max: usize, exact: bool| {
            let digits = s.strip_prefix("id:").unwrap_or("");
            let len_ok =
                if exact { digits.len() == max } else { (1..=max).contains(&digits.len()) };
            if len_ok && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(())
            } else {
                Err(EkCertError::BadTpmAttribute {
                    attribute,
                    reason: format!("{s:?} is not \"id:\" followed by hex digits"),
                })
            }
        };
        hex_id("tpmManufacturer", &self.manufacturer, 8, true)?;
        hex_id("tpmVersion", &self.version, 16, false)?;
        check_text("tpmModel", &self.model)
    }
}

/// The TPMSpecification attribute of subjectDirectoryAttributes (profile §3.2.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmSpecification {
    /// "2.0" for TPM 2.0.
    pub family: String,
    pub level: u32,
    pub revision: u32,
}

/// The EK's key type, as the certificate states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EkKeyType {
    Rsa { bits: usize },
    Ecc { curve: EccCurve },
}

/// The NIST curves a TCG EK template uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EccCurve {
    P256,
    P384,
    P521,
}

impl EccCurve {
    /// prime256v1 (RFC 5480), secp384r1 and secp521r1 (SEC 2).
    fn oid(self) -> &'static [u64] {
        match self {
            Self::P256 => &[1, 2, 840, 10045, 3, 1, 7],
            Self::P384 => &[1, 3, 132, 0, 34],
            Self::P521 => &[1, 3, 132, 0, 35],
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }
}

/// What a valid EK certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkCertificate {
    pub tpm: TpmInfo,
    pub specification: Option<TpmSpecification>,
    pub key_type: EkKeyType,
    /// The certified public key, SubjectPublicKeyInfo DER.
    pub spki_der: Vec<u8>,
    /// Serial number, big-endian bytes as encoded.
    pub serial: Vec<u8>,
    /// Issuer name, RFC 4514 string form.
    pub issuer: String,
    /// The validated path, EK certificate first, manufacturer root last (empty from
    /// [`parse_ek_certificate`]).
    pub chain: Vec<Vec<u8>>,
}

/// Validates `cert_der` as the EK certificate of the TPM whose EK public key is
/// `ek_public_spki` (SubjectPublicKeyInfo DER), chaining through `intermediates` to one of the
/// manufacturer roots in `anchors`, at time `at`.
pub fn verify_ek_certificate(
    cert_der: &[u8],
    intermediates: &[&[u8]],
    anchors: &TrustAnchors,
    ek_public_spki: &[u8],
    at: SystemTime,
) -> Result<EkCertificate, EkCertError> {
    let policy = ChainPolicy::at(at).handle_critical(EXT_SUBJECT_ALT_NAME);
    let verified = x509::verify_chain(cert_der, intermediates, anchors, &policy)?;
    let mut ek = parse_ek_certificate(cert_der)?;
    if !same_public_key(&ek.spki_der, ek_public_spki)? {
        return Err(EkCertError::PublicKeyMismatch);
    }
    ek.chain = verified.chain;
    Ok(ek)
}

/// Checks the profile of an EK certificate and extracts its contents **without** establishing
/// trust (no chain, no validity period, no key comparison): for display and diagnostics only.
pub fn parse_ek_certificate(cert_der: &[u8]) -> Result<EkCertificate, EkCertError> {
    let cert = x509::parse(cert_der)?;
    let malformed =
        |what: &str, e: &dyn std::fmt::Display| EkCertError::Malformed(format!("{what}: {e}"));

    if let Some(bc) = cert.basic_constraints().map_err(|e| malformed("basicConstraints", &e))?
        && bc.value.ca
    {
        return Err(EkCertError::IsCa);
    }
    let key_type = key_type(cert.public_key())?;
    let ku = cert.key_usage().map_err(|e| malformed("keyUsage", &e))?;
    let (required, ok) = match key_type {
        EkKeyType::Rsa { .. } => {
            ("keyEncipherment", ku.is_some_and(|k| k.value.key_encipherment()))
        }
        EkKeyType::Ecc { .. } => ("keyAgreement", ku.is_some_and(|k| k.value.key_agreement())),
    };
    if !ok {
        return Err(EkCertError::MissingKeyUsage { required });
    }
    if let Some(eku) = cert.extended_key_usage().map_err(|e| malformed("extKeyUsage", &e))?
        && !eku.value.other.iter().any(|o| o.to_id_string() == OID_TCG_KP_EK_CERTIFICATE)
    {
        return Err(EkCertError::WrongExtendedKeyUsage);
    }

    Ok(EkCertificate {
        tpm: tpm_info(&cert)?,
        specification: tpm_specification(&cert)?,
        key_type,
        spki_der: cert.public_key().raw.to_vec(),
        serial: cert.raw_serial().to_vec(),
        issuer: cert.issuer().to_string(),
        chain: Vec::new(),
    })
}

fn tpm_info(cert: &X509Certificate<'_>) -> Result<TpmInfo, EkCertError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| EkCertError::Malformed(format!("subjectAltName: {e}")))?
        .ok_or(EkCertError::MissingSubjectAltName)?;
    if cert.subject().iter().next().is_none() && !san.critical {
        return Err(EkCertError::SubjectAltNameNotCritical);
    }
    let mut found: [Option<String>; 3] = [None, None, None];
    let names = [
        ("tpmManufacturer", TPM_MANUFACTURER),
        ("tpmModel", TPM_MODEL),
        ("tpmVersion", TPM_VERSION),
    ];
    let directory_names = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::DirectoryName(dn) => Some(dn),
        _ => None,
    });
    for attr in directory_names.flat_map(|dn| dn.iter_attributes()) {
        for ((attribute, arcs), slot) in names.iter().zip(found.iter_mut()) {
            if !oid_is(attr.attr_type(), arcs) {
                continue;
            }
            let value = attr.as_str().map_err(|_| EkCertError::BadTpmAttribute {
                attribute,
                reason: "not a UTF8String, PrintableString or IA5String".into(),
            })?;
            check_text(attribute, value)?;
            if slot.replace(value.to_owned()).is_some() {
                return Err(EkCertError::DuplicateTpmAttribute { attribute });
            }
        }
    }
    let [manufacturer, model, version] = found;
    Ok(TpmInfo {
        manufacturer: manufacturer
            .ok_or(EkCertError::MissingTpmAttribute { attribute: "tpmManufacturer" })?,
        model: model.ok_or(EkCertError::MissingTpmAttribute { attribute: "tpmModel" })?,
        version: version.ok_or(EkCertError::MissingTpmAttribute { attribute: "tpmVersion" })?,
    })
}

/// subjectDirectoryAttributes ::= SEQUENCE OF Attribute; the TPMSpecification attribute is
/// SEQUENCE { family UTF8String, level INTEGER, revision INTEGER }. Other attributes (such as
/// TPMSecurityAssertions) are skipped.
fn tpm_specification(cert: &X509Certificate<'_>) -> Result<Option<TpmSpecification>, EkCertError> {
    let Some(ext) =
        cert.iter_extensions().find(|e| e.oid.to_id_string() == SUBJECT_DIRECTORY_ATTRIBUTES)
    else {
        return Ok(None);
    };
    let bad = |r: &str| EkCertError::Malformed(format!("subjectDirectoryAttributes: {r}"));
    let (attrs, rest) = der::expect(ext.value, der::SEQUENCE).map_err(bad)?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes"));
    }
    let mut attrs = attrs;
    while !attrs.is_empty() {
        let (attr, next) = der::expect(attrs, der::SEQUENCE).map_err(bad)?;
        attrs = next;
        let (oid, values) = der::expect(attr, der::OID).map_err(bad)?;
        if oid != der::oid_content(&TPM_SPECIFICATION).as_slice() {
            continue;
        }
        let (set, _) = der::expect(values, der::SET).map_err(bad)?;
        let (spec, _) = der::expect(set, der::SEQUENCE).map_err(bad)?;
        let (family, spec) = der::expect(spec, der::UTF8_STRING).map_err(bad)?;
        let (level, spec) = der::expect(spec, der::INTEGER).map_err(bad)?;
        let (revision, _) = der::expect(spec, der::INTEGER).map_err(bad)?;
        let family = std::str::from_utf8(family).map_err(|_| bad("family is not UTF-8"))?;
        check_text("tpmSpecification family", family)?;
        return Ok(Some(TpmSpecification {
            family: family.to_owned(),
            level: der::uint(level).ok_or_else(|| bad("level out of range"))?,
            revision: der::uint(revision).ok_or_else(|| bad("revision out of range"))?,
        }));
    }
    Ok(None)
}

/// The key type of an EK public key given as SubjectPublicKeyInfo DER.
pub fn ek_key_type(spki_der: &[u8]) -> Result<EkKeyType, EkCertError> {
    let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| EkCertError::BadEkPublicKey(e.to_string()))?;
    if !rest.is_empty() {
        return Err(EkCertError::BadEkPublicKey("trailing bytes".into()));
    }
    key_type(&spki)
}

fn key_type(spki: &SubjectPublicKeyInfo<'_>) -> Result<EkKeyType, EkCertError> {
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => Ok(EkKeyType::Rsa { bits: bit_len(rsa.modulus) }),
        Ok(PublicKey::EC(_)) => Ok(EkKeyType::Ecc { curve: curve_of(spki)? }),
        _ => Err(EkCertError::UnsupportedKeyType {
            algorithm: spki.algorithm.algorithm.to_id_string(),
        }),
    }
}

fn curve_of(spki: &SubjectPublicKeyInfo<'_>) -> Result<EccCurve, EkCertError> {
    let oid = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    match oid {
        Some(o) if o == oids::OID_EC_P256 => Ok(EccCurve::P256),
        Some(o) if o == oids::OID_NIST_EC_P384 => Ok(EccCurve::P384),
        Some(o) if o == oids::OID_NIST_EC_P521 => Ok(EccCurve::P521),
        other => Err(EkCertError::UnsupportedKeyType {
            algorithm: format!("EC curve {}", other.map(|o| o.to_id_string()).unwrap_or_default()),
        }),
    }
}

/// Equal keys, whatever the encoding details: RSA modulus and exponent as integers (leading
/// zeros and the NULL parameters do not matter), ECC curve and uncompressed point.
pub fn same_public_key(a_spki: &[u8], b_spki: &[u8]) -> Result<bool, EkCertError> {
    let parse = |der| -> Result<SubjectPublicKeyInfo<'_>, EkCertError> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| EkCertError::BadEkPublicKey(e.to_string()))?;
        if rest.is_empty() {
            Ok(spki)
        } else {
            Err(EkCertError::BadEkPublicKey("trailing bytes".into()))
        }
    };
    let (a, b) = (parse(a_spki)?, parse(b_spki)?);
    let bad = |e: x509_parser::error::X509Error| EkCertError::BadEkPublicKey(e.to_string());
    Ok(match (a.parsed().map_err(bad)?, b.parsed().map_err(bad)?) {
        (PublicKey::RSA(x), PublicKey::RSA(y)) => {
            strip(x.modulus) == strip(y.modulus) && strip(x.exponent) == strip(y.exponent)
        }
        (PublicKey::EC(x), PublicKey::EC(y)) => {
            curve_of(&a)? == curve_of(&b)? && x.data().first() == Some(&4) && x.data() == y.data()
        }
        _ => false,
    })
}

/// SubjectPublicKeyInfo of an RSA public key as a TPM reports it (TPM2B_PUBLIC_KEY_RSA and
/// TPMS_RSA_PARMS.exponent, where 0 means the default 65537).
pub fn rsa_spki_der(modulus: &[u8], exponent: u32) -> Vec<u8> {
    let exponent = if exponent == 0 { 65537 } else { exponent };
    let rsa_key = der::seq(&[der::uint_der(modulus), der::uint_der(&exponent.to_be_bytes())]);
    let alg = der::seq(&[der::oid(&[1, 2, 840, 113549, 1, 1, 1]), vec![der::NULL, 0]]);
    der::seq(&[alg, der::bit_string(&rsa_key)])
}

/// SubjectPublicKeyInfo of an ECC public point as a TPM reports it (TPMS_ECC_POINT x and y,
/// each padded to the curve's coordinate size here).
pub fn ecc_spki_der(curve: EccCurve, x: &[u8], y: &[u8]) -> Result<Vec<u8>, EkCertError> {
    let n = curve.coordinate_len();
    let (x, y) = (strip(x), strip(y));
    if x.len() > n || y.len() > n {
        return Err(EkCertError::BadEkPublicKey(format!("coordinate longer than {n} bytes")));
    }
    let mut point = Vec::with_capacity(1 + 2 * n);
    point.push(4);
    for c in [x, y] {
        point.resize(point.len() + n - c.len(), 0);
        point.extend_from_slice(c);
    }
    let alg = der::seq(&[der::oid(&[1, 2, 840, 10045, 2, 1]), der::oid(curve.oid())]);
    Ok(der::seq(&[alg, der::bit_string(&point)]))
}

/// The subjectAltName extension value (GeneralNames) of an EK certificate: one
/// directoryName with one RDN per TPM attribute, as swtpm and most TPM vendors encode it.
pub fn subject_alt_name_der(info: &TpmInfo) -> Result<Vec<u8>, EkCertError> {
    info.check()?;
    let rdn = |arcs: &[u64], value: &str| {
        der::set(&[der::seq(&[der::oid(arcs), der::tlv(der::UTF8_STRING, value.as_bytes())])])
    };
    let name = der::seq(&[
        rdn(&TPM_MANUFACTURER, &info.manufacturer),
        rdn(&TPM_MODEL, &info.model),
        rdn(&TPM_VERSION, &info.version),
    ]);
    // directoryName [4] is explicitly tagged: Name is a CHOICE (RFC 5280 Appendix A.2).
    Ok(der::seq(&[der::tlv(0xA4, &name)]))
}

/// The subjectDirectoryAttributes extension value carrying TPMSpecification.
pub fn subject_directory_attributes_der(spec: &TpmSpecification) -> Result<Vec<u8>, EkCertError> {
    check_text("tpmSpecification family", &spec.family)?;
    let value = der::seq(&[
        der::tlv(der::UTF8_STRING, spec.family.as_bytes()),
        der::uint_der(&spec.level.to_be_bytes()),
        der::uint_der(&spec.revision.to_be_bytes()),
    ]);
    Ok(der::seq(&[der::seq(&[der::oid(&TPM_SPECIFICATION), der::set(&[value])])]))
}

/// The arcs of tcg-kp-EKCertificate, for issuers that take OIDs as arcs (rcgen).
pub fn tcg_kp_ek_certificate_arcs() -> &'static [u64] {
    &TCG_KP_EK_CERTIFICATE
}

fn check_text(attribute: &'static str, s: &str) -> Result<(), EkCertError> {
    if s.is_empty() || s.len() > MAX_ATTRIBUTE_LEN || s.chars().any(char::is_control) {
        return Err(EkCertError::BadTpmAttribute {
            attribute,
            reason: format!("must be 1 to {MAX_ATTRIBUTE_LEN} bytes without control characters"),
        });
    }
    Ok(())
}

fn oid_is(oid: &x509_parser::der_parser::oid::Oid<'_>, arcs: &[u64]) -> bool {
    oid.as_bytes() == der::oid_content(arcs).as_slice()
}

fn bit_len(modulus: &[u8]) -> usize {
    let m = strip(modulus);
    m.first().map_or(0, |top| m.len() * 8 - top.leading_zeros() as usize)
}

#[cfg(test)]
#[path = "ekcert_tests.rs"]
mod tests;
