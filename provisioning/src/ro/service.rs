//! The RO's HTTPS routes (docs/flow.md): the operators' campaign API, authenticated by their
//! CI certificates, and the device API, where every request but the AK binding is signed by
//! the device's bound AK over an RO nonce (`protocol::device_auth`, `channel`). Device bodies
//! are CBOR or JSON (`transport::negotiate`; a body without Content-Type is CBOR), and the
//! AK signs SHA-256 of the body bytes as sent, in either format. One handler per route;
//! every error is a problem document with the type of its `RoError`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use protocol::DeviceId;
use protocol::device_api::{
    self, AbortAck, AkaResult, AttachRequest, CommitResult, DeviceTask, InstallResult,
};
use protocol::device_auth;
use protocol::device_auth::{CredentialChallenge, CredentialProof, CredentialRequest};
use protocol::evidence::Evidence;
use protocol::pva_api::{ActivateRequest, EnrolRequest};
use protocol::receipt::ANSWER_SIGNATURE_HEADER;
use protocol::role::{Expected, Role as CertRole};
use transport::PeerIdentity;
use transport::negotiate::{self, Format};
use transport::openapi::{CBOR, JSON};
use transport::problem::{PROBLEM_JSON, Problem};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Ro;
use super::campaign::{CampaignPage, CampaignReport, DEFAULT_PAGE, DeviceReport, NewCampaign};
use super::device::Answer;
use super::error::RoError;
use super::events::Event;
use super::store::CampaignQuery;

/// Largest body of a campaign request (10 000 devices fit).
const MAX_CAMPAIGN_BODY: usize = 4 * 1024 * 1024;

pub(crate) fn router(ro: Arc<Ro>) -> Router {
    let (devices, mut doc) = device_api().split_for_parts();
    let (health_route, health_doc) = open_api().split_for_parts();
    let (admin, admin_doc) = admin_api().split_for_parts();
    doc.merge(health_doc);
    doc.merge(admin_doc);
    let devices = devices
        .route_layer(axum::middleware::from_fn_with_state(ro.clone(), with_next_nonce))
        .merge(health_route);
    let devices = transport::limit_body(devices, device_api::MAX_MESSAGE_SIZE);
    let admin = transport::limit_body(admin, MAX_CAMPAIGN_BODY);
    transport::openapi::serve_document(devices.merge(admin).with_state(ro), &document(doc))
}

/// The RO's OpenAPI 3.1 document, from the same declarations as its router.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = device_api().split_for_parts().1;
    doc.merge(open_api().split_for_parts().1);
    doc.merge(admin_api().split_for_parts().1);
    document(doc)
}

fn document(doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    transport::openapi::finish(
        doc,
        "tresor RO",
        "Registration operator (DRF and DPF; docs/flow.md): the device API, where every \
         request but the AK binding is signed by the device's bound AK over an RO nonce, \
         and the operators' campaign API (client certificate under the CI). Device bodies \
         are CBOR (default) or JSON with byte strings as base64url; every device answer \
         carries the next nonce in the tresor-device-next-nonce header.",
    )
}

/// The device API (docs/flow.md steps 4-12).
fn device_api() -> OpenApiRouter<Arc<Ro>> {
    OpenApiRouter::new()
        .routes(routes!(credential))
        .routes(routes!(credential_proof))
        .routes(routes!(attach))
        .routes(routes!(task))
        .routes(routes!(enrolment))
        .routes(routes!(activation))
        .routes(routes!(evidence))
        .routes(routes!(install))
        .routes(routes!(aka))
        .routes(routes!(commit))
        .routes(routes!(abort))
}

/// The operators' campaign API.
fn admin_api() -> OpenApiRouter<Arc<Ro>> {
    OpenApiRouter::new()
        .routes(routes!(create_campaign, campaigns))
        .routes(routes!(campaign))
        .routes(routes!(campaign_device))
        .routes(routes!(cancel_campaign))
        .routes(routes!(events))
}

/// Liveness, readiness and metrics: open to anyone.
fn open_api() -> OpenApiRouter<Arc<Ro>> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(ready)).routes(routes!(metrics))
}

type Shared = State<Arc<Ro>>;

/// Who may create and cancel campaigns: the configured operators.
fn operators(ro: &Ro) -> Vec<Expected> {
    ro.config.operators().map(|name| Expected::named(CertRole::Operator, name)).collect()
}

/// Who may read campaigns: the operators and the RO's own tooling.
fn campaign_readers(ro: &Ro) -> Vec<Expected> {
    let mut readers = operators(ro);
    readers.push(Expected::named(CertRole::Ro, "ro"));
    readers
}

/// `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header): a repeated creation with
/// the same key and request answers the campaign the first one created.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[utoipa::path(
    post,
    path = "/v1/campaigns",
    summary = "Create a campaign (an operator)",
    params(("Idempotency-Key" = Option<String>, Header, description = "a repeated creation with the same key and body answers the first campaign; the same key with another body is 422")),
    request_body(content = NewCampaign, content_type = JSON),
    responses(
        (status = 201, description = "the campaign", body = CampaignReport, content_type = JSON),
        (status = 422, description = "unknown operators, a bad device list, or an Idempotency-Key used for another request", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "a device is still in another campaign", body = Problem, content_type = PROBLEM_JSON),
        (status = 403, description = "a certificate of another role", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn create_campaign(
    State(ro): Shared,
    peer: PeerIdentity,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, RoError> {
    let caller = peer.require(&operators(&ro)).map_err(|p| RoError::Forbidden(p.title))?.to_owned();
    let key =
        match headers.get(IDEMPOTENCY_KEY) {
            Some(v) => Some(v.to_str().map_err(|_| {
                RoError::BadCampaign("Idempotency-Key must be visible ASCII".into())
            })?),
            None => None,
        };
    let new: NewCampaign =
        serde_json::from_slice(&body).map_err(|e| RoError::Decode(e.to_string()))?;
    let report = ro.create_campaign(&caller, new, key).await?;
    Ok((StatusCode::CREATED, axum::Json(report)).into_response())
}

/// `GET /v1/campaigns?state=&operator=&limit=&after=`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only campaigns in this state.
    state: Option<String>,
    /// Only campaigns this operator is in.
    operator: Option<String>,
    /// Campaigns per page (default 100, at most 500).
    limit: Option<usize>,
    /// The `next` of the previous page.
    after: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/campaigns",
    summary = "List campaigns, oldest first, a page at a time (operators, the RO)",
    params(ListQuery),
    responses(
        (status = 200, description = "a page of campaigns with their devices by state", body = CampaignPage, content_type = JSON),
        (status = 400, description = "an unknown query parameter", body = Problem, content_type = PROBLEM_JSON),
        (status = 403, description = "a certificate of another role", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn campaigns(
    State(ro): Shared,
    peer: PeerIdentity,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, RoError> {
    peer.require(&campaign_readers(&ro)).map_err(|p| RoError::Forbidden(p.title))?;
    let axum::extract::Query(q) = query.map_err(|e| RoError::BadQuery(e.body_text()))?;
    let query = CampaignQuery {
        state: q.state.as_deref(),
        operator: q.operator.as_deref(),
        after: q.after.as_deref(),
        limit: q.limit.unwrap_or(DEFAULT_PAGE),
    };
    Ok(axum::Json(ro.campaign_page(&query)?).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/campaigns/{id}/devices/{device}",
    summary = "One device of a campaign: its state, step timings, failure (operators, the RO)",
    params(("id" = String, Path, description = "campaign id"), ("device" = String, Path, description = "device id (TPM name of the EK, hex)")),
    responses(
        (status = 200, description = "the device", body = DeviceReport, content_type = JSON),
        (status = 404, description = "no such campaign or device in it", body = Problem, content_type = PROBLEM_JSON),
        (status = 403, description = "a certificate of another role", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn campaign_device(
    State(ro): Shared,
    peer: PeerIdentity,
    Path((id, device)): Path<(String, String)>,
) -> Result<Response, RoError> {
    peer.require(&campaign_readers(&ro)).map_err(|p| RoError::Forbidden(p.title))?;
    let device = device_id(&device)?;
    Ok(axum::Json(ro.campaign_device(&id, &device)?).into_response())
}

/// `GET /v1/events[?campaign=ID]`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Only this campaign's events.
    campaign: Option<String>,
}

/// The events as they are committed, as Server-Sent Events (`id` the event's id, `event`
/// its type, `data` its JSON). A live view from now on: the durable channel is the
/// webhooks.
#[utoipa::path(
    get,
    path = "/v1/events",
    summary = "Campaign events as Server-Sent Events: device-transition, campaign-finished (operators, the RO)",
    params(EventsQuery),
    responses(
        (status = 200, description = "text/event-stream of Event", body = Event, content_type = "text/event-stream"),
        (status = 403, description = "a certificate of another role", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn events(
    State(ro): Shared,
    peer: PeerIdentity,
    query: Result<axum::extract::Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, RoError> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    peer.require(&campaign_readers(&ro)).map_err(|p| RoError::Forbidden(p.title))?;
    let axum::extract::Query(q) = query.map_err(|e| RoError::BadQuery(e.body_text()))?;
    let receiver = ro.events.subscribe();
    let stream =
        futures_util::stream::unfold((receiver, q.campaign), |(mut rx, filter)| async move {
            loop {
                let item = match rx.recv().await {
                    Ok(event) if filter.as_deref().is_some_and(|c| c != event.campaign()) => {
                        continue;
                    }
                    Ok(event) => {
                        let kind = match &event {
                            super::events::Event::DeviceTransition { .. } => "device-transition",
                            super::events::Event::CampaignFinished { .. } => "campaign-finished",
                        };
                        SseEvent::default().id(event.id()).event(kind).json_data(&event)
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        Ok(SseEvent::default().event("lagged").data(missed.to_string()))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                };
                return Some((item, (rx, filter)));
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/campaigns/{id}/cancel",
    summary = "Cancel a campaign (an operator)",
    params(("id" = String, Path, description = "campaign id")),
    responses(
        (status = 200, description = "JSON campaign report", content_type = JSON),
        (status = 403, description = "a certificate of another role", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn cancel_campaign(
    State(ro): Shared,
    peer: PeerIdentity,
    Path(id): Path<String>,
) -> Result<Response, RoError> {
    let caller = peer.require(&operators(&ro)).map_err(|p| RoError::Forbidden(p.title))?.to_owned();
    Ok(axum::Json(ro.cancel_campaign(&caller, &id).await?).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/campaigns/{id}",
    summary = "A campaign's report (operators, the RO)",
    params(("id" = String, Path, description = "campaign id")),
    responses(
        (status = 200, description = "JSON campaign report", content_type = JSON),
        (status = 403, description = "a certificate of another role", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn campaign(
    State(ro): Shared,
    peer: PeerIdentity,
    Path(id): Path<String>,
) -> Result<Response, RoError> {
    peer.require(&campaign_readers(&ro)).map_err(|p| RoError::Forbidden(p.title))?;
    Ok(axum::Json(ro.campaign_report(&id)?).into_response())
}

/// A device request that passed the device channel's check (`channel`): the device of
/// its path, its body, and the AK signature over the answer's statement, if it carries one.
struct Authed {
    device: DeviceId,
    body: Bytes,
    /// The body's format (`transport::negotiate`), and the answer's.
    format: Format,
    answer_format: Format,
    answer_signature: Option<String>,
}

impl Authed {
    fn answer(&self) -> Answer<'_> {
        Answer { body: &self.body, signature: self.answer_signature.as_deref() }
    }
}

impl FromRequest<Arc<Ro>> for Authed {
    type Rejection = RoError;

    async fn from_request(request: Request, ro: &Arc<Ro>) -> Result<Self, RoError> {
        let (parts, body) = request.into_parts();
        let device = device_of_path(parts.uri.path())?;
        let format = negotiate::request_format_or_cbor(&parts.headers, negotiate::BOTH)?;
        let answer_format = negotiate::response_format(&parts.headers, Some(format));
        let body = axum::body::to_bytes(body, device_api::MAX_MESSAGE_SIZE)
            .await
            .map_err(|e| RoError::Decode(format!("request body: {e}")))?;
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        ro.authenticate(
            &device,
            parts.method.as_str(),
            parts.uri.path(),
            header(device_auth::NONCE_HEADER),
            header(device_auth::SIGNATURE_HEADER),
            &body,
        )?;
        let answer_signature = header(ANSWER_SIGNATURE_HEADER).map(str::to_owned);
        Ok(Self { device, body, format, answer_format, answer_signature })
    }
}

/// Every answer on a device route, refusals included, carries a fresh nonce for the
/// device's next request.
async fn with_next_nonce(State(ro): Shared, request: Request, next: Next) -> Response {
    let device = device_of_path(request.uri().path()).ok();
    let mut response = next.run(request).await;
    if let Some(device) = device
        && let Ok(value) = HeaderValue::from_str(&ro.next_nonce(&device))
    {
        response.headers_mut().insert(device_auth::NEXT_NONCE_HEADER, value);
    }
    response
}

/// The device id of a `/v1/devices/{id}/…` path.
fn device_of_path(path: &str) -> Result<DeviceId, RoError> {
    let id = path
        .strip_prefix("/v1/devices/")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| RoError::Decode("not a device path".into()))?;
    device_id(id)
}

/// AK binding, step 1 (anonymous): the RO's credential challenge for the AK under the EK.
#[utoipa::path(
    post,
    path = "/v1/devices/{device}/credential",
    summary = "AK binding, step 1 (unsigned): a credential for the AK under the EK",
    params(("device" = String, Path, description = "device id: hex of the EK name")),
    request_body(content((CredentialRequest = CBOR), (CredentialRequest = JSON))),
    responses(
        (status = 200, description = "TPM2_MakeCredential output", content((CredentialChallenge = CBOR), (CredentialChallenge = JSON))),
        (status = 409, description = "the device is at another step", body = Problem, content_type = PROBLEM_JSON),
    ),
)]
async fn credential(
    State(ro): Shared,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RoError> {
    let format = negotiate::request_format_or_cbor(&headers, negotiate::BOTH)?;
    let request: device_auth::CredentialRequest = decode(format, &body)?;
    let challenge = ro.credential(&device_id(&device)?, request)?;
    answer(negotiate::response_format(&headers, Some(format)), &challenge)
}

/// AK binding, step 2 (anonymous, proved by the secret): the AK is bound to the device.
#[utoipa::path(
    post,
    path = "/v1/devices/{device}/credential/activate",
    summary = "AK binding, step 2 (unsigned): the secret; the AK is bound",
    params(("device" = String, Path, description = "device id: hex of the EK name")),
    request_body(content((CredentialProof = CBOR), (CredentialProof = JSON))),
    responses(
        (status = 204, description = "recorded"),
        (status = 409, description = "the device is at another step", body = Problem, content_type = PROBLEM_JSON),
    ),
)]
async fn credential_proof(
    State(ro): Shared,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, RoError> {
    let format = negotiate::request_format_or_cbor(&headers, negotiate::BOTH)?;
    let proof: device_auth::CredentialProof = decode(format, &body)?;
    ro.credential_proof(&device_id(&device)?, proof)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Long poll: answers as soon as there is work, or `Idle` after the poll timeout.
#[utoipa::path(
    get,
    path = "/v1/devices/{device}/task",
    summary = "Long poll: the device's next task",
    params(("device" = String, Path, description = "device id: hex of the EK name")),
    responses(
        (status = 200, description = "the next task (idle after the poll timeout)", content((DeviceTask = CBOR), (DeviceTask = JSON))),
        (status = 401, description = "not signed by the bound AK, or a nonce not issued, expired or spent", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "the device is at another step", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("deviceNonce" = [], "deviceSignature" = [])),
)]
async fn task(State(ro): Shared, request: Authed) -> Result<Response, RoError> {
    let device = request.device;
    let deadline = tokio::time::Instant::now() + ro.config.poll_timeout();
    let own = ro.device_wake(&device);
    loop {
        // Registered before the check, so a wake-up between the check and the wait counts.
        let (any, mine) = (ro.wake.notified(), own.notified());
        let task = ro.task_for(&device).await?;
        if task != device_api::DeviceTask::Idle || tokio::time::Instant::now() >= deadline {
            return answer(request.answer_format, &task);
        }
        // Re-check at least every second: some work (a peer's answer) does not notify.
        let woken = async {
            tokio::select! {
                () = any => {}
                () = mine => {}
            }
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(1).min(deadline - tokio::time::Instant::now()),
            woken,
        )
        .await;
    }
}

#[utoipa::path(
    post,
    path = "/v1/devices/{device}/attach",
    summary = "Step 5: attach to the DRF",
    params(("device" = String, Path, description = "device id: hex of the EK name")),
    request_body(content((AttachRequest = CBOR), (AttachRequest = JSON))),
    responses(
        (status = 204, description = "recorded"),
        (status = 401, description = "not signed by the bound AK, or a nonce not issued, expired or spent", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "the device is at another step", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("deviceNonce" = [], "deviceSignature" = [])),
)]
async fn attach(State(ro): Shared, request: Authed) -> Result<StatusCode, RoError> {
    let attach: AttachRequest = decode(request.format, &request.body)?;
    if attach.device_id != request.device {
        return Err(RoError::Decode("attach request for another device".into()));
    }
    ro.attach(attach).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/devices/{device}/enrolment",
    summary = "Step 8: the PVA enrolment request, relayed",
    params(("device" = String, Path, description = "device id: hex of the EK name")),
    request_body(content((EnrolRequest = CBOR), (EnrolRequest = JSON))),
    responses(
        (status = 204, description = "recorded"),
        (status = 401, description = "not signed by the bound AK, or a nonce not issued, expired or spent", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "the device is at another step", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("deviceNonce" = [], "deviceSignature" = [])),
)]
async fn enrolment(State(ro): Shared, request: Authed) -> Result<StatusCode, RoError> {
    ro.enrolment(&request.device, request.format, &request.body).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/devices/{device}/activation",
    summary = "Step 8: the credential activation, relayed",
    params(("device" = String, Path, description = "device id: hex of the EK name")),
    request_body(content((ActivateRequest = CBOR), (ActivateRequest = JSON))),
    responses(
        (status = 204, description = "recorded"),
        (status = 401, description = "not signed by the bound AK, or a nonce not issued, expired or spent", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "the device is at another step", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("deviceNonce" = [], "deviceSignature" = [])),
)]
async fn activation(State(ro): Shared, request: Authed) -> Result<StatusCode, RoError> {
    ro.activation(&request.device, request.format, &request.body).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/devices/{device}/evidence",
    summary = "Step 8: evidence for the PVA's nonce (kept as CBOR for the PVA)",
    params(("device" = String, Path, description = "device id: hex of the EK name")),
    request_body(content((Evidence = CBOR), (Evidence = JSON))),
    responses(
        (status = 204, description = "recorded"),
        (status = 401, description = "not signed by the bound AK, or a nonce not issued, expired or spent", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "the device is at another step", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("deviceNonce" = [], "deviceSignature" = [])),
)]
async fn evidence(State(ro): Shared, request: Authed) -> Result<StatusCode, RoError> {
    ro.evidence(&request.device, request.format, &request.body).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/devices/{device}/install",
    summary = "Steps 11-12: the install receipt (answer signature header required)",
    params(("device" = String, Path, description = "device id: hex of the EK name")),
    request_body(content((InstallResult = CBOR), (InstallResult = JSON))),
    responses(
        (status = 204, description = "recorded"),
        (status = 401, description = "not signed by the bound AK, or a nonce not issued, expired or spent", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "the device is at another step", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("deviceNonce" = [], "deviceSignature" = [])),
)]
async fn install(State(ro): Shared, request: Authed) -> Result<StatusCode, RoError> {
    let result: InstallResult = decode(request.format, &request.body)?;
    ro.install(&request.device, result, request.answer()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/devices/{device}/aka",
    summary = "Step 12: the USIM's AKA answer (answer signature header required)",
    params(("device" = String, Path, description = "device id: hex of the EK name")),
    request_body(content((AkaResult = CBOR), (AkaResult = JSON))),
    responses(
        (status = 204, description = "recorded"),
        (status = 401, description = "not signed by the bound AK, or a nonce not issued, expired or spent", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "the device is at another step", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("deviceNonce" = [], "deviceSignature" = [])),
)]
async fn aka(State(ro): Shared, request: Authed) -> Result<StatusCode, RoError> {
    let result: AkaResult = decode(request.format, &request.body)?;
    ro.aka(&request.device, result, request.answer()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/devices/{device}/commit",
    summary = "Step 12: the card committed or fell back (answer signature header required)",
    params(("device" = String, Path, description = "device id: hex of the EK name")),
    request_body(content((CommitResult = CBOR), (CommitResult = JSON))),
    responses(
        (status = 204, description = "recorded"),
        (status = 401, description = "not signed by the bound AK, or a nonce not issued, expired or spent", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "the device is at another step", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("deviceNonce" = [], "deviceSignature" = [])),
)]
async fn commit(State(ro): Shared, request: Authed) -> Result<StatusCode, RoError> {
    let result: CommitResult = decode(request.format, &request.body)?;
    ro.commit(&request.device, result, request.answer()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/devices/{device}/abort",
    summary = "The card's answer to an abort order (answer signature header required)",
    params(("device" = String, Path, description = "device id: hex of the EK name")),
    request_body(content((AbortAck = CBOR), (AbortAck = JSON))),
    responses(
        (status = 204, description = "recorded"),
        (status = 401, description = "not signed by the bound AK, or a nonce not issued, expired or spent", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "the device is at another step", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("deviceNonce" = [], "deviceSignature" = [])),
)]
async fn abort(State(ro): Shared, request: Authed) -> Result<StatusCode, RoError> {
    let ack: AbortAck = decode(request.format, &request.body)?;
    ro.abort(&request.device, ack, request.answer()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/health",
    summary = "Liveness (transport::health), as on every role: no client certificate",
    responses((status = 200, description = "JSON: {\"status\": \"ok\", \"role\": \"ro\", \"name\", \"version\"}", content_type = JSON)),
)]
async fn health() -> Response {
    transport::health::live("ro", "ro")
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
async fn ready(State(ro): Shared) -> Response {
    let store = tokio::task::spawn_blocking(move || ro.store.healthy()).await.unwrap_or(false);
    transport::health::ready("ro", "ro", &[("store", store)])
}

#[utoipa::path(
    get,
    path = "/metrics",
    summary = "Prometheus metrics (OpenMetrics text): devices and campaigns by state, transitions, step latencies, outbox; no client certificate",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")),
)]
async fn metrics(State(ro): Shared) -> Response {
    let scraped = tokio::task::spawn_blocking(move || ro.metrics.scrape(&ro.store)).await;
    match scraped {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => e.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn device_id(s: &str) -> Result<DeviceId, RoError> {
    s.parse().map_err(|e| RoError::Decode(format!("device id: {e}")))
}

fn decode<T: for<'de> serde::Deserialize<'de>>(format: Format, body: &[u8]) -> Result<T, RoError> {
    device_api::decode(format, body).map_err(|e| RoError::Decode(e.to_string()))
}

fn answer<T: serde::Serialize>(format: Format, value: &T) -> Result<Response, RoError> {
    let bytes = device_api::encode(format, value).map_err(|e| RoError::Decode(e.to_string()))?;
    Ok(negotiate::respond(StatusCode::OK, format, bytes))
}
