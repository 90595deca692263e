//! Attacks with attestation results (issue 7, item 11; `docs/ear.md` "Verification by a
//! relying party"): EARs that are not the PVA's affirming verdict on this device and this
//! bundle key. A rogue peer holding the RO's certificate presents them to MNO-B's attestation
//! endpoint — which signs a profile only for a verified EAR — and the same EAR goes through
//! the DPF's release check (`provisioning::ro::Dpf::check_ear`), which must refuse it on its
//! own. The forgeries are signed by a CA nobody trusts, or by the PVA's real key from the
//! lab's PKI with claims the PVA never made.

use std::time::SystemTime;

use anyhow::Result;
use protocol::device_api::DeviceTask;
use protocol::ear::{Appraisal, BundleKey, Claim, EarClaims, TrustVector, VerifierId, unix, value};
use protocol::{DeviceId, Nonce};
use provisioning::pki::Role;
use provisioning::ro::{Dpf, RoError};
use verifier::EarSigner;

use super::device::{genuine, runtime};
use super::forge::{RogueCa, SoftwareKey};
use super::observe::{self, answer_layer, ear_check};
use super::{Attacker, Ctx, Expect, Layer, Observed, Scenario, Stage};

pub(super) fn scenarios() -> Vec<Scenario> {
    use Attacker::Peer;
    vec![
        Scenario::new(
            "ear-untrusted-signer",
            11,
            Peer,
            "presents an affirming EAR for the device signed by a \"pva\" certificate of a CA that is not the CI",
            Expect::at(Stage::MnoB, "ear-untrusted-signer"),
            |ctx| forged_ear(ctx, Forgery::UntrustedSigner),
        ),
        Scenario::new(
            "ear-expired",
            11,
            Peer,
            "presents an affirming PVA EAR for the device that expired five minutes ago",
            Expect::at(Stage::MnoB, "ear-expired"),
            |ctx| forged_ear(ctx, Forgery::Expired),
        ),
        Scenario::new(
            "ear-for-another-device",
            11,
            Peer,
            "presents an affirming PVA EAR about another device for this device",
            Expect::at(Stage::MnoB, "ear-other-device"),
            |ctx| forged_ear(ctx, Forgery::AnotherDevice),
        ),
        Scenario::new(
            "ear-for-another-bundle-key",
            11,
            Peer,
            "presents an affirming PVA EAR for this device and nonce that names another bundle key than the evidence certified",
            Expect::at(Stage::Dpf, "EarError::OtherBundleKey"),
            |ctx| forged_ear(ctx, Forgery::AnotherBundleKey),
        ),
        Scenario::new(
            "ear-status-warning",
            11,
            Peer,
            "presents a PVA EAR for the device whose status is warning (a component below its minimum version)",
            Expect::at(Stage::MnoB, "ear-not-affirming"),
            |ctx| forged_ear(ctx, Forgery::Warning),
        ),
        Scenario::new(
            "ear-status-contraindicated",
            11,
            Peer,
            "presents a PVA EAR for the device whose status is contraindicated",
            Expect::at(Stage::MnoB, "ear-not-affirming"),
            |ctx| forged_ear(ctx, Forgery::Contraindicated),
        ),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Forgery {
    UntrustedSigner,
    Expired,
    AnotherDevice,
    AnotherBundleKey,
    Warning,
    Contraindicated,
}

/// A device registered with MNO-B (attached, enrolled, waiting with its nonce); the forged
/// EAR goes to MNO-B and to the DPF; then the device carries on genuinely.
fn forged_ear(ctx: &Ctx, forgery: Forgery) -> Result<Observed> {
    let target = super::device::Target::new(ctx.manufacture()?);
    let rt = runtime()?;
    let paused =
        super::device::pause_at(ctx, &target, &rt, |t| matches!(t, DeviceTask::Attest { .. }))?;
    let (campaign, mut device, task) = (paused.campaign, paused.device, paused.task);
    let DeviceTask::Attest { nonce, .. } = &task else { anyhow::bail!("paused on {task:?}") };
    let nonce = *nonce;

    // The bundle key the evidence certifies, and the one the EAR names.
    let evidence_key = software_bundle_key()?;
    let ear_key = if forgery == Forgery::AnotherBundleKey {
        software_bundle_key()?
    } else {
        evidence_key.clone()
    };
    let about =
        if forgery == Forgery::AnotherDevice { other_device()? } else { target.device_id.clone() };
    let ear = sign(ctx, forgery, claims(ctx, forgery, &about, &nonce, ear_key)?)?;

    let dpf = dpf_layer(ctx, &ear, &target.device_id, &nonce, &evidence_key);
    let observed = if forgery == Forgery::AnotherBundleKey {
        // MNO-B never sees the evidence, so it cannot tell; the DPF can.
        Observed::new(dpf)
    } else {
        let http = ctx.lab.pki.client(Role::Ro)?;
        let url = format!(
            "{}/v1/campaigns/{campaign}/devices/{}/attestation",
            ctx.lab.urls.mno_b,
            target.device_id.to_hex()
        );
        let answer = rt.block_on(observe::post(&http, &url, "application/cose", ear))?;
        Observed::new(answer_layer(Stage::MnoB, &answer)).with(dpf)
    };
    // The forgeries left nothing behind: the genuine device still switches.
    rt.block_on(device.run_from(Some(task), genuine))?;
    Ok(observed)
}

fn software_bundle_key() -> Result<BundleKey> {
    let (x, y) = SoftwareKey::generate()?.point()?;
    let coordinate =
        |v: Vec<u8>| <[u8; 32]>::try_from(v).map_err(|_| anyhow::anyhow!("not a P-256 coordinate"));
    // The name does not matter to the checks: it is never the device's key.
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

fn claims(
    ctx: &Ctx,
    forgery: Forgery,
    device: &DeviceId,
    nonce: &Nonce,
    key: BundleKey,
) -> Result<EarClaims> {
    let mut vector = affirming_vector();
    let failed: &[&str] = match forgery {
        Forgery::Warning => {
            vector.set(Claim::Executables, value::UNSAFE_RUNTIME);
            &["component-below-minimum-version"]
        }
        Forgery::Contraindicated => {
            vector.set(Claim::Executables, value::CONTRAINDICATED_RUNTIME);
            &["event-not-in-reference-values"]
        }
        _ => &[],
    };
    let mut claims = pva_claims(ctx, vector, device, nonce, key)?;
    claims.appraisal.failed_checks = failed.iter().map(|s| (*s).to_owned()).collect();
    if forgery == Forgery::Expired {
        (claims.issued_at, claims.expires_at) = (claims.issued_at - 600, claims.issued_at - 300);
    }
    Ok(claims)
}

/// Every claim tresor assesses at its affirming value.
pub(super) fn affirming_vector() -> TrustVector {
    let mut vector = TrustVector::new();
    vector
        .set(Claim::InstanceIdentity, value::RECOGNIZED_INSTANCE)
        .set(Claim::Configuration, value::APPROVED_CONFIG)
        .set(Claim::Executables, value::APPROVED_BOOT)
        .set(Claim::Hardware, value::GENUINE_HARDWARE)
        .set(Claim::StorageOpaque, value::HW_KEYS_ENCRYPTED_SECRETS);
    vector
}

/// The claims the lab's PVA signs for `device` under its reference values, with `vector`
/// (the status follows from it), rollback counter 0, valid for five minutes from now.
pub(super) fn pva_claims(
    ctx: &Ctx,
    vector: TrustVector,
    device: &DeviceId,
    nonce: &Nonce,
    key: BundleKey,
) -> Result<EarClaims> {
    let policy = verifier::ReferenceValues::parse(&std::fs::read_to_string(
        ctx.lab.dir.join("pva/reference-values.toml"),
    )?)?
    .id()
    .to_owned();
    let mut appraisal = Appraisal::new(vector, policy, device.clone());
    appraisal.bundle_key = Some(key);
    appraisal.rollback_counter = Some(0);
    let now = unix(SystemTime::now());
    Ok(EarClaims {
        issued_at: now,
        expires_at: now + 300,
        nonce: Some(*nonce),
        verifier_id: VerifierId {
            developer: "https://example.invalid/tresor".into(),
            build: format!("tresor-pva/{}", env!("CARGO_PKG_VERSION")),
        },
        appraisal,
    })
}

/// Signs with the PVA's key from the lab's PKI, or with a "pva" of the attacker's own CA.
fn sign(ctx: &Ctx, forgery: Forgery, claims: EarClaims) -> Result<Vec<u8>> {
    let signer = if forgery == Forgery::UntrustedSigner {
        let (cert, key) = RogueCa::new("CI nobody trusts")?.role("pva")?;
        EarSigner::from_pem(cert.as_bytes(), key.as_bytes())?
    } else {
        let pki = ctx.lab.dir.join("pki");
        EarSigner::load(&pki.join("pva.pem"), &pki.join("pva.key"))?
    };
    Ok(signer.sign(&claims)?)
}

/// The DPF's release check of `ear` for the device, the nonce the RO issued, and the bundle
/// key the evidence certified.
fn dpf_layer(ctx: &Ctx, ear: &[u8], device: &DeviceId, nonce: &Nonce, key: &BundleKey) -> Layer {
    let dpf = Dpf::new(ctx.ci.clone());
    match dpf.check_ear(ear, device, nonce, key, SystemTime::now()) {
        Ok(_) => Layer::accepted(Stage::Dpf, "the DPF would release a bundle on this EAR"),
        Err(RoError::Release(message)) => {
            let reason = message.strip_prefix("attestation result: ").unwrap_or(&message);
            Layer::rejected(Stage::Dpf, vec![ear_check(reason)], message.clone())
        }
        Err(other) => Layer::rejected(Stage::Dpf, vec![other.to_string()], other.to_string()),
    }
}
