//! Tests of [`super`]: EK certificates built with rcgen from the module's own encoders, one
//! test per profile check. Certificates written by swtpm-localca are tested in
//! `protocol/tests/ekcert_swtpm.rs`.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::*;
use crate::x509::TrustAnchors;

const HOUR: Duration = Duration::from_secs(3600);

struct Manufacturer {
    params: CertificateParams,
    key: KeyPair,
    anchors: TrustAnchors,
}

fn manufacturer() -> Manufacturer {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "test TPM manufacturer root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let key = KeyPair::generate().unwrap();
    let der = params.self_signed(&key).unwrap().der().to_vec();
    let mut anchors = TrustAnchors::new();
    anchors.add_der(&der).unwrap();
    Manufacturer { params, key, anchors }
}

fn info() -> TpmInfo {
    TpmInfo {
        manufacturer: "id:00001014".into(),
        model: "swtpm".into(),
        version: "id:20191023".into(),
    }
}

fn ext(arcs: &[u64], critical: bool, content: Vec<u8>) -> CustomExtension {
    let mut e = CustomExtension::from_oid_content(arcs, content);
    e.set_criticality(critical);
    e
}

/// A profile-conformant EK certificate for an ECC or RSA key.
fn ek_params(rsa: bool) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages =
        vec![if rsa { KeyUsagePurpose::KeyEncipherment } else { KeyUsagePurpose::KeyAgreement }];
    p.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::Other(tcg_kp_ek_certificate_arcs().to_vec())];
    p.use_authority_key_identifier_extension = true;
    p.custom_extensions = vec![
        ext(&[2, 5, 29, 17], true, subject_alt_name_der(&info()).unwrap()),
        ext(
            &[2, 5, 29, 9],
            false,
            subject_directory_attributes_der(&TpmSpecification {
                family: "2.0".into(),
                level: 0,
                revision: 164,
            })
            .unwrap(),
        ),
    ];
    let now = SystemTime::now();
    p.not_before = (now - HOUR).into();
    p.not_after = (now + HOUR).into();
    p
}

fn issue(m: &Manufacturer, params: &CertificateParams, spki: &[u8]) -> Vec<u8> {
    let key = rcgen::SubjectPublicKeyInfo::from_der(spki).unwrap();
    params.signed_by(&key, &Issuer::from_params(&m.params, &m.key)).unwrap().der().to_vec()
}

fn ecc_ek() -> Vec<u8> {
    KeyPair::generate().unwrap().subject_public_key_info()
}

fn rsa_ek() -> Vec<u8> {
    let mut modulus = vec![0xC5u8; 256];
    modulus[255] = 0x01;
    rsa_spki_der(&modulus, 0)
}

use rcgen::PublicKeyData as _;

#[test]
fn ecc_ek_certificate_verifies_and_yields_tpm_info() {
    let m = manufacturer();
    let spki = ecc_ek();
    let cert = issue(&m, &ek_params(false), &spki);
    let ek = verify_ek_certificate(&cert, &[], &m.anchors, &spki, SystemTime::now()).unwrap();
    assert_eq!(ek.tpm, info());
    assert_eq!(ek.tpm.manufacturer_id(), Some(0x1014));
    assert_eq!(ek.key_type, EkKeyType::Ecc { curve: EccCurve::P256 });
    assert_eq!(
        ek.specification,
        Some(TpmSpecification { family: "2.0".into(), level: 0, revision: 164 })
    );
    assert_eq!(ek.chain.len(), 2);
}

#[test]
fn rsa_ek_certificate_verifies() {
    let m = manufacturer();
    let spki = rsa_ek();
    let cert = issue(&m, &ek_params(true), &spki);
    let ek = verify_ek_certificate(&cert, &[], &m.anchors, &spki, SystemTime::now()).unwrap();
    assert_eq!(ek.key_type, EkKeyType::Rsa { bits: 2048 });
}

#[test]
fn other_ek_public_key_is_rejected() {
    let m = manufacturer();
    let cert = issue(&m, &ek_params(false), &ecc_ek());
    let err =
        verify_ek_certificate(&cert, &[], &m.anchors, &ecc_ek(), SystemTime::now()).unwrap_err();
    assert_eq!(err, EkCertError::PublicKeyMismatch);
    let err =
        verify_ek_certificate(&cert, &[], &m.anchors, &rsa_ek(), SystemTime::now()).unwrap_err();
    assert_eq!(err, EkCertError::PublicKeyMismatch);
}

#[test]
fn certificate_from_another_manufacturer_is_rejected() {
    let m = manufacturer();
    let other = manufacturer();
    let spki = ecc_ek();
    let cert = issue(&other, &ek_params(false), &spki);
    let err = verify_ek_certificate(&cert, &[], &m.anchors, &spki, SystemTime::now()).unwrap_err();
    assert!(matches!(err, EkCertError::Chain(ChainError::UnknownIssuer { .. })), "{err}");
}

#[test]
fn key_usage_must_match_the_key_type() {
    let m = manufacturer();
    let spki = ecc_ek();
    let mut p = ek_params(false);
    p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let err =
        verify_ek_certificate(&issue(&m, &p, &spki), &[], &m.anchors, &spki, SystemTime::now());
    assert_eq!(err.unwrap_err(), EkCertError::MissingKeyUsage { required: "keyAgreement" });

    let spki = rsa_ek();
    let mut p = ek_params(true);
    p.key_usages = vec![];
    let err =
        verify_ek_certificate(&issue(&m, &p, &spki), &[], &m.anchors, &spki, SystemTime::now());
    assert_eq!(err.unwrap_err(), EkCertError::MissingKeyUsage { required: "keyEncipherment" });
}

#[test]
fn extended_key_usage_when_present_must_be_ek_certificate() {
    let m = manufacturer();
    let spki = ecc_ek();
    let mut p = ek_params(false);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let err =
        verify_ek_certificate(&issue(&m, &p, &spki), &[], &m.anchors, &spki, SystemTime::now());
    assert_eq!(err.unwrap_err(), EkCertError::WrongExtendedKeyUsage);
    p.extended_key_usages = vec![];
    assert!(
        verify_ek_certificate(&issue(&m, &p, &spki), &[], &m.anchors, &spki, SystemTime::now())
            .is_ok()
    );
}

#[test]
fn ca_certificate_is_not_an_ek_certificate() {
    let m = manufacturer();
    let spki = ecc_ek();
    let mut p = ek_params(false);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let err =
        verify_ek_certificate(&issue(&m, &p, &spki), &[], &m.anchors, &spki, SystemTime::now());
    assert_eq!(err.unwrap_err(), EkCertError::IsCa);
}

#[test]
fn subject_alt_name_checks() {
    let m = manufacturer();
    let spki = ecc_ek();
    let now = SystemTime::now();

    let mut p = ek_params(false);
    p.custom_extensions.remove(0);
    let err =
        verify_ek_certificate(&issue(&m, &p, &spki), &[], &m.anchors, &spki, now).unwrap_err();
    assert_eq!(err, EkCertError::MissingSubjectAltName);

    let mut p = ek_params(false);
    p.custom_extensions[0] = ext(&[2, 5, 29, 17], false, subject_alt_name_der(&info()).unwrap());
    let err =
        verify_ek_certificate(&issue(&m, &p, &spki), &[], &m.anchors, &spki, now).unwrap_err();
    assert_eq!(err, EkCertError::SubjectAltNameNotCritical);
    // A non-empty subject (as swtpm-localca writes, CN=unknown) makes a non-critical SAN fine.
    p.distinguished_name.push(DnType::CommonName, "unknown");
    assert!(verify_ek_certificate(&issue(&m, &p, &spki), &[], &m.anchors, &spki, now).is_ok());

    // A directoryName without tpmModel.
    let name = der::seq(&[
        der::set(&[der::seq(&[
            der::oid(&TPM_MANUFACTURER),
            der::tlv(der::UTF8_STRING, b"id:00001014"),
        ])]),
        der::set(&[der::seq(&[der::oid(&TPM_VERSION), der::tlv(der::UTF8_STRING, b"id:1")])]),
    ]);
    let mut p = ek_params(false);
    p.custom_extensions[0] = ext(&[2, 5, 29, 17], true, der::seq(&[der::tlv(0xA4, &name)]));
    let err =
        verify_ek_certificate(&issue(&m, &p, &spki), &[], &m.anchors, &spki, now).unwrap_err();
    assert_eq!(err, EkCertError::MissingTpmAttribute { attribute: "tpmModel" });

    // The same attribute twice (here in a second directoryName) is ambiguous.
    let valid = subject_alt_name_der(&info()).unwrap();
    let (names, _) = der::expect(&valid, der::SEQUENCE).unwrap();
    let mut p = ek_params(false);
    p.custom_extensions[0] =
        ext(&[2, 5, 29, 17], true, der::seq(&[names.to_vec(), names.to_vec()]));
    let err =
        verify_ek_certificate(&issue(&m, &p, &spki), &[], &m.anchors, &spki, now).unwrap_err();
    assert_eq!(err, EkCertError::DuplicateTpmAttribute { attribute: "tpmManufacturer" });

    // One multi-valued RDN (another encoding vendors use) is read too.
    let name = der::seq(&[der::set(&[
        der::seq(&[der::oid(&TPM_MANUFACTURER), der::tlv(der::UTF8_STRING, b"id:49465800")]),
        der::seq(&[der::oid(&TPM_MODEL), der::tlv(der::UTF8_STRING, b"SLB9670")]),
        der::seq(&[der::oid(&TPM_VERSION), der::tlv(der::UTF8_STRING, b"id:0007003D")]),
    ])]);
    p.custom_extensions[0] = ext(&[2, 5, 29, 17], true, der::seq(&[der::tlv(0xA4, &name)]));
    let ek = verify_ek_certificate(&issue(&m, &p, &spki), &[], &m.anchors, &spki, now).unwrap();
    assert_eq!(ek.tpm.model, "SLB9670");
    assert_eq!(ek.tpm.manufacturer_id(), Some(0x4946_5800));
}

#[test]
fn expired_ek_certificate() {
    let m = manufacturer();
    let spki = ecc_ek();
    let cert = issue(&m, &ek_params(false), &spki);
    let later = SystemTime::now() + 2 * HOUR;
    let err = verify_ek_certificate(&cert, &[], &m.anchors, &spki, later).unwrap_err();
    assert!(matches!(err, EkCertError::Chain(ChainError::Expired { .. })), "{err}");
}

#[test]
fn key_comparison_ignores_encoding_details() {
    let mut modulus = vec![0xB1u8; 256];
    modulus[0] = 0x80;
    let a = rsa_spki_der(&modulus, 0);
    let mut padded = vec![0, 0];
    padded.extend_from_slice(&modulus);
    let b = rsa_spki_der(&padded, 65537);
    assert_eq!(a, b);
    assert!(same_public_key(&a, &b).unwrap());
    assert!(!same_public_key(&a, &rsa_spki_der(&modulus, 3)).unwrap());

    // An SPKI with absent (instead of NULL) RSA parameters: same key.
    let rsa_key = der::seq(&[der::uint_der(&modulus), der::uint_der(&[1, 0, 1])]);
    let no_params = der::seq(&[
        der::seq(&[der::oid(&[1, 2, 840, 113549, 1, 1, 1])]),
        der::bit_string(&rsa_key),
    ]);
    assert!(same_public_key(&a, &no_params).unwrap());

    let x = [0u8, 7, 7, 7];
    let y = [9u8; 32];
    let short = ecc_spki_der(EccCurve::P256, &x, &y).unwrap();
    let mut x32 = [0u8; 32];
    x32[29..].copy_from_slice(&[7, 7, 7]);
    let full = ecc_spki_der(EccCurve::P256, &x32, &y).unwrap();
    assert!(same_public_key(&short, &full).unwrap());
    assert!(!same_public_key(&full, &ecc_spki_der(EccCurve::P384, &x32, &y).unwrap()).unwrap());
    assert!(ecc_spki_der(EccCurve::P256, &[1; 33], &y).is_err());
    assert!(matches!(same_public_key(b"junk", &full), Err(EkCertError::BadEkPublicKey(_))));
}

#[test]
fn generated_ecc_spki_matches_ring() {
    let kp = KeyPair::generate().unwrap();
    let spki = kp.subject_public_key_info();
    let raw = kp.public_key_raw();
    let ours = ecc_spki_der(EccCurve::P256, &raw[1..33], &raw[33..]).unwrap();
    assert_eq!(ours, spki);
}

#[test]
fn tpm_info_issuing_form() {
    assert!(info().check().is_ok());
    for (m, model, v) in [
        ("id:1014", "swtpm", "id:1"),
        ("00001014", "swtpm", "id:1"),
        ("id:0000101G", "swtpm", "id:1"),
        ("id:00001014", "", "id:1"),
        ("id:00001014", "a\nb", "id:1"),
        ("id:00001014", "swtpm", "id:"),
        ("id:00001014", "swtpm", "20191023"),
    ] {
        let i = TpmInfo { manufacturer: m.into(), model: model.into(), version: v.into() };
        assert!(matches!(i.check(), Err(EkCertError::BadTpmAttribute { .. })), "{i:?}");
        assert!(subject_alt_name_der(&i).is_err());
    }
}

#[test]
fn der_reader_rejects_truncation_and_huge_lengths() {
    assert!(der::expect(&[0x30], der::SEQUENCE).is_err());
    assert!(der::expect(&[0x30, 0x05, 1], der::SEQUENCE).is_err());
    assert!(der::expect(&[0x30, 0x85, 1, 1, 1, 1, 1], der::SEQUENCE).is_err());
    assert!(der::expect(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF], der::SEQUENCE).is_err());
    assert_eq!(
        der::expect(&[0x30, 0x81, 0x01, 7, 8], der::SEQUENCE).unwrap(),
        (&[7u8][..], &[8u8][..])
    );
    assert_eq!(der::uint(&[0x00, 0xA4]), Some(164));
    assert_eq!(der::uint(&[0x80]), None);
    assert_eq!(der::oid_content(&[2, 23, 133, 8, 1]), vec![0x67, 0x81, 0x05, 0x08, 0x01]);
}

mod properties {
    //! Random and mutated certificates at enrolment: never a panic, and no single flipped bit
    //! or truncation of a valid EK certificate is accepted.

    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;

    struct Fixture {
        anchors: TrustAnchors,
        spki: Vec<u8>,
        cert: Vec<u8>,
    }

    fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let m = manufacturer();
            let spki = ecc_ek();
            let cert = issue(&m, &ek_params(false), &spki);
            Fixture { anchors: m.anchors, spki, cert }
        })
    }

    fn verify(cert: &[u8], intermediates: &[&[u8]]) -> Result<EkCertificate, EkCertError> {
        let f = fixture();
        verify_ek_certificate(cert, intermediates, &f.anchors, &f.spki, SystemTime::now())
    }

    #[test]
    fn the_fixture_verifies() {
        verify(&fixture().cert, &[]).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_are_refused(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            as_intermediate in any::<bool>(),
        ) {
            let _ = parse_ek_certificate(&bytes);
            prop_assert!(verify(&bytes, &[]).is_err());
            if as_intermediate {
                // Junk offered as an intermediate is refused as malformed, whatever the leaf.
                let err = verify(&fixture().cert, &[&bytes]).unwrap_err();
                prop_assert!(matches!(err, EkCertError::Chain(ChainError::Malformed(_))), "{}", err);
            }
        }

        #[test]
        fn no_flipped_bit_of_an_ek_certificate_is_accepted(bit in any::<prop::sample::Index>()) {
            let mut cert = fixture().cert.clone();
            let bit = bit.index(cert.len() * 8);
            cert[bit / 8] ^= 1 << (bit % 8);
            let _ = parse_ek_certificate(&cert);
            prop_assert!(verify(&cert, &[]).is_err(), "bit {} flipped and still accepted", bit);
        }

        #[test]
        fn no_truncation_of_an_ek_certificate_is_accepted(cut in any::<prop::sample::Index>()) {
            let cert = &fixture().cert;
            let cut = &cert[..cut.index(cert.len())];
            prop_assert!(parse_ek_certificate(cut).is_err());
            prop_assert!(verify(cut, &[]).is_err());
        }
    }
}
