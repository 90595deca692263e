//! PCRs: extend, read, and the allocated banks (TPM 2.0 Part 3 §22).

use protocol::tpm::HashAlg;
use protocol::tpm::pcr::PcrSelection;
use tss_esapi::constants::CapabilityType;
use tss_esapi::structures::{
    CapabilityData, Digest, DigestValues, PcrSelectionList, PcrSelectionListBuilder, PcrSlot,
};

use super::{Tpm, hashing_algorithm};
use crate::error::{Error, Result, TpmResultExt};

impl Tpm {
    /// TPM2_PCR_Extend of one PCR in every bank given.
    pub fn pcr_extend(&mut self, pcr: u8, digests: &[(HashAlg, Vec<u8>)]) -> Result<()> {
        let mut values = DigestValues::new();
        for (alg, digest) in digests {
            values.set(hashing_algorithm(*alg), Digest::try_from(digest.clone()).tpm("digest")?);
        }
        let handle = pcr_handle(pcr)?;
        self.with_password(|ctx| ctx.pcr_extend(handle, values)).tpm("TPM2_PCR_Extend")
    }

    /// TPM2_PCR_Read of the given PCRs of one bank, in ascending PCR order.
    pub fn pcr_read(&mut self, bank: HashAlg, pcrs: &[u8]) -> Result<Vec<(u8, Vec<u8>)>> {
        let mut sorted = pcrs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut out = Vec::with_capacity(sorted.len());
        // TPM2_PCR_Read answers at most 8 digests per call.
        for group in sorted.chunks(8) {
            let slots = group.iter().map(|p| pcr_slot(*p)).collect::<Result<Vec<_>>>()?;
            let selection = PcrSelectionListBuilder::new()
                .with_selection(hashing_algorithm(bank), &slots)
                .build()
                .tpm("PCR selection")?;
            let (_, _, digests) = self.ctx.pcr_read(selection).tpm("TPM2_PCR_Read")?;
            let values = digests.value();
            if values.len() != group.len() {
                return Err(Error::Structure(format!("{bank} bank lacks some of PCRs {group:?}")));
            }
            out.extend(group.iter().copied().zip(values.iter().map(|d| d.as_bytes().to_vec())));
        }
        Ok(out)
    }

    /// The banks that have PCRs allocated (TPM2_GetCapability(TPM_CAP_PCRS)).
    pub fn active_banks(&mut self) -> Result<Vec<HashAlg>> {
        let (caps, _) =
            self.ctx.get_capability(CapabilityType::AssignedPcr, 0, 8).tpm("TPM2_GetCapability")?;
        let CapabilityData::AssignedPcr(list) = caps else {
            return Err(Error::Structure("PCR capability of another type".into()));
        };
        Ok(list
            .get_selections()
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| HashAlg::from_id(s.hashing_algorithm().into()))
            .collect())
    }
}

fn pcr_slot(pcr: u8) -> Result<PcrSlot> {
    if pcr > 23 {
        return Err(Error::Structure(format!("PCR {pcr} is outside 0..=23")));
    }
    PcrSlot::try_from(1u32 << pcr).tpm("PCR slot")
}

fn pcr_handle(pcr: u8) -> Result<tss_esapi::handles::PcrHandle> {
    use tss_esapi::handles::PcrHandle;
    const HANDLES: [PcrHandle; 24] = [
        PcrHandle::Pcr0,
        PcrHandle::Pcr1,
        PcrHandle::Pcr2,
        PcrHandle::Pcr3,
        PcrHandle::Pcr4,
        PcrHandle::Pcr5,
        PcrHandle::Pcr6,
        PcrHandle::Pcr7,
        PcrHandle::Pcr8,
        PcrHandle::Pcr9,
        PcrHandle::Pcr10,
        PcrHandle::Pcr11,
        PcrHandle::Pcr12,
        PcrHandle::Pcr13,
        PcrHandle::Pcr14,
        PcrHandle::Pcr15,
        PcrHandle::Pcr16,
        PcrHandle::Pcr17,
        PcrHandle::Pcr18,
        PcrHandle::Pcr19,
        PcrHandle::Pcr20,
        PcrHandle::Pcr21,
        PcrHandle::Pcr22,
        PcrHandle::Pcr23,
    ];
    HANDLES
        .get(usize::from(pcr))
        .copied()
        .ok_or_else(|| Error::Structure(format!("PCR {pcr} is outside 0..=23")))
}

/// The tss-esapi form of a TPML_PCR_SELECTION.
pub(crate) fn selection_list(selection: &PcrSelection) -> Result<PcrSelectionList> {
    let mut builder = PcrSelectionListBuilder::new();
    for bank in selection.banks() {
        let slots = bank.pcrs().map(pcr_slot).collect::<Result<Vec<_>>>()?;
        builder = builder.with_selection(hashing_algorithm(bank.hash()), &slots);
    }
    builder.build().tpm("PCR selection")
}
