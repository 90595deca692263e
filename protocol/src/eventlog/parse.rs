//! Parsing the two binary log formats (PFP 1.05 §10.2.1 crypto-agile, §10.2.2 SHA-1).
//!
//! The first record decides the format: a TCG_PCR_EVENT of type EV_NO_ACTION whose data
//! starts with "Spec ID Event03\0" is the crypto-agile header; anything else means a SHA-1
//! log, whose every record (including a TCG 1.2 "Spec ID Event00", which is just an
//! EV_NO_ACTION record there) is a TCG_PCR_EVENT.

use super::reader::Reader;
use super::types::{
    AlgorithmSize, Event, EventDigest, EventLog, EventType, LogFormat, SpecIdEvent,
};
use super::{
    EventLogError, MAX_ALGORITHMS, MAX_DIGEST_SIZE, MAX_EVENTS, MAX_LOG_SIZE, NO_ACTION_PCR,
    PCR_COUNT,
};
use crate::tpm::HashAlg;

const SHA1_SIZE: usize = 20;

impl EventLog {
    /// Parses a binary event log (Linux's `binary_bios_measurements`, or what
    /// [`EventLog::to_bytes`] wrote). Every byte must belong to a well-formed record:
    /// trailing bytes that do not form one are an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, EventLogError> {
        if bytes.is_empty() {
            return Err(EventLogError::Empty);
        }
        if bytes.len() > MAX_LOG_SIZE {
            return Err(EventLogError::TooLarge { size: bytes.len(), max: MAX_LOG_SIZE });
        }
        let mut r = Reader::new(bytes);
        let first = read_sha1_record(&mut r)?;
        if first.event_type == EventType::EV_NO_ACTION
            && first.data.starts_with(SpecIdEvent::SIGNATURE)
        {
            let spec_id = parse_spec_id(&first)?;
            let mut events = Vec::new();
            while !r.is_empty() {
                if events.len() >= MAX_EVENTS {
                    return Err(EventLogError::TooManyEvents { max: MAX_EVENTS });
                }
                events.push(read_agile_record(&mut r, &spec_id)?);
            }
            return Ok(EventLog {
                format: LogFormat::CryptoAgile(spec_id),
                events,
                encoded_len: bytes.len(),
            });
        }

        let mut r = Reader::new(bytes);
        let mut events = Vec::new();
        while !r.is_empty() {
            if events.len() >= MAX_EVENTS {
                return Err(EventLogError::TooManyEvents { max: MAX_EVENTS });
            }
            events.push(read_sha1_record(&mut r)?);
        }
        Ok(EventLog { format: LogFormat::Sha1, events, encoded_len: bytes.len() })
    }
}

/// pcrIndex and eventType, which every record starts with. The PCR must be 0–23, except
/// that an EV_NO_ACTION record, which extends nothing, may name [`NO_ACTION_PCR`] as
/// Windows writes it; any other type naming a PCR beyond 23 is refused.
fn read_pcr_and_type(r: &mut Reader<'_>) -> Result<(u32, EventType), EventLogError> {
    let offset = r.offset();
    let pcr = r.u32("pcrIndex")?;
    let out_of_range = EventLogError::PcrOutOfRange { offset, pcr };
    if pcr >= PCR_COUNT && pcr != NO_ACTION_PCR {
        return Err(out_of_range);
    }
    let event_type = EventType(r.u32("eventType")?);
    if pcr == NO_ACTION_PCR && event_type != EventType::EV_NO_ACTION {
        return Err(out_of_range);
    }
    Ok((pcr, event_type))
}

/// TCG_PCR_EVENT: pcrIndex, eventType, digest[20], eventSize, event[eventSize].
fn read_sha1_record(r: &mut Reader<'_>) -> Result<Event, EventLogError> {
    let offset = r.offset();
    let (pcr, event_type) = read_pcr_and_type(r)?;
    let digest = r.take(SHA1_SIZE, "SHA-1 digest")?.to_vec();
    let data = r.sized("event data")?.to_vec();
    let digests = vec![EventDigest { alg_id: HashAlg::Sha1.id(), digest }];
    Ok(Event { offset, pcr, event_type, digests, data })
}

/// TCG_EfiSpecIDEventStruct inside the header record, which must fill its event data
/// exactly: a header that claims more or fewer bytes than its structure is not trusted to
/// say where the first TCG_PCR_EVENT2 starts.
fn parse_spec_id(header: &Event) -> Result<SpecIdEvent, EventLogError> {
    let offset = header.offset;
    if header.pcr != 0 {
        return Err(EventLogError::SpecIdNotPcr0 { offset, pcr: header.pcr });
    }
    if header.digests.iter().any(|d| d.digest.iter().any(|&b| b != 0)) {
        return Err(EventLogError::SpecIdDigestNotZero { offset });
    }
    // The event data starts after pcrIndex, eventType, digest and eventSize.
    let data_offset = offset.saturating_add(4 + 4 + SHA1_SIZE + 4);
    let mut r = Reader::with_base(&header.data, data_offset);

    r.take(SpecIdEvent::SIGNATURE.len(), "Spec ID signature")?;
    let platform_class = r.u32("platformClass")?;
    let spec_version_minor = r.u8("specVersionMinor")?;
    let spec_version_major = r.u8("specVersionMajor")?;
    let spec_errata = r.u8("specErrata")?;
    let uintn_size = r.u8("uintnSize")?;
    let count_offset = r.offset();
    let count = r.u32("numberOfAlgorithms")?;
    if count == 0 {
        return Err(EventLogError::NoAlgorithms { offset: count_offset });
    }
    let n = usize::try_from(count).unwrap_or(usize::MAX);
    if n > MAX_ALGORITHMS {
        return Err(EventLogError::TooManyAlgorithms {
            offset: count_offset,
            count,
            max: MAX_ALGORITHMS,
        });
    }
    let mut algorithms: Vec<AlgorithmSize> = Vec::with_capacity(n);
    for _ in 0..n {
        let entry_offset = r.offset();
        let alg_id = r.u16("algorithmId")?;
        let digest_size = r.u16("digestSize")?;
        if algorithms.iter().any(|a| a.alg_id == alg_id) {
            return Err(EventLogError::DuplicateAlgorithm { offset: entry_offset, alg_id });
        }
        match HashAlg::from_id(alg_id) {
            Some(alg) if usize::from(digest_size) != alg.size() => {
                return Err(EventLogError::WrongDigestSize {
                    offset: entry_offset,
                    alg,
                    declared: digest_size,
                    expected: alg.size(),
                });
            }
            None if digest_size == 0 || digest_size > MAX_DIGEST_SIZE => {
                return Err(EventLogError::BadDigestSize {
                    offset: entry_offset,
                    alg_id,
                    size: digest_size,
                });
            }
            _ => {}
        }
        algorithms.push(AlgorithmSize { alg_id, digest_size });
    }
    let vendor_info_size = r.u8("vendorInfoSize")?;
    let vendor_info = r.take(usize::from(vendor_info_size), "vendorInfo")?.to_vec();
    if !r.is_empty() {
        return Err(EventLogError::SpecIdSizeMismatch {
            offset,
            event_size: header.data.len(),
            parsed: header.data.len().saturating_sub(r.remaining()),
        });
    }
    Ok(SpecIdEvent {
        platform_class,
        spec_version_minor,
        spec_version_major,
        spec_errata,
        uintn_size,
        algorithms,
        vendor_info,
    })
}

/// TCG_PCR_EVENT2: pcrIndex, eventType, TPML_DIGEST_VALUES (count, then algorithmId and
/// digest per entry, sized from the Spec ID event), eventSize, event[eventSize].
fn read_agile_record(r: &mut Reader<'_>, spec_id: &SpecIdEvent) -> Result<Event, EventLogError> {
    let offset = r.offset();
    let (pcr, event_type) = read_pcr_and_type(r)?;
    let count = r.u32("digest count")?;
    if count == 0 {
        return Err(EventLogError::NoDigests { offset });
    }
    let max = spec_id.algorithms.len();
    let n = usize::try_from(count).unwrap_or(usize::MAX);
    if n > max {
        return Err(EventLogError::TooManyDigests { offset, count, max });
    }
    let mut digests: Vec<EventDigest> = Vec::with_capacity(n);
    for _ in 0..n {
        let alg_offset = r.offset();
        let alg_id = r.u16("digest algorithmId")?;
        let Some(size) = spec_id.digest_size(alg_id) else {
            return Err(EventLogError::UndeclaredAlgorithm { offset: alg_offset, alg_id });
        };
        if digests.iter().any(|d| d.alg_id == alg_id) {
            return Err(EventLogError::DuplicateAlgorithm { offset: alg_offset, alg_id });
        }
        let digest = r.take(size, "digest")?.to_vec();
        digests.push(EventDigest { alg_id, digest });
    }
    let data = r.sized("event data")?.to_vec();
    Ok(Event { offset, pcr, event_type, digests, data })
}
