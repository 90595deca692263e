//! Issuing EK certificates under a TPM manufacturer CA, as the M2M equipment supplier does at
//! manufacture: TCG EK Credential Profile for TPM Family 2.0 (version 2.x) §3.2.
//!
//! The certificate has an empty subject and a critical subject alternative name whose
//! directoryName carries tcg-at-tpmManufacturer, tpmModel and tpmVersion; keyUsage
//! keyEncipherment (RSA EK) or keyAgreement (ECC EK), critical; extKeyUsage
//! tcg-kp-EKCertificate; basicConstraints cA=false; authorityKeyIdentifier; optionally
//! subjectDirectoryAttributes with the TPM specification; a random 127-bit serial. The SAN and
//! subjectDirectoryAttributes encodings come from `protocol::ekcert`, the codec the verifier
//! parses with, so issuer and verifier cannot drift apart.

use std::fmt;
use std::time::SystemTime;

use protocol::ekcert::{self, EkKeyType, TpmInfo, TpmSpecification};
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use ring::rand::SecureRandom;
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use crate::{Error, Result};

/// id-ce-subjectAltName and id-ce-subjectDirectoryAttributes (RFC 5280 §4.2.1.6, §4.2.1.8).
const SUBJECT_ALT_NAME: [u64; 4] = [2, 5, 29, 17];
const SUBJECT_DIRECTORY_ATTRIBUTES: [u64; 4] = [2, 5, 29, 9];

/// A TPM manufacturer CA able to sign EK certificates: its certificate and private key.
pub struct ManufacturerCa {
    cert_der: Vec<u8>,
    subject: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for ManufacturerCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManufacturerCa").field("subject", &self.subject).finish_non_exhaustive()
    }
}

/// What to certify.
#[derive(Debug, Clone)]
pub struct EkCertRequest<'a> {
    /// The EK public key, SubjectPublicKeyInfo DER (see `protocol::ekcert::rsa_spki_der` and
    /// `ecc_spki_der` to build it from a TPM2B_PUBLIC).
    pub ek_public_spki: &'a [u8],
    pub tpm: &'a TpmInfo,
    pub specification: Option<&'a TpmSpecification>,
    pub not_before: SystemTime,
    /// `None`: no well-defined expiration, 99991231235959Z (RFC 5280 §4.1.2.5), as TPM
    /// vendors commonly issue EK certificates.
    pub not_after: Option<SystemTime>,
}

impl ManufacturerCa {
    /// The CA certificate (PEM) and its private key (PKCS#8 PEM; ECDSA P-256/P-384 or RSA).
    /// The certificate must be a CA allowed to sign certificates, and the key must be its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let bad = |reason: String| Error::ManufacturerCa(reason);
        let pem = pem::parse(cert_pem).map_err(|e| bad(format!("certificate PEM: {e}")))?;
        if pem.tag() != "CERTIFICATE" {
            return Err(bad(format!("expected a CERTIFICATE PEM block, found {}", pem.tag())));
        }
        let cert_der = pem.into_contents();
        let (rest, cert) = x509_parser::certificate::X509Certificate::from_der(&cert_der)
            .map_err(|e| bad(format!("certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes after the certificate".into()));
        }
        let is_ca = cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
        let can_sign = cert.key_usage().ok().flatten().is_some_and(|ku| ku.value.key_cert_sign());
        if !is_ca || !can_sign {
            return Err(bad("certificate is not a CA with keyUsage keyCertSign".into()));
        }
        let subject = cert.subject().to_string();
        let key = KeyPair::from_pem(key_pem).map_err(|e| bad(format!("private key: {e}")))?;
        let matches =
            ekcert::same_public_key(cert.public_key().raw, &key.subject_public_key_info())
                .unwrap_or(false);
        if !matches {
            return Err(bad("private key does not belong to the certificate".into()));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.clone().into(), key)
            .map_err(|e| bad(format!("certificate: {e}")))?;
        Ok(Self { cert_der, subject, issuer })
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Issues the EK certificate; returns its DER, ready for the TPM's NV index.
    pub fn issue(&self, request: &EkCertRequest<'_>) -> Result<Vec<u8>> {
        let bad = |reason: String| Error::EkCertificate(reason);
        let key_usage =
            match ekcert::ek_key_type(request.ek_public_spki).map_err(|e| bad(e.to_string()))? {
                EkKeyType::Rsa { .. } => KeyUsagePurpose::KeyEncipherment,
                EkKeyType::Ecc { .. } => KeyUsagePurpose::KeyAgreement,
            };
        let subject_key = rcgen::SubjectPublicKeyInfo::from_der(request.ek_public_spki)
            .map_err(|e| bad(format!("EK public key not supported by the issuer: {e}")))?;
        let san = ekcert::subject_alt_name_der(request.tpm).map_err(|e| bad(e.to_string()))?;

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.serial_number = Some(random_serial()?);
        params.not_before = OffsetDateTime::from(request.not_before);
        params.not_after = match request.not_after {
            Some(t) => OffsetDateTime::from(t),
            None => no_well_defined_expiration()?,
        };
        if params.not_after <= params.not_before {
            return Err(bad("notAfter is not after notBefore".into()));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![key_usage];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::Other(ekcert::tcg_kp_ek_certificate_arcs().to_vec())];
        params.use_authority_key_identifier_extension = true;
        params
            .custom_extensions
            .push(critical(CustomExtension::from_oid_content(&SUBJECT_ALT_NAME, san)));
        if let Some(spec) = request.specification {
            let sda =
                ekcert::subject_directory_attributes_der(spec).map_err(|e| bad(e.to_string()))?;
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(&SUBJECT_DIRECTORY_ATTRIBUTES, sda));
        }
        let cert = params
            .signed_by(&subject_key, &self.issuer)
            .map_err(|e| bad(format!("signing: {e}")))?;
        Ok(cert.der().to_vec())
    }
}

fn critical(mut ext: CustomExtension) -> CustomExtension {
    ext.set_criticality(true);
    ext
}

/// 16 random bytes with the top bit clear: a positive INTEGER of at most 20 octets
/// (RFC 5280 §4.1.2.2) with 127 bits of entropy.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::EkCertificate("no randomness for the serial number".into()))?;
    bytes[0] = (bytes[0] & 0x7F) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn no_well_defined_expiration() -> Result<OffsetDateTime> {
    let date = time::Date::from_calendar_date(9999, time::Month::December, 31)
        .and_then(|d| d.with_hms(23, 59, 59))
        .map_err(|e| Error::EkCertificate(format!("notAfter: {e}")))?;
    Ok(date.assume_utc())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::ekcert::{EccCurve, EkCertError, verify_ek_certificate};
    use protocol::x509::TrustAnchors;
    use rcgen::{BasicConstraints, DnType};

    use super::*;

    fn ca_pem() -> (String, String, TrustAnchors) {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "tresor test TPM manufacturer");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = p.self_signed(&key).unwrap();
        let mut anchors = TrustAnchors::new();
        anchors.add_der(cert.der()).unwrap();
        (cert.pem(), key.serialize_pem(), anchors)
    }

    fn tpm() -> TpmInfo {
        TpmInfo {
            manufacturer: "id:54524553".into(),
            model: "tresor-swtpm".into(),
            version: "id:00000001".into(),
        }
    }

    fn request<'a>(
        spki: &'a [u8],
        tpm: &'a TpmInfo,
        spec: Option<&'a TpmSpecification>,
    ) -> EkCertRequest<'a> {
        EkCertRequest {
            ek_public_spki: spki,
            tpm,
            specification: spec,
            not_before: SystemTime::now() - Duration::from_secs(60),
            not_after: None,
        }
    }

    #[test]
    fn issued_ecc_ek_certificate_validates() {
        let (cert, key, anchors) = ca_pem();
        let ca = ManufacturerCa::from_pem(&cert, &key).unwrap();
        let ek = KeyPair::generate().unwrap().subject_public_key_info();
        let spec = TpmSpecification { family: "2.0".into(), level: 0, revision: 164 };
        let der = ca.issue(&request(&ek, &tpm(), Some(&spec))).unwrap();
        let v = verify_ek_certificate(&der, &[], &anchors, &ek, SystemTime::now()).unwrap();
        assert_eq!(v.tpm, tpm());
        assert_eq!(v.specification, Some(spec));
        assert_eq!(v.key_type, EkKeyType::Ecc { curve: EccCurve::P256 });
        assert_eq!(v.serial.len(), 16);

        let parsed = x509_parser::parse_x509_certificate(&der).unwrap().1;
        assert!(parsed.subject().iter().next().is_none(), "subject must be empty");
        assert!(parsed.subject_alternative_name().unwrap().unwrap().critical);
        assert!(parsed.key_usage().unwrap().unwrap().critical);
        assert_eq!(parsed.validity().not_after.to_datetime().year(), 9999);
        assert!(!parsed.basic_constraints().unwrap().unwrap().value.ca);
        assert!(parsed.iter_extensions().any(|e| e.oid.to_id_string() == "2.5.29.35"));
    }

    #[test]
    fn issued_rsa_ek_certificate_validates() {
        let (cert, key, anchors) = ca_pem();
        let ca = ManufacturerCa::from_pem(&cert, &key).unwrap();
        let mut modulus = vec![0xA7u8; 256];
        modulus[255] |= 1;
        let ek = ekcert::rsa_spki_der(&modulus, 0);
        let info = tpm();
        let mut req = request(&ek, &info, None);
        req.not_after = Some(SystemTime::now() + Duration::from_secs(3600));
        let der = ca.issue(&req).unwrap();
        let v = verify_ek_certificate(&der, &[], &anchors, &ek, SystemTime::now()).unwrap();
        assert_eq!(v.key_type, EkKeyType::Rsa { bits: 2048 });
        assert_eq!(v.specification, None);
        let other = ekcert::rsa_spki_der(&[0xB5; 256], 0);
        let err =
            verify_ek_certificate(&der, &[], &anchors, &other, SystemTime::now()).unwrap_err();
        assert_eq!(err, EkCertError::PublicKeyMismatch);
    }

    #[test]
    fn openssl_reads_and_verifies_an_issued_certificate() {
        let (cert, key, _) = ca_pem();
        let ca = ManufacturerCa::from_pem(&cert, &key).unwrap();
        let ek = KeyPair::generate().unwrap().subject_public_key_info();
        let spec = TpmSpecification { family: "2.0".into(), level: 0, revision: 164 };
        let der = ca.issue(&request(&ek, &tpm(), Some(&spec))).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &cert).unwrap();
        let ek_pem = pem::encode(&pem::Pem::new("CERTIFICATE", der));
        std::fs::write(dir.path().join("ek.pem"), ek_pem).unwrap();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl (make deps)");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "openssl {args:?}: {text}");
            text
        };
        openssl(&["verify", "-CAfile", "ca.pem", "ek.pem"]);
        let text = openssl(&["x509", "-in", "ek.pem", "-noout", "-text"]);
        assert!(text.contains("2.23.133.2.1=id:54524553"), "{text}");
        assert!(text.contains("X509v3 Subject Alternative Name: critical"), "{text}");
        assert!(text.contains("Key Agreement"), "{text}");
        assert!(text.contains("2.23.133.8.1"), "{text}");
        assert!(text.contains("Not After : Dec 31 23:59:59 9999 GMT"), "{text}");
    }

    #[test]
    fn serials_differ() {
        let (cert, key, _) = ca_pem();
        let ca = ManufacturerCa::from_pem(&cert, &key).unwrap();
        let ek = KeyPair::generate().unwrap().subject_public_key_info();
        let serial =
            |der: &[u8]| x509_parser::parse_x509_certificate(der).unwrap().1.raw_serial().to_vec();
        let a = ca.issue(&request(&ek, &tpm(), None)).unwrap();
        let b = ca.issue(&request(&ek, &tpm(), None)).unwrap();
        assert_ne!(serial(&a), serial(&b));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (cert, key, _) = ca_pem();
        let (_, other_key, _) = ca_pem();
        assert!(matches!(
            ManufacturerCa::from_pem(&cert, &other_key),
            Err(Error::ManufacturerCa(_))
        ));
        assert!(matches!(ManufacturerCa::from_pem("junk", &key), Err(Error::ManufacturerCa(_))));
        assert!(matches!(ManufacturerCa::from_pem(&cert, "junk"), Err(Error::ManufacturerCa(_))));

        let ca = ManufacturerCa::from_pem(&cert, &key).unwrap();
        assert!(format!("{ca:?}").contains("tresor test TPM manufacturer"));
        let ek = KeyPair::generate().unwrap().subject_public_key_info();
        let bad_tpm = TpmInfo { manufacturer: "IBM".into(), ..tpm() };
        assert!(matches!(ca.issue(&request(&ek, &bad_tpm, None)), Err(Error::EkCertificate(_))));
        assert!(matches!(ca.issue(&request(b"junk", &tpm(), None)), Err(Error::EkCertificate(_))));
        let info = tpm();
        let mut req = request(&ek, &info, None);
        req.not_after = Some(req.not_before - Duration::from_secs(1));
        assert!(matches!(ca.issue(&req), Err(Error::EkCertificate(_))));
    }

    #[test]
    fn leaf_certificate_cannot_act_as_manufacturer_ca() {
        let key = KeyPair::generate().unwrap();
        let cert =
            CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        let err = ManufacturerCa::from_pem(&cert.pem(), &key.serialize_pem()).unwrap_err();
        assert!(matches!(err, Error::ManufacturerCa(_)), "{err}");
    }
}
