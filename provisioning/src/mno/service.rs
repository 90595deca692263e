//! The operator's HTTPS service (docs/flow.md; `docs/mno.md` "API"): transport's serve loop
//! with mutual TLS required (only certificates under the CI connect), one handler per route,
//! the caller's role checked from its certificate before anything else, bodies bounded
//! (2 MiB for campaigns and IMSI lists, 128 KiB elsewhere) and decoded strictly, errors as
//! problem documents with a stable type each ([`MnoError`]). The CBOR routes also read and
//! answer JSON, byte strings as base64url (`transport::negotiate`, `protocol::wire`).
//!
//! Handlers run the operator's synchronous, transactional operations on a blocking thread.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use protocol::device_api::AkaResult;
use protocol::{DeviceId, Imsi};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use transport::PeerIdentity;
use transport::negotiate::{self, Format};
use transport::openapi::{CBOR, JSON};
use transport::problem::{PROBLEM_JSON, Problem};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api::{
    self, ActivateTreResponse, AkaChallenge, AkaVerdict, AttestationResponse, CampaignId,
    CampaignRequest, CampaignStatus, Health, ImsiList, ImsiListAck, MAX_BULK_BODY, MAX_DEVICE_BODY,
    PrepareResponse, RegisterResponse, Report, ReportAck, TreActivated, TreActivatedAck,
};
use super::config::MnoConfig;
use super::error::{MnoError, Result};
use super::new_operator::blocking;
use super::operator::Operator;
use super::records::SubscriberView;
use crate::pki::Role;

type Shared = State<Arc<Operator>>;

/// Opens the operator of `config` and serves its API on `listener` until `shutdown`.
pub async fn serve(
    config: MnoConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let operator = Arc::new(Operator::open(&config)?);
    serve_operator(operator, listener, shutdown).await
}

/// [`serve`] on the configuration's `listen` address (what `tresor serve mno` runs).
pub async fn run(config: MnoConfig, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    let listener = transport::bind(config.listen).await.map_err(MnoError::Serve)?;
    serve(config, listener, shutdown).await
}

/// Serves an already opened operator (so a caller can also use it directly, e.g. to issue
/// subscriptions for manufacture while the service runs).
pub async fn serve_operator(
    operator: Arc<Operator>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let tls = Arc::clone(&operator.tls);
    transport::serve(listener, tls, router(operator), shutdown).await.map_err(MnoError::Serve)
}

/// Every route of the operator API, and `/openapi.json`.
pub fn router(operator: Arc<Operator>) -> Router {
    let (bulk, bulk_doc) = bulk_api().split_for_parts();
    let (per_device, mut doc) = per_device_api().split_for_parts();
    doc.merge(bulk_doc);
    let routes = transport::limit_body(bulk, MAX_BULK_BODY)
        .merge(transport::limit_body(per_device, MAX_DEVICE_BODY))
        .fallback(|| async { MnoError::NotFound })
        .method_not_allowed_fallback(|| async { MnoError::MethodNotAllowed })
        .with_state(operator);
    transport::openapi::serve_document(routes, &document(doc))
}

/// The operator's OpenAPI 3.1 document, from the same declarations as its router.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = per_device_api().split_for_parts().1;
    doc.merge(bulk_api().split_for_parts().1);
    document(doc)
}

fn document(doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    transport::openapi::finish(
        doc,
        "tresor MNO",
        "An operator (MNO-A or MNO-B; docs/mno.md): campaigns, IMSI lists, the activate-TRE \
         command, registration, the subscription bundle for an attested device, AKA, \
         reports. Every route but /health, /ready, /metrics and /openapi.json needs a client \
         certificate under the CI. Administration is \
         JSON; the other bodies are CBOR (default) or JSON with byte strings as base64url.",
    )
}

/// The campaign and IMSI-list routes (2 MiB bodies).
fn bulk_api() -> OpenApiRouter<Arc<Operator>> {
    OpenApiRouter::new().routes(routes!(create_campaign)).routes(routes!(imsi_list))
}

/// Every other route (128 KiB bodies).
fn per_device_api() -> OpenApiRouter<Arc<Operator>> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(campaign_status))
        .routes(routes!(prepare))
        .routes(routes!(activate_tre))
        .routes(routes!(tre_activated))
        .routes(routes!(register))
        .routes(routes!(attestation))
        .routes(routes!(aka_challenge))
        .routes(routes!(aka_response))
        .routes(routes!(report))
        .routes(routes!(subscriber_status))
}

/// The RO (DRF and DPF) drives every per-device step and administers campaigns.
fn ro_only(peer: &PeerIdentity) -> Result<()> {
    peer.require(&[Role::Ro.expected()])?;
    Ok(())
}

#[utoipa::path(
    get,
    path = "/health",
    summary = "Liveness (transport::health), as on every role: no client certificate",
    responses((status = 200, description = "the operator answers", body = Health, content_type = JSON)),
)]
async fn health(State(op): Shared) -> Response {
    transport::health::live("mno", op.name())
}

#[utoipa::path(
    get,
    path = "/ready",
    summary = "Readiness: the store answers; no client certificate",
    responses(
        (status = 200, description = "status ok, checks", body = Health, content_type = JSON),
        (status = 503, description = "status unavailable, the failing checks", body = Health, content_type = JSON),
    ),
)]
async fn ready(State(op): Shared) -> Response {
    let name = op.name().to_owned();
    let store = tokio::task::spawn_blocking(move || op.store_healthy()).await.unwrap_or(false);
    transport::health::ready("mno", &name, &[("store", store)])
}

#[utoipa::path(
    get,
    path = "/metrics",
    summary = "Prometheus metrics (OpenMetrics text): subscriptions by status, campaigns; no client certificate",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")),
)]
async fn metrics(State(op): Shared) -> Response {
    match tokio::task::spawn_blocking(move || op.metrics_response()).await {
        Ok(response) => response,
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[utoipa::path(
    post,
    path = "/v1/campaigns",
    summary = "Step 2: a campaign, from the RO",
    request_body(content((CampaignRequest = JSON))),
    responses(
        (status = 201, description = "the campaign (201 when new, 200 when repeated)", body = CampaignStatus, content_type = JSON),
        (status = 403, description = "not the RO (or, for IMSI lists, not the campaign's new operator)", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn create_campaign(State(op): Shared, peer: PeerIdentity, body: Body) -> Result<Response> {
    ro_only(&peer)?;
    let request: CampaignRequest = body.json()?;
    let (created, status) =
        blocking(move || at("campaign", || op.create_campaign(&request))).await?;
    let code = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((code, Json(status)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/campaigns/{campaign}",
    summary = "A campaign's devices and stages",
    params(("campaign" = String, Path, description = "campaign id")),
    responses(
        (status = 200, description = "identifiers and stages, never a secret", body = CampaignStatus, content_type = JSON),
        (status = 403, description = "not the RO (or, for IMSI lists, not the campaign's new operator)", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn campaign_status(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
) -> Result<Response> {
    ro_only(&peer)?;
    let id = params.campaign()?;
    Ok(Json(blocking(move || op.campaign_status(&id)).await?).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/campaigns/{campaign}/prepare",
    summary = "Step 3 at the new operator: allocate IMSIs and send the list to the old one (no body)",
    params(("campaign" = String, Path, description = "campaign id")),
    responses(
        (status = 200, description = "the list sent", body = PrepareResponse, content_type = JSON),
        (status = 403, description = "not the RO (or, for IMSI lists, not the campaign's new operator)", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn prepare(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
    body: Body,
) -> Result<Response> {
    ro_only(&peer)?;
    let id = params.campaign()?;
    body.empty()?;
    fault("prepare", "before")?;
    let prepared = op.prepare(&id).await?;
    fault("prepare", "after")?;
    Ok(Json(prepared).into_response())
}

/// Step 3 at the old operator: the sender is checked against the campaign before the body
/// is even decoded.
#[utoipa::path(
    post,
    path = "/v1/campaigns/{campaign}/imsi-list",
    summary = "Step 3 at the old operator: the new IMSIs, from the new operator",
    params(("campaign" = String, Path, description = "campaign id")),
    request_body(content((ImsiList = CBOR), (ImsiList = JSON))),
    responses(
        (status = 200, description = "accepted", content((ImsiListAck = CBOR), (ImsiListAck = JSON))),
        (status = 403, description = "not the RO (or, for IMSI lists, not the campaign's new operator)", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn imsi_list(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
    body: Body,
) -> Result<Response> {
    let id = params.campaign()?;
    let sender = peer.common_name.clone();
    let check = (Arc::clone(&op), id.clone(), sender.clone());
    blocking(move || check.0.check_imsi_list_sender(check.2.as_deref(), &check.1)).await?;
    let list: ImsiList = body.message()?;
    reply(
        body.answer,
        &blocking(move || at("imsi-list", || op.receive_imsi_list(sender.as_deref(), &id, &list)))
            .await?,
    )
}

#[utoipa::path(
    post,
    path = "/v1/campaigns/{campaign}/devices/{device}/activate-tre",
    summary = "Step 4: the MACed OTA command that activates the TRE (no body)",
    params(("campaign" = String, Path, description = "campaign id"), ("device" = String, Path, description = "device id (hex of the EK name)")),
    responses(
        (status = 200, description = "the OTA command APDU", content((ActivateTreResponse = CBOR), (ActivateTreResponse = JSON))),
        (status = 403, description = "not the RO (or, for IMSI lists, not the campaign's new operator)", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn activate_tre(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
    body: Body,
) -> Result<Response> {
    ro_only(&peer)?;
    let (id, device) = params.device()?;
    body.empty()?;
    reply(
        body.answer,
        &blocking(move || at("activate-tre", || op.activate_tre(&id, &device))).await?,
    )
}

/// Step 4 confirmed: the card's MACed answer to the activate-TRE command, relayed by the RO.
#[utoipa::path(
    post,
    path = "/v1/campaigns/{campaign}/devices/{device}/tre-activated",
    summary = "Step 4 confirmed: the card's MACed answer",
    params(("campaign" = String, Path, description = "campaign id"), ("device" = String, Path, description = "device id (hex of the EK name)")),
    request_body(content((TreActivated = CBOR), (TreActivated = JSON))),
    responses(
        (status = 200, description = "which subscription the card proved it runs", content((TreActivatedAck = CBOR), (TreActivatedAck = JSON))),
        (status = 403, description = "not the RO (or, for IMSI lists, not the campaign's new operator)", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn tre_activated(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
    body: Body,
) -> Result<Response> {
    ro_only(&peer)?;
    let (id, device) = params.device()?;
    let request: TreActivated = body.message()?;
    reply(
        body.answer,
        &blocking(move || {
            at("tre-activated", || op.tre_activated(&id, &device, &request.response))
        })
        .await?,
    )
}

#[utoipa::path(
    post,
    path = "/v1/campaigns/{campaign}/devices/{device}/register",
    summary = "Steps 6-7: register the device with the new operator (no body)",
    params(("campaign" = String, Path, description = "campaign id"), ("device" = String, Path, description = "device id (hex of the EK name)")),
    responses(
        (status = 200, description = "validation required", body = RegisterResponse, content_type = JSON),
        (status = 403, description = "not the RO (or, for IMSI lists, not the campaign's new operator)", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn register(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
    body: Body,
) -> Result<Response> {
    ro_only(&peer)?;
    let (id, device) = params.device()?;
    body.empty()?;
    Ok(Json(blocking(move || at("register", || op.register(&id, &device))).await?).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/campaigns/{campaign}/devices/{device}/attestation",
    summary = "Steps 10-11: the EAR (COSE_Sign1, application/cose or application/cbor) for the bundle",
    params(("campaign" = String, Path, description = "campaign id"), ("device" = String, Path, description = "device id (hex of the EK name)")),
    request_body(content((Vec<u8> = "application/cose"), (Vec<u8> = CBOR))),
    responses(
        (status = 200, description = "the encrypted bundle and what the receipt must name", content((AttestationResponse = CBOR), (AttestationResponse = JSON))),
        (status = 403, description = "not the RO (or, for IMSI lists, not the campaign's new operator)", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn attestation(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
    body: Body,
) -> Result<Response> {
    ro_only(&peer)?;
    let (id, device) = params.device()?;
    let format = body.answer;
    let ear = body.cose()?;
    reply(
        format,
        &blocking(move || {
            at("attestation", || op.attestation(&id, &device, &ear, SystemTime::now()))
        })
        .await?,
    )
}

#[utoipa::path(
    post,
    path = "/v1/campaigns/{campaign}/devices/{device}/aka-challenge",
    summary = "Step 12: RAND and AUTN for the new USIM (no body)",
    params(("campaign" = String, Path, description = "campaign id"), ("device" = String, Path, description = "device id (hex of the EK name)")),
    responses(
        (status = 200, description = "RAND and AUTN", content((AkaChallenge = CBOR), (AkaChallenge = JSON))),
        (status = 403, description = "not the RO (or, for IMSI lists, not the campaign's new operator)", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn aka_challenge(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
    body: Body,
) -> Result<Response> {
    ro_only(&peer)?;
    let (id, device) = params.device()?;
    body.empty()?;
    reply(
        body.answer,
        &blocking(move || at("aka-challenge", || op.aka_challenge(&id, &device))).await?,
    )
}

#[utoipa::path(
    post,
    path = "/v1/campaigns/{campaign}/devices/{device}/aka-response",
    summary = "Step 12: the USIM's answer",
    params(("campaign" = String, Path, description = "campaign id"), ("device" = String, Path, description = "device id (hex of the EK name)")),
    request_body(content((AkaResult = CBOR), (AkaResult = JSON))),
    responses(
        (status = 200, description = "live, or a resynchronised challenge", content((AkaVerdict = CBOR), (AkaVerdict = JSON))),
        (status = 403, description = "not the RO (or, for IMSI lists, not the campaign's new operator)", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn aka_response(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
    body: Body,
) -> Result<Response> {
    ro_only(&peer)?;
    let (id, device) = params.device()?;
    let result: AkaResult = body.message()?;
    reply(
        body.answer,
        &blocking(move || at("aka-response", || op.aka_response(&id, &device, &result))).await?,
    )
}

#[utoipa::path(
    post,
    path = "/v1/reports",
    summary = "Step 12: one device's result, from the DPF",
    request_body(content((Report = JSON))),
    responses(
        (status = 200, description = "what the operator did with the subscription", body = ReportAck, content_type = JSON),
        (status = 403, description = "not the RO (or, for IMSI lists, not the campaign's new operator)", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn report(State(op): Shared, peer: PeerIdentity, body: Body) -> Result<Response> {
    ro_only(&peer)?;
    let report: Report = body.json()?;
    Ok(Json(blocking(move || at("report", || op.report(&report))).await?).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/subscribers/{imsi}",
    summary = "A subscription's status, never a secret",
    params(("imsi" = String, Path, description = "IMSI")),
    responses(
        (status = 200, description = "the subscription", body = SubscriberView, content_type = JSON),
        (status = 403, description = "not the RO (or, for IMSI lists, not the campaign's new operator)", body = Problem, content_type = PROBLEM_JSON),
    ),
    security(("mutualTLS" = [])),
)]
async fn subscriber_status(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
) -> Result<Response> {
    ro_only(&peer)?;
    let imsi: Imsi = params.get("imsi")?.parse().map_err(|e: protocol::IdError| {
        MnoError::BadPath { what: "IMSI", reason: e.to_string() }
    })?;
    Ok(Json(blocking(move || op.subscriber_status(&imsi)).await?).into_response())
}

/// Runs operation `name` between its fault points `mno.<name>.before` and `.after`
/// (`protocol::fault`): the crash tests stop the operator just before or just after the
/// operation's store transaction.
fn at<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    fault(name, "before")?;
    let out = f()?;
    fault(name, "after")?;
    Ok(out)
}

fn fault(name: &str, at: &str) -> Result<()> {
    protocol::fault::point(&format!("mno.{name}.{at}"))
        .map_err(|_| MnoError::Internal("injected fault"))
}

/// An answer of a CBOR route, in the format the request asked for (`Body::answer`).
fn reply<T: Serialize>(format: Format, value: &T) -> Result<Response> {
    let bytes = match format {
        Format::Cbor => api::to_cbor(value)?,
        Format::Json => {
            protocol::wire::to_json(value).map_err(|_| MnoError::Internal("JSON encoding"))?
        }
    };
    Ok(negotiate::respond(StatusCode::OK, format, bytes))
}

/// A request body, read within the route's limit, with its media type (parameters
/// dropped). Handlers decode it only after the caller's role was checked.
struct Body {
    media: Option<String>,
    /// The body's format if it is CBOR or JSON, and the answer's (`transport::negotiate`).
    format: std::result::Result<Format, negotiate::UnsupportedMediaType>,
    answer: Format,
    bytes: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = MnoError;

    async fn from_request(req: Request, state: &S) -> Result<Self, MnoError> {
        let media = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        let format = negotiate::request_format(req.headers(), negotiate::BOTH);
        let answer = negotiate::response_format(req.headers(), format.as_ref().ok().copied());
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                MnoError::TooLarge
            } else {
                MnoError::BadBody {
                    expected: "a readable body",
                    reason: "the body could not be read".into(),
                }
            }
        })?;
        Ok(Self { media, format, answer, bytes })
    }
}

impl Body {
    fn expect(&self, types: &[&'static str]) -> Result<()> {
        match &self.media {
            Some(m) if types.contains(&m.as_str()) => Ok(()),
            _ => Err(MnoError::UnsupportedMediaType {
                expected: types.first().copied().unwrap_or(""),
            }),
        }
    }

    /// A message of the operator API in CBOR or JSON (byte strings as base64url).
    fn message<T: DeserializeOwned>(&self) -> Result<T> {
        match self.format {
            Ok(Format::Cbor) => api::from_cbor(&self.bytes),
            Ok(Format::Json) => protocol::wire::from_json(&self.bytes, MAX_BULK_BODY)
                .map_err(|e| MnoError::BadBody { expected: "JSON", reason: e.to_string() }),
            Err(_) => Err(MnoError::UnsupportedMediaType { expected: CBOR }),
        }
    }

    fn json<T: DeserializeOwned>(&self) -> Result<T> {
        self.expect(&[JSON])?;
        serde_json::from_slice(&self.bytes).map_err(|e| MnoError::BadBody {
            expected: "JSON",
            reason: e.to_string().chars().take(200).collect(),
        })
    }

    /// A COSE object (the EAR): CBOR bytes, passed on undecoded.
    fn cose(self) -> Result<Vec<u8>> {
        self.expect(&[CBOR, "application/cose"])?;
        if self.bytes.is_empty() {
            return Err(MnoError::BadBody {
                expected: "a COSE_Sign1",
                reason: "empty body".into(),
            });
        }
        Ok(self.bytes.to_vec())
    }

    fn empty(&self) -> Result<()> {
        if self.bytes.is_empty() { Ok(()) } else { Err(MnoError::UnexpectedBody) }
    }
}

/// The route's path parameters, percent-decoded.
struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = MnoError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, MnoError> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| MnoError::BadPath { what: "path", reason: "not valid UTF-8".into() })?;
        Ok(Self(params))
    }
}

impl Params {
    fn get(&self, name: &str) -> Result<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or(MnoError::Internal("route without its parameter"))
    }

    fn campaign(&self) -> Result<CampaignId> {
        self.get("campaign")?.parse().map_err(|reason: &str| MnoError::BadPath {
            what: "campaign id",
            reason: reason.into(),
        })
    }

    fn device(&self) -> Result<(CampaignId, DeviceId)> {
        let device = self.get("device")?.parse().map_err(|e: protocol::IdError| {
            MnoError::BadPath { what: "device id", reason: e.to_string() }
        })?;
        Ok((self.campaign()?, device))
    }
}
