//! Tests of [`super`]: ECDSA paths built with rcgen at test time, RSA and RSASSA-PSS paths from
//! the OpenSSL fixtures in `protocol/tests/data/x509/` (see its `generate.sh`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

fn ca_params(name: &str, path_len: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    p.not_before = (now - HOUR).into();
    p.not_after = (now + 24 * HOUR).into();
    p
}

fn new_root(name: &str) -> Ca {
    root_with(ca_params(name, None), &rcgen::PKCS_ECDSA_P256_SHA256)
}

fn root_with(params: CertificateParams, alg: &'static rcgen::SignatureAlgorithm) -> Ca {
    let key = KeyPair::generate_for(alg).unwrap();
    let der = params.self_signed(&key).unwrap().der().to_vec();
    Ca { params, key, der }
}

fn sub_ca(parent: &Ca, params: CertificateParams) -> Ca {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let der = params.signed_by(&key, &Issuer::from_params(&parent.params, &parent.key)).unwrap();
    Ca { params, key, der: der.der().to_vec() }
}

fn leaf_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    p.not_before = (now - HOUR).into();
    p.not_after = (now + 24 * HOUR).into();
    p
}

fn leaf(parent: &Ca, params: CertificateParams) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    params
        .signed_by(&key, &Issuer::from_params(&parent.params, &parent.key))
        .unwrap()
        .der()
        .to_vec()
}

fn anchors(roots: &[&Ca]) -> TrustAnchors {
    let mut a = TrustAnchors::new();
    for r in roots {
        a.add_der(&r.der).unwrap();
    }
    a
}

fn now() -> ChainPolicy {
    ChainPolicy::at(SystemTime::now())
}

#[test]
fn root_intermediate_leaf_verifies_and_returns_the_leaf_key() {
    let root = new_root("root");
    let int = sub_ca(&root, ca_params("int", Some(0)));
    let leaf_der = leaf(&int, leaf_params("leaf"));
    let v = verify_chain(&leaf_der, &[&int.der], &anchors(&[&root]), &now()).unwrap();
    assert_eq!(v.subject, "CN=leaf");
    assert_eq!(v.chain, vec![leaf_der.clone(), int.der.clone(), root.der.clone()]);
    let cert = parse(&leaf_der).unwrap();
    assert_eq!(v.spki_der, cert.public_key().raw);
}

#[test]
fn unused_and_unordered_intermediates_are_tolerated() {
    let root = new_root("root");
    let int1 = sub_ca(&root, ca_params("int1", None));
    let int2 = sub_ca(&int1, ca_params("int2", None));
    let other = sub_ca(&root, ca_params("other", None));
    let leaf_der = leaf(&int2, leaf_params("leaf"));
    let v =
        verify_chain(&leaf_der, &[&other.der, &int1.der, &int2.der], &anchors(&[&root]), &now());
    assert_eq!(v.unwrap().chain.len(), 4);
}

#[test]
fn unknown_issuer() {
    let root = new_root("root");
    let stranger = new_root("stranger");
    let leaf_der = leaf(&stranger, leaf_params("leaf"));
    let err = verify_chain(&leaf_der, &[], &anchors(&[&root]), &now()).unwrap_err();
    assert!(matches!(err, ChainError::UnknownIssuer { .. }), "{err}");
}

#[test]
fn same_name_other_key_is_a_bad_signature_or_unknown_issuer() {
    // An attacker's CA with the genuine root's name: the key identifiers differ, so it is
    // not even a candidate; without key identifiers the signature check stops it.
    let root = new_root("root");
    let fake = new_root("root");
    let leaf_der = leaf(&fake, leaf_params("leaf"));
    let err = verify_chain(&leaf_der, &[], &anchors(&[&root]), &now()).unwrap_err();
    assert!(matches!(err, ChainError::UnknownIssuer { .. }), "{err}");

    let mut p = leaf_params("leaf");
    p.use_authority_key_identifier_extension = false;
    let leaf_der = leaf(&fake, p);
    let err = verify_chain(&leaf_der, &[], &anchors(&[&root]), &now()).unwrap_err();
    assert!(matches!(err, ChainError::BadSignature { .. }), "{err}");
}

#[test]
fn tampered_signature() {
    let root = new_root("root");
    let mut leaf_der = leaf(&root, leaf_params("leaf"));
    let last = leaf_der.len() - 1;
    leaf_der[last] ^= 1;
    let err = verify_chain(&leaf_der, &[], &anchors(&[&root]), &now()).unwrap_err();
    assert!(matches!(err, ChainError::BadSignature { .. }), "{err}");
}

#[test]
fn expired_and_not_yet_valid_leaf() {
    let root = new_root("root");
    let leaf_der = leaf(&root, leaf_params("leaf"));
    let later = SystemTime::now() + 48 * HOUR;
    let err =
        verify_chain(&leaf_der, &[], &anchors(&[&root]), &ChainPolicy::at(later)).unwrap_err();
    assert!(matches!(err, ChainError::Expired { .. }), "{err}");
    assert!(err.to_string().contains("expired at"), "{err}");
    let earlier = SystemTime::now() - 2 * HOUR;
    let err =
        verify_chain(&leaf_der, &[], &anchors(&[&root]), &ChainPolicy::at(earlier)).unwrap_err();
    assert!(matches!(err, ChainError::NotYetValid { .. }), "{err}");
}

#[test]
fn expired_intermediate() {
    let root = new_root("root");
    let mut p = ca_params("int", None);
    p.not_after = (SystemTime::now() - 30 * 60 * Duration::from_secs(1)).into();
    let int = sub_ca(&root, p);
    let leaf_der = leaf(&int, leaf_params("leaf"));
    let err = verify_chain(&leaf_der, &[&int.der], &anchors(&[&root]), &now()).unwrap_err();
    assert!(matches!(err, ChainError::Expired { ref subject, .. } if subject == "CN=int"), "{err}");
}

#[test]
fn issuer_that_is_not_a_ca() {
    let root = new_root("root");
    let mut p = ca_params("fake-int", None);
    p.is_ca = IsCa::ExplicitNoCa;
    let not_ca = sub_ca(&root, p);
    let leaf_der = leaf(&not_ca, leaf_params("leaf"));
    let err = verify_chain(&leaf_der, &[&not_ca.der], &anchors(&[&root]), &now()).unwrap_err();
    assert!(matches!(err, ChainError::NotACa { .. }), "{err}");
}

#[test]
fn issuer_without_key_cert_sign() {
    let root = new_root("root");
    let mut p = ca_params("int", None);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let int = sub_ca(&root, p);
    let leaf_der = leaf(&int, leaf_params("leaf"));
    let err = verify_chain(&leaf_der, &[&int.der], &anchors(&[&root]), &now()).unwrap_err();
    assert!(matches!(err, ChainError::MissingKeyCertSign { .. }), "{err}");
}

#[test]
fn path_length_constraint() {
    let root = root_with(ca_params("root", Some(0)), &rcgen::PKCS_ECDSA_P256_SHA256);
    let int = sub_ca(&root, ca_params("int", None));
    let leaf_der = leaf(&int, leaf_params("leaf"));
    let err = verify_chain(&leaf_der, &[&int.der], &anchors(&[&root]), &now()).unwrap_err();
    assert!(matches!(err, ChainError::PathLenExceeded { allowed: 0, actual: 1, .. }), "{err}");
}

#[test]
fn chain_length_bound() {
    let root = new_root("root");
    let a = sub_ca(&root, ca_params("a", None));
    let b = sub_ca(&a, ca_params("b", None));
    let leaf_der = leaf(&b, leaf_params("leaf"));
    let policy = now().max_chain_len(3);
    let err = verify_chain(&leaf_der, &[&a.der, &b.der], &anchors(&[&root]), &policy).unwrap_err();
    assert!(matches!(err, ChainError::ChainTooLong { max: 3 }), "{err}");
    assert!(
        verify_chain(&leaf_der, &[&a.der, &b.der], &anchors(&[&root]), &now().max_chain_len(4))
            .is_ok()
    );
    let many: Vec<&[u8]> = vec![&a.der; MAX_INTERMEDIATES + 1];
    let err = verify_chain(&leaf_der, &many, &anchors(&[&root]), &now()).unwrap_err();
    assert!(matches!(err, ChainError::TooManyIntermediates { .. }), "{err}");
}

#[test]
fn required_leaf_eku() {
    let root = new_root("root");
    let leaf_der = leaf(&root, leaf_params("leaf"));
    let a = anchors(&[&root]);
    assert!(verify_chain(&leaf_der, &[], &a, &now().require_leaf_eku(EKU_SERVER_AUTH)).is_ok());
    let err =
        verify_chain(&leaf_der, &[], &a, &now().require_leaf_eku(EKU_CLIENT_AUTH)).unwrap_err();
    assert!(matches!(err, ChainError::MissingExtendedKeyUsage { .. }), "{err}");
    let err =
        verify_chain(&leaf_der, &[], &a, &now().require_leaf_eku("2.23.133.8.1")).unwrap_err();
    assert!(matches!(err, ChainError::MissingExtendedKeyUsage { .. }), "{err}");
}

#[test]
fn unknown_critical_extension_unless_declared_handled() {
    let root = new_root("root");
    let mut p = leaf_params("leaf");
    let mut ext =
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
    ext.set_criticality(true);
    p.custom_extensions.push(ext);
    let leaf_der = leaf(&root, p);
    let a = anchors(&[&root]);
    let err = verify_chain(&leaf_der, &[], &a, &now()).unwrap_err();
    assert!(
        matches!(err, ChainError::UnhandledCriticalExtension { ref oid, .. } if oid == "1.3.6.1.4.1.99999.1"),
        "{err}"
    );
    assert!(
        verify_chain(&leaf_der, &[], &a, &now().handle_critical("1.3.6.1.4.1.99999.1")).is_ok()
    );
}

#[test]
fn malformed_inputs_are_errors_not_panics() {
    let root = new_root("root");
    let a = anchors(&[&root]);
    let leaf_der = leaf(&root, leaf_params("leaf"));
    for bad in [&b""[..], &b"\x30\x03\x02\x01"[..], &leaf_der[..leaf_der.len() - 1]] {
        let err = verify_chain(bad, &[], &a, &now()).unwrap_err();
        assert!(matches!(err, ChainError::Malformed(_)), "{err}");
    }
    let mut trailing = leaf_der.clone();
    trailing.push(0);
    assert!(matches!(verify_chain(&trailing, &[], &a, &now()), Err(ChainError::Malformed(_))));
    assert!(matches!(
        verify_chain(&vec![0x30; MAX_CERTIFICATE_LEN + 1], &[], &a, &now()),
        Err(ChainError::TooLarge { .. })
    ));
    assert!(matches!(
        verify_chain(&leaf_der, &[], &TrustAnchors::new(), &now()),
        Err(ChainError::NoTrustAnchors)
    ));
    assert!(TrustAnchors::new().add_der(b"not a certificate").is_err());
}

// The RSA fixtures are valid from 2026-11-29 to 2126-11-05.
const FIXTURE_TIME: u64 = 1_893_456_000 + 10 * 365 * 86_400; // 2039-12-28

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/x509/{name}", env!("CARGO_MANIFEST_DIR"));
    let pem = std::fs::read(path).unwrap();
    certificates_from_pem(&pem).unwrap().remove(0)
}

fn fixture_policy() -> ChainPolicy {
    ChainPolicy::at(UNIX_EPOCH + Duration::from_secs(FIXTURE_TIME))
}

#[test]
fn rsa_pkcs1_and_pss_signatures_verify() {
    let root = TrustAnchors::from_pem(
        &std::fs::read(format!("{}/tests/data/x509/rsa-root.pem", env!("CARGO_MANIFEST_DIR")))
            .unwrap(),
    )
    .unwrap();
    let int = fixture("rsa-pss-int.pem"); // RSASSA-PSS SHA-384 by the RSA-3072 root
    for leaf_name in ["leaf-pss-sha512.pem", "leaf-pkcs1-sha384.pem"] {
        let leaf_der = fixture(leaf_name);
        let v = verify_chain(&leaf_der, &[&int], &root, &fixture_policy()).unwrap();
        assert_eq!(v.subject, "CN=leaf pss-sha512");
    }
}

#[test]
fn sha1_and_non_standard_pss_salt_are_refused() {
    let root = TrustAnchors::from_file(Path::new(&format!(
        "{}/tests/data/x509/rsa-root.pem",
        env!("CARGO_MANIFEST_DIR")
    )))
    .unwrap();
    let int = fixture("rsa-pss-int.pem");
    for leaf_name in ["leaf-pkcs1-sha1.pem", "leaf-pss-sha256-salt20.pem"] {
        let err = verify_chain(&fixture(leaf_name), &[&int], &root, &fixture_policy()).unwrap_err();
        assert!(
            matches!(err, ChainError::UnsupportedSignatureAlgorithm { .. }),
            "{leaf_name}: {err}"
        );
    }
}

#[test]
fn pem_bundles_and_directories() {
    let r1 = new_root("one");
    let r2 = new_root("two");
    let pem = |der: &[u8]| pem_encode("CERTIFICATE", der);
    let bundle =
        format!("{}{}{}", pem(&r1.der), pem_encode("PRIVATE KEY", b"ignored"), pem(&r2.der));
    assert_eq!(TrustAnchors::from_pem(bundle.as_bytes()).unwrap().len(), 2);
    assert!(matches!(TrustAnchors::from_pem(b"nothing here"), Err(ChainError::Pem(_))));

    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(TrustAnchors::from_dir(dir.path()), Err(ChainError::NoTrustAnchors)));
    std::fs::write(dir.path().join("a.pem"), pem(&r1.der)).unwrap();
    std::fs::write(dir.path().join("b.der"), &r2.der).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a certificate").unwrap();
    let a = TrustAnchors::from_dir(dir.path()).unwrap();
    assert_eq!(a.len(), 2);
    assert!(format!("{a:?}").contains("CN=one"));
    std::fs::write(dir.path().join("c.crt"), "garbage").unwrap();
    assert!(matches!(TrustAnchors::from_dir(dir.path()), Err(ChainError::TrustAnchorFile { .. })));
    assert!(matches!(
        TrustAnchors::from_file(&dir.path().join("missing.pem")),
        Err(ChainError::Io { .. })
    ));
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

#[test]
fn a_certificate_has_one_encoding() {
    // The signature covers the TBS only; found by the EK-certificate property test: with the
    // outer signatureAlgorithm's OID under tag 0x07, x509-parser still read the certificate.
    let root = new_root("root");
    let a = anchors(&[&root]);
    let leaf_der = leaf(&root, leaf_params("leaf"));
    let ecdsa_sha256 = [0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    let outer = leaf_der.windows(ecdsa_sha256.len()).rposition(|w| w == ecdsa_sha256).unwrap();
    let mut retagged = leaf_der.clone();
    retagged[outer + 2] = 0x07;
    let err = verify_chain(&retagged, &[], &a, &now()).unwrap_err();
    assert!(matches!(err, ChainError::Malformed(_)), "{err}");
    let mut unused_bits = leaf_der.clone();
    let bit_string = outer + ecdsa_sha256.len();
    assert_eq!(unused_bits[bit_string], 0x03);
    unused_bits[bit_string + 2] = 1;
    let err = verify_chain(&unused_bits, &[], &a, &now()).unwrap_err();
    assert!(matches!(err, ChainError::Malformed(_)), "{err}");
    verify_chain(&leaf_der, &[], &a, &now()).unwrap();
}
