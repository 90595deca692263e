//! EK certificates as the PVA meets them at enrolment, selected by the first byte:
//! 0: the bytes are one certificate: `parse_ek_certificate` (TCG EK profile), then
//!    `verify_chain` and `verify_ek_certificate` to the fixture manufacturer root with the
//!    certificate's own key as the expected EK;
//! 1: the bytes are vpcd-style frames (2-byte length, DER): leaf, then intermediates, for
//!    `verify_chain`'s path building.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::ekcert::{parse_ek_certificate, verify_ek_certificate};
use protocol::x509::{ChainPolicy, EXT_SUBJECT_ALT_NAME, verify_chain};
use tresor_fuzz::{fixtures, frames};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let fx = fixtures();
    let policy = ChainPolicy::at(fx.now).handle_critical(EXT_SUBJECT_ALT_NAME);
    match selector % 2 {
        0 => {
            let parsed = parse_ek_certificate(body);
            let _ = verify_chain(body, &[], &fx.manufacturer_roots, &policy);
            if let Ok(ek) = parsed {
                let _ = ek.tpm.check();
                let _ = ek.tpm.manufacturer_id();
                let _ =
                    verify_ek_certificate(body, &[], &fx.manufacturer_roots, &ek.spki_der, fx.now);
            }
        }
        _ => {
            let mut certs = frames(body);
            let Some(leaf) = certs.next() else { return };
            let intermediates: Vec<&[u8]> = certs.collect();
            let _ = verify_chain(leaf, &intermediates, &fx.manufacturer_roots, &policy);
            let _ =
                verify_ek_certificate(leaf, &intermediates, &fx.manufacturer_roots, &[], fx.now);
        }
    }
});
