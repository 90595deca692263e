//! The few DER forms (ITU-T X.690) that the EK certificate profile and the strict checks
//! on certificate encodings need, written and read without panics. Everything else about
//! X.509 is x509-parser's.

pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const NULL: u8 = 0x05;
pub const OID: u8 = 0x06;
pub const UTF8_STRING: u8 = 0x0C;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
/// `[0] EXPLICIT Version` of a TBSCertificate (RFC 5280 §4.1).
pub const VERSION: u8 = 0xA0;

pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

pub fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(SEQUENCE, &parts.concat())
}

/// A SET OF in DER order (elements sorted by encoding, X.690 §11.6).
pub fn set(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut sorted = parts.to_vec();
    sorted.sort();
    tlv(SET, &sorted.concat())
}

pub fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = vec![0u8];
    content.extend_from_slice(bytes);
    tlv(BIT_STRING, &content)
}

/// A non-negative INTEGER from big-endian magnitude bytes.
pub fn uint_der(magnitude: &[u8]) -> Vec<u8> {
    let m = strip(magnitude);
    let mut content = Vec::with_capacity(m.len() + 1);
    if m.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(m);
    tlv(INTEGER, &content)
}

pub fn oid(arcs: &[u64]) -> Vec<u8> {
    tlv(OID, &oid_content(arcs))
}

pub fn oid_content(arcs: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    let (first, rest) = match arcs {
        [a, b, rest @ ..] => (a * 40 + b, rest),
        _ => return out,
    };
    for arc in std::iter::once(first).chain(rest.iter().copied()) {
        let mut groups = vec![(arc & 0x7F) as u8];
        let mut v = arc >> 7;
        while v > 0 {
            groups.push((v & 0x7F) as u8 | 0x80);
            v >>= 7;
        }
        out.extend(groups.iter().rev());
    }
    out
}

/// Reads one TLV with tag `tag`; returns (content, rest). Lengths beyond the input fail.
pub fn expect(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), &'static str> {
    let (&t, rest) = input.split_first().ok_or("truncated")?;
    if t != tag {
        return Err("unexpected tag");
    }
    let (&l, rest) = rest.split_first().ok_or("truncated")?;
    let (len, rest) = if l < 0x80 {
        (usize::from(l), rest)
    } else {
        let n = usize::from(l & 0x7F);
        if n == 0 || n > 4 {
            return Err("unsupported length");
        }
        let bytes = rest.get(..n).ok_or("truncated")?;
        let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest.get(n..).ok_or("truncated")?)
    };
    let content = rest.get(..len).ok_or("length beyond input")?;
    Ok((content, rest.get(len..).unwrap_or_default()))
}

/// A non-negative INTEGER's content as u32.
pub fn uint(content: &[u8]) -> Option<u32> {
    if content.first().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    let m = strip(content);
    (m.len() <= 4).then(|| m.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// `bytes` without leading zero bytes: the magnitude of an unsigned big-endian integer.
pub fn strip(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.get(zeros..).unwrap_or_default()
}

/// Reads one TLV with tag `tag`; returns (the whole TLV, rest).
pub fn expect_raw(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), &'static str> {
    let (_, rest) = expect(input, tag)?;
    Ok((&input[..input.len() - rest.len()], rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_use_long_form_when_needed() {
        assert_eq!(tlv(0x04, &[0; 0x7F])[..2], [0x04, 0x7F]);
        assert_eq!(tlv(0x04, &[0; 0x80])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(tlv(0x04, &[0; 0x1234])[..4], [0x04, 0x82, 0x12, 0x34]);
        assert_eq!(uint_der(&[0x00, 0x7F]), [0x02, 0x01, 0x7F]);
        assert_eq!(uint_der(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(uint_der(&[]), [0x02, 0x01, 0x00]);
    }
}
