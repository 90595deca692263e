//! Attacks on the bundle key (issue 7, item 10; `docs/appraisal.md` "Bundle key
//! certification", "Bundle key"): the key MNO-B encrypts the new subscription to must be
//! made by this device's TPM, certified by its enrolled AK for this nonce, and usable only
//! under PolicyPCR over the reference PCR values. A compromised device would like the bundle
//! sealed to a key it can use outside the attested state.

use anyhow::Result;
use protocol::evidence::{BundleKeyEvidence, SignedAttest};
use protocol::tpm::wire::EccParameter;
use protocol::tpm::{Marshal, Public, PublicKey, Unmarshal};
use serde_bytes::ByteBuf;
use tre::attester::{Attester, AttesterOptions};
use tre::tpm::{KeyAlg, Tpm};

use super::device::{Target, edited_evidence};
use super::forge::{SoftwareKey, replace_once};
use super::{Attacker, Ctx, Expect, Observed, Scenario, Stage};

pub(super) fn scenarios() -> Vec<Scenario> {
    use Attacker::Device;
    vec![
        Scenario::new(
            "bundle-key-in-software",
            10,
            Device,
            "presents a software ECDH key (one it could use anywhere) as the bundle key, with a certification it forged and signed itself",
            Expect::at(Stage::Pva, "certify-signature-invalid"),
            software_key,
        ),
        Scenario::new(
            "bundle-key-without-pcr-policy",
            10,
            Device,
            "has its TPM make a bundle key with no PolicyPCR (usable in any PCR state) and its AK certify it for the nonce",
            Expect::at(Stage::Pva, "bundle-key-policy-mismatch"),
            no_policy,
        ),
        Scenario::new(
            "bundle-key-certified-by-another-ak",
            10,
            Device,
            "presents a bundle key that another device's TPM made and that device's AK certified for this nonce",
            Expect::at(Stage::Pva, "certify-signature-invalid"),
            foreign_certification,
        ),
    ]
}

fn software_key(ctx: &Ctx) -> Result<Observed> {
    let key = SoftwareKey::generate()?;
    edited_evidence(ctx, |_, _, e| {
        let bundle_key = e.bundle_key.as_mut().ok_or_else(|| anyhow::anyhow!("no bundle key"))?;
        let genuine = Public::from_bytes(&bundle_key.public)?;
        let mut public = genuine.clone();
        let (x, y) = key.point()?;
        if let PublicKey::Ecc { point, .. } = &mut public.key {
            point.x = EccParameter::new(x)?;
            point.y = EccParameter::new(y)?;
        }
        // The certification, rewritten to name the software key, and signed in software:
        // the AK would only sign it without TPM_GENERATED_VALUE.
        let attest = replace_once(
            &bundle_key.certify.attest,
            genuine.name().as_bytes(),
            public.name().as_bytes(),
        )?;
        let signature = key.tpm_signature(&attest)?;
        bundle_key.public = ByteBuf::from(public.to_bytes());
        bundle_key.certify =
            SignedAttest { attest: ByteBuf::from(attest), signature: ByteBuf::from(signature) };
        Ok(())
    })?
    .observed()
}

fn no_policy(ctx: &Ctx) -> Result<Observed> {
    edited_evidence(ctx, |d, nonce, e| {
        let tpm = d.agent.tpm();
        let ak = tpm.ak(KeyAlg::Ecc)?;
        let mut unique = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut unique)
            .map_err(|_| anyhow::anyhow!("no randomness"))?;
        let key = tpm.create_bundle_key(&[], &unique)?;
        let certify = tpm.certify(&key, &ak, nonce.as_bytes())?;
        e.bundle_key = Some(BundleKeyEvidence {
            public: ByteBuf::from(key.public_bytes()?),
            certify: SignedAttest {
                attest: ByteBuf::from(certify.attest),
                signature: ByteBuf::from(certify.signature),
            },
        });
        tpm.release(key)?;
        Ok(())
    })?
    .observed()
}

fn foreign_certification(ctx: &Ctx) -> Result<Observed> {
    // The other device: booted with the same image, its AK certifies a key of its TPM.
    let other_device = Target::new(ctx.manufacture()?);
    let mut other = Attester::boot(
        Tpm::connect(&other_device.tcti()?)?,
        &ctx.image,
        AttesterOptions::default(),
    )?;
    edited_evidence(ctx, |_, nonce, e| {
        e.bundle_key = other.evidence(nonce)?.bundle_key;
        Ok(())
    })?
    .observed()
}
