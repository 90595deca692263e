//! `tpm2_checkquote` semantics (tpm2-tools 5.4, `tools/misc/tpm2_checkquote.c`) on tresor's
//! TPM codec: a quote as `tpm2_quote` writes it (TPMS_ATTEST, TPMT_SIGNATURE, the
//! serialized PCR file) checked against an AK public key, a nonce and a hash. Each check
//! fails with its own [`CheckQuoteError`]; `tresor pva check-quote` is a shell over
//! [`check_quote`].

use protocol::tpm::attest::TPM_ST_ATTEST_QUOTE;
use protocol::tpm::error::{SignatureError, WireError};
use protocol::tpm::tools::QuotePcrs;
use protocol::tpm::{Attest, ClockInfo, HashAlg, PcrSelection, Signature, Spki, Unmarshal};
use subtle::ConstantTimeEq;

/// Why a quote did not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckQuoteError {
    #[error("the message is not a TPMS_ATTEST: {0}")]
    MessageMalformed(WireError),
    #[error("the signature is not a TPMT_SIGNATURE: {0}")]
    SignatureMalformed(WireError),
    #[error("the PCR file is not a tpm2_quote PCR file: {0}")]
    PcrFileMalformed(WireError),
    #[error("the signature does not verify with the AK: {0}")]
    BadSignature(SignatureError),
    #[error("the TPM did not generate the message (magic is not TPM_GENERATED_VALUE)")]
    NotTpmGenerated,
    #[error("the message has type {0:#06x}, not TPM_ST_ATTEST_QUOTE")]
    NotAQuote(u16),
    #[error("the signature uses {got}, not {expected}")]
    HashMismatch { expected: HashAlg, got: HashAlg },
    #[error("the qualifying data is not the nonce")]
    NonceMismatch,
    #[error("the quote selects {quoted}, the PCR file {file}")]
    SelectionMismatch { quoted: String, file: String },
    #[error("the PCR file lacks values for its own selection: {0}")]
    PcrFileIncomplete(String),
    #[error("the PCR digest is not the digest of the PCR file's values")]
    PcrDigestMismatch,
}

/// A quote that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedQuote {
    pub selection: PcrSelection,
    pub clock: ClockInfo,
    pub firmware_version: u64,
}

/// Checks `msg`/`sig`/`pcrs` (the bytes of `tpm2_quote -m -s -o`) against `key`, the
/// qualifying data `nonce` and the PCR digest hash `hash`.
pub fn check_quote(
    key: &Spki,
    msg: &[u8],
    sig: &[u8],
    pcrs: &[u8],
    nonce: &[u8],
    hash: HashAlg,
) -> Result<CheckedQuote, CheckQuoteError> {
    let attest = Attest::from_bytes(msg).map_err(CheckQuoteError::MessageMalformed)?;
    let signature = Signature::from_bytes(sig).map_err(CheckQuoteError::SignatureMalformed)?;
    let pcrs = QuotePcrs::from_bytes(pcrs).map_err(CheckQuoteError::PcrFileMalformed)?;
    signature.verify_spki(key, msg).map_err(CheckQuoteError::BadSignature)?;
    if !attest.is_tpm_generated() {
        return Err(CheckQuoteError::NotTpmGenerated);
    }
    let Some(quote) = attest.quote().filter(|_| attest.tag() == TPM_ST_ATTEST_QUOTE) else {
        return Err(CheckQuoteError::NotAQuote(attest.tag()));
    };
    if signature.hash_alg() != hash {
        return Err(CheckQuoteError::HashMismatch { expected: hash, got: signature.hash_alg() });
    }
    let extra = attest.extra_data.as_bytes();
    if extra.len() != nonce.len() || !bool::from(extra.ct_eq(nonce)) {
        return Err(CheckQuoteError::NonceMismatch);
    }
    if quote.pcr_select != pcrs.selection {
        return Err(CheckQuoteError::SelectionMismatch {
            quoted: quote.pcr_select.to_string(),
            file: pcrs.selection.to_string(),
        });
    }
    let digest = pcrs
        .selection
        .pcr_digest(hash, &pcrs.values)
        .map_err(|e| CheckQuoteError::PcrFileIncomplete(e.to_string()))?;
    if digest != quote.pcr_digest {
        return Err(CheckQuoteError::PcrDigestMismatch);
    }
    Ok(CheckedQuote {
        selection: pcrs.selection,
        clock: attest.clock_info,
        firmware_version: attest.firmware_version,
    })
}
