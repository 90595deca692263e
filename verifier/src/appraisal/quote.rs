//! The quote (TPM 2.0 Part 3 §18.4 TPM2_Quote; Part 2 §10.12.12 TPMS_ATTEST): signed by the
//! enrolled AK (never the AK the evidence names), made by the TPM itself (magic
//! TPM_GENERATED_VALUE: a restricted key signs data starting with it only in TPM2_Quote and
//! its siblings, never in TPM2_Sign), and of type TPM_ST_ATTEST_QUOTE (a certification
//! signed by the same AK is not a quote). The qualifying data is returned as the nonce the
//! freshness check looks up.

use protocol::Nonce;
use protocol::evidence::SignedAttest;
use protocol::tpm::attest::TPM_ST_ATTEST_QUOTE;
use protocol::tpm::{Attest, HashAlg, Public, Signature, Unmarshal};

use crate::error::{AppraisalError, Attestation};

/// A quote that passed the authenticity checks, its signature's hash (the hash of its PCR
/// digest) and its nonce.
pub(super) fn authenticate(
    signed: &SignedAttest,
    ak: &Public,
) -> Result<(Attest, HashAlg, Nonce), AppraisalError> {
    let malformed =
        |error| AppraisalError::AttestationMalformed { what: Attestation::Quote, error };
    let attest = Attest::from_bytes(&signed.attest).map_err(malformed)?;
    let signature = Signature::from_bytes(&signed.signature).map_err(malformed)?;
    signature.verify(ak, &signed.attest).map_err(AppraisalError::QuoteSignatureInvalid)?;
    if !attest.is_tpm_generated() {
        return Err(AppraisalError::NotTpmGenerated(Attestation::Quote));
    }
    if attest.tag() != TPM_ST_ATTEST_QUOTE || attest.quote().is_none() {
        return Err(AppraisalError::NotAQuote { tag: attest.tag() });
    }
    let extra = attest.extra_data.as_bytes();
    let nonce = Nonce::from_bytes(extra)
        .map_err(|_| AppraisalError::NonceMalformed { len: extra.len() })?;
    Ok((attest, signature.hash_alg(), nonce))
}
