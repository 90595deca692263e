//! Tests of the subscription change: install on trial, re-delivery, commit, fall-back, the
//! fallback timer's query, every injected write fault, and the property test over random
//! operation sequences with crashes (drop and reopen), checking after every step that
//! exactly one of TRE and USIM is active, that a trial keeps the old subscription exactly,
//! that a fall-back restores it, that a commit forgets it, and that the disk equals memory.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use protocol::ota::{self, OtaCommand};

use crate::activation::TreActivation;
use protocol::{Iccid, SubscriberKey, SubscriptionProfile};

use super::*;
use crate::Sw;
use crate::auth::Outcome;
use crate::card::tests::{Auc, kid, new_card, send};
use crate::state::tests::profile;
use crate::store::WriteStep;

fn numbered_profile(n: u8) -> SubscriptionProfile {
    let mut p = profile(
        Iccid::with_check_digit(&format!("89883030000000{n:05}")).unwrap().as_str(),
        &format!("0010100000{n:05}"),
    );
    p.k = SubscriberKey::new([n; 16]);
    p.opc = protocol::Opc::new([n ^ 0xA5; 16]);
    p.ota.kid = protocol::OtaKey::new([n ^ 0x5A; 16]);
    p.ota.counter = u64::from(n);
    p
}

fn change_ref(campaign: &str, sequence: u64) -> ChangeRef {
    ChangeRef { campaign: campaign.into(), sequence, fallback_at: 1_700_000_000 + sequence }
}

/// MNO-A's activate-TRE for campaign `c1`, the campaign of most tests' changes.
fn activate(card: &mut Card) {
    activate_for(card, "c1");
}

fn activation(campaign: &str) -> ota::Activation {
    ota::Activation::new(campaign, "mno-b").unwrap()
}

fn activate_for(card: &mut Card, campaign: &str) {
    let cmd = ota::seal_activate_tre(
        &kid(card),
        card.iccid(),
        card.ota_counter() + 1,
        &activation(campaign),
    )
    .unwrap();
    card.ota(&cmd).unwrap();
    assert!(card.tre_active());
    assert_eq!(card.tre_activation().map(TreActivation::campaign), Some(campaign));
}

fn subscription_files(state: &State) -> BTreeMap<String, HexBytes> {
    state
        .files
        .iter()
        .filter(|(name, _)| fs::ef_by_name(name).is_some_and(fs::is_per_subscription))
        .map(|(n, c)| (n.clone(), c.clone()))
        .collect()
}

fn disk(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn aka_works(card: &mut Card, auc: &mut Auc) -> bool {
    let v = auc.vector(protocol::Amf([0x80, 0]));
    card.reset();
    matches!(card.run_aka(&v.rand, &v.autn), Outcome::Success { res, .. } if res == v.xres)
}

/// Writes EF_LOCI (a per-subscription EF, PIN1 disabled so always writable).
fn write_loci(card: &mut Card, byte: u8) {
    card.reset();
    assert_eq!(send(card, "00a4040c07 a0000000871002"), "9000");
    assert_eq!(send(card, "00a4000c02 6f7e"), "9000");
    assert_eq!(send(card, &format!("00d600000b {}", hex::encode([byte; 11]))), "9000");
}

#[test]
fn install_on_trial_needs_the_tre_and_keeps_the_old_subscription() {
    let (_d, path, mut card) = new_card();
    let old = card.state.profile.clone();
    let new = numbered_profile(2);
    let r = change_ref("c1", 1);
    assert!(matches!(card.install_on_trial(new.clone(), r.clone()), Err(UiccError::TreNotActive)));
    activate(&mut card);
    let old_counter = card.ota_counter();
    assert_eq!(send(&mut card, "00a4040c07 a0000000871002"), "9000");
    card.install_on_trial(new.clone(), r.clone()).unwrap();
    assert!(card.usim_active() && !card.tre_active());
    assert_eq!(card.imsi(), &new.imsi);
    // The card reset: the USIM is no longer selected.
    assert_eq!(send(&mut card, "00a4000c02 7fff"), "6a82");
    let change = card.change().unwrap();
    assert!(change.is("c1", 1) && change.on_trial());
    assert_eq!(change.phase(), Phase::Trial);
    assert_eq!((&change.old_imsi, &change.new_imsi), (&old.imsi, &new.imsi));
    assert_eq!(change.fallback_at, r.fallback_at);
    let fallback = change.fallback().unwrap();
    assert_eq!(fallback.profile.ota.counter, old_counter);
    assert!(same_subscription(&fallback.profile, &old));
    assert!(aka_works(&mut card, &mut Auc::new(&new)));
    drop(card);
    let card = Card::open(&path).unwrap();
    assert_eq!(card.imsi(), &new.imsi);
    assert!(card.usim_active() && card.change().is_some_and(Change::on_trial));
}

#[test]
fn an_install_must_be_for_the_activated_campaign() {
    let (_d, path, mut card) = new_card();
    activate_for(&mut card, "c2");
    let before = disk(&path);
    let err = card.install_on_trial(numbered_profile(2), change_ref("c1", 1)).unwrap_err();
    assert!(
        matches!(&err, UiccError::ActivationMismatch { activated, campaign }
            if activated == "c2" && campaign == "c1"),
        "{err}"
    );
    assert!(card.tre_active() && card.change().is_none());
    assert_eq!(disk(&path), before, "a refused install writes nothing");
    // The activated campaign installs; its activation stays through the trial, also on disk.
    card.install_on_trial(numbered_profile(2), change_ref("c2", 1)).unwrap();
    drop(card);
    let mut card = Card::open(&path).unwrap();
    assert_eq!(card.tre_activation().map(TreActivation::campaign), Some("c2"));
    assert_eq!(card.tre_activation().map(TreActivation::operator), Some("mno-b"));
    // The change ends: the activation with it (here a commit).
    assert_eq!(card.commit_change("c2", 1).unwrap(), Phase::Committed);
    assert!(card.tre_activation().is_none());
    // A fall-back from the trial, and giving the TRE up, end it too.
    activate_for(&mut card, "c1");
    assert_eq!(card.fall_back("gave up").unwrap(), FallBack::UsimReactivated);
    assert!(card.tre_activation().is_none());
    activate_for(&mut card, "c1");
    card.install_on_trial(numbered_profile(3), change_ref("c1", 2)).unwrap();
    assert_eq!(card.fall_back("timer").unwrap(), FallBack::RestoredOldProfile);
    assert!(card.tre_activation().is_none());
    drop(card);
    assert!(Card::open(&path).unwrap().tre_activation().is_none());
}

#[test]
fn redelivery_is_idempotent_and_another_change_waits() {
    let (_d, path, mut card) = new_card();
    activate(&mut card);
    let new = numbered_profile(2);
    card.install_on_trial(new.clone(), change_ref("c1", 1)).unwrap();
    let before = disk(&path);
    card.install_on_trial(new.clone(), change_ref("c1", 1)).unwrap();
    assert_eq!(disk(&path), before);
    assert!(matches!(
        card.install_on_trial(numbered_profile(3), change_ref("c1", 1)),
        Err(UiccError::ChangeMismatch { sequence: 1, .. })
    ));
    let err = card.install_on_trial(numbered_profile(3), change_ref("c1", 2)).unwrap_err();
    assert!(matches!(&err, UiccError::ChangeOnTrial { campaign, sequence: 1 } if campaign == "c1"));
    // No TRE during a trial: the OTA command is refused and its counter not consumed.
    let counter = card.ota_counter();
    let cmd =
        ota::seal_activate_tre(&kid(&card), card.iccid(), counter + 1, &activation("c1")).unwrap();
    assert_eq!(hex::encode(card.transmit(&cmd)), "6985");
    assert!(matches!(card.ota(&cmd), Err(UiccError::ChangeOnTrial { .. })));
    assert_eq!(card.ota_counter(), counter);
    assert!(card.usim_active());
    assert_eq!(disk(&path), before);
}

#[test]
fn fall_back_restores_the_old_subscription_exactly() {
    let (_d, path, mut card) = new_card();
    let old = card.state.profile.clone();
    let mut old_auc = Auc::new(&old);
    assert!(aka_works(&mut card, &mut old_auc) && aka_works(&mut card, &mut old_auc));
    write_loci(&mut card, 0x42);
    activate(&mut card);
    let before = card.state.clone();
    let new = numbered_profile(2);
    card.install_on_trial(new.clone(), change_ref("c1", 1)).unwrap();
    assert_ne!(subscription_files(&card.state), subscription_files(&before));
    assert!(aka_works(&mut card, &mut Auc::new(&new)));
    write_loci(&mut card, 0x43);
    assert!(card.fallback_due(1_700_000_001) && !card.fallback_due(1_700_000_000));

    assert_eq!(card.fall_back("fallback timer expired").unwrap(), FallBack::RestoredOldProfile);
    assert!(card.usim_active());
    assert_eq!(card.state.profile, before.profile);
    assert_eq!(card.state.sqn, before.sqn);
    assert_eq!(subscription_files(&card.state), subscription_files(&before));
    let phase = Phase::FellBack { reason: "fallback timer expired".into() };
    assert_eq!(card.change().unwrap().phase(), phase);
    assert!(!card.fallback_due(u64::MAX));
    // The old AuC goes on where it was; its stale vectors stay stale.
    assert!(aka_works(&mut card, &mut old_auc));
    let mut replayed = Auc::new(&old);
    assert!(!aka_works(&mut card, &mut replayed));

    // Idempotent; the commit that comes too late learns that the card fell back.
    assert_eq!(card.fall_back("again").unwrap(), FallBack::AlreadyFellBack);
    assert_eq!(card.commit_change("c1", 1).unwrap(), phase);
    assert!(matches!(
        card.install_on_trial(new.clone(), change_ref("c1", 1)),
        Err(UiccError::ChangeSettled { phase: Phase::FellBack { .. }, .. })
    ));
    drop(card);
    let mut card = Card::open(&path).unwrap();
    assert_eq!(card.change().unwrap().phase(), phase);
    assert_eq!(card.imsi(), &old.imsi);
    assert!(aka_works(&mut card, &mut old_auc));
}

#[test]
fn commit_is_the_point_of_no_return() {
    let (_d, path, mut card) = new_card();
    activate(&mut card);
    let new = numbered_profile(2);
    card.install_on_trial(new.clone(), change_ref("c1", 1)).unwrap();
    assert!(matches!(
        card.commit_change("c1", 2),
        Err(UiccError::NoSuchChange { sequence: 2, .. })
    ));
    assert!(matches!(card.commit_change("c2", 1), Err(UiccError::NoSuchChange { .. })));
    assert_eq!(card.commit_change("c1", 1).unwrap(), Phase::Committed);
    assert_eq!(card.commit_change("c1", 1).unwrap(), Phase::Committed);
    assert!(card.change().unwrap().fallback().is_none());
    assert!(!card.fallback_due(u64::MAX));
    // The old K is nowhere in the file.
    let text = String::from_utf8(disk(&path)).unwrap();
    assert!(!text.contains(&hex::encode([0x11u8; 16])), "old K still stored");
    assert!(!text.contains("\"fallback\""));
    assert!(matches!(
        card.fall_back("too late"),
        Err(UiccError::AlreadyCommitted { sequence: 1, .. })
    ));
    drop(card);
    let mut card = Card::open(&path).unwrap();
    assert_eq!(card.commit_change("c1", 1).unwrap(), Phase::Committed);
    assert!(matches!(card.fall_back("too late"), Err(UiccError::AlreadyCommitted { .. })));
    // MNO-B may activate the TRE for the next change; giving that up keeps the new profile.
    activate(&mut card);
    assert_eq!(card.fall_back("gave up").unwrap(), FallBack::UsimReactivated);
    assert_eq!(card.imsi(), &new.imsi);
    assert!(aka_works(&mut card, &mut Auc::new(&new)));
}

#[test]
fn fall_back_without_a_trial_reactivates_the_usim() {
    let (_d, path, mut card) = new_card();
    assert_eq!(card.fall_back("nothing").unwrap(), FallBack::AlreadyOnUsim);
    activate(&mut card);
    assert_eq!(card.fall_back("RO gave up").unwrap(), FallBack::UsimReactivated);
    assert!(card.usim_active() && card.change().is_none());
    assert_eq!(card.fall_back("again").unwrap(), FallBack::AlreadyOnUsim);
    drop(card);
    assert!(Card::open(&path).unwrap().usim_active());
}

#[test]
fn every_injected_fault_leaves_one_whole_phase() {
    for step in WriteStep::ALL {
        let committed = step.committed();
        let new = numbered_profile(2);

        // Install: before the rename the TRE is aborted, after it the trial counts.
        let (_d, path, mut card) = new_card();
        let old = card.state.profile.clone();
        activate(&mut card);
        let err = card.install_with(new.clone(), change_ref("c1", 1), &FaultPlan::fail_at(step));
        assert!(
            matches!(err, Err(UiccError::InstallFailed { committed: c, .. }) if c == committed),
            "{step:?}"
        );
        for reopened in [false, true] {
            if reopened {
                drop(card);
                card = Card::open(&path).unwrap();
            }
            assert!(card.usim_active() && !card.tre_active(), "{step:?}");
            let expected = if committed { &new } else { &old };
            assert!(same_subscription(&card.state.profile, expected), "{step:?}");
            assert_eq!(card.change().is_some_and(Change::on_trial), committed, "{step:?}");
        }
        if !committed {
            continue;
        }

        // Commit: the trial or the commit, whole.
        let mut trial = card.state.clone();
        let err = card.commit_with("c1", 1, &FaultPlan::fail_at(step)).unwrap_err();
        assert!(matches!(err, UiccError::Persist { step: s, .. } if s == step));
        drop(card);
        card = Card::open(&path).unwrap();
        assert_eq!(card.change().unwrap().phase(), Phase::Committed, "{step:?}");
        assert!(same_subscription(&card.state.profile, &new));

        // Fall back, from a trial written again.
        trial.change = trial.change.map(|mut c| {
            c.sequence = 2;
            c
        });
        std::fs::write(&path, trial.to_bytes().unwrap()).unwrap();
        drop(card);
        card = Card::open(&path).unwrap();
        let err = card.fall_back_with("timer", &FaultPlan::fail_at(step)).unwrap_err();
        assert!(matches!(err, UiccError::Persist { step: s, .. } if s == step));
        drop(card);
        card = Card::open(&path).unwrap();
        assert!(card.usim_active());
        assert_eq!(card.change().unwrap().phase(), Phase::FellBack { reason: "timer".into() });
        assert!(same_subscription(&card.state.profile, &old));
    }
    // Before the rename, commit and fall-back change nothing.
    for step in WriteStep::ALL.into_iter().filter(|s| !s.committed()) {
        let (_d, path, mut card) = new_card();
        activate(&mut card);
        card.install_on_trial(numbered_profile(2), change_ref("c1", 1)).unwrap();
        let before = disk(&path);
        let err = card.commit_with("c1", 1, &FaultPlan::fail_at(step)).unwrap_err();
        assert!(matches!(err, UiccError::Persist { .. }));
        assert!(card.change().unwrap().on_trial());
        assert!(card.fall_back_with("x", &FaultPlan::fail_at(step)).is_err());
        assert!(card.change().unwrap().on_trial());
        assert_eq!(
            card.state.canonical().unwrap(),
            State::from_bytes(&before).unwrap().canonical().unwrap()
        );
        drop(card);
        assert_eq!(disk(&path), before, "{step:?}");
        // The TRE-only fall-back, likewise.
        let (_d, path, mut card) = new_card();
        activate(&mut card);
        assert!(card.fall_back_with("x", &FaultPlan::fail_at(step)).is_err());
        assert!(card.tre_active());
        drop(card);
        assert!(Card::open(&path).unwrap().tre_active());
    }
}

#[test]
fn change_debug_and_errors_hold_no_secrets() {
    let (_d, _p, mut card) = new_card();
    activate(&mut card);
    card.install_on_trial(numbered_profile(2), change_ref("c1", 1)).unwrap();
    let shown = format!("{card:?} {:?} {:?}", card.change(), card.state);
    for secret in ["1111", "2222", "3333", "4444", "0202020202", "a7a7a7a7", "5858585858"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("c1") && shown.contains("Trial"));
    let err = card.install_on_trial(numbered_profile(3), change_ref("c1", 2)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "change 1 of campaign \"c1\" is on trial: commit it or fall back first"
    );
}

// ---- the property ----

#[derive(Clone, Debug)]
enum Op {
    /// For campaign `c1` (`true`) or `c2`.
    Activate(bool, Option<WriteStep>),
    ActivateReplayed,
    ActivateForged,
    Deactivate,
    /// A profile number and a change number.
    Install(u8, u8, Option<WriteStep>),
    Redeliver,
    /// The last change (`true`) or the numbered one.
    Commit(bool, u8, Option<WriteStep>),
    FallBack(Option<WriteStep>),
    WriteLoci(u8),
    Restart,
    Reset,
    Apdu(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    let fault = || prop::option::weighted(0.3, prop::sample::select(WriteStep::ALL.to_vec()));
    prop_oneof![
        4 => (prop::bool::weighted(0.7), fault()).prop_map(|(c1, f)| Op::Activate(c1, f)),
        1 => Just(Op::ActivateReplayed),
        1 => Just(Op::ActivateForged),
        1 => Just(Op::Deactivate),
        4 => (0u8..4, 0u8..4, fault()).prop_map(|(n, c, f)| Op::Install(n, c, f)),
        1 => Just(Op::Redeliver),
        3 => (prop::bool::weighted(0.75), 0u8..4, fault())
            .prop_map(|(last, c, f)| Op::Commit(last, c, f)),
        3 => fault().prop_map(Op::FallBack),
        1 => any::<u8>().prop_map(Op::WriteLoci),
        3 => Just(Op::Restart),
        1 => Just(Op::Reset),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Op::Apdu),
    ]
}

fn numbered_change(c: u8) -> ChangeRef {
    change_ref(if c.is_multiple_of(2) { "c1" } else { "c2" }, u64::from(c / 2))
}

/// A subscription as the operators see it: the profile with its current OTA counter, and
/// the AuC with its SQN_HE.
struct Sub {
    profile: SubscriptionProfile,
    auc: Auc,
}

impl Sub {
    fn new(profile: SubscriptionProfile) -> Self {
        Self { auc: Auc::new(&profile), profile }
    }
}

/// The old subscription as the card had it at the install.
struct Old {
    sub: Sub,
    sqn: SqnArray,
    files: BTreeMap<String, HexBytes>,
}

struct ModelChange {
    change: ChangeRef,
    phase: Phase,
    installed: SubscriptionProfile,
    old_k: SubscriberKey,
    /// Some exactly while on trial.
    old: Option<Old>,
}

struct Model {
    sub: Sub,
    tre: bool,
    last_activation: Option<Vec<u8>>,
    /// The campaign of the TRE activation in force.
    activated: Option<String>,
    change: Option<ModelChange>,
}

impl Model {
    fn trial(&self) -> Option<&ModelChange> {
        self.change.as_ref().filter(|c| c.old.is_some())
    }

    fn activation(&mut self, action: &ota::Action) -> Vec<u8> {
        let p = &mut self.sub.profile;
        p.ota.counter += 1;
        ota::seal(action, &p.ota.kid, &p.iccid, p.ota.counter).unwrap()
    }

    fn adopt_trial(&mut self, before: &State, new: SubscriptionProfile, change: ChangeRef) {
        let old_sub = std::mem::replace(&mut self.sub, Sub::new(new.clone()));
        let old = Old { sqn: before.sqn.clone(), files: subscription_files(before), sub: old_sub };
        let old_k = old.sub.profile.k.clone();
        self.change = Some(ModelChange {
            change,
            phase: Phase::Trial,
            installed: new,
            old_k,
            old: Some(old),
        });
        self.tre = false;
        // Its commands were MACed for the old profile; the activation stays with the trial.
        self.last_activation = None;
    }

    fn fell_back(&mut self, card: &Card, reason: &str) {
        let Some(change) = self.change.as_mut() else { panic!("no change") };
        let Some(old) = change.old.take() else { panic!("not on trial") };
        change.phase = Phase::FellBack { reason: reason.into() };
        // Exactly the old subscription: IMSI, K, OPc, counter, SQN array, EFs.
        assert_eq!(card.state.profile, old.sub.profile);
        assert_eq!(card.state.sqn, old.sqn);
        assert_eq!(subscription_files(&card.state), old.files);
        self.sub = old.sub;
        self.tre = false;
        self.last_activation = None;
        self.activated = None;
    }

    fn committed(&mut self) {
        if let Some(change) = self.change.as_mut() {
            change.phase = Phase::Committed;
            change.old = None;
        }
        self.activated = None;
    }
}

fn step(model: &mut Model, card: &mut Card, op: Op) {
    let plan = |f: Option<WriteStep>| f.map(FaultPlan::fail_at).unwrap_or_default();
    match op {
        Op::Activate(c1, fault) => {
            let campaign = if c1 { "c1" } else { "c2" };
            let cmd = model.activation(&ota::Action::ActivateTre(activation(campaign)));
            let r = card.ota_with(&cmd, &plan(fault));
            match (model.trial().is_some(), fault, r) {
                (true, _, Err(UiccError::ChangeOnTrial { .. })) => {
                    model.sub.profile.ota.counter -= 1
                }
                (false, None, Ok(response)) => {
                    // The card's answer proves the command to MNO-A, under the KID it used.
                    let p = &model.sub.profile;
                    let expected = ota::Response {
                        command: OtaCommand::ActivateTre,
                        counter: p.ota.counter,
                        status: ota::ResponseStatus::PorOk,
                        iccid: p.iccid.clone(),
                        imsi: p.imsi.clone(),
                        activation: Some(activation(campaign)),
                    };
                    assert_eq!(ota::verify_response(&response, &p.ota.kid, &expected), Ok(()));
                    model.tre = true;
                    model.activated = Some(campaign.into());
                    model.last_activation = Some(cmd);
                }
                (false, Some(at), Err(UiccError::Persist { step, .. })) if at == step => {
                    if at.committed() {
                        model.tre = true;
                        model.activated = Some(campaign.into());
                    } else {
                        // Not stored: the operator may send the same counter again later.
                        model.sub.profile.ota.counter -= 1;
                    }
                }
                (trial, fault, r) => panic!("activate on trial {trial}, fault {fault:?}: {r:?}"),
            }
        }
        Op::ActivateReplayed => {
            if let Some(cmd) = &model.last_activation {
                assert_ne!(card.transmit(cmd), [0x90, 0x00]);
            }
        }
        Op::ActivateForged => {
            let p = &model.sub.profile;
            let forged = protocol::OtaKey::new(p.ota.kid.expose().map(|b| !b));
            let cmd =
                ota::seal_activate_tre(&forged, &p.iccid, p.ota.counter + 1, &activation("c1"))
                    .unwrap();
            assert_eq!(card.transmit(&cmd), [0x69, 0x82]);
        }
        Op::Deactivate => {
            let mut cmd = model.activation(&ota::Action::DeactivateTre);
            // Case 4: the response packet comes at once, with 9000.
            cmd.push(0x00);
            let answer = card.transmit(&cmd);
            assert_eq!(answer.get(answer.len() - 2..), Some(&[0x90, 0x00][..]));
            assert!(answer.len() > 2);
            model.tre = false;
            if model.trial().is_none() {
                model.activated = None;
            }
        }
        Op::Install(n, c, fault) => {
            let new = numbered_profile(n);
            let change = numbered_change(c);
            let before = card.state.clone();
            let r = card.install_with(new.clone(), change.clone(), &plan(fault));
            let same = |m: &ModelChange| {
                (&m.change.campaign, m.change.sequence) == (&change.campaign, change.sequence)
            };
            match (&model.change, r) {
                (Some(m), Ok(())) if m.old.is_some() && same(m) => {
                    assert!(same_subscription(&m.installed, &new));
                }
                (Some(m), Err(UiccError::ChangeMismatch { .. })) if m.old.is_some() && same(m) => {
                    assert!(!same_subscription(&m.installed, &new));
                }
                (Some(m), Err(UiccError::ChangeOnTrial { .. })) if m.old.is_some() && !same(m) => {}
                (Some(m), Err(UiccError::ChangeSettled { phase, .. }))
                    if m.old.is_none() && same(m) =>
                {
                    assert_eq!(phase, m.phase);
                }
                (m, r) if m.as_ref().is_some_and(|m| m.old.is_some() || same(m)) => {
                    panic!("install of a known change: {r:?}")
                }
                (_, Err(UiccError::TreNotActive)) if !model.tre => {}
                // Only the activated campaign installs.
                (_, Err(UiccError::ActivationMismatch { activated, campaign }))
                    if model.tre && model.activated.as_deref() != Some(&change.campaign) =>
                {
                    assert_eq!(Some(activated), model.activated.clone());
                    assert_eq!(campaign, change.campaign);
                }
                (_, Ok(()))
                    if model.tre
                        && fault.is_none()
                        && model.activated.as_deref() == Some(&change.campaign) =>
                {
                    model.adopt_trial(&before, new, change)
                }
                (_, Err(UiccError::InstallFailed { step, committed, .. }))
                    if model.tre
                        && fault == Some(step)
                        && committed == step.committed()
                        && model.activated.as_deref() == Some(&change.campaign) =>
                {
                    model.tre = false;
                    if committed {
                        model.adopt_trial(&before, new, change);
                    } else {
                        model.activated = None;
                    }
                }
                (_, r) => panic!("install with TRE {}, fault {fault:?}: {r:?}", model.tre),
            }
        }
        Op::Redeliver => {
            if let Some(m) = model.trial() {
                let before = card.state.canonical().unwrap();
                card.install_on_trial(m.installed.clone(), m.change.clone()).unwrap();
                assert!(card.state.canonical().unwrap() == before);
            }
        }
        Op::Commit(last, c, fault) => {
            let target = match (&model.change, last) {
                (Some(m), true) => m.change.clone(),
                _ => numbered_change(c),
            };
            let r = card.commit_with(&target.campaign, target.sequence, &plan(fault));
            let known = model.change.as_ref().filter(|m| {
                (&m.change.campaign, m.change.sequence) == (&target.campaign, target.sequence)
            });
            match (known.map(|m| m.phase.clone()), fault, r) {
                (Some(Phase::Trial), None, Ok(Phase::Committed)) => model.committed(),
                (Some(Phase::Trial), Some(at), Err(UiccError::Persist { step, .. }))
                    if at == step =>
                {
                    if at.committed() {
                        model.committed();
                    }
                }
                (Some(settled @ (Phase::Committed | Phase::FellBack { .. })), _, Ok(phase)) => {
                    assert_eq!(phase, settled);
                }
                (None, _, Err(UiccError::NoSuchChange { .. })) => {}
                (known, fault, r) => panic!("commit of {known:?}, fault {fault:?}: {r:?}"),
            }
        }
        Op::FallBack(fault) => {
            let r = card.fall_back_with("test", &plan(fault));
            let phase = model.change.as_ref().map(|m| m.phase.clone());
            match (phase, model.tre, fault, r) {
                (Some(Phase::Trial), false, None, Ok(FallBack::RestoredOldProfile)) => {
                    model.fell_back(card, "test");
                }
                (Some(Phase::Trial), false, Some(at), Err(UiccError::Persist { step, .. }))
                    if at == step =>
                {
                    if at.committed() {
                        model.fell_back(card, "test");
                    }
                }
                (_, true, None, Ok(FallBack::UsimReactivated)) => {
                    model.tre = false;
                    model.activated = None;
                }
                (_, true, Some(at), Err(UiccError::Persist { step, .. })) if at == step => {
                    if at.committed() {
                        model.tre = false;
                        model.activated = None;
                    }
                }
                (Some(Phase::Committed), false, _, Err(UiccError::AlreadyCommitted { .. })) => {}
                (Some(Phase::FellBack { .. }), false, _, Ok(FallBack::AlreadyFellBack)) => {}
                (None, false, _, Ok(FallBack::AlreadyOnUsim)) => {}
                (phase, tre, fault, r) => {
                    panic!("fall back in {phase:?}, TRE {tre}, fault {fault:?}: {r:?}")
                }
            }
        }
        Op::WriteLoci(b) => write_loci(card, b),
        // Handled by the caller, which owns the card.
        Op::Restart => {}
        Op::Reset => card.reset(),
        Op::Apdu(bytes) => {
            let answer = card.transmit(&bytes);
            assert!((2..=258).contains(&answer.len()));
        }
    }
}

/// The invariants, in memory, on disk and by behaviour.
fn check(model: &mut Model, card: &mut Card, path: &Path) {
    // TR 33.812 §5.4.4.3: exactly one.
    assert!(card.tre_active() != card.usim_active());
    assert_eq!(card.tre_active(), model.tre);
    assert_eq!(card.state.profile, model.sub.profile);
    // The activation lives from its command to the end of its change, and a change on
    // trial is always the activated campaign's.
    assert_eq!(card.tre_activation().map(TreActivation::campaign), model.activated.as_deref());
    if let Some(trial) = model.trial() {
        assert_eq!(model.activated.as_ref(), Some(&trial.change.campaign));
    }
    if model.activated.is_some() {
        assert!(model.tre || model.trial().is_some());
    }
    // What a crash now would leave is what the card runs.
    let on_disk = State::load(path).unwrap();
    assert!(
        on_disk.canonical().unwrap() == card.state.canonical().unwrap(),
        "disk differs from memory"
    );
    match (&model.change, card.change()) {
        (None, None) => {}
        (Some(m), Some(c)) => {
            assert!(c.is(&m.change.campaign, m.change.sequence));
            assert_eq!(c.phase(), m.phase);
            assert_eq!(c.fallback_at, m.change.fallback_at);
            match (&m.old, c.fallback()) {
                (Some(old), Some(fallback)) => {
                    // On trial: the USIM runs the new profile, the old one is kept exactly.
                    assert!(card.usim_active());
                    assert!(same_subscription(&card.state.profile, &m.installed));
                    assert_eq!(fallback.profile, old.sub.profile);
                    assert_eq!(fallback.sqn, old.sqn);
                    assert_eq!(fallback.files, old.files);
                    assert_eq!((&c.old_imsi, &c.new_imsi), (&old.sub.profile.imsi, card.imsi()));
                    assert!(card.fallback_due(m.change.fallback_at));
                    assert!(!card.fallback_due(m.change.fallback_at - 1));
                }
                (None, None) => assert!(!card.fallback_due(u64::MAX)),
                (old, fallback) => {
                    panic!("fallback {:?} vs model {:?}", fallback.is_some(), old.is_some())
                }
            }
            if m.phase == Phase::Committed && m.old_k != card.state.profile.k {
                // Committed: the old K is gone from the card, so nothing can bring it back.
                let text = String::from_utf8(disk(path)).unwrap();
                assert!(!text.contains(&format!("\"k\": \"{}\"", hex::encode(m.old_k.expose()))));
            }
        }
        (m, c) => {
            panic!("change {:?} vs model {:?}", c.map(Change::phase), m.as_ref().map(|m| &m.phase))
        }
    }
    let v = model.sub.auc.vector(model.sub.profile.amf);
    card.reset();
    match card.run_aka(&v.rand, &v.autn) {
        Outcome::Success { res, .. } => assert!(!model.tre && res == v.xres),
        Outcome::Refused(sw) => assert!(model.tre && sw == Sw::CONDITIONS_NOT_SATISFIED),
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn subscription_change_keeps_its_invariants(ops in prop::collection::vec(op(), 1..40)) {
        let (_d, path, mut card) = new_card();
        let mut model = Model {
            sub: Sub::new(card.state.profile.clone()),
            tre: false,
            last_activation: None,
            activated: None,
            change: None,
        };
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
