//! Signing attestation results (draft-ietf-rats-ear-04, `docs/ear.md`): the PVA's EAR
//! claims from an appraisal, signed ES256 with ring under the PVA's key (the signature
//! normalised to low S by `protocol::ear`), the PVA's certificate chain in the x5chain
//! header so relying parties can check it against the CI root, in the profile the PVA is
//! configured for (`ear_profile`: the IETF draft's by default, or Veraison's).
//!
//! The bundle-key claim is there only when the policy requires a bundle key
//! (`BundleKeyPolicy`): the EAR of an attestation-only appraisal certifies no key.
//!
//! An appraisal that fails is also logged, once, at info level: the device, the policy, the
//! status and each failure's detail (PCR, bank, event, component) — what the EAR's failure
//! details say, and nothing more (no digest, no event data, no key).
//!
//! The signing key is mandatory: a PVA without one does not start (no throw-away key, unlike
//! trustee's default). The key must belong to the certificate, and the certificate must be
//! valid now.

use std::path::Path;
use std::time::SystemTime;

use protocol::ear::{
    Appraisal, BundleKey, EarClaims, EarProfile, MAX_FAILURE_DETAILS, VerifierId, unix,
};
use protocol::tpm::Spki;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use x509_parser::prelude::FromDer;

use crate::appraisal::{Authenticated, Findings};
use crate::error::Error;
use crate::policy::BundleKeyPolicy;
use crate::refvalues::ReferenceValues;

/// Largest PEM file read for the signing certificate or key.
const MAX_PEM: u64 = 256 * 1024;

/// The PVA's EAR signing key and certificate chain.
pub struct EarSigner {
    key: EcdsaKeyPair,
    x5chain: Vec<Vec<u8>>,
    rng: SystemRandom,
    profile: EarProfile,
}

impl std::fmt::Debug for EarSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarSigner")
            .field("chain_len", &self.x5chain.len())
            .field("profile", &self.profile)
            .field("key", &"(redacted)")
            .finish()
    }
}

impl EarSigner {
    /// Reads the certificate chain (PEM, signer first) and the PKCS#8 private key (PEM),
    /// e.g. `pva.pem` and `pva.key` from `tresor pki init`.
    pub fn load(certificate: &Path, key: &Path) -> Result<Self, Error> {
        Self::from_pem(&read(certificate)?, &read(key)?)
    }

    /// From PEM text: certificates (signer first) and a PKCS#8 "PRIVATE KEY".
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        let bad = |m: String| Error::SigningKey(m);
        let chain: Vec<Vec<u8>> = pem::parse_many(chain_pem)
            .map_err(|e| bad(format!("certificate PEM: {e}")))?
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(|p| p.into_contents())
            .collect();
        let leaf = chain.first().ok_or_else(|| bad("no certificate".into()))?;
        let key_block = pem::parse(key_pem).map_err(|_| bad("the key is not PEM".into()))?;
        if key_block.tag() != "PRIVATE KEY" {
            return Err(bad(format!(
                "the key is a {:?}, not a PKCS#8 PRIVATE KEY",
                key_block.tag()
            )));
        }
        let key = zeroize::Zeroizing::new(key_block.into_contents());
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key, &SystemRandom::new())
                .map_err(|_| bad("the key is not an ECDSA P-256 PKCS#8 key".into()))?;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf)
            .map_err(|e| bad(format!("certificate: {e}")))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key().as_ref() {
            return Err(bad("the key does not belong to the certificate".into()));
        }
        if !cert.validity().is_valid() {
            return Err(bad("the certificate is not valid now".into()));
        }
        Ok(Self { key, x5chain: chain, rng: SystemRandom::new(), profile: EarProfile::default() })
    }

    /// Signs in `profile` from now on (the PVA's `ear_profile` setting).
    pub fn with_profile(mut self, profile: EarProfile) -> Self {
        self.profile = profile;
        self
    }

    /// The profile EARs are signed in.
    pub fn profile(&self) -> EarProfile {
        self.profile
    }

    /// The x5chain (DER, signer first).
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.x5chain
    }

    /// COSE_Sign1 of `claims` in this signer's profile.
    pub fn sign(&self, claims: &EarClaims) -> Result<Vec<u8>, Error> {
        claims
            .sign_as(self.profile, &self.x5chain, |tbs| {
                self.key
                    .sign(&self.rng, tbs)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| "ECDSA signing failed")
            })
            .map_err(|e| Error::Signing(e.to_string()))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let bad = |e: std::io::Error| Error::SigningKey(format!("{}: {e}", path.display()));
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(bad)?
        .take(MAX_PEM + 1)
        .read_to_end(&mut bytes)
        .map_err(bad)?;
    if bytes.len() as u64 > MAX_PEM {
        return Err(Error::SigningKey(format!("{} is too large", path.display())));
    }
    Ok(bytes)
}

/// The EAR claims of an appraisal; a failed appraisal is logged here (one info line).
pub fn claims(
    auth: &Authenticated,
    findings: &Findings,
    refs: &ReferenceValues,
    verifier_id: &VerifierId,
    now: SystemTime,
) -> Result<EarClaims, Error> {
    let mut appraisal =
        Appraisal::new(findings.vector, refs.id().to_owned(), auth.device_id.clone());
    // The bundle-key claim says the key was appraised: only under a policy that requires
    // one. Under `bundle_key = "none"` a certified key in the evidence fails the appraisal
    // and is still left out, so no relying party takes the EAR for a key's certificate.
    let appraised_key = auth
        .bundle_key
        .as_ref()
        .filter(|_| refs.policy().bundle_key == BundleKeyPolicy::Required)
        .map(|(_, key)| key);
    appraisal.bundle_key = appraised_key.and_then(|key| {
        let spki = Spki::from_public(key).ok()?;
        BundleKey::from_spki(&spki, key.name().as_bytes().to_vec()).ok()
    });
    appraisal.rollback_counter = Some(auth.rollback_counter);
    appraisal.failed_checks = findings.failures.iter().map(|f| f.slug().to_owned()).collect();
    appraisal.failure_details =
        findings.details.iter().take(MAX_FAILURE_DETAILS).cloned().collect();
    if !findings.failures.is_empty() {
        log_failed(&appraisal);
    }
    let issued_at = unix(now);
    Ok(EarClaims {
        issued_at,
        expires_at: issued_at.saturating_add(refs.policy().ear_validity.as_secs()),
        nonce: Some(auth.nonce),
        verifier_id: verifier_id.clone(),
        appraisal,
    })
}

/// The PVA's one line about a failed appraisal: which checks failed, and where.
fn log_failed(appraisal: &Appraisal) {
    let details: Vec<String> = appraisal.failure_details.iter().map(ToString::to_string).collect();
    let more = appraisal.failed_checks.len().saturating_sub(details.len());
    tracing::info!(
        device = %appraisal.device_id,
        policy = %appraisal.policy_id,
        status = %appraisal.status(),
        failures = appraisal.failed_checks.len(),
        "appraisal failed: {}{}",
        details.join("; "),
        if more > 0 { format!("; and {more} more") } else { String::new() },
    );
}
