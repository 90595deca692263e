//! COSE hygiene (issue 12; `docs/ear.md` "Verification by a relying party", `docs/bundle.md`):
//! a network attacker cannot change a signature's bytes or an unprotected header without
//! breaking the signature — except where COSE leaves room: the unprotected header is not
//! signed, and ECDSA is malleable ((r, n − s) verifies as (r, s) does, `protocol::es256`).
//! Either gives another message that still verifies, with another hash. tresor's readers
//! refuse both: nothing in an unprotected header may name the algorithm or be critical, and
//! only the low-S signature is accepted (tresor's signers produce only that one).
//!
//! The EARs are affirming EARs for the device signed with the PVA's key from the lab's PKI,
//! as the PVA signs them, then altered in transit and presented to MNO-B's attestation
//! endpoint and to the DPF's release check. The profile is MNO-B's genuine signed profile
//! (the lab's MNO-B key), altered the same way, presented to the DPF.

use std::time::SystemTime;

use anyhow::Result;
use coset::{CoseSign1, TaggedCborSerializable, iana};
use protocol::bundle::{ProfilePayload, ProfileSigner};
use protocol::device_api::DeviceTask;
use protocol::ear::{BundleKey, EarVerifier, unix};
use protocol::{DeviceId, Iccid, Imsi, Nonce};
use provisioning::pki::Role;
use provisioning::ro::{Dpf, RoError};
use verifier::EarSigner;

use super::device::{genuine, runtime};
use super::forge::{SoftwareKey, der_of, random_profile};
use super::observe::{self, answer_layer, bundle_check, ear_check};
use super::{Attacker, Ctx, Expect, Layer, Observed, Scenario, Stage};

pub(super) fn scenarios() -> Vec<Scenario> {
    use Attacker::Network;
    vec![
        Scenario::new(
            "ear-malleated-signature",
            11,
            Network,
            "re-encodes an affirming PVA EAR with the other valid ECDSA signature (r, n − s): another EAR, another hash, the same signature",
            Expect::at(Stage::MnoB, "ear-malformed"),
            |ctx| altered_ear(ctx, Alteration::HighS),
        ),
        Scenario::new(
            "ear-unprotected-alg",
            11,
            Network,
            "adds an algorithm (EdDSA) to the unsigned, unprotected header of an affirming PVA EAR",
            Expect::at(Stage::MnoB, "ear-unsupported-algorithm"),
            |ctx| altered_ear(ctx, Alteration::UnprotectedAlg),
        ),
        Scenario::new(
            "ear-unprotected-crit",
            11,
            Network,
            "adds a crit parameter to the unsigned, unprotected header of an affirming PVA EAR",
            Expect::at(Stage::MnoB, "ear-malformed"),
            |ctx| altered_ear(ctx, Alteration::UnprotectedCrit),
        ),
        Scenario::new(
            "profile-malleated-signature",
            12,
            Network,
            "re-encodes MNO-B's signed profile with the other valid ECDSA signature (r, n − s) before it reaches the TRE",
            Expect::at(Stage::Tre, "BundleError::NonCanonicalSignature"),
            |ctx| altered_profile(ctx, Alteration::HighS),
        ),
        Scenario::new(
            "profile-unprotected-alg",
            12,
            Network,
            "adds an algorithm (ES384) to the unsigned, unprotected header of MNO-B's signed profile",
            Expect::at(Stage::Tre, "BundleError::UnprotectedAlgorithm"),
            |ctx| altered_profile(ctx, Alteration::UnprotectedAlg),
        ),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Alteration {
    HighS,
    UnprotectedAlg,
    UnprotectedCrit,
}

/// `cose` (a tagged COSE_Sign1) altered without touching what its signature covers.
fn alter(cose: &[u8], alteration: Alteration, alg: iana::Algorithm) -> Result<Vec<u8>> {
    let mut sign1 =
        CoseSign1::from_tagged_slice(cose).map_err(|e| anyhow::anyhow!("COSE_Sign1: {e}"))?;
    match alteration {
        Alteration::HighS => {
            anyhow::ensure!(
                protocol::es256::is_low_s(&sign1.signature),
                "tresor's signer produced a high s"
            );
            sign1.signature = protocol::es256::flip_s(&sign1.signature);
        }
        Alteration::UnprotectedAlg => sign1.unprotected.alg = Some(coset::Algorithm::Assigned(alg)),
        Alteration::UnprotectedCrit => {
            sign1.unprotected.crit =
                vec![coset::RegisteredLabelWithPrivate::Assigned(iana::HeaderParameter::Kid)];
        }
    }
    sign1.to_tagged_vec().map_err(|e| anyhow::anyhow!("COSE_Sign1: {e}"))
}

/// A device registered with MNO-B and waiting with its nonce; the altered EAR goes to MNO-B
/// and to the DPF; then the device carries on genuinely.
fn altered_ear(ctx: &Ctx, alteration: Alteration) -> Result<Observed> {
    let target = super::device::Target::new(ctx.manufacture()?);
    let rt = runtime()?;
    let paused =
        super::device::pause_at(ctx, &target, &rt, |t| matches!(t, DeviceTask::Attest { .. }))?;
    let (campaign, mut device, task) = (paused.campaign, paused.device, paused.task);
    let DeviceTask::Attest { nonce, .. } = &task else { anyhow::bail!("paused on {task:?}") };
    let nonce = *nonce;

    let key = software_bundle_key()?;
    let ear = pva_ear(ctx, &target.device_id, &nonce, key.clone())?;
    // The unaltered EAR passes the DPF's check: only the alteration is refused.
    Dpf::new(ctx.ci.clone()).check_ear(&ear, &target.device_id, &nonce, &key, SystemTime::now())?;
    let altered = alter(&ear, alteration, iana::Algorithm::EdDSA)?;

    let dpf = dpf_ear_layer(ctx, &altered, &target.device_id, &nonce, &key);
    let http = ctx.lab.pki.client(Role::Ro)?;
    let url = format!(
        "{}/v1/campaigns/{campaign}/devices/{}/attestation",
        ctx.lab.urls.mno_b,
        target.device_id.to_hex()
    );
    let answer = rt.block_on(observe::post(&http, &url, "application/cose", altered))?;
    let observed = Observed::new(answer_layer(Stage::MnoB, &answer)).with(dpf);
    rt.block_on(device.run_from(Some(task), genuine))?;
    Ok(observed)
}

/// MNO-B's genuine signed profile for a device, altered, at the DPF's release check (with
/// an EAR the DPF accepts for that device).
fn altered_profile(ctx: &Ctx, alteration: Alteration) -> Result<Observed> {
    let device = other_device()?;
    let nonce = Nonce::random().map_err(|_| anyhow::anyhow!("no randomness"))?;
    let key = software_bundle_key()?;
    let ear = pva_ear(ctx, &device, &nonce, key.clone())?;
    let now = SystemTime::now();
    EarVerifier::new(ctx.ci.clone()).verify(&ear, now, &device, Some(&nonce))?;
    let pki = ctx.lab.dir.join("pki");
    let cert = der_of(&std::fs::read_to_string(pki.join("mno-b.pem"))?)?;
    let signer = ProfileSigner::from_pkcs8_pem(
        &std::fs::read_to_string(pki.join("mno-b.key"))?,
        vec![cert],
    )?;
    let payload = ProfilePayload {
        device_id: device.clone(),
        operator: signer.operator().to_owned(),
        campaign: "cose-hygiene".into(),
        profile: random_profile(
            &Iccid::with_check_digit("8900199000000000002")?,
            &"001990000000002".parse::<Imsi>()?,
        )?,
        sequence: 1,
        issued: unix(now),
        expires: unix(now) + 3600,
        ear_hash: protocol::bundle::ear_hash(&ear),
    };
    let signed = signer.sign(&payload)?;
    // The TRE's check of the signed profile (the DPF only relays MNO-B's encrypted bundle):
    // the genuine profile passes, only the alteration is refused.
    let check = |bytes: &[u8]| {
        protocol::bundle::verify_profile(bytes, &ctx.ci, now, "mno-b", &device)
            .and_then(|p| p.check_ear_hash(&protocol::bundle::ear_hash(&ear)).map(|()| p))
    };
    check(&signed)?;
    let altered = alter(&signed, alteration, iana::Algorithm::ES384)?;
    let layer = match check(&altered) {
        Ok(_) => Layer::accepted(Stage::Tre, "the TRE would install this profile"),
        Err(e) => {
            let message = e.to_string();
            Layer::rejected(Stage::Tre, vec![profile_check(&message)], message)
        }
    };
    Ok(Observed::new(layer))
}

/// The `BundleError` variant of a COSE hygiene refusal, else what `observe` names.
fn profile_check(message: &str) -> String {
    if message.contains("not in its low-S form") {
        "BundleError::NonCanonicalSignature".into()
    } else if message.contains("names an algorithm in its unprotected header") {
        "BundleError::UnprotectedAlgorithm".into()
    } else {
        bundle_check(message)
    }
}

/// An affirming EAR for `device`, signed with the lab's PVA key as the PVA signs them.
fn pva_ear(ctx: &Ctx, device: &DeviceId, nonce: &Nonce, key: BundleKey) -> Result<Vec<u8>> {
    let claims = super::ear::pva_claims(ctx, super::ear::affirming_vector(), device, nonce, key)?;
    let pki = ctx.lab.dir.join("pki");
    Ok(EarSigner::load(&pki.join("pva.pem"), &pki.join("pva.key"))?.sign(&claims)?)
}

fn dpf_ear_layer(
    ctx: &Ctx,
    ear: &[u8],
    device: &DeviceId,
    nonce: &Nonce,
    key: &BundleKey,
) -> Layer {
    match Dpf::new(ctx.ci.clone()).check_ear(ear, device, nonce, key, SystemTime::now()) {
        Ok(_) => Layer::accepted(Stage::Dpf, "the DPF would release a bundle on this EAR"),
        Err(RoError::Release(message)) => {
            let reason = message.strip_prefix("attestation result: ").unwrap_or(&message);
            Layer::rejected(Stage::Dpf, vec![ear_check(reason)], message.clone())
        }
        Err(other) => Layer::rejected(Stage::Dpf, vec![other.to_string()], other.to_string()),
    }
}

fn software_bundle_key() -> Result<BundleKey> {
    let (x, y) = SoftwareKey::generate()?.point()?;
    let coordinate =
        |v: Vec<u8>| <[u8; 32]>::try_from(v).map_err(|_| anyhow::anyhow!("not a P-256 coordinate"));
    Ok(BundleKey::new(coordinate(x)?, coordinate(y)?, vec![0x00, 0x0B]))
}

fn other_device() -> Result<DeviceId> {
    let mut name = vec![0x00, 0x0B];
    let mut digest = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut digest)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    name.extend(digest);
    Ok(DeviceId::from_name(&name)?)
}
