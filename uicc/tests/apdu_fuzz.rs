//! Random input to the APDU processor: it must answer every byte string with a status word
//! (never panic, never return more than 256 data bytes), and stay consistent afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use protocol::{Amf, Opc, OtaKey, OtaKeys, SubscriberKey, SubscriptionProfile};
use uicc::{Card, CardOptions, Pin};

fn new_card(dir: &tempfile::TempDir) -> Card {
    let profile = SubscriptionProfile {
        iccid: "89883030000000000015".parse().unwrap(),
        imsi: "001010123456789".parse().unwrap(),
        k: SubscriberKey::new([1; 16]),
        opc: Opc::new([2; 16]),
        amf: Amf([0x80, 0x00]),
        ota: OtaKeys { kic: OtaKey::new([3; 16]), kid: OtaKey::new([4; 16]), counter: 0 },
    };
    let options =
        CardOptions { adm1: Pin::from_digits("12345678").unwrap(), ..CardOptions::new().unwrap() };
    Card::create(&dir.path().join("card.json"), profile, options).unwrap()
}

/// APDUs that look real: the card's classes and instructions with random parameters and
/// bodies, so the fuzzing reaches past the class and instruction checks.
fn plausible_apdu() -> impl Strategy<Value = Vec<u8>> {
    let cla = prop::sample::select(vec![0x00u8, 0x80, 0x01, 0x0C, 0xA0]);
    let ins = prop::sample::select(vec![
        0xA4u8, 0xB0, 0xD6, 0xB2, 0xDC, 0x20, 0x88, 0xC0, 0xF2, 0xEE, 0x70, 0x10,
    ]);
    let p = prop::sample::select(vec![
        0x00u8, 0x01, 0x02, 0x03, 0x04, 0x08, 0x09, 0x0A, 0x0C, 0x80, 0x81, 0x87, 0xFF,
    ]);
    (cla, ins, p.clone(), p, prop::collection::vec(any::<u8>(), 0..40))
        .prop_map(|(cla, ins, p1, p2, body)| [vec![cla, ins, p1, p2], body].concat())
}

fn well_formed(answer: &[u8]) -> bool {
    (2..=258).contains(&answer.len())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_get_a_status_word(apdus in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..20)) {
        let dir = tempfile::tempdir().unwrap();
        let mut card = new_card(&dir);
        for apdu in apdus {
            prop_assert!(well_formed(&card.transmit(&apdu)));
        }
    }

    #[test]
    fn plausible_apdus_keep_the_card_consistent(apdus in prop::collection::vec(plausible_apdu(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let mut card = new_card(&dir);
        for apdu in apdus {
            prop_assert!(well_formed(&card.transmit(&apdu)));
            prop_assert!(card.usim_active() != card.tre_active());
        }
        // Whatever happened, the card still reads its IMSI after a reset.
        card.reset();
        prop_assert_eq!(card.transmit(&hex::decode("00a4040c07a0000000871002").unwrap()), vec![0x90, 0x00]);
        prop_assert_eq!(card.transmit(&hex::decode("00a4000c026f07").unwrap()), vec![0x90, 0x00]);
        let answer = card.transmit(&hex::decode("00b0000009").unwrap());
        prop_assert_eq!(hex::encode(answer), "0809101010325476989000");
    }
}

#[test]
fn extended_and_truncated_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let mut card = new_card(&dir);
    for (apdu, sw) in [
        ("00a40004023f", "6700"),
        ("00a40004033f00", "6700"),
        ("00a400040000023f", "6700"),
        ("00b000000000", "6700"),
        ("00a400040000023f00", "6119"),
        ("00b00000000000", "6986"),
        ("00", "6700"),
    ] {
        let answer = card.transmit(&hex::decode(apdu).unwrap());
        let got = hex::encode(&answer[answer.len() - 2..]);
        assert!(got == sw || (sw == "6119" && got.starts_with("61")), "{apdu}: {got}");
    }
}
