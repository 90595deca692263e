//! The PVA's HTTPS API (`docs/pva-api.md`): one axum handler per route, CBOR or JSON bodies
//! (`protocol::pva_api`, `transport::negotiate`), a body-size limit on every route, and errors as RFC 9457 problem
//! documents whose type URI names the exact check (`…/problems/pva/<slug>`). Problems say
//! what the peer did wrong; store and signing failures are logged here and answered with a
//! bare 503/500, never with their internals.
//!
//! Enrolment (`/v1/enrol`, `/v1/activate`) is for authenticated relying parties: a client
//! certificate (verified by TLS under the CI) whose role is one of `enrol_roles`, unless the
//! PVA runs with `open_enrolment = true`. Challenges and appraisals stay open to anyone:
//! evidence authenticates itself.
//!
//! Status codes: 400 malformed input, 401 evidence or credential not authentic or not fresh
//! (not attested), or enrolment without a client certificate, 403 refused by policy or a
//! role that may not enrol, 404 unknown device, policy or pending enrolment, 409 device
//! bound to another EK, 410 credential expired, 413 body too large, 415 neither CBOR nor JSON, 429 too
//! many outstanding challenges, 500/503 the PVA's own failures.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::pva_api::{
    ActivateRequest, ActivateResponse, AppraiseRequest, AppraiseResponse, ChallengeRequest,
    ChallengeResponse, EnrolRequest, EnrolResponse, MAX_REQUEST_SIZE, Message, path,
};
use protocol::role::{Expected, Role};
use serde_bytes::ByteBuf;
use transport::negotiate;
use transport::openapi::{CBOR, JSON};
use transport::problem::PROBLEM_JSON;
use transport::problem::{CLIENT_CERTIFICATE_REQUIRED, problem_type};
use transport::{PeerIdentity, Problem};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{AppraisalError, ChallengeError, EnrolmentError, Error};
use crate::pva::Pva;

/// The router of every PVA route, with the body limit, and `/openapi.json`.
pub fn router(pva: Arc<Pva>) -> Router {
    let (routes, doc) = api().split_for_parts();
    let routes =
        routes.fallback(not_found).method_not_allowed_fallback(method_not_allowed).with_state(pva);
    transport::openapi::serve_document(
        transport::limit_body(routes, MAX_REQUEST_SIZE),
        &document(doc),
    )
}

/// The PVA's OpenAPI 3.1 document, from the same declarations as its router.
pub fn openapi() -> utoipa::openapi::OpenApi {
    document(api().split_for_parts().1)
}

fn document(doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    transport::openapi::finish(
        doc,
        "tresor PVA",
        "Platform validation authority (docs/pva-api.md): AK enrolment by credential \
         activation, nonce challenges, appraisal of TPM evidence into a signed EAR. Bodies \
         are CBOR (default) or JSON with byte strings as base64url without padding.",
    )
}

/// Every route, each declared once for both the router and the document.
fn api() -> OpenApiRouter<Arc<Pva>> {
    OpenApiRouter::new()
        .routes(routes!(enrol))
        .routes(routes!(activate))
        .routes(routes!(challenge))
        .routes(routes!(appraise))
        .routes(routes!(health))
        .routes(routes!(reload_policies))
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

#[utoipa::path(
    post,
    path = path::ENROL,
    summary = "Step 5: enrol the AK; answers a credential for TPM2_ActivateCredential",
    request_body(content((EnrolRequest = CBOR), (EnrolRequest = JSON))),
    responses(
        (status = 200, description = "EnrolResponse", content((EnrolResponse = CBOR), (EnrolResponse = JSON))),
        (status = 400, description = "malformed request, EK or AK public area", body = Problem, content_type = PROBLEM_JSON),
        (status = 401, description = "no client certificate, or the EK certificate does not verify", body = Problem, content_type = PROBLEM_JSON),
        (status = 403, description = "a role that may not enrol, or an AK or EK the PVA refuses", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "the device is bound to another EK", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn enrol(
    State(pva): State<Arc<Pva>>,
    peer: Option<PeerIdentity>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let requested_by = match may_enrol(&pva, peer.as_ref()) {
        Ok(role) => role,
        Err(p) => return p.into_response(),
    };
    run("enrol", pva, &headers, &body, move |pva, req: EnrolRequest, now| {
        pva.enrol_for(&req, requested_by.as_deref(), now)
    })
    .await
}

#[utoipa::path(
    post,
    path = path::ACTIVATE,
    summary = "Step 5: the secret TPM2_ActivateCredential released; the AK is enrolled",
    request_body(content((ActivateRequest = CBOR), (ActivateRequest = JSON))),
    responses(
        (status = 200, description = "ActivateResponse", content((ActivateResponse = CBOR), (ActivateResponse = JSON))),
        (status = 401, description = "no client certificate, or the wrong secret", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "no pending enrolment", body = Problem, content_type = PROBLEM_JSON),
        (status = 410, description = "the credential expired", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn activate(
    State(pva): State<Arc<Pva>>,
    peer: Option<PeerIdentity>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(p) = may_enrol(&pva, peer.as_ref()) {
        return p.into_response();
    }
    run("activate", pva, &headers, &body, |pva, req: ActivateRequest, now| pva.activate(&req, now))
        .await
}

/// Whether `peer` may reach enrolment; answers with the role to record in the device's
/// history. Anonymous clients get 401, certificates of other roles 403.
fn may_enrol(pva: &Pva, peer: Option<&PeerIdentity>) -> Result<Option<String>, Problem> {
    let access = &pva.settings().enrolment;
    if access.open {
        return Ok(peer.and_then(|p| p.common_name.clone()));
    }
    let peer = peer.ok_or_else(|| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            CLIENT_CERTIFICATE_REQUIRED,
            "Client certificate required",
        )
        .with_detail("enrolment is open to authenticated relying parties only")
    })?;
    let allowed: Vec<Expected> = access.roles.iter().copied().map(Expected::role).collect();
    peer.require(&allowed).map(|name| Some(name.to_owned()))
}

#[utoipa::path(
    post,
    path = path::CHALLENGE,
    summary = "Step 8: a single-use nonce for an enrolled device",
    request_body(content((ChallengeRequest = CBOR), (ChallengeRequest = JSON))),
    responses(
        (status = 200, description = "ChallengeResponse", content((ChallengeResponse = CBOR), (ChallengeResponse = JSON))),
        (status = 400, description = "malformed request", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "unknown device or policy", body = Problem, content_type = PROBLEM_JSON),
        (status = 429, description = "too many outstanding challenges", body = Problem, content_type = PROBLEM_JSON),
    ),
)]
async fn challenge(State(pva): State<Arc<Pva>>, headers: HeaderMap, body: Bytes) -> Response {
    run("challenge", pva, &headers, &body, |pva, req: ChallengeRequest, now| {
        pva.challenge(&req, now)
    })
    .await
}

#[utoipa::path(
    post,
    path = path::APPRAISE,
    summary = "Steps 8-9: appraise evidence into a signed EAR",
    request_body(content((AppraiseRequest = CBOR), (AppraiseRequest = JSON))),
    responses(
        (status = 200, description = "AppraiseResponse", content((AppraiseResponse = CBOR), (AppraiseResponse = JSON))),
        (status = 400, description = "malformed evidence", body = Problem, content_type = PROBLEM_JSON),
        (status = 401, description = "evidence not authentic or not fresh (the type names the check)", body = Problem, content_type = PROBLEM_JSON),
        (status = 403, description = "refused by policy", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "unknown device", body = Problem, content_type = PROBLEM_JSON),
    ),
)]
async fn appraise(State(pva): State<Arc<Pva>>, headers: HeaderMap, body: Bytes) -> Response {
    run("appraise", pva, &headers, &body, |pva, req: AppraiseRequest, now| {
        let appraised = pva.appraise(&req.evidence, now)?;
        Ok(AppraiseResponse {
            status: appraised.status(),
            failed_checks: appraised.failures.iter().map(|f| f.slug().to_owned()).collect(),
            ear: ByteBuf::from(appraised.ear),
        })
    })
    .await
}

/// Only the holder of the PVA role's own certificate (its operator) reloads policies.
#[utoipa::path(
    post,
    path = path::RELOAD_POLICIES,
    summary = "Read the policies again from the configuration file (the PVA's own certificate)",
    responses(
        (status = 200, description = "JSON: {\"policies\": [ids], \"default\": id}", content_type = JSON),
        (status = 401, description = "no client certificate", body = Problem, content_type = PROBLEM_JSON),
        (status = 403, description = "not the PVA's own certificate", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "the new policies were refused; the old ones stay", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn reload_policies(State(pva): State<Arc<Pva>>, peer: Option<PeerIdentity>) -> Response {
    let Some(peer) = peer else {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            CLIENT_CERTIFICATE_REQUIRED,
            "Client certificate required",
        )
        .with_detail("policy reloads are for the PVA's own certificate")
        .into_response();
    };
    if let Err(p) = peer.require_role(Role::Pva) {
        return p.into_response();
    }
    let reloading = Arc::clone(&pva);
    match tokio::task::spawn_blocking(move || reloading.reload()).await {
        Ok(Ok(ids)) => {
            let body = serde_json::json!({ "policies": ids, "default": pva.default_policy() });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "policy reload refused; the policies stay as they were");
            pva_problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reload-refused",
                "Policies not reloaded",
                Some(format!("{e}; the policies stay as they were")),
            )
            .into_response()
        }
        Err(e) => problem(&Error::Config(format!("reload task failed: {e}"))).into_response(),
    }
}

#[utoipa::path(
    get,
    path = path::HEALTH,
    summary = "Health: the store answers",
    responses(
        (status = 200, description = "JSON: {\"status\": \"ok\", \"version\": …}", content_type = JSON),
        (status = 503, description = "the store is unavailable", body = Problem, content_type = PROBLEM_JSON),
    ),
)]
async fn health(State(pva): State<Arc<Pva>>) -> Response {
    match tokio::task::spawn_blocking(move || pva.store_healthy()).await {
        Ok(true) => {
            let body = serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        _ => pva_problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Store unavailable",
            None,
        )
        .into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/health",
    summary = "Liveness (transport::health), as on every role: no client certificate",
    responses((status = 200, description = "JSON: {\"status\": \"ok\", \"role\", \"name\", \"version\"}", content_type = JSON)),
)]
async fn live() -> Response {
    transport::health::live("pva", "pva")
}

#[utoipa::path(
    get,
    path = "/ready",
    summary = "Readiness: the store answers; no client certificate",
    responses(
        (status = 200, description = "JSON: status ok, checks", content_type = JSON),
        (status = 503, description = "JSON: status unavailable, the failing checks", content_type = JSON),
    ),
)]
async fn ready(State(pva): State<Arc<Pva>>) -> Response {
    let store = tokio::task::spawn_blocking(move || pva.store_healthy()).await.unwrap_or(false);
    transport::health::ready("pva", "pva", &[("store", store)])
}

#[utoipa::path(
    get,
    path = "/metrics",
    summary = "Prometheus metrics (OpenMetrics text); no client certificate",
    responses((status = 200, description = "appraisals by outcome and reason, durations, challenges, enrolments", content_type = "application/openmetrics-text")),
)]
async fn metrics(State(pva): State<Arc<Pva>>) -> Response {
    pva.metrics_response()
}

async fn not_found() -> Response {
    pva_problem(StatusCode::NOT_FOUND, "not-found", "No such resource", None).into_response()
}

async fn method_not_allowed() -> Response {
    pva_problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", None)
        .into_response()
}

/// Checks the media type (CBOR or JSON, `transport::negotiate`), decodes the request, runs `op` off the async threads (it does
/// CPU work and waits for the store's fsync) between its fault points `pva.<name>.before`
/// and `pva.<name>.after` (`protocol::fault`), encodes the answer.
async fn run<Req, Resp>(
    name: &'static str,
    pva: Arc<Pva>,
    headers: &HeaderMap,
    body: &Bytes,
    op: impl FnOnce(&Pva, Req, SystemTime) -> Result<Resp, Error> + Send + 'static,
) -> Response
where
    Req: Message + Send + 'static,
    Resp: Message + Send + 'static,
{
    let format = match negotiate::request_format(headers, negotiate::BOTH) {
        Ok(format) => format,
        Err(e) => {
            return pva_problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Request body must be application/cbor or application/json",
                Some(e.to_string()),
            )
            .into_response();
        }
    };
    let req = match Req::decode(format, body) {
        Ok(req) => req,
        Err(e) => {
            return pva_problem(
                StatusCode::BAD_REQUEST,
                "malformed-request",
                "Malformed request",
                Some(e.to_string()),
            )
            .into_response();
        }
    };
    let answer_format = negotiate::response_format(headers, Some(format));
    let result = tokio::task::spawn_blocking(move || {
        let fault = |at: &str| {
            protocol::fault::point(&format!("pva.{name}.{at}"))
                .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))
        };
        fault("before")?;
        let answer = op(&pva, req, SystemTime::now())?;
        fault("after")?;
        Ok(answer)
    })
    .await;
    let response = match result {
        Ok(Ok(resp)) => resp.encode(answer_format).map_err(|e| Error::Signing(e.to_string())),
        Ok(Err(e)) => return problem(&e).into_response(),
        Err(e) => Err(Error::Config(format!("handler task failed: {e}"))),
    };
    match response {
        Ok(bytes) => negotiate::respond(StatusCode::OK, answer_format, bytes),
        Err(e) => problem(&e).into_response(),
    }
}

fn pva_problem(status: StatusCode, slug: &str, title: &str, detail: Option<String>) -> Problem {
    let p = Problem::new(status, problem_type(&format!("pva/{slug}")), title);
    match detail {
        Some(d) => p.with_detail(d),
        None => p,
    }
}

/// The problem document for an error: a stable type per variant, the status of the module
/// documentation, and a detail only for what the peer did wrong.
pub fn problem(e: &Error) -> Problem {
    match e {
        Error::Appraisal(a) => {
            pva_problem(appraisal_status(a), a.slug(), "Evidence refused", Some(a.to_string()))
        }
        Error::Enrolment(x) => {
            pva_problem(enrolment_status(x), x.slug(), "Enrolment refused", Some(x.to_string()))
        }
        Error::Challenge(c) => {
            let status = match c {
                ChallengeError::UnknownDevice(_) | ChallengeError::UnknownPolicy(_) => {
                    StatusCode::NOT_FOUND
                }
                ChallengeError::TooManyOutstanding { .. } => StatusCode::TOO_MANY_REQUESTS,
            };
            pva_problem(status, c.slug(), "No challenge issued", Some(c.to_string()))
        }
        Error::Store(s) => {
            tracing::error!(error = %s, "PVA store failure");
            pva_problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "Store unavailable",
                None,
            )
        }
        other => {
            tracing::error!(error = %other, "PVA internal failure");
            pva_problem(StatusCode::INTERNAL_SERVER_ERROR, "internal-error", "Internal error", None)
        }
    }
}

fn appraisal_status(e: &AppraisalError) -> StatusCode {
    use AppraisalError::*;
    match e {
        EvidenceMalformed(_)
        | AttestationMalformed { .. }
        | BundleKeyMalformed(_)
        | EventLogMalformed(_)
        | PcrValuesMalformed(_)
        | NonceMalformed { .. } => StatusCode::BAD_REQUEST,
        UnknownDevice(_) => StatusCode::NOT_FOUND,
        e if e.is_refusal() => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    }
}

fn enrolment_status(e: &EnrolmentError) -> StatusCode {
    use EnrolmentError::*;
    match e {
        EkPublicMalformed(_) | AkPublicMalformed(_) | DeviceIdNotEkName { .. } => {
            StatusCode::BAD_REQUEST
        }
        EkCertificate(_) | WrongSecret => StatusCode::UNAUTHORIZED,
        EkNameAlgorithm(_) | AkAttributes { .. } | AkAlgorithm(_) | Credential(_) => {
            StatusCode::FORBIDDEN
        }
        NoPendingEnrolment => StatusCode::NOT_FOUND,
        DeviceBoundToAnotherEk(_) => StatusCode::CONFLICT,
        CredentialExpired => StatusCode::GONE,
    }
}
