//! OpenAPI 3.1 documents of the roles' APIs, served at [`PATH`] by every role. Each role
//! declares its routes once, with utoipa-axum's `OpenApiRouter` and `routes!`, so the axum
//! router and the document come from the same declarations and cannot drift apart; this
//! module adds what every role shares: the problem document (RFC 9457) as every
//! operation's default response, the security schemes (mutual TLS under the CI; the device
//! channel's AK-signed requests, `protocol::device_auth`), and the route that serves it.
//! [`PATH`] itself needs no client certificate.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder,
};
use utoipa::{PartialSchema, ToSchema};

use crate::problem::{PROBLEM_JSON, Problem};

/// Where every role serves its document.
pub const PATH: &str = "/openapi.json";
/// Security scheme: a TLS client certificate under the CI whose role the route admits.
pub const MUTUAL_TLS: &str = "mutualTLS";
/// Security scheme: the RO-issued nonce header of a device request.
pub const DEVICE_NONCE: &str = "deviceNonce";
/// Security scheme: the AK's signature header over the device request's statement.
pub const DEVICE_SIGNATURE: &str = "deviceSignature";
/// Media types of the API bodies, for `#[utoipa::path]` declarations.
pub const CBOR: &str = protocol::wire::CBOR_MEDIA_TYPE;
pub const JSON: &str = protocol::wire::JSON_MEDIA_TYPE;

/// Completes a role's document: title and description, the problem schema as the default
/// response of every operation, the security schemes, and [`PATH`] itself.
pub fn finish(mut doc: OpenApi, title: &str, description: &str) -> OpenApi {
    doc.info = InfoBuilder::new()
        .title(title)
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(description))
        .build();
    let problem = problem_response();
    for item in doc.paths.paths.values_mut() {
        for operation in operations(item) {
            operation.responses.responses.entry("default".into()).or_insert(problem.clone());
        }
    }
    let document = OperationBuilder::new()
        .operation_id(Some("openapi"))
        .summary(Some("This document (OpenAPI 3.1); no client certificate needed"))
        .response(
            "200",
            ResponseBuilder::new()
                .description("The OpenAPI document")
                .content("application/json", ContentBuilder::new().build())
                .build(),
        )
        .build();
    doc.paths.paths.insert(PATH.into(), PathItem::new(HttpMethod::Get, document));
    let mut components = doc.components.take().unwrap_or_else(|| ComponentsBuilder::new().build());
    components.schemas.insert(Problem::name().into_owned(), Problem::schema());
    components.security_schemes.insert(
        MUTUAL_TLS.into(),
        SecurityScheme::MutualTls {
            description: Some(
                "A TLS client certificate issued under the CI, whose role (tresor role OID) \
                 the route admits; others get 401 client-certificate-required or 403 \
                 role-not-allowed"
                    .into(),
            ),
            extensions: None,
        },
    );
    components.security_schemes.insert(
        DEVICE_NONCE.into(),
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            protocol::device_auth::NONCE_HEADER,
            "The nonce (hex) from the RO's last answer's next-nonce header: single use",
        ))),
    );
    components.security_schemes.insert(
        DEVICE_SIGNATURE.into(),
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            protocol::device_auth::SIGNATURE_HEADER,
            "TPM2_Sign by the device's bound AK (hex TPMT_SIGNATURE) over the CBOR request \
             statement {kind, device_id, method, path, nonce, SHA-256 of the body bytes as \
             sent}, in either body format",
        ))),
    );
    doc.components = Some(components);
    doc
}

/// `router` with [`PATH`] serving `doc` (encoded once).
pub fn serve_document<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    doc: &OpenApi,
) -> Router<S> {
    let bytes = Bytes::from(doc.to_json().unwrap_or_default().into_bytes());
    router.route(
        PATH,
        get(move || {
            let bytes = bytes.clone();
            async move {
                let mut response = bytes.into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
        }),
    )
}

/// Every (method, path) the document names, paths as written in it.
pub fn operations_of(doc: &OpenApi) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        let methods = [
            ("GET", item.get.is_some()),
            ("PUT", item.put.is_some()),
            ("POST", item.post.is_some()),
            ("DELETE", item.delete.is_some()),
            ("OPTIONS", item.options.is_some()),
            ("HEAD", item.head.is_some()),
            ("PATCH", item.patch.is_some()),
            ("TRACE", item.trace.is_some()),
        ];
        out.extend(methods.into_iter().filter(|(_, has)| *has).map(|(m, _)| (m, path.clone())));
    }
    out
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn problem_response() -> RefOr<Response> {
    ResponseBuilder::new()
        .description(
            "A problem document (RFC 9457) whose type URI names the failure \
             (https://tresor.example/problems/…); 413 over the body limit, 415 for a body \
             neither CBOR nor JSON",
        )
        .content(
            PROBLEM_JSON,
            ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
        )
        .build()
        .into()
}

/// Checks a running role against its document, for the roles' tests: every documented
/// method and path (with `{params}` replaced from `params`) is served (neither 405 nor the
/// fallback's 404), and a method the document does not name for a path gets 405. Answers
/// the refusals, each as `METHOD path: status`.
pub async fn check_served(
    client: &reqwest::Client,
    base: &str,
    doc: &OpenApi,
    params: &[(&str, &str)],
) -> Vec<String> {
    let mut wrong = Vec::new();
    let concrete = |path: &str| {
        params
            .iter()
            .fold(path.to_owned(), |p, (name, value)| p.replace(&format!("{{{name}}}"), value))
    };
    let ops = operations_of(doc);
    for (method, path) in &ops {
        let url = format!("{base}{}", concrete(path));
        let Ok(method) = method.parse::<reqwest::Method>() else { continue };
        let sent = client.request(method.clone(), &url).send().await;
        let Ok(response) = sent else {
            wrong.push(format!("{method} {path}: not answered"));
            continue;
        };
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        let fallback = status == 404
            && serde_json::from_slice::<Problem>(&body)
                .map_or(true, |p| p.type_uri.ends_with("/not-found"));
        if status == 405 || fallback {
            wrong.push(format!("{method} {path}: {status}"));
        }
    }
    for (_, path) in &ops {
        if ops.iter().any(|(m, p)| p == path && *m == "DELETE") {
            continue;
        }
        let url = format!("{base}{}", concrete(path));
        match client.delete(&url).send().await {
            Ok(r) if r.status().as_u16() == 405 => {}
            Ok(r) => wrong.push(format!("DELETE {path} (undocumented): {}", r.status().as_u16())),
            Err(e) => wrong.push(format!("DELETE {path} (undocumented): {e}")),
        }
    }
    wrong
}

/// The structure OpenAPI 3.1 requires of a document (`openapi` 3.1.x, `info` with title
/// and version, `paths` whose operations all have responses, every `$ref` resolving to a
/// component), checked on its JSON; answers what is wrong.
pub fn check_structure(doc: &serde_json::Value) -> Vec<String> {
    let mut wrong = Vec::new();
    if !doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")) {
        wrong.push(format!("openapi is {}", doc["openapi"]));
    }
    for field in ["title", "version"] {
        if !doc["info"][field].is_string() {
            wrong.push(format!("info.{field} missing"));
        }
    }
    let Some(paths) = doc["paths"].as_object() else {
        wrong.push("no paths".into());
        return wrong;
    };
    for (path, item) in paths {
        if !path.starts_with('/') {
            wrong.push(format!("path {path} does not start with /"));
        }
        for (method, op) in item.as_object().into_iter().flatten() {
            if op["responses"].as_object().is_none_or(|r| r.is_empty()) {
                wrong.push(format!("{method} {path}: no responses"));
            }
        }
    }
    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    for r in refs {
        let resolved = r
            .strip_prefix("#/")
            .map(|pointer| doc.pointer(&format!("/{pointer}")).is_some())
            .unwrap_or(false);
        if !resolved {
            wrong.push(format!("$ref {r} does not resolve"));
        }
    }
    wrong
}

fn collect_refs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", serde_json::Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
