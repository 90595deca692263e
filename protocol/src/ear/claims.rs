//! The EAR claims set (draft-ietf-rats-ear-04 §3 and §3.1; draft-ietf-rats-ear-00 for the
//! Veraison profile): metadata, the one submodule's appraisal with tresor's private claims,
//! their CBOR encoding in either profile, and its COSE_Sign1 (RFC 9052).
//!
//! | claim | IETF (-04) | Veraison (-00) |
//! | --- | --- | --- |
//! | eat_profile (265) | [`IETF_EAR_PROFILE`](super::IETF_EAR_PROFILE) | [`VERAISON_EAR_PROFILE`](super::VERAISON_EAR_PROFILE) |
//! | ear.status (1000) at the top | the submodule's status | absent |
//! | eat_nonce (10) of the evidence | in the submodule | at the top |
//! | eat_profile (265) of the submodule | [`TRE_APPRAISAL_PROFILE`] | absent |
//! | appraisal policy (1003) | `[policy id]` | policy id |
//!
//! Decoding takes the profile from eat_profile and then applies that profile's rules only.

use std::collections::BTreeMap;
use std::fmt;

use ciborium::Value;
use coset::{CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};

use super::detail::{self, FailureDetail};
use super::{
    BundleKey, Claim, EarError, EarProfile, SUBMOD, TRE_APPRAISAL_PROFILE, TrustTier, TrustVector,
    X5CHAIN, as_int, int, int_map, key, malformed, take_int, take_time,
};
use crate::ids::{DeviceId, Nonce};

/// ear.verifier-id: who made the appraisal.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifierId {
    pub developer: String,
    pub build: String,
}

/// One submodule's appraisal: status, vector, policy and tresor's claims about the device.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Appraisal {
    status: TrustTier,
    pub vector: TrustVector,
    pub policy_id: String,
    pub device_id: DeviceId,
    pub bundle_key: Option<BundleKey>,
    /// The TRE's anti-rollback NV counter as the evidence reported it (not TPM-signed: a
    /// bundle must carry a larger sequence number, which the TRE enforces itself).
    pub rollback_counter: Option<u64>,
    /// Names of the checks that failed, in the order they ran.
    pub failed_checks: Vec<String>,
    /// Where each of the first [`MAX_FAILURE_DETAILS`](super::MAX_FAILURE_DETAILS)
    /// failures happened, in the same order.
    pub failure_details: Vec<FailureDetail>,
}

impl Appraisal {
    /// The status is the worst tier of `vector`: it cannot be set more trusting.
    pub fn new(vector: TrustVector, policy_id: String, device_id: DeviceId) -> Self {
        Self {
            status: vector.worst_tier(),
            vector,
            policy_id,
            device_id,
            bundle_key: None,
            rollback_counter: None,
            failed_checks: Vec::new(),
            failure_details: Vec::new(),
        }
    }

    pub fn status(&self) -> TrustTier {
        self.status
    }

    fn to_cbor_value(&self, profile: EarProfile, nonce: Option<&Nonce>) -> Result<Value, EarError> {
        let vector = self.vector.iter().map(|(c, v)| (int(c.key()), int(i64::from(v)))).collect();
        let mut map = Vec::with_capacity(10);
        let policy = Value::Text(self.policy_id.clone());
        if profile == EarProfile::Ietf {
            map.push((int(key::EAT_PROFILE), Value::Text(TRE_APPRAISAL_PROFILE.into())));
        }
        map.push((int(key::STATUS), int(i64::from(self.status.value()))));
        map.push((int(key::TRUSTWORTHINESS_VECTOR), Value::Map(vector)));
        map.push(match profile {
            EarProfile::Ietf => (int(key::APPRAISAL_POLICY_ID), Value::Array(vec![policy])),
            EarProfile::Veraison => (int(key::APPRAISAL_POLICY_ID), policy),
        });
        if let (EarProfile::Ietf, Some(n)) = (profile, nonce) {
            map.push((int(key::EAT_NONCE), Value::Bytes(n.as_bytes().to_vec())));
        }
        map.push((int(key::DEVICE_ID), Value::Bytes(self.device_id.as_bytes().to_vec())));
        if let Some(k) = &self.bundle_key {
            map.push((int(key::BUNDLE_KEY), k.to_cbor_value()?));
        }
        if let Some(c) = self.rollback_counter {
            map.push((int(key::ROLLBACK_COUNTER), Value::Integer(c.into())));
        }
        if !self.failed_checks.is_empty() {
            let names = self.failed_checks.iter().cloned().map(Value::Text).collect();
            map.push((int(key::FAILED_CHECKS), Value::Array(names)));
        }
        if !self.failure_details.is_empty() {
            map.push((int(key::FAILURE_DETAILS), detail::encode_all(&self.failure_details)));
        }
        Ok(Value::Map(map))
    }

    /// The appraisal and, in the IETF profile, the evidence nonce it carries.
    fn from_cbor_value(
        value: Value,
        profile: EarProfile,
    ) -> Result<(Self, Option<Nonce>), EarError> {
        let mut map = int_map(value, "submod")?;
        let misplaced = |what: &str| not_in_profile(profile, what);
        let submod_profile = map.remove(&key::EAT_PROFILE);
        let submod_nonce = map.remove(&key::EAT_NONCE);
        let nonce = match profile {
            EarProfile::Ietf => {
                match submod_profile {
                    Some(Value::Text(p)) if p == TRE_APPRAISAL_PROFILE => {}
                    Some(Value::Text(p)) => {
                        return Err(EarError::Malformed(format!(
                            "submod profile {p:?} is not {TRE_APPRAISAL_PROFILE:?}"
                        )));
                    }
                    _ => return Err(EarError::Malformed("submod eat_profile missing".into())),
                }
                submod_nonce.map(|v| nonce_of(v, "the submod's eat_nonce")).transpose()?
            }
            EarProfile::Veraison => {
                if submod_profile.is_some() {
                    return Err(misplaced("a submod eat_profile"));
                }
                if submod_nonce.is_some() {
                    return Err(misplaced("an eat_nonce in the submod"));
                }
                None
            }
        };
        let status = take_int(&mut map, key::STATUS, "ear.status")?;
        let status = TrustTier::from_value(status)
            .ok_or_else(|| EarError::Malformed("unknown ear.status".into()))?;
        let mut vector = TrustVector::new();
        if let Some(v) = map.remove(&key::TRUSTWORTHINESS_VECTOR) {
            for (k, v) in int_map(v, "ear.trustworthiness-vector")? {
                let claim = Claim::ALL.into_iter().find(|c| c.key() == k).ok_or_else(|| {
                    EarError::Malformed(format!("unknown trustworthiness claim {k}"))
                })?;
                let v = as_int(v, "trustworthiness claim")?;
                let v = i8::try_from(v).map_err(|_| {
                    EarError::Malformed("trustworthiness claim out of range".into())
                })?;
                vector.set(claim, v);
            }
        }
        let worst = vector.worst_tier();
        if status < worst {
            return Err(EarError::StatusInconsistent { status, worst });
        }
        let policy_id = match (profile, map.remove(&key::APPRAISAL_POLICY_ID)) {
            (EarProfile::Veraison, Some(Value::Text(t))) => t,
            (EarProfile::Ietf, Some(Value::Array(ids))) => match <[Value; 1]>::try_from(ids) {
                Ok([Value::Text(t)]) => t,
                _ => {
                    return Err(EarError::Malformed(
                        "ear_appraisal_policy_ids must name the one policy the PVA applied".into(),
                    ));
                }
            },
            (EarProfile::Ietf, Some(Value::Text(_))) => {
                return Err(misplaced("an appraisal policy id as a text string"));
            }
            (EarProfile::Veraison, Some(Value::Array(_))) => {
                return Err(misplaced("appraisal policy ids as an array"));
            }
            _ => return Err(EarError::Malformed("ear.appraisal-policy-id missing".into())),
        };
        let device_id = match map.remove(&key::DEVICE_ID) {
            Some(Value::Bytes(b)) => {
                DeviceId::from_name(&b).map_err(|e| malformed("device id", e))?
            }
            _ => return Err(EarError::Malformed("device id missing".into())),
        };
        let bundle_key =
            map.remove(&key::BUNDLE_KEY).map(BundleKey::from_cbor_value).transpose()?;
        let rollback_counter = match map.remove(&key::ROLLBACK_COUNTER) {
            Some(v) => Some(
                u64::try_from(as_int(v, "rollback counter")?)
                    .map_err(|_| EarError::Malformed("negative rollback counter".into()))?,
            ),
            None => None,
        };
        let failed_checks = match map.remove(&key::FAILED_CHECKS) {
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::Text(t) => Ok(t),
                    _ => Err(EarError::Malformed("failed check is not text".into())),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(EarError::Malformed("failed checks is not an array".into())),
            None => Vec::new(),
        };
        let failure_details = map
            .remove(&key::FAILURE_DETAILS)
            .map(detail::decode_all)
            .transpose()?
            .unwrap_or_default();
        let appraisal = Self {
            status,
            vector,
            policy_id,
            device_id,
            bundle_key,
            rollback_counter,
            failed_checks,
            failure_details,
        };
        Ok((appraisal, nonce))
    }
}

/// A tresor EAR claims set: one appraisal (submod [`SUBMOD`]) with its metadata. The same
/// claims encode in either [`EarProfile`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EarClaims {
    /// Seconds since the Unix epoch.
    pub issued_at: u64,
    pub expires_at: u64,
    /// The PVA's challenge the evidence answered (the submodule's eat_nonce in the IETF
    /// profile, the top-level one in Veraison's).
    pub nonce: Option<Nonce>,
    pub verifier_id: VerifierId,
    pub appraisal: Appraisal,
}

impl EarClaims {
    /// The CWT claims set in the default (IETF) profile, CBOR.
    pub fn to_cbor(&self) -> Result<Vec<u8>, EarError> {
        self.to_cbor_as(EarProfile::default())
    }

    /// The CWT claims set in `profile`, CBOR.
    pub fn to_cbor_as(&self, profile: EarProfile) -> Result<Vec<u8>, EarError> {
        let verifier = Value::Map(vec![
            (int(key::DEVELOPER), Value::Text(self.verifier_id.developer.clone())),
            (int(key::BUILD), Value::Text(self.verifier_id.build.clone())),
        ]);
        let appraisal = self.appraisal.to_cbor_value(profile, self.nonce.as_ref())?;
        let submods = Value::Map(vec![(Value::Text(SUBMOD.into()), appraisal)]);
        let mut map = vec![
            (int(key::EAT_PROFILE), Value::Text(profile.uri().into())),
            (int(key::IAT), Value::Integer(self.issued_at.into())),
            (int(key::EXP), Value::Integer(self.expires_at.into())),
            (int(key::VERIFIER_ID), verifier),
        ];
        if profile == EarProfile::Ietf {
            // One submodule: the overall status is its status (-04 §3).
            map.push((int(key::STATUS), int(i64::from(self.appraisal.status().value()))));
        }
        map.push((int(key::SUBMODS), submods));
        if let (EarProfile::Veraison, Some(n)) = (profile, &self.nonce) {
            map.push((int(key::EAT_NONCE), Value::Bytes(n.as_bytes().to_vec())));
        }
        let mut out = Vec::with_capacity(512);
        ciborium::into_writer(&Value::Map(map), &mut out)
            .map_err(|e| EarError::Build(e.to_string()))?;
        Ok(out)
    }

    /// Parses a claims set in either profile (no signature check: see
    /// [`EarVerifier`](super::EarVerifier)).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, EarError> {
        Self::decode(bytes).map(|(_, claims)| claims)
    }

    /// Parses a claims set and says which profile it follows. Only that profile's rules
    /// apply: a claim where the other profile puts it is refused.
    pub fn decode(bytes: &[u8]) -> Result<(EarProfile, Self), EarError> {
        let value: Value = ciborium::from_reader(bytes).map_err(|e| malformed("claims", e))?;
        let mut map = int_map(value, "claims set")?;
        let profile = match map.remove(&key::EAT_PROFILE) {
            Some(Value::Text(p)) => EarProfile::from_uri(&p).ok_or(EarError::WrongProfile(p))?,
            _ => return Err(EarError::Malformed("eat_profile missing".into())),
        };
        let issued_at = take_time(&mut map, key::IAT, "iat")?;
        let expires_at = take_time(&mut map, key::EXP, "exp")?;
        let top_nonce = map.remove(&key::EAT_NONCE);
        let top_status = map.remove(&key::STATUS);
        let mut vid = int_map(
            map.remove(&key::VERIFIER_ID)
                .ok_or_else(|| EarError::Malformed("ear.verifier-id missing".into()))?,
            "ear.verifier-id",
        )?;
        let mut text = |k| match vid.remove(&k) {
            Some(Value::Text(t)) => Ok(t),
            _ => Err(EarError::Malformed("ear.verifier-id member missing".into())),
        };
        let verifier_id = VerifierId { developer: text(key::DEVELOPER)?, build: text(key::BUILD)? };
        let appraisal = one_submod(&mut map)?;
        let (appraisal, submod_nonce) = Appraisal::from_cbor_value(appraisal, profile)?;
        let nonce = match profile {
            EarProfile::Ietf => {
                if top_nonce.is_some() {
                    // -04 §3: a top-level nonce is the relying party's, for the freshness
                    // of the result; tresor's relying parties send none, and the evidence
                    // nonce belongs in the submodule.
                    return Err(not_in_profile(profile, "a top-level eat_nonce"));
                }
                if let Some(status) = top_status {
                    let status = TrustTier::from_value(as_int(status, "ear.status")?)
                        .ok_or_else(|| EarError::Malformed("unknown ear.status".into()))?;
                    let worst = appraisal.status();
                    if status < worst {
                        return Err(EarError::StatusInconsistent { status, worst });
                    }
                }
                submod_nonce
            }
            EarProfile::Veraison => {
                if top_status.is_some() {
                    return Err(not_in_profile(profile, "a top-level ear.status"));
                }
                top_nonce.map(|v| nonce_of(v, "eat_nonce")).transpose()?
            }
        };
        Ok((profile, Self { issued_at, expires_at, nonce, verifier_id, appraisal }))
    }

    /// COSE_Sign1 (tag 18) over the claims in the default (IETF) profile; see
    /// [`Self::sign_as`].
    pub fn sign<E: fmt::Display>(
        &self,
        x5chain: &[Vec<u8>],
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, EarError> {
        self.sign_as(EarProfile::default(), x5chain, sign)
    }

    /// COSE_Sign1 (tag 18) over the claims in `profile` with ES256: `sign` gets the
    /// Sig_structure and returns the 64-byte r ‖ s, which is normalised to its low-S form
    /// (`crate::es256`: relying parties accept no other); `x5chain` (signer first, DER)
    /// goes in the protected header.
    pub fn sign_as<E: fmt::Display>(
        &self,
        profile: EarProfile,
        x5chain: &[Vec<u8>],
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, EarError> {
        let chain = match x5chain {
            [] => return Err(EarError::Build("empty x5chain".into())),
            [one] => Value::Bytes(one.clone()),
            many => Value::Array(many.iter().cloned().map(Value::Bytes).collect()),
        };
        let protected =
            HeaderBuilder::new().algorithm(iana::Algorithm::ES256).value(X5CHAIN, chain).build();
        let sign1 = CoseSign1Builder::new()
            .protected(protected)
            .payload(self.to_cbor_as(profile)?)
            .try_create_signature(&[], |tbs| {
                sign(tbs)
                    .map(|s| crate::es256::to_low_s(&s))
                    .map_err(|e| EarError::Build(e.to_string()))
            })?
            .build();
        sign1.to_tagged_vec().map_err(|e| EarError::Build(e.to_string()))
    }
}

/// The value of the one submod, which must be [`SUBMOD`].
fn one_submod(map: &mut BTreeMap<i64, Value>) -> Result<Value, EarError> {
    let submods = match map.remove(&key::SUBMODS) {
        Some(Value::Map(m)) => m,
        _ => return Err(EarError::Malformed("submods missing".into())),
    };
    let [(Value::Text(name), appraisal)]: [(Value, Value); 1] = submods
        .try_into()
        .map_err(|_| EarError::Malformed("EAR must carry exactly one submod".into()))?
    else {
        return Err(EarError::Malformed("submod name is not text".into()));
    };
    if name != SUBMOD {
        return Err(EarError::Malformed(format!("unexpected submod {name:?}")));
    }
    Ok(appraisal)
}

fn nonce_of(value: Value, what: &str) -> Result<Nonce, EarError> {
    match value {
        Value::Bytes(b) => Nonce::from_bytes(&b).map_err(|e| malformed(what, e)),
        _ => Err(EarError::Malformed(format!("{what} is not a byte string"))),
    }
}

/// A claim placed where the other profile puts it.
fn not_in_profile(profile: EarProfile, what: &str) -> EarError {
    EarError::Malformed(format!("{what} is not part of the {profile} EAR profile"))
}
