//! Malformed, mistyped and oversized requests on every operator route (issue 7, attack 16):
//! each gets a clean 4xx problem document, no panic, and nothing changes in either store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mno_common;

use mno_common::*;
use provisioning::mno::MnoClient;
use provisioning::mno::api::{AkaChallenge, CampaignStatus};
use provisioning::mno::{CampaignId, SubscriberView};
use provisioning::pki::Role;

/// What must not change: both campaign views, the subscriptions, the outstanding challenge.
#[derive(Debug, PartialEq)]
struct Snapshot {
    a: CampaignStatus,
    b: CampaignStatus,
    old: SubscriberView,
    new: SubscriberView,
    challenge: AkaChallenge,
}

async fn snapshot(
    ro_a: &MnoClient,
    ro_b: &MnoClient,
    id: &CampaignId,
    dev: &protocol::DeviceId,
    old: &protocol::Imsi,
) -> Snapshot {
    // The challenge first: the first call issues it (and stamps the subscriber's
    // updated_at), every later one answers the same without writing. Read after it, the
    // subscriber is the same in every snapshot whatever the clock's second.
    let challenge = ro_b.aka_challenge(id, dev).await.unwrap();
    let b = ro_b.campaign(id).await.unwrap();
    let new_imsi = b.devices[0].new_imsi.clone().unwrap();
    Snapshot {
        a: ro_a.campaign(id).await.unwrap(),
        old: ro_a.subscriber(old).await.unwrap(),
        new: ro_b.subscriber(&new_imsi).await.unwrap(),
        challenge,
        b,
    }
}

/// A deterministic byte generator (xorshift), so failures reproduce.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_bodies_are_refused_on_every_route() {
    let world = World::start(10).await;
    let devices = world.manufacture(1);
    let (ro_a, ro_b) = world.ro();
    let id = cid("c1");
    let dev = devices[0].0.clone();
    ro_a.create_campaign(&campaign("c1", &devices)).await.unwrap();
    ro_b.create_campaign(&campaign("c1", &devices)).await.unwrap();
    ro_b.prepare(&id).await.unwrap();
    ro_b.register(&id, &dev).await.unwrap();
    ro_b.attestation(&id, &dev, &ear(&world.pki, &dev)).await.unwrap();
    let before = snapshot(&ro_a, &ro_b, &id, &dev, &devices[0].1.imsi).await;

    let a = world.mno_a.url();
    let b = world.mno_b.url();
    let d = dev.to_hex();
    let ro = world.http(Role::Ro);
    let mno_b = world.http(Role::mno_b());
    let json = "application/json";
    let cbor = "application/cbor";
    let big = vec![b'['; 3 * 1024 * 1024];
    let medium = vec![0x41; 200 * 1024];
    let deep_json = "[".repeat(10_000);
    let deep_cbor = vec![0x81; 10_000];
    // A byte string claiming 2^64-1 bytes: must not be allocated.
    let huge_claim = vec![
        0xA1, 0x67, b'e', b'n', b't', b'r', b'i', b'e', b's', 0x5B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFF, 0xFF,
    ];
    let unknown_field =
        br#"{"id":"c1","from":"mno-a","to":"mno-b","devices":[],"colour":1}"#.to_vec();
    let short_res = provisioning::mno::api::to_cbor(&protocol::device_api::AkaResult::Res {
        res: serde_bytes::ByteBuf::from(vec![1, 2, 3]),
    })
    .unwrap();
    let extra =
        provisioning::mno::api::to_cbor(&serde_json::json!({"entries": [], "colour": 1})).unwrap();

    type Case<'a> = (&'a reqwest::Client, &'a str, String, Option<&'a str>, Vec<u8>, u16);
    let cases: Vec<Case<'_>> = vec![
        (&ro, "POST", format!("{a}/v1/campaigns"), Some(json), b"not json".to_vec(), 400),
        (&ro, "POST", format!("{a}/v1/campaigns"), Some("text/plain"), b"{}".to_vec(), 415),
        (&ro, "POST", format!("{a}/v1/campaigns"), None, b"{}".to_vec(), 415),
        (&ro, "POST", format!("{a}/v1/campaigns"), Some(json), b"{}".to_vec(), 400),
        (&ro, "POST", format!("{a}/v1/campaigns"), Some(json), unknown_field, 400),
        (&ro, "POST", format!("{a}/v1/campaigns"), Some(json), deep_json.clone().into_bytes(), 400),
        (&ro, "POST", format!("{a}/v1/campaigns"), Some(json), big.clone(), 413),
        (
            &mno_b,
            "POST",
            format!("{a}/v1/campaigns/c1/imsi-list"),
            Some(cbor),
            b"\xff\xff".to_vec(),
            400,
        ),
        // JSON beside CBOR (protocol::wire): as strict, and a refusal names the field.
        (&mno_b, "POST", format!("{a}/v1/campaigns/c1/imsi-list"), Some(json), b"{}".to_vec(), 400),
        (
            &mno_b,
            "POST",
            format!("{a}/v1/campaigns/c1/imsi-list"),
            Some(json),
            br#"{"entries":[],"colour":1}"#.to_vec(),
            400,
        ),
        (
            &mno_b,
            "POST",
            format!("{a}/v1/campaigns/c1/imsi-list"),
            Some("text/plain"),
            b"{}".to_vec(),
            415,
        ),
        (&mno_b, "POST", format!("{a}/v1/campaigns/c1/imsi-list"), Some(cbor), vec![], 400),
        (&mno_b, "POST", format!("{a}/v1/campaigns/c1/imsi-list"), Some(cbor), extra, 400),
        (
            &mno_b,
            "POST",
            format!("{a}/v1/campaigns/c1/imsi-list"),
            Some(cbor),
            deep_cbor.clone(),
            400,
        ),
        (&mno_b, "POST", format!("{a}/v1/campaigns/c1/imsi-list"), Some(cbor), huge_claim, 400),
        (&mno_b, "POST", format!("{a}/v1/campaigns/c1/imsi-list"), Some(cbor), big.clone(), 413),
        (
            &ro,
            "POST",
            format!("{a}/v1/campaigns/c1/devices/{d}/activate-tre"),
            None,
            b"x".to_vec(),
            400,
        ),
        (&ro, "POST", format!("{a}/v1/campaigns/c1/devices/zz/activate-tre"), None, vec![], 400),
        (
            &ro,
            "POST",
            format!("{a}/v1/campaigns/c1/devices/00990000/activate-tre"),
            None,
            vec![],
            400,
        ),
        (
            &ro,
            "POST",
            format!("{a}/v1/campaigns/a%20b/devices/{d}/activate-tre"),
            None,
            vec![],
            400,
        ),
        (&ro, "POST", format!("{a}/v1/campaigns/%FF/devices/{d}/activate-tre"), None, vec![], 400),
        (
            &ro,
            "POST",
            format!("{a}/v1/campaigns/c1/devices/{d}/activate-tre"),
            None,
            medium.clone(),
            413,
        ),
        (
            &ro,
            "POST",
            format!("{a}/v1/campaigns/c1/devices/{d}/tre-activated"),
            Some(cbor),
            b"\xff\xff".to_vec(),
            400,
        ),
        (
            &ro,
            "POST",
            format!("{a}/v1/campaigns/c1/devices/{d}/tre-activated"),
            Some(json),
            b"{}".to_vec(),
            400,
        ),
        (
            &ro,
            "POST",
            format!("{a}/v1/campaigns/c1/devices/{d}/tre-activated"),
            Some(json),
            br#"{"response":"AQ=="}"#.to_vec(),
            400,
        ),
        (
            &ro,
            "POST",
            format!("{a}/v1/campaigns/c1/devices/{d}/tre-activated"),
            Some("application/xml"),
            b"{}".to_vec(),
            415,
        ),
        (
            &ro,
            "POST",
            format!("{a}/v1/campaigns/c1/devices/{d}/tre-activated"),
            Some(cbor),
            deep_cbor.clone(),
            400,
        ),
        (
            &ro,
            "POST",
            format!("{a}/v1/campaigns/c1/devices/{d}/tre-activated"),
            Some(cbor),
            medium.clone(),
            413,
        ),
        (&ro, "POST", format!("{a}/v1/reports"), Some(json), b"{\"campaign\":".to_vec(), 400),
        (&ro, "POST", format!("{a}/v1/reports"), Some(cbor), vec![0xa0], 415),
        (&ro, "POST", format!("{a}/v1/reports"), Some(json), medium.clone(), 413),
        (&ro, "GET", format!("{a}/v1/subscribers/12ab"), None, vec![], 400),
        (&ro, "GET", format!("{a}/v1/campaigns/a%2Fb"), None, vec![], 400),
        (&ro, "GET", format!("{a}/v1/nothing-here"), None, vec![], 404),
        (&ro, "DELETE", format!("{a}/v1/campaigns"), None, vec![], 405),
        (&ro, "POST", format!("{b}/v1/campaigns/c1/prepare"), Some(json), b"{}".to_vec(), 400),
        (
            &ro,
            "POST",
            format!("{b}/v1/campaigns/c1/devices/{d}/register"),
            Some(json),
            b"{}".to_vec(),
            400,
        ),
        (
            &ro,
            "POST",
            format!("{b}/v1/campaigns/c1/devices/{d}/attestation"),
            Some(cbor),
            vec![],
            400,
        ),
        (
            &ro,
            "POST",
            format!("{b}/v1/campaigns/c1/devices/{d}/attestation"),
            Some(cbor),
            b"\x00garbage".to_vec(),
            400,
        ),
        (
            &ro,
            "POST",
            format!("{b}/v1/campaigns/c1/devices/{d}/attestation"),
            Some("text/plain"),
            b"x".to_vec(),
            415,
        ),
        (
            &ro,
            "POST",
            format!("{b}/v1/campaigns/c1/devices/{d}/attestation"),
            Some(cbor),
            medium.clone(),
            413,
        ),
        (
            &ro,
            "POST",
            format!("{b}/v1/campaigns/c1/devices/{d}/aka-challenge"),
            Some(cbor),
            vec![0xa0],
            400,
        ),
        (
            &ro,
            "POST",
            format!("{b}/v1/campaigns/c1/devices/{d}/aka-response"),
            Some(cbor),
            vec![0xa0],
            400,
        ),
        (
            &ro,
            "POST",
            format!("{b}/v1/campaigns/c1/devices/{d}/aka-response"),
            Some(cbor),
            short_res,
            400,
        ),
        (
            &ro,
            "POST",
            format!("{b}/v1/campaigns/c1/devices/{d}/aka-response"),
            Some(json),
            b"{}".to_vec(),
            400,
        ),
        (
            &ro,
            "POST",
            format!("{b}/v1/campaigns/c1/devices/{d}/aka-response"),
            Some(json),
            br#"{"res":{"res":"AQID"}}"#.to_vec(),
            400,
        ),
        (
            &ro,
            "POST",
            format!("{b}/v1/campaigns/c1/devices/{d}/aka-response"),
            Some(json),
            deep_json.clone().into_bytes(),
            400,
        ),
        (
            &ro,
            "POST",
            format!("{b}/v1/campaigns/c1/devices/{d}/aka-response"),
            Some("text/plain"),
            b"{}".to_vec(),
            415,
        ),
        (
            &ro,
            "POST",
            format!("{b}/v1/campaigns/c1/devices/{d}/aka-response"),
            Some(cbor),
            deep_cbor,
            400,
        ),
    ];
    for (client, method, url, content_type, body, status) in cases {
        let mut request = client.request(method.parse().unwrap(), &url).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = match request.send().await {
            Ok(r) => r,
            // The server answers 413 from Content-Length alone and closes the connection;
            // a client still writing a multi-megabyte body may see the close first.
            Err(e) if status == 413 && e.is_request() => continue,
            Err(e) => panic!("{method} {url}: {e}"),
        };
        assert_eq!(response.status().as_u16(), status, "{method} {url}");
        assert!(
            transport::problem::is_problem_json(response.headers()),
            "{method} {url}: not a problem document"
        );
    }

    // Noise on every CBOR route.
    for seed in 1..40u64 {
        let body = noise(seed, (seed as usize * 37) % 600);
        for (client, url) in [
            (&mno_b, format!("{a}/v1/campaigns/c1/imsi-list")),
            (&ro, format!("{b}/v1/campaigns/c1/devices/{d}/attestation")),
            (&ro, format!("{b}/v1/campaigns/c1/devices/{d}/aka-response")),
        ] {
            let response = client
                .post(&url)
                .header("content-type", cbor)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_client_error(),
                "{url} with noise seed {seed}: {}",
                response.status()
            );
        }
    }

    let after = snapshot(&ro_a, &ro_b, &id, &dev, &devices[0].1.imsi).await;
    assert_eq!(before, after, "a refused request changed state");
}
