//! Evidence as the PVA receives it (`POST /v1/appraise`): `Evidence::from_cbor`, then every
//! structure inside it with the parser the appraisal uses: TPMS_ATTEST (quote and certify),
//! TPMT_SIGNATURE, TPMT_PUBLIC (AK and bundle key), the event log (parsed and replayed) and
//! the EK certificate's profile. Decoded evidence must re-encode to evidence that decodes
//! to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::ekcert::parse_ek_certificate;
use protocol::eventlog::EventLog;
use protocol::evidence::Evidence;
use protocol::tpm::{Attest, Public, Signature, Unmarshal};

fuzz_target!(|data: &[u8]| {
    let Ok(evidence) = Evidence::from_cbor(data) else { return };
    let _ = Attest::from_bytes(&evidence.quote.attest);
    let _ = Signature::from_bytes(&evidence.quote.signature);
    if let Some(bundle_key) = &evidence.bundle_key {
        let _ = Attest::from_bytes(&bundle_key.certify.attest);
        let _ = Signature::from_bytes(&bundle_key.certify.signature);
        if let Ok(key) = Public::from_bytes(&bundle_key.public) {
            let _ = key.name();
        }
    }
    let _ = Public::from_bytes(&evidence.ak_public);
    if let Ok(log) = EventLog::parse(&evidence.event_log) {
        let _ = log.replay();
    }
    let _ = parse_ek_certificate(&evidence.ek_certificate);

    let encoded = evidence.to_cbor().expect("decoded evidence encodes");
    let again = Evidence::from_cbor(&encoded).expect("re-encoded evidence decodes");
    assert_eq!(again, evidence);
});
