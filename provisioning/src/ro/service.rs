//! The RO's HTTPS routes (docs/flow.md): the operators' campaign API, authenticated by their
//! CI certificates, and the device API, where devices authenticate by attestation. One
//! handler per route; every error is a problem document with the type of its `RoError`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use protocol::DeviceId;
use protocol::device_api::{self, AbortAck, AkaResult, AttachRequest, CommitResult, InstallResult};
use protocol::receipt::ANSWER_SIGNATURE_HEADER;
use transport::PeerIdentity;

use super::Ro;
use super::campaign::NewCampaign;
use super::device::Answer;
use super::error::RoError;

/// Largest body of a campaign request (10 000 devices fit).
const MAX_CAMPAIGN_BODY: usize = 4 * 1024 * 1024;

pub(crate) fn router(ro: Arc<Ro>) -> Router {
    let devices = Router::new()
        .route("/v1/attach", post(attach))
        .route("/v1/devices/{device}/task", get(task))
        .route("/v1/devices/{device}/enrolment", post(enrolment))
        .route("/v1/devices/{device}/activation", post(activation))
        .route("/v1/devices/{device}/evidence", post(evidence))
        .route("/v1/devices/{device}/install", post(install))
        .route("/v1/devices/{device}/aka", post(aka))
        .route("/v1/devices/{device}/commit", post(commit))
        .route("/v1/devices/{device}/abort", post(abort))
        .route("/health", get(health));
    let devices = transport::limit_body(devices, device_api::MAX_MESSAGE_SIZE);
    let admin = Router::new()
        .route("/v1/campaigns", post(create_campaign).get(campaigns))
        .route("/v1/campaigns/{id}", get(campaign))
        .route("/v1/campaigns/{id}/cancel", post(cancel_campaign));
    let admin = transport::limit_body(admin, MAX_CAMPAIGN_BODY);
    devices.merge(admin).with_state(ro)
}

type Shared = State<Arc<Ro>>;

async fn create_campaign(
    State(ro): Shared,
    peer: PeerIdentity,
    body: Bytes,
) -> Result<Response, RoError> {
    let caller =
        peer.require_role(&["mno-a", "mno-b"]).map_err(|p| RoError::Forbidden(p.title))?.to_owned();
    let new: NewCampaign =
        serde_json::from_slice(&body).map_err(|e| RoError::Decode(e.to_string()))?;
    let report = ro.create_campaign(&caller, new).await?;
    Ok((StatusCode::CREATED, axum::Json(report)).into_response())
}

async fn campaigns(State(ro): Shared, peer: PeerIdentity) -> Result<Response, RoError> {
    peer.require_role(&["mno-a", "mno-b", "ro"]).map_err(|p| RoError::Forbidden(p.title))?;
    Ok(axum::Json(ro.campaign_list()?).into_response())
}

async fn cancel_campaign(
    State(ro): Shared,
    peer: PeerIdentity,
    Path(id): Path<String>,
) -> Result<Response, RoError> {
    let caller =
        peer.require_role(&["mno-a", "mno-b"]).map_err(|p| RoError::Forbidden(p.title))?.to_owned();
    Ok(axum::Json(ro.cancel_campaign(&caller, &id).await?).into_response())
}

async fn campaign(
    State(ro): Shared,
    peer: PeerIdentity,
    Path(id): Path<String>,
) -> Result<Response, RoError> {
    peer.require_role(&["mno-a", "mno-b", "ro"]).map_err(|p| RoError::Forbidden(p.title))?;
    Ok(axum::Json(ro.campaign_report(&id)?).into_response())
}

/// Long poll: answers as soon as there is work, or `Idle` after the poll timeout.
async fn task(State(ro): Shared, Path(device): Path<String>) -> Result<Response, RoError> {
    let device = device_id(&device)?;
    let deadline = tokio::time::Instant::now() + ro.config.poll_timeout();
    loop {
        let wake = ro.wake.notified();
        let task = ro.task_for(&device).await?;
        if task != device_api::DeviceTask::Idle || tokio::time::Instant::now() >= deadline {
            return cbor(&task);
        }
        // Re-check at least every second: some work (a peer's answer) does not notify.
        let _ = tokio::time::timeout(
            Duration::from_secs(1).min(deadline - tokio::time::Instant::now()),
            wake,
        )
        .await;
    }
}

async fn attach(State(ro): Shared, body: Bytes) -> Result<StatusCode, RoError> {
    let request: AttachRequest = decode(&body)?;
    ro.attach(request).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn enrolment(
    State(ro): Shared,
    Path(device): Path<String>,
    body: Bytes,
) -> Result<StatusCode, RoError> {
    ro.enrolment(&device_id(&device)?, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn activation(
    State(ro): Shared,
    Path(device): Path<String>,
    body: Bytes,
) -> Result<StatusCode, RoError> {
    ro.activation(&device_id(&device)?, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn evidence(
    State(ro): Shared,
    Path(device): Path<String>,
    body: Bytes,
) -> Result<StatusCode, RoError> {
    ro.evidence(&device_id(&device)?, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn install(
    State(ro): Shared,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, RoError> {
    let result: InstallResult = decode(&body)?;
    ro.install(&device_id(&device)?, result, answer(&headers, &body)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn aka(
    State(ro): Shared,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, RoError> {
    let result: AkaResult = decode(&body)?;
    ro.aka(&device_id(&device)?, result, answer(&headers, &body)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body and the AK signature of an answer that decides the change.
fn answer<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Answer<'a> {
    let signature = headers.get(ANSWER_SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    Answer { body, signature }
}

async fn commit(
    State(ro): Shared,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, RoError> {
    let result: CommitResult = decode(&body)?;
    ro.commit(&device_id(&device)?, result, answer(&headers, &body)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn abort(
    State(ro): Shared,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, RoError> {
    let ack: AbortAck = decode(&body)?;
    ro.abort(&device_id(&device)?, ack, answer(&headers, &body)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn health() -> Response {
    axum::Json(serde_json::json!({ "status": "ok", "role": "ro" })).into_response()
}

fn device_id(s: &str) -> Result<DeviceId, RoError> {
    s.parse().map_err(|e| RoError::Decode(format!("device id: {e}")))
}

fn decode<T: for<'de> serde::Deserialize<'de>>(body: &[u8]) -> Result<T, RoError> {
    device_api::from_cbor(body).map_err(|e| RoError::Decode(e.to_string()))
}

fn cbor<T: serde::Serialize>(value: &T) -> Result<Response, RoError> {
    let bytes = device_api::to_cbor(value).map_err(|e| RoError::Decode(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/cbor")], bytes).into_response())
}
