//! The CBOR encoding of every API message is what it was before JSON bodies existed
//! (`protocol::wire`): the byte-string fields now go through `wire::bytes`, which must give
//! exactly the bytes plain `serde_bytes::ByteBuf` fields gave, because tresor's devices,
//! pycose and tpm2-tools interop depend on them. The expected hex was produced by encoding
//! the same samples with the code before the change (commit abd661f).
//!
//! Also: every message survives a JSON round trip, with byte strings as base64url.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use protocol::device_api::{
    AbortAck, AkaResult, AttachRequest, CommitResult, DeviceTask, InstallResult,
};
use protocol::device_auth::{CredentialChallenge, CredentialProof, CredentialRequest};
use protocol::ear::TrustTier;
use protocol::evidence::{BundleKeyEvidence, EVIDENCE_VERSION, Evidence, SignedAttest};
use protocol::pva_api::{
    ActivateRequest, ActivateResponse, AppraiseRequest, AppraiseResponse, ChallengeRequest,
    ChallengeResponse, CredentialSecret, EnrolRequest, EnrolResponse,
};
use protocol::{DeviceId, Nonce};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

fn device() -> DeviceId {
    let mut name = vec![0x00, 0x0B];
    name.extend(0..32u8);
    DeviceId::from_name(&name).unwrap()
}

fn b(bytes: &[u8]) -> ByteBuf {
    ByteBuf::from(bytes.to_vec())
}

fn cbor<T: Serialize>(value: &T) -> String {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    hex::encode(out)
}

/// Every message type (and every variant of the device API's enums), with short fields.
fn samples() -> Vec<(&'static str, String, String)> {
    fn both<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
        name: &'static str,
        value: T,
    ) -> (&'static str, String, String) {
        let json = serde_json::to_string(&value).unwrap();
        let back: T = serde_json::from_str(&json).unwrap();
        assert_eq!(back, value, "{name}: JSON round trip");
        (name, cbor(&value), json)
    }
    let nonce = Nonce::from_bytes(&[0xAB; 32]).unwrap();
    let signed = SignedAttest { attest: b(&[0xFF, 0x54]), signature: b(&[0x00, 0x18]) };
    vec![
        both(
            "EnrolRequest",
            EnrolRequest {
                device_id: device(),
                ek_certificate: b(&[0x30, 0x82]),
                ek_intermediates: vec![b(&[0x30]), b(&[])],
                ek_public: b(&[0x00, 0x23]),
                ak_public: b(&[0x00, 0x01]),
            },
        ),
        both(
            "EnrolResponse",
            EnrolResponse {
                device_id: device(),
                credential_blob: b(&[1, 2, 3]),
                encrypted_secret: b(&[4, 5]),
                ak_name: b(&[0x00, 0x0B, 0xFB]),
                expires_at: 1_700_000_000,
            },
        ),
        both(
            "ActivateRequest",
            ActivateRequest {
                device_id: device(),
                ak_name: b(&[0x00, 0x0B]),
                secret: CredentialSecret::new([0xFB; 32]),
            },
        ),
        both("ActivateResponse", ActivateResponse { device_id: device(), ak_name: b(&[0x0B]) }),
        both("ChallengeRequest", ChallengeRequest { device_id: device(), policy_id: None }),
        both(
            "ChallengeRequest/policy",
            ChallengeRequest { device_id: device(), policy_id: Some("p".into()) },
        ),
        both(
            "ChallengeResponse",
            ChallengeResponse {
                device_id: device(),
                nonce,
                expires_at: 9,
                policy_id: "default".into(),
                pcr_selection: "sha256:0,2".into(),
            },
        ),
        both("AppraiseRequest", AppraiseRequest::new(vec![0xA8, 0x67])),
        both(
            "AppraiseResponse",
            AppraiseResponse {
                ear: b(&[0xD2, 0x84]),
                status: TrustTier::Warning,
                failed_checks: vec!["pcr-digest-mismatch".into()],
            },
        ),
        both("DeviceTask::Idle", DeviceTask::Idle),
        both(
            "DeviceTask::ActivateTre",
            DeviceTask::ActivateTre { campaign: "c1".into(), command: b(&[0x80, 0xE2]) },
        ),
        both("DeviceTask::Enrol", DeviceTask::Enrol),
        both(
            "DeviceTask::ActivateCredential",
            DeviceTask::ActivateCredential { id_object: b(&[1]), encrypted_secret: b(&[2]) },
        ),
        both("DeviceTask::Attest", DeviceTask::Attest { nonce, pcr_selection: "sha256:0".into() }),
        both(
            "DeviceTask::Install",
            DeviceTask::Install {
                campaign: "c1".into(),
                bundle: b(&[0xD8, 0x60]),
                ear: b(&[0xD2]),
            },
        ),
        both("DeviceTask::Aka", DeviceTask::Aka { rand: b(&[0x11; 16]), autn: b(&[0x22; 16]) }),
        both(
            "DeviceTask::Commit",
            DeviceTask::Commit { campaign: "c1".into(), sequence: 2, order: b(&[0xD2]) },
        ),
        both(
            "DeviceTask::Abort",
            DeviceTask::Abort { campaign: "c1".into(), reason: "r".into(), order: b(&[0xD2]) },
        ),
        both(
            "DeviceTask::Done",
            DeviceTask::Done { campaign: "c1".into(), switched: false, reason: Some("r".into()) },
        ),
        both(
            "AttachRequest",
            AttachRequest {
                device_id: device(),
                ek_certificate: b(&[0x30]),
                ek_public: b(&[0x00, 0x23]),
                tre_active: true,
                activation_proof: b(&[0x90, 0x00]),
            },
        ),
        both("InstallResult::Installed", InstallResult::Installed { receipt: b(&[0xD2, 0x84]) }),
        both("InstallResult::Failed", InstallResult::Failed { reason: "no".into() }),
        both("AkaResult::Res", AkaResult::Res { res: b(&[0x33; 8]) }),
        both("AkaResult::Auts", AkaResult::Auts { auts: b(&[0x44; 14]) }),
        both("AkaResult::Failed", AkaResult::Failed { reason: "mac".into() }),
        both("CommitResult", CommitResult::Committed { imsi: "001010000000001".into() }),
        both(
            "AbortAck",
            AbortAck { usim_active: true, tre_active: false, imsi: "1".into(), committed: false },
        ),
        both(
            "CredentialRequest",
            CredentialRequest {
                ek_certificate: b(&[0x30]),
                ek_public: b(&[1]),
                ak_public: b(&[2]),
            },
        ),
        both(
            "CredentialChallenge",
            CredentialChallenge { id_object: b(&[3]), encrypted_secret: b(&[4]) },
        ),
        both("CredentialProof", CredentialProof { secret: b(&[5; 32]) }),
        both(
            "Evidence",
            Evidence {
                version: EVIDENCE_VERSION,
                device_id: device(),
                ek_certificate: b(&[0x30]),
                ak_public: b(&[0x00, 0x23]),
                quote: signed.clone(),
                event_log: b(&[0, 0, 0, 0]),
                pcr_values: None,
                bundle_key: Some(BundleKeyEvidence { public: b(&[0x00, 0x23]), certify: signed }),
                rollback_counter: 3,
            },
        ),
    ]
}

/// CBOR of [`samples`] before JSON bodies existed (commit abd661f).
const GOLDEN: &[(&str, &str)] = &[
    (
        "EnrolRequest",
        "a5696465766963655f69645822000b000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f6e656b5f636572746966696361746542308270656b5f696e7465726d656469617465738241304069656b5f7075626c696342002369616b5f7075626c6963420001",
    ),
    (
        "EnrolResponse",
        "a5696465766963655f69645822000b000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f6f63726564656e7469616c5f626c6f624301020370656e637279707465645f73656372657442040567616b5f6e616d6543000bfb6a657870697265735f61741a6553f100",
    ),
    (
        "ActivateRequest",
        "a3696465766963655f69645822000b000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f67616b5f6e616d6542000b667365637265745820fbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfb",
    ),
    (
        "ActivateResponse",
        "a2696465766963655f69645822000b000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f67616b5f6e616d65410b",
    ),
    (
        "ChallengeRequest",
        "a2696465766963655f69645822000b000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f69706f6c6963795f6964f6",
    ),
    (
        "ChallengeRequest/policy",
        "a2696465766963655f69645822000b000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f69706f6c6963795f69646170",
    ),
    (
        "ChallengeResponse",
        "a5696465766963655f69645822000b000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f656e6f6e63655820abababababababababababababababababababababababababababababababab6a657870697265735f61740969706f6c6963795f69646764656661756c746d7063725f73656c656374696f6e6a7368613235363a302c32",
    ),
    ("AppraiseRequest", "a16865766964656e636542a867"),
    (
        "AppraiseResponse",
        "a36365617242d2846673746174757318206d6661696c65645f636865636b7381737063722d6469676573742d6d69736d61746368",
    ),
    ("DeviceTask::Idle", "6469646c65"),
    (
        "DeviceTask::ActivateTre",
        "a16c61637469766174652d747265a26863616d706169676e62633167636f6d6d616e644280e2",
    ),
    ("DeviceTask::Enrol", "65656e726f6c"),
    (
        "DeviceTask::ActivateCredential",
        "a17361637469766174652d63726564656e7469616ca26969645f6f626a656374410170656e637279707465645f7365637265744102",
    ),
    (
        "DeviceTask::Attest",
        "a166617474657374a2656e6f6e63655820abababababababababababababababababababababababababababababababab6d7063725f73656c656374696f6e687368613235363a30",
    ),
    (
        "DeviceTask::Install",
        "a167696e7374616c6ca36863616d706169676e6263316662756e646c6542d8606365617241d2",
    ),
    (
        "DeviceTask::Aka",
        "a163616b61a26472616e645011111111111111111111111111111111646175746e5022222222222222222222222222222222",
    ),
    (
        "DeviceTask::Commit",
        "a166636f6d6d6974a36863616d706169676e6263316873657175656e636502656f7264657241d2",
    ),
    (
        "DeviceTask::Abort",
        "a16561626f7274a36863616d706169676e62633166726561736f6e6172656f7264657241d2",
    ),
    (
        "DeviceTask::Done",
        "a164646f6e65a36863616d706169676e626331687377697463686564f466726561736f6e6172",
    ),
    (
        "AttachRequest",
        "a5696465766963655f69645822000b000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f6e656b5f6365727469666963617465413069656b5f7075626c69634200236a7472655f616374697665f57061637469766174696f6e5f70726f6f66429000",
    ),
    ("InstallResult::Installed", "a169696e7374616c6c6564a1677265636569707442d284"),
    ("InstallResult::Failed", "a1666661696c6564a166726561736f6e626e6f"),
    ("AkaResult::Res", "a163726573a163726573483333333333333333"),
    ("AkaResult::Auts", "a16461757473a164617574734e4444444444444444444444444444"),
    ("AkaResult::Failed", "a1666661696c6564a166726561736f6e636d6163"),
    ("CommitResult", "a169636f6d6d6974746564a164696d73696f303031303130303030303030303031"),
    (
        "AbortAck",
        "a46b7573696d5f616374697665f56a7472655f616374697665f464696d7369613169636f6d6d6974746564f4",
    ),
    (
        "CredentialRequest",
        "a36e656b5f6365727469666963617465413069656b5f7075626c6963410169616b5f7075626c69634102",
    ),
    ("CredentialChallenge", "a26969645f6f626a656374410370656e637279707465645f7365637265744104"),
    (
        "CredentialProof",
        "a16673656372657458200505050505050505050505050505050505050505050505050505050505050505",
    ),
    (
        "Evidence",
        "a86776657273696f6e01696465766963655f69645822000b000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f6e656b5f6365727469666963617465413069616b5f7075626c69634200236571756f7465a26661747465737442ff54697369676e6174757265420018696576656e745f6c6f6744000000006a62756e646c655f6b6579a2667075626c69634200236763657274696679a26661747465737442ff54697369676e617475726542001870726f6c6c6261636b5f636f756e74657203",
    ),
];

#[test]
fn cbor_is_unchanged() {
    let samples = samples();
    assert_eq!(samples.len(), GOLDEN.len());
    for ((name, cbor, _), (golden_name, golden)) in samples.iter().zip(GOLDEN) {
        assert_eq!(name, golden_name);
        assert_eq!(cbor, golden, "{name}: CBOR changed");
    }
}

#[test]
fn json_has_base64url_byte_strings_and_hex_ids() {
    let samples = samples();
    let json = |name: &str| {
        let (_, _, json) = samples.iter().find(|(n, ..)| *n == name).unwrap();
        serde_json::from_str::<serde_json::Value>(json).unwrap()
    };
    let enrol = json("EnrolRequest");
    assert_eq!(enrol["ek_certificate"], "MII");
    assert_eq!(enrol["ek_intermediates"], serde_json::json!(["MA", ""]));
    assert_eq!(enrol["device_id"], format!("000b{}", hex::encode((0..32u8).collect::<Vec<_>>())));
    assert_eq!(json("ActivateRequest")["secret"], format!("{}-_s", "-_v7".repeat(10)));
    assert_eq!(json("AppraiseResponse")["status"], "warning");
    assert_eq!(json("DeviceTask::Idle"), "idle");
    assert_eq!(json("DeviceTask::Install")["install"]["bundle"], "2GA");
    assert_eq!(json("Evidence")["quote"]["attest"], "_1Q");
}
