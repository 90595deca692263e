//! Fuzz-style properties of the event-log codec: random and mutated input never panics,
//! anything that parses writes back byte for byte, and written logs parse back to the same
//! events and PCR values.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use proptest::prelude::*;
use protocol::eventlog::{BankDigest, EventLog, EventType, Measurement};
use protocol::tpm::HashAlg;

/// Every log of `testdata/eventlogs`, the other projects' ones in its subdirectories too.
fn real_logs() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/eventlogs");
    let entries = |d: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).collect()
    };
    let mut names: Vec<_> = entries(&dir)
        .into_iter()
        .flat_map(|p| if p.is_dir() { entries(&p) } else { vec![p] })
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    names.sort();
    names.into_iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Parsing must not panic; what parses must replay without panicking and write back to
/// exactly the input.
fn check(bytes: &[u8]) {
    if let Ok(log) = EventLog::parse(bytes) {
        let _ = log.replay();
        assert_eq!(log.to_bytes(), bytes);
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, value: u8 },
    SetU32 { at: usize, value: u32 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        (
            any::<usize>(),
            prop_oneof![Just(0u32), Just(1), Just(u32::MAX), Just(0x8000_0000), any::<u32>()]
        )
            .prop_map(|(at, value)| Mutation::SetU32 { at, value }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match m {
        Mutation::Flip { at, bit } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Set { at, value } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b = *value;
            }
        }
        Mutation::SetU32 { at, value } => {
            let at = at % n;
            for (i, v) in value.to_le_bytes().into_iter().enumerate() {
                if let Some(b) = bytes.get_mut(at + i) {
                    *b = v;
                }
            }
        }
        Mutation::Insert { at, bytes: extra } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, extra.iter().copied());
        }
        Mutation::Delete { at, len } => {
            let at = at % n;
            let end = (at + len).min(bytes.len());
            if at < end {
                bytes.drain(at..end);
            }
        }
        Mutation::Truncate { at } => bytes.truncate(at % n),
    }
}

fn measurement(banks: Vec<HashAlg>) -> impl Strategy<Value = Measurement> {
    (0u32..24, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64), any::<u64>()).prop_map(
        move |(pcr, event_type, data, seed)| Measurement {
            pcr,
            event_type: EventType(event_type),
            digests: banks
                .iter()
                .map(|&alg| BankDigest { alg, value: alg.digest(&seed.to_le_bytes()) })
                .collect(),
            data,
        },
    )
}

fn banks_and_measurements() -> impl Strategy<Value = (Vec<HashAlg>, Vec<Measurement>)> {
    proptest::sample::subsequence(HashAlg::KNOWN.to_vec(), 1..=5).prop_shuffle().prop_flat_map(
        |banks| {
            let m = proptest::collection::vec(measurement(banks.clone()), 0..24);
            (Just(banks), m)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    /// Random records behind a valid header, so the record parser is reached.
    #[test]
    fn random_records_after_a_header_never_panic(
        banks in proptest::sample::subsequence(HashAlg::KNOWN.to_vec(), 1..=5),
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = EventLog::new(&banks).unwrap().to_bytes();
        bytes.extend(tail);
        check(&bytes);
    }

    #[test]
    fn mutated_real_logs_never_panic(
        which in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let logs = real_logs();
        let mut bytes = logs[which.index(logs.len())].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check(&bytes);
    }

    #[test]
    fn written_logs_parse_back((banks, measurements) in banks_and_measurements()) {
        let log = EventLog::from_measurements(&banks, &measurements).unwrap();
        let bytes = log.to_bytes();
        let parsed = EventLog::parse(&bytes).unwrap();
        prop_assert_eq!(&parsed, &log);
        prop_assert_eq!(parsed.banks(), banks.clone());
        for (event, m) in parsed.events().iter().zip(&measurements) {
            prop_assert_eq!(event.pcr, m.pcr);
            prop_assert_eq!(event.event_type, m.event_type);
            prop_assert_eq!(&event.data, &m.data);
            for &alg in &banks {
                prop_assert_eq!(event.digest(alg), m.digest(alg));
            }
        }
        // Replay equals a direct extend of every non-EV_NO_ACTION measurement.
        let replayed = parsed.replay();
        // StartupLocality and H-CRTM events change PCR 0's initial value; eventlog_hostile
        // tests those.
        let has_locality = measurements.iter().any(|m| m.event_type == EventType::EV_NO_ACTION && m.data.starts_with(b"StartupLocality\0"));
        let has_hcrtm = measurements.iter().any(|m| m.event_type == EventType::EV_EFI_HCRTM_EVENT);
        if !has_locality && !has_hcrtm {
            let replayed = replayed.unwrap();
            for &alg in &banks {
                let mut pcrs = vec![vec![0u8; alg.size()]; 24];
                for m in measurements.iter().filter(|m| m.event_type != EventType::EV_NO_ACTION) {
                    alg.extend(&mut pcrs[m.pcr as usize], m.digest(alg).unwrap());
                }
                for (pcr, value) in pcrs.iter().enumerate() {
                    prop_assert_eq!(replayed.value(alg, pcr as u32).unwrap(), value.as_slice());
                }
            }
        }
    }
}
