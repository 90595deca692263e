//! Attacks on the device's identity and on the authenticity of its evidence (issue 7, items
//! 5–8; `docs/appraisal.md` "Identity", "Quote", "PCR selection"; `docs/pva-api.md`
//! enrolment): AKs that are not the TPM's, EK certificates that do not vouch for the EK,
//! structures the TPM did not generate, and quotes over the wrong banks or PCRs. The
//! attacker is the device's software, talking to the RO's device API.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use protocol::device_api::{self, DeviceTask};
use protocol::device_auth::{CredentialChallenge, CredentialProof, CredentialRequest};
use protocol::ekcert::TpmInfo;
use protocol::evidence::SignedAttest;
use protocol::pva_api::{CredentialSecret, EnrolRequest, Message, path};
use protocol::tpm::{BankSelection, PcrSelection, Public, Unmarshal};
use provisioning::pki::Role;
use serde_bytes::ByteBuf;
use tre::ekcert::{EkCertRequest, ManufacturerCa};
use tre::tpm::{KeyAlg, Tpm};

use super::answers::{aside, still_switched};
use super::device::{Act, Hostile, Target, attack_one, edited_evidence, runtime};
use super::forge::{RogueCa, SoftwareKey};
use super::observe::{self, answer_layer};
use super::{Attacker, Ctx, Expect, Layer, Observed, Scenario, Stage};

pub(super) fn scenarios() -> Vec<Scenario> {
    use Attacker::Device;
    let pva = |check| Expect::at(Stage::Pva, check);
    let drf = |check| Expect::at(Stage::Drf, check);
    vec![
        Scenario::new(
            "quote-signed-by-software-key",
            5,
            Device,
            "signs its quote with a software key, keeping the enrolled AK's public area in the evidence",
            pva("quote-signature-invalid"),
            software_quote,
        ),
        Scenario::new(
            "ak-of-another-tpm",
            5,
            Device,
            "binds the AK of another TPM to its own EK at the RO (neither TPM can activate the credential, so it guesses the secret), then enrols that AK under its own EK",
            Expect::at(Stage::RoDeviceApi, "device-not-authenticated"),
            foreign_ak,
        ),
        Scenario::new(
            "ek-certificate-unknown-ca",
            6,
            Device,
            "attaches with a certificate for its EK issued by a CA that is not a TPM manufacturer the RO and the PVA trust",
            drf("EkCertError::Chain(UnknownIssuer)"),
            |ctx| forged_ek_certificate(ctx, EkForgery::UnknownCa),
        ),
        Scenario::new(
            "ek-certificate-self-signed",
            6,
            Device,
            "attaches with a self-signed certificate",
            drf("EkCertError::Chain(UnknownIssuer)"),
            |ctx| forged_ek_certificate(ctx, EkForgery::SelfSigned),
        ),
        Scenario::new(
            "ek-certificate-expired",
            6,
            Device,
            "attaches with a certificate the real manufacturer CA issued for its EK, expired yesterday",
            drf("EkCertError::Chain(Expired)"),
            |ctx| forged_ek_certificate(ctx, EkForgery::Expired),
        ),
        Scenario::new(
            "ek-certificate-of-another-key",
            6,
            Device,
            "attaches with another TPM's genuine EK certificate and its own EK",
            drf("EkCertError::PublicKeyMismatch"),
            |ctx| forged_ek_certificate(ctx, EkForgery::AnotherTpm),
        ),
        Scenario::new(
            "quote-forged-with-tpm2-sign",
            7,
            Device,
            "has its AK sign a forged TPMS_ATTEST with TPM2_Sign (the TPM refuses data starting with TPM_GENERATED_VALUE, so the magic is zeroed)",
            pva("quote-not-tpm-generated"),
            sign_forged_quote,
        ),
        Scenario::new(
            "certify-passed-as-quote",
            7,
            Device,
            "presents its AK's certification of the bundle key as the quote",
            pva("not-a-quote"),
            certify_as_quote,
        ),
        Scenario::new(
            "sha1-bank-only",
            8,
            Device,
            "quotes (and binds its bundle key to) the SHA-1 bank instead of SHA-256",
            pva("sha1-bank-refused"),
            |ctx| other_selection(ctx, Selection::Sha1),
        ),
        Scenario::new(
            "policy-pcr-not-quoted",
            8,
            Device,
            "leaves PCR 9 (the TRE agent's) out of its quote and bundle key policy",
            pva("policy-pcr-not-quoted"),
            |ctx| other_selection(ctx, Selection::WithoutLast),
        ),
    ]
}

fn software_quote(ctx: &Ctx) -> Result<Observed> {
    let key = SoftwareKey::generate()?;
    edited_evidence(ctx, |_, _, e| {
        e.quote.signature = ByteBuf::from(key.tpm_signature(&e.quote.attest)?);
        Ok(())
    })?
    .observed()
}

fn foreign_ak(ctx: &Ctx) -> Result<Observed> {
    // The other TPM: the attacker owns it too, and uses its AK.
    let other = Target::new(ctx.manufacture()?);
    let mut other_tpm = Tpm::connect(&other.tcti()?)?;
    let other_ak = other_tpm.ak(KeyAlg::Ecc)?;
    let other_ek = other_tpm.ek(KeyAlg::Ecc)?;
    let ak_public = other_ak.public_bytes()?;
    let mut bound = None;
    let mut tpm_layers = Vec::new();
    let mut enrolled = false;
    let mut refused = None;
    let attacked = attack_one(ctx, &ctx.image, |d: &mut Hostile, task| {
        if refused.is_none() {
            refused = d.refusals.first().cloned();
        }
        match task {
            // First: bind the other TPM's AK to this device at the RO, in place of its own.
            task @ DeviceTask::ActivateTre { .. } if bound.is_none() => {
                let own = d.agent.attester().enrolment_request()?;
                let request = CredentialRequest {
                    ek_certificate: ByteBuf::from(own.ek_certificate),
                    ek_public: ByteBuf::from(own.ek_public),
                    ak_public: ByteBuf::from(ak_public.clone()),
                };
                let base = format!("{}/v1/devices/{}/credential", ctx.lab.urls.ro, d.id);
                let http = ctx.lab.pki.anonymous_client()?;
                let challenge = aside(|rt| {
                    let body = device_api::to_cbor(&request)?;
                    let bytes = rt.block_on(async {
                        let response = http
                            .post(&base)
                            .header("content-type", "application/cbor")
                            .body(body)
                            .send()
                            .await?;
                        let response = transport::client::check(response).await?;
                        transport::client::read_limited(response, 64 * 1024).await
                    })?;
                    Ok(device_api::from_cbor::<CredentialChallenge>(&bytes)?)
                })?;
                // This TPM holds the EK but not the AK; the other holds the AK but not the EK.
                let (id_object, secret) = (&challenge.id_object, &challenge.encrypted_secret);
                let own = d.agent.attester().activate_credential(id_object, secret);
                tpm_layers.push(activation_layer("this TPM: the EK, not the AK", own.map(drop)));
                let theirs = other_tpm.activate_credential(&other_ak, &other_ek, id_object, secret);
                tpm_layers
                    .push(activation_layer("the other TPM: the AK, not the EK", theirs.map(drop)));
                let mut guess = [0u8; CredentialSecret::LEN];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut guess)
                    .map_err(|_| anyhow::anyhow!("no randomness"))?;
                let proof = device_api::to_cbor(&CredentialProof { secret: ByteBuf::from(guess) })?;
                let url = format!("{base}/activate");
                let http = ctx.lab.pki.anonymous_client()?;
                bound = Some(aside(move |rt| {
                    rt.block_on(observe::post(&http, &url, "application/cbor", proof))
                })?);
                Ok(Act::Agent(task))
            }
            // Then: enrol the other TPM's AK under this device's EK, on the device's channel.
            DeviceTask::Enrol if !enrolled => {
                enrolled = true;
                let own = d.agent.attester().enrolment_request()?;
                let request = EnrolRequest {
                    device_id: own.device_id,
                    ek_certificate: ByteBuf::from(own.ek_certificate),
                    ek_intermediates: Vec::new(),
                    ek_public: ByteBuf::from(own.ek_public),
                    ak_public: ByteBuf::from(ak_public.clone()),
                };
                Ok(Act::Try("enrolment", request.to_cbor()?))
            }
            task => Ok(Act::Agent(task)),
        }
    })?;
    let bound = bound.context("the device was never handed MNO-A's activate-TRE command")?;
    let mut observed = Observed::new(answer_layer(Stage::RoDeviceApi, &bound));
    observed.also.extend(tpm_layers);
    let refused = refused.context("the foreign enrolment was not refused")?;
    let check = if refused.contains("/device-not-authenticated") {
        "device-not-authenticated (enrolment of the other AK)"
    } else {
        "unrecognised refusal of the enrolment"
    };
    observed.also.push(Layer::rejected(Stage::RoDeviceApi, vec![check.into()], refused));
    still_switched(&attacked, observed)
}

fn activation_layer(which: &str, result: tre::Result<()>) -> Layer {
    match result {
        Ok(()) => Layer::accepted(Stage::Tpm, format!("{which} activated the credential")),
        Err(e) => Layer::rejected(
            Stage::Tpm,
            vec![format!("TPM2_ActivateCredential refused ({which})")],
            format!("{which}: {e}"),
        ),
    }
}

#[derive(Clone, Copy)]
enum EkForgery {
    UnknownCa,
    SelfSigned,
    Expired,
    AnotherTpm,
}

/// The device attaches (and would enrol) with a certificate that does not vouch for its EK.
/// The DRF decides; the PVA, handed the same enrolment by a relying party, must refuse the
/// certificate too.
fn forged_ek_certificate(ctx: &Ctx, forgery: EkForgery) -> Result<Observed> {
    let target = Target::new(ctx.manufacture()?);
    let ek_public = {
        let mut tpm = Tpm::connect(&target.tcti()?)?;
        tpm.ek(KeyAlg::Ecc)?.public_bytes()?
    };
    let certificate = forge_certificate(ctx, forgery, &ek_public)?;
    let mut enrol = None;
    let attacked = super::device::attack_target(
        ctx,
        target,
        &ctx.image,
        |d: &mut Hostile, task| match task {
            DeviceTask::ActivateTre { command, .. } => {
                // The genuine card takes MNO-A's command; only the attach is forged.
                let tre_active = d.agent.card_mut().ota(&command).is_ok();
                let mut attach = d.attach_request(tre_active)?;
                attach.ek_certificate = ByteBuf::from(certificate.clone());
                let own = d.agent.attester().enrolment_request()?;
                enrol = Some(EnrolRequest {
                    device_id: own.device_id,
                    ek_certificate: ByteBuf::from(certificate.clone()),
                    ek_intermediates: Vec::new(),
                    ek_public: ByteBuf::from(own.ek_public),
                    ak_public: ByteBuf::from(own.ak_public),
                });
                Ok(Act::Attach(attach))
            }
            task => Ok(Act::Agent(task)),
        },
    )?;
    let observed = attacked.observed()?;
    let enrol = enrol.context("the device was never asked to attach")?;
    let rt = runtime()?;
    // As a relying party would relay it: enrolment takes only RO and operator certificates,
    // and the PVA must refuse the EK certificate itself.
    let http = ctx.lab.pki.client(Role::Ro)?;
    let url = format!("{}{}", ctx.lab.urls.pva, path::ENROL);
    let answer = rt.block_on(observe::post(&http, &url, "application/cbor", enrol.to_cbor()?))?;
    Ok(observed.with(answer_layer(Stage::Pva, &answer)))
}

fn forge_certificate(ctx: &Ctx, forgery: EkForgery, ek_public: &[u8]) -> Result<Vec<u8>> {
    let spki = Public::from_bytes(ek_public)?.to_spki_der()?;
    let info = TpmInfo {
        manufacturer: "id:49424D00".into(),
        model: "swtpm".into(),
        version: "id:20191023".into(),
    };
    let now = SystemTime::now();
    let request = |not_before, not_after| EkCertRequest {
        ek_public_spki: &spki,
        tpm: &info,
        specification: None,
        not_before,
        not_after,
    };
    match forgery {
        EkForgery::UnknownCa => {
            let rogue = RogueCa::new("TPM manufacturer nobody trusts")?;
            let ca = ManufacturerCa::from_pem(&rogue.cert_pem, &rogue.key_pem())?;
            Ok(ca.issue(&request(now - Duration::from_secs(60), None))?)
        }
        EkForgery::SelfSigned => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            Ok(rcgen::CertificateParams::new(Vec::<String>::new())?
                .self_signed(&key)?
                .der()
                .to_vec())
        }
        EkForgery::Expired => {
            let pki = &ctx.lab.pki;
            let ca =
                ManufacturerCa::from_pem(pki.manufacturer_cert_pem(), pki.manufacturer_key_pem())?;
            let day = Duration::from_secs(86_400);
            Ok(ca.issue(&request(now - 2 * day, Some(now - day)))?)
        }
        EkForgery::AnotherTpm => {
            let other = ctx.manufacture()?;
            let pem = std::fs::read_to_string(other.dir.join("ek.pem"))?;
            super::forge::der_of(&pem)
        }
    }
}

fn sign_forged_quote(ctx: &Ctx) -> Result<Observed> {
    let mut tpm_layer = None;
    let attacked = edited_evidence(ctx, |d, _, e| {
        let tpm = d.agent.tpm();
        let ak = tpm.ak(KeyAlg::Ecc)?;
        // What the attacker would like: the genuine structure signed by TPM2_Sign. The TPM
        // refuses to sign anything that starts with TPM_GENERATED_VALUE.
        tpm_layer = Some(match tpm.sign(&ak, &e.quote.attest) {
            Ok(_) => Layer::accepted(
                Stage::Tpm,
                "TPM2_Sign signed a structure starting with TPM_GENERATED_VALUE",
            ),
            Err(err) => Layer::rejected(
                Stage::Tpm,
                vec!["TPM2_Sign refused (TPM_GENERATED_VALUE)".into()],
                err.to_string(),
            ),
        });
        let mut forged = e.quote.attest.to_vec();
        forged.get_mut(..4).context("short TPMS_ATTEST")?.copy_from_slice(&[0; 4]);
        let signature = tpm.sign(&ak, &forged)?;
        e.quote =
            SignedAttest { attest: ByteBuf::from(forged), signature: ByteBuf::from(signature) };
        Ok(())
    })?;
    let observed = attacked.observed()?;
    Ok(match tpm_layer {
        Some(layer) => observed.with(layer),
        None => observed,
    })
}

fn certify_as_quote(ctx: &Ctx) -> Result<Observed> {
    edited_evidence(ctx, |_, _, e| {
        e.quote = e
            .bundle_key
            .as_ref()
            .map(|b| b.certify.clone())
            .ok_or_else(|| anyhow::anyhow!("no bundle key"))?;
        Ok(())
    })?
    .observed()
}

#[derive(Clone, Copy)]
enum Selection {
    /// The same PCRs in the SHA-1 bank.
    Sha1,
    /// The PVA's selection without its last PCR.
    WithoutLast,
}

fn other_selection(ctx: &Ctx, which: Selection) -> Result<Observed> {
    attack_one(ctx, &ctx.image, |d: &mut Hostile, task| match task {
        DeviceTask::Attest { nonce, pcr_selection } => {
            let asked: PcrSelection = pcr_selection.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            let bank = asked.banks().first().context("empty PCR selection")?;
            let mut pcrs: Vec<u8> = bank.pcrs().collect();
            let hash = match which {
                Selection::Sha1 => protocol::tpm::HashAlg::Sha1,
                Selection::WithoutLast => {
                    pcrs.pop();
                    bank.hash()
                }
            };
            let chosen = PcrSelection::new(vec![BankSelection::new(hash, pcrs)?])?;
            let evidence = d.evidence(&nonce, &chosen.to_string())?;
            Ok(Act::Post("evidence", evidence.to_cbor()?))
        }
        task => Ok(Act::Agent(task)),
    })?
    .observed()
}
