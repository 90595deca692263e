//! The operator's HTTPS service (docs/flow.md; `docs/mno.md` "API"): transport's serve loop
//! with mutual TLS required (only certificates under the CI connect), one handler per route,
//! the caller's role checked from its certificate before anything else, bodies bounded
//! (2 MiB for campaigns and IMSI lists, 128 KiB elsewhere) and decoded strictly, errors as
//! problem documents with a stable type each ([`MnoError`]).
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
use axum::routing::{get, post};
use protocol::device_api::AkaResult;
use protocol::{DeviceId, Imsi};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use transport::PeerIdentity;

use super::api::{
    self, CBOR, CampaignId, CampaignRequest, Health, ImsiList, JSON, MAX_BULK_BODY,
    MAX_DEVICE_BODY, Report, TreActivated,
};
use super::config::MnoConfig;
use super::error::{MnoError, Result};
use super::new_operator::blocking;
use super::operator::Operator;
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

/// Every route of the operator API.
pub fn router(operator: Arc<Operator>) -> Router {
    let bulk = Router::new()
        .route(api::path::CAMPAIGNS, post(create_campaign))
        .route("/v1/campaigns/{campaign}/imsi-list", post(imsi_list));
    let per_device = Router::new()
        .route(api::path::HEALTH, get(health))
        .route("/v1/campaigns/{campaign}", get(campaign_status))
        .route("/v1/campaigns/{campaign}/prepare", post(prepare))
        .route("/v1/campaigns/{campaign}/devices/{device}/activate-tre", post(activate_tre))
        .route("/v1/campaigns/{campaign}/devices/{device}/tre-activated", post(tre_activated))
        .route("/v1/campaigns/{campaign}/devices/{device}/register", post(register))
        .route("/v1/campaigns/{campaign}/devices/{device}/attestation", post(attestation))
        .route("/v1/campaigns/{campaign}/devices/{device}/aka-challenge", post(aka_challenge))
        .route("/v1/campaigns/{campaign}/devices/{device}/aka-response", post(aka_response))
        .route(api::path::REPORTS, post(report))
        .route("/v1/subscribers/{imsi}", get(subscriber_status));
    transport::limit_body(bulk, MAX_BULK_BODY)
        .merge(transport::limit_body(per_device, MAX_DEVICE_BODY))
        .fallback(|| async { MnoError::NotFound })
        .method_not_allowed_fallback(|| async { MnoError::MethodNotAllowed })
        .with_state(operator)
}

/// The RO (DRF and DPF) drives every per-device step and administers campaigns.
fn ro_only(peer: &PeerIdentity) -> Result<()> {
    peer.require(&[Role::Ro.expected()])?;
    Ok(())
}

async fn health(State(op): Shared, peer: PeerIdentity) -> Json<Health> {
    tracing::debug!(peer = ?peer.common_name, "health");
    Json(Health { status: "ok".into(), operator: op.name().to_owned() })
}

async fn create_campaign(State(op): Shared, peer: PeerIdentity, body: Body) -> Result<Response> {
    ro_only(&peer)?;
    let request: CampaignRequest = body.json()?;
    let (created, status) =
        blocking(move || at("campaign", || op.create_campaign(&request))).await?;
    let code = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((code, Json(status)).into_response())
}

async fn campaign_status(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
) -> Result<Response> {
    ro_only(&peer)?;
    let id = params.campaign()?;
    Ok(Json(blocking(move || op.campaign_status(&id)).await?).into_response())
}

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
    let list: ImsiList = body.cbor()?;
    cbor(
        &blocking(move || at("imsi-list", || op.receive_imsi_list(sender.as_deref(), &id, &list)))
            .await?,
    )
}

async fn activate_tre(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
    body: Body,
) -> Result<Response> {
    ro_only(&peer)?;
    let (id, device) = params.device()?;
    body.empty()?;
    cbor(&blocking(move || at("activate-tre", || op.activate_tre(&id, &device))).await?)
}

/// Step 4 confirmed: the card's MACed answer to the activate-TRE command, relayed by the RO.
async fn tre_activated(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
    body: Body,
) -> Result<Response> {
    ro_only(&peer)?;
    let (id, device) = params.device()?;
    let request: TreActivated = body.cbor()?;
    cbor(
        &blocking(move || {
            at("tre-activated", || op.tre_activated(&id, &device, &request.response))
        })
        .await?,
    )
}

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

async fn attestation(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
    body: Body,
) -> Result<Response> {
    ro_only(&peer)?;
    let (id, device) = params.device()?;
    let ear = body.cose()?;
    cbor(
        &blocking(move || {
            at("attestation", || op.attestation(&id, &device, &ear, SystemTime::now()))
        })
        .await?,
    )
}

async fn aka_challenge(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
    body: Body,
) -> Result<Response> {
    ro_only(&peer)?;
    let (id, device) = params.device()?;
    body.empty()?;
    cbor(&blocking(move || at("aka-challenge", || op.aka_challenge(&id, &device))).await?)
}

async fn aka_response(
    State(op): Shared,
    peer: PeerIdentity,
    params: Params,
    body: Body,
) -> Result<Response> {
    ro_only(&peer)?;
    let (id, device) = params.device()?;
    let result: AkaResult = body.cbor()?;
    cbor(&blocking(move || at("aka-response", || op.aka_response(&id, &device, &result))).await?)
}

async fn report(State(op): Shared, peer: PeerIdentity, body: Body) -> Result<Response> {
    ro_only(&peer)?;
    let report: Report = body.json()?;
    Ok(Json(blocking(move || at("report", || op.report(&report))).await?).into_response())
}

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

fn cbor<T: Serialize>(value: &T) -> Result<Response> {
    Ok(([(header::CONTENT_TYPE, CBOR)], api::to_cbor(value)?).into_response())
}

/// A request body, read within the route's limit, with its media type (parameters
/// dropped). Handlers decode it only after the caller's role was checked.
struct Body {
    media: Option<String>,
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
        Ok(Self { media, bytes })
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

    fn cbor<T: DeserializeOwned>(&self) -> Result<T> {
        self.expect(&[CBOR])?;
        api::from_cbor(&self.bytes)
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
