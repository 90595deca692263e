//! Relying-party verification of an EAR (`docs/ear.md` §Verification): COSE_Sign1 with
//! ES256 and clean headers (RFC 9052 §3.1: `alg` and the x5chain protected, no `crit`), the
//! x5chain to a configured CI root (RFC 9360, `crate::x509`), the signer's role, the
//! signature in its low-S encoding (`crate::es256`), then the claims: the rules of their
//! profile (either [`EarProfile`]), status against vector, expiry, device, nonce, and an
//! affirming status unless the caller asks for any.

use std::time::{Duration, SystemTime};

use ciborium::Value;
use coset::{CoseSign1, TaggedCborSerializable, iana};

use super::{
    BundleKey, DEFAULT_LEEWAY, EarClaims, EarError, EarProfile, FailureDetail, MAX_EAR_SIZE,
    TrustTier, X5CHAIN, malformed, unix,
};
use crate::ids::{DeviceId, Nonce};
use crate::role::{CertifiedRole, Expected, Role};
use crate::tpm::public::EccCurve;
use crate::tpm::spki::Spki;
use crate::x509::{self, ChainPolicy, TrustAnchors};

/// What a relying party configures once: the CI roots, the signer roles it accepts.
#[derive(Clone, Debug)]
pub struct EarVerifier {
    roots: TrustAnchors,
    signers: Vec<Expected>,
    leeway: Duration,
    require_affirming: bool,
}

impl EarVerifier {
    /// Trusts EARs signed by a certificate of the PVA role (`crate::role`) that chains to one
    /// of `ci_roots`, and only affirming ones.
    pub fn new(ci_roots: TrustAnchors) -> Self {
        Self {
            roots: ci_roots,
            signers: vec![Expected::role(Role::Pva)],
            leeway: DEFAULT_LEEWAY,
            require_affirming: true,
        }
    }

    /// Accepts only the PVAs of these names (certificates of the PVA role).
    pub fn signers(mut self, names: &[&str]) -> Self {
        self.signers = names.iter().map(|name| Expected::named(Role::Pva, *name)).collect();
        self
    }

    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Returns warning and contraindicated EARs too (after every other check), for tools
    /// that report why an appraisal failed. Never for a release decision.
    pub fn accept_any_status(mut self) -> Self {
        self.require_affirming = false;
        self
    }

    /// Verifies `bytes` as an EAR for `device` at `now`; when `nonce` is given, the EAR must
    /// answer exactly that challenge.
    pub fn verify(
        &self,
        bytes: &[u8],
        now: SystemTime,
        device: &DeviceId,
        nonce: Option<&Nonce>,
    ) -> Result<VerifiedEar, EarError> {
        if bytes.len() > MAX_EAR_SIZE {
            return Err(EarError::TooLarge { size: bytes.len() });
        }
        let sign1 = CoseSign1::from_tagged_slice(bytes).map_err(|e| malformed("COSE_Sign1", e))?;
        let header = &sign1.protected.header;
        // The unprotected header is not signed: nothing there may decide how the EAR is read.
        if !header.crit.is_empty() || !sign1.unprotected.crit.is_empty() {
            return Err(EarError::Malformed("critical header parameters are not supported".into()));
        }
        if sign1.unprotected.alg.is_some()
            || header.alg
                != Some(coset::RegisteredLabelWithPrivate::Assigned(iana::Algorithm::ES256))
        {
            return Err(EarError::UnsupportedAlgorithm);
        }
        if header_value(&sign1.unprotected, X5CHAIN).is_some() {
            return Err(EarError::Malformed("x5chain in the unprotected header".into()));
        }
        let chain = x5chain(header)?;
        let (leaf, intermediates) = chain.split_first().ok_or(EarError::MissingCertificateChain)?;
        let inter: Vec<&[u8]> = intermediates.iter().map(Vec::as_slice).collect();
        let verified = x509::verify_chain(leaf, &inter, &self.roots, &ChainPolicy::at(now))
            .map_err(EarError::UntrustedSigner)?;
        // The role is the CI's word in the certificate; a valid certificate of another role
        // (an operator's, the RO's) signs nothing a relying party acts on.
        let allowed = CertifiedRole::of_der(leaf)
            .is_ok_and(|role| self.signers.iter().any(|expected| role.require(expected).is_ok()));
        if !allowed {
            return Err(EarError::SignerNotAllowed { subject: verified.subject });
        }
        let point = match Spki::from_der(&verified.spki_der) {
            Ok(spki @ Spki::Ecc { curve: EccCurve::NistP256, .. }) => spki.sec1_point(),
            _ => None,
        }
        .ok_or(EarError::UnsupportedAlgorithm)?;
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            point,
        );
        // (r, n − s) verifies as well as (r, s) but is another EAR, with another hash.
        if !crate::es256::is_low_s(&sign1.signature) {
            return Err(EarError::Malformed(
                "the ES256 signature is not in its low-S form (s > n/2)".into(),
            ));
        }
        sign1
            .verify_signature(&[], |sig, tbs| key.verify(tbs, sig))
            .map_err(|_| EarError::BadSignature)?;
        let payload = sign1
            .payload
            .as_deref()
            .ok_or_else(|| EarError::Malformed("detached payload".into()))?;
        let (profile, claims) = EarClaims::decode(payload)?;

        let now_s = unix(now);
        if claims.expires_at <= now_s {
            return Err(EarError::Expired { expired_at: claims.expires_at, now: now_s });
        }
        if claims.issued_at > now_s.saturating_add(self.leeway.as_secs()) {
            return Err(EarError::NotYetValid { issued_at: claims.issued_at, now: now_s });
        }
        if claims.appraisal.device_id != *device {
            return Err(EarError::OtherDevice {
                expected: device.clone(),
                got: claims.appraisal.device_id.clone(),
            });
        }
        if let Some(expected) = nonce
            && claims.nonce.as_ref() != Some(expected)
        {
            return Err(EarError::OtherNonce);
        }
        if self.require_affirming && claims.appraisal.status() != TrustTier::Affirming {
            return Err(EarError::NotAffirming {
                status: claims.appraisal.status(),
                failed_checks: claims.appraisal.failed_checks.clone(),
            });
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        Ok(VerifiedEar { profile, claims, signer: verified.subject, digest: hash })
    }
}

/// An EAR whose signature, signer, freshness and subject were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedEar {
    profile: EarProfile,
    claims: EarClaims,
    signer: String,
    digest: [u8; 32],
}

impl VerifiedEar {
    /// [`EarVerifier::new`]`(ci_roots).verify(…)`: the EAR must be signed by the PVA under
    /// one of `ci_roots`, unexpired at `now`, for `device` (and `nonce` when given), and
    /// affirming.
    pub fn verify(
        bytes: &[u8],
        ci_roots: &TrustAnchors,
        now: SystemTime,
        device: &DeviceId,
        nonce: Option<&Nonce>,
    ) -> Result<Self, EarError> {
        EarVerifier::new(ci_roots.clone()).verify(bytes, now, device, nonce)
    }

    /// The certified bundle key; an EAR without one cannot gate a bundle.
    pub fn bundle_key(&self) -> Result<&BundleKey, EarError> {
        self.claims.appraisal.bundle_key.as_ref().ok_or(EarError::MissingBundleKey)
    }

    /// Refuses unless the EAR certifies exactly `key` (coordinates and TPM name).
    pub fn check_bundle_key(&self, key: &BundleKey) -> Result<(), EarError> {
        if self.bundle_key()? == key { Ok(()) } else { Err(EarError::OtherBundleKey) }
    }

    pub fn claims(&self) -> &EarClaims {
        &self.claims
    }

    pub fn device_id(&self) -> &DeviceId {
        &self.claims.appraisal.device_id
    }

    pub fn status(&self) -> TrustTier {
        self.claims.appraisal.status()
    }

    pub fn failed_checks(&self) -> &[String] {
        &self.claims.appraisal.failed_checks
    }

    /// Where the failed checks failed (PCR, bank, event, component).
    pub fn failure_details(&self) -> &[FailureDetail] {
        &self.claims.appraisal.failure_details
    }

    /// The profile the EAR was encoded in.
    pub fn profile(&self) -> EarProfile {
        self.profile
    }

    pub fn policy_id(&self) -> &str {
        &self.claims.appraisal.policy_id
    }

    pub fn nonce(&self) -> Option<&Nonce> {
        self.claims.nonce.as_ref()
    }

    pub fn rollback_counter(&self) -> Option<u64> {
        self.claims.appraisal.rollback_counter
    }

    /// The signer certificate's subject (RFC 4514).
    pub fn signer(&self) -> &str {
        &self.signer
    }

    /// SHA-256 of the EAR as received: what a bundle's external AAD binds to.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

fn header_value(header: &coset::Header, label: i64) -> Option<&Value> {
    header.rest.iter().find(|(l, _)| *l == coset::Label::Int(label)).map(|(_, v)| v)
}

fn x5chain(header: &coset::Header) -> Result<Vec<Vec<u8>>, EarError> {
    let value = header_value(header, X5CHAIN).ok_or(EarError::MissingCertificateChain)?;
    match value {
        Value::Bytes(one) => Ok(vec![one.clone()]),
        Value::Array(items) if !items.is_empty() && items.len() <= 1 + x509::MAX_INTERMEDIATES => {
            items
                .iter()
                .map(|v| match v {
                    Value::Bytes(b) => Ok(b.clone()),
                    _ => Err(EarError::Malformed("x5chain element is not a byte string".into())),
                })
                .collect()
        }
        _ => Err(EarError::Malformed("x5chain is not a certificate or a chain".into())),
    }
}
