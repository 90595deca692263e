//! The routes docs/flow.md and docs/pva-api.md name exist in the roles' OpenAPI documents
//! (PVA, RO, MNO), which are generated from the routers: a route in the prose that no
//! server has is a documentation bug (issue 13). Also every document is OpenAPI 3.1 shaped
//! and, when `openapi-spec-validator` is installed in the project's Python
//! (`$TRESOR_COSE_PYTHON`, `make deps`), valid by it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

fn documents() -> Vec<(&'static str, serde_json::Value)> {
    [
        ("pva", verifier::service::openapi()),
        ("ro", provisioning::ro::openapi()),
        ("mno", provisioning::mno::openapi()),
    ]
    .into_iter()
    .map(|(name, doc)| (name, serde_json::to_value(&doc).unwrap()))
    .collect()
}

/// Whether `route` (concrete or with `{placeholders}` or `<placeholders>`) matches
/// `template` segment by segment, a placeholder matching any one segment.
fn matches(template: &str, route: &str) -> bool {
    let t: Vec<&str> = template.trim_end_matches('/').split('/').collect();
    let r: Vec<&str> = route.trim_end_matches('/').split('/').collect();
    let placeholder = |s: &str| s.starts_with('{') || s.starts_with('<') || s.contains('…');
    t.len() == r.len() && t.iter().zip(&r).all(|(t, r)| t == r || placeholder(t) || placeholder(r))
}

/// The `/v1/…` routes named in a Markdown file (in URLs too).
fn routes_in(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in markdown.match_indices("/v1/") {
        let route: String = markdown[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || "/{}<>_-…".contains(*c))
            .collect();
        out.push(route.trim_end_matches(['/', '-', '_']).to_owned());
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_route_the_docs_name_is_served() {
    let docs = documents();
    let templates: Vec<String> = docs
        .iter()
        .flat_map(|(_, d)| d["paths"].as_object().unwrap().keys().cloned().collect::<Vec<_>>())
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut missing = Vec::new();
    for file in ["docs/flow.md", "docs/pva-api.md", "docs/campaigns.md", "docs/operations.md"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let routes = routes_in(&text);
        assert!(!routes.is_empty(), "{file} names no routes");
        for route in routes {
            if !templates.iter().any(|t| matches(t, &route)) {
                missing.push(format!("{file}: {route}"));
            }
        }
    }
    assert_eq!(missing, Vec::<String>::new(), "routes the docs name that no role serves");
}

#[test]
fn the_documents_are_openapi_3_1() {
    for (name, doc) in documents() {
        assert_eq!(doc["openapi"], "3.1.0", "{name}");
        assert_eq!(transport::openapi::check_structure(&doc), Vec::<String>::new(), "{name}");
        assert!(doc["paths"]["/openapi.json"]["get"].is_object(), "{name}");
    }
}

/// openapi-spec-validator (the Python reference validator), if the project's venv has it.
#[test]
fn the_documents_validate_with_openapi_spec_validator() {
    let python = std::env::var("TRESOR_COSE_PYTHON").unwrap_or_else(|_| "python3".into());
    let has = std::process::Command::new(&python)
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        if std::env::var("TRESOR_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("{python} has no openapi_spec_validator");
        }
        eprintln!("SKIPPED: {python} has no openapi-spec-validator (make deps installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, doc) in documents() {
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        let out = std::process::Command::new(&python)
            .args([
                "-c",
                "import json,sys; from openapi_spec_validator import validate; \
                 from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator; \
                 validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn route_matching() {
    assert!(matches("/v1/devices/{device}/task", "/v1/devices/{id}/task"));
    assert!(matches("/v1/devices/{device}/task", "/v1/devices/00ab/task"));
    assert!(!matches("/v1/devices/{device}/task", "/v1/devices/00ab/tasks"));
    assert_eq!(
        routes_in("POST `/v1/enrol` then https://x/v1/challenge and /v1/devices/{id}/task."),
        ["/v1/challenge", "/v1/devices/{id}/task", "/v1/enrol"]
    );
}

/// The RO's document and its router agree: a running RO (the lab's) serves exactly
/// `provisioning::ro::openapi()` at `/openapi.json`, and every operation it documents is
/// served (not the 404 fallback, not 405), device routes and campaign routes alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ro_serves_what_its_document_says() {
    let dir = tempfile::tempdir().unwrap();
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/image");
    let lab = tresor::lab::Lab::start(dir.path(), &image).await.unwrap();
    // A short timeout: the event stream answers 200 and then never ends.
    let reader = lab.pki.client(provisioning::pki::Role::Ro).unwrap();
    let served: serde_json::Value = reader
        .get(format!("{}/openapi.json", lab.urls.ro))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let doc = provisioning::ro::openapi();
    assert_eq!(served, serde_json::to_value(&doc).unwrap());
    let probe = reqwest::Client::builder()
        .use_preconfigured_tls(
            transport::tls::client_config(
                std::slice::from_ref(lab.pki.ci_root()),
                Some(lab.pki.role(&provisioning::pki::Role::Ro).unwrap().identity()),
                &transport::ServerRole::AnyRole,
            )
            .unwrap(),
        )
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap();
    let device = "000b".to_owned() + &"ab".repeat(32);
    let params = [("device", device.as_str()), ("id", "c-0000000000000000")];
    let wrong = transport::openapi::check_served(&probe, &lab.urls.ro, &doc, &params).await;
    assert_eq!(wrong, Vec::<String>::new());
    lab.stop().await;
}
