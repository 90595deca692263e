//! Attacks on the device's answers (found while building the matrix; `docs/SECURITY.md`
//! "Findings"): anyone who can reach the RO's device API can post a device's answer; since
//! issue 12 every device request must be signed by the AK bound to the device
//! (`protocol::device_auth`), over a nonce the RO issued. An answer that ends
//! the change is the dangerous one: a "failed" that arrives after the card installed the new
//! profile has both operators give up the subscription the card now runs (MNO-B retires it,
//! the card no longer holds MNO-A's), leaving the device without a working subscription. The
//! RO acts on install, AKA and commit answers, and on abort acknowledgements once the
//! device's AK is enrolled, only when that AK signed them
//! (`protocol::receipt::AnswerStatement`); the attacks on the commit and abort orders are in
//! `orders`. The attacker polls the device's task like the device does, and posts first.

use anyhow::{Context, Result};
use protocol::DeviceId;
use protocol::device_api::{self, AkaResult, DeviceTask, InstallResult};
use protocol::device_auth::{self, RequestStatement};
use protocol::receipt::{ANSWER_SIGNATURE_HEADER, AnswerStatement};
use tre::tpm::{KeyAlg, Tpm};

use super::device::{Act, Attacked, Hostile, Target, attack_one, runtime};
use super::observe::{self, Answer, answer_layer};
use super::{Attacker, Ctx, Expect, Layer, Observed, Outcome, Scenario, Stage};

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "forged-install-failure",
            17,
            Attacker::Network,
            "posts \"install failed\" for a device that is installing its bundle, before the device's receipt arrives, with a nonce the RO issued for the device and no request signature",
            Expect::at(Stage::RoDeviceApi, "device-not-authenticated"),
            forged_install_failure,
        ),
        Scenario::new(
            "forged-aka-failure",
            17,
            Attacker::Network,
            "posts an AKA failure for a device whose new USIM is being challenged, the request and the answer signed by the AK of another TPM (its own)",
            Expect::at(Stage::RoDeviceApi, "device-not-authenticated"),
            forged_aka_failure,
        ),
    ]
}

fn forged_install_failure(ctx: &Ctx) -> Result<Observed> {
    let mut forged = None;
    let attacked = attack_one(ctx, &ctx.image, |d: &mut Hostile, task| {
        if let (DeviceTask::Install { .. }, None) = (&task, &forged) {
            let body = device_api::to_cbor(&InstallResult::Failed { reason: "forged".into() })?;
            forged = Some(post_as_attacker(ctx, &d.id, "install", body, None, None)?);
        }
        Ok(Act::Agent(task))
    })?;
    verdict(&attacked, forged)
}

fn forged_aka_failure(ctx: &Ctx) -> Result<Observed> {
    let mut own = ForeignAk::new(ctx)?;
    let mut forged = None;
    let attacked = attack_one(ctx, &ctx.image, |d: &mut Hostile, task| {
        if let (DeviceTask::Aka { rand, autn }, None) = (&task, &forged) {
            let body = device_api::to_cbor(&AkaResult::Failed { reason: "forged".into() })?;
            let signature = own.sign(&d.id, AnswerStatement::aka_task(rand, autn), &body)?;
            forged =
                Some(post_as_attacker(ctx, &d.id, "aka", body, Some(&mut own), Some(signature))?);
        }
        Ok(Act::Agent(task))
    })?;
    verdict(&attacked, forged)
}

/// The AK of another TPM — the attacker's own device, a perfectly good AK, not the
/// victim's.
pub(super) struct ForeignAk {
    tpm: Tpm,
    ak: tre::tpm::Key,
    // Last: its swtpm outlives the TPM connection.
    _device: Target,
}

impl ForeignAk {
    pub fn new(ctx: &Ctx) -> Result<Self> {
        let device = Target::new(ctx.manufacture()?);
        let mut tpm = Tpm::connect(&device.tcti()?)?;
        let ak = tpm.ak(KeyAlg::Ecc)?;
        Ok(Self { tpm, ak, _device: device })
    }

    /// Its signature (hex) over the answer statement of `body` to `task`, in `device`'s name.
    pub fn sign(&mut self, device: &DeviceId, task: [u8; 32], body: &[u8]) -> Result<String> {
        let statement = AnswerStatement::new(device.clone(), task, body).to_cbor()?;
        Ok(hex::encode(self.tpm.sign(&self.ak, &statement)?))
    }

    /// Its signature (hex) over a device-channel request (`method` `path` with `nonce` and
    /// `body`), in `device`'s name.
    pub fn sign_request(
        &mut self,
        device: &DeviceId,
        method: &str,
        path: &str,
        nonce: [u8; device_auth::NONCE_LEN],
        body: &[u8],
    ) -> Result<String> {
        let statement =
            RequestStatement::new(device.clone(), method, path, nonce, body).to_cbor()?;
        Ok(hex::encode(self.tpm.sign(&self.ak, &statement)?))
    }
}

/// Posts `body` to the device's `endpoint` from the attacker's own connection, on the
/// device channel as an attacker can: with a nonce the RO issued for the device (any refusal
/// carries one), the request signed by `channel`'s AK if given (else unsigned), and the
/// answer signature `signature` (hex) if given.
pub(super) fn post_as_attacker(
    ctx: &Ctx,
    device: &DeviceId,
    endpoint: &str,
    body: Vec<u8>,
    channel: Option<&mut ForeignAk>,
    signature: Option<String>,
) -> Result<Answer> {
    let path = format!("/v1/devices/{device}/{endpoint}");
    let url = format!("{}{path}", ctx.lab.urls.ro);
    let http = ctx.lab.pki.anonymous_client()?;
    let (_, nonce) = unauthenticated(&http, reqwest::Method::POST, &url)?;
    let request_signature = match channel {
        Some(ak) => Some(ak.sign_request(device, "POST", &path, nonce, &body)?),
        None => None,
    };
    aside(move |rt| {
        rt.block_on(async {
            let mut request = http
                .post(&url)
                .header("content-type", "application/cbor")
                .header(device_auth::NONCE_HEADER, hex::encode(nonce))
                .body(body);
            if let Some(signature) = request_signature {
                request = request.header(device_auth::SIGNATURE_HEADER, signature);
            }
            if let Some(signature) = signature {
                request = request.header(ANSWER_SIGNATURE_HEADER, signature);
            }
            let response = request.send().await.with_context(|| format!("{url}: no answer"))?;
            observe::answer_of(response).await
        })
    })
}

/// Sends `method` `url` with no device authentication and returns the RO's answer (its
/// refusal) and the fresh nonce every answer of the device channel carries.
pub(super) fn unauthenticated(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
) -> Result<(Answer, [u8; device_auth::NONCE_LEN])> {
    let (http, url) = (http.clone(), url.to_owned());
    let (answer, nonce) = aside(move |rt| {
        rt.block_on(async {
            let response = http.request(method, &url).send().await?;
            let nonce = response
                .headers()
                .get(device_auth::NEXT_NONCE_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(device_auth::parse_nonce);
            Ok((observe::answer_of(response).await?, nonce))
        })
    })?;
    Ok((answer, nonce.context("the RO's refusal carried no nonce")?))
}

/// The device's state at the RO in `campaign`, read while a plan runs.
pub(super) fn ro_state(ctx: &Ctx, campaign: &str, device: &DeviceId) -> Result<String> {
    aside(|rt| Ok(rt.block_on(observe::ro_device(&ctx.lab, campaign, device))?.state))
}

/// Runs `work` on a thread of its own, with a runtime of its own: a plan runs inside the
/// device's runtime, which is busy driving the device.
pub(super) fn aside<T: Send>(
    work: impl FnOnce(&tokio::runtime::Runtime) -> Result<T> + Send,
) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || work(&runtime()?))
            .join()
            .map_err(|_| anyhow::anyhow!("the attacker's thread panicked"))?
    })
}

/// The RO's answer to the forgery decides; and the device must still switch, or the attack
/// achieved what it wanted whatever the RO said.
pub(super) fn verdict(attacked: &Attacked, forged: Option<Answer>) -> Result<Observed> {
    let forged = forged.context("the device never got the task the attacker waited for")?;
    still_switched(attacked, Observed::new(answer_layer(Stage::RoDeviceApi, &forged)))
}

/// The refusals of `observed` decide, if the device switched all the same: the RO says so
/// and the card committed the new profile.
pub(super) fn still_switched(attacked: &Attacked, mut observed: Observed) -> Result<Observed> {
    if attacked.ro.outcome != Outcome::Accepted {
        let left = Layer::accepted(
            Stage::RoDeviceApi,
            format!("the device did not switch: {}", attacked.ro.detail),
        );
        return Ok(overruled(left, observed));
    }
    if let Err(why) = observe::committed_card(&attacked.target.card, &attacked.target.imsi)? {
        return Ok(overruled(Layer::accepted(Stage::Uicc, why), observed));
    }
    observed.decided.detail.push_str(" — the device switched all the same");
    Ok(observed)
}

/// `accepted` decides: what the attack achieved, whatever the layers of `observed` refused
/// (kept beside it).
pub(super) fn overruled(accepted: Layer, observed: Observed) -> Observed {
    let mut out = Observed::new(accepted).with(observed.decided);
    out.also.extend(observed.also);
    out
}
