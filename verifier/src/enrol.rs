//! Enrolment: the PVA accepts a device's AK only once the TPM holding the certified EK
//! proved it holds the AK too, by TPM2_ActivateCredential of a credential made for the AK's
//! name (TPM 2.0 Part 1 §24, "Credential Protection"; TCG EK Credential Profile 2.x for the
//! EK certificate). Checks, in order, each with its own [`EnrolmentError`]:
//!
//! 1. the EK public area parses, its name algorithm is not SHA-1, and its name is the
//!    device id claimed (the id is computed, never believed);
//! 2. the EK certificate chains to a configured manufacturer root, is valid now, has the EK
//!    profile's key usage, and certifies exactly the EK presented;
//! 3. a device id already enrolled keeps its EK: another EK under the same id is refused;
//! 4. the AK is restricted|sign|fixedTPM|fixedParent|sensitiveDataOrigin and not decrypt,
//!    NIST P-256 with ECDSA or RSA 2048, with a SHA-2 name algorithm;
//! 5. MakeCredential binds a fresh 32-byte secret to the AK's name under the EK; only its
//!    SHA-256 is stored, with an expiry;
//! 6. activation: one attempt per credential (the pending record is deleted whatever the
//!    outcome), unexpired, constant-time comparison of the secret.
//!
//! An activation enrols the AK and appends the enrolment to the device's history; it never
//! touches the device's TPM-clock mark (`store::put_device`), so enrolling a known EK again
//! cannot make an older TPM state acceptable. Who may ask for an enrolment is the HTTP
//! service's decision (`service`: authenticated relying parties unless `open_enrolment`).

use std::time::{Duration, SystemTime};

use protocol::DeviceId;
use protocol::ekcert::{EkCertError, verify_ek_certificate};

use crate::ek_allow::EkAllowList;
use protocol::pva_api::{ActivateRequest, CredentialSecret, EnrolRequest, EnrolResponse};
use protocol::tpm::public::{EccCurve, EccScheme, KdfScheme, RsaScheme, SymDefObject};
use protocol::tpm::{HashAlg, ObjectAttributes, Public, PublicKey, Unmarshal, make_credential};
use protocol::x509::TrustAnchors;
use serde_bytes::ByteBuf;
use storage::{Tx, args};
use subtle::ConstantTimeEq;

use crate::error::{EnrolmentError, Error, StoreError};
use crate::store::{self, DeviceRecord, Store};

/// Most credentials outstanding for one device; a further enrolment replaces the oldest.
pub const MAX_PENDING_PER_DEVICE: i64 = 4;

/// Attributes every AK must have (TCG "AK" template: a restricted signing key that never
/// left the TPM it was created in).
pub fn ak_required() -> ObjectAttributes {
    ObjectAttributes::RESTRICTED
        | ObjectAttributes::SIGN_ENCRYPT
        | ObjectAttributes::FIXED_TPM
        | ObjectAttributes::FIXED_PARENT
        | ObjectAttributes::SENSITIVE_DATA_ORIGIN
}

/// Attributes no AK may have.
pub const AK_FORBIDDEN: ObjectAttributes = ObjectAttributes::DECRYPT;

/// The PVA's view of an enrolled device, parsed once and cached.
#[derive(Clone, Debug)]
pub struct EnrolledDevice {
    pub device_id: DeviceId,
    pub ek_certificate: Vec<u8>,
    /// Marshalled TPMT_PUBLIC of the AK, as enrolled.
    pub ak_public_bytes: Vec<u8>,
    pub ak: Public,
}

impl EnrolledDevice {
    pub(crate) fn from_record(record: &DeviceRecord) -> Result<Self, StoreError> {
        let ak = Public::from_bytes(&record.ak_public)
            .map_err(|e| StoreError::Corrupt(format!("enrolled AK: {e}")))?;
        Ok(Self {
            device_id: record.device_id.clone(),
            ek_certificate: record.ek_certificate.clone(),
            ak_public_bytes: record.ak_public.clone(),
            ak,
        })
    }
}

/// What vouches for an EK: a certificate chaining to a manufacturer root, or, for an EK
/// that presents none, its name on the allow-list.
pub(crate) struct EkTrust<'a> {
    pub roots: &'a TrustAnchors,
    pub allowed: &'a EkAllowList,
}

/// Steps 1–5: validates the request and answers with a credential for the AK.
pub(crate) fn begin(
    store: &Store,
    trust: &EkTrust<'_>,
    req: &EnrolRequest,
    requested_by: Option<&str>,
    now: SystemTime,
    ttl: Duration,
) -> Result<EnrolResponse, Error> {
    let ek = Public::from_bytes(&req.ek_public).map_err(EnrolmentError::EkPublicMalformed)?;
    if ek.name_alg == HashAlg::Sha1 {
        return Err(EnrolmentError::EkNameAlgorithm(ek.name_alg).into());
    }
    let ek_name = ek.name();
    if ek_name.as_bytes() != req.device_id.as_bytes() {
        return Err(EnrolmentError::DeviceIdNotEkName {
            claimed: req.device_id.clone(),
            computed: hex::encode(ek_name.as_bytes()),
        }
        .into());
    }
    let ek_spki = ek
        .to_spki_der()
        .map_err(|e| EnrolmentError::EkCertificate(EkCertError::BadEkPublicKey(e.to_string())))?;
    let intermediates: Vec<&[u8]> = req.ek_intermediates.iter().map(|c| c.as_slice()).collect();
    if req.ek_certificate.is_empty() && trust.allowed.admits(&req.device_id) {
        tracing::warn!(device = %req.device_id, "EK without certificate admitted by the EK allow-list");
    } else {
        verify_ek_certificate(&req.ek_certificate, &intermediates, trust.roots, &ek_spki, now)
            .map_err(EnrolmentError::EkCertificate)?;
    }

    let ak = Public::from_bytes(&req.ak_public).map_err(EnrolmentError::AkPublicMalformed)?;
    check_ak(&ak)?;
    let ak_name = ak.name();

    let device_id = req.device_id.clone();
    let ek_public = req.ek_public.to_vec();
    let existing = store.call(move |c| store::get_device(c, &device_id))?;
    if existing.is_some_and(|(d, _)| d.ek_public != ek_public) {
        return Err(EnrolmentError::DeviceBoundToAnotherEk(req.device_id.clone()).into());
    }

    let secret = CredentialSecret::random().map_err(|_| Error::Random)?;
    let made =
        make_credential(&ek, &ak_name, secret.expose()).map_err(EnrolmentError::Credential)?;
    let now_s = protocol::ear::unix(now);
    let expires_at = now_s.saturating_add(ttl.as_secs());
    let pending = Pending {
        device_id: req.device_id.clone(),
        ak_name: ak_name.as_bytes().to_vec(),
        ek_public: req.ek_public.to_vec(),
        ek_certificate: req.ek_certificate.to_vec(),
        ak_public: req.ak_public.to_vec(),
        secret_hash: sha256(secret.expose()),
        requested_by: requested_by.map(str::to_owned),
    };
    store.call(move |c| put_pending(c, &pending, now_s, expires_at))?;
    Ok(EnrolResponse {
        device_id: req.device_id.clone(),
        credential_blob: ByteBuf::from(made.id_object.as_bytes().to_vec()),
        encrypted_secret: ByteBuf::from(made.encrypted_secret.as_bytes().to_vec()),
        ak_name: ByteBuf::from(ak_name.as_bytes().to_vec()),
        expires_at,
    })
}

/// Step 6: the device returns the secret; on success the AK is enrolled.
pub(crate) fn activate(
    store: &Store,
    req: &ActivateRequest,
    now: SystemTime,
) -> Result<DeviceRecord, Error> {
    let device_id = req.device_id.clone();
    let ak_name = req.ak_name.to_vec();
    let presented = sha256(req.secret.expose());
    let now_s = protocol::ear::unix(now);
    let outcome =
        store.call(move |c| -> Result<Result<DeviceRecord, EnrolmentError>, StoreError> {
            let Some((pending, expires_at)) = take_pending(c, &device_id, &ak_name)? else {
                return Ok(Err(EnrolmentError::NoPendingEnrolment));
            };
            if expires_at <= now_s {
                return Ok(Err(EnrolmentError::CredentialExpired));
            }
            if !bool::from(pending.secret_hash.ct_eq(&presented)) {
                return Ok(Err(EnrolmentError::WrongSecret));
            }
            if let Some((existing, _)) = store::get_device(c, &device_id)?
                && existing.ek_public != pending.ek_public
            {
                return Ok(Err(EnrolmentError::DeviceBoundToAnotherEk(device_id.clone())));
            }
            let record = DeviceRecord {
                device_id: pending.device_id,
                ek_public: pending.ek_public,
                ek_certificate: pending.ek_certificate,
                ak_public: pending.ak_public,
                ak_name: pending.ak_name,
                enrolled_at: now_s,
            };
            store::put_device(c, &record, pending.requested_by.as_deref())?;
            Ok(Ok(record))
        })?;
    Ok(outcome?)
}

/// Step 4: the AK's attributes and algorithm.
pub fn check_ak(ak: &Public) -> Result<(), EnrolmentError> {
    let (missing, forbidden) = attribute_diff(ak.attributes, ak_required(), AK_FORBIDDEN);
    if missing != ObjectAttributes::empty() || forbidden != ObjectAttributes::empty() {
        return Err(EnrolmentError::AkAttributes { missing, forbidden });
    }
    if ak.name_alg == HashAlg::Sha1 {
        return Err(EnrolmentError::AkAlgorithm("SHA-1 name algorithm"));
    }
    let sha2 = |h: HashAlg| h != HashAlg::Sha1;
    match &ak.key {
        PublicKey::Ecc { parms, .. } => {
            if parms.curve != EccCurve::NistP256 {
                return Err(EnrolmentError::AkAlgorithm("ECC AK not on NIST P-256"));
            }
            if !matches!(parms.scheme, EccScheme::Ecdsa(h) if h == HashAlg::Sha256) {
                return Err(EnrolmentError::AkAlgorithm("ECC AK scheme is not ECDSA with SHA-256"));
            }
            if parms.symmetric != SymDefObject::Null || parms.kdf != KdfScheme::Null {
                return Err(EnrolmentError::AkAlgorithm("ECC AK has a symmetric algorithm or KDF"));
            }
        }
        PublicKey::Rsa { parms, .. } => {
            if parms.key_bits != 2048 || parms.effective_exponent() != 65537 {
                return Err(EnrolmentError::AkAlgorithm(
                    "RSA AK is not 2048 bits with exponent 65537",
                ));
            }
            if !matches!(parms.scheme, RsaScheme::Rsassa(h) | RsaScheme::Rsapss(h) if sha2(h)) {
                return Err(EnrolmentError::AkAlgorithm(
                    "RSA AK scheme is not RSASSA or RSAPSS with SHA-2",
                ));
            }
            if parms.symmetric != SymDefObject::Null {
                return Err(EnrolmentError::AkAlgorithm("RSA AK has a symmetric algorithm"));
            }
        }
    }
    Ok(())
}

/// The bits of `required` that `attrs` lacks, and the bits of `forbidden` it has.
pub fn attribute_diff(
    attrs: ObjectAttributes,
    required: ObjectAttributes,
    forbidden: ObjectAttributes,
) -> (ObjectAttributes, ObjectAttributes) {
    let bits = |b: u32| ObjectAttributes::from_bits(b).unwrap_or_default();
    (bits(required.bits() & !attrs.bits()), bits(forbidden.bits() & attrs.bits()))
}

pub(crate) fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

struct Pending {
    device_id: DeviceId,
    ak_name: Vec<u8>,
    ek_public: Vec<u8>,
    ek_certificate: Vec<u8>,
    ak_public: Vec<u8>,
    secret_hash: Vec<u8>,
    requested_by: Option<String>,
}

fn put_pending(tx: &mut dyn Tx, p: &Pending, now: u64, expires_at: u64) -> Result<(), StoreError> {
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    tx.execute("DELETE FROM pending_enrolments WHERE expires_at <= ?1", args![to_i64(now)])?;
    tx.execute(
        "INSERT INTO pending_enrolments
         (device_id, ak_name, ek_public, ek_certificate, ak_public, secret_hash, created_at,
          expires_at, requested_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (device_id, ak_name) DO UPDATE SET
            ek_public = excluded.ek_public, ek_certificate = excluded.ek_certificate,
            ak_public = excluded.ak_public, secret_hash = excluded.secret_hash,
            created_at = excluded.created_at, expires_at = excluded.expires_at,
            requested_by = excluded.requested_by",
        args![
            p.device_id.as_bytes(),
            &p.ak_name,
            &p.ek_public,
            &p.ek_certificate,
            &p.ak_public,
            &p.secret_hash,
            to_i64(now),
            to_i64(expires_at),
            p.requested_by.as_deref()
        ],
    )?;
    // Keep this one and the newest few others per device, so that a flood of enrolments
    // for one id cannot grow the table (see docs/pva-api.md on enrolment denial of service).
    tx.execute(
        "DELETE FROM pending_enrolments WHERE device_id = ?1 AND ak_name <> ?2 AND ak_name NOT IN
         (SELECT ak_name FROM pending_enrolments WHERE device_id = ?1 AND ak_name <> ?2
          ORDER BY created_at DESC, ak_name DESC LIMIT ?3)",
        args![p.device_id.as_bytes(), &p.ak_name, MAX_PENDING_PER_DEVICE - 1],
    )?;
    Ok(())
}

/// Removes and returns the pending credential for (device, AK): one attempt each, also
/// when two PVA instances are presented the same secret at once (one statement).
fn take_pending(
    tx: &mut dyn Tx,
    device_id: &DeviceId,
    ak_name: &[u8],
) -> Result<Option<(Pending, u64)>, StoreError> {
    let Some(r) = tx.query_opt(
        "DELETE FROM pending_enrolments WHERE device_id = ?1 AND ak_name = ?2
         RETURNING ek_public, ek_certificate, ak_public, secret_hash, expires_at, requested_by",
        args![device_id.as_bytes(), ak_name],
    )?
    else {
        return Ok(None);
    };
    let pending = Pending {
        device_id: device_id.clone(),
        ak_name: ak_name.to_vec(),
        ek_public: r.get(0)?,
        ek_certificate: r.get(1)?,
        ak_public: r.get(2)?,
        secret_hash: r.get(3)?,
        requested_by: r.get(5)?,
    };
    Ok(Some((pending, u64::try_from(r.get::<i64>(4)?).unwrap_or(0))))
}
