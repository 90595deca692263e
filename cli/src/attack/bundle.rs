//! Attacks on the bundle (issue 7, items 12–13; `docs/bundle.md` §2.3, §4): what the device
//! is handed to install — replayed, redirected, altered, or signed by the wrong operator —
//! and a local attacker who changes the device after it attested. The device runs the
//! genuine TRE: the attacker changes the install task on its way to the device (a network
//! attacker, or a rogue operator delivering its own bundle), and the TRE and its TPM decide.
//! The DPF never sees a profile (MNO-B encrypts it to the device, issue 12): the TRE's checks
//! of signer, device and EAR are the only ones.

use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use coset::{CoseEncrypt, TaggedCborSerializable};
use protocol::bundle::{self, ProfilePayload, ProfileSigner};
use protocol::device_api::DeviceTask;
use protocol::ear::{EarVerifier, unix};
use protocol::{Iccid, Imsi};
use serde_bytes::ByteBuf;

use super::answers::overruled;
use super::device::{
    Act, Attacked, Hostile, Target, attack_one, campaign, cancel, edited_evidence, genuine,
    pause_at, runtime,
};
use super::forge::{RogueCa, der_of, random_profile, replace_once};
use super::observe::{self, card_layer, ro_layer};
use super::{Attacker, Ctx, Expect, Layer, Observed, Scenario, Stage};

pub(super) fn scenarios() -> Vec<Scenario> {
    use Attacker::{Device, Local, Network, Peer};
    let tre = |check| Expect::at(Stage::Tre, check);
    vec![
        Scenario::new(
            "bundle-old-sequence",
            12,
            Device,
            "its NV counter is 1 from an earlier install (raised here as the TRE does after one); it reports 0 in its unsigned rollback counter, so the new operator signs sequence 1 again",
            tre("BundleError::Replayed"),
            old_sequence,
        ),
        Scenario::new(
            "bundle-for-another-device",
            12,
            Network,
            "delivers the bundle the DPF released for another device of the campaign",
            tre("BundleError::BundleForAnotherDevice"),
            another_device,
        ),
        Scenario::new(
            "bundle-ciphertext-tampered",
            12,
            Network,
            "flips one bit of the bundle's ciphertext",
            tre("BundleError::DecryptionFailed"),
            tampered_ciphertext,
        ),
        Scenario::new(
            "bundle-aad-tampered",
            12,
            Network,
            "delivers another EAR with the bundle (one bit changed) and rewrites the bundle's protected EAR-hash header to match, so the external AAD changes; the device verifies the EAR before it opens the bundle",
            tre("EarError::BadSignature"),
            tampered_aad,
        ),
        Scenario::new(
            "bundle-signed-by-mno-a",
            12,
            Peer,
            "MNO-A signs a profile for the device with its own CI certificate and encrypts it to the device's attested bundle key",
            tre("BundleError::WrongSigner"),
            |ctx| rogue_profile(ctx, Signer::MnoA),
        ),
        Scenario::new(
            "bundle-signed-by-pva-certificate",
            12,
            Peer,
            "a fake RO holding the PVA's certificate (valid under the CI, role pva) signs a profile with an IMSI and K of its choosing and encrypts it to the device's attested bundle key",
            tre("BundleError::SignerRole(WrongRole)"),
            |ctx| rogue_profile(ctx, Signer::Pva),
        ),
        Scenario::new(
            "bundle-signed-by-unknown-operator",
            12,
            Peer,
            "an operator the CI never certified (an \"mno-b\" certificate of its own CA) signs a profile and encrypts it to the device's bundle key",
            tre("BundleError::SignerChain(UnknownIssuer)"),
            |ctx| rogue_profile(ctx, Signer::Unknown),
        ),
        Scenario::new(
            "ear-of-an-earlier-attestation",
            12,
            Peer,
            "a rogue RO hands the device, after it attested again, the EAR of its earlier attestation (genuine, unexpired, signed by the PVA, for this device)",
            tre("EarError::OtherNonce"),
            earlier_attestation,
        ),
        Scenario::new(
            "pcr-extended-after-attestation",
            13,
            Local,
            "extends PCR 9 after the device attested and before it installs (time of check to time of use)",
            Expect::at(Stage::Tpm, "TPM2_ECDH_ZGen refused (PolicyPCR)"),
            toctou,
        ),
    ]
}

/// A genuine device whose install task `edit` changes before the agent gets it.
fn edited_install(
    ctx: &Ctx,
    mut edit: impl FnMut(&mut Hostile, String, Vec<u8>, Vec<u8>) -> Result<DeviceTask>,
) -> Result<Attacked> {
    attack_one(ctx, &ctx.image, |d: &mut Hostile, task| match task {
        DeviceTask::Install { campaign, bundle, ear } => {
            Ok(Act::Agent(edit(d, campaign, bundle.into_vec(), ear.into_vec())?))
        }
        task => Ok(Act::Agent(task)),
    })
}

fn install(campaign: String, bundle: Vec<u8>, ear: Vec<u8>) -> DeviceTask {
    DeviceTask::Install { campaign, bundle: ByteBuf::from(bundle), ear: ByteBuf::from(ear) }
}

fn tampered_ciphertext(ctx: &Ctx) -> Result<Observed> {
    edited_install(ctx, |_, campaign, bundle, ear| {
        let mut cose =
            CoseEncrypt::from_tagged_slice(&bundle).map_err(|e| anyhow::anyhow!("bundle: {e}"))?;
        let ciphertext = cose.ciphertext.as_mut().context("no ciphertext")?;
        let middle = ciphertext.len() / 2;
        *ciphertext.get_mut(middle).context("empty ciphertext")? ^= 0x01;
        let bundle = cose.to_tagged_vec().map_err(|e| anyhow::anyhow!("bundle: {e}"))?;
        Ok(install(campaign, bundle, ear))
    })?
    .observed()
}

fn tampered_aad(ctx: &Ctx) -> Result<Observed> {
    edited_install(ctx, |_, campaign, bundle, ear| {
        // Another EAR, and the header rewritten to its hash.
        let mut other = ear.clone();
        *other.last_mut().context("empty EAR")? ^= 0x01;
        let bundle = replace_once(&bundle, &bundle::ear_hash(&ear), &bundle::ear_hash(&other))?;
        Ok(install(campaign, bundle, other))
    })?
    .observed()
}

fn another_device(ctx: &Ctx) -> Result<Observed> {
    let bystander = Target::new(ctx.manufacture()?);
    let victim = Target::new(ctx.manufacture()?);
    let rt = runtime()?;
    let id = rt.block_on(campaign(
        ctx,
        "mno-a",
        "mno-b",
        &[(&bystander.device_id, &bystander.iccid), (&victim.device_id, &victim.iccid)],
    ))?;
    let (bundle_tx, bundle_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| -> Result<()> {
        // The bystander installs its own bundle; the attacker has copied it on the way.
        let helper = scope.spawn(move || -> Result<()> {
            let rt = runtime()?;
            let mut device = Hostile::boot(ctx, &bystander, &ctx.image)?;
            rt.block_on(device.run(|_: &mut Hostile, task| {
                if let DeviceTask::Install { bundle, .. } = &task {
                    let _ = bundle_tx.send(bundle.to_vec());
                }
                Ok(Act::Agent(task))
            }))?;
            Ok(())
        });
        let mut device = Hostile::boot(ctx, &victim, &ctx.image)?;
        let run = rt.block_on(device.run(|_: &mut Hostile, task| match task {
            DeviceTask::Install { campaign, ear, .. } => {
                let theirs = bundle_rx
                    .recv_timeout(Duration::from_secs(30))
                    .context("no bundle to redirect")?;
                Ok(Act::Agent(install(campaign, theirs, ear.into_vec())))
            }
            task => Ok(Act::Agent(task)),
        }));
        drop(device);
        let helped =
            helper.join().map_err(|_| anyhow::anyhow!("the bystander's thread panicked"))?;
        run?;
        helped
    })?;
    let row = rt.block_on(observe::ro_device(&ctx.lab, &id, &victim.device_id))?;
    let ro = ro_layer(&row)?;
    Ok(match card_layer(&victim.card, &victim.imsi)? {
        Some(accepted) => Observed::new(accepted).with(ro),
        None => Observed::new(ro),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Signer {
    MnoA,
    /// The PVA's certificate: valid under the CI, of the wrong role (attack 1 of issue 12).
    Pva,
    Unknown,
}

/// A rogue signer's own profile, encrypted to the device's attested bundle key with the
/// genuine EAR's hash, delivered instead of MNO-B's.
fn rogue_profile(ctx: &Ctx, who: Signer) -> Result<Observed> {
    let lab_signer = |name: &str| -> Result<ProfileSigner> {
        let pki = ctx.lab.dir.join("pki");
        let cert = der_of(&std::fs::read_to_string(pki.join(format!("{name}.pem")))?)?;
        let key = std::fs::read_to_string(pki.join(format!("{name}.key")))?;
        Ok(ProfileSigner::from_pkcs8_pem(&key, vec![cert])?)
    };
    let signer = match who {
        Signer::MnoA => lab_signer("mno-a")?,
        Signer::Pva => lab_signer("pva")?,
        Signer::Unknown => {
            let (cert, key) = RogueCa::new("operator CA nobody trusts")?.role("mno-b")?;
            ProfileSigner::from_pkcs8_pem(&key, vec![der_of(&cert)?])?
        }
    };
    edited_install(ctx, |d, campaign, _, ear| {
        let now = SystemTime::now();
        let verified = EarVerifier::new(ctx.ci.clone()).verify(&ear, now, &d.id, None)?;
        let key = verified.bundle_key()?.clone();
        let ear_hash = bundle::ear_hash(&ear);
        let counter = d.agent.tpm().rollback_counter()?;
        let payload = ProfilePayload {
            device_id: d.id.clone(),
            operator: signer.operator().to_owned(),
            campaign: campaign.clone(),
            profile: random_profile(
                &Iccid::with_check_digit("8900199000000000001")?,
                &"001990000000001".parse::<Imsi>()?,
            )?,
            sequence: counter + 1,
            issued: unix(now),
            expires: unix(now) + 3600,
            ear_hash,
        };
        let signed = signer.sign(&payload)?;
        let bundle = bundle::encrypt_bundle(&signed, key.x(), key.y(), &d.id, &ear_hash)?;
        Ok(install(campaign, bundle, ear))
    })?
    .observed()
}

fn earlier_attestation(ctx: &Ctx) -> Result<Observed> {
    let target = Target::new(ctx.manufacture()?);
    let rt = runtime()?;
    let paused = pause_at(ctx, &target, &rt, |t| matches!(t, DeviceTask::Install { .. }))?;
    let (id, mut device) = (paused.campaign, paused.device);
    let DeviceTask::Install { ear, .. } = paused.task else { anyhow::bail!("not an install") };
    // The device attests again (a new nonce, a new bundle key), as after a re-challenge;
    // the rogue kept what came back the first time and hands it over now.
    let nonce = protocol::Nonce::random().map_err(|_| anyhow::anyhow!("no randomness"))?;
    device.agent.evidence(&nonce)?;
    let decided = match device.agent.check_attestation_result(&ear) {
        Ok(()) => Layer::accepted(Stage::Tre, "the device took the earlier EAR"),
        Err(e) => observe::tre_layer(&e.to_string(), &e.to_string()),
    };
    // The change ends: cancelled, the device restores its old profile.
    rt.block_on(cancel(ctx, &id))?;
    rt.block_on(device.run(genuine))?;
    drop(device);
    let mut observed = Observed::new(decided);
    if let Some(accepted) = card_layer(&target.card, &target.imsi)? {
        return Ok(overruled(accepted, observed));
    }
    observed
        .decided
        .detail
        .push_str(" — the card still runs its MNO-A profile with the USIM active");
    Ok(observed)
}

fn old_sequence(ctx: &Ctx) -> Result<Observed> {
    edited_evidence(ctx, |d, _, evidence| {
        // The device installed sequence 1 before (its NV counter is 1, incremented as the TRE
        // does after an install), and reports 0 in its evidence.
        let counter = d.agent.tpm().increment_rollback_counter()?;
        evidence.rollback_counter = counter.saturating_sub(1);
        Ok(())
    })?
    .observed()
}

fn toctou(ctx: &Ctx) -> Result<Observed> {
    edited_install(ctx, |d, campaign, bundle, ear| {
        let banks = d.agent.tpm().active_banks()?;
        let digests: Vec<_> =
            banks.iter().map(|b| (*b, b.digest(b"loaded after attestation"))).collect();
        d.agent.tpm().pcr_extend(9, &digests)?;
        Ok(install(campaign, bundle, ear))
    })?
    .observed()
}
