//! Attacks on the trust boundaries of the subscription change (issue 12, "Trust
//! boundaries"; `docs/SECURITY.md`, "What each role trusts"). The new subscription — K, OPc,
//! KIc, KID — is end to end between MNO-B and the device's TPM: MNO-B signs the profile and
//! encrypts it itself to the bundle key of the EAR it verified
//! (`provisioning::mno::new_operator`), and the RO only relays the bundle. So whoever holds
//! the RO's certificate and an EAR — a rogue or compromised RO host, replaying the EAR of a
//! device to MNO-B's attestation route — gets a bundle that only that device's TPM, in its
//! attested state, can open.

use anyhow::{Context, Result};
use protocol::bundle::{self, BundleError, SoftwareRecipient};
use protocol::device_api::DeviceTask;
use protocol::{Nonce, SubscriptionProfile};
use provisioning::mno::api::{self as mno_api, AttestationResponse};
use provisioning::pki::Role;
use tre::attester::{Attester, AttesterOptions};
use tre::tpm::Tpm;

use super::device::{Target, genuine, pause_at, runtime};
use super::observe::{self, ro_layer};
use super::{Attacker, Ctx, Expect, Layer, Observed, Outcome, Scenario, Stage};

/// The check this family expects to stop the attack: MNO-B encrypted the profile to the
/// attested bundle key, so nobody else can read it.
const END_TO_END: &str = "encrypted-to-attested-bundle-key";

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![Scenario::new(
        "ear-replayed-by-rogue-ro",
        19,
        Attacker::Peer,
        "a rogue RO (the RO's CI certificate) replays the EAR of a device about to install to MNO-B's attestation route, then tries to read K, OPc, KIc and KID in the answer: it decrypts the bundle with a P-256 key of its own and with the bundle key of a genuine TPM it holds, and searches the answer for the keys",
        Expect::at(Stage::MnoB, END_TO_END),
        rogue_ro_replay,
    )]
}

/// What the rogue RO got and could do with it.
struct Replay {
    /// MNO-B's answer as it came, undecoded.
    raw: Vec<u8>,
    answer: AttestationResponse,
    /// The rogue's decryption attempts: (with what, the result).
    attempts: Vec<(&'static str, Result<(), BundleError>)>,
}

/// A genuine device of a campaign reaches its install; the rogue RO takes the task's EAR to
/// MNO-B and tries to open the answer. The device is then handed that very answer's bundle
/// instead of the DPF's: its TPM opens it and the device switches, so the answer did carry
/// the subscription — for the device only.
fn rogue_ro_replay(ctx: &Ctx) -> Result<Observed> {
    let target = Target::new(ctx.manufacture()?);
    // The rogue's own TPM: another device, booted with the reference image, with a bundle
    // key bound to the reference PCR values like the target's.
    let accomplice = Target::new(ctx.manufacture()?);
    let mut own_tpm =
        Attester::boot(Tpm::connect(&accomplice.tcti()?)?, &ctx.image, AttesterOptions::default())?;
    own_tpm.evidence(&Nonce::from_bytes(&[0x5A; 32])?)?;

    let rt = runtime()?;
    let paused = pause_at(ctx, &target, &rt, |t| matches!(t, DeviceTask::Install { .. }))?;
    let (id, mut device) = (paused.campaign, paused.device);
    let DeviceTask::Install { campaign, ear, .. } = paused.task else {
        anyhow::bail!("not an install")
    };

    // The rogue RO: the EAR to MNO-B with the RO's certificate, as the DPF would send it.
    let url = format!(
        "{}/v1/campaigns/{campaign}/devices/{}/attestation",
        ctx.lab.urls.mno_b,
        target.device_id.to_hex()
    );
    let rogue = ctx.lab.pki.client(Role::Ro)?;
    let raw = rt.block_on(async {
        let response = rogue
            .post(&url)
            .header("content-type", "application/cose")
            .body(ear.to_vec())
            .send()
            .await?;
        let response = transport::client::check(response).await?;
        transport::client::read_limited(response, 1024 * 1024).await
    })?;
    let answer: AttestationResponse = mno_api::from_cbor(&raw)?;
    let ear_hash = bundle::ear_hash(&ear);
    let device_id = &target.device_id;
    let software = SoftwareRecipient::generate()?.decrypt(&answer.bundle, device_id, &ear_hash);
    let selection = own_tpm.selection().clone();
    let tpm = own_tpm.tpm();
    let key = tpm.bundle_key()?.context("the rogue's TPM has no bundle key")?;
    let with_tpm = bundle::decrypt_bundle(&answer.bundle, device_id, &ear_hash, |x, y| {
        tpm.ecdh_z_gen(&key, &selection, x, y)
    });
    let attempts = vec![
        ("a P-256 key of its own", software.map(drop)),
        ("the bundle key of a genuine TPM it holds", with_tpm.map(drop)),
    ];
    let bundle = answer.bundle.clone();
    let replay = Replay { raw: raw.to_vec(), answer, attempts };

    // The device gets the rogue's copy of the bundle instead of the DPF's.
    let install = DeviceTask::Install { campaign, bundle, ear };
    rt.block_on(device.run_from(Some(install), genuine))?;
    drop(device);

    let row = rt.block_on(observe::ro_device(&ctx.lab, &id, &target.device_id))?;
    let ro = ro_layer(&row)?;
    anyhow::ensure!(
        ro.outcome == Outcome::Accepted,
        "the device did not switch with MNO-B's repeated bundle: {}",
        ro.detail
    );
    if let Err(why) = observe::committed_card(&target.card, &target.imsi)? {
        anyhow::bail!("the device switched at the RO, but {why}");
    }
    let installed = uicc::state::State::load(&target.card)?.profile;
    Ok(Observed::new(verdict(&replay, &installed)))
}

/// The rogue read nothing if every decryption failed and no key of the installed profile is
/// in MNO-B's answer, whose facts are the installed profile's.
fn verdict(replay: &Replay, installed: &SubscriptionProfile) -> Layer {
    for (with, result) in &replay.attempts {
        match result {
            Ok(()) => {
                return Layer::accepted(
                    Stage::MnoB,
                    format!("the rogue RO decrypted MNO-B's answer with {with}"),
                );
            }
            Err(BundleError::DecryptionFailed) => {}
            Err(other) => {
                return Layer::rejected(
                    Stage::MnoB,
                    vec![format!("BundleError::{}", observe::variant_name(other))],
                    format!("decrypting with {with} failed before the AEAD: {other}"),
                );
            }
        }
    }
    if let Some(found) = leaked(&replay.raw, installed) {
        return Layer::accepted(
            Stage::MnoB,
            format!("{found} of the new profile is in MNO-B's answer"),
        );
    }
    let a = &replay.answer;
    if (&a.iccid, &a.imsi) != (&installed.iccid, &installed.imsi) {
        return Layer::rejected(
            Stage::MnoB,
            vec!["answer-facts-mismatch".into()],
            format!(
                "MNO-B's answer names {} / {}, the card runs {} / {}",
                a.iccid, a.imsi, installed.iccid, installed.imsi
            ),
        );
    }
    Layer::rejected(
        Stage::MnoB,
        vec![END_TO_END.into(), "BundleError::DecryptionFailed".into()],
        format!(
            "MNO-B answered the replayed EAR with only a bundle to the device's bundle key \
             ({} bytes, ICCID {}, IMSI {}, sequence {}): with a key of its own and with its own \
             TPM's bundle key the AEAD refuses; no K, OPc, KIc or KID, raw or hex, in the \
             answer; the device's TPM opened that same bundle and the device switched",
            a.bundle.len(),
            a.iccid,
            a.imsi,
            a.sequence
        ),
    )
}

/// The first of K, OPc, KIc, KID found in `bytes`, raw or as hex.
fn leaked(bytes: &[u8], profile: &SubscriptionProfile) -> Option<&'static str> {
    let keys = [
        ("K", profile.k.expose().as_slice()),
        ("OPc", profile.opc.expose().as_slice()),
        ("KIc", profile.ota.kic.expose().as_slice()),
        ("KID", profile.ota.kid.expose().as_slice()),
    ];
    keys.into_iter().find_map(|(name, key)| {
        let forms =
            [key.to_vec(), hex::encode(key).into_bytes(), hex::encode_upper(key).into_bytes()];
        forms.iter().any(|f| bytes.windows(f.len()).any(|w| w == f.as_slice())).then_some(name)
    })
}
