//! The operator's OpenAPI document (`/openapi.json`) and its router agree: the document a
//! running operator serves is `provisioning::mno::openapi()`, every operation it documents
//! is served, an undocumented method gets 405, and it is OpenAPI 3.1 shaped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mno_common;

use mno_common::*;
use provisioning::pki::Role;

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_matches_the_router() {
    let world = World::start(10).await;
    let devices = world.manufacture(1);
    let ro = world.http(Role::Ro);
    let resp = ro.get(format!("{}/openapi.json", world.mno_a.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let served: serde_json::Value = resp.json().await.unwrap();
    let doc = provisioning::mno::openapi();
    assert_eq!(served, serde_json::to_value(&doc).unwrap());
    assert_eq!(transport::openapi::check_structure(&served), Vec::<String>::new());
    let device = devices[0].0.to_hex();
    let params = [("campaign", "c1"), ("device", device.as_str()), ("imsi", "001010000000001")];
    let wrong = transport::openapi::check_served(&ro, &world.mno_a.url(), &doc, &params).await;
    assert_eq!(wrong, Vec::<String>::new());
    let aka = &served["paths"]["/v1/campaigns/{campaign}/devices/{device}/aka-response"]["post"];
    for media in ["application/cbor", "application/json"] {
        assert!(aka["requestBody"]["content"][media].is_object(), "{media}");
        assert!(aka["responses"]["200"]["content"][media].is_object(), "{media}");
    }
    assert_eq!(aka["security"][0]["mutualTLS"], serde_json::json!([]));
}
