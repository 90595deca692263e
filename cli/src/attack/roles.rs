//! Attacks with valid certificates of the wrong role (issue 12, "Role-bound identities";
//! `protocol::role`, `docs/SECURITY.md` "Who may call what"): every certificate under the
//! CI names its role, and every interface checks the role it requires — a server the client
//! certificate of each caller, a client the certificate of each server. The attacker holds
//! a genuine CI certificate (the PVA's, an operator's, the RO's) and presents it where that
//! role has no business; and a device's accomplice asks for another device's task.

use anyhow::{Context, Result};
use protocol::DeviceId;
use protocol::device_api::DeviceTask;
use protocol::device_auth;
use protocol::role::{Expected, Role as CertRole};
use provisioning::pki::Role;
use reqwest::Method;

use super::answers::{ForeignAk, aside, still_switched, unauthenticated};
use super::device::{Act, Hostile, attack_one, runtime};
use super::observe::{self, Answer, answer_layer};
use super::{Attacker, Ctx, Expect, Layer, Observed, Scenario, Stage};

/// The check every probe of `wrong-role-certificates` must meet.
const REFUSED: &str = "wrong-role-refused";

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "wrong-role-certificates",
            19,
            Attacker::Peer,
            "presents a valid CI certificate of the wrong role at every interface: the PVA's as a client of enrolment, campaigns, the operators' per-device steps and reports, the RO's at campaign creation, each operator's at the other operator's per-device steps (reserved to the RO); and, as a server, the PVA's or an operator's certificate to the device (which expects the RO), MNO-B's to the RO's PVA client, MNO-A's to the RO's MNO-B client",
            Expect::at(Stage::Tls, REFUSED),
            wrong_roles,
        ),
        Scenario::new(
            "task-fetched-by-another-device",
            19,
            Attacker::Device,
            "an accomplice device asks the RO for a victim's task (its MNO-A activate-TRE command): anonymously, and signed by the accomplice's own AK over a nonce the RO issued for the victim",
            Expect::at(Stage::RoDeviceApi, "device-not-authenticated"),
            task_of_another_device,
        ),
    ]
}

/// A request as a client of one role to a server, and how the server must answer.
struct Probe {
    what: String,
    http: reqwest::Client,
    url: String,
}

fn wrong_roles(ctx: &Ctx) -> Result<Observed> {
    let pki = &ctx.lab.pki;
    let urls = &ctx.lab.urls;
    let device =
        DeviceId::from_name(&[0x00, 0x0B].iter().copied().chain([7; 32]).collect::<Vec<_>>())?;
    let per_device = |base: &str, step: &str| {
        format!("{base}/v1/campaigns/00000000-0000-4000-8000-000000000000/devices/{device}/{step}")
    };
    let as_role = |role: Role| pki.client(role);
    let mut probes = Vec::new();
    let mut add = |what: &str, http: reqwest::Client, url: String| {
        probes.push(Probe { what: what.to_owned(), http, url });
    };
    // Servers checking their clients.
    add("PVA enrolment, as the PVA", as_role(Role::Pva)?, format!("{}/v1/enrol", urls.pva));
    add("PVA activation, as the PVA", as_role(Role::Pva)?, format!("{}/v1/activate", urls.pva));
    add(
        "RO campaign creation, as the PVA",
        as_role(Role::Pva)?,
        format!("{}/v1/campaigns", urls.ro),
    );
    add("RO campaign creation, as the RO", as_role(Role::Ro)?, format!("{}/v1/campaigns", urls.ro));
    add(
        "RO campaign cancel, as the PVA",
        as_role(Role::Pva)?,
        format!("{}/v1/campaigns/00000000-0000-4000-8000-000000000000/cancel", urls.ro),
    );
    for step in ["activate-tre", "tre-activated"] {
        add(
            &format!("MNO-A {step}, as MNO-B"),
            as_role(Role::mno_b())?,
            per_device(&urls.mno_a, step),
        );
        add(
            &format!("MNO-A {step}, as the PVA"),
            as_role(Role::Pva)?,
            per_device(&urls.mno_a, step),
        );
    }
    for step in ["register", "attestation", "aka-challenge", "aka-response"] {
        add(
            &format!("MNO-B {step}, as MNO-A"),
            as_role(Role::mno_a())?,
            per_device(&urls.mno_b, step),
        );
        add(
            &format!("MNO-B {step}, as the PVA"),
            as_role(Role::Pva)?,
            per_device(&urls.mno_b, step),
        );
    }
    add("MNO-A reports, as the PVA", as_role(Role::Pva)?, format!("{}/v1/reports", urls.mno_a));
    // Clients checking their servers: each connects to a server of another role.
    let roots = transport::tls::roots_from_pem_file(&ctx.lab.dir.join("pki").join("ci.pem"))?;
    let device_client = || {
        let expected = transport::ServerRole::Expected(Expected::role(CertRole::Ro));
        transport::client::client(&roots, None, &expected)
    };
    add("the device's RO client, to the PVA", device_client()?, format!("{}/v1/health", urls.pva));
    add("the device's RO client, to MNO-B", device_client()?, format!("{}/health", urls.mno_b));
    add(
        "the RO's PVA client, to MNO-B",
        pki.client_to(Role::Ro, Role::Pva)?,
        format!("{}/health", urls.mno_b),
    );
    add(
        "the RO's MNO-B client, to MNO-A",
        pki.client_to(Role::Ro, Role::mno_b())?,
        format!("{}/health", urls.mno_a),
    );

    let rt = runtime()?;
    let mut wrong = Vec::new();
    let mut slugs = std::collections::BTreeSet::new();
    for p in &probes {
        let sent = rt.block_on(observe::send(
            &p.http,
            Method::POST,
            &p.url,
            Some("application/cbor"),
            vec![0xA0],
        ));
        match sent {
            Ok(answer) if answer.status == 403 => {
                slugs.insert(answer.slug());
            }
            Ok(answer) => wrong.push(format!("{}: {}", p.what, answer.detail())),
            Err(e) => {
                let message = format!("{e:#}");
                if ["WrongRole", "WrongName", "NoRole", " role"].iter().any(|m| message.contains(m))
                {
                    slugs.insert("server-certificate-role".to_owned());
                } else {
                    wrong.push(format!("{}: {message}", p.what));
                }
            }
        }
    }
    let summary = format!(
        "{} interfaces, refused: {}",
        probes.len(),
        slugs.into_iter().collect::<Vec<_>>().join(", ")
    );
    if !wrong.is_empty() {
        return Ok(Observed::new(Layer::accepted(
            Stage::Tls,
            format!("{summary}; not refused: {}", wrong.join("; ")),
        )));
    }
    Ok(Observed::new(Layer::rejected(Stage::Tls, vec![REFUSED.into()], summary)))
}

fn task_of_another_device(ctx: &Ctx) -> Result<Observed> {
    let mut accomplice = ForeignAk::new(ctx)?;
    let mut forged: Option<(Answer, Answer)> = None;
    let attacked = attack_one(ctx, &ctx.image, |d: &mut Hostile, task| {
        if let (DeviceTask::ActivateTre { .. }, None) = (&task, &forged) {
            forged = Some(fetch_task(ctx, &d.id, &mut accomplice)?);
        }
        Ok(Act::Agent(task))
    })?;
    let (signed, anonymous) =
        forged.context("the victim was never handed its activate-TRE command")?;
    let mut observed = Observed::new(answer_layer(Stage::RoDeviceApi, &signed));
    let mut plain = answer_layer(Stage::RoDeviceApi, &anonymous);
    plain.detail = format!("anonymous: {}", plain.detail);
    observed.also.push(plain);
    still_switched(&attacked, observed)
}

/// GETs the victim's task: signed by the accomplice's AK with a nonce the RO issued for the
/// victim, then anonymously.
fn fetch_task(
    ctx: &Ctx,
    victim: &DeviceId,
    accomplice: &mut ForeignAk,
) -> Result<(Answer, Answer)> {
    let path = format!("/v1/devices/{victim}/task");
    let url = format!("{}{path}", ctx.lab.urls.ro);
    let http = ctx.lab.pki.anonymous_client()?;
    let (anonymous, nonce) = unauthenticated(&http, Method::GET, &url)?;
    let signature = accomplice.sign_request(victim, "GET", &path, nonce, &[])?;
    let signed = aside(move |rt| {
        rt.block_on(async {
            let response = http
                .get(&url)
                .header(device_auth::NONCE_HEADER, hex::encode(nonce))
                .header(device_auth::SIGNATURE_HEADER, signature)
                .send()
                .await?;
            observe::answer_of(response).await
        })
    })?;
    Ok((signed, anonymous))
}
