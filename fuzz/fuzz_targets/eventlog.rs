//! TCG PC Client event logs (PFP 1.05 §10.2.1 crypto-agile, §10.2.2 SHA-1) as the PVA
//! reads them from evidence: `EventLog::parse`, then `replay` to PCR values. A log that
//! parses must write back byte for byte and re-parse to the same log.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::eventlog::EventLog;

fuzz_target!(|data: &[u8]| {
    let Ok(log) = EventLog::parse(data) else { return };
    let _ = log.replay();
    let bytes = log.to_bytes();
    assert_eq!(bytes, data, "a parsed log must write back byte for byte");
    let again = EventLog::parse(&bytes).expect("the writer's output parses");
    assert_eq!(again, log);
});
