//! The EAR claims set (draft-ietf-rats-ear §3): metadata, the one submodule's appraisal
//! with tresor's private claims, their CBOR encoding, and its COSE_Sign1 (RFC 9052).

use std::fmt;

use ciborium::Value;
use coset::{CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};

use super::{
    BundleKey, Claim, EAR_PROFILE, EarError, SUBMOD, TrustTier, TrustVector, X5CHAIN, as_int, int,
    int_map, key, malformed, take_int, take_time,
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
        }
    }

    pub fn status(&self) -> TrustTier {
        self.status
    }

    fn to_cbor_value(&self) -> Result<Value, EarError> {
        let vector = self.vector.iter().map(|(c, v)| (int(c.key()), int(i64::from(v)))).collect();
        let mut map = vec![
            (int(key::STATUS), int(i64::from(self.status.value()))),
            (int(key::TRUSTWORTHINESS_VECTOR), Value::Map(vector)),
            (int(key::APPRAISAL_POLICY_ID), Value::Text(self.policy_id.clone())),
            (int(key::DEVICE_ID), Value::Bytes(self.device_id.as_bytes().to_vec())),
        ];
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
        Ok(Value::Map(map))
    }

    fn from_cbor_value(value: Value) -> Result<Self, EarError> {
        let mut map = int_map(value, "submod")?;
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
        let policy_id = match map.remove(&key::APPRAISAL_POLICY_ID) {
            Some(Value::Text(t)) => t,
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
        Ok(Self {
            status,
            vector,
            policy_id,
            device_id,
            bundle_key,
            rollback_counter,
            failed_checks,
        })
    }
}

/// A tresor EAR claims set: one appraisal (submod [`SUBMOD`]) with its metadata.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EarClaims {
    /// Seconds since the Unix epoch.
    pub issued_at: u64,
    pub expires_at: u64,
    /// The PVA's challenge the evidence answered.
    pub nonce: Option<Nonce>,
    pub verifier_id: VerifierId,
    pub appraisal: Appraisal,
}

impl EarClaims {
    /// The CWT claims set, CBOR.
    pub fn to_cbor(&self) -> Result<Vec<u8>, EarError> {
        let verifier = Value::Map(vec![
            (int(key::DEVELOPER), Value::Text(self.verifier_id.developer.clone())),
            (int(key::BUILD), Value::Text(self.verifier_id.build.clone())),
        ]);
        let submods =
            Value::Map(vec![(Value::Text(SUBMOD.into()), self.appraisal.to_cbor_value()?)]);
        let mut map = vec![
            (int(key::EAT_PROFILE), Value::Text(EAR_PROFILE.into())),
            (int(key::IAT), Value::Integer(self.issued_at.into())),
            (int(key::EXP), Value::Integer(self.expires_at.into())),
            (int(key::VERIFIER_ID), verifier),
            (int(key::SUBMODS), submods),
        ];
        if let Some(n) = &self.nonce {
            map.push((int(key::EAT_NONCE), Value::Bytes(n.as_bytes().to_vec())));
        }
        let mut out = Vec::with_capacity(512);
        ciborium::into_writer(&Value::Map(map), &mut out)
            .map_err(|e| EarError::Build(e.to_string()))?;
        Ok(out)
    }

    /// Parses a claims set (no signature check: see [`EarVerifier`]).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, EarError> {
        let value: Value = ciborium::from_reader(bytes).map_err(|e| malformed("claims", e))?;
        let mut map = int_map(value, "claims set")?;
        match map.remove(&key::EAT_PROFILE) {
            Some(Value::Text(p)) if p == EAR_PROFILE => {}
            Some(Value::Text(p)) => return Err(EarError::WrongProfile(p)),
            _ => return Err(EarError::Malformed("eat_profile missing".into())),
        }
        let issued_at = take_time(&mut map, key::IAT, "iat")?;
        let expires_at = take_time(&mut map, key::EXP, "exp")?;
        let nonce = match map.remove(&key::EAT_NONCE) {
            Some(Value::Bytes(b)) => {
                Some(Nonce::from_bytes(&b).map_err(|e| malformed("eat_nonce", e))?)
            }
            Some(_) => return Err(EarError::Malformed("eat_nonce is not a byte string".into())),
            None => None,
        };
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
        let appraisal = Appraisal::from_cbor_value(appraisal)?;
        Ok(Self { issued_at, expires_at, nonce, verifier_id, appraisal })
    }

    /// COSE_Sign1 (tag 18) over the claims with ES256: `sign` gets the Sig_structure and
    /// returns the 64-byte r ‖ s; `x5chain` (signer first, DER) goes in the protected header.
    pub fn sign<E: fmt::Display>(
        &self,
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
            .payload(self.to_cbor()?)
            .try_create_signature(&[], |tbs| sign(tbs).map_err(|e| EarError::Build(e.to_string())))?
            .build();
        sign1.to_tagged_vec().map_err(|e| EarError::Build(e.to_string()))
    }
}
