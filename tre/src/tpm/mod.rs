//! The TPM, wrapped once: methods named after the TPM 2.0 commands they run (Part 3), each
//! flushing the transient objects it loads so that a TPM without a resource manager
//! (swtpm reached directly) never runs out of object slots.
//!
//! Handles follow the TCG "TPM v2.0 Provisioning Guidance" and "EK Credential Profile":
//! EKs persist at 0x81010001 (RSA) and 0x81010002 (ECC); EK certificates live in the NV
//! indices 0x01C00002 (RSA 2048) and 0x01C0000A (ECC P-256). tresor's own objects use the
//! owner ranges.

use std::fmt;
use std::str::FromStr;

use protocol::tpm::HashAlg;
use serde::{Deserialize, Serialize};
use tss_esapi::abstraction::AsymmetricAlgorithmSelection;
use tss_esapi::constants::{CapabilityType, PropertyTag};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Provision;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{CapabilityData, Public};
use tss_esapi::traits::Marshall;
use tss_esapi::{Context, TctiNameConf};

mod attest;
mod bundle_key;
mod ek;
mod nv;
mod pcr;

pub use attest::{AK_HANDLE, SignedAttest};
pub use bundle_key::BUNDLE_KEY_HANDLE;
pub(crate) use pcr::selection_list;

use crate::error::{Error, Result, TpmResultExt};

/// NV index of the TRE's anti-rollback counter (TPM_NT_COUNTER, owner range).
pub const ROLLBACK_COUNTER_INDEX: u32 = 0x0100_5452;

/// The key algorithms tresor creates EKs and AKs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlg {
    /// NIST P-256, the default: small, fast, and what TCG's "EK template L-2" describes.
    #[default]
    Ecc,
    /// RSA 2048, as most deployed TPMs carry ("EK template L-1").
    Rsa,
}

impl KeyAlg {
    /// NV index of the EK certificate (TCG EK Credential Profile 2.x §2.2.1.4).
    pub const fn ek_certificate_index(self) -> u32 {
        match self {
            KeyAlg::Rsa => 0x01C0_0002,
            KeyAlg::Ecc => 0x01C0_000A,
        }
    }

    /// Persistent handle of the EK (TCG Provisioning Guidance §7.8).
    pub const fn ek_handle(self) -> u32 {
        match self {
            KeyAlg::Rsa => 0x8101_0001,
            KeyAlg::Ecc => 0x8101_0002,
        }
    }

    /// The TCG default EK template's algorithm: RSA 2048 (L-1) or ECC NIST P-256 (L-2).
    fn ek_template(self) -> AsymmetricAlgorithmSelection {
        match self {
            KeyAlg::Rsa => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            KeyAlg::Ecc => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
        }
    }
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlg::Ecc => "ecc",
            KeyAlg::Rsa => "rsa",
        })
    }
}

impl FromStr for KeyAlg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ecc" | "ecc256" | "p256" => Ok(KeyAlg::Ecc),
            "rsa" | "rsa2048" => Ok(KeyAlg::Rsa),
            _ => Err(format!("unknown key algorithm {s:?} (expected ecc or rsa)")),
        }
    }
}

/// A key the TPM has loaded, with its public area as the TPM reports it.
#[derive(Debug)]
pub struct Key {
    pub handle: KeyHandle,
    pub public: Public,
    /// TPM name: nameAlg ‖ H(TPMT_PUBLIC).
    pub name: Vec<u8>,
    /// A transient object must be flushed with [`Tpm::release`]; a persistent one stays.
    pub transient: bool,
}

impl Key {
    /// The marshalled TPMT_PUBLIC, as it travels in evidence.
    pub fn public_bytes(&self) -> Result<Vec<u8>> {
        self.public.marshall().map_err(|e| Error::Structure(e.to_string()))
    }
}

/// Identification the TPM reports about itself (TPM 2.0 Part 2 §6.13, TPM_PT_*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmInfo {
    /// TPM_PT_MANUFACTURER, the 4-byte vendor id (e.g. "IBM" for swtpm's libtpms).
    pub manufacturer: u32,
    /// TPM_PT_VENDOR_STRING_1..4 concatenated and trimmed.
    pub vendor: String,
    /// TPM_PT_FIRMWARE_VERSION_1 ‖ _2.
    pub firmware_version: u64,
}

/// A connection to one TPM.
pub struct Tpm {
    ctx: Context,
}

impl fmt::Debug for Tpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tpm")
    }
}

impl Tpm {
    /// Connects through a tpm2-tss TCTI, e.g. `swtpm:path=/run/tpm/tpm.sock` (tpm2-tss 3.2)
    /// or `swtpm:host=127.0.0.1,port=2321`.
    pub fn connect(tcti: &str) -> Result<Self> {
        let conf = TctiNameConf::from_str(tcti)
            .map_err(|source| Error::Connect { tcti: tcti.to_owned(), source })?;
        let ctx = Context::new(conf)
            .map_err(|source| Error::Connect { tcti: tcti.to_owned(), source })?;
        Ok(Self { ctx })
    }

    /// Runs `f` with a password session: hierarchies, NV indices and PCRs here carry empty
    /// passwords, and a password session costs no round trip, unlike an HMAC session.
    /// Commands without authorized handles must run without it (TPM_RC_VALUE otherwise).
    fn with_password<T>(
        &mut self,
        f: impl FnOnce(&mut Context) -> tss_esapi::Result<T>,
    ) -> tss_esapi::Result<T> {
        self.ctx.execute_with_session(Some(AuthSession::Password), f)
    }

    /// TPM2_GetCapability(TPM_PROPERTIES): manufacturer, vendor string, firmware version.
    pub fn info(&mut self) -> Result<TpmInfo> {
        let (caps, _) = self
            .ctx
            .get_capability(CapabilityType::TpmProperties, PropertyTag::Manufacturer.into(), 32)
            .tpm("TPM2_GetCapability")?;
        let CapabilityData::TpmProperties(props) = caps else {
            return Err(Error::Structure("TPM properties capability of another type".into()));
        };
        let get = |tag: PropertyTag| props.find(tag).map(|p| p.value()).unwrap_or(0);
        let mut vendor = Vec::new();
        for tag in [
            PropertyTag::VendorString1,
            PropertyTag::VendorString2,
            PropertyTag::VendorString3,
            PropertyTag::VendorString4,
        ] {
            vendor.extend_from_slice(&get(tag).to_be_bytes());
        }
        let vendor = String::from_utf8_lossy(&vendor).trim_matches(char::from(0)).trim().to_owned();
        Ok(TpmInfo {
            manufacturer: get(PropertyTag::Manufacturer),
            vendor,
            firmware_version: (u64::from(get(PropertyTag::FirmwareVersion1)) << 32)
                | u64::from(get(PropertyTag::FirmwareVersion2)),
        })
    }

    /// TPM2_GetCapability(TPM_PROPERTIES) from TPM_PT_FAMILY_INDICATOR: the specification the
    /// TPM implements (TPM 2.0 Part 2 §6.13: the family as four characters, "2.0\0", the
    /// level, and the revision times 100), as an EK certificate's TPMSpecification states it
    /// (TCG EK Credential Profile 2.x §3.2.11).
    pub fn specification(&mut self) -> Result<protocol::ekcert::TpmSpecification> {
        let (caps, _) = self
            .ctx
            .get_capability(CapabilityType::TpmProperties, PropertyTag::FamilyIndicator.into(), 3)
            .tpm("TPM2_GetCapability")?;
        let CapabilityData::TpmProperties(props) = caps else {
            return Err(Error::Structure("TPM properties capability of another type".into()));
        };
        let get = |tag: PropertyTag| {
            props
                .find(tag)
                .map(|p| p.value())
                .ok_or_else(|| Error::Structure(format!("the TPM does not report {tag:?}")))
        };
        let family = get(PropertyTag::FamilyIndicator)?.to_be_bytes();
        let family = String::from_utf8_lossy(&family).trim_matches(char::from(0)).to_owned();
        if family.is_empty() || !family.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Error::Structure(format!("TPM family {family:?} is not printable")));
        }
        Ok(protocol::ekcert::TpmSpecification {
            family,
            level: get(PropertyTag::Level)?,
            revision: get(PropertyTag::Revision)?,
        })
    }

    /// The key at a persistent handle, if one is there.
    pub fn persistent_key(&mut self, handle: u32) -> Result<Option<Key>> {
        let tpm_handle = PersistentTpmHandle::new(handle).tpm("persistent handle")?;
        // Asking first keeps the TSS from logging an error for the common "not there yet".
        if !self.handle_exists(handle)? {
            return Ok(None);
        }
        let object = self
            .ctx
            .tr_from_tpm_public(TpmHandle::Persistent(tpm_handle))
            .tpm("TPM2_ReadPublic")?;
        Ok(Some(self.key(KeyHandle::from(object), false)?))
    }

    /// TPM2_GetCapability(TPM_CAP_HANDLES): whether a persistent object or NV index exists.
    fn handle_exists(&mut self, handle: u32) -> Result<bool> {
        let (caps, _) = self
            .ctx
            .get_capability(CapabilityType::Handles, handle, 1)
            .tpm("TPM2_GetCapability")?;
        let CapabilityData::Handles(list) = caps else {
            return Err(Error::Structure("handle capability of another type".into()));
        };
        Ok(list.iter().any(|h| u32::from(*h) == handle))
    }

    /// TPM2_EvictControl: makes a transient key persistent at `handle` (owner
    /// authorization) and flushes the transient copy.
    pub fn persist(&mut self, key: Key, handle: u32) -> Result<Key> {
        let persistent = PersistentTpmHandle::new(handle).tpm("persistent handle")?;
        let object = self
            .with_password(|ctx| {
                ctx.evict_control(
                    Provision::Owner,
                    key.handle.into(),
                    Persistent::Persistent(persistent),
                )
            })
            .tpm("TPM2_EvictControl")?;
        self.release(key)?;
        self.key(KeyHandle::from(object), false)
    }

    /// TPM2_EvictControl on the persistent key at `handle`, if any: removes it from NV.
    pub fn evict(&mut self, handle: u32) -> Result<()> {
        let Some(key) = self.persistent_key(handle)? else { return Ok(()) };
        let persistent = PersistentTpmHandle::new(handle).tpm("persistent handle")?;
        self.with_password(|ctx| {
            ctx.evict_control(
                Provision::Owner,
                key.handle.into(),
                Persistent::Persistent(persistent),
            )
        })
        .tpm("TPM2_EvictControl")?;
        Ok(())
    }

    /// TPM2_FlushContext for a transient key; a no-op for a persistent one.
    pub fn release(&mut self, key: Key) -> Result<()> {
        if key.transient {
            self.ctx.flush_context(ObjectHandle::from(key.handle)).tpm("TPM2_FlushContext")?;
        }
        Ok(())
    }

    /// TPM2_ReadPublic wrapped in a [`Key`].
    pub(crate) fn key(&mut self, handle: KeyHandle, transient: bool) -> Result<Key> {
        let (public, name, _) = self.ctx.read_public(handle).tpm("TPM2_ReadPublic")?;
        Ok(Key { handle, public, name: name.value().to_vec(), transient })
    }

    fn close_nv(&mut self, mut object: ObjectHandle) -> Result<()> {
        self.ctx.tr_close(&mut object).tpm("Esys_TR_Close")
    }
}

pub(crate) fn hashing_algorithm(alg: HashAlg) -> HashingAlgorithm {
    match alg {
        HashAlg::Sha1 => HashingAlgorithm::Sha1,
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
        HashAlg::Sm3_256 => HashingAlgorithm::Sm3_256,
    }
}
