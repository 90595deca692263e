//! An attester for any TPM (issue 13, `tresor attest`): no image measured by tresor, the
//! PCRs as the platform left them. It finds or creates the EK (TCG default template, EK
//! Credential Profile 2.x §2.1.5) and the AK (`tpm::attest`), reads the EK certificate from
//! its TCG NV index when there is one, answers the PVA's credential (TPM 2.0 Part 1 §24)
//! and makes evidence: a quote of the PVA's selection with its nonce, the PCR values read
//! (TPM2_PCR_Read), the event log the caller gives (empty for a TPM without one), and a
//! certified bundle key only when asked, for a policy that requires one.
//!
//! Unlike [`crate::attester::Attester`] nothing here extends a PCR: the evidence describes
//! the platform as it is, for a policy of pinned PCR values or of a golden event log.

use protocol::evidence::{EVIDENCE_VERSION, Evidence};
use protocol::tpm::PcrSelection;
use protocol::{DeviceId, Nonce};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use crate::attester::{EnrolmentRequest, certified_bundle_key, read_pcrs, wire};
use crate::error::{Error, Result};
use crate::manufacture::read_ek_certificate;
use crate::tpm::{KeyAlg, ROLLBACK_COUNTER_INDEX, Tpm};

/// What evidence to make.
#[derive(Debug, Clone)]
pub struct EvidenceRequest<'a> {
    pub nonce: &'a Nonce,
    /// The PCRs to quote: the PVA's challenge names them.
    pub selection: &'a PcrSelection,
    /// The TCG event log to present, as read from the platform; empty for none.
    pub event_log: Vec<u8>,
    /// Whether to create and certify a bundle key (the policy's `bundle_key = "required"`).
    pub bundle_key: bool,
}

/// A TPM as it is, ready to enrol and attest.
#[derive(Debug)]
pub struct PlainAttester {
    tpm: Tpm,
    ek_alg: KeyAlg,
    ak_alg: KeyAlg,
}

impl PlainAttester {
    pub fn new(tpm: Tpm, ek_alg: KeyAlg, ak_alg: KeyAlg) -> Self {
        Self { tpm, ek_alg, ak_alg }
    }

    /// The TPM, for operations beyond attestation.
    pub fn tpm(&mut self) -> &mut Tpm {
        &mut self.tpm
    }

    /// The device id: the EK's TPM name.
    pub fn device_id(&mut self) -> Result<DeviceId> {
        let ek = self.tpm.ek(self.ek_alg)?;
        let name = ek.name.clone();
        self.tpm.release(ek)?;
        DeviceId::from_name(&name).map_err(|e| Error::Structure(e.to_string()))
    }

    /// The EK certificate from its TCG NV index; `None` when the TPM has none (the PVA then
    /// needs the EK in its allow-list).
    pub fn ek_certificate(&mut self) -> Result<Option<Vec<u8>>> {
        match read_ek_certificate(&mut self.tpm, self.ek_alg) {
            Ok(der) => Ok(Some(der)),
            Err(Error::NoEkCertificate { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Device id, EK certificate (empty if none), EK and AK public areas; the AK is
    /// created and persisted if the TPM has none.
    pub fn enrolment_request(&mut self) -> Result<EnrolmentRequest> {
        let ek_certificate = self.ek_certificate()?.unwrap_or_default();
        let ek = self.tpm.ek(self.ek_alg)?;
        let ek_public = ek.public_bytes();
        let device_id = DeviceId::from_name(&ek.name);
        self.tpm.release(ek)?;
        let ak = self.tpm.ak(self.ak_alg)?;
        Ok(EnrolmentRequest {
            device_id: device_id.map_err(|e| Error::Structure(e.to_string()))?,
            ek_certificate,
            ek_public: ek_public?,
            ak_public: ak.public_bytes()?,
        })
    }

    /// TPM2_ActivateCredential of the PVA's credential for the AK.
    pub fn activate_credential(
        &mut self,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let ek = self.tpm.ek(self.ek_alg)?;
        let ak = self.tpm.ak(self.ak_alg);
        let result =
            ak.and_then(|ak| self.tpm.activate_credential(&ak, &ek, id_object, encrypted_secret));
        self.tpm.release(ek)?;
        result
    }

    /// Evidence for the PVA's challenge. The PCR values are read after the quote; if the
    /// platform extends a PCR in between, the PVA finds that the values do not match the
    /// quote's digest, and the client asks again.
    pub fn evidence(&mut self, request: EvidenceRequest<'_>) -> Result<Evidence> {
        let ak = self.tpm.ak(self.ak_alg)?;
        let quote = self.tpm.quote(&ak, request.nonce.as_bytes(), request.selection)?;
        let values = read_pcrs(&mut self.tpm, request.selection)?;
        let bundle_key = if request.bundle_key {
            Some(certified_bundle_key(
                &mut self.tpm,
                &ak,
                request.nonce,
                request.selection,
                &values,
            )?)
        } else {
            None
        };
        let mut presented = std::collections::BTreeMap::new();
        for (bank, pcr, value) in values.iter() {
            presented
                .entry(bank)
                .or_insert_with(std::collections::BTreeMap::new)
                .insert(pcr, ByteBuf::from(value.to_vec()));
        }
        Ok(Evidence {
            version: EVIDENCE_VERSION,
            device_id: self.device_id()?,
            ek_certificate: ByteBuf::from(self.ek_certificate()?.unwrap_or_default()),
            ak_public: ByteBuf::from(ak.public_bytes()?),
            quote: wire(quote),
            event_log: ByteBuf::from(request.event_log),
            pcr_values: Some(presented),
            bundle_key,
            rollback_counter: self.rollback_counter()?,
        })
    }

    /// The TRE's anti-rollback counter if this TPM has one (a tresor device), else 0.
    fn rollback_counter(&mut self) -> Result<u64> {
        match self.tpm.nv_read(ROLLBACK_COUNTER_INDEX)? {
            Some(_) => self.tpm.rollback_counter(),
            None => Ok(0),
        }
    }
}
