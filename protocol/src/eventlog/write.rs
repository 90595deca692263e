//! Writing an [`EventLog`] in its binary format (PFP 1.05 §10.2.1 crypto-agile: the
//! TCG_PCR_EVENT header carrying the Spec ID Event03, then TCG_PCR_EVENT2 records;
//! §10.2.2 SHA-1: TCG_PCR_EVENT records). A parsed log writes back byte for byte.

use super::types::{Event, EventLog, EventType, LogFormat, SpecIdEvent};

impl EventLog {
    /// The log in its binary format, ready for `tpm2_eventlog` or any PFP parser.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len);
        if let LogFormat::CryptoAgile(spec_id) = &self.format {
            write_header(&mut out, spec_id);
        }
        for event in &self.events {
            write_event(&mut out, &self.format, event);
        }
        out
    }
}

/// Encoded size of the TCG_PCR_EVENT header carrying `spec_id`.
pub(crate) fn header_len(spec_id: &SpecIdEvent) -> usize {
    4 + 4 + 20 + 4 + spec_id_len(spec_id)
}

/// Encoded size of one record in `format`.
pub(crate) fn event_len(format: &LogFormat, event: &Event) -> usize {
    let digests = match format {
        LogFormat::CryptoAgile(_) => {
            4 + event.digests.iter().map(|d| 2 + d.digest.len()).sum::<usize>()
        }
        LogFormat::Sha1 => 20,
    };
    4 + 4 + digests + 4 + event.data.len()
}

fn spec_id_len(spec_id: &SpecIdEvent) -> usize {
    16 + 4 + 4 + 4 + 4 * spec_id.algorithms.len() + 1 + spec_id.vendor_info.len()
}

fn write_header(out: &mut Vec<u8>, spec_id: &SpecIdEvent) {
    put_u32(out, 0);
    put_u32(out, EventType::EV_NO_ACTION.0);
    out.extend_from_slice(&[0u8; 20]);
    put_len(out, spec_id_len(spec_id));
    out.extend_from_slice(SpecIdEvent::SIGNATURE);
    put_u32(out, spec_id.platform_class);
    out.extend_from_slice(&[
        spec_id.spec_version_minor,
        spec_id.spec_version_major,
        spec_id.spec_errata,
        spec_id.uintn_size,
    ]);
    put_len(out, spec_id.algorithms.len());
    for a in &spec_id.algorithms {
        out.extend_from_slice(&a.alg_id.to_le_bytes());
        out.extend_from_slice(&a.digest_size.to_le_bytes());
    }
    // vendorInfoSize is a UINT8; the parser read it from one byte and `EventLog::new`
    // writes none, so the length always fits.
    out.push(u8::try_from(spec_id.vendor_info.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&spec_id.vendor_info);
}

fn write_event(out: &mut Vec<u8>, format: &LogFormat, event: &Event) {
    put_u32(out, event.pcr);
    put_u32(out, event.event_type.0);
    match format {
        LogFormat::CryptoAgile(_) => {
            put_len(out, event.digests.len());
            for d in &event.digests {
                out.extend_from_slice(&d.alg_id.to_le_bytes());
                out.extend_from_slice(&d.digest);
            }
        }
        LogFormat::Sha1 => {
            // A SHA-1 record has exactly one 20-byte SHA-1 digest: the parser makes it so.
            for d in &event.digests {
                out.extend_from_slice(&d.digest);
            }
        }
    }
    put_len(out, event.data.len());
    out.extend_from_slice(&event.data);
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Writes a length as UINT32. Lengths come from a parsed log (so they were UINT32s) or
/// from a built one capped at `MAX_LOG_SIZE`, so they always fit.
fn put_len(out: &mut Vec<u8>, len: usize) {
    put_u32(out, u32::try_from(len).unwrap_or(u32::MAX));
}
