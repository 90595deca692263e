//! Secret hygiene of the operators (issue 7, "Secret hygiene"): a full campaign with a
//! refusal or two, every log line captured at TRACE level, then every issued K, OPc, KIc and
//! KID — of MNO-A's manufactured profiles and MNO-B's new ones — searched for (raw, hex,
//! HEX) in the logs and in both SQLite stores, together with OP and the storage keys — and
//! in MNO-B's answers to the RO's attestation calls, which carry the profile only encrypted
//! to the device's bundle key (issue 12).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mno_common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use mno_common::*;
use protocol::SubscriptionProfile;
use protocol::device_api::AkaResult;
use protocol::milenage::{Autn, Rand};
use provisioning::mno::api::{Report, ReportOutcome, to_cbor};
use provisioning::pki::Role;
use serde_bytes::ByteBuf;
use uicc::auth::Outcome;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn secrets(profiles: &[SubscriptionProfile]) -> Vec<(String, Vec<u8>)> {
    let mut raw: Vec<(String, Vec<u8>)> = vec![
        ("OP".into(), hex::decode(OP_HEX).unwrap()),
        ("MNO-A storage key".into(), vec![0xAA; 32]),
        ("MNO-B storage key".into(), vec![0xBB; 32]),
    ];
    for p in profiles {
        raw.push((format!("K of {}", p.imsi), p.k.expose().to_vec()));
        raw.push((format!("OPc of {}", p.imsi), p.opc.expose().to_vec()));
        raw.push((format!("KIc of {}", p.imsi), p.ota.kic.expose().to_vec()));
        raw.push((format!("KID of {}", p.imsi), p.ota.kid.expose().to_vec()));
    }
    let mut out = Vec::new();
    for (name, bytes) in raw {
        out.push((format!("{name} (hex)"), hex::encode(&bytes).into_bytes()));
        out.push((format!("{name} (HEX)"), hex::encode_upper(&bytes).into_bytes()));
        out.push((format!("{name} (raw)"), bytes));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line_or_the_stores() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let world = World::start(10).await;
    let mut devices = world.manufacture(2);
    let (ro_a, ro_b) = world.ro();
    let id = cid("c1");
    let request = campaign("c1", &devices);
    ro_a.create_campaign(&request).await.unwrap();
    ro_b.create_campaign(&request).await.unwrap();
    ro_b.prepare(&id).await.unwrap();
    let mut answers = Vec::new();
    let mut profiles: Vec<SubscriptionProfile> = devices.iter().map(|d| d.1.clone()).collect();
    for (device, _, card) in &mut devices {
        let proof = card.ota(&ro_a.activate_tre(&id, device).await.unwrap().command).unwrap();
        ro_a.tre_activated(&id, device, &proof).await.unwrap();
        ro_b.register(&id, device).await.unwrap();
        // A refusal on the way (its log line and problem must not leak either).
        let _ = ro_b
            .attestation(
                &id,
                device,
                &sign_ear(&world.pki, Role::mno_a(), &ear_claims(device, affirming())),
            )
            .await;
        let (ear, key) = attested(&world.pki, device);
        let answer = ro_b.attestation(&id, device, &ear).await.unwrap();
        answers.push(to_cbor(&answer).unwrap());
        let profile = open(&world.pki, &answer, key, &ear).payload.profile;
        card.install_on_trial(
            profile.clone(),
            uicc::ChangeRef { campaign: "c1".into(), sequence: 1, fallback_at: u64::MAX },
        )
        .unwrap();
        profiles.push(profile);
        // A wrong RES first (consumes that challenge), then the card's.
        ro_b.aka_challenge(&id, device).await.unwrap();
        let _ = ro_b
            .aka_response(&id, device, &AkaResult::Res { res: ByteBuf::from(vec![0; 8]) })
            .await;
        let challenge = ro_b.aka_challenge(&id, device).await.unwrap();
        let rand = Rand(challenge.rand.as_slice().try_into().unwrap());
        let autn = Autn(challenge.autn.as_slice().try_into().unwrap());
        let Outcome::Success { res, .. } = card.run_aka(&rand, &autn) else {
            panic!("USIM refused")
        };
        ro_b.aka_response(&id, device, &AkaResult::Res { res: ByteBuf::from(res.0.to_vec()) })
            .await
            .unwrap();
        for client in [&ro_a, &ro_b] {
            let report = Report {
                campaign: id.clone(),
                device_id: device.clone(),
                outcome: ReportOutcome::Success,
                step: None,
                reason: None,
            };
            client.report(&report).await.unwrap();
        }
    }

    let logs = captured.0.lock().unwrap().clone();
    assert!(logs.len() > 1000, "logs were captured");
    let text = String::from_utf8_lossy(&logs);
    assert!(text.contains("IMSI list accepted") && text.contains("profile signed"), "{text}");
    let mut stores = Vec::new();
    for role in ["mno-a", "mno-b"] {
        let db = world.db(role);
        for suffix in ["", "-wal"] {
            if let Ok(bytes) = std::fs::read(format!("{}{suffix}", db.display())) {
                stores.push((format!("{role}.sqlite{suffix}"), bytes));
            }
        }
    }
    assert!(stores.len() >= 2);
    assert_eq!(answers.len(), 2);
    for (i, answer) in answers.into_iter().enumerate() {
        stores.push((format!("MNO-B's attestation answer {i}"), answer));
    }
    for (what, needle) in secrets(&profiles) {
        assert!(!logs.windows(needle.len()).any(|w| w == needle.as_slice()), "{what} in the logs");
        for (file, bytes) in &stores {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} in {file}"
            );
        }
    }
}
