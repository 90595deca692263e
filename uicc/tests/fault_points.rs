//! The fault points around the card's durable writes (`protocol::fault`, `TRESOR_FAULT`):
//! `uicc.<op>.before` and `uicc.<op>.after` for op in `ota`, `install`, `commit`,
//! `fall-back`. `kill` before a write leaves the state before it, after a write the state
//! after it; `error` before is a failed write (nothing written, an install aborts the TRE),
//! after is a failure reported although the new state counts.
//!
//! `TRESOR_FAULT` is read once per process, so each case runs in a child process: this test
//! binary again, running only the ignored test `child` with the plan in its environment.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use protocol::{Amf, Opc, OtaKey, OtaKeys, SubscriberKey, SubscriptionProfile, ota};
use uicc::{Card, CardOptions, ChangeRef, Phase};

const DIR_ENV: &str = "TRESOR_UICC_FAULT_TEST_DIR";
const OP_ENV: &str = "TRESOR_UICC_FAULT_TEST_OP";

fn profile(n: u8) -> SubscriptionProfile {
    SubscriptionProfile {
        iccid: format!("8988303000000000{:03}{}", n, n % 10).parse().unwrap(),
        imsi: format!("0010101234567{n:02}").parse().unwrap(),
        k: SubscriberKey::new([n; 16]),
        opc: Opc::new([n + 1; 16]),
        amf: Amf([0x80, 0x00]),
        ota: OtaKeys { kic: OtaKey::new([3; 16]), kid: OtaKey::new([n + 4; 16]), counter: 0 },
    }
}

fn change() -> ChangeRef {
    ChangeRef { campaign: "campaign-1".into(), sequence: 7, fallback_at: 1_700_000_000 }
}

fn activation() -> ota::Activation {
    ota::Activation::new("campaign-1", "mno-b").unwrap()
}

fn activate(card: &mut Card, kid: &OtaKey) {
    let apdu = ota::seal_activate_tre(kid, card.iccid(), card.ota_counter() + 1, &activation());
    card.ota(&apdu.unwrap()).unwrap();
}

/// Runs one operation on the card in `TRESOR_UICC_FAULT_TEST_DIR` and prints its outcome.
#[test]
#[ignore = "run by `fault_points` in a child process"]
fn child() {
    let (Ok(dir), Ok(op)) = (std::env::var(DIR_ENV), std::env::var(OP_ENV)) else { return };
    let mut card = Card::open(&Path::new(&dir).join("card.json")).unwrap();
    let outcome = match op.as_str() {
        "ota" => {
            let apdu = ota::seal_activate_tre(&profile(1).ota.kid, card.iccid(), 1, &activation());
            format!("{:?}", card.ota(&apdu.unwrap()).map(drop).map_err(|e| e.to_string()))
        }
        "install" => {
            format!("{:?}", card.install_on_trial(profile(2), change()).map_err(|e| e.to_string()))
        }
        "commit" => format!("{:?}", card.commit_change("campaign-1", 7).map_err(|e| e.to_string())),
        "fall-back" => format!("{:?}", card.fall_back("timer").map_err(|e| e.to_string())),
        other => panic!("unknown op {other}"),
    };
    println!("outcome: {outcome}");
}

/// What the card's file holds: TRE active, the IMSI's last two digits, the change's phase.
fn on_disk(path: &Path) -> (bool, String, Option<Phase>) {
    let card = Card::open(path).unwrap();
    let imsi = card.imsi().as_str();
    (card.tre_active(), imsi[imsi.len() - 2..].to_owned(), card.change().map(|c| c.phase()))
}

/// A card ready for `op`: before OTA the USIM is active; before install the TRE; before
/// commit and fall-back profile 2 is on trial.
fn prepare(path: &Path, op: &str) {
    let mut card = Card::create(path, profile(1), CardOptions::new().unwrap()).unwrap();
    if op != "ota" {
        activate(&mut card, &profile(1).ota.kid);
    }
    if op == "commit" || op == "fall-back" {
        card.install_on_trial(profile(2), change()).unwrap();
    }
}

#[test]
fn fault_points() {
    let trial = Some(Phase::Trial);
    let fell_back = Some(Phase::FellBack { reason: "timer".into() });
    // op, state before, state after (TRE, IMSI end, phase); after an `error` before an
    // install the TRE is aborted.
    let cases = [
        ("ota", (false, "01", None), (true, "01", None)),
        ("install", (true, "01", None), (false, "02", trial.clone())),
        ("commit", (false, "02", trial.clone()), (false, "02", Some(Phase::Committed))),
        ("fall-back", (false, "02", trial.clone()), (false, "01", fell_back)),
    ];
    let exe = std::env::current_exe().unwrap();
    for (op, before, after) in cases {
        for (when, action) in
            [("before", "error"), ("after", "error"), ("before", "kill"), ("after", "kill")]
        {
            let point = format!("uicc.{op}.{when}");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("card.json");
            prepare(&path, op);
            let out = Command::new(&exe)
                .args(["child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
                .env("TRESOR_FAULT", format!("{point}:{action}"))
                .env(DIR_ENV, dir.path())
                .env(OP_ENV, op)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let case = format!("{point}:{action}: {stdout}");
            if action == "kill" {
                assert_eq!(out.status.signal(), Some(9), "{case}");
            } else {
                assert!(out.status.success(), "{case}");
                assert!(stdout.contains("Err(\""), "{case}");
                assert!(stdout.contains(&format!("injected fault at {point}")), "{case}");
            }
            let expected = match (when, action, op) {
                ("before", "error", "install") => (false, "01", None),
                ("before", _, _) => before.clone(),
                _ => after.clone(),
            };
            let (tre, imsi, phase) = on_disk(&path);
            assert_eq!((tre, imsi.as_str(), phase), expected, "{case}");
        }
    }
}
