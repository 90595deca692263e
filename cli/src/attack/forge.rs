//! The attackers' tools: a CA nobody in the lab trusts (with the certificates it issues),
//! software P-256 keys posing as TPM keys, files changed by a bit, subscription profiles made
//! up from random bytes. Nothing here is trusted by any role; that is the point.

use std::path::Path;

use anyhow::{Context, Result};
use protocol::tpm::wire::EccParameter;
use protocol::tpm::{HashAlg, Marshal, Signature};
use protocol::{Amf, Iccid, Imsi, Opc, OtaKey, OtaKeys, SubscriberKey, SubscriptionProfile};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

/// A certificate authority of the attacker's own.
pub(crate) struct RogueCa {
    params: CertificateParams,
    key: KeyPair,
    pub cert_pem: String,
}

impl RogueCa {
    pub fn new(common_name: &str) -> Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), params, key })
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A role certificate with common name `cn`, shaped like the CI's (`tresor pki init`):
    /// (certificate PEM, PKCS#8 key PEM).
    pub fn role(&self, cn: &str) -> Result<(String, String)> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = vec![
            SanType::DnsName(protocol::role::dns_name(cn).try_into()?),
            SanType::DnsName("localhost".try_into()?),
        ];
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 32],
            protocol::role::Role::of_lab_name(cn).policies_der(),
        )];

        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// DER of the first certificate of a PEM text.
pub(crate) fn der_of(pem_text: &str) -> Result<Vec<u8>> {
    Ok(pem::parse(pem_text)?.into_contents())
}

/// A software P-256 key: everything a TPM key is, except bound to a TPM.
pub(crate) struct SoftwareKey {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl SoftwareKey {
    pub fn generate() -> Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("no randomness"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("a fresh key does not load"))?;
        Ok(Self { key, rng })
    }

    /// The public point (x, y).
    pub fn point(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let sec1 = self.key.public_key().as_ref();
        let (x, y) =
            sec1.get(1..33).zip(sec1.get(33..65)).context("not an uncompressed P-256 point")?;
        Ok((x.to_vec(), y.to_vec()))
    }

    /// A marshalled TPMT_SIGNATURE (ECDSA, SHA-256) over `message`, as a TPM would give it.
    pub fn tpm_signature(&self, message: &[u8]) -> Result<Vec<u8>> {
        let sig =
            self.key.sign(&self.rng, message).map_err(|_| anyhow::anyhow!("signing failed"))?;
        let (r, s) = sig.as_ref().split_at(32);
        let signature = Signature::Ecdsa {
            hash: HashAlg::Sha256,
            r: EccParameter::new(r.to_vec())?,
            s: EccParameter::new(s.to_vec())?,
        };
        Ok(signature.to_bytes())
    }
}

/// Flips one bit of byte `at` of `path`.
pub(crate) fn flip_byte(path: &Path, at: usize) -> Result<()> {
    let mut bytes = std::fs::read(path)?;
    let byte = bytes
        .get_mut(at)
        .with_context(|| format!("{} is shorter than {at} bytes", path.display()))?;
    *byte ^= 0x01;
    Ok(std::fs::write(path, bytes)?)
}

/// `bytes` with the first occurrence of `find` replaced by `with` (same length).
pub(crate) fn replace_once(bytes: &[u8], find: &[u8], with: &[u8]) -> Result<Vec<u8>> {
    anyhow::ensure!(
        find.len() == with.len() && !find.is_empty(),
        "replacement must keep the length"
    );
    let at = bytes
        .windows(find.len())
        .position(|w| w == find)
        .context("the bytes to replace are not there")?;
    let mut out = bytes.to_vec();
    if let Some(slot) = out.get_mut(at..at + with.len()) {
        slot.copy_from_slice(with);
    }
    Ok(out)
}

/// A subscription profile of random secrets for `iccid` and `imsi`, as a rogue operator
/// would make one.
pub(crate) fn random_profile(iccid: &Iccid, imsi: &Imsi) -> Result<SubscriptionProfile> {
    let no_rng = |_| anyhow::anyhow!("no randomness");
    Ok(SubscriptionProfile {
        iccid: iccid.clone(),
        imsi: imsi.clone(),
        k: SubscriberKey::random().map_err(no_rng)?,
        opc: Opc::random().map_err(no_rng)?,
        amf: Amf([0x80, 0x00]),
        ota: OtaKeys {
            kic: OtaKey::random().map_err(no_rng)?,
            kid: OtaKey::random().map_err(no_rng)?,
            counter: 0,
        },
    })
}
