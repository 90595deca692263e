//! Attacks between the operators (issue 7, item 15; `docs/mno.md` "POST
//! /v1/campaigns/{id}/imsi-list"): MNO-A learns the new IMSIs only from the campaign's new
//! operator. Rogue peers with other CI certificates — the RO's, the PVA's, MNO-A's own —
//! send MNO-A a list with an IMSI of their choosing; MNO-A must refuse each before reading
//! the body and keep MNO-B's list, which the device then switches to.

use anyhow::{Context, Result};
use protocol::device_api::DeviceTask;
use provisioning::mno::api::{self as mno_api, ImsiList, ImsiListEntry};
use provisioning::pki::Role;

use super::device::{Hostile, Target, campaign, genuine, runtime};
use super::observe::{self, answer_layer};
use super::{Attacker, Ctx, Expect, Layer, Observed, Scenario, Stage};

/// The IMSI the rogue peers would have the device given.
const FORGED_IMSI: &str = "001099999999999";

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![Scenario::new(
        "imsi-list-from-wrong-party",
        15,
        Attacker::Peer,
        "sends MNO-A the campaign's IMSI list with an IMSI of its own, holding the RO's certificate (and the PVA's, and MNO-A's own)",
        Expect::at(Stage::MnoA, "imsi-list-sender-not-campaign-operator"),
        wrong_sender,
    )]
}

fn wrong_sender(ctx: &Ctx) -> Result<Observed> {
    let target = Target::new(ctx.manufacture()?);
    let rt = runtime()?;
    let id = rt.block_on(campaign(ctx, "mno-a", "mno-b", &[(&target.device_id, &target.iccid)]))?;
    let list = ImsiList {
        entries: vec![ImsiListEntry {
            device_id: target.device_id.clone(),
            iccid: target.iccid.clone(),
            imsi: FORGED_IMSI.parse()?,
        }],
    };
    let body = mno_api::to_cbor(&list)?;
    let url = format!("{}/v1/campaigns/{id}/imsi-list", ctx.lab.urls.mno_a);
    let view = |rt: &tokio::runtime::Runtime| -> Result<String> {
        let http = ctx.lab.pki.client(Role::Ro)?;
        let url = format!("{}/v1/campaigns/{id}", ctx.lab.urls.mno_a);
        let status: serde_json::Value =
            rt.block_on(async { transport::client::json(http.get(url).send().await?).await })?;
        Ok(status["devices"][0]["new_imsi"].as_str().unwrap_or_default().to_owned())
    };
    let before = view(&rt)?;
    let mut layers = Vec::new();
    for role in [Role::Ro, Role::Pva, Role::mno_a()] {
        let http = ctx.lab.pki.client(role.clone())?;
        let answer = rt.block_on(observe::post(&http, &url, mno_api::CBOR, body.clone()))?;
        let mut layer = answer_layer(Stage::MnoA, &answer);
        layer.detail = format!("as {role}: {}", layer.detail);
        if role != Role::Ro {
            // The first refusal decides; the others say whose certificate they tried.
            layer.checks.iter_mut().for_each(|c| *c = format!("{c} (as {role})"));
        }
        layers.push(layer);
    }
    let after = view(&rt)?;
    let mut layers = layers.into_iter();
    let mut observed = Observed::new(layers.next().context("no answer")?);
    observed.also.extend(layers);
    if after != before || after == FORGED_IMSI {
        return Ok(Observed::new(Layer::accepted(
            Stage::MnoA,
            format!("MNO-A now lists IMSI {after}"),
        )));
    }
    // MNO-B's list stands: the device switches to the IMSI MNO-B allocated.
    let mut device = Hostile::boot(ctx, &target, &ctx.image)?;
    rt.block_on(device.run(|d: &mut Hostile, task: DeviceTask| genuine(d, task)))?;
    let imsi = device.agent.card().imsi().to_string();
    anyhow::ensure!(imsi == before, "the device switched to {imsi}, not to MNO-B's {before}");
    Ok(observed)
}
