//! The TRE's attester (DESIGN.md §3 "Evidence"): measures the device image into the PCRs
//! of a freshly reset TPM, keeps the TCG event log, and produces the evidence the PVA
//! appraises — a quote over the measured PCRs and a fresh bundle key bound to them by
//! PolicyPCR and certified by the AK, both qualified with the PVA's nonce.
//!
//! PCR assignment and event types come from `protocol::image` (`docs/eventlog.md`), the
//! same code the PVA derives its reference values with.

use std::path::Path;

use protocol::eventlog::EventLog;
use protocol::evidence::{
    BundleKeyEvidence, EVIDENCE_VERSION, Evidence, SignedAttest as WireAttest,
};
use protocol::image;
use protocol::tpm::{BankSelection, HashAlg, PcrSelection, PcrValues, policy_pcr};
use protocol::{DeviceId, Nonce};
use ring::rand::SecureRandom;
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::manufacture::read_ek_certificate;
use crate::tpm::{KeyAlg, SignedAttest, Tpm};

/// Which keys and PCRs the attester uses.
#[derive(Debug, Clone)]
pub struct AttesterOptions {
    pub ek_alg: KeyAlg,
    pub ak_alg: KeyAlg,
    /// The PCRs to quote and to bind the bundle key to; `None`: the SHA-256 bank of every
    /// PCR the image measures into.
    pub selection: Option<PcrSelection>,
}

impl Default for AttesterOptions {
    fn default() -> Self {
        Self { ek_alg: KeyAlg::Ecc, ak_alg: KeyAlg::Ecc, selection: None }
    }
}

/// What the PVA needs to enrol the device's AK (TCG credential activation).
#[derive(Debug, Clone)]
pub struct EnrolmentRequest {
    pub device_id: DeviceId,
    /// EK certificate, DER.
    pub ek_certificate: Vec<u8>,
    /// Marshalled TPMT_PUBLIC of the EK.
    pub ek_public: Vec<u8>,
    /// Marshalled TPMT_PUBLIC of the AK.
    pub ak_public: Vec<u8>,
}

/// A measured device, ready to attest.
#[derive(Debug)]
pub struct Attester {
    tpm: Tpm,
    options: AttesterOptions,
    selection: PcrSelection,
    event_log: Vec<u8>,
}

impl Attester {
    /// Measures the image in `image_dir` into `tpm`, which must have just been reset
    /// (a swtpm just started, or power-cycled): every component is extended into every
    /// allocated bank, and logged.
    pub fn boot(mut tpm: Tpm, image_dir: &Path, options: AttesterOptions) -> Result<Self> {
        let banks = tpm.active_banks()?;
        let measurements =
            image::measure(image_dir, &banks).map_err(|e| Error::Image(e.to_string()))?;
        for m in &measurements {
            let digests: Vec<(HashAlg, Vec<u8>)> =
                m.digests.iter().map(|d| (d.alg, d.value.clone())).collect();
            let pcr =
                u8::try_from(m.pcr).map_err(|_| Error::Structure("PCR out of range".into()))?;
            tpm.pcr_extend(pcr, &digests)?;
        }
        let event_log = EventLog::from_measurements(&banks, &measurements)
            .map_err(|e| Error::Image(e.to_string()))?
            .to_bytes();
        let selection = match &options.selection {
            Some(selection) => selection.clone(),
            None => {
                let pcrs = measurements.iter().filter_map(|m| u8::try_from(m.pcr).ok());
                let bank = BankSelection::new(HashAlg::Sha256, pcrs)
                    .map_err(|e| Error::Structure(e.to_string()))?;
                PcrSelection::new(vec![bank]).map_err(|e| Error::Structure(e.to_string()))?
            }
        };
        Ok(Self { tpm, options, selection, event_log })
    }

    /// The TPM back, for another attester (`plain`) or to close it.
    pub fn into_tpm(self) -> Tpm {
        self.tpm
    }

    /// The TPM, for operations beyond attestation (NV counter, experiments).
    pub fn tpm(&mut self) -> &mut Tpm {
        &mut self.tpm
    }

    /// The event log of the measurements made at boot (TCG crypto-agile format).
    pub fn event_log(&self) -> &[u8] {
        &self.event_log
    }

    /// The PCRs quoted and bound into the bundle key.
    pub fn selection(&self) -> &PcrSelection {
        &self.selection
    }

    /// Quotes and binds `selection` from now on (the PVA names the PCRs it appraises).
    pub fn set_selection(&mut self, selection: PcrSelection) {
        self.selection = selection;
    }

    /// The device id: the EK's TPM name.
    pub fn device_id(&mut self) -> Result<DeviceId> {
        let ek = self.tpm.ek(self.options.ek_alg)?;
        let name = ek.name.clone();
        self.tpm.release(ek)?;
        DeviceId::from_name(&name).map_err(|e| Error::Structure(e.to_string()))
    }

    /// Device id, EK certificate, EK and AK public areas, for enrolment with the PVA.
    pub fn enrolment_request(&mut self) -> Result<EnrolmentRequest> {
        let ek_certificate = read_ek_certificate(&mut self.tpm, self.options.ek_alg)?;
        let ek = self.tpm.ek(self.options.ek_alg)?;
        let ek_public = ek.public_bytes();
        let device_id = DeviceId::from_name(&ek.name);
        self.tpm.release(ek)?;
        let ak = self.tpm.ak(self.options.ak_alg)?;
        Ok(EnrolmentRequest {
            device_id: device_id.map_err(|e| Error::Structure(e.to_string()))?,
            ek_certificate,
            ek_public: ek_public?,
            ak_public: ak.public_bytes()?,
        })
    }

    /// The AK's TPM name.
    pub fn ak_name(&mut self) -> Result<Vec<u8>> {
        Ok(self.tpm.ak(self.options.ak_alg)?.name)
    }

    /// TPM2_ActivateCredential of the PVA's challenge for our AK.
    pub fn activate_credential(
        &mut self,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let ek = self.tpm.ek(self.options.ek_alg)?;
        let ak = self.tpm.ak(self.options.ak_alg);
        let result =
            ak.and_then(|ak| self.tpm.activate_credential(&ak, &ek, id_object, encrypted_secret));
        self.tpm.release(ek)?;
        result
    }

    /// Evidence for `nonce`: quote, event log, and a fresh bundle key bound to the current
    /// values of the selected PCRs, certified by the AK. The bundle key replaces any earlier
    /// one, so only the key of the latest attestation can open a bundle.
    pub fn evidence(&mut self, nonce: &Nonce) -> Result<Evidence> {
        let ak = self.tpm.ak(self.options.ak_alg)?;
        let quote = self.tpm.quote(&ak, nonce.as_bytes(), &self.selection)?;
        let values = read_pcrs(&mut self.tpm, &self.selection)?;
        let bundle_key = certified_bundle_key(&mut self.tpm, &ak, nonce, &self.selection, &values)?;

        Ok(Evidence {
            version: EVIDENCE_VERSION,
            device_id: self.device_id()?,
            ek_certificate: ByteBuf::from(read_ek_certificate(&mut self.tpm, self.options.ek_alg)?),
            ak_public: ByteBuf::from(ak.public_bytes()?),
            quote: wire(quote),
            event_log: ByteBuf::from(self.event_log.clone()),
            // The PVA replays the log for the PCR values; the TRE's policy pins none.
            pcr_values: None,
            bundle_key: Some(bundle_key),
            rollback_counter: self.tpm.rollback_counter()?,
        })
    }
}

/// TPM2_PCR_Read of every PCR of `selection`.
pub fn read_pcrs(tpm: &mut Tpm, selection: &PcrSelection) -> Result<PcrValues> {
    let mut values = PcrValues::new();
    for bank in selection.banks() {
        let pcrs: Vec<u8> = bank.pcrs().collect();
        for (pcr, value) in tpm.pcr_read(bank.hash(), &pcrs)? {
            values.insert(bank.hash(), pcr, value).map_err(|e| Error::Structure(e.to_string()))?;
        }
    }
    Ok(values)
}

/// A fresh bundle key bound by PolicyPCR to `values` of `selection` (the PCRs as they are
/// now), persisted in place of any earlier one, and certified by `ak` with `nonce`.
pub fn certified_bundle_key(
    tpm: &mut Tpm,
    ak: &crate::tpm::Key,
    nonce: &Nonce,
    selection: &PcrSelection,
    values: &PcrValues,
) -> Result<BundleKeyEvidence> {
    let policy = policy_pcr(HashAlg::Sha256, selection, values)
        .map_err(|e| Error::Structure(e.to_string()))?;
    let mut unique = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut unique)
        .map_err(|_| Error::Structure("no randomness".into()))?;
    let key = tpm.create_bundle_key(policy.as_ref(), &unique)?;
    let key = tpm.persist_bundle_key(key)?;
    let certify = tpm.certify(&key, ak, nonce.as_bytes())?;
    Ok(BundleKeyEvidence { public: ByteBuf::from(key.public_bytes()?), certify: wire(certify) })
}

pub(crate) fn wire(signed: SignedAttest) -> WireAttest {
    WireAttest { attest: ByteBuf::from(signed.attest), signature: ByteBuf::from(signed.signature) }
}
