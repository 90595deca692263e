//! The transport over real loopback HTTPS: certificates made with rcgen (a CI root, role
//! certificates under it, and a stranger CA), the serve loop in-process, reqwest as client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use transport::problem::{PAYLOAD_TOO_LARGE, problem_type};
use transport::{ClientAuth, Error, Identity, PeerIdentity, Problem, ServeOptions};

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    cert: CertificateDer<'static>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap().der().clone();
    Ca { params, key, cert }
}

fn identity(ca: &Ca, role: &str) -> Identity {
    let mut params = CertificateParams::new(vec![
        protocol::role::dns_name(role),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ])
    .unwrap();
    params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        &[2, 5, 29, 32],
        protocol::role::Role::of_lab_name(role).policies_der(),
    )];

    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, role);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &Issuer::from_params(&ca.params, &ca.key)).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Identity::new(vec![cert.der().clone()], key).unwrap()
}

fn router() -> Router {
    let app = Router::new()
        .route(
            "/whoami",
            get(|peer: PeerIdentity| async move { peer.common_name.unwrap_or_default() }),
        )
        .route(
            "/maybe",
            get(|peer: Option<PeerIdentity>| async move {
                peer.and_then(|p| p.common_name).unwrap_or("anonymous".into())
            }),
        )
        .route(
            "/mno-b-only",
            get(|peer: PeerIdentity| async move {
                peer.require(&[protocol::role::Expected::named(
                    protocol::role::Role::Operator,
                    "mno-b",
                )])
                .map(str::to_owned)
            }),
        )
        .route(
            "/problem",
            get(|| async {
                Problem::new(
                    StatusCode::CONFLICT,
                    problem_type("nonce-reused"),
                    "Nonce already used",
                )
                .with_detail("nonce 00ff was used before")
            }),
        )
        .route("/echo", post(|body: axum::body::Bytes| async move { body.len().to_string() }));
    transport::limit_body(app, 1024)
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(identity: &Identity, auth: ClientAuth, options: ServeOptions) -> Self {
        let tls = transport::server_config(identity, auth).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(transport::serve_with(
            listener,
            tls,
            router(),
            async move {
                let _ = stopped.await;
            },
            options,
        ));
        Self { addr, stop: Some(stop), task }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.task).await.unwrap().unwrap().unwrap();
    }
}

fn client(root: &CertificateDer<'static>, id: Option<&Identity>) -> reqwest::Client {
    transport::client::client(std::slice::from_ref(root), id, &transport::ServerRole::AnyRole)
        .unwrap()
}

#[tokio::test]
async fn mutual_tls_admits_a_ci_certificate_and_the_handler_sees_the_peer() {
    let ci = ca("CI");
    let server = Server::start(
        &identity(&ci, "pva"),
        ClientAuth::Required(vec![ci.cert.clone()]),
        ServeOptions::default(),
    )
    .await;
    let mno_b = client(&ci.cert, Some(&identity(&ci, "mno-b")));
    let resp = transport::client::check(mno_b.get(server.url("/whoami")).send().await.unwrap())
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "mno-b");
    let resp = mno_b.get(server.url("/mno-b-only")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // An IP address SAN works as well as the DNS name.
    let url = format!("https://127.0.0.1:{}/whoami", server.addr.port());
    assert_eq!(mno_b.get(url).send().await.unwrap().text().await.unwrap(), "mno-b");

    let mno_a = client(&ci.cert, Some(&identity(&ci, "mno-a")));
    let err = transport::client::check(mno_a.get(server.url("/mno-b-only")).send().await.unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Problem(ref p) if p.status == 403), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn required_client_certificate_missing_or_foreign_is_refused() {
    let ci = ca("CI");
    let stranger = ca("stranger");
    let server = Server::start(
        &identity(&ci, "ro"),
        ClientAuth::Required(vec![ci.cert.clone()]),
        ServeOptions::default(),
    )
    .await;

    let anonymous = client(&ci.cert, None);
    assert!(anonymous.get(server.url("/whoami")).send().await.is_err());

    let foreign = client(&ci.cert, Some(&identity(&stranger, "mno-b")));
    assert!(foreign.get(server.url("/whoami")).send().await.is_err());

    // The server survived both failed handshakes.
    let ok = client(&ci.cert, Some(&identity(&ci, "mno-a")));
    assert_eq!(ok.get(server.url("/whoami")).send().await.unwrap().text().await.unwrap(), "mno-a");
    server.stop().await;
}

/// Issue 12, attack 1: every role under the CI used to pass for every other. A client that
/// names the role it expects refuses another role's certificate in the handshake, whatever
/// the chain; and a certificate without a role passes for nothing, not even "any role".
#[tokio::test]
async fn client_refuses_a_server_of_another_role_under_the_same_ci() {
    use protocol::role::{Expected, Role};
    let ci = ca("CI");
    let pva = Server::start(&identity(&ci, "pva"), ClientAuth::None, ServeOptions::default()).await;
    let expecting = |expected: Expected| {
        let server = transport::ServerRole::Expected(expected);
        transport::client::client(std::slice::from_ref(&ci.cert), None, &server).unwrap()
    };
    let as_ro = expecting(Expected::role(Role::Ro));
    let err = as_ro.get(pva.url("/maybe")).send().await.unwrap_err();
    assert!(format!("{err:?}").contains("WrongRole { expected: Ro, found: Pva"), "{err:?}");
    let as_other_pva = expecting(Expected::named(Role::Pva, "pva-2"));
    assert!(as_other_pva.get(pva.url("/maybe")).send().await.is_err());
    let as_pva = expecting(Expected::named(Role::Pva, "pva"));
    assert!(as_pva.get(pva.url("/maybe")).send().await.is_ok());
    pva.stop().await;

    let mut bare = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    bare.distinguished_name.push(DnType::CommonName, "ro");
    bare.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = bare.signed_by(&key, &Issuer::from_params(&ci.params, &ci.key)).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let roleless = Identity::new(vec![cert.der().clone()], key).unwrap();
    let server = Server::start(&roleless, ClientAuth::None, ServeOptions::default()).await;
    let err = client(&ci.cert, None).get(server.url("/maybe")).send().await.unwrap_err();
    assert!(format!("{err:?}").contains("NoRole"), "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn client_refuses_a_server_certificate_from_another_ca() {
    let ci = ca("CI");
    let stranger = ca("stranger");
    let server =
        Server::start(&identity(&stranger, "pva"), ClientAuth::None, ServeOptions::default()).await;
    let c = client(&ci.cert, None);
    let err = c.get(server.url("/maybe")).send().await.unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn optional_client_authentication() {
    let ci = ca("CI");
    let server = Server::start(
        &identity(&ci, "ro"),
        ClientAuth::Optional(vec![ci.cert.clone()]),
        ServeOptions::default(),
    )
    .await;
    let device = client(&ci.cert, None);
    assert_eq!(
        device.get(server.url("/maybe")).send().await.unwrap().text().await.unwrap(),
        "anonymous"
    );
    let err = transport::client::check(device.get(server.url("/whoami")).send().await.unwrap())
        .await
        .unwrap_err();
    let Error::Problem(p) = err else { panic!("{err}") };
    assert_eq!(p.status, 401);
    assert_eq!(p.type_uri, transport::problem::CLIENT_CERTIFICATE_REQUIRED);
    let mno = client(&ci.cert, Some(&identity(&ci, "mno-a")));
    assert_eq!(mno.get(server.url("/maybe")).send().await.unwrap().text().await.unwrap(), "mno-a");
    server.stop().await;
}

#[tokio::test]
async fn problem_documents_round_trip() {
    let ci = ca("CI");
    let server =
        Server::start(&identity(&ci, "pva"), ClientAuth::None, ServeOptions::default()).await;
    let c = client(&ci.cert, None);
    let resp = c.get(server.url("/problem")).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let err = transport::client::json::<serde_json::Value>(resp).await.unwrap_err();
    let Error::Problem(p) = err else { panic!("{err}") };
    assert_eq!(
        p,
        Problem::new(StatusCode::CONFLICT, problem_type("nonce-reused"), "Nonce already used")
            .with_detail("nonce 00ff was used before")
    );
    let err = transport::client::check(c.get(server.url("/nowhere")).send().await.unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Status { status: 404 }), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn oversized_body_gets_a_413_problem() {
    let ci = ca("CI");
    let server =
        Server::start(&identity(&ci, "pva"), ClientAuth::None, ServeOptions::default()).await;
    let c = client(&ci.cert, None);
    let ok = c.post(server.url("/echo")).body(vec![0u8; 1024]).send().await.unwrap();
    assert_eq!(ok.text().await.unwrap(), "1024");
    let resp = c.post(server.url("/echo")).body(vec![0u8; 1025]).send().await.unwrap();
    let err = transport::client::check(resp).await.unwrap_err();
    let Error::Problem(p) = err else { panic!("{err}") };
    assert_eq!((p.status, p.type_uri.as_str()), (413, PAYLOAD_TOO_LARGE));
    server.stop().await;
}

#[tokio::test]
async fn plain_http_urls_are_refused_by_the_client() {
    let ci = ca("CI");
    let c = client(&ci.cert, None);
    assert!(c.get("http://127.0.0.1:1/").send().await.is_err());
}

#[tokio::test]
async fn stalled_handshakes_time_out_and_do_not_stop_the_server() {
    let ci = ca("CI");
    let options =
        ServeOptions { handshake_timeout: Duration::from_millis(200), ..ServeOptions::default() };
    let server = Server::start(&identity(&ci, "pva"), ClientAuth::None, options).await;

    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the server should close a connection that never handshakes");

    let mut garbage = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();

    let c = client(&ci.cert, None);
    assert_eq!(c.get(server.url("/maybe")).send().await.unwrap().status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_returns_with_an_idle_keep_alive_connection_open() {
    let ci = ca("CI");
    let server =
        Server::start(&identity(&ci, "pva"), ClientAuth::None, ServeOptions::default()).await;
    let c = client(&ci.cert, None);
    assert_eq!(c.get(server.url("/maybe")).send().await.unwrap().status(), StatusCode::OK);
    let addr = server.addr;
    server.stop().await;
    assert!(c.get(format!("https://localhost:{}/maybe", addr.port())).send().await.is_err());
}

#[test]
fn identity_debug_hides_the_key_and_empty_inputs_are_errors() {
    let ci = ca("CI");
    let id = identity(&ci, "pva");
    assert!(!format!("{id:?}").contains("BEGIN"));
    assert!(format!("{id:?}").contains("redacted"));
    assert!(matches!(
        transport::server_config(&id, ClientAuth::Required(vec![])),
        Err(Error::NoTrustAnchors)
    ));
    assert!(matches!(
        transport::client_config(&[], None, &transport::ServerRole::AnyRole),
        Err(Error::NoTrustAnchors)
    ));
    assert!(matches!(
        transport::tls::certificates_from_pem(b"nothing"),
        Err(Error::NoCertificate { .. })
    ));
    let other = identity(&ci, "ro");
    let mismatched = Identity::new(
        id.chain().to_vec(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            KeyPair::generate().unwrap().serialize_der(),
        )),
    )
    .unwrap();
    assert!(transport::server_config(&mismatched, ClientAuth::None).is_err());
    assert!(transport::server_config(&other, ClientAuth::None).is_ok());
}

/// A TLS connection to `server` as a client with no certificate, for writing raw HTTP.
async fn raw_tls(
    ci: &Ca,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = transport::client_config(
        &[CertificateDer::from(ci.cert.to_vec())],
        None,
        &transport::ServerRole::AnyRole,
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// Everything the server sends until it closes the connection (or `within` passes).
async fn read_to_close(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    within: Duration,
) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_stalled_request_head_is_cut_off() {
    let ci = ca("CI");
    let options =
        ServeOptions { header_read_timeout: Duration::from_millis(300), ..ServeOptions::default() };
    let server = Server::start(&identity(&ci, "pva"), ClientAuth::None, options).await;
    let mut tls = raw_tls(&ci, server.addr).await;
    tls.write_all(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Ty").await.unwrap();
    let started = std::time::Instant::now();
    let answer = read_to_close(&mut tls, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(3), "the head was not cut off in time");
    assert!(!answer.contains("200 OK"), "{answer}");
    // The server goes on serving others.
    let c = client(&ci.cert, None);
    assert_eq!(c.get(server.url("/maybe")).send().await.unwrap().status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_and_the_connection_closes() {
    let ci = ca("CI");
    let options =
        ServeOptions { body_read_timeout: Duration::from_millis(300), ..ServeOptions::default() };
    let server = Server::start(&identity(&ci, "pva"), ClientAuth::None, options).await;
    let mut tls = raw_tls(&ci, server.addr).await;
    tls.write_all(
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/cbor\r\nContent-Length: 100\r\n\r\nonly a part",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let answer = read_to_close(&mut tls, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(3), "the body was not cut off in time");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("problem+json") && answer.contains("request-timeout"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    // A body sent in time is served.
    let c = client(&ci.cert, None);
    let r = c.post(server.url("/echo")).body(vec![1u8; 100]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    server.stop().await;
}
