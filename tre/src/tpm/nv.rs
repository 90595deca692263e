//! NV storage: the EK certificate indices (TCG EK Credential Profile 2.x §2.2.1) and the
//! TRE's anti-rollback counter (a TPM_NT_COUNTER index, TPM 2.0 Part 1 §37.2.4).

use tss_esapi::abstraction::nv;
use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::handles::{NvIndexTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::structures::{MaxNvBuffer, NvPublicBuilder};

use super::{ROLLBACK_COUNTER_INDEX, Tpm};
use crate::error::{Error, Result, TpmResultExt};

impl Tpm {
    /// TPM2_NV_DefineSpace + TPM2_NV_Write of a platform-written, world-readable index, as
    /// TPM manufacturers provision EK certificates (EK Credential Profile §2.2.1.3).
    pub fn nv_write_platform(&mut self, index: u32, data: &[u8]) -> Result<()> {
        let handle = NvIndexTpmHandle::new(index).tpm("NV index")?;
        let attributes = NvIndexAttributesBuilder::new()
            .with_pp_write(true)
            .with_pp_read(true)
            .with_owner_read(true)
            .with_auth_read(true)
            .with_no_da(true)
            .with_platform_create(true)
            .build()
            .tpm("NV attributes")?;
        let public = NvPublicBuilder::new()
            .with_nv_index(handle)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(attributes)
            .with_data_area_size(data.len())
            .build()
            .tpm("NV public")?;
        let chunk = nv::max_nv_buffer_size(&mut self.ctx).tpm("TPM2_GetCapability")?;
        let nv_handle = self
            .with_password(|ctx| ctx.nv_define_space(Provision::Platform, None, public))
            .tpm("TPM2_NV_DefineSpace")?;
        for (i, part) in data.chunks(chunk.max(1)).enumerate() {
            let buffer = MaxNvBuffer::try_from(part.to_vec()).tpm("NV buffer")?;
            let offset = u16::try_from(i * chunk)
                .map_err(|_| Error::Structure("NV data larger than 64 KiB".into()))?;
            self.with_password(|ctx| ctx.nv_write(NvAuth::Platform, nv_handle, buffer, offset))
                .tpm("TPM2_NV_Write")?;
        }
        self.close_nv(nv_handle.into())
    }

    /// TPM2_NV_Read of a whole index with owner authorization; `None` if undefined.
    pub fn nv_read(&mut self, index: u32) -> Result<Option<Vec<u8>>> {
        let handle = NvIndexTpmHandle::new(index).tpm("NV index")?;
        if !self.handle_exists(index)? {
            return Ok(None);
        }
        self.with_password(|ctx| nv::read_full(ctx, NvAuth::Owner, handle))
            .map(Some)
            .tpm("TPM2_NV_Read")
    }

    /// TPM2_NV_DefineSpace of the anti-rollback counter (TPM_NT_COUNTER, owner-written)
    /// and a first TPM2_NV_Increment: a counter index reads only once incremented, and
    /// starts at the highest value any counter of this TPM ever had (Part 1 §37.2.4), so it
    /// never restarts from zero even if it is undefined and defined again.
    pub fn define_rollback_counter(&mut self) -> Result<u64> {
        let handle = NvIndexTpmHandle::new(ROLLBACK_COUNTER_INDEX).tpm("NV index")?;
        let attributes = NvIndexAttributesBuilder::new()
            .with_nv_index_type(tss_esapi::constants::NvIndexType::Counter)
            .with_owner_write(true)
            .with_owner_read(true)
            .with_auth_read(true)
            .with_no_da(true)
            .build()
            .tpm("NV attributes")?;
        let public = NvPublicBuilder::new()
            .with_nv_index(handle)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(attributes)
            .with_data_area_size(8)
            .build()
            .tpm("NV public")?;
        let nv_handle = self
            .with_password(|ctx| {
                let handle = ctx.nv_define_space(Provision::Owner, None, public)?;
                ctx.nv_increment(NvAuth::Owner, handle)?;
                Ok(handle)
            })
            .tpm("TPM2_NV_DefineSpace")?;
        self.close_nv(nv_handle.into())?;
        self.rollback_counter()
    }

    /// TPM2_NV_Read of the anti-rollback counter.
    pub fn rollback_counter(&mut self) -> Result<u64> {
        let data = self
            .nv_read(ROLLBACK_COUNTER_INDEX)?
            .ok_or(Error::Structure("the anti-rollback counter is not defined".into()))?;
        let bytes: [u8; 8] = data
            .as_slice()
            .try_into()
            .map_err(|_| Error::Structure("the anti-rollback counter is not 8 bytes".into()))?;
        Ok(u64::from_be_bytes(bytes))
    }

    /// TPM2_NV_Increment of the anti-rollback counter; returns the new value.
    pub fn increment_rollback_counter(&mut self) -> Result<u64> {
        let handle = NvIndexTpmHandle::new(ROLLBACK_COUNTER_INDEX).tpm("NV index")?;
        let object =
            self.ctx.tr_from_tpm_public(TpmHandle::NvIndex(handle)).tpm("TPM2_NV_ReadPublic")?;
        let result = self
            .with_password(|ctx| ctx.nv_increment(NvAuth::Owner, object.into()))
            .tpm("TPM2_NV_Increment");
        self.close_nv(object)?;
        result?;
        self.rollback_counter()
    }
}
