//! A typed client of the operator API (`docs/mno.md` "API") for the RO, for the new operator
//! sending its IMSI list, and for tests: one method per endpoint over a mutual-TLS reqwest
//! client (`crate::pki::Pki::client` or `transport::client::client`). Errors are transport
//! errors: a refusal arrives as `transport::Error::Problem` with the operator's problem type.

use protocol::DeviceId;
use protocol::Imsi;
use protocol::device_api::AkaResult;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::api::{
    self, ActivateTreResponse, AkaChallenge, AkaVerdict, AttestationResponse, CampaignId,
    CampaignRequest, CampaignStatus, Health, ImsiList, ImsiListAck, PrepareResponse,
    RegisterResponse, Report, ReportAck, TreActivated, TreActivatedAck, path,
};
use super::records::SubscriberView;
use transport::Error;
use transport::client::{MAX_RESPONSE_BYTES, check, json, read_limited};

/// An operator's base URL and an HTTPS client presenting the caller's certificate.
#[derive(Clone, Debug)]
pub struct MnoClient {
    http: reqwest::Client,
    base: String,
}

impl MnoClient {
    /// `base_url` like `https://localhost:8441` (a trailing slash is ignored).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        Self { http, base: base_url.trim_end_matches('/').to_owned() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn health(&self) -> Result<Health, Error> {
        json(self.http.get(self.url(path::HEALTH)).send().await?).await
    }

    /// Step 2 (RO → both operators).
    pub async fn create_campaign(
        &self,
        campaign: &CampaignRequest,
    ) -> Result<CampaignStatus, Error> {
        json(self.http.post(self.url(path::CAMPAIGNS)).json(campaign).send().await?).await
    }

    pub async fn campaign(&self, id: &CampaignId) -> Result<CampaignStatus, Error> {
        json(self.http.get(self.url(&path::campaign(id))).send().await?).await
    }

    /// Step 3 (RO → new operator).
    pub async fn prepare(&self, id: &CampaignId) -> Result<PrepareResponse, Error> {
        json(self.http.post(self.url(&path::prepare(id))).send().await?).await
    }

    /// Step 3 (new operator → old operator).
    pub async fn send_imsi_list(
        &self,
        id: &CampaignId,
        list: &ImsiList,
    ) -> Result<ImsiListAck, Error> {
        self.cbor(&path::imsi_list(id), list).await
    }

    /// Step 4 (RO → old operator).
    pub async fn activate_tre(
        &self,
        id: &CampaignId,
        device: &DeviceId,
    ) -> Result<ActivateTreResponse, Error> {
        self.cbor_empty(&path::device(id, device, "activate-tre")).await
    }

    /// Step 4 confirmed (RO → old operator): the card's MACed answer to the command.
    pub async fn tre_activated(
        &self,
        id: &CampaignId,
        device: &DeviceId,
        response: &[u8],
    ) -> Result<TreActivatedAck, Error> {
        let body = TreActivated { response: serde_bytes::ByteBuf::from(response.to_vec()) };
        self.cbor(&path::device(id, device, "tre-activated"), &body).await
    }

    /// Step 6 (RO's DRF → new operator).
    pub async fn register(
        &self,
        id: &CampaignId,
        device: &DeviceId,
    ) -> Result<RegisterResponse, Error> {
        json(self.http.post(self.url(&path::device(id, device, "register"))).send().await?).await
    }

    /// Steps 9–11 (RO → new operator): the EAR as the PVA signed it; returns the bundle the
    /// operator encrypted to the EAR's bundle key, with the profile's non-secret facts.
    pub async fn attestation(
        &self,
        id: &CampaignId,
        device: &DeviceId,
        ear: &[u8],
    ) -> Result<AttestationResponse, Error> {
        let request = cbor_request(
            &self.http,
            self.url(&path::device(id, device, "attestation")),
            ear.to_vec(),
        );
        decode(request.send().await?).await
    }

    /// Step 12 (RO → new operator).
    pub async fn aka_challenge(
        &self,
        id: &CampaignId,
        device: &DeviceId,
    ) -> Result<AkaChallenge, Error> {
        self.cbor_empty(&path::device(id, device, "aka-challenge")).await
    }

    /// Step 12 (RO → new operator): the device's answer as it posted it.
    pub async fn aka_response(
        &self,
        id: &CampaignId,
        device: &DeviceId,
        result: &AkaResult,
    ) -> Result<AkaVerdict, Error> {
        self.cbor(&path::device(id, device, "aka-response"), result).await
    }

    /// Step 12 (RO's DPF → both operators).
    pub async fn report(&self, report: &Report) -> Result<ReportAck, Error> {
        json(self.http.post(self.url(path::REPORTS)).json(report).send().await?).await
    }

    pub async fn subscriber(&self, imsi: &Imsi) -> Result<SubscriberView, Error> {
        json(self.http.get(self.url(&path::subscriber(imsi))).send().await?).await
    }

    async fn cbor<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
    ) -> Result<A, Error> {
        let body = api::to_cbor(body).map_err(|e| Error::Decode(e.to_string()))?;
        decode(cbor_request(&self.http, self.url(path), body).send().await?).await
    }

    async fn cbor_empty<A: DeserializeOwned>(&self, path: &str) -> Result<A, Error> {
        decode(self.http.post(self.url(path)).send().await?).await
    }
}

async fn decode<A: DeserializeOwned>(response: reqwest::Response) -> Result<A, Error> {
    let body = read_limited(check(response).await?, MAX_RESPONSE_BYTES).await?;
    api::from_cbor(&body).map_err(|e| Error::Decode(e.to_string()))
}

fn cbor_request(http: &reqwest::Client, url: String, body: Vec<u8>) -> reqwest::RequestBuilder {
    http.post(url).header(reqwest::header::CONTENT_TYPE, api::CBOR).body(body)
}
