//! Malformed and oversized input on every interface (issue 7, item 16): CBOR, JSON, COSE,
//! X.509 and event-log bodies that are garbage, truncated, of the wrong shape, nested ten
//! thousand deep, claiming 2^64 bytes, of the wrong media type, or larger than the limit,
//! on the PVA's API, the RO's device and campaign APIs and both operators' APIs; and
//! malformed APDUs to the card. Every request must get a clean 4xx problem document (no
//! panic, no 5xx, no dropped connection), every service must still answer its health check
//! afterwards, and no SQLite store may gain or lose a row (the row counts of every table of
//! every role's store are compared before and after). Every APDU must get a status word and
//! leave the card's state file as it was. These scenarios run alone, after the others.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use protocol::device_api::AttachRequest;
use protocol::evidence::Evidence;
use protocol::pva_api::{AppraiseRequest, EnrolRequest, Message};
use provisioning::pki::Role;
use reqwest::Method;
use serde_bytes::ByteBuf;

use super::device::runtime;
use super::observe;
use super::{Attacker, Ctx, Expect, Layer, Observed, Scenario, Stage};

/// The check a malformed-input scenario passes with.
const CLEAN: &str = "4xx-problem-nothing-stored";

pub(super) fn scenarios() -> Vec<Scenario> {
    use Attacker::{Network, Peer};
    vec![
        Scenario::new(
            "malformed-pva-requests",
            16,
            Network,
            "sends the PVA garbage, truncated, mistyped, deeply nested and oversized CBOR, an EK certificate that is not X.509, evidence that does not decode and evidence with a garbage event log",
            Expect::at(Stage::PvaApi, CLEAN),
            pva_api,
        )
        .quiet(),
        Scenario::new(
            "malformed-ro-device-requests",
            16,
            Network,
            "sends the RO's device API garbage, truncated, mistyped, deeply nested and oversized CBOR, evidence with a garbage event log and device ids that are not hex",
            Expect::at(Stage::RoDeviceApi, CLEAN),
            ro_device_api,
        )
        .quiet(),
        Scenario::new(
            "malformed-ro-campaign-requests",
            16,
            Peer,
            "sends the RO's campaign API (with an operator's certificate) JSON that is not JSON, of the wrong shape, with unknown fields, nested ten thousand deep or over the size limit",
            Expect::at(Stage::RoCampaignApi, CLEAN),
            ro_campaign_api,
        )
        .quiet(),
        Scenario::new(
            "malformed-mno-requests",
            16,
            Peer,
            "sends both operators' APIs (with the RO's and MNO-B's certificates) broken JSON, CBOR and COSE bodies, wrong media types and oversized bodies",
            Expect::at(Stage::MnoApi, CLEAN),
            mno_api,
        )
        .quiet(),
        Scenario::new(
            "malformed-apdus",
            16,
            Network,
            "sends the card truncated, overlong and inconsistent APDUs, unknown classes and instructions, and garbage AUTHENTICATE and OTA data",
            Expect::at(Stage::Uicc, "status-word-no-state-change"),
            apdus,
        )
        .quiet(),
    ]
}

/// One request of a malformed-input scenario.
struct Probe {
    what: String,
    http: reqwest::Client,
    method: Method,
    url: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

/// The bodies every CBOR endpoint is sent, with `valid` (a well-formed message) cut in half
/// and given an extra field.
fn cbor_bodies(valid: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let half = valid.get(..valid.len() / 2).unwrap_or_default().to_vec();
    vec![
        ("garbage", vec![0xFF, 0xFF]),
        ("empty", Vec::new()),
        ("truncated", half),
        ("another shape", vec![0xA1, 0x61, b'a', 0x01]),
        ("an unknown field", with_extra_field(valid)),
        ("nested 10000 deep", vec![0x81; 10_000]),
        // A byte string claiming 2^64 - 1 bytes: must not be allocated.
        ("a length of 2^64-1", vec![0x5B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
    ]
}

/// A CBOR map (of fewer than 23 entries) with one more entry, "x": 1.
fn with_extra_field(map: &[u8]) -> Vec<u8> {
    match map.split_first() {
        Some((&head, rest)) if (0xA0..0xB7).contains(&head) => {
            let mut out = vec![head + 1];
            out.extend_from_slice(rest);
            out.extend_from_slice(&[0x61, b'x', 0x01]);
            out
        }
        _ => vec![0xA1, 0x61, b'x', 0x01],
    }
}

/// What the baseline device left: its id, campaign and genuine evidence.
struct Genuine {
    evidence: Evidence,
    bytes: Vec<u8>,
}

fn genuine(ctx: &Ctx) -> Result<(super::Baseline, Genuine)> {
    let baseline =
        ctx.baseline().context("the baseline device did not switch; nothing genuine to malform")?;
    let bytes = std::fs::read(baseline.dir.join("evidence.cbor"))?;
    let evidence = Evidence::from_cbor(&bytes)?;
    Ok((baseline, Genuine { evidence, bytes }))
}

fn pva_api(ctx: &Ctx) -> Result<Observed> {
    let (baseline, genuine) = genuine(ctx)?;
    // With the RO's certificate, so enrolment bodies reach the parser (anonymous clients are
    // refused before it: 401 client-certificate-required).
    let http = ctx.lab.pki.client(Role::Ro)?;
    let pva = &ctx.lab.urls.pva;
    let cbor = Some("application/cbor");
    let enrol = EnrolRequest {
        device_id: baseline.device_id.clone(),
        ek_certificate: ByteBuf::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]),
        ek_intermediates: Vec::new(),
        ek_public: ByteBuf::new(),
        ak_public: genuine.evidence.ak_public.clone(),
    };
    let mut probes = Vec::new();
    let mut add = |what: String, path: &str, content_type, body| {
        probes.push(Probe {
            what,
            http: http.clone(),
            method: Method::POST,
            url: format!("{pva}{path}"),
            content_type,
            body,
        });
    };
    let valid_enrol = enrol.to_cbor()?;
    for path in ["/v1/enrol", "/v1/activate", "/v1/challenge", "/v1/appraise"] {
        for (what, body) in cbor_bodies(&valid_enrol) {
            add(format!("{path}: {what}"), path, cbor, body);
        }
        add(format!("{path}: text/plain"), path, Some("text/plain"), valid_enrol.clone());
    }
    // X.509: an EK certificate that is not one (with a real EK public area, then with none).
    let mut with_ek = enrol.clone();
    with_ek.ek_public = ByteBuf::from(baseline.ek_public.clone());
    add("/v1/enrol: EK certificate not X.509".into(), "/v1/enrol", cbor, with_ek.to_cbor()?);
    add(
        "/v1/enrol: EK certificate and EK not X.509 or TPM".into(),
        "/v1/enrol",
        cbor,
        valid_enrol.clone(),
    );
    // Evidence: not CBOR, cut, a quote cut short, an event log of garbage (all else genuine).
    let appraise =
        |evidence: Vec<u8>| AppraiseRequest { evidence: ByteBuf::from(evidence) }.to_cbor();
    add("/v1/appraise: evidence garbage".into(), "/v1/appraise", cbor, appraise(vec![0xFF; 64])?);
    let half = genuine.bytes.get(..genuine.bytes.len() / 2).unwrap_or_default().to_vec();
    add("/v1/appraise: evidence truncated".into(), "/v1/appraise", cbor, appraise(half)?);
    let mut e = genuine.evidence.clone();
    e.quote.attest = ByteBuf::from(e.quote.attest.get(..20).unwrap_or_default().to_vec());
    add("/v1/appraise: quote truncated".into(), "/v1/appraise", cbor, appraise(e.to_cbor()?)?);
    let mut e = genuine.evidence.clone();
    e.event_log = ByteBuf::from(b"not an event log".repeat(10));
    add("/v1/appraise: event log garbage".into(), "/v1/appraise", cbor, appraise(e.to_cbor()?)?);
    let mut e = genuine.evidence.clone();
    e.event_log =
        ByteBuf::from(e.event_log.get(..e.event_log.len() - 3).unwrap_or_default().to_vec());
    add("/v1/appraise: event log truncated".into(), "/v1/appraise", cbor, appraise(e.to_cbor()?)?);
    add("/v1/appraise: 300 KiB".into(), "/v1/appraise", cbor, vec![0x41; 300 * 1024]);
    probe(ctx, Stage::PvaApi, probes)
}

fn ro_device_api(ctx: &Ctx) -> Result<Observed> {
    let (baseline, genuine) = genuine(ctx)?;
    let http = ctx.lab.pki.anonymous_client()?;
    let ro = &ctx.lab.urls.ro;
    let device = baseline.device_id.to_string();
    let cbor = Some("application/cbor");
    let mut probes = Vec::new();
    let mut add = |what: String, method: Method, url: String, body| {
        probes.push(Probe { what, http: http.clone(), method, url, content_type: cbor, body });
    };
    let attach = protocol::device_api::to_cbor(&AttachRequest {
        device_id: baseline.device_id.clone(),
        ek_certificate: ByteBuf::from(vec![0x30, 0x82, 0xFF, 0xFF]),
        ek_public: ByteBuf::from(vec![0x00, 0x23]),
        tre_active: true,
        activation_proof: ByteBuf::from(vec![0x01, 0x01]),
    })?;
    for (what, body) in cbor_bodies(&attach) {
        add(
            format!("/attach: {what}"),
            Method::POST,
            format!("{ro}/v1/devices/{device}/attach"),
            body,
        );
    }
    add(
        "/attach: EK certificate not X.509".into(),
        Method::POST,
        format!("{ro}/v1/devices/{device}/attach"),
        attach.clone(),
    );
    for endpoint in [
        "credential",
        "credential/activate",
        "enrolment",
        "activation",
        "evidence",
        "install",
        "aka",
        "abort",
    ] {
        let url = format!("{ro}/v1/devices/{device}/{endpoint}");
        for (what, body) in cbor_bodies(&genuine.bytes) {
            add(format!("/{endpoint}: {what}"), Method::POST, url.clone(), body);
        }
        add(format!("/{endpoint}: 300 KiB"), Method::POST, url, vec![0x41; 300 * 1024]);
    }
    let mut e = genuine.evidence.clone();
    e.event_log = ByteBuf::from(b"not an event log".repeat(10));
    add(
        "/evidence: event log garbage".into(),
        Method::POST,
        format!("{ro}/v1/devices/{device}/evidence"),
        e.to_cbor()?,
    );
    add(
        "/task: device id not hex".into(),
        Method::GET,
        format!("{ro}/v1/devices/not-hex/task"),
        Vec::new(),
    );
    add(
        "/evidence: device id not hex".into(),
        Method::POST,
        format!("{ro}/v1/devices/00zz/evidence"),
        genuine.bytes.clone(),
    );
    probe(ctx, Stage::RoDeviceApi, probes)
}

fn ro_campaign_api(ctx: &Ctx) -> Result<Observed> {
    let http = ctx.lab.pki.client(Role::mno_b())?;
    let url = format!("{}/v1/campaigns", ctx.lab.urls.ro);
    let json = Some("application/json");
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"not json".to_vec()),
        ("empty", Vec::new()),
        ("an empty object", b"{}".to_vec()),
        ("wrong types", br#"{"from":1,"to":[],"devices":"x"}"#.to_vec()),
        ("an unknown field", br#"{"from":"mno-a","to":"mno-b","devices":[],"colour":1}"#.to_vec()),
        ("a device id that is not hex", br#"{"from":"mno-a","to":"mno-b","devices":[{"device_id":"zz","iccid":"8900101000000000000"}]}"#.to_vec()),
        ("from = to", br#"{"from":"mno-a","to":"mno-a","devices":[]}"#.to_vec()),
        ("nested 10000 deep", "[".repeat(10_000).into_bytes()),
        ("5 MiB", vec![b'['; 5 * 1024 * 1024]),
    ];
    let probes = bodies
        .into_iter()
        .map(|(what, body)| Probe {
            what: format!("/v1/campaigns: {what}"),
            http: http.clone(),
            method: Method::POST,
            url: url.clone(),
            content_type: json,
            body,
        })
        .collect();
    probe(ctx, Stage::RoCampaignApi, probes)
}

fn mno_api(ctx: &Ctx) -> Result<Observed> {
    let (baseline, genuine) = genuine(ctx)?;
    let (a, b) = (&ctx.lab.urls.mno_a, &ctx.lab.urls.mno_b);
    let (ro, mno_b) = (ctx.lab.pki.client(Role::Ro)?, ctx.lab.pki.client(Role::mno_b())?);
    let (id, device) = (&baseline.campaign, baseline.device_id.to_hex());
    let (json, cbor, cose) =
        (Some("application/json"), Some("application/cbor"), Some("application/cose"));
    let mut probes = Vec::new();
    let mut add = |what: &str, http: &reqwest::Client, url: String, content_type, body| {
        probes.push(Probe {
            what: what.to_owned(),
            http: http.clone(),
            method: Method::POST,
            url,
            content_type,
            body,
        });
    };
    let campaigns = format!("{a}/v1/campaigns");
    add("campaigns: not JSON", &ro, campaigns.clone(), json, b"not json".to_vec());
    add("campaigns: text/plain", &ro, campaigns.clone(), Some("text/plain"), b"{}".to_vec());
    add("campaigns: no media type", &ro, campaigns.clone(), None, b"{}".to_vec());
    add("campaigns: an empty object", &ro, campaigns.clone(), json, b"{}".to_vec());
    add(
        "campaigns: an unknown field",
        &ro,
        campaigns.clone(),
        json,
        br#"{"id":"c1","from":"mno-a","to":"mno-b","devices":[],"colour":1}"#.to_vec(),
    );
    add(
        "campaigns: nested 10000 deep",
        &ro,
        campaigns.clone(),
        json,
        "[".repeat(10_000).into_bytes(),
    );
    add("campaigns: 3 MiB", &ro, campaigns, json, vec![b'['; 3 * 1024 * 1024]);
    let list = format!("{a}/v1/campaigns/{id}/imsi-list");
    for (what, body) in cbor_bodies(&[0xA1, 0x67, b'e', b'n', b't', b'r', b'i', b'e', b's', 0x80]) {
        add(&format!("imsi-list: {what}"), &mno_b, list.clone(), cbor, body);
    }
    add("imsi-list: JSON media type", &mno_b, list.clone(), json, b"{}".to_vec());
    add("imsi-list: 3 MiB", &mno_b, list, cbor, vec![0x41; 3 * 1024 * 1024]);
    let attestation = format!("{b}/v1/campaigns/{id}/devices/{device}/attestation");
    let ear = std::fs::read(baseline.dir.join("ear.cbor"))?;
    add("attestation: COSE garbage", &ro, attestation.clone(), cose, vec![0xD2, 0x84, 0xFF]);
    add(
        "attestation: EAR truncated",
        &ro,
        attestation.clone(),
        cose,
        ear.get(..ear.len() / 2).unwrap_or_default().to_vec(),
    );
    add("attestation: evidence as EAR", &ro, attestation.clone(), cose, genuine.bytes.clone());
    add("attestation: text/plain", &ro, attestation.clone(), Some("text/plain"), ear);
    add("attestation: 200 KiB", &ro, attestation, cose, vec![0x41; 200 * 1024]);
    let aka = format!("{b}/v1/campaigns/{id}/devices/{device}/aka-response");
    for (what, body) in
        cbor_bodies(&[0xA1, 0x63, b'r', b'e', b's', 0xA1, 0x63, b'r', b'e', b's', 0x41, 0x00])
    {
        add(&format!("aka-response: {what}"), &ro, aka.clone(), cbor, body);
    }
    let reports = format!("{a}/v1/reports");
    add("reports: not JSON", &ro, reports.clone(), json, b"{".to_vec());
    add(
        "reports: an unknown field",
        &ro,
        reports,
        json,
        br#"{"campaign":"c1","colour":1}"#.to_vec(),
    );
    probe(ctx, Stage::MnoApi, probes)
}

/// Sends every probe, then checks every service's health and every store's row counts.
fn probe(ctx: &Ctx, stage: Stage, probes: Vec<Probe>) -> Result<Observed> {
    let rt = runtime()?;
    let before = row_counts(ctx)?;
    let mut slugs = BTreeSet::new();
    let mut wrong = Vec::new();
    for p in &probes {
        let answer = rt.block_on(observe::send(
            &p.http,
            p.method.clone(),
            &p.url,
            p.content_type,
            p.body.clone(),
        ));
        match answer {
            Ok(a) if a.is_clean_refusal() => {
                slugs.insert(a.slug());
            }
            Ok(a) => wrong.push(format!("{}: {}", p.what, a.detail())),
            Err(e) => wrong.push(format!("{}: {e:#}", p.what)),
        }
    }
    wrong.extend(rt.block_on(unhealthy(ctx))?);
    let after = row_counts(ctx)?;
    for (table, count) in &after {
        if before.get(table) != Some(count) {
            wrong.push(format!(
                "{table}: {} rows before, {count} after",
                before.get(table).copied().unwrap_or(0)
            ));
        }
    }
    let summary = format!(
        "{} requests, {} problem types, {} tables unchanged",
        probes.len(),
        slugs.len(),
        after.len()
    );
    if !wrong.is_empty() {
        return Ok(Observed::new(Layer::accepted(
            stage,
            format!("{summary}; not refused cleanly: {}", wrong.join("; ")),
        )));
    }
    let mut checks = vec![CLEAN.to_owned()];
    checks.extend(slugs);
    Ok(Observed::new(Layer::rejected(stage, checks, summary)))
}

/// Services that do not answer their health check.
async fn unhealthy(ctx: &Ctx) -> Result<Vec<String>> {
    let urls = &ctx.lab.urls;
    let ro_client = ctx.lab.pki.client(Role::Ro)?;
    let mut down = Vec::new();
    for url in [
        format!("{}/v1/health", urls.pva),
        format!("{}/health", urls.ro),
        format!("{}/health", urls.mno_a),
        format!("{}/health", urls.mno_b),
    ] {
        match ro_client.get(&url).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => down.push(format!("{url}: {}", r.status())),
            Err(e) => down.push(format!("{url}: {e}")),
        }
    }
    Ok(down)
}

/// Rows per table of every role's SQLite store.
fn row_counts(ctx: &Ctx) -> Result<BTreeMap<String, i64>> {
    let mut counts = BTreeMap::new();
    for store in ["pva/pva.sqlite", "ro/ro.sqlite", "mno-a/mno-a.sqlite", "mno-b/mno-b.sqlite"] {
        let path = ctx.lab.dir.join(store);
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .with_context(|| format!("{}", path.display()))?;
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for table in tables {
            let n: i64 = conn.query_row(
                &format!("SELECT count(*) FROM \"{}\"", table.replace('"', "\"\"")),
                [],
                |r| r.get(0),
            )?;
            counts.insert(format!("{store}:{table}"), n);
        }
    }
    Ok(counts)
}

fn apdus(ctx: &Ctx) -> Result<Observed> {
    let baseline = ctx.baseline().context("no baseline device")?;
    let path = baseline.dir.join("uicc.json");
    let before = std::fs::read(&path)?;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one byte", vec![0x00]),
        ("header cut", vec![0x00, 0xA4, 0x04]),
        ("Lc beyond the data", vec![0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00]),
        ("data beyond Lc", vec![0x00, 0xB0, 0x00, 0x00, 0x01, 0xAA, 0xBB, 0xCC]),
        ("extended length cut", vec![0x00, 0xB0, 0x00, 0x00, 0x00, 0xFF]),
        ("extended Lc lying", vec![0x00, 0xD6, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0x01]),
        ("unknown class", vec![0xFF, 0xA4, 0x00, 0x00]),
        ("unknown instruction", vec![0x00, 0x7E, 0x00, 0x00]),
        ("logical channel 3", vec![0x03, 0xA4, 0x00, 0x00]),
        ("secure messaging", vec![0x0C, 0xB0, 0x00, 0x00, 0x00]),
        ("chaining", vec![0x10, 0xD6, 0x00, 0x00, 0x01, 0x00]),
        ("AUTHENTICATE garbage", vec![0x00, 0x88, 0x00, 0x81, 0x03, 0x10, 0xFF, 0xFF]),
        (
            "UPDATE BINARY of EF_IMSI",
            vec![
                0x00, 0xD6, 0x87, 0x00, 0x09, 0x08, 0x09, 0x10, 0x10, 0x99, 0x99, 0x99, 0x99, 0x99,
            ],
        ),
        ("OTA instruction garbage", vec![0x80, 0xEE, 0x00, 0x00, 0x04, 0xDE, 0xAD, 0xBE, 0xEF]),
        ("GET RESPONSE with nothing pending", vec![0x00, 0xC0, 0x00, 0x00, 0x10]),
    ];
    let mut card = super::observe::open_card(&path)?;
    let imsi = card.imsi().clone();
    let mut words = BTreeSet::new();
    let mut wrong = Vec::new();
    for (what, apdu) in &cases {
        let response = card.transmit(apdu);
        match response.len().checked_sub(2).and_then(|i| response.get(i..)) {
            Some(sw) if sw != [0x90, 0x00] && response.len() == 2 => {
                words.insert(hex::encode_upper(sw));
            }
            _ => wrong.push(format!("{what}: answered {}", hex::encode(&response))),
        }
    }
    let state_kept = card.imsi() == &imsi && card.usim_active() && !card.tre_active();
    drop(card);
    if !state_kept || std::fs::read(&path)? != before {
        wrong.push("the card's state changed".into());
    }
    let summary = format!(
        "{} APDUs, status words {}",
        cases.len(),
        words.iter().cloned().collect::<Vec<_>>().join(" ")
    );
    if !wrong.is_empty() {
        return Ok(Observed::new(Layer::accepted(
            Stage::Uicc,
            format!("{summary}; {}", wrong.join("; ")),
        )));
    }
    let mut checks = vec!["status-word-no-state-change".to_owned()];
    checks.extend(words.into_iter().map(|w| format!("SW {w}")));
    Ok(Observed::new(Layer::rejected(Stage::Uicc, checks, summary)))
}
