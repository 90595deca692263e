//! Tests of the card: command set, PINs, AKA, OTA, install with injected faults, and the
//! TRE/USIM exclusivity property over random operation sequences with restarts.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use protocol::SubscriptionProfile;
use protocol::milenage::{Milenage, Rand, Sqn};
use protocol::ota::{self, OtaCommand};

use super::*;
use crate::Sw;
use crate::auth::{self, Outcome};
use crate::state::tests::profile;
use crate::store::WriteStep;

const ADM1: &str = "12345678";

fn options() -> CardOptions {
    CardOptions {
        pin1: Pin::from_digits("1234").unwrap(),
        pin1_enabled: false,
        adm1: Pin::from_digits(ADM1).unwrap(),
        mnc_len: 2,
    }
}

fn new_card() -> (tempfile::TempDir, PathBuf, Card) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    let card =
        Card::create(&path, profile("89883030000000000015", "001010123456789"), options()).unwrap();
    (dir, path, card)
}

/// Sends a hex APDU, returns the hex answer.
fn send(card: &mut Card, apdu: &str) -> String {
    hex::encode(card.transmit(&hex::decode(apdu.replace(' ', "")).unwrap()))
}

fn select_usim(card: &mut Card) {
    assert_eq!(send(card, "00a4040c07 a0000000871002"), "9000");
}

/// The network side of the tests: one subscriber's AuC with its SQN_HE.
struct Auc {
    m: Milenage,
    seq: u64,
}

impl Auc {
    fn new(p: &SubscriptionProfile) -> Self {
        Self { m: Milenage::new(&p.k, &p.opc), seq: 0 }
    }

    fn vector(&mut self, amf: protocol::Amf) -> protocol::milenage::AuthVector {
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

// ---- OTA, install, exclusivity ----

fn kid(card: &Card) -> protocol::OtaKey {
    card.state.profile.ota.kid.clone()
}

#[test]
fn ota_activates_tre_and_refuses_replay() {
    let (_d, path, mut card) = new_card();
    let p = profile("89883030000000000015", "001010123456789");
    let mut auc = Auc::new(&p);
    let cmd = ota::seal_activate_tre(&kid(&card), card.iccid(), 1).unwrap();
    assert_eq!(hex::encode(card.transmit(&cmd)), "9000");
    assert!(card.tre_active() && !card.usim_active());
    assert_eq!(hex::encode(card.transmit(&cmd)), "6985");
    let v = auc.vector(protocol::Amf([0x80, 0]));
    assert_eq!(card.run_aka(&v.rand, &v.autn), Outcome::Refused(Sw::CONDITIONS_NOT_SATISFIED));
    // Wrong key and wrong card have their own status words.
    let bad = ota::seal_activate_tre(&protocol::OtaKey::new([9; 16]), card.iccid(), 2).unwrap();
    assert_eq!(hex::encode(card.transmit(&bad)), "6982");
    let other =
        ota::seal_activate_tre(&kid(&card), &"89883030000000000023".parse().unwrap(), 2).unwrap();
    assert_eq!(hex::encode(card.transmit(&other)), "6a88");
    // Persistent across restart.
    drop(card);
    let mut card = Card::open(&path).unwrap();
    assert!(card.tre_active());
    assert_eq!(card.ota_counter(), 1);
    let off = ota::seal(OtaCommand::DeactivateTre, &kid(&card), card.iccid(), 2).unwrap();
    assert_eq!(card.ota(&off).unwrap(), OtaCommand::DeactivateTre);
    assert!(card.usim_active());
    assert!(matches!(card.run_aka(&v.rand, &v.autn), Outcome::Success { .. }));
}

#[test]
fn install_requires_the_tre_and_resets_into_the_new_profile() {
    let (_d, path, mut card) = new_card();
    let new = profile("89883030000000000023", "001010000000002");
    assert!(matches!(card.install_profile(new.clone()), Err(UiccError::TreNotActive)));
    card.ota(&ota::seal_activate_tre(&kid(&card), card.iccid(), 1).unwrap()).unwrap();
    select_usim(&mut card);
    card.install_profile(new.clone()).unwrap();
    assert!(card.usim_active());
    assert_eq!(card.imsi().as_str(), "001010000000002");
    // The reset deselected the USIM.
    assert_eq!(send(&mut card, "00a4000c02 7fff"), "6a82");
    let mut auc = Auc::new(&new);
    let v = auc.vector(protocol::Amf([0x80, 0]));
    assert!(matches!(card.run_aka(&v.rand, &v.autn), Outcome::Success { .. }));
    select_usim(&mut card);
    assert_eq!(send(&mut card, "00b0870000"), "0809101000000000209000");
    drop(card);
    let card = Card::open(&path).unwrap();
    assert_eq!(card.iccid().as_str(), "89883030000000000023");
}

#[test]
fn every_injected_install_fault_leaves_a_whole_profile_and_the_usim_active() {
    for step in WriteStep::ALL {
        let (_d, path, mut card) = new_card();
        let old = card.state.profile.clone();
        let same = |a: &SubscriptionProfile, b: &SubscriptionProfile| same_subscription(a, b);
        let new = profile("89883030000000000023", "001010000000002");
        card.ota(&ota::seal_activate_tre(&kid(&card), card.iccid(), 1).unwrap()).unwrap();
        let err = card.install_with(new.clone(), &FaultPlan::fail_at(step)).unwrap_err();
        let UiccError::InstallFailed { committed, .. } = err else { panic!("{err}") };
        assert_eq!(committed, step.committed(), "{step:?}");
        let expected = if committed { &new } else { &old };
        assert!(card.usim_active(), "{step:?}");
        assert!(same(&card.state.profile, expected), "{step:?}");
        drop(card);
        let card = Card::open(&path).unwrap();
        assert!(same(&card.state.profile, expected), "{step:?} after restart");
        assert!(card.usim_active(), "{step:?} after restart");
    }
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

// ---- the exclusivity property ----

/// The same subscription: everything but the OTA counter, which moves with each command.
fn same_subscription(a: &SubscriptionProfile, b: &SubscriptionProfile) -> bool {
    (&a.iccid, &a.imsi, &a.k, &a.opc, a.amf, &a.ota.kic, &a.ota.kid)
        == (&b.iccid, &b.imsi, &b.k, &b.opc, b.amf, &b.ota.kic, &b.ota.kid)
}

#[derive(Clone, Debug)]
enum Op {
    Authenticate,
    Activate,
    ActivateFaulty(WriteStep),
    ActivateReplayed,
    ActivateForged,
    Deactivate,
    Install(u8),
    InstallFaulty(u8, WriteStep),
    Abort,
    Restart,
    Reset,
    Apdu(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    let step = prop::sample::select(WriteStep::ALL.to_vec());
    prop_oneof![
        3 => Just(Op::Authenticate),
        3 => Just(Op::Activate),
        1 => step.clone().prop_map(Op::ActivateFaulty),
        1 => Just(Op::ActivateReplayed),
        1 => Just(Op::ActivateForged),
        1 => Just(Op::Deactivate),
        2 => any::<u8>().prop_map(Op::Install),
        2 => (any::<u8>(), step).prop_map(|(n, s)| Op::InstallFaulty(n, s)),
        1 => Just(Op::Abort),
        2 => Just(Op::Restart),
        1 => Just(Op::Reset),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Op::Apdu),
    ]
}

/// What the operators know: the current profile, MNO-A's OTA counter, the AuC's SQN.
struct Model {
    profile: SubscriptionProfile,
    tre: bool,
    counter: u64,
    auc: Auc,
    last_activation: Option<Vec<u8>>,
}

fn numbered_profile(n: u8) -> SubscriptionProfile {
    let mut p = profile(
        Iccid::with_check_digit(&format!("89883030000000{n:05}")).unwrap().as_str(),
        &format!("0010100000{n:05}"),
    );
    p.k = protocol::SubscriberKey::new([n; 16]);
    p.ota.kid = protocol::OtaKey::new([n ^ 0x5A; 16]);
    p.ota.counter = u64::from(n);
    p
}

fn activation(model: &mut Model, command: OtaCommand) -> Vec<u8> {
    model.counter += 1;
    ota::seal(command, &model.profile.ota.kid, &model.profile.iccid, model.counter).unwrap()
}

fn install(model: &mut Model, card: &mut Card, n: u8, faults: FaultPlan) {
    let new = numbered_profile(n);
    let result = card.install_with(new.clone(), &faults);
    match (model.tre, result) {
        (false, Err(UiccError::TreNotActive)) => {}
        (true, Ok(())) => adopt(model, new),
        (true, Err(UiccError::InstallFailed { committed, .. })) => {
            model.tre = false;
            if committed {
                adopt(model, new);
            }
        }
        (tre, r) => panic!("install with TRE {tre}: {r:?}"),
    }
}

fn adopt(model: &mut Model, new: SubscriptionProfile) {
    model.tre = false;
    model.counter = new.ota.counter;
    model.auc = Auc::new(&new);
    model.profile = new;
    // Its commands were MACed for the old profile.
    model.last_activation = None;
}

fn step(model: &mut Model, card: &mut Card, op: Op) {
    match op {
        Op::Authenticate => {}
        Op::Activate => {
            let cmd = activation(model, OtaCommand::ActivateTre);
            assert_eq!(card.ota(&cmd).unwrap(), OtaCommand::ActivateTre);
            model.tre = true;
            model.last_activation = Some(cmd);
        }
        Op::ActivateFaulty(at) => {
            let cmd = activation(model, OtaCommand::ActivateTre);
            let r = card.ota_with(&cmd, &FaultPlan::fail_at(at));
            assert!(matches!(r, Err(UiccError::Persist { .. })));
            if at.committed() {
                model.tre = true;
            } else {
                // Not stored: the operator may send the same counter again later.
                model.counter -= 1;
            }
        }
        Op::ActivateReplayed => {
            if let Some(cmd) = &model.last_activation {
                assert_ne!(card.transmit(cmd), [0x90, 0x00]);
            }
        }
        Op::ActivateForged => {
            // Any key but the profile's KID.
            let forged = protocol::OtaKey::new(model.profile.ota.kid.expose().map(|b| !b));
            let cmd =
                ota::seal_activate_tre(&forged, &model.profile.iccid, model.counter + 1).unwrap();
            assert_eq!(card.transmit(&cmd), [0x69, 0x82]);
        }
        Op::Deactivate => {
            let cmd = activation(model, OtaCommand::DeactivateTre);
            assert_eq!(card.transmit(&cmd), [0x90, 0x00]);
            model.tre = false;
        }
        Op::Install(n) => install(model, card, n, FaultPlan::default()),
        Op::InstallFaulty(n, at) => install(model, card, n, FaultPlan::fail_at(at)),
        Op::Abort => {
            card.abort_tre().unwrap();
            model.tre = false;
        }
        // Handled by the caller, which owns the card.
        Op::Restart => {}
        Op::Reset => card.reset(),
        Op::Apdu(bytes) => {
            let answer = card.transmit(&bytes);
            assert!((2..=258).contains(&answer.len()));
        }
    }
}

/// The invariant, checked in memory, on disk, and by behaviour: exactly one of TRE and USIM
/// is active, the profile is whole, and AUTHENTICATE works exactly when the USIM is active.
fn check(model: &mut Model, card: &mut Card, path: &Path) {
    assert!(card.tre_active() != card.usim_active());
    assert_eq!(card.tre_active(), model.tre);
    assert!(same_subscription(&card.state.profile, &model.profile));
    assert_eq!(card.ota_counter(), model.counter);
    let on_disk = State::load(path).unwrap();
    assert!(same_subscription(&on_disk.profile, &model.profile));
    assert_eq!(on_disk.profile.ota.counter, model.counter);
    assert_eq!(on_disk.active == Active::Tre, model.tre);
    let v = model.auc.vector(model.profile.amf);
    card.reset();
    match card.run_aka(&v.rand, &v.autn) {
        Outcome::Success { res, .. } => assert!(!model.tre && res == v.xres),
        Outcome::Refused(sw) => assert!(model.tre && sw == Sw::CONDITIONS_NOT_SATISFIED),
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn exactly_one_of_tre_and_usim_is_active(ops in prop::collection::vec(op(), 1..24)) {
        let (_d, path, mut card) = new_card();
        let profile = card.state.profile.clone();
        let mut model = Model { auc: Auc::new(&profile), profile, tre: false, counter: 0, last_activation: None };
        check(&mut model, &mut card, &path);
        for op in ops {
            if let Op::Restart = op {
                drop(card);
                card = Card::open(&path).unwrap();
            } else {
                step(&mut model, &mut card, op);
            }
            check(&mut model, &mut card, &path);
        }
    }
}
