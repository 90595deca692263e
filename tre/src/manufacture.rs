//! Manufacturing, as the M2M equipment supplier (M2MES, TR 33.812 §5.1) does it on a fresh
//! TPM: create the EK from the TCG default template and make it persistent, certify it
//! under the TPM manufacturer CA (TCG EK Credential Profile 2.x §3, with the TPM's
//! specification in subjectDirectoryAttributes, §3.2.11), write the certificate into the
//! TCG NV index, and define the TRE's anti-rollback counter.
//!
//! Reading the certificate back works the same for certificates that `swtpm_setup
//! --create-ek-cert` (swtpm-localca) wrote, so ordinary swtpm setups can be enrolled too.

use std::time::SystemTime;

use protocol::DeviceId;
use protocol::ekcert::{EkCertificate, TpmInfo, verify_ek_certificate};
use protocol::tpm::{Public, Unmarshal};
use protocol::x509::TrustAnchors;

use crate::ekcert::{EkCertRequest, ManufacturerCa};
use crate::error::{Error, Result};
use crate::tpm::{KeyAlg, Tpm};

/// How to manufacture a device.
#[derive(Debug, Clone)]
pub struct ManufactureOptions {
    pub ek_alg: KeyAlg,
    /// tcg-at-tpmModel in the EK certificate; the TPM's vendor string if `None`.
    pub model: Option<String>,
    /// notAfter of the EK certificate; `None` for "no well-defined expiration" as TPM
    /// vendors do (RFC 5280 §4.1.2.5).
    pub not_after: Option<SystemTime>,
}

impl Default for ManufactureOptions {
    fn default() -> Self {
        Self { ek_alg: KeyAlg::Ecc, model: None, not_after: None }
    }
}

/// What manufacturing produced.
#[derive(Debug, Clone)]
pub struct Manufactured {
    /// The EK's TPM name.
    pub device_id: DeviceId,
    pub ek_alg: KeyAlg,
    /// The EK's marshalled TPMT_PUBLIC.
    pub ek_public: Vec<u8>,
    /// The EK certificate, DER, as written to NV.
    pub ek_certificate: Vec<u8>,
    /// The anti-rollback counter's first value.
    pub rollback_counter: u64,
}

/// Manufactures the TPM behind `tpm`. Refuses a TPM that already carries an EK
/// certificate in the index for `options.ek_alg`: a TPM is manufactured once.
pub fn manufacture(
    tpm: &mut Tpm,
    ca: &ManufacturerCa,
    options: &ManufactureOptions,
) -> Result<Manufactured> {
    let alg = options.ek_alg;
    if tpm.nv_read(alg.ek_certificate_index())?.is_some() {
        return Err(Error::AlreadyManufactured { index: alg.ek_certificate_index() });
    }
    let ek = tpm.create_ek(alg)?;
    let ek = tpm.persist(ek, alg.ek_handle())?;
    let ek_public = ek.public_bytes()?;
    let device_id = DeviceId::from_name(&ek.name).map_err(|e| Error::Structure(e.to_string()))?;
    let spki = Public::from_bytes(&ek_public)
        .map_err(|e| Error::Structure(format!("EK public area: {e}")))?
        .to_spki_der()
        .map_err(|e| Error::Structure(format!("EK public key: {e}")))?;

    let info = tpm.info()?;
    // The TPM's own TPM_PT_FAMILY_INDICATOR, _LEVEL and _REVISION: swtpm's libtpms reports
    // family "2.0", level 0 and the revision of the specification it implements.
    let specification = tpm.specification()?;
    let tpm_info = TpmInfo {
        manufacturer: format!("id:{:08X}", info.manufacturer),
        model: options.model.clone().unwrap_or_else(|| model_of(&info.vendor)),
        version: format!("id:{:X}", info.firmware_version),
    };
    let ek_certificate = ca.issue(&EkCertRequest {
        ek_public_spki: &spki,
        tpm: &tpm_info,
        specification: Some(&specification),
        not_before: SystemTime::now(),
        not_after: options.not_after,
    })?;
    tpm.nv_write_platform(alg.ek_certificate_index(), &ek_certificate)?;
    let rollback_counter = tpm.define_rollback_counter()?;
    Ok(Manufactured { device_id, ek_alg: alg, ek_public, ek_certificate, rollback_counter })
}

/// The EK certificate from its TCG NV index.
pub fn read_ek_certificate(tpm: &mut Tpm, alg: KeyAlg) -> Result<Vec<u8>> {
    let index = alg.ek_certificate_index();
    let data = tpm.nv_read(index)?.ok_or(Error::NoEkCertificate { index })?;
    Ok(trim_der(data))
}

/// Reads the EK certificate back and verifies it: chain (through `intermediates`, DER) to
/// one of `manufacturer_roots`, validity at `at`, the TCG profile, and that it certifies
/// this TPM's EK.
pub fn verify_ek(
    tpm: &mut Tpm,
    alg: KeyAlg,
    intermediates: &[Vec<u8>],
    manufacturer_roots: &TrustAnchors,
    at: SystemTime,
) -> Result<EkCertificate> {
    let certificate = read_ek_certificate(tpm, alg)?;
    let ek = tpm.ek(alg)?;
    let public = ek.public_bytes();
    tpm.release(ek)?;
    let spki = Public::from_bytes(&public?)
        .map_err(|e| Error::Structure(format!("EK public area: {e}")))?
        .to_spki_der()
        .map_err(|e| Error::Structure(format!("EK public key: {e}")))?;
    let intermediates: Vec<&[u8]> = intermediates.iter().map(Vec::as_slice).collect();
    verify_ek_certificate(&certificate, &intermediates, manufacturer_roots, &spki, at)
        .map_err(|e| Error::EkCertificate(e.to_string()))
}

/// NV indices are fixed-size and some provisioning tools pad them: keep the DER SEQUENCE
/// and drop what follows it (the certificate's own length says where it ends).
fn trim_der(mut data: Vec<u8>) -> Vec<u8> {
    let len = match data.as_slice() {
        [0x30, 0x82, hi, lo, ..] => Some(4 + (usize::from(*hi) << 8 | usize::from(*lo))),
        [0x30, 0x81, n, ..] => Some(3 + usize::from(*n)),
        _ => None,
    };
    if let Some(len) = len.filter(|l| *l <= data.len()) {
        data.truncate(len);
    }
    data
}

/// A readable model name from the TPM's vendor string (swtpm: "SW   TPM").
fn model_of(vendor: &str) -> String {
    let model = vendor.split_whitespace().collect::<Vec<_>>().join(" ");
    if model.is_empty() { "TPM 2.0".to_owned() } else { model }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_padding_is_trimmed() {
        let mut der = vec![0x30, 0x82, 0x00, 0x02, 0xAA, 0xBB];
        der.extend([0xFF; 10]);
        assert_eq!(trim_der(der), vec![0x30, 0x82, 0x00, 0x02, 0xAA, 0xBB]);
        assert_eq!(trim_der(vec![0x30, 0x81, 0x01, 0x00, 0xFF]), vec![0x30, 0x81, 0x01, 0x00]);
        // not DER at all: left alone for the parser to reject
        assert_eq!(trim_der(vec![1, 2, 3]), vec![1, 2, 3]);
        assert_eq!(trim_der(vec![0x30, 0x82, 0xFF]), vec![0x30, 0x82, 0xFF]);
    }

    #[test]
    fn model_from_vendor_string() {
        assert_eq!(model_of("SW   TPM"), "SW TPM");
        assert_eq!(model_of(""), "TPM 2.0");
    }
}
