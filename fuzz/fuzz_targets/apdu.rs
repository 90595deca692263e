//! The UICC emulator's APDU processor as vpcd and the TRE agent drive it: the input is a
//! sequence of vpcd frames (2-byte big-endian length, then the frame); a one-byte frame is
//! a vpcd control byte (0 power off, 1 power on, 2 reset, 4 get ATR) and anything longer
//! an APDU for `Card::transmit`, so multi-command sessions (select, VERIFY, AUTHENTICATE,
//! GET RESPONSE, OTA "activate TRE", UPDATE BINARY) are explored.
//!
//! Every input starts from the same freshly manufactured card (its state file is restored
//! from a template made once per process), so a crash reproduces from its input alone.
//! After every command: a status word, at most 256 bytes of data, and exactly one of USIM
//! and TRE active (TR 33.812 §5.4.4.3); at the end, the state file reopens to the same mode.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tresor_fuzz::{card_profile, frames};
use uicc::{Card, CardOptions, Pin};

/// vpcd control bytes (vsmartcard `vpcd.h`).
const VPCD_OFF: u8 = 0;
const VPCD_ON: u8 = 1;
const VPCD_RESET: u8 = 2;
const VPCD_ATR: u8 = 4;

struct Template {
    _dir: tempfile::TempDir,
    path: PathBuf,
    state: Vec<u8>,
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("template.json");
        let options = CardOptions {
            pin1: Pin::from_digits(card_profile::PIN1).unwrap(),
            pin1_enabled: true,
            adm1: Pin::from_digits(card_profile::ADM1).unwrap(),
            mnc_len: 2,
        };
        drop(Card::create(&made, card_profile::profile(), options).unwrap());
        let state = std::fs::read(&made).unwrap();
        let path = dir.path().join("card.json");
        Template { _dir: dir, path, state }
    })
}

fuzz_target!(|data: &[u8]| {
    let t = template();
    std::fs::write(&t.path, &t.state).unwrap();
    let mut card = Card::open(&t.path).unwrap();
    for frame in frames(data) {
        match frame {
            [] => {}
            [VPCD_OFF | VPCD_ON | VPCD_RESET] => card.reset(),
            [VPCD_ATR] => assert_eq!(card.atr(), &uicc::ATR),
            [_] => {}
            apdu => {
                let response = card.transmit(apdu);
                assert!(
                    (2..=258).contains(&response.len()),
                    "response of {} bytes",
                    response.len()
                );
            }
        }
        assert!(card.usim_active() != card.tre_active(), "exactly one of USIM and TRE is active");
    }
    let usim = card.usim_active();
    drop(card);
    let reopened = Card::open(&t.path).expect("the state file is whole after any session");
    assert_eq!(reopened.usim_active(), usim, "the persisted mode is the mode the card ran in");
});
