//! `provisioning::pki` on disk: the layout and file modes, OpenSSL's view of the chains
//! (`openssl verify`, the real binary), refusal to overwrite, the checks of `Pki::load`, and
//! the PKI in use: mutual TLS between roles and ES256 signing keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use axum::Router;
use axum::routing::get;
use protocol::x509::ChainError;
use provisioning::pki::{self, DEFAULT_OPERATORS, PeerAuth, Pki, PkiError, Role};

fn files() -> Vec<String> {
    pki::file_names(&DEFAULT_OPERATORS)
}
use transport::PeerIdentity;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (make deps)");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn init_writes_the_layout_with_private_keys_0600() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("nested/pki");
    let pki = pki::init(&dir, false).unwrap();
    assert_eq!(pki.dir(), dir);
    for file in files() {
        let path = dir.join(&file);
        let expected = if file.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode(&path), expected, "{file}");
    }
    assert_eq!(mode(&dir), 0o700);
    // Nothing but the PKI in the directory, no temporary left next to it.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), files().len());
    let siblings: Vec<_> =
        std::fs::read_dir(dir.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(siblings, vec![std::ffi::OsString::from("pki")]);
}

#[test]
fn openssl_verifies_every_role_certificate_against_the_ci() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("pki");
    pki::init(&dir, false).unwrap();
    for role in pki::Pki::load(&dir).unwrap().roles() {
        let cert = format!("{role}.pem");
        let (ok, out) = openssl(&["verify", "-CAfile", "ci.pem", &cert], &dir);
        assert!(ok, "openssl verify {cert}: {out}");
        let (ok, out) =
            openssl(&["verify", "-CAfile", "ci.pem", "-purpose", "sslserver", &cert], &dir);
        assert!(ok, "sslserver {cert}: {out}");
        let (ok, out) =
            openssl(&["verify", "-CAfile", "ci.pem", "-purpose", "sslclient", &cert], &dir);
        assert!(ok, "sslclient {cert}: {out}");
        let (ok, out) =
            openssl(&["x509", "-in", &cert, "-noout", "-subject", "-ext", "subjectAltName"], &dir);
        assert!(
            ok && out.contains(&format!("CN = {role}"))
                && out.contains("DNS:localhost")
                && out.contains("IP Address:127.0.0.1"),
            "{out}"
        );
        let key = format!("{role}.key");
        let (ok, out) = openssl(&["pkey", "-in", &key, "-noout", "-text"], &dir);
        assert!(ok && out.contains("P-256"), "{key}: {out}");
    }
    let (ok, out) = openssl(&["verify", "-CAfile", "manufacturer.pem", "manufacturer.pem"], &dir);
    assert!(ok, "{out}");
    // The manufacturer is a root of its own: the CI does not vouch for it, nor it for roles.
    let (ok, _) = openssl(&["verify", "-CAfile", "ci.pem", "manufacturer.pem"], &dir);
    assert!(!ok);
    let (ok, _) = openssl(&["verify", "-CAfile", "manufacturer.pem", "pva.pem"], &dir);
    assert!(!ok);
}

#[test]
fn existing_pki_is_kept_unless_forced() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("pki");
    pki::init(&dir, false).unwrap();
    let before = std::fs::read(dir.join("ci.pem")).unwrap();
    let err = pki::init(&dir, false).unwrap_err();
    assert!(matches!(err, PkiError::AlreadyExists { .. }), "{err}");
    assert_eq!(std::fs::read(dir.join("ci.pem")).unwrap(), before);

    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    pki::init(&dir, true).unwrap();
    assert_ne!(std::fs::read(dir.join("ci.pem")).unwrap(), before);
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    for file in files().iter().filter(|f| f.ends_with(".key")) {
        assert_eq!(mode(&dir.join(file)), 0o600);
    }
    // One stray PKI file is enough to count as an existing PKI.
    let other = parent.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("ro.key"), "x").unwrap();
    assert!(matches!(pki::init(&other, false), Err(PkiError::AlreadyExists { .. })));
}

#[test]
fn existing_empty_directory_and_non_directory() {
    let parent = tempfile::tempdir().unwrap();
    pki::init(parent.path(), false).unwrap();
    assert!(Pki::load(parent.path()).is_ok());
    let file = parent.path().join("ci.pem");
    assert!(matches!(pki::init(&file, true), Err(PkiError::NotADirectory(_))));
}

#[test]
fn load_rejects_tampered_directories() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("pki");
    pki::init(&dir, false).unwrap();

    std::fs::set_permissions(dir.join("pva.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(Pki::load(&dir), Err(PkiError::InsecureKeyFile { mode: 0o644, .. })));
    std::fs::set_permissions(dir.join("pva.key"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let pva_key = std::fs::read(dir.join("pva.key")).unwrap();
    let ro_key = std::fs::read(dir.join("ro.key")).unwrap();
    std::fs::write(dir.join("pva.key"), &ro_key).unwrap();
    assert!(matches!(Pki::load(&dir), Err(PkiError::KeyMismatch { .. })));
    std::fs::write(dir.join("pva.key"), &pva_key).unwrap();
    assert!(Pki::load(&dir).is_ok());

    // A role certificate from another PKI does not chain to this CI.
    let other = parent.path().join("other");
    pki::init(&other, false).unwrap();
    std::fs::copy(other.join("mno-b.pem"), dir.join("mno-b.pem")).unwrap();
    std::fs::copy(other.join("mno-b.key"), dir.join("mno-b.key")).unwrap();
    let err = Pki::load(&dir).unwrap_err();
    assert!(
        matches!(
            err,
            PkiError::Chain {
                source: ChainError::UnknownIssuer { .. } | ChainError::BadSignature { .. },
                ..
            }
        ),
        "{err}"
    );

    std::fs::remove_file(dir.join("ro.pem")).unwrap();
    assert!(matches!(Pki::load(&dir), Err(PkiError::Io { .. })));
}

#[test]
fn debug_output_holds_no_key_material() {
    let parent = tempfile::tempdir().unwrap();
    let pki = pki::init(&parent.path().join("pki"), false).unwrap();
    let debug = format!("{pki:?}");
    assert!(!debug.contains("PRIVATE KEY") && debug.contains("redacted"), "{debug}");
    assert!(pki.manufacturer_key_pem().contains("PRIVATE KEY"));
    assert!(pki.manufacturer_cert_pem().contains("CERTIFICATE"));
    assert_eq!(pki.manufacturer_trust_anchors().unwrap().len(), 1);
}

#[test]
fn role_keys_sign_es256_verifiable_with_the_certificate() {
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    let parent = tempfile::tempdir().unwrap();
    let pki = pki::init(&parent.path().join("pki"), false).unwrap();
    let pva = pki.role(&Role::Pva).unwrap();
    let signature =
        pva.signing_key().unwrap().sign(&ring::rand::SystemRandom::new(), b"EAR").unwrap();
    assert_eq!(signature.as_ref().len(), 64, "COSE ES256 wants r||s");
    let x5chain = pva.x5chain();
    let verified = protocol::x509::verify_chain(
        &x5chain[0],
        &[],
        &pki.ci_trust_anchors().unwrap(),
        &protocol::x509::ChainPolicy::at(std::time::SystemTime::now()),
    )
    .unwrap();
    assert_eq!(verified.subject, "O=tresor, CN=pva");
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&verified.spki_der).unwrap();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &spki.subject_public_key.data)
        .verify(b"EAR", signature.as_ref())
        .unwrap();
}

use x509_parser::prelude::FromDer;

#[tokio::test]
async fn roles_talk_mutual_tls_with_the_pki() {
    let parent = tempfile::tempdir().unwrap();
    let pki = pki::init(&parent.path().join("pki"), false).unwrap();
    let router = Router::new().route(
        "/whoami",
        get(|peer: PeerIdentity| async move { peer.common_name.unwrap_or_default() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let tls = pki.server_config(Role::Pva, PeerAuth::Mutual).unwrap();
    let server = tokio::spawn(transport::serve(listener, tls, router, async move {
        let _ = stopped.await;
    }));
    let url = format!("https://localhost:{port}/whoami");

    let mno_b = pki.client(Role::mno_b()).unwrap();
    assert_eq!(mno_b.get(&url).send().await.unwrap().text().await.unwrap(), "mno-b");
    assert!(pki.anonymous_client().unwrap().get(&url).send().await.is_err());

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[test]
fn any_operators_at_init_and_one_more_added_under_the_same_ci() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("pki");
    let pki = pki::init_with(&dir, false, &["mno-a", "acme-mobile", "op7"]).unwrap();
    assert_eq!(pki.operators().collect::<Vec<_>>(), ["acme-mobile", "mno-a", "op7"]);
    assert!(!dir.join("mno-b.pem").exists());
    assert!(matches!(pki.role(&Role::mno_b()), Err(PkiError::NoSuchOperator(_))));

    let ci_before = std::fs::read(dir.join("ci.pem")).unwrap();
    let pki = pki::add_operator(&dir, "mno-c").unwrap();
    assert_eq!(std::fs::read(dir.join("ci.pem")).unwrap(), ci_before, "the CI stays");
    assert_eq!(pki.operators().collect::<Vec<_>>(), ["acme-mobile", "mno-a", "mno-c", "op7"]);
    assert_eq!(mode(&dir.join("mno-c.key")), 0o600);
    let (ok, out) =
        openssl(&["verify", "-CAfile", "ci.pem", "-purpose", "sslclient", "mno-c.pem"], &dir);
    assert!(ok, "{out}");
    let creds = pki.role(&Role::operator("mno-c").unwrap()).unwrap();
    assert_eq!(
        protocol::role::CertifiedRole::of_der(creds.certificate_der()).unwrap(),
        protocol::role::CertifiedRole {
            role: protocol::role::Role::Operator,
            name: "mno-c".into()
        }
    );

    // Taken, reserved and malformed names are refused, and nothing is written for them.
    let before = std::fs::read_dir(&dir).unwrap().count();
    assert!(matches!(pki::add_operator(&dir, "mno-c"), Err(PkiError::OperatorExists { .. })));
    for bad in ["pva", "ro", "ci", "manufacturer", "Mno-D", "mno_d", "-x", ""] {
        assert!(matches!(pki::add_operator(&dir, bad), Err(PkiError::UnknownRole(_))), "{bad}");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), before);
    assert!(pki::init_with(&parent.path().join("none"), false, &[]).is_err());
    assert!(pki::init_with(&parent.path().join("twice"), false, &["a", "a"]).is_err());
}
