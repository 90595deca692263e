//! The PVA's HTTPS service end to end: `verifier::serve` on 127.0.0.1:0 with a
//! configuration file, a real swtpm device enrolled by a relying party with its client
//! certificate (the RO), answering a challenge and getting an EAR that verifies against the
//! CI root; enrolment refused to anonymous clients and other roles unless the PVA opens it;
//! errors as problem documents with stable types.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::time::SystemTime;

use protocol::Nonce;
use protocol::ear::{TrustTier, VerifiedEar};
use protocol::pva_api::{
    ActivateRequest, ActivateResponse, AppraiseRequest, AppraiseResponse, CBOR_MEDIA_TYPE,
    ChallengeRequest, ChallengeResponse, CredentialSecret, EnrolResponse, MAX_REQUEST_SIZE,
    Message, path,
};
use rustls_pki_types::CertificateDer;
use serde_bytes::ByteBuf;
use support::Lab;
use transport::Problem;

struct Server {
    base: String,
    /// Anonymous, as a device or anyone is.
    client: reqwest::Client,
    /// With the RO's client certificate.
    ro: reqwest::Client,
    pva: std::sync::Arc<verifier::Pva>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), verifier::Error>>,
    _dir: tempfile::TempDir,
}

fn write_config(lab: &Lab, dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("pva.pem"), &lab.pva_cert_pem).unwrap();
    std::fs::write(dir.join("pva.key"), &lab.pva_key_pem).unwrap();
    std::fs::write(dir.join("ci.pem"), &lab.ci.cert_pem).unwrap();
    std::fs::create_dir(dir.join("manufacturers")).unwrap();
    std::fs::write(dir.join("manufacturers/manufacturer.pem"), &lab.manufacturer.cert_pem).unwrap();
    std::fs::write(dir.join("policy.toml"), &lab.refvalues).unwrap();
    let config = r#"
database = "pva.sqlite"
tls_certificate = "pva.pem"
tls_key = "pva.key"
client_ca = "ci.pem"
signing_certificate = "pva.pem"
signing_key = "pva.key"
manufacturer_roots = "manufacturers"
policies = ["policy.toml"]
"#;
    std::fs::write(dir.join("pva.toml"), config).unwrap();
    dir.join("pva.toml")
}

async fn start(lab: &Lab) -> Server {
    start_with(lab, "").await
}

/// A client with a certificate of `role` under the lab's CI.
fn client_as(lab: &Lab, role: &str) -> reqwest::Client {
    let (chain, key) = lab.ci.role(role);
    let identity = transport::Identity::from_pem(chain.as_bytes(), key.as_bytes()).unwrap();
    transport::client::client(
        &[CertificateDer::from(lab.ci.der.clone())],
        Some(&identity),
        &transport::ServerRole::AnyRole,
    )
    .unwrap()
}

/// The PVA with `extra` appended to its configuration file.
async fn start_with(lab: &Lab, extra: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(lab, dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}{extra}")).unwrap();
    let config = verifier::Config::load(&path).unwrap();
    let (pva, tls) = verifier::start(config, verifier::OpenMode::CreateIfMissing).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(verifier::serve_pva(pva.clone(), tls, listener, async {
        let _ = stopped.await;
    }));
    let client = transport::client::client(
        &[CertificateDer::from(lab.ci.der.clone())],
        None,
        &transport::ServerRole::AnyRole,
    )
    .unwrap();
    Server { base, client, ro: client_as(lab, "ro"), pva, stop: Some(stop), task, _dir: dir }
}

impl Server {
    async fn post(&self, route: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
        self.post_as(&self.client, route, content_type, body).await
    }

    async fn post_as(
        &self,
        client: &reqwest::Client,
        route: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        client
            .post(format!("{}{route}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn call<Req: Message, Resp: Message>(
        &self,
        route: &str,
        req: &Req,
    ) -> Result<Resp, Problem> {
        self.call_as(&self.client, route, req).await
    }

    async fn call_as<Req: Message, Resp: Message>(
        &self,
        client: &reqwest::Client,
        route: &str,
        req: &Req,
    ) -> Result<Resp, Problem> {
        let resp = self.post_as(client, route, CBOR_MEDIA_TYPE, req.to_cbor().unwrap()).await;
        if resp.status().is_success() {
            assert_eq!(resp.headers()["content-type"], CBOR_MEDIA_TYPE);
            Ok(Resp::from_cbor(&resp.bytes().await.unwrap()).unwrap())
        } else {
            Err(problem(resp).await)
        }
    }

    /// [`Server::call_as`] in JSON both ways (`protocol::wire`).
    async fn call_json<Req: Message, Resp: Message>(
        &self,
        client: &reqwest::Client,
        route: &str,
        req: &Req,
    ) -> Result<Resp, Problem> {
        let resp = self.post_as(client, route, "application/json", req.to_json().unwrap()).await;
        if resp.status().is_success() {
            assert_eq!(resp.headers()["content-type"], "application/json");
            Ok(Resp::from_json(&resp.bytes().await.unwrap()).unwrap())
        } else {
            Err(problem(resp).await)
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        self.task.await.unwrap().unwrap();
    }
}

async fn problem(resp: reqwest::Response) -> Problem {
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let status = resp.status().as_u16();
    let p: Problem = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(p.status, status);
    p
}

/// The device's answer to its enrolment: TPM2_ActivateCredential on its swtpm.
fn activation(device: &mut support::Device, enrolled: &EnrolResponse) -> ActivateRequest {
    let secret = device
        .attester()
        .activate_credential(&enrolled.credential_blob, &enrolled.encrypted_secret)
        .unwrap();
    ActivateRequest {
        device_id: device.id.clone(),
        ak_name: enrolled.ak_name.clone(),
        secret: CredentialSecret::from_slice(&secret).unwrap(),
    }
}

fn pva_type(slug: &str) -> String {
    format!("https://tresor.example/problems/pva/{slug}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_enrols_and_is_appraised_over_https() {
    let lab = Lab::new();
    let server = start(&lab).await;
    let mut device = lab.device();

    let enrolled: EnrolResponse =
        server.call_as(&server.ro, path::ENROL, &device.enrol_request()).await.unwrap();
    let activate = activation(&mut device, &enrolled);
    let activated: ActivateResponse =
        server.call_as(&server.ro, path::ACTIVATE, &activate).await.unwrap();
    assert_eq!(activated.ak_name, enrolled.ak_name);
    let history = server.pva.enrolments(&device.id).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].requested_by.as_deref(), Some("ro"));

    let challenge = ChallengeRequest { device_id: device.id.clone(), policy_id: None };
    let ch: ChallengeResponse = server.call(path::CHALLENGE, &challenge).await.unwrap();
    assert_eq!(ch.pcr_selection, "sha256:0,2,4,8,9");
    let evidence = device.attester().evidence(&ch.nonce).unwrap();
    let req = AppraiseRequest { evidence: ByteBuf::from(evidence.to_cbor().unwrap()) };
    let appraised: AppraiseResponse = server.call(path::APPRAISE, &req).await.unwrap();
    assert_eq!(appraised.status, TrustTier::Affirming);
    assert!(appraised.failed_checks.is_empty());
    let ear = VerifiedEar::verify(
        &appraised.ear,
        &lab.ci.anchors(),
        SystemTime::now(),
        &device.id,
        Some(&ch.nonce),
    )
    .unwrap();
    assert_eq!(ear.status(), TrustTier::Affirming);

    // Replay: refused, no EAR, a problem naming the check.
    let p = server.call::<_, AppraiseResponse>(path::APPRAISE, &req).await.unwrap_err();
    assert_eq!((p.status, p.type_uri.as_str()), (401, pva_type("nonce-reused").as_str()));
    // A second activation of the used credential.
    let p = server
        .call_as::<_, ActivateResponse>(&server.ro, path::ACTIVATE, &activate)
        .await
        .unwrap_err();
    assert_eq!((p.status, p.type_uri), (404, pva_type("no-pending-enrolment")));
    // Evidence from an unknown nonce, and a challenge for an unknown device.
    let forged = device.attester().evidence(&Nonce::random().unwrap()).unwrap();
    let p = server
        .call::<_, AppraiseResponse>(
            path::APPRAISE,
            &AppraiseRequest { evidence: ByteBuf::from(forged.to_cbor().unwrap()) },
        )
        .await
        .unwrap_err();
    assert_eq!((p.status, p.type_uri), (401, pva_type("nonce-unknown")));
    let stranger = lab.device();
    let p = server
        .call::<_, ChallengeResponse>(
            path::CHALLENGE,
            &ChallengeRequest { device_id: stranger.id.clone(), policy_id: None },
        )
        .await
        .unwrap_err();
    assert_eq!((p.status, p.type_uri), (404, pva_type("unknown-device")));
    let p = server
        .call::<_, ChallengeResponse>(
            path::CHALLENGE,
            &ChallengeRequest { device_id: device.id.clone(), policy_id: Some("nope".into()) },
        )
        .await
        .unwrap_err();
    assert_eq!((p.status, p.type_uri), (404, pva_type("unknown-policy")));
    server.shutdown().await;
}

/// The same exchange in JSON, byte strings as base64url: what a client without CBOR sends.
/// The EAR it gets is the same COSE_Sign1, and strictness is the same as in CBOR.
#[tokio::test(flavor = "multi_thread")]
async fn a_device_enrols_and_is_appraised_in_json() {
    let lab = Lab::new();
    let server = start(&lab).await;
    let mut device = lab.device();

    let enrolled: EnrolResponse =
        server.call_json(&server.ro, path::ENROL, &device.enrol_request()).await.unwrap();
    let activate = activation(&mut device, &enrolled);
    let _: ActivateResponse =
        server.call_json(&server.ro, path::ACTIVATE, &activate).await.unwrap();
    let challenge = ChallengeRequest { device_id: device.id.clone(), policy_id: None };
    let ch: ChallengeResponse =
        server.call_json(&server.client, path::CHALLENGE, &challenge).await.unwrap();
    let evidence = device.attester().evidence(&ch.nonce).unwrap();
    let req = AppraiseRequest { evidence: ByteBuf::from(evidence.to_cbor().unwrap()) };
    // The body as a person would write it: base64url, no padding.
    let body =
        format!(r#"{{"evidence":"{}"}}"#, protocol::wire::base64url(&evidence.to_cbor().unwrap()));
    assert_eq!(body.as_bytes(), req.to_json().unwrap());
    let resp = server.post(path::APPRAISE, "application/json", body.into_bytes()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["status"], "affirming");
    let ear = protocol::wire::from_base64url(json["ear"].as_str().unwrap()).unwrap();
    let verified = VerifiedEar::verify(
        &ear,
        &lab.ci.anchors(),
        SystemTime::now(),
        &device.id,
        Some(&ch.nonce),
    )
    .unwrap();
    assert_eq!(verified.status(), TrustTier::Affirming);

    // A JSON request may ask for a CBOR answer, and a CBOR one for JSON.
    let asked = server
        .client
        .post(format!("{}{}", server.base, path::CHALLENGE))
        .header("content-type", "application/json")
        .header("accept", "application/cbor")
        .body(challenge.to_json().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(asked.headers()["content-type"], CBOR_MEDIA_TYPE);
    ChallengeResponse::from_cbor(&asked.bytes().await.unwrap()).unwrap();
    let asked = server
        .client
        .post(format!("{}{}", server.base, path::CHALLENGE))
        .header("content-type", CBOR_MEDIA_TYPE)
        .header("accept", "application/json")
        .body(challenge.to_cbor().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(asked.headers()["content-type"], "application/json");
    ChallengeResponse::from_json(&asked.bytes().await.unwrap()).unwrap();

    // Malformed JSON: a 400 that names the field; unknown fields refused; the size limit.
    let id = device.id.to_hex();
    for (body, field) in [
        (format!(r#"{{"device_id":"{id}","policy_id":7}}"#), "`policy_id`"),
        (format!(r#"{{"device_id":"{id}","extra":1}}"#), "extra"),
        (r#"{"device_id":"zz"}"#.to_owned(), "`device_id`"),
        (r#"{"device_id":"#.to_owned(), "JSON"),
    ] {
        let resp = server.post(path::CHALLENGE, "application/json", body.into_bytes()).await;
        assert_eq!(resp.status(), 400);
        let p = problem(resp).await;
        assert_eq!(p.type_uri, pva_type("malformed-request"));
        assert!(p.detail.as_deref().unwrap_or("").contains(field), "{p}");
    }
    let padded = format!(r#"{{"evidence":"{}=="}}"#, protocol::wire::base64url(&[1, 2, 3, 4]));
    let resp = server.post(path::APPRAISE, "application/json", padded.into_bytes()).await;
    let p = problem(resp).await;
    assert_eq!((p.status, p.type_uri), (400, pva_type("malformed-request")));
    assert!(p.detail.unwrap_or_default().contains("`evidence`"));
    let huge = vec![b' '; MAX_REQUEST_SIZE + 1];
    let resp = server.post(path::APPRAISE, "application/json", huge).await;
    assert_eq!(resp.status(), 413);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn enrolment_is_for_authenticated_relying_parties_unless_opened() {
    let lab = Lab::new();
    let server = start(&lab).await;
    let mut device = lab.device();
    let req = device.enrol_request();
    let client_certificate_required = "https://tresor.example/problems/client-certificate-required";

    // Anonymous: refused before the request is read, on both enrolment routes.
    let p = server.call::<_, EnrolResponse>(path::ENROL, &req).await.unwrap_err();
    assert_eq!((p.status, p.type_uri.as_str()), (401, client_certificate_required));
    let guess = ActivateRequest {
        device_id: device.id.clone(),
        ak_name: ByteBuf::from(device.attester().ak_name().unwrap()),
        secret: CredentialSecret::new([0; 32]),
    };
    let p = server.call::<_, ActivateResponse>(path::ACTIVATE, &guess).await.unwrap_err();
    assert_eq!((p.status, p.type_uri.as_str()), (401, client_certificate_required));
    // A certificate under the CI, of a role that does not enrol devices.
    let other = client_as(&lab, "pva");
    let p = server.call_as::<_, EnrolResponse>(&other, path::ENROL, &req).await.unwrap_err();
    assert_eq!((p.status, p.type_uri.as_str()), (403, transport::problem::ROLE_NOT_ALLOWED));
    // Nothing of it reached the store.
    assert!(server.pva.enrolments(&device.id).unwrap().is_empty());
    // An operator may.
    let mno_b = client_as(&lab, "mno-b");
    let enrolled: EnrolResponse = server.call_as(&mno_b, path::ENROL, &req).await.unwrap();
    let activate = activation(&mut device, &enrolled);
    let _: ActivateResponse = server.call_as(&mno_b, path::ACTIVATE, &activate).await.unwrap();
    let history = server.pva.enrolments(&device.id).unwrap();
    assert_eq!(history[0].requested_by.as_deref(), Some("mno-b"));
    server.shutdown().await;

    // `open_enrolment = true`: anyone.
    let server = start_with(&lab, "open_enrolment = true\n").await;
    let enrolled: EnrolResponse = server.call(path::ENROL, &req).await.unwrap();
    let activate = activation(&mut device, &enrolled);
    let _: ActivateResponse = server.call(path::ACTIVATE, &activate).await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clean_problems() {
    let lab = Lab::new();
    let server = start(&lab).await;

    let health =
        server.client.get(format!("{}{}", server.base, path::HEALTH)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    let resp = server.post(path::APPRAISE, "text/plain", b"{}".to_vec()).await;
    assert_eq!(resp.status(), 415);
    assert_eq!(problem(resp).await.type_uri, pva_type("unsupported-media-type"));

    for garbage in [vec![], vec![0xFF; 10], b"not cbor at all".to_vec()] {
        let resp = server.post_as(&server.ro, path::ENROL, CBOR_MEDIA_TYPE, garbage).await;
        assert_eq!(resp.status(), 400);
        assert_eq!(problem(resp).await.type_uri, pva_type("malformed-request"));
    }
    // Well-formed CBOR, not evidence.
    let req = AppraiseRequest { evidence: ByteBuf::from(vec![0xA0]) };
    let p = server.call::<_, AppraiseResponse>(path::APPRAISE, &req).await.unwrap_err();
    assert_eq!((p.status, p.type_uri), (400, pva_type("evidence-malformed")));

    let resp = server.post(path::APPRAISE, CBOR_MEDIA_TYPE, vec![0; MAX_REQUEST_SIZE + 1]).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(problem(resp).await.status, 413);

    let resp = server.client.get(format!("{}/v1/nothing", server.base)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(problem(resp).await.type_uri, pva_type("not-found"));
    let resp =
        server.client.get(format!("{}{}", server.base, path::APPRAISE)).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(problem(resp).await.type_uri, pva_type("method-not-allowed"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pva_without_its_signing_key_does_not_start() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&lab, dir.path());
    std::fs::remove_file(dir.path().join("pva.key")).unwrap();
    // TLS uses the same key: point it elsewhere so that only the signing key is missing.
    let (tls_cert, tls_key) = lab.ci.role("pva-tls");
    std::fs::write(dir.path().join("tls.pem"), tls_cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), tls_key).unwrap();
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "tls_certificate = \"pva.pem\"\ntls_key = \"pva.key\"",
        "tls_certificate = \"tls.pem\"\ntls_key = \"tls.key\"",
    );
    std::fs::write(&path, text).unwrap();
    let config = verifier::Config::load(&path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = verifier::serve(config, listener, std::future::pending()).await;
    assert!(matches!(result, Err(verifier::Error::SigningKey(_))), "{result:?}");

    // A key that is not the certificate's.
    let (_, other_key) = lab.ci.role("someone");
    std::fs::write(dir.path().join("pva.key"), other_key).unwrap();
    let config = verifier::Config::load(&path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = verifier::serve(config, listener, std::future::pending()).await;
    assert!(matches!(result, Err(verifier::Error::SigningKey(_))), "{result:?}");
}

#[tokio::test]
async fn policies_reload_for_the_pvas_own_certificate_and_only_whole() {
    let lab = Lab::new();
    let server = start(&lab).await;
    let dir = server._dir.path().to_owned();
    let first = server.pva.default_policy();
    let url = format!("{}{}", server.base, path::RELOAD_POLICIES);
    let reload = |client: reqwest::Client| {
        let url = url.clone();
        async move { client.post(url).send().await.unwrap() }
    };

    // Anonymous clients and other roles are refused, and nothing changes.
    let anonymous = reload(server.client.clone()).await;
    assert_eq!(problem(anonymous).await.type_uri, transport::problem::CLIENT_CERTIFICATE_REQUIRED);
    let by_ro = reload(server.ro.clone()).await;
    assert_eq!(problem(by_ro).await.type_uri, transport::problem::ROLE_NOT_ALLOWED);

    // A second policy, made the default: reloaded by the PVA's own certificate.
    let second = lab.refvalues.replacen(&format!("\"{first}\""), "\"second\"", 1);
    assert_ne!(second, lab.refvalues, "the policy id {first} is in the reference values");
    std::fs::write(dir.join("second.toml"), &second).unwrap();
    let config = std::fs::read_to_string(dir.join("pva.toml")).unwrap().replace(
        r#"policies = ["policy.toml"]"#,
        "policies = [\"policy.toml\", \"second.toml\"]\ndefault_policy = \"second\"",
    );
    std::fs::write(dir.join("pva.toml"), &config).unwrap();
    let ok = reload(client_as(&lab, "pva")).await;
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["default"], "second");
    // By id.
    assert_eq!(body["policies"], serde_json::json!(["second", first.clone()]));
    assert_eq!(server.pva.default_policy(), "second");

    // A policy file that does not load: refused whole, the policies stay as they were.
    std::fs::write(dir.join("second.toml"), "not reference values").unwrap();
    let refused = reload(client_as(&lab, "pva")).await;
    assert_eq!(refused.status(), 422);
    let p = problem(refused).await;
    assert!(p.type_uri.ends_with("/pva/reload-refused"), "{}", p.type_uri);
    assert_eq!(server.pva.policy_ids(), ["second".to_owned(), first.clone()]);
    assert!(server.pva.policy("second").is_some());
    server.shutdown().await;
}

/// The OpenAPI document (`/openapi.json`, no client certificate) and the router agree:
/// every documented operation is served, an undocumented method gets 405, and the document
/// is OpenAPI 3.1 with both media types on every CBOR body.
#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_matches_the_router() {
    let lab = Lab::new();
    let server = start(&lab).await;
    let resp = server.client.get(format!("{}/openapi.json", server.base)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let served: serde_json::Value = resp.json().await.unwrap();
    let doc = verifier::service::openapi();
    assert_eq!(served, serde_json::to_value(&doc).unwrap());
    assert_eq!(transport::openapi::check_structure(&served), Vec::<String>::new());
    let device = lab.device().id.to_hex();
    let wrong = transport::openapi::check_served(
        &server.ro,
        &server.base,
        &doc,
        &[("device", device.as_str())],
    )
    .await;
    assert_eq!(wrong, Vec::<String>::new());
    for route in [path::ENROL, path::ACTIVATE, path::CHALLENGE, path::APPRAISE] {
        let body = &served["paths"][route]["post"]["requestBody"]["content"];
        assert!(body["application/cbor"].is_object() && body["application/json"].is_object());
        let ok = &served["paths"][route]["post"]["responses"]["200"]["content"];
        assert!(ok["application/cbor"].is_object() && ok["application/json"].is_object());
        assert!(served["paths"][route]["post"]["responses"]["default"].is_object());
    }
    assert_eq!(
        served["paths"][path::ENROL]["post"]["security"][0]["mutualTLS"],
        serde_json::json!([])
    );
    assert_eq!(served["components"]["securitySchemes"]["mutualTLS"]["type"], "mutualTLS");
    let enrol = &served["components"]["schemas"]["EnrolRequest"];
    assert_eq!(enrol["additionalProperties"], false);
    assert_eq!(enrol["properties"]["ek_certificate"]["$ref"], "#/components/schemas/Base64Url");
    server.shutdown().await;
}
