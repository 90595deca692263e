//! TPM 2.0 structures (Part 2) and the tpm2-tools file formats, selected by the first byte:
//! 0 TPMS_ATTEST, 1 TPM2B_ATTEST, 2 TPMT_PUBLIC, 3 TPM2B_PUBLIC, 4 TPMT_SIGNATURE,
//! 5 TPML_PCR_SELECTION, 6 tpm2-tools `quote.pcrs`, 7 tpm2-tools credential blob.
//! Whatever parses must marshal back to exactly the bytes it came from: signatures and TPM
//! names are computed over re-marshalled structures, so two encodings of one value would be
//! two names for one key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::tpm::tools::QuotePcrs;
use protocol::tpm::{Attest, MadeCredential, Marshal, PcrSelection, Public, Signature, Unmarshal};

fn canonical<T: Unmarshal + Marshal + PartialEq + std::fmt::Debug>(body: &[u8]) -> Option<T> {
    let value = T::from_bytes(body).ok()?;
    assert_eq!(value.to_bytes(), body, "{} must re-marshal to its input", T::NAME);
    assert_eq!(T::from_bytes(&value.to_bytes()).ok().as_ref(), Some(&value));
    Some(value)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    match selector % 8 {
        0 => {
            if let Some(attest) = canonical::<Attest>(body) {
                let _ = (attest.is_tpm_generated(), attest.quote(), attest.certify());
            }
        }
        1 => {
            let _ = Attest::from_tpm2b(body);
        }
        2 => {
            if let Some(public) = canonical::<Public>(body) {
                let _ = public.name();
                let _ = public.to_tpm2b();
            }
        }
        3 => {
            if let Ok(public) = Public::from_tpm2b(body) {
                assert_eq!(public.to_tpm2b(), body, "TPM2B_PUBLIC must re-marshal to its input");
            }
        }
        4 => {
            if let Some(sig) = canonical::<Signature>(body) {
                let _ = (sig.hash_alg(), sig.scheme_name());
            }
        }
        5 => {
            if let Some(sel) = canonical::<PcrSelection>(body) {
                let _ = (sel.count(), sel.iter().count());
            }
        }
        6 => {
            if let Ok(pcrs) = QuotePcrs::from_bytes(body) {
                let bytes = pcrs.to_bytes().expect("a parsed quote.pcrs writes");
                assert_eq!(QuotePcrs::from_bytes(&bytes).expect("written quote.pcrs parses"), pcrs);
            }
        }
        _ => {
            if let Ok(made) = MadeCredential::from_tpm2_tools(body) {
                assert_eq!(
                    made.to_tpm2_tools(),
                    body,
                    "credential blob must re-write to its input"
                );
            }
        }
    }
});
