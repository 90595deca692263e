//! EAT Attestation Results (draft-ietf-rats-ear-04): the claims the PVA signs after an
//! appraisal, their CBOR encoding as a CWT claims set (RFC 8392) in a COSE_Sign1 (RFC 9052,
//! ES256, certificate chain in the x5chain header of RFC 9360), and the verification every
//! relying party (MNO-B, the DPF) runs before it believes one. `docs/ear.md` documents the
//! format claim by claim.
//!
//! Two encodings ([`EarProfile`]), told apart by `eat_profile`:
//! - [`EarProfile::Ietf`], the default: draft-ietf-rats-ear-04 (profile
//!   `tag:ietf.org,2026:rats/ear#04`): the evidence nonce in the submodule, the submodule's
//!   own `eat_profile` (tresor's appraisal claims, [`TRE_APPRAISAL_PROFILE`]), the appraisal
//!   policy ids as an array, an overall `ear.status`.
//! - [`EarProfile::Veraison`]: draft-fv-rats-ear / draft-ietf-rats-ear-00 as Veraison's
//!   services still speak it (profile `tag:github.com,2023:veraison/ear`): the nonce at the
//!   top level, the policy id as a text string, no submodule profile.
//!
//! A relying party accepts both, each by its own rules only: a claim where the other
//! profile would put it is refused, not translated. Both carry `exp`, and it is enforced.
//!
//! Claim keys are the draft's (and RFC 9711's): eat_profile 265, iat 6, exp 4, eat_nonce 10,
//! submods 266, ear.status 1000, ear.trustworthiness-vector 1001, ear.appraisal-policy-id(s)
//! 1003, ear.verifier-id 1004. The trustworthiness vector carries AR4SI claims
//! (draft-ietf-rats-ar4si §2.3) with their registered keys and values. tresor's own claims
//! use the CWT private-use range (below −65536): device id, bundle key (COSE_Key), rollback
//! counter, the names of the checks that failed and where each failed ([`FailureDetail`]).
//!
//! The status of an appraisal is computed from its vector (the worst tier of any claim),
//! never set on its own, and a verifier refuses an EAR whose status is more trusting than
//! its vector.
//!
//! Verification ([`EarVerifier::verify`], [`VerifiedEar::verify`]) fails closed with one
//! [`EarError`] variant per check: COSE structure and header hygiene (no `crit`, `alg` and
//! x5chain only in the protected header), ES256, the x5chain to a configured CI root, the
//! signer's role (the PVA's certificate, not any certificate under the CI), the signature
//! in its one (low-S, [`crate::es256`]) encoding, the profile's rules, the status/vector
//! consistency, expiry, the device, the nonce, the bundle key and, unless asked otherwise,
//! an affirming status.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciborium::Value;
use coset::iana;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::DeviceId;
use crate::tpm::public::EccCurve;
use crate::tpm::spki::Spki;
use crate::x509::ChainError;

mod claims;
mod detail;
mod verify;

pub use claims::{Appraisal, EarClaims, VerifierId};
pub use detail::{FailureDetail, MAX_FAILURE_DETAILS};
pub use verify::{EarVerifier, VerifiedEar};

/// eat_profile of draft-ietf-rats-ear-04 (§3).
pub const IETF_EAR_PROFILE: &str = "tag:ietf.org,2026:rats/ear#04";
/// eat_profile of draft-fv-rats-ear and draft-ietf-rats-ear-00, Veraison's.
pub const VERAISON_EAR_PROFILE: &str = "tag:github.com,2023:veraison/ear";
/// eat_profile of the `tre` submodule in the IETF encoding (draft-ietf-rats-ear-04 §3.1: an
/// appraisal with extensions names its profile): the tresor claims of `docs/ear.md`. The
/// authority is `example.invalid`, as in tresor's ear.verifier-id.
pub const TRE_APPRAISAL_PROFILE: &str = "tag:example.invalid,2026:tresor/ear/tre";
/// The one submodule of a tresor EAR: the M2ME's TRE and the platform it measured.
pub const SUBMOD: &str = "tre";
/// The name of the PVA's certificate in the lab PKI (`tresor pki init`); relying parties
/// accept any certificate of the PVA role unless configured with names.
pub const DEFAULT_SIGNER: &str = "pva";
/// Largest EAR accepted: claims of a few hundred bytes and a certificate chain.
pub const MAX_EAR_SIZE: usize = 64 * 1024;
/// Clock skew tolerated between the PVA and a relying party for `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// COSE header parameter x5chain (RFC 9360 §2).
pub const X5CHAIN: i64 = 33;

/// The encoding of an EAR claims set: which draft's rules it follows. The PVA signs in one
/// (its `ear_profile` setting); relying parties read both.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EarProfile {
    /// draft-ietf-rats-ear-04 ([`IETF_EAR_PROFILE`]).
    #[default]
    Ietf,
    /// draft-fv-rats-ear / draft-ietf-rats-ear-00 ([`VERAISON_EAR_PROFILE`]).
    Veraison,
}

impl EarProfile {
    pub const ALL: [EarProfile; 2] = [EarProfile::Ietf, EarProfile::Veraison];

    /// The eat_profile value.
    pub const fn uri(self) -> &'static str {
        match self {
            Self::Ietf => IETF_EAR_PROFILE,
            Self::Veraison => VERAISON_EAR_PROFILE,
        }
    }

    pub fn from_uri(uri: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.uri() == uri)
    }

    /// The setting's value: `ietf` or `veraison`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ietf => "ietf",
            Self::Veraison => "veraison",
        }
    }
}

impl fmt::Display for EarProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// CWT / EAR claim keys.
pub mod key {
    pub const EXP: i64 = 4;
    pub const IAT: i64 = 6;
    pub const EAT_NONCE: i64 = 10;
    pub const EAT_PROFILE: i64 = 265;
    pub const SUBMODS: i64 = 266;
    pub const STATUS: i64 = 1000;
    pub const TRUSTWORTHINESS_VECTOR: i64 = 1001;
    /// ear.appraisal-policy-id, a text string (Veraison); ear_appraisal_policy_ids, an array
    /// of text strings (IETF).
    pub const APPRAISAL_POLICY_ID: i64 = 1003;
    pub const VERIFIER_ID: i64 = 1004;
    /// ear.verifier-id members.
    pub const DEVELOPER: i64 = 0;
    pub const BUILD: i64 = 1;
    /// tresor private claims (CWT private use, RFC 8392 §9.1).
    pub const DEVICE_ID: i64 = -76_000;
    pub const BUNDLE_KEY: i64 = -76_001;
    pub const ROLLBACK_COUNTER: i64 = -76_002;
    pub const FAILED_CHECKS: i64 = -76_003;
    pub const FAILURE_DETAILS: i64 = -76_004;
}

/// Why an EAR could not be built, or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EarError {
    #[error("EAR of {size} bytes exceeds the limit of {MAX_EAR_SIZE}")]
    TooLarge { size: usize },
    #[error("EAR is malformed: {0}")]
    Malformed(String),
    #[error("EAR is not signed with ES256 (named once, in the protected header)")]
    UnsupportedAlgorithm,
    #[error("EAR carries no x5chain in its protected header")]
    MissingCertificateChain,
    #[error("EAR signer does not chain to a trusted CI root: {0}")]
    UntrustedSigner(ChainError),
    #[error("EAR is signed by {subject:?}, which may not sign attestation results")]
    SignerNotAllowed { subject: String },
    #[error("EAR signature does not verify")]
    BadSignature,
    #[error("EAR profile {0:?} is neither {IETF_EAR_PROFILE:?} nor {VERAISON_EAR_PROFILE:?}")]
    WrongProfile(String),
    #[error("EAR status {status} is more trusting than its trustworthiness vector ({worst})")]
    StatusInconsistent { status: TrustTier, worst: TrustTier },
    #[error("EAR expired at {expired_at} (now {now})")]
    Expired { expired_at: u64, now: u64 },
    #[error("EAR is issued at {issued_at}, in the future (now {now})")]
    NotYetValid { issued_at: u64, now: u64 },
    #[error("EAR is for device {got}, not {expected}")]
    OtherDevice { expected: DeviceId, got: DeviceId },
    #[error("EAR is for another nonce")]
    OtherNonce,
    #[error("EAR is for another bundle key")]
    OtherBundleKey,
    #[error("EAR carries no bundle key")]
    MissingBundleKey,
    #[error("EAR status is {status}, not affirming (failed checks: {})", failed_checks.join(", "))]
    NotAffirming { status: TrustTier, failed_checks: Vec<String> },
    #[error("EAR could not be built: {0}")]
    Build(String),
}

/// AR4SI trustworthiness tiers (draft-ietf-rats-ar4si §3.2), ordered from no claim to the
/// least trusting, so that the worst of several is their maximum.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum TrustTier {
    None,
    Affirming,
    Warning,
    Contraindicated,
}

impl TrustTier {
    /// The ear.status value: none 0, affirming 2, warning 32, contraindicated 96.
    pub const fn value(self) -> i8 {
        match self {
            Self::None => 0,
            Self::Affirming => 2,
            Self::Warning => 32,
            Self::Contraindicated => 96,
        }
    }

    pub fn from_value(value: i64) -> Option<Self> {
        [Self::None, Self::Affirming, Self::Warning, Self::Contraindicated]
            .into_iter()
            .find(|t| i64::from(t.value()) == value)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Affirming => "affirming",
            Self::Warning => "warning",
            Self::Contraindicated => "contraindicated",
        }
    }

    /// The tier of a trustworthiness claim value (AR4SI §2.3.3): −1..1 none, 2..31 and
    /// −32..−2 affirming, 32..95 and −96..−33 warning, the rest contraindicated.
    pub fn of_claim(value: i8) -> Self {
        match value {
            -1..=1 => Self::None,
            2..=31 | -32..=-2 => Self::Affirming,
            32..=95 | -96..=-33 => Self::Warning,
            _ => Self::Contraindicated,
        }
    }
}

impl fmt::Display for TrustTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl utoipa::PartialSchema for TrustTier {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "AR4SI trust tier (ear.status): its name in JSON, its integer (0, 2, 32, 96) in CBOR",
            ))
            .enum_values(Some(["none", "affirming", "warning", "contraindicated"]))
            .into()
    }
}

impl utoipa::ToSchema for TrustTier {}

/// Integer in CBOR, name in JSON, like ear.status.
impl Serialize for TrustTier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(self.name())
        } else {
            s.serialize_i8(self.value())
        }
    }
}

impl<'de> Deserialize<'de> for TrustTier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        if d.is_human_readable() {
            let name = String::deserialize(d)?;
            [Self::None, Self::Affirming, Self::Warning, Self::Contraindicated]
                .into_iter()
                .find(|t| t.name() == name)
                .ok_or_else(|| D::Error::custom("unknown trust tier"))
        } else {
            Self::from_value(i64::deserialize(d)?)
                .ok_or_else(|| D::Error::custom("unknown trust tier"))
        }
    }
}

/// The AR4SI trustworthiness claims and their keys in ear.trustworthiness-vector.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Claim {
    InstanceIdentity = 0,
    Configuration = 1,
    Executables = 2,
    FileSystem = 3,
    Hardware = 4,
    RuntimeOpaque = 5,
    StorageOpaque = 6,
    SourcedData = 7,
}

impl Claim {
    pub const ALL: [Claim; 8] = [
        Claim::InstanceIdentity,
        Claim::Configuration,
        Claim::Executables,
        Claim::FileSystem,
        Claim::Hardware,
        Claim::RuntimeOpaque,
        Claim::StorageOpaque,
        Claim::SourcedData,
    ];

    pub const fn key(self) -> i64 {
        self as i64
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::InstanceIdentity => "instance-identity",
            Self::Configuration => "configuration",
            Self::Executables => "executables",
            Self::FileSystem => "file-system",
            Self::Hardware => "hardware",
            Self::RuntimeOpaque => "runtime-opaque",
            Self::StorageOpaque => "storage-opaque",
            Self::SourcedData => "sourced-data",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Registered values of the claims tresor sets (AR4SI §2.3.4 and the per-claim tables).
pub mod value {
    pub const NO_CLAIM: i8 = 0;
    /// instance-identity: the attesting environment is recognised and not known to be
    /// compromised.
    pub const RECOGNIZED_INSTANCE: i8 = 2;
    /// configuration: a known and approved configuration.
    pub const APPROVED_CONFIG: i8 = 2;
    /// configuration: unacceptable security vulnerabilities.
    pub const UNSUPPORTABLE_CONFIG: i8 = 96;
    /// executables: only approved executables were loaded during boot.
    pub const APPROVED_BOOT: i8 = 3;
    /// executables: recognised, but known bugs or vulnerabilities.
    pub const UNSAFE_RUNTIME: i8 = 32;
    /// executables: contraindicated executables were loaded.
    pub const CONTRAINDICATED_RUNTIME: i8 = 96;
    /// hardware: genuine hardware and firmware.
    pub const GENUINE_HARDWARE: i8 = 2;
    /// hardware: recognised, but its trustworthiness is contraindicated.
    pub const CONTRAINDICATED_HARDWARE: i8 = 96;
    /// storage-opaque: secrets are encrypted with keys that never leave the hardware.
    pub const HW_KEYS_ENCRYPTED_SECRETS: i8 = 2;
    /// storage-opaque: secrets would not be protected by the hardware.
    pub const UNENCRYPTED_SECRETS: i8 = 96;
}

/// ear.trustworthiness-vector: a value per claim, or none.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TrustVector([Option<i8>; 8]);

impl TrustVector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, claim: Claim, value: i8) -> &mut Self {
        if let Some(slot) = self.0.get_mut(claim.index()) {
            *slot = Some(value);
        }
        self
    }

    pub fn get(&self, claim: Claim) -> Option<i8> {
        self.0.get(claim.index()).copied().flatten()
    }

    /// The claims that are set, by key.
    pub fn iter(&self) -> impl Iterator<Item = (Claim, i8)> + '_ {
        Claim::ALL.into_iter().filter_map(|c| self.get(c).map(|v| (c, v)))
    }

    /// The worst tier of any claim set ([`TrustTier::None`] for an empty vector): the most
    /// trusting status an appraisal with this vector may have.
    pub fn worst_tier(&self) -> TrustTier {
        self.iter().map(|(_, v)| TrustTier::of_claim(v)).max().unwrap_or(TrustTier::None)
    }
}

impl fmt::Debug for TrustVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter().map(|(c, v)| (c.name(), v))).finish()
    }
}

/// The bundle key the PVA saw certified by the device's AK: an EC2 P-256 public key, with
/// its TPM name as key id (a COSE_Key, RFC 9052 §7, in the EAR).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct BundleKey {
    x: [u8; 32],
    y: [u8; 32],
    name: Vec<u8>,
}

impl BundleKey {
    /// A P-256 public key by its affine coordinates and the TPM name of the key object.
    pub fn new(x: [u8; 32], y: [u8; 32], name: Vec<u8>) -> Self {
        Self { x, y, name }
    }

    /// From a TPM public area's key (must be NIST P-256).
    pub fn from_spki(spki: &Spki, name: Vec<u8>) -> Result<Self, EarError> {
        match spki {
            Spki::Ecc { curve: EccCurve::NistP256, x, y } => Ok(Self {
                x: x.as_slice()
                    .try_into()
                    .map_err(|_| EarError::Build("x is not 32 bytes".into()))?,
                y: y.as_slice()
                    .try_into()
                    .map_err(|_| EarError::Build("y is not 32 bytes".into()))?,
                name,
            }),
            _ => Err(EarError::Build("the bundle key is not a NIST P-256 key".into())),
        }
    }

    pub fn x(&self) -> &[u8; 32] {
        &self.x
    }

    pub fn y(&self) -> &[u8; 32] {
        &self.y
    }

    /// The TPM name (nameAlg ‖ H(TPMT_PUBLIC)) of the key object.
    pub fn tpm_name(&self) -> &[u8] {
        &self.name
    }

    /// Uncompressed SEC1 point 04 ‖ x ‖ y, as ring's ECDH takes it.
    pub fn sec1_point(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[0] = 0x04;
        out[1..33].copy_from_slice(&self.x);
        out[33..].copy_from_slice(&self.y);
        out
    }

    fn to_cbor_value(&self) -> Result<Value, EarError> {
        use coset::AsCborValue;
        coset::CoseKeyBuilder::new_ec2_pub_key(
            iana::EllipticCurve::P_256,
            self.x.to_vec(),
            self.y.to_vec(),
        )
        .key_id(self.name.clone())
        .build()
        .to_cbor_value()
        .map_err(|e| EarError::Build(e.to_string()))
    }

    fn from_cbor_value(value: Value) -> Result<Self, EarError> {
        use coset::AsCborValue;
        use coset::{KeyType, Label};
        let key = coset::CoseKey::from_cbor_value(value).map_err(|e| malformed("bundle key", e))?;
        if key.kty != KeyType::Assigned(iana::KeyType::EC2) {
            return Err(EarError::Malformed("bundle key is not an EC2 key".into()));
        }
        let (mut crv, mut x, mut y) = (None, None, None);
        for (label, value) in key.params {
            match (label, value) {
                (Label::Int(-1), Value::Integer(i)) => crv = Some(i128::from(i)),
                (Label::Int(-2), Value::Bytes(b)) => x = Some(b),
                (Label::Int(-3), Value::Bytes(b)) => y = Some(b),
                _ => {
                    return Err(EarError::Malformed("bundle key has unexpected parameters".into()));
                }
            }
        }
        if crv != Some(iana::EllipticCurve::P_256 as i128) {
            return Err(EarError::Malformed("bundle key is not on P-256".into()));
        }
        let coordinate = |c: Option<Vec<u8>>| -> Result<[u8; 32], EarError> {
            c.and_then(|c| c.try_into().ok())
                .ok_or_else(|| EarError::Malformed("bundle key coordinate is not 32 bytes".into()))
        };
        Ok(Self { x: coordinate(x)?, y: coordinate(y)?, name: key.key_id })
    }
}

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

fn as_int(v: Value, what: &str) -> Result<i64, EarError> {
    match v {
        Value::Integer(i) => {
            i64::try_from(i).map_err(|_| EarError::Malformed(format!("{what} out of range")))
        }
        _ => Err(EarError::Malformed(format!("{what} is not an integer"))),
    }
}

/// A CBOR map with integer keys; duplicate keys are refused.
fn int_map(v: Value, what: &str) -> Result<BTreeMap<i64, Value>, EarError> {
    let Value::Map(entries) = v else {
        return Err(EarError::Malformed(format!("{what} is not a map")));
    };
    let mut map = BTreeMap::new();
    for (k, v) in entries {
        let k = as_int(k, "claim key")?;
        if map.insert(k, v).is_some() {
            return Err(EarError::Malformed(format!("{what} has key {k} twice")));
        }
    }
    Ok(map)
}

fn take_int(map: &mut BTreeMap<i64, Value>, k: i64, what: &str) -> Result<i64, EarError> {
    as_int(map.remove(&k).ok_or_else(|| EarError::Malformed(format!("{what} missing")))?, what)
}

fn take_time(map: &mut BTreeMap<i64, Value>, k: i64, what: &str) -> Result<u64, EarError> {
    u64::try_from(take_int(map, k, what)?)
        .map_err(|_| EarError::Malformed(format!("{what} is negative")))
}

fn malformed(what: &str, e: impl fmt::Display) -> EarError {
    EarError::Malformed(format!("{what}: {e}"))
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
