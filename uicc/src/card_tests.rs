//! Tests of the card: command set, PINs, AKA, OTA, the lock, the state file's integrity
//! check and its migration from version 1. The subscription change and the exclusivity
//! property are tested in `change_tests`, with the helpers of this file.

use std::path::{Path, PathBuf};

use protocol::SubscriptionProfile;
use protocol::milenage::{Milenage, Rand, Sqn};
use protocol::ota::{self, OtaCommand};

use super::*;
use crate::Sw;
use crate::activation::TreActivation;
use crate::auth::{self, Outcome};
use crate::state::tests::profile;

pub(crate) const ADM1: &str = "12345678";

pub(crate) fn options() -> CardOptions {
    CardOptions {
        pin1: Pin::from_digits("1234").unwrap(),
        pin1_enabled: false,
        adm1: Pin::from_digits(ADM1).unwrap(),
        mnc_len: 2,
    }
}

pub(crate) fn new_card() -> (tempfile::TempDir, PathBuf, Card) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    let card =
        Card::create(&path, profile("89883030000000000015", "001010123456789"), options()).unwrap();
    (dir, path, card)
}

/// Sends a hex APDU, returns the hex answer.
pub(crate) fn send(card: &mut Card, apdu: &str) -> String {
    hex::encode(card.transmit(&hex::decode(apdu.replace(' ', "")).unwrap()))
}

pub(crate) fn select_usim(card: &mut Card) {
    assert_eq!(send(card, "00a4040c07 a0000000871002"), "9000");
}

/// The network side of the tests: one subscriber's AuC with its SQN_HE.
pub(crate) struct Auc {
    pub m: Milenage,
    pub seq: u64,
}

impl Auc {
    pub fn new(p: &SubscriptionProfile) -> Self {
        Self { m: Milenage::new(&p.k, &p.opc), seq: 0 }
    }

    pub fn vector(&mut self, amf: protocol::Amf) -> protocol::milenage::AuthVector {
        self.seq += 1;
        let rand = Rand::random().unwrap();
        self.m.vector(rand, Sqn::from_parts(self.seq, (self.seq % 32) as u8).unwrap(), amf)
    }
}

// ---- command set ----

#[test]
fn reads_imsi_and_iccid_as_encoded() {
    let (_d, _p, mut card) = new_card();
    assert_eq!(send(&mut card, "00a4000c02 2fe2"), "9000");
    assert_eq!(send(&mut card, "00b000000a"), "988803030000000000519000");
    select_usim(&mut card);
    assert_eq!(send(&mut card, "00a4000c02 6f07"), "9000");
    assert_eq!(send(&mut card, "00b0000009"), "0809101010325476989000");
    // By SFI (EF_IMSI is SFI 07), and Le = 00 reads to the end of the file.
    assert_eq!(send(&mut card, "00b0870000"), "0809101010325476989000");
    // Le beyond the end: T=0 "wrong length, 9 available".
    assert_eq!(send(&mut card, "00b000000a"), "6c09");
    assert_eq!(send(&mut card, "00b0000900"), "6b00");
}

#[test]
fn select_returns_fcp_through_get_response() {
    let (_d, _p, mut card) = new_card();
    // Case 3 (no Le): 61xx, then GET RESPONSE.
    let sw = send(&mut card, "00a4000402 3f00");
    assert!(sw.starts_with("61"), "{sw}");
    let len = u8::from_str_radix(&sw[2..], 16).unwrap();
    let fcp = send(&mut card, &format!("00c00000{len:02x}"));
    assert!(fcp.starts_with("62") && fcp.ends_with("9000"), "{fcp}");
    assert!(fcp.contains("83023f00"));
    // Nothing pending any more.
    assert_eq!(send(&mut card, "00c0000010"), "6985");
    // Case 4 (Le present): the FCP comes directly.
    let fcp = send(&mut card, "00a4040407 a0000000871002 00");
    assert!(
        fcp.contains(&format!("8410{}", hex::encode(crate::fs::USIM_AID))) && fcp.ends_with("9000")
    );
    // GET RESPONSE in pieces.
    let sw = send(&mut card, "00a4000402 6f07");
    assert_eq!(sw, "6119");
    assert_eq!(send(&mut card, "00c0000005").len(), 5 * 2 + 4);
    assert_eq!(send(&mut card, "00c0000000").len(), 20 * 2 + 4);
}

#[test]
fn selection_rules() {
    let (_d, _p, mut card) = new_card();
    // 7FFF only once the USIM was selected; EFs of the ADF not from the MF.
    assert_eq!(send(&mut card, "00a4000c02 7fff"), "6a82");
    assert_eq!(send(&mut card, "00a4000c02 6f07"), "6a82");
    assert_eq!(send(&mut card, "00a4080c04 7fff6f07"), "6a82");
    select_usim(&mut card);
    assert_eq!(send(&mut card, "00a4080c04 7fff6f07"), "9000");
    assert_eq!(send(&mut card, "00a4090c02 6fad"), "9000");
    assert_eq!(send(&mut card, "00a4000c02 2fe2"), "6a82");
    assert_eq!(send(&mut card, "00a4030c"), "9000");
    assert_eq!(send(&mut card, "00a4000c02 2fe2"), "9000");
    assert_eq!(send(&mut card, "00a4040c05 a000000088"), "6a82");
    assert_eq!(send(&mut card, "00a4000c03 2fe200"), "6700");
    assert_eq!(send(&mut card, "00a4007702 2fe2"), "6a86");
    // STATUS: the current application's AID.
    assert_eq!(
        send(&mut card, "80f2000112"),
        format!("8410{}9000", hex::encode(crate::fs::USIM_AID))
    );
}

#[test]
fn ef_dir_lists_the_usim() {
    let (_d, _p, mut card) = new_card();
    assert_eq!(send(&mut card, "00a4000c02 2f00"), "9000");
    let rec = send(&mut card, "00b2010420");
    assert!(
        rec.starts_with(&format!("61184f10{}50045553494d", hex::encode(crate::fs::USIM_AID))),
        "{rec}"
    );
    assert_eq!(send(&mut card, "00b2030420"), "6a83");
    assert_eq!(send(&mut card, "00b2010410"), "6c20");
    // Next / previous.
    assert!(send(&mut card, "00b2000220").ends_with("9000"));
    assert!(send(&mut card, "00b2000220").starts_with("ffff"));
    assert_eq!(send(&mut card, "00b2000220"), "6a83");
    // READ BINARY on a record file.
    assert_eq!(send(&mut card, "00b0000001"), "6981");
}

#[test]
fn class_and_instruction_errors() {
    let (_d, _p, mut card) = new_card();
    assert_eq!(send(&mut card, "a0a4000002 3f00"), "6e00");
    assert_eq!(send(&mut card, "80a4000002 3f00"), "6e00");
    assert_eq!(send(&mut card, "00f2000000"), "6e00");
    assert_eq!(send(&mut card, "01a4000002 3f00"), "6881");
    assert_eq!(send(&mut card, "0ca4000002 3f00"), "6882");
    assert_eq!(send(&mut card, "00ee000000"), "6e00");
    assert_eq!(send(&mut card, "0012000000"), "6d00");
    assert_eq!(send(&mut card, "00b0"), "6700");
    assert_eq!(send(&mut card, "00b0000001"), "6986");
}

#[test]
fn update_binary_needs_adm1_and_persists() {
    let (_d, path, mut card) = new_card();
    select_usim(&mut card);
    assert_eq!(send(&mut card, "00a4000c02 6f46"), "9000");
    assert_eq!(send(&mut card, "00d6000003 016869"), "6982");
    assert_eq!(send(&mut card, &format!("0020000a08 {}", hex::encode(ADM1))), "9000");
    assert_eq!(send(&mut card, "00d6000003 016869"), "9000");
    assert_eq!(send(&mut card, "00d6001003 010203"), "6700");
    assert_eq!(send(&mut card, "00d6001100"), "6700");
    // EF_IMSI is derived from the profile: never updatable, even with ADM1.
    assert_eq!(send(&mut card, "00a4000c02 6f07"), "9000");
    assert_eq!(send(&mut card, "00d6000001 00"), "6982");
    drop(card);
    let mut card = Card::open(&path).unwrap();
    select_usim(&mut card);
    assert_eq!(send(&mut card, "00a4000c02 6f46"), "9000");
    assert!(send(&mut card, "00b0000003").starts_with("016869"));
}

#[test]
fn pin_retry_counters_block_and_survive_restart() {
    let (_d, path, mut card) = new_card();
    let wrong = "0020000108 31313131ffffffff";
    assert_eq!(send(&mut card, "0020000100"), "63c3");
    assert_eq!(send(&mut card, wrong), "63c2");
    assert_eq!(send(&mut card, wrong), "63c1");
    drop(card);
    // A restart does not give the tries back.
    let mut card = Card::open(&path).unwrap();
    assert_eq!(send(&mut card, "00200001"), "63c1");
    assert_eq!(send(&mut card, "0020000108 31323334ffffffff"), "9000");
    assert_eq!(send(&mut card, "00200001"), "9000");
    for sw in ["63c2", "63c1", "63c0", "6983", "6983"] {
        assert_eq!(send(&mut card, wrong), sw);
    }
    assert_eq!(send(&mut card, "0020000108 31323334ffffffff"), "6983");
    assert_eq!(send(&mut card, "0020000104 31323334"), "6983");
    assert_eq!(send(&mut card, "0020000204 31323334"), "6a88");
}

#[test]
fn enabled_pin1_guards_imsi_and_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    let p = profile("89883030000000000015", "001010123456789");
    let mut auc = Auc::new(&p);
    let mut card = Card::create(&path, p, CardOptions { pin1_enabled: true, ..options() }).unwrap();
    select_usim(&mut card);
    assert_eq!(send(&mut card, "00a4000c02 6f07"), "9000");
    assert_eq!(send(&mut card, "00b0000009"), "6982");
    let v = auc.vector(protocol::Amf([0x80, 0]));
    assert_eq!(card.run_aka(&v.rand, &v.autn), Outcome::Refused(Sw::SECURITY_NOT_SATISFIED));
    assert_eq!(send(&mut card, "0020000108 31323334ffffffff"), "9000");
    assert_eq!(send(&mut card, "00a4000c02 6f07"), "9000");
    assert!(send(&mut card, "00b0000009").ends_with("9000"));
    assert!(matches!(card.run_aka(&v.rand, &v.autn), Outcome::Success { .. }));
    // A reset clears the verification.
    card.reset();
    let v = auc.vector(protocol::Amf([0x80, 0]));
    assert_eq!(card.run_aka(&v.rand, &v.autn), Outcome::Refused(Sw::SECURITY_NOT_SATISFIED));
}

// ---- AKA ----

#[test]
fn aka_success_resync_and_mac_failure() {
    let (_d, path, mut card) = new_card();
    let p = profile("89883030000000000015", "001010123456789");
    let mut auc = Auc::new(&p);
    let amf = protocol::Amf([0x80, 0x00]);
    let v = auc.vector(amf);
    let Outcome::Success { res, ck, ik, kc } = card.run_aka(&v.rand, &v.autn) else { panic!() };
    assert_eq!((res, ck, ik), (v.xres, v.ck.clone(), v.ik.clone()));
    assert_eq!(kc, Some(protocol::milenage::c3(&v.ck, &v.ik)));
    // Replay of the same vector, also after a restart: synchronisation failure.
    drop(card);
    let mut card = Card::open(&path).unwrap();
    let Outcome::SyncFailure(auts) = card.run_aka(&v.rand, &v.autn) else { panic!() };
    let sqn_ms = auc.m.resync(&v.rand, &auts).unwrap();
    assert_eq!(sqn_ms.seq(), 1);
    // A forged AUTN: MAC failure, and the card's SQN does not move.
    let mut forged = auc.vector(amf);
    forged.autn.0[10] ^= 0x40;
    assert_eq!(card.run_aka(&forged.rand, &forged.autn), Outcome::MacFailure);
    // Vectors may be used out of order within the IND window.
    let (a, b) = (auc.vector(amf), auc.vector(amf));
    assert!(matches!(card.run_aka(&b.rand, &b.autn), Outcome::Success { .. }));
    assert!(matches!(card.run_aka(&a.rand, &a.autn), Outcome::Success { .. }));
    // GSM context: SRES = c2(XRES), Kc = c3(CK, IK).
    let g = auc.vector(amf);
    let (sres, kc) = auth::parse_gsm(&card.transmit(&auth::gsm_command(&g.rand))).unwrap();
    assert_eq!(sres, protocol::milenage::c2(&g.xres));
    assert_eq!(kc, protocol::milenage::c3(&g.ck, &g.ik));
}

#[test]
fn authenticate_rejects_malformed_data() {
    let (_d, _p, mut card) = new_card();
    assert_eq!(
        send(&mut card, &format!("0088008122 10{} 10{}", "00".repeat(16), "00".repeat(16))),
        "6985"
    );
    select_usim(&mut card);
    assert_eq!(
        send(&mut card, &format!("0088008122 10{} 10{}", "00".repeat(16), "00".repeat(16))),
        "9862"
    );
    assert_eq!(
        send(&mut card, &format!("0088008121 10{} 10{}", "00".repeat(16), "00".repeat(15))),
        "6700"
    );
    assert_eq!(
        send(&mut card, &format!("0088008122 11{} 10{}", "00".repeat(16), "00".repeat(16))),
        "6a80"
    );
    assert_eq!(
        send(&mut card, &format!("0088008222 10{} 10{}", "00".repeat(16), "00".repeat(16))),
        "6a86"
    );
    assert_eq!(
        send(&mut card, &format!("0088018122 10{} 10{}", "00".repeat(16), "00".repeat(16))),
        "6b00"
    );
    assert_eq!(send(&mut card, &format!("0088008010 10{}", "00".repeat(15))), "6700");
}

// ---- OTA, lock, state file ----

pub(crate) fn kid(card: &Card) -> protocol::OtaKey {
    card.state.profile.ota.kid.clone()
}

fn activation(campaign: &str) -> ota::Activation {
    ota::Activation::new(campaign, "mno-b").unwrap()
}

/// The response a card with `profile` owes for "activate TRE" number `counter`.
fn expected_response(p: &SubscriptionProfile, counter: u64, campaign: &str) -> ota::Response {
    ota::Response {
        command: OtaCommand::ActivateTre,
        counter,
        status: ota::ResponseStatus::PorOk,
        iccid: p.iccid.clone(),
        imsi: p.imsi.clone(),
        activation: Some(activation(campaign)),
    }
}

#[test]
fn ota_activates_tre_answers_with_its_proof_and_refuses_replay() {
    let (_d, path, mut card) = new_card();
    let p = profile("89883030000000000015", "001010123456789");
    let mut auc = Auc::new(&p);
    let cmd = ota::seal_activate_tre(&kid(&card), card.iccid(), 1, &activation("c1")).unwrap();
    // Case 3: the response packet waits for GET RESPONSE.
    let sw = hex::encode(card.transmit(&cmd));
    assert!(sw.starts_with("61"), "{sw}");
    let answer = card.transmit(&hex::decode(format!("00c00000{}", &sw[2..])).unwrap());
    let (response, ok) = answer.split_at(answer.len() - 2);
    assert_eq!(ok, [0x90, 0x00]);
    assert_eq!(
        ota::verify_response(response, &kid(&card), &expected_response(&p, 1, "c1")),
        Ok(())
    );
    assert!(card.tre_active() && !card.usim_active());
    let a = card.tre_activation().unwrap();
    assert_eq!((a.campaign(), a.operator(), a.counter()), ("c1", "mno-b", 1));
    assert_eq!(a.response(), response);
    assert_eq!(hex::encode(card.transmit(&cmd)), "6985");
    let v = auc.vector(protocol::Amf([0x80, 0]));
    assert_eq!(card.run_aka(&v.rand, &v.autn), Outcome::Refused(Sw::CONDITIONS_NOT_SATISFIED));
    // Wrong key and wrong card have their own status words.
    let bad =
        ota::seal_activate_tre(&protocol::OtaKey::new([9; 16]), card.iccid(), 2, &activation("c1"))
            .unwrap();
    assert_eq!(hex::encode(card.transmit(&bad)), "6982");
    let other = "89883030000000000023".parse().unwrap();
    let other = ota::seal_activate_tre(&kid(&card), &other, 2, &activation("c1")).unwrap();
    assert_eq!(hex::encode(card.transmit(&other)), "6a88");
    // Persistent across restart, the proof with it.
    drop(card);
    let mut card = Card::open(&path).unwrap();
    assert!(card.tre_active());
    assert_eq!(card.ota_counter(), 1);
    assert_eq!(card.tre_activation().map(TreActivation::response), Some(response));
    // A second activation (another campaign) replaces the first.
    let again = ota::seal_activate_tre(&kid(&card), card.iccid(), 2, &activation("c2")).unwrap();
    let response = card.ota(&again).unwrap();
    assert_eq!(
        ota::verify_response(&response, &kid(&card), &expected_response(&p, 2, "c2")),
        Ok(())
    );
    assert_eq!(card.tre_activation().map(TreActivation::campaign), Some("c2"));
    let off = ota::seal(&ota::Action::DeactivateTre, &kid(&card), card.iccid(), 3).unwrap();
    let response = card.ota(&off).unwrap();
    let expected = ota::Response {
        command: OtaCommand::DeactivateTre,
        activation: None,
        ..expected_response(&p, 3, "c2")
    };
    assert_eq!(ota::verify_response(&response, &kid(&card), &expected), Ok(()));
    assert!(card.usim_active() && card.tre_activation().is_none());
    assert!(matches!(card.run_aka(&v.rand, &v.autn), Outcome::Success { .. }));
}

#[test]
fn a_second_process_cannot_open_the_card() {
    let (_d, path, card) = new_card();
    assert!(matches!(Card::open(&path), Err(UiccError::Locked { .. })));
    assert!(matches!(
        Card::create(&path, profile("89883030000000000015", "001010123456789"), options()),
        Err(UiccError::Locked { .. })
    ));
    drop(card);
    assert!(matches!(
        Card::create(&path, profile("89883030000000000015", "001010123456789"), options()),
        Err(UiccError::AlreadyExists { .. })
    ));
}

#[test]
fn state_file_is_private_and_debug_is_clean() {
    use std::os::unix::fs::PermissionsExt;
    let (_d, path, card) = new_card();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let shown = format!("{card:?}");
    assert!(shown.contains("001010123456789"));
    for secret in ["1111", "2222", "3333", "4444", "3132333435363738"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

fn file_text(path: &Path) -> String {
    String::from_utf8(std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_changed_k_digit_fails_the_integrity_check() {
    let (_d, path, card) = new_card();
    drop(card);
    let text = file_text(&path);
    let k = hex::encode([0x11u8; 16]);
    let field = format!("\"k\": \"{k}\"");
    assert!(text.contains(&field) && text.contains("\"integrity\": \""));
    let changed = text.replace(&field, &format!("\"k\": \"{}2\"", &k[..31]));
    std::fs::write(&path, changed).unwrap();
    let err = Card::open(&path).unwrap_err();
    let UiccError::BadState { reason, .. } = &err else { panic!("{err}") };
    assert_eq!(reason, "integrity check failed: the content does not match its SHA-256");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("1111") && !shown.contains("1112"), "{shown}");

    // The check covers the content, not its layout: reformatted, the file still opens.
    let compact: serde_json::Value = serde_json::from_str(&text).unwrap();
    std::fs::write(&path, compact.to_string()).unwrap();
    assert!(Card::open(&path).is_ok());
    // A missing or malformed check is refused too.
    let mut stripped = compact.clone();
    stripped.as_object_mut().unwrap().remove("integrity");
    std::fs::write(&path, stripped.to_string()).unwrap();
    let err = Card::open(&path).unwrap_err();
    assert!(err.to_string().ends_with("integrity field is missing"), "{err}");
    let mut bad = compact;
    bad["integrity"] = "zz".into();
    std::fs::write(&path, bad.to_string()).unwrap();
    let err = Card::open(&path).unwrap_err();
    assert!(err.to_string().ends_with("integrity must be 64 hex digits (SHA-256)"), "{err}");
}

/// The file as version 1 wrote it: no integrity check, no change record.
fn as_version_1(path: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(&file_text(path)).unwrap();
    let fields = v.as_object_mut().unwrap();
    fields.remove("integrity");
    fields.remove("change");
    fields.insert("version".into(), 1.into());
    v
}

#[test]
fn a_version_1_file_is_read_and_written_as_version_3_on_the_next_save() {
    let (_d, path, card) = new_card();
    drop(card);
    std::fs::write(&path, serde_json::to_vec_pretty(&as_version_1(&path)).unwrap()).unwrap();
    let mut card = Card::open(&path).unwrap();
    assert_eq!(card.state.version, crate::state::VERSION);
    assert!(card.change().is_none() && card.usim_active());
    assert!(file_text(&path).contains("\"version\": 1"));
    // A wrong PIN1 is saved before the answer: the file becomes version 3.
    assert_eq!(send(&mut card, "0020000108 31313131ffffffff"), "63c2");
    let text = file_text(&path);
    assert!(text.contains("\"version\": 3") && text.contains("\"integrity\": \""), "{text}");
    assert!(!text.contains("\"activation\""), "written only while one is in force");
    assert!(text.contains("\"change\": null"));
    drop(card);
    let card = Card::open(&path).unwrap();
    assert_eq!(card.state.pin1.retries_left, 2);
    drop(card);

    // Version 1 knew neither field: a file that says 1 and has one of them is refused
    // (so a check cannot be dropped by just lowering the version of a trial).
    for (field, value) in
        [("integrity", serde_json::json!("00")), ("change", serde_json::json!({}))]
    {
        let mut v1 = as_version_1(&path);
        v1[field] = value;
        std::fs::write(&path, v1.to_string()).unwrap();
        assert!(matches!(Card::open(&path), Err(UiccError::BadState { .. })), "{field}");
    }
    let mut v4 = as_version_1(&path);
    v4["version"] = 4.into();
    std::fs::write(&path, v4.to_string()).unwrap();
    let err = Card::open(&path).unwrap_err();
    assert!(err.to_string().ends_with("version 4 is not supported (this build reads 1 to 3)"));
}

/// The state as version 2 wrote it: no activation, its integrity check over that.
fn as_version_2(state: &crate::state::State) -> Vec<u8> {
    let mut v2 = state.clone();
    v2.version = crate::state::VERSION_2;
    v2.activation = None;
    v2.to_bytes().unwrap().to_vec()
}

#[test]
fn a_version_2_file_keeps_its_tre_but_installs_nothing_under_it() {
    let (_d, path, mut card) = new_card();
    let cmd = ota::seal_activate_tre(&kid(&card), card.iccid(), 1, &activation("c1")).unwrap();
    card.ota(&cmd).unwrap();
    let state = card.state.clone();
    drop(card);
    std::fs::write(&path, as_version_2(&state)).unwrap();
    let mut card = Card::open(&path).unwrap();
    assert_eq!(card.state.version, crate::state::VERSION);
    assert!(card.tre_active() && card.tre_activation().is_none());
    let change = crate::ChangeRef { campaign: "c1".into(), sequence: 1, fallback_at: 1 };
    let new = profile("89883030000000000023", "001010000000002");
    assert!(matches!(card.install_on_trial(new, change), Err(UiccError::NotActivated)));
    // Giving the TRE up works as before; the next save writes version 3.
    assert_eq!(card.fall_back("no activation").unwrap(), crate::FallBack::UsimReactivated);
    assert!(file_text(&path).contains("\"version\": 3"));
    drop(card);

    // Version 2 had no activation: a file that says 2 and carries one is refused.
    let mut v2: serde_json::Value = serde_json::from_slice(&as_version_2(&state)).unwrap();
    v2["activation"] = serde_json::to_value(&state.activation).unwrap();
    std::fs::write(&path, v2.to_string()).unwrap();
    let err = Card::open(&path).unwrap_err();
    assert!(err.to_string().ends_with("version 2 has no activation field"), "{err}");
}

#[test]
fn an_activation_that_does_not_fit_its_state_is_refused() {
    let (_d, path, mut card) = new_card();
    let cmd = ota::seal_activate_tre(&kid(&card), card.iccid(), 1, &activation("c1")).unwrap();
    card.ota(&cmd).unwrap();
    let state = card.state.clone();
    drop(card);
    let reseal = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = serde_json::to_value(&state).unwrap();
        edit(&mut v);
        let edited: crate::state::State = serde_json::from_value(v).unwrap();
        std::fs::write(&path, edited.to_bytes().unwrap()).unwrap();
        match Card::open(&path) {
            Err(UiccError::BadState { reason, .. }) => reason,
            other => panic!("opened: {other:?}"),
        }
    };
    // Another campaign or operator than the card answered for: its response does not fit.
    let reason = reseal(&|v| v["activation"]["activation"]["campaign"] = "c2".into());
    assert!(reason.contains("response does not fit its profile"), "{reason}");
    let reason = reseal(&|v| v["activation"]["activation"]["operator"] = "mno-c".into());
    assert!(reason.contains("operator"), "{reason}");
    let reason = reseal(&|v| v["activation"]["counter"] = 2.into());
    assert!(reason.contains("counter"), "{reason}");
    let reason = reseal(&|v| v["activation"]["response"] = "00".into());
    assert!(reason.contains("response does not fit"), "{reason}");
    // An activation kept while the USIM runs outside a trial.
    let reason = reseal(&|v| v["active"] = "usim".into());
    assert_eq!(reason, "an activation outlives neither its TRE nor its trial");
    // A malformed campaign never loads.
    let mut v = serde_json::to_value(&state).unwrap();
    v["activation"]["activation"]["campaign"] = "c 1".into();
    assert!(serde_json::from_value::<crate::state::State>(v).is_err());
}
