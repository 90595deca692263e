//! Manufacturing on real swtpm: EK, EK certificate in NV, read back and verified.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::SystemTime;

use protocol::x509::TrustAnchors;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tre::Error;
use tre::ekcert::ManufacturerCa;
use tre::manufacture::{ManufactureOptions, manufacture, read_ek_certificate, verify_ek};
use tre::swtpm::{Swtpm, SwtpmConfig};
use tre::tpm::{KeyAlg, Tpm};

/// A TPM manufacturer root CA: (certificate PEM, key PEM).
fn manufacturer_ca(name: &str) -> (String, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn roots(cert_pem: &str) -> TrustAnchors {
    TrustAnchors::from_pem(cert_pem.as_bytes()).unwrap()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn sixteen_devices_concurrently_each_with_a_verified_ek_certificate() {
    let (cert, key) = manufacturer_ca("tresor test TPM manufacturer");
    let config = SwtpmConfig::load().unwrap();
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (cert, key, config) = (cert.clone(), key.clone(), config.clone());
            std::thread::spawn(move || {
                let ca = ManufacturerCa::from_pem(&cert, &key).unwrap();
                let swtpm = Swtpm::start_temp(&config).unwrap();
                let pid = swtpm.pid();
                let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
                let made = manufacture(&mut tpm, &ca, &ManufactureOptions::default()).unwrap();
                let verified =
                    verify_ek(&mut tpm, KeyAlg::Ecc, &[], &roots(&cert), SystemTime::now())
                        .unwrap();
                assert_eq!(
                    read_ek_certificate(&mut tpm, KeyAlg::Ecc).unwrap(),
                    made.ek_certificate
                );
                assert!(verified.tpm.manufacturer.starts_with("id:"));
                (made.device_id, pid)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut ids: Vec<_> = results.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 16);
    for (_, pid) in results {
        assert!(!alive(pid), "swtpm {pid} outlived the test");
    }
}

#[test]
fn rsa_ek_is_manufactured_and_verified() {
    let (cert, key) = manufacturer_ca("tresor test TPM manufacturer");
    let ca = ManufacturerCa::from_pem(&cert, &key).unwrap();
    let swtpm = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
    let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
    let options = ManufactureOptions { ek_alg: KeyAlg::Rsa, ..Default::default() };
    let made = manufacture(&mut tpm, &ca, &options).unwrap();
    assert_eq!(made.ek_alg, KeyAlg::Rsa);
    let verified = verify_ek(&mut tpm, KeyAlg::Rsa, &[], &roots(&cert), SystemTime::now()).unwrap();
    assert!(matches!(verified.key_type, protocol::ekcert::EkKeyType::Rsa { bits: 2048 }));
    // the ECC index stays empty
    assert!(matches!(
        read_ek_certificate(&mut tpm, KeyAlg::Ecc),
        Err(Error::NoEkCertificate { .. })
    ));
}

#[test]
fn a_tpm_is_manufactured_once() {
    let (cert, key) = manufacturer_ca("tresor test TPM manufacturer");
    let ca = ManufacturerCa::from_pem(&cert, &key).unwrap();
    let swtpm = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
    let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
    manufacture(&mut tpm, &ca, &ManufactureOptions::default()).unwrap();
    let again = manufacture(&mut tpm, &ca, &ManufactureOptions::default()).unwrap_err();
    assert!(matches!(again, Error::AlreadyManufactured { index: 0x01C0_000A }), "{again}");
}

#[test]
fn verification_fails_closed() {
    let (cert, key) = manufacturer_ca("tresor test TPM manufacturer");
    let (other_cert, _) = manufacturer_ca("another manufacturer");
    let ca = ManufacturerCa::from_pem(&cert, &key).unwrap();

    // a certificate from an unknown CA
    let swtpm = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
    let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
    manufacture(&mut tpm, &ca, &ManufactureOptions::default()).unwrap();
    let err =
        verify_ek(&mut tpm, KeyAlg::Ecc, &[], &roots(&other_cert), SystemTime::now()).unwrap_err();
    assert!(matches!(err, Error::EkCertificate(_)), "{err}");

    // an expired certificate
    let swtpm2 = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
    let mut tpm2 = Tpm::connect(&swtpm2.tcti()).unwrap();
    let soon = SystemTime::now() + std::time::Duration::from_secs(60);
    let options = ManufactureOptions { not_after: Some(soon), ..Default::default() };
    manufacture(&mut tpm2, &ca, &options).unwrap();
    let later = soon + std::time::Duration::from_secs(3600);
    let err = verify_ek(&mut tpm2, KeyAlg::Ecc, &[], &roots(&cert), later).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");

    // the certificate of one TPM presented by another: copy A's certificate into B's NV
    let swtpm3 = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
    let mut tpm3 = Tpm::connect(&swtpm3.tcti()).unwrap();
    let stolen = read_ek_certificate(&mut tpm, KeyAlg::Ecc).unwrap();
    tpm3.nv_write_platform(KeyAlg::Ecc.ek_certificate_index(), &stolen).unwrap();
    let err = verify_ek(&mut tpm3, KeyAlg::Ecc, &[], &roots(&cert), SystemTime::now()).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("key"), "{err}");
}

#[test]
fn a_manufactured_ek_certificate_states_the_tpm_specification() {
    // TCG EK Credential Profile 2.x §3.2.11: subjectDirectoryAttributes (2.5.29.9), not
    // critical, with the TPMSpecification attribute (2.23.133.2.16) {family "2.0", level,
    // revision}, here the values the swtpm itself reports.
    let (cert, key) = manufacturer_ca("tresor test TPM manufacturer");
    let ca = ManufacturerCa::from_pem(&cert, &key).unwrap();
    let swtpm = Swtpm::start_temp(&SwtpmConfig::load().unwrap()).unwrap();
    let mut tpm = Tpm::connect(&swtpm.tcti()).unwrap();
    let reported = tpm.specification().unwrap();
    assert_eq!(reported.family, "2.0");
    assert!(reported.revision >= 100, "revision ×100, e.g. 164 for 1.64: {reported:?}");
    let made = manufacture(&mut tpm, &ca, &ManufactureOptions::default()).unwrap();

    // x509-parser sees the extension, non-critical, and its attribute.
    use x509_parser::prelude::FromDer;
    let (_, parsed) =
        x509_parser::certificate::X509Certificate::from_der(&made.ek_certificate).unwrap();
    let sda = parsed
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "2.5.29.9")
        .expect("subjectDirectoryAttributes");
    assert!(!sda.critical);
    let tpm_specification_oid = [0x06, 0x05, 0x67, 0x81, 0x05, 0x02, 0x10]; // 2.23.133.2.16
    assert!(sda.value.windows(7).any(|w| w == tpm_specification_oid));
    // tresor's own reader agrees, after the whole profile check.
    let verified = verify_ek(&mut tpm, KeyAlg::Ecc, &[], &roots(&cert), SystemTime::now()).unwrap();
    assert_eq!(verified.specification, Some(reported.clone()));

    // And OpenSSL, where it is installed, prints the extension.
    let dir = tempfile::tempdir().unwrap();
    let der = dir.path().join("ek.der");
    std::fs::write(&der, &made.ek_certificate).unwrap();
    match std::process::Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&der)
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("Subject Directory Attributes"), "{text}");
        }
        _ => eprintln!("SKIPPED: no openssl to print the certificate"),
    }
}
