//! The RO as a client of the PVA and the operators (docs/flow.md): mutual TLS with the RO's
//! certificate, CBOR bodies, bounded responses, and a peer's problem document turned into
//! [`RoError::PeerRefused`] with the peer's problem type kept, so a campaign's failure says
//! which check of which role refused.

use std::collections::HashMap;

use protocol::DeviceId;
use protocol::device_api::{self, AkaResult};
use protocol::pva_api::{
    self, ActivateRequest, ActivateResponse, AppraiseRequest, AppraiseResponse, ChallengeRequest,
    ChallengeResponse, EnrolRequest, EnrolResponse, Message,
};
use protocol::role::{Expected, Role};
use serde_bytes::ByteBuf;

use super::config::RoConfig;
use super::error::RoError;
use super::store::CampaignRow;
use crate::mno::api::{
    self as mno_api, ActivateTreResponse, AkaChallenge, AkaVerdict, AttestationResponse,
    CampaignId, CampaignRequest, PrepareResponse, RegisterResponse, TreActivated, TreActivatedAck,
    path as mno_path,
};

/// Largest response the RO reads from a peer.
const MAX_RESPONSE: usize = 256 * 1024;

/// HTTPS clients to the other roles, one per peer: each accepts only its peer's role and
/// name in the TLS handshake (`protocol::role`), so the PVA's certificate cannot answer for
/// an operator, nor MNO-A's for MNO-B.
#[derive(Debug, Clone)]
pub struct Peers {
    clients: HashMap<String, reqwest::Client>,
    pva: String,
    /// Base URLs by operator name.
    operators: HashMap<String, String>,
}

impl Peers {
    /// `client` builds the HTTPS client that accepts only the given server.
    pub fn new(
        config: &RoConfig,
        client: impl Fn(Expected) -> Result<reqwest::Client, RoError>,
    ) -> Result<Self, RoError> {
        let mut clients = HashMap::new();
        clients.insert("pva".to_owned(), client(Expected::named(Role::Pva, "pva"))?);
        let mut operators = HashMap::new();
        for (name, url) in &config.peers.operators {
            clients.insert(name.clone(), client(Expected::named(Role::Operator, name))?);
            operators.insert(name.clone(), url.trim_end_matches('/').to_owned());
        }
        Ok(Self { clients, pva: config.peers.pva.trim_end_matches('/').to_owned(), operators })
    }

    /// The base URL of an operator by name.
    pub fn operator(&self, name: &str) -> Result<&str, RoError> {
        self.operators
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| RoError::BadCampaign(format!("unknown operator {name:?}")))
    }

    pub async fn enrol(&self, request: &EnrolRequest) -> Result<EnrolResponse, RoError> {
        self.pva_call(pva_api::path::ENROL, request).await
    }

    pub async fn activate(&self, request: &ActivateRequest) -> Result<ActivateResponse, RoError> {
        self.pva_call(pva_api::path::ACTIVATE, request).await
    }

    pub async fn challenge(&self, device: &DeviceId) -> Result<ChallengeResponse, RoError> {
        let request = ChallengeRequest { device_id: device.clone(), policy_id: None };
        self.pva_call(pva_api::path::CHALLENGE, &request).await
    }

    pub async fn appraise(&self, evidence: Vec<u8>) -> Result<AppraiseResponse, RoError> {
        let request = AppraiseRequest { evidence: ByteBuf::from(evidence) };
        self.pva_call(pva_api::path::APPRAISE, &request).await
    }

    async fn pva_call<Req: Message, Resp: Message>(
        &self,
        path: &str,
        request: &Req,
    ) -> Result<Resp, RoError> {
        let body = request.to_cbor().map_err(|e| RoError::Decode(e.to_string()))?;
        let bytes =
            self.post("pva", &format!("{}{path}", self.pva), "application/cbor", body).await?;
        Resp::from_cbor(&bytes).map_err(|e| RoError::PeerUnreachable {
            peer: "pva".into(),
            detail: format!("unreadable answer: {e}"),
        })
    }

    /// POSTs `body` and returns the response body; refusals and transport failures become
    /// the RO's errors with the peer named.
    pub async fn post(
        &self,
        peer: &str,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, RoError> {
        let unreachable = |e: &dyn std::fmt::Display| RoError::PeerUnreachable {
            peer: peer.to_owned(),
            detail: e.to_string(),
        };
        let http = self.clients.get(peer).ok_or_else(|| RoError::PeerUnreachable {
            peer: peer.to_owned(),
            detail: "not a configured peer".into(),
        })?;
        let response = http
            .post(url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        let response = match transport::client::check(response).await {
            Ok(response) => response,
            Err(transport::Error::Problem(problem)) => {
                return Err(RoError::PeerRefused {
                    peer: peer.to_owned(),
                    status: problem.status,
                    problem_type: problem.type_uri.clone(),
                    detail: problem.detail.clone().unwrap_or_else(|| problem.title.clone()),
                });
            }
            Err(e) => return Err(unreachable(&e)),
        };
        let bytes = transport::client::read_limited(response, MAX_RESPONSE)
            .await
            .map_err(|e| unreachable(&e))?;
        Ok(bytes.to_vec())
    }
}

/// What the new operator's AuC said to the USIM's answer.
#[derive(Debug)]
pub enum AkaAnswer {
    /// RES = XRES: the new subscription is live.
    Live,
    /// Resynchronised after AUTS: run AUTHENTICATE again with this challenge.
    Retry { rand: Vec<u8>, autn: Vec<u8> },
}

impl Peers {
    /// Step 2: tell an operator about the campaign (JSON).
    pub async fn announce(
        &self,
        operator: &str,
        campaign: &CampaignRequest,
    ) -> Result<(), RoError> {
        let url = format!("{}{}", self.operator(operator)?, mno_path::CAMPAIGNS);
        self.post(operator, &url, mno_api::JSON, json(campaign)?).await.map(drop)
    }

    /// Step 3: the new operator allocates IMSIs and sends the list to the old one (JSON).
    pub async fn prepare(
        &self,
        operator: &str,
        campaign: &CampaignId,
    ) -> Result<PrepareResponse, RoError> {
        let url = format!("{}{}", self.operator(operator)?, mno_path::prepare(campaign));
        let bytes = self.post(operator, &url, mno_api::JSON, Vec::new()).await?;
        serde_json::from_slice(&bytes).map_err(|e| unreadable(operator, &e))
    }

    /// Step 4: the old operator's activate-TRE command for the device's UICC.
    pub async fn activate_tre(
        &self,
        campaign: &CampaignRow,
        device: &DeviceId,
    ) -> Result<Vec<u8>, RoError> {
        let answer: ActivateTreResponse = self
            .device_call(
                &campaign.from,
                &campaign.id,
                device,
                "activate-tre",
                mno_api::CBOR,
                Vec::new(),
            )
            .await?;
        Ok(answer.command.into_vec())
    }

    /// Step 4 confirmed: the card's MACed answer to the activate-TRE command, to the old
    /// operator, which checks it with the card's KID.
    pub async fn tre_activated(
        &self,
        campaign: &CampaignRow,
        device: &DeviceId,
        proof: &[u8],
    ) -> Result<(), RoError> {
        let body = mno_api::to_cbor(&TreActivated { response: ByteBuf::from(proof.to_vec()) })
            .map_err(|e| RoError::Decode(e.to_string()))?;
        let _: TreActivatedAck = self
            .device_call(&campaign.from, &campaign.id, device, "tre-activated", mno_api::CBOR, body)
            .await?;
        Ok(())
    }

    /// Steps 6–7: registration with the new operator, which asks for validation.
    pub async fn register(&self, campaign: &CampaignRow, device: &DeviceId) -> Result<(), RoError> {
        let new = &campaign.to;
        let url = self.device_url(new, &campaign.id, device, "register")?;
        let bytes = self.post(new, &url, mno_api::JSON, Vec::new()).await?;
        let answer: RegisterResponse =
            serde_json::from_slice(&bytes).map_err(|e| unreadable(new, &e))?;
        if !answer.validation_required {
            // tresor's operators always require validation; one that does not is misconfigured.
            return Err(RoError::PeerRefused {
                peer: new.clone(),
                status: 200,
                problem_type: "validation-not-required".into(),
                detail: "the new operator did not ask for validation".into(),
            });
        }
        Ok(())
    }

    /// Steps 9–11: the EAR to the new operator; its answer is the bundle it encrypted to the
    /// EAR's bundle key, with the profile's non-secret facts.
    pub async fn attestation(
        &self,
        campaign: &CampaignRow,
        device: &DeviceId,
        ear: &[u8],
    ) -> Result<AttestationResponse, RoError> {
        self.device_call(
            &campaign.to,
            &campaign.id,
            device,
            "attestation",
            "application/cose",
            ear.to_vec(),
        )
        .await
    }

    /// Step 12: the AuC's challenge for the new USIM.
    pub async fn aka_challenge(
        &self,
        campaign: &CampaignRow,
        device: &DeviceId,
    ) -> Result<(Vec<u8>, Vec<u8>), RoError> {
        let answer: AkaChallenge = self
            .device_call(
                &campaign.to,
                &campaign.id,
                device,
                "aka-challenge",
                mno_api::CBOR,
                Vec::new(),
            )
            .await?;
        Ok((answer.rand.into_vec(), answer.autn.into_vec()))
    }

    /// Step 12: the USIM's RES or AUTS to the AuC.
    pub async fn aka_response(
        &self,
        campaign: &CampaignRow,
        device: &DeviceId,
        res: Option<&[u8]>,
        auts: Option<&[u8]>,
    ) -> Result<AkaAnswer, RoError> {
        let result = match (res, auts) {
            (Some(res), _) => AkaResult::Res { res: ByteBuf::from(res.to_vec()) },
            (None, Some(auts)) => AkaResult::Auts { auts: ByteBuf::from(auts.to_vec()) },
            (None, None) => AkaResult::Failed { reason: "no answer".into() },
        };
        let body = device_api::to_cbor(&result).map_err(|e| RoError::Decode(e.to_string()))?;
        let verdict: AkaVerdict = self
            .device_call(&campaign.to, &campaign.id, device, "aka-response", mno_api::CBOR, body)
            .await?;
        Ok(match verdict {
            AkaVerdict::Live => AkaAnswer::Live,
            AkaVerdict::Challenge { rand, autn } => {
                AkaAnswer::Retry { rand: rand.into_vec(), autn: autn.into_vec() }
            }
        })
    }

    fn device_url(
        &self,
        operator: &str,
        campaign: &str,
        device: &DeviceId,
        action: &str,
    ) -> Result<String, RoError> {
        let campaign: CampaignId = campaign.parse().map_err(|e: &str| RoError::Decode(e.into()))?;
        Ok(format!("{}{}", self.operator(operator)?, mno_path::device(&campaign, device, action)))
    }

    async fn device_call<T: for<'de> serde::Deserialize<'de>>(
        &self,
        operator: &str,
        campaign: &str,
        device: &DeviceId,
        action: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<T, RoError> {
        let url = self.device_url(operator, campaign, device, action)?;
        let bytes = self.post(operator, &url, content_type, body).await?;
        mno_api::from_cbor(&bytes).map_err(|e| unreadable(operator, &e))
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, RoError> {
    serde_json::to_vec(value).map_err(|e| RoError::Decode(e.to_string()))
}

fn unreadable(peer: &str, e: &dyn std::fmt::Display) -> RoError {
    RoError::PeerUnreachable { peer: peer.to_owned(), detail: format!("unreadable answer: {e}") }
}
