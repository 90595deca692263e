//! The subscription bundle and the install receipt, selected by the first byte:
//! 0: `decrypt_bundle` as the device runs it: the next 32 bytes are the Z its TPM would
//!    return from TPM2_ECDH_ZGen, the rest is the COSE_Encrypt; what decrypts goes on to
//!    `verify_profile`, the EAR hash and the anti-rollback checks (as `open_bundle` does);
//! 1: `verify_profile` on a signed profile as received (COSE_Sign1, x5chain to the fixture
//!    CI root, signer MNO-B);
//! 2: the bytes are a profile payload, signed here with the fixture MNO-B key, so that the
//!    payload decoding and the checks after the signature see fuzzed profiles;
//! 3: `SignedReceipt::from_cbor` and `verify` against the fixture AK and receipt, and
//!    `Receipt::from_cbor`.
//! Device id, EAR hash and clock are the fixtures', so the lab seeds pass every binding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::bundle::{self, BundleError, decrypt_bundle, verify_profile};
use protocol::receipt::{Receipt, SignedReceipt};
use tresor_fuzz::{fixtures, raw, sign_es256};
use zeroize::Zeroizing;

const OPERATOR: &str = "mno-b";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let fx = fixtures();
    match selector % 4 {
        0 => {
            let Some((z, cose)) = body.split_first_chunk::<32>() else { return };
            let zgen =
                |_: &[u8; 32], _: &[u8; 32]| Ok::<_, BundleError>(Zeroizing::new(z.to_vec()));
            if let Ok(signed) = decrypt_bundle(cose, &fx.device_id, &fx.ear_hash, zgen) {
                profile(&signed);
            }
        }
        1 => profile(body),
        2 => profile(&sign_es256(raw::MNO_B_KEY, raw::MNO_B_CERT, body)),
        _ => {
            if let Ok(signed) = SignedReceipt::from_cbor(body) {
                let _ = signed.verify(&fx.ak_public, &fx.receipt);
                let encoded = signed.to_cbor().expect("decoded receipt encodes");
                assert_eq!(SignedReceipt::from_cbor(&encoded).expect("re-encoded decodes"), signed);
            }
            if let Ok(receipt) = Receipt::from_cbor(body) {
                let encoded = receipt.to_cbor().expect("decoded receipt encodes");
                assert_eq!(Receipt::from_cbor(&encoded).expect("re-encoded decodes"), receipt);
            }
        }
    }
});

fn profile(signed: &[u8]) {
    let fx = fixtures();
    let Ok(verified) = verify_profile(signed, &fx.ci_roots, fx.now, OPERATOR, &fx.device_id) else {
        return;
    };
    let _ = verified.check_ear_hash(&fx.ear_hash);
    let _ = bundle::check_sequence(verified.sequence(), 1);
}
