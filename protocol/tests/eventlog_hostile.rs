//! Malformed and hostile event logs: each defect gets its own precise error, naming the
//! offset, and nothing panics or allocates from an untrusted length. The logs are built
//! byte by byte here, independently of our writer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use protocol::eventlog::{EventLog, EventLogError, EventType, LogFormat, MAX_EVENTS, MAX_LOG_SIZE};
use protocol::tpm::HashAlg;

const SM3_256: u16 = 0x0012;
/// TPM_ALG_SHA3_256: registered, but not an algorithm tresor computes.
const SHA3_256: u16 = 0x0027;
const EV_NO_ACTION: u32 = 3;
const EV_POST_CODE: u32 = 1;
const EV_EFI_HCRTM_EVENT: u32 = 0x8000_0010;

fn u32le(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// TCG_PCR_EVENT header with a Spec ID Event03 declaring `algs` (id, size).
fn header(algs: &[(u16, u16)]) -> Vec<u8> {
    let mut spec = b"Spec ID Event03\0".to_vec();
    spec.extend(u32le(0)); // platformClass
    spec.extend([0, 2, 0, 2]); // minor, major, errata, uintnSize
    spec.extend(u32le(algs.len() as u32));
    for (id, size) in algs {
        spec.extend(id.to_le_bytes());
        spec.extend(size.to_le_bytes());
    }
    spec.push(0); // vendorInfoSize
    let mut out = Vec::new();
    out.extend(u32le(0));
    out.extend(u32le(3));
    out.extend([0u8; 20]);
    out.extend(u32le(spec.len() as u32));
    out.extend(spec);
    out
}

/// TCG_PCR_EVENT2 with the given digests (id, bytes) and data.
fn event2(pcr: u32, event_type: u32, digests: &[(u16, Vec<u8>)], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(u32le(pcr));
    out.extend(u32le(event_type));
    out.extend(u32le(digests.len() as u32));
    for (id, d) in digests {
        out.extend(id.to_le_bytes());
        out.extend(d);
    }
    out.extend(u32le(data.len() as u32));
    out.extend(data);
    out
}

/// TCG_PCR_EVENT (SHA-1 format).
fn event1(pcr: u32, event_type: u32, digest: [u8; 20], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(u32le(pcr));
    out.extend(u32le(event_type));
    out.extend(digest);
    out.extend(u32le(data.len() as u32));
    out.extend(data);
    out
}

fn sha256_header() -> Vec<u8> {
    header(&[(0x000B, 32)])
}

fn sha256(d: u8) -> (u16, Vec<u8>) {
    (0x000B, vec![d; 32])
}

fn parse(bytes: &[u8]) -> Result<EventLog, EventLogError> {
    EventLog::parse(bytes)
}

#[test]
fn empty_and_oversized_logs() {
    assert_eq!(parse(&[]), Err(EventLogError::Empty));
    let big = vec![0u8; MAX_LOG_SIZE + 1];
    assert_eq!(
        parse(&big),
        Err(EventLogError::TooLarge { size: MAX_LOG_SIZE + 1, max: MAX_LOG_SIZE })
    );
}

#[test]
fn every_prefix_of_a_real_log_is_an_error_or_a_shorter_log() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/eventlogs");
    for name in [
        "event.bin",
        "event-uefiaction.bin",
        "event-sd-boot-fedora37.bin",
        "event-uefi-sha1-log.bin",
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let full = parse(&bytes).unwrap();
        let boundaries: Vec<usize> = full.events().iter().map(|e| e.offset).collect();
        for len in 1..bytes.len() {
            match parse(&bytes[..len]) {
                Ok(log) => {
                    // Only a cut exactly between two records parses, and then it is the
                    // first records of the full log.
                    assert!(boundaries.contains(&len), "{name}: prefix {len} parsed");
                    assert_eq!(log.events(), &full.events()[..log.events().len()]);
                }
                Err(EventLogError::Truncated { offset, available, needed, .. }) => {
                    assert!(offset <= len && available < needed, "{name}: prefix {len}");
                }
                // A cut inside the header's event data leaves a Spec ID event that fails
                // its own checks, or a SHA-1 first record (no Spec ID signature).
                Err(e) => assert!(len < 80, "{name}: prefix {len}: {e}"),
            }
        }
    }
}

#[test]
fn huge_lengths_are_errors_not_allocations() {
    // numberOfAlgorithms = 0xffffffff.
    let mut log = header(&[(0x000B, 32)]);
    log[56..60].copy_from_slice(&u32le(u32::MAX));
    assert_eq!(
        parse(&log),
        Err(EventLogError::TooManyAlgorithms { offset: 56, count: u32::MAX, max: 16 })
    );

    // Digest count = 0xffffffff.
    let mut log = sha256_header();
    let at = log.len();
    log.extend(event2(0, 1, &[sha256(1)], b"x"));
    log[at + 8..at + 12].copy_from_slice(&u32le(u32::MAX));
    assert_eq!(
        parse(&log),
        Err(EventLogError::TooManyDigests { offset: at, count: u32::MAX, max: 1 })
    );

    // eventSize = 0xffffffff.
    let mut log = sha256_header();
    let at = log.len();
    log.extend(event2(0, 1, &[sha256(1)], b"x"));
    let size_at = at + 12 + 2 + 32;
    log[size_at..size_at + 4].copy_from_slice(&u32le(u32::MAX));
    assert_eq!(
        parse(&log),
        Err(EventLogError::Truncated {
            offset: size_at + 4,
            what: "event data",
            needed: u32::MAX as usize,
            available: 1
        })
    );

    // Spec ID eventSize = 0xffffffff.
    let mut log = sha256_header();
    log[28..32].copy_from_slice(&u32le(u32::MAX));
    assert!(matches!(
        parse(&log),
        Err(EventLogError::Truncated { offset: 32, what: "event data", .. })
    ));
}

#[test]
fn too_many_records() {
    let record = event1(0, 1, [0; 20], &[]);
    let log: Vec<u8> =
        record.iter().copied().cycle().take(record.len() * (MAX_EVENTS + 1)).collect();
    assert_eq!(parse(&log), Err(EventLogError::TooManyEvents { max: MAX_EVENTS }));
}

#[test]
fn spec_id_event_defects() {
    let at = 32 + 24; // numberOfAlgorithms field
    assert_eq!(parse(&header(&[])), Err(EventLogError::NoAlgorithms { offset: at }));
    assert_eq!(
        parse(&header(&[(0x000B, 32), (0x000B, 32)])),
        Err(EventLogError::DuplicateAlgorithm { offset: at + 8, alg_id: 0x000B })
    );
    assert_eq!(
        parse(&header(&[(0x000B, 20)])),
        Err(EventLogError::WrongDigestSize {
            offset: at + 4,
            alg: HashAlg::Sha256,
            declared: 20,
            expected: 32
        })
    );
    assert_eq!(
        parse(&header(&[(SM3_256, 0)])),
        Err(EventLogError::WrongDigestSize {
            offset: at + 4,
            alg: HashAlg::Sm3_256,
            declared: 0,
            expected: 32
        })
    );
    assert_eq!(
        parse(&header(&[(SHA3_256, 0)])),
        Err(EventLogError::BadDigestSize { offset: at + 4, alg_id: SHA3_256, size: 0 })
    );
    assert_eq!(
        parse(&header(&[(0x7777, 65)])),
        Err(EventLogError::BadDigestSize { offset: at + 4, alg_id: 0x7777, size: 65 })
    );

    let mut wrong_pcr = sha256_header();
    wrong_pcr[0] = 1;
    assert_eq!(parse(&wrong_pcr), Err(EventLogError::SpecIdNotPcr0 { offset: 0, pcr: 1 }));

    let mut nonzero_digest = sha256_header();
    nonzero_digest[8] = 1;
    assert_eq!(parse(&nonzero_digest), Err(EventLogError::SpecIdDigestNotZero { offset: 0 }));

    // eventSize one byte larger than the structure (the extra byte is in the event data).
    let mut padded = sha256_header();
    let size = u32::from_le_bytes(padded[28..32].try_into().unwrap());
    padded[28..32].copy_from_slice(&u32le(size + 1));
    padded.push(0);
    assert_eq!(
        parse(&padded),
        Err(EventLogError::SpecIdSizeMismatch {
            offset: 0,
            event_size: size as usize + 1,
            parsed: size as usize
        })
    );

    // eventSize too small for the algorithms it declares.
    let mut short = sha256_header();
    short[28..32].copy_from_slice(&u32le(size - 2));
    short.truncate(short.len() - 2);
    assert!(matches!(
        parse(&short),
        Err(EventLogError::Truncated { what: "digestSize", offset: 62, .. })
    ));
}

#[test]
fn record_defects() {
    let h = sha256_header();
    let at = h.len();
    let with = |e: Vec<u8>| [h.clone(), e].concat();

    assert_eq!(
        parse(&with(event2(24, 1, &[sha256(1)], b""))),
        Err(EventLogError::PcrOutOfRange { offset: at, pcr: 24 })
    );
    assert_eq!(parse(&with(event2(0, 1, &[], b""))), Err(EventLogError::NoDigests { offset: at }));
    assert_eq!(
        parse(&with(event2(0, 1, &[sha256(1), sha256(2)], b""))),
        Err(EventLogError::TooManyDigests { offset: at, count: 2, max: 1 })
    );
    assert_eq!(
        parse(&with(event2(0, 1, &[(SM3_256, vec![0; 32])], b""))),
        Err(EventLogError::UndeclaredAlgorithm { offset: at + 12, alg_id: SM3_256 })
    );
    // PCR 0xFFFFFFFF is accepted on EV_NO_ACTION only; PCR 24 on nothing.
    assert_eq!(
        parse(&with(event2(u32::MAX, EV_POST_CODE, &[sha256(1)], b""))),
        Err(EventLogError::PcrOutOfRange { offset: at, pcr: u32::MAX })
    );
    assert_eq!(
        parse(&with(event2(24, EV_NO_ACTION, &[sha256(0)], b""))),
        Err(EventLogError::PcrOutOfRange { offset: at, pcr: 24 })
    );
    assert_eq!(
        parse(&with(event2(u32::MAX - 1, EV_NO_ACTION, &[sha256(0)], b""))),
        Err(EventLogError::PcrOutOfRange { offset: at, pcr: u32::MAX - 1 })
    );
    let two = header(&[(0x000B, 32), (0x0004, 20)]);
    let at2 = two.len();
    assert_eq!(
        parse(&[two, event2(0, 1, &[sha256(1), sha256(2)], b"")].concat()),
        Err(EventLogError::DuplicateAlgorithm { offset: at2 + 12 + 34, alg_id: 0x000B })
    );
    // A SHA-1 log's records are range-checked too.
    assert_eq!(
        parse(&event1(31, 1, [0; 20], b"")),
        Err(EventLogError::PcrOutOfRange { offset: 0, pcr: 31 })
    );
    let crtm = event1(0, 8, [5; 20], b"crtm");
    assert_eq!(
        parse(&[crtm.clone(), event1(u32::MAX, 4, [0; 20], b"")].concat()),
        Err(EventLogError::PcrOutOfRange { offset: crtm.len(), pcr: u32::MAX })
    );
}

#[test]
fn trailing_garbage_is_an_error() {
    let good = [sha256_header(), event2(0, 1, &[sha256(1)], b"ok")].concat();
    let end = good.len();
    assert!(parse(&good).is_ok());
    assert!(matches!(
        parse(&[good.clone(), vec![0, 0, 0, 0, 1]].concat()),
        Err(EventLogError::Truncated { offset, what: "eventType", .. }) if offset == end + 4
    ));
    assert_eq!(
        parse(&[good.clone(), vec![0xAB; 5]].concat()),
        Err(EventLogError::PcrOutOfRange { offset: end, pcr: 0xABAB_ABAB })
    );
    // Zero padding, as some firmware leaves after the last event, reads as a record with
    // no digest.
    assert_eq!(parse(&[good, vec![0; 64]].concat()), Err(EventLogError::NoDigests { offset: end }));
}

#[test]
fn zero_length_event_data_is_fine() {
    let log = parse(&[sha256_header(), event2(5, 1, &[sha256(7)], b"")].concat()).unwrap();
    assert_eq!(log.events()[0].data, b"");
    let expected = HashAlg::Sha256.digest_parts(&[&[0; 32], &[7; 32]]);
    assert_eq!(log.replay().unwrap().value(HashAlg::Sha256, 5).unwrap(), expected);
}

#[test]
fn unknown_declared_algorithms_are_parsed_and_not_replayed() {
    let h = header(&[(SHA3_256, 32), (0x000B, 32)]);
    let bytes = [h, event2(3, 1, &[(SHA3_256, vec![9; 32]), sha256(1)], b"x")].concat();
    let log = parse(&bytes).unwrap();
    assert_eq!(log.banks(), [HashAlg::Sha256]);
    let event = &log.events()[0];
    assert_eq!(event.digests[0].alg_id, SHA3_256);
    assert_eq!(event.digests[0].alg(), None);
    assert_eq!(event.digests[0].digest, vec![9; 32]);
    let replayed = log.replay().unwrap();
    assert_eq!(replayed.iter().count(), 1);
    assert_eq!(
        replayed.value(HashAlg::Sha256, 3).unwrap(),
        HashAlg::Sha256.digest_parts(&[&[0; 32], &[1; 32]])
    );
    assert_eq!(log.to_bytes(), bytes);
}

fn locality_event(locality: u8) -> Vec<u8> {
    let mut data = b"StartupLocality\0".to_vec();
    data.push(locality);
    event2(0, 3, &[sha256(0)], &data)
}

#[test]
fn startup_locality_sets_the_initial_value_of_pcr0() {
    for locality in [3u8, 4] {
        let log = parse(
            &[sha256_header(), locality_event(locality), event2(0, 8, &[sha256(1)], b"v")].concat(),
        )
        .unwrap();
        let mut initial = [0u8; 32];
        initial[31] = locality;
        let expected = HashAlg::Sha256.digest_parts(&[&initial, &[1; 32]]);
        assert_eq!(
            log.replay().unwrap().value(HashAlg::Sha256, 0).unwrap(),
            expected,
            "locality {locality}"
        );
    }
    // Alone, it still sets (and reports) PCR 0.
    let log = parse(&[sha256_header(), locality_event(3)].concat()).unwrap();
    let replayed = log.replay().unwrap();
    let bank = replayed.bank(HashAlg::Sha256).unwrap();
    assert!(bank.is_measured(0));
    assert_eq!(bank.value(0).unwrap()[31], 3);
}

#[test]
fn startup_locality_defects() {
    let h = sha256_header();
    let at = h.len();
    let extend0 = event2(0, 8, &[sha256(1)], b"v");
    let replay = |events: &[Vec<u8>]| {
        parse(&[vec![h.clone()], events.to_vec()].concat().concat()).unwrap().replay()
    };

    assert_eq!(
        replay(&[locality_event(2)]),
        Err(EventLogError::InvalidStartupLocality { offset: at, locality: 2 })
    );
    let second = at + locality_event(3).len();
    assert_eq!(
        replay(&[locality_event(3), locality_event(3)]),
        Err(EventLogError::DuplicateStartupLocality { offset: second })
    );
    assert_eq!(
        replay(&[extend0.clone(), locality_event(3)]),
        Err(EventLogError::StartupLocalityAfterMeasurement { offset: at + extend0.len() })
    );
    let mut long = b"StartupLocality\0".to_vec();
    long.extend([3, 0]);
    assert!(matches!(
        replay(&[event2(0, 3, &[sha256(0)], &long)]),
        Err(EventLogError::StartupLocalityMalformed { offset, .. }) if offset == at
    ));
    assert!(matches!(
        replay(&[event2(1, 3, &[sha256(0)], b"StartupLocality\0\x03")]),
        Err(EventLogError::StartupLocalityMalformed { .. })
    ));
    // An extend of another PCR first is fine.
    assert!(replay(&[event2(1, 8, &[sha256(1)], b""), locality_event(3)]).is_ok());
}

#[test]
fn no_action_records_are_not_extended() {
    let log =
        parse(&[sha256_header(), event2(4, 3, &[sha256(0xEE)], b"anything")].concat()).unwrap();
    let replayed = log.replay().unwrap();
    assert!(!replayed.bank(HashAlg::Sha256).unwrap().is_measured(4));
    assert_eq!(replayed.value(HashAlg::Sha256, 4).unwrap(), [0; 32]);
}

#[test]
fn a_record_extends_only_the_banks_it_has_digests_for() {
    let h = header(&[(0x0004, 20), (0x000B, 32)]);
    let log = parse(&[h, event2(7, 1, &[sha256(1)], b"")].concat()).unwrap();
    let replayed = log.replay().unwrap();
    assert!(replayed.bank(HashAlg::Sha256).unwrap().is_measured(7));
    assert!(!replayed.bank(HashAlg::Sha1).unwrap().is_measured(7));
    assert_eq!(replayed.value(HashAlg::Sha1, 7).unwrap(), [0; 20]);
}

#[test]
fn sha1_logs_without_spec_id_event03() {
    // A TCG 1.2 log may start with "Spec ID Event00": an ordinary EV_NO_ACTION record there.
    let mut event00 = b"Spec ID Event00\0".to_vec();
    event00.extend([0; 8]);
    let bytes = [event1(0, 3, [0; 20], &event00), event1(0, 8, [5; 20], b"crtm")].concat();
    let log = parse(&bytes).unwrap();
    assert_eq!(log.format(), &LogFormat::Sha1);
    assert_eq!(log.events().len(), 2);
    assert_eq!(log.events()[1].event_type, EventType::EV_S_CRTM_VERSION);
    let expected = HashAlg::Sha1.digest_parts(&[&[0; 20], &[5; 20]]);
    assert_eq!(log.replay().unwrap().value(HashAlg::Sha1, 0).unwrap(), expected);
    assert_eq!(log.to_bytes(), bytes);
}

#[test]
fn sm3_256_is_replayed() {
    let h = header(&[(SM3_256, 32), (0x000B, 32)]);
    let bytes = [h, event2(3, 1, &[(SM3_256, vec![9; 32]), sha256(1)], b"x")].concat();
    let log = parse(&bytes).unwrap();
    assert_eq!(log.banks(), [HashAlg::Sm3_256, HashAlg::Sha256]);
    assert_eq!(log.events()[0].digests[0].alg(), Some(HashAlg::Sm3_256));
    let replayed = log.replay().unwrap();
    // SM3(0³² ‖ 09³²), computed with OpenSSL 3.0 (`openssl dgst -sm3`).
    assert_eq!(
        hex::encode(replayed.value(HashAlg::Sm3_256, 3).unwrap()),
        "c4aa94af06848457ff1fd7eb03a2f8d859153b73f30a0b4bc64a19e9c8a801d2"
    );
    assert!(replayed.bank(HashAlg::Sm3_256).unwrap().is_measured(3));
}

#[test]
fn windows_no_action_records_for_pcr_0xffffffff_are_parsed_and_skipped() {
    let windows = event2(u32::MAX, EV_NO_ACTION, &[sha256(0xAB)], b"Windows boot configuration");
    let bytes = [sha256_header(), windows.clone(), event2(4, 1, &[sha256(1)], b"")].concat();
    let log = parse(&bytes).unwrap();
    assert_eq!(log.events()[0].pcr, protocol::eventlog::NO_ACTION_PCR);
    let replayed = log.replay().unwrap();
    let bank = replayed.bank(HashAlg::Sha256).unwrap();
    assert_eq!(bank.measured().map(|(i, _)| i).collect::<Vec<_>>(), [4]);
    assert_eq!(log.to_bytes(), bytes);
    // A StartupLocality event there is not one for PCR 0.
    let mut loc = b"StartupLocality\0".to_vec();
    loc.push(3);
    let log =
        parse(&[sha256_header(), event2(u32::MAX, EV_NO_ACTION, &[sha256(0)], &loc)].concat())
            .unwrap();
    assert!(matches!(log.replay(), Err(EventLogError::StartupLocalityMalformed { .. })));
}

/// The record at offset 72361 of go-attestation's Windows log, retyped from EV_NO_ACTION to
/// EV_SEPARATOR: the same PCR index is then refused.
#[test]
fn a_real_windows_record_for_pcr_0xffffffff_is_refused_unless_no_action() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/eventlogs/go-attestation");
    let mut bytes = std::fs::read(dir.join("option_rom_eventlog.bin")).unwrap();
    assert!(parse(&bytes).is_ok());
    assert_eq!(bytes[72361..72369], [0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0]);
    bytes[72365] = 4;
    assert_eq!(parse(&bytes), Err(EventLogError::PcrOutOfRange { offset: 72361, pcr: u32::MAX }));
}

fn hcrtm_event(pcr: u32, d: u8) -> Vec<u8> {
    event2(pcr, EV_EFI_HCRTM_EVENT, &[sha256(d)], b"HCRTM")
}

fn after_hcrtm(d: u8, rest: &[u8]) -> Vec<u8> {
    let mut pcr0 = [0u8; 32];
    pcr0[31] = 4;
    let pcr0 = HashAlg::Sha256.digest_parts(&[&pcr0, &[d; 32]]);
    HashAlg::Sha256.digest_parts(&[&pcr0, rest])
}

#[test]
fn an_hcrtm_event_first_starts_pcr0_at_locality_4() {
    let h = sha256_header();
    let crtm = event2(0, 8, &[sha256(1)], b"v");
    let replay = |events: &[Vec<u8>]| {
        parse(&[vec![h.clone()], events.to_vec()].concat().concat()).unwrap().replay()
    };
    let expected = after_hcrtm(7, &[1; 32]);
    let pcr0 = |r: Result<protocol::eventlog::PcrBanks, EventLogError>| {
        r.unwrap().value(HashAlg::Sha256, 0).unwrap().to_vec()
    };
    // Without a StartupLocality event (tpm2-tss's H-CRTM log) and with one saying 4 before
    // it (what the PFP has firmware log): the same PCR 0.
    assert_eq!(pcr0(replay(&[hcrtm_event(0, 7), crtm.clone()])), expected);
    assert_eq!(pcr0(replay(&[locality_event(4), hcrtm_event(0, 7), crtm.clone()])), expected);
    // TPM2_Startup after the H-CRTM leaves PCR 0 alone, whatever its locality.
    assert_eq!(pcr0(replay(&[hcrtm_event(0, 7), locality_event(3), crtm.clone()])), expected);
    assert_eq!(pcr0(replay(&[locality_event(3), hcrtm_event(0, 7), crtm.clone()])), expected);
    // NO_ACTION records before it are not measurements.
    let other = event2(5, EV_NO_ACTION, &[sha256(0)], b"note");
    assert_eq!(pcr0(replay(&[other, hcrtm_event(0, 7), crtm.clone()])), expected);
    // The same digest under another type is an ordinary extend from zero.
    let retyped = event2(0, EV_POST_CODE, &[sha256(7)], b"HCRTM");
    assert_eq!(
        pcr0(replay(&[retyped, crtm.clone()])),
        HashAlg::Sha256
            .digest_parts(&[&HashAlg::Sha256.digest_parts(&[&[0; 32], &[7; 32]]), &[1; 32]])
    );
}

#[test]
fn an_hcrtm_event_anywhere_else_is_refused() {
    let h = sha256_header();
    let at = h.len();
    let crtm = event2(0, 8, &[sha256(1)], b"v");
    let replay = |events: &[Vec<u8>]| {
        parse(&[vec![h.clone()], events.to_vec()].concat().concat()).unwrap().replay()
    };
    let misplaced = |r: Result<protocol::eventlog::PcrBanks, EventLogError>| match r {
        Err(EventLogError::HcrtmEventMisplaced { offset, .. }) => offset,
        other => panic!("{other:?}"),
    };
    assert_eq!(misplaced(replay(&[crtm.clone(), hcrtm_event(0, 7)])), at + crtm.len());
    let pcr7 = event2(7, 1, &[sha256(1)], b"");
    assert_eq!(misplaced(replay(&[pcr7.clone(), hcrtm_event(0, 7)])), at + pcr7.len());
    let first = hcrtm_event(0, 7);
    assert_eq!(misplaced(replay(&[first.clone(), hcrtm_event(0, 8)])), at + first.len());
    assert_eq!(misplaced(replay(&[hcrtm_event(1, 7)])), at);
    // A StartupLocality event after a post-startup measurement of PCR 0 is still refused.
    assert_eq!(
        replay(&[hcrtm_event(0, 7), crtm.clone(), locality_event(4)]),
        Err(EventLogError::StartupLocalityAfterMeasurement {
            offset: at + first.len() + crtm.len()
        })
    );
}
