//! EK certificates written by `swtpm_setup --create-ek-cert` (swtpm-localca, Debian package
//! swtpm-tools) validate with `protocol::ekcert`: the certificates are read back from the TPM's
//! NV indices with `tpm2_nvread` over a running swtpm, the EK public keys with
//! `tpm2_readpublic`. Everything lives in a temporary directory; the machine's
//! /var/lib/swtpm-localca is never touched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use protocol::ekcert::{
    self, EccCurve, EkCertError, EkKeyType, NV_EK_CERT_ECC_P384, NV_EK_CERT_RSA2048,
};
use protocol::x509::{ChainError, TrustAnchors, certificates_from_pem};

/// Persistent handles swtpm_setup gives the EKs it creates (its log says so).
const RSA_EK_HANDLE: &str = "0x81010001";
const ECC_EK_HANDLE: &str = "0x81010016";

struct Swtpm {
    child: Child,
    port: u16,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (make deps installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// swtpm_setup with a swtpm-localca configuration of its own in `dir`.
fn manufacture(dir: &Path) -> PathBuf {
    let ca = dir.join("localca");
    let state = dir.join("state");
    std::fs::create_dir_all(&ca).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let localca_conf = dir.join("swtpm-localca.conf");
    std::fs::write(
        &localca_conf,
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\n\
             certserial = {ca}/certserial\n",
            ca = ca.display()
        ),
    )
    .unwrap();
    let options = dir.join("swtpm-localca.options");
    std::fs::write(
        &options,
        "--platform-manufacturer tresor\n--platform-version 2.1\n--platform-model test\n",
    )
    .unwrap();
    let setup_conf = dir.join("swtpm_setup.conf");
    std::fs::write(
        &setup_conf,
        format!(
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\n\
             create_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
            localca_conf.display(),
            options.display()
        ),
    )
    .unwrap();
    run(Command::new("swtpm_setup")
        .args(["--tpm2", "--create-ek-cert", "--create-platform-cert", "--tpmstate"])
        .arg(&state)
        .arg("--config")
        .arg(&setup_conf)
        .arg("--logfile")
        .arg(dir.join("swtpm_setup.log"))
        .env("XDG_CONFIG_HOME", dir)
        .env("HOME", dir));
    state
}

fn free_port_pair() -> u16 {
    loop {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

fn start_swtpm(state: &Path) -> Swtpm {
    for _ in 0..5 {
        let port = free_port_pair();
        let mut child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm (make deps installs it)");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // lost a port race: try another pair
            }
            if std::net::TcpStream::connect(("127.0.0.1", port + 1)).is_ok() {
                return Swtpm { child, port };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("swtpm did not start");
}

fn tcti(tpm: &Swtpm) -> String {
    format!("swtpm:host=127.0.0.1,port={}", tpm.port)
}

fn nv_read(tpm: &Swtpm, index: u32, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("nv-{index:08x}.der"));
    run(Command::new("tpm2_nvread")
        .args(["-T", &tcti(tpm), "-o"])
        .arg(&out)
        .arg(format!("{index:#010x}")));
    std::fs::read(out).unwrap()
}

fn read_public(tpm: &Swtpm, handle: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("pub-{handle}.der"));
    run(Command::new("tpm2_readpublic")
        .args(["-T", &tcti(tpm), "-c", handle, "-f", "der", "-o"])
        .arg(&out));
    std::fs::read(out).unwrap()
}

#[test]
fn swtpm_localca_ek_certificates_validate() {
    let dir = tempfile::tempdir().unwrap();
    let state = manufacture(dir.path());
    let ca = dir.path().join("localca");
    let anchors = TrustAnchors::from_file(&ca.join("swtpm-localca-rootca-cert.pem")).unwrap();
    let issuer = certificates_from_pem(&std::fs::read(ca.join("issuercert.pem")).unwrap()).unwrap();
    let intermediates: Vec<&[u8]> = issuer.iter().map(Vec::as_slice).collect();

    let tpm = start_swtpm(&state);
    let rsa_cert = nv_read(&tpm, NV_EK_CERT_RSA2048, dir.path());
    let ecc_cert = nv_read(&tpm, NV_EK_CERT_ECC_P384, dir.path());
    let rsa_ek = read_public(&tpm, RSA_EK_HANDLE, dir.path());
    let ecc_ek = read_public(&tpm, ECC_EK_HANDLE, dir.path());
    drop(tpm);

    let now = SystemTime::now();
    let rsa =
        ekcert::verify_ek_certificate(&rsa_cert, &intermediates, &anchors, &rsa_ek, now).unwrap();
    assert_eq!(rsa.key_type, EkKeyType::Rsa { bits: 2048 });
    assert_eq!(rsa.tpm.manufacturer, "id:00001014");
    assert_eq!(rsa.tpm.manufacturer_id(), Some(0x1014));
    assert_eq!(rsa.tpm.model, "swtpm");
    assert!(rsa.tpm.version.starts_with("id:"), "{:?}", rsa.tpm);
    let spec = rsa.specification.expect("swtpm writes subjectDirectoryAttributes");
    assert_eq!(spec.family, "2.0");
    assert_eq!(rsa.chain.len(), 3);

    let ecc =
        ekcert::verify_ek_certificate(&ecc_cert, &intermediates, &anchors, &ecc_ek, now).unwrap();
    assert_eq!(ecc.key_type, EkKeyType::Ecc { curve: EccCurve::P384 });
    assert_eq!(ecc.tpm, rsa.tpm);

    // The wrong key, a missing intermediate, a different root: each stops at its own check.
    let err = ekcert::verify_ek_certificate(&rsa_cert, &intermediates, &anchors, &ecc_ek, now)
        .unwrap_err();
    assert_eq!(err, EkCertError::PublicKeyMismatch);
    let err = ekcert::verify_ek_certificate(&rsa_cert, &[], &anchors, &rsa_ek, now).unwrap_err();
    assert!(matches!(err, EkCertError::Chain(ChainError::UnknownIssuer { .. })), "{err}");
    let only_issuer =
        TrustAnchors::from_pem(&std::fs::read(ca.join("issuercert.pem")).unwrap()).unwrap();
    assert!(ekcert::verify_ek_certificate(&rsa_cert, &[], &only_issuer, &rsa_ek, now).is_ok());
}
