//! The error type of the device side: one variant per thing a caller can act on.

use crate::swtpm::SwtpmError;

/// Everything that can go wrong on the device.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Swtpm(#[from] SwtpmError),
    #[error("cannot reach the TPM at {tcti}: {source}")]
    Connect { tcti: String, source: tss_esapi::Error },
    #[error("{command} failed: {source}")]
    Tpm { command: &'static str, source: tss_esapi::Error },
    #[error("the TPM is already manufactured: NV index {index:#010x} holds an EK certificate")]
    AlreadyManufactured { index: u32 },
    #[error("no EK certificate in NV index {index:#010x}")]
    NoEkCertificate { index: u32 },
    #[error("EK certificate: {0}")]
    EkCertificate(String),
    #[error("manufacturer CA: {0}")]
    ManufacturerCa(String),
    #[error("device image: {0}")]
    Image(String),
    #[error("TPM structure: {0}")]
    Structure(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("configuration {0}")]
    Config(String),
    #[error("talking to the RO: {0}")]
    Network(String),
    #[error("device API: {0}")]
    Protocol(String),
    #[error("bundle refused: {0}")]
    Bundle(String),
    #[error("bundle refused: attestation result: {0}")]
    Ear(#[from] protocol::ear::EarError),
    #[error("UICC: {0}")]
    Uicc(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Names the TPM command a tss-esapi error came from.
pub(crate) trait TpmResultExt<T> {
    fn tpm(self, command: &'static str) -> Result<T>;
}

impl<T> TpmResultExt<T> for std::result::Result<T, tss_esapi::Error> {
    fn tpm(self, command: &'static str) -> Result<T> {
        self.map_err(|source| Error::Tpm { command, source })
    }
}
