//! Attestation results (EAR, COSE_Sign1 over CWT claims) as MNO-B, the DPF and the device
//! verify them, selected by the first byte:
//! 0: `EarVerifier::verify` on the bytes as received (COSE, x5chain to the fixture CI root,
//!    signer role, signature, then the claims);
//! 1: the bytes are a claims set, signed here with the fixture PVA key, so the checks after
//!    the signature (claims decoding, expiry, device, status) see fuzzed claims;
//! 2: `EarClaims::from_cbor` alone.
//! The clock is fixed (`fixtures/now.txt`), so results do not depend on when it runs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::ear::{EarClaims, EarVerifier};
use tresor_fuzz::{fixtures, raw, sign_es256};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let fx = fixtures();
    let verifier = EarVerifier::new(fx.ci_roots.clone());
    match selector % 3 {
        0 => verify(&verifier, body),
        1 => verify(&verifier, &sign_es256(raw::PVA_KEY, raw::PVA_CERT, body)),
        _ => {
            if let Ok(claims) = EarClaims::from_cbor(body) {
                let encoded = claims.to_cbor().expect("decoded claims encode");
                assert_eq!(
                    EarClaims::from_cbor(&encoded).expect("re-encoded claims decode"),
                    claims
                );
            }
        }
    }
});

fn verify(verifier: &EarVerifier, ear: &[u8]) {
    let fx = fixtures();
    if let Ok(verified) = verifier.verify(ear, fx.now, &fx.device_id, None) {
        let _ = verified.bundle_key();
        let _ = (verified.status(), verified.nonce(), verified.rollback_counter());
    }
    // Tools that report why an appraisal failed accept any status: same parser, more paths.
    let _ = verifier.clone().accept_any_status().verify(ear, fx.now, &fx.device_id, None);
}
