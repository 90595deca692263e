//! The network side against the card: the AuC of `protocol::milenage` makes vectors, the
//! card answers AUTHENTICATE through APDUs (3GPP TS 33.102 §6.3): RES = XRES and the keys
//! agree; a stale SQN gives DC ‖ AUTS, from which the AuC recovers SQN_MS and resynchronises
//! so that the next vector is accepted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use protocol::milenage::{AuthVector, Milenage, Rand, Sqn, c2, c3};
use protocol::{Amf, Opc, OtaKey, OtaKeys, SubscriberKey, SubscriptionProfile};
use uicc::auth::{self, Outcome};
use uicc::{Card, CardOptions, Pin};

fn profile() -> SubscriptionProfile {
    // K and OPc of 3GPP TS 35.207 test set 1.
    SubscriptionProfile {
        iccid: "89883030000000000015".parse().unwrap(),
        imsi: "001010123456789".parse().unwrap(),
        k: SubscriberKey::from_hex("465b5ce8b199b49faa5f0a2ee238a6bc").unwrap(),
        opc: Opc::from_hex("cd63cb71954a9f4e48a5994e37a02baf").unwrap(),
        amf: Amf([0x80, 0x00]),
        ota: OtaKeys { kic: OtaKey::new([1; 16]), kid: OtaKey::new([2; 16]), counter: 0 },
    }
}

fn card(dir: &tempfile::TempDir) -> Card {
    let options =
        CardOptions { adm1: Pin::from_digits("12345678").unwrap(), ..CardOptions::new().unwrap() };
    Card::create(&dir.path().join("card.json"), profile(), options).unwrap()
}

/// An AuC for one subscriber: SQN_HE = SEQ_HE ‖ IND, IND cycling through the 32 values.
struct Auc {
    m: Milenage,
    seq_he: u64,
    ind: u8,
}

impl Auc {
    fn new() -> Self {
        let p = profile();
        Self { m: Milenage::new(&p.k, &p.opc), seq_he: 0, ind: 0 }
    }

    fn vector(&mut self) -> AuthVector {
        self.seq_he += 1;
        self.ind = (self.ind + 1) % 32;
        let sqn = Sqn::from_parts(self.seq_he, self.ind).unwrap();
        self.m.vector(Rand::random().unwrap(), sqn, Amf([0x80, 0x00]))
    }
}

#[test]
fn res_equals_xres_and_keys_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut card = card(&dir);
    let mut auc = Auc::new();
    for _ in 0..5 {
        let v = auc.vector();
        match card.run_aka(&v.rand, &v.autn) {
            Outcome::Success { res, ck, ik, kc } => {
                assert_eq!(res, v.xres);
                assert_eq!(ck, v.ck);
                assert_eq!(ik, v.ik);
                assert_eq!(kc, Some(c3(&v.ck, &v.ik)));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn stale_sqn_resynchronises() {
    let dir = tempfile::tempdir().unwrap();
    let mut card = card(&dir);
    let mut auc = Auc::new();
    // The card has seen SEQ 1..=40.
    for _ in 0..40 {
        let v = auc.vector();
        assert!(matches!(card.run_aka(&v.rand, &v.autn), Outcome::Success { .. }));
    }
    // The AuC lost its state (restored from an old backup): SEQ_HE back to 3.
    auc.seq_he = 3;
    let stale = auc.vector();
    let Outcome::SyncFailure(auts) = card.run_aka(&stale.rand, &stale.autn) else { panic!() };
    // TS 33.102 §6.3.5: the AuC verifies MAC-S and takes SQN_MS.
    let sqn_ms = auc.m.resync(&stale.rand, &auts).unwrap();
    assert_eq!(sqn_ms.seq(), 40);
    // An AUTS presented with another RAND does not verify.
    assert!(auc.m.resync(&Rand([0; 16]), &auts).is_err());
    auc.seq_he = sqn_ms.seq();
    let fresh = auc.vector();
    assert!(
        matches!(card.run_aka(&fresh.rand, &fresh.autn), Outcome::Success { res, .. } if res == fresh.xres)
    );
}

#[test]
fn too_far_ahead_is_a_sync_failure_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut card = card(&dir);
    let mut auc = Auc::new();
    // TS 33.102 Annex C.2.2: more than Δ = 2^28 ahead of the highest accepted SEQ.
    auc.seq_he = (1 << 28) + 5;
    let v = auc.vector();
    let Outcome::SyncFailure(auts) = card.run_aka(&v.rand, &v.autn) else { panic!() };
    auc.seq_he = auc.m.resync(&v.rand, &auts).unwrap().seq();
    let v = auc.vector();
    assert!(matches!(card.run_aka(&v.rand, &v.autn), Outcome::Success { .. }));
}

#[test]
fn wrong_subscriber_key_is_a_mac_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut card = card(&dir);
    let other = Milenage::new(&SubscriberKey::new([7; 16]), &profile().opc);
    let v = other.vector(Rand::random().unwrap(), Sqn::from_parts(1, 1).unwrap(), Amf([0x80, 0]));
    assert_eq!(card.run_aka(&v.rand, &v.autn), Outcome::MacFailure);
}

#[test]
fn gsm_context_gives_c2_and_c3() {
    let dir = tempfile::tempdir().unwrap();
    let mut card = card(&dir);
    assert_eq!(
        card.transmit(&[0x00, 0xA4, 0x04, 0x0C, 0x05, 0xA0, 0x00, 0x00, 0x00, 0x87]),
        [0x90, 0x00]
    );
    // RAND of TS 35.207 test set 1: SRES#1 46f8416a and Kc eae4be823af9a08b (TS 35.208).
    let rand = Rand(hex::decode("23553cbe9637a89d218ae64dae47bf35").unwrap().try_into().unwrap());
    let (sres, kc) = auth::parse_gsm(&card.transmit(&auth::gsm_command(&rand))).unwrap();
    assert_eq!(hex::encode(sres.0), "46f8416a");
    assert_eq!(hex::encode(kc.expose()), "eae4be823af9a08b");
    let out = Milenage::new(&profile().k, &profile().opc).f2345(&rand);
    assert_eq!(sres, c2(&out.res));
}

/// Not a benchmark: prints the rate so the report can quote it. Each accepted AUTHENTICATE
/// writes the SQN array durably (temporary file, fsync, rename, fsync), which dominates.
#[test]
fn authenticate_rate() {
    let dir = tempfile::tempdir().unwrap();
    let mut card = card(&dir);
    let mut auc = Auc::new();
    let vectors: Vec<_> = (0..100).map(|_| auc.vector()).collect();
    let start = Instant::now();
    for v in &vectors {
        assert!(matches!(card.run_aka(&v.rand, &v.autn), Outcome::Success { .. }));
    }
    let per_second = vectors.len() as f64 / start.elapsed().as_secs_f64();
    eprintln!("AUTHENTICATE (3G, durable SQN): {per_second:.0} per second");
}
