//! RFC 7807 (RFC 9457) problem details: every tresor HTTP error is an
//! `application/problem+json` document with a stable `type` per failure, so a client can
//! branch on the type and a log shows what the peer objected to. Also the request body limit,
//! whose 413 answers are problem documents too.

use std::fmt;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The media type of a problem document (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Prefix of tresor's problem type URIs; `problem_type("payload-too-large")` names one.
pub const PROBLEM_TYPE_BASE: &str = "https://tresor.example/problems/";

/// Problem type of a request body over the limit.
pub const PAYLOAD_TOO_LARGE: &str = "https://tresor.example/problems/payload-too-large";
/// Problem type of a request without the TLS client certificate a route requires.
pub const CLIENT_CERTIFICATE_REQUIRED: &str =
    "https://tresor.example/problems/client-certificate-required";
/// Problem type of a peer whose certificate names a role the route does not serve.
pub const ROLE_NOT_ALLOWED: &str = "https://tresor.example/problems/role-not-allowed";
/// A request body that did not arrive within `ServeOptions::body_read_timeout` (408).
pub const REQUEST_TIMEOUT: &str = "https://tresor.example/problems/request-timeout";

/// The type URI for a tresor problem slug.
pub fn problem_type(slug: &str) -> String {
    format!("{PROBLEM_TYPE_BASE}{slug}")
}

/// An RFC 7807 problem document. `detail` is for the peer: never put secrets or internal
/// error chains in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type", default = "about_blank")]
    pub type_uri: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

fn about_blank() -> String {
    "about:blank".into()
}

impl Problem {
    pub fn new(status: StatusCode, type_uri: impl Into<String>, title: impl Into<String>) -> Self {
        Self {
            type_uri: type_uri.into(),
            title: title.into(),
            status: status.as_u16(),
            detail: None,
            instance: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// The status as an HTTP status code; 500 if the document carried an invalid one.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, PAYLOAD_TOO_LARGE, "Request body too large")
            .with_detail(format!("the limit is {limit} bytes"))
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.status, self.title, self.type_uri)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = match serde_json::to_vec(&self) {
            Ok(body) => body,
            Err(_) => return status.into_response(),
        };
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// Whether a response's Content-Type is `application/problem+json` (parameters allowed).
pub fn is_problem_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(PROBLEM_JSON))
}

/// Caps request bodies at `max_bytes` for every route of `router`: a declared Content-Length
/// over the limit is refused before the handler runs, a body that turns out longer (chunked)
/// makes axum's body extractors (`Json`, `Bytes`, `String`, …) fail; either way the client gets
/// a 413 problem document. Handlers must read bodies through extractors for the limit to hold.
pub fn limit_body<S>(router: Router<S>, max_bytes: usize) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            enforce_limit(req, next, max_bytes)
        }))
        .layer(DefaultBodyLimit::max(max_bytes))
}

/// An oversized body up to this size is read and discarded before the 413 goes out:
/// closing a TLS connection with unread data makes the kernel send a reset, which destroys
/// the response in the client's receive buffer, so the client would see a broken pipe
/// instead of the problem document. Bigger bodies are cut off unread.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;
/// How long draining may take.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn enforce_limit(req: Request, next: Next, max_bytes: usize) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > max_bytes as u64) {
        if len <= DRAIN_LIMIT {
            drain(req.into_body()).await;
        }
        let mut response = Problem::payload_too_large(max_bytes).into_response();
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let response = next.run(req).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_problem_json(response.headers()) {
        return Problem::payload_too_large(max_bytes).into_response();
    }
    response
}

/// Reads and discards a body, within [`DRAIN_LIMIT`] and [`DRAIN_TIMEOUT`].
async fn drain(body: axum::body::Body) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut read: u64 = 0;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                read += data.len() as u64;
                if read > DRAIN_LIMIT {
                    break;
                }
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn serializes_as_rfc7807() {
        let p = Problem::new(
            StatusCode::FORBIDDEN,
            problem_type("role-not-allowed"),
            "Role not allowed",
        )
        .with_detail("mno-a may not call this");
        let json: serde_json::Value = serde_json::to_value(&p).unwrap();
        assert_eq!(json["type"], ROLE_NOT_ALLOWED);
        assert_eq!(json["status"], 403);
        assert!(json.get("instance").is_none());
        let minimal: Problem = serde_json::from_str(r#"{"status":404}"#).unwrap();
        assert_eq!(minimal.type_uri, "about:blank");
        let bogus: Problem = serde_json::from_str(r#"{"status":1000}"#).unwrap();
        assert_eq!(bogus.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn body_read_past_the_limit_becomes_a_problem() {
        // No Content-Length header: the Bytes extractor hits the limit while reading.
        let app = limit_body(
            Router::new()
                .route("/", post(|b: axum::body::Bytes| async move { b.len().to_string() })),
            16,
        );
        let req = Request::post("/").body(Body::from(vec![0u8; 17])).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(is_problem_json(resp.headers()));
        let req = Request::post("/").body(Body::from(vec![0u8; 16])).unwrap();
        assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
    }
}
