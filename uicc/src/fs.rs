//! The card's file system: the MF with EF_DIR, EF_ICCID, EF_PL and EF_ARR (ETSI TS 102 221
//! §13), and ADF_USIM with the EFs of 3GPP TS 31.102 §4.2 that a terminal or a card reader
//! tool reads; the encodings of EF_IMSI (TS 31.102 §4.2.2), EF_ICCID (TS 102 221 §13.2),
//! EF_DIR (§13.1) and EF_ARR (§13.4, ISO/IEC 7816-4 expanded format), and the FCP templates
//! that SELECT returns (TS 102 221 §11.1.1.3).
//!
//! EF_IMSI, EF_ICCID, EF_DIR and EF_ARR are derived from the profile and never updatable;
//! every other EF is stored in the card state and updatable under its access condition.

use protocol::{Iccid, Imsi};

/// The USIM application identifier: RID A000000087 (3GPP), application code 1002 (USIM),
/// country FFFF, provider FFFF, application provider field 89 00 00 01 00 (ETSI TS 101 220
/// Annex E).
pub const USIM_AID: [u8; 16] = [
    0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x00, 0x00, 0x01, 0x00,
];

/// FID of the MF and the alias of the current ADF (TS 102 221 §8.3).
pub const MF_FID: u16 = 0x3F00;
pub const CURRENT_ADF_FID: u16 = 0x7FFF;

/// The directories: the MF and the one application, ADF_USIM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Mf,
    Usim,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    Transparent,
    LinearFixed { record_len: u8 },
}

/// An access condition (TS 102 221 §9.5: PIN1 is the application PIN, ADM1 the issuer's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Always,
    Pin1,
    Adm1,
    Never,
}

/// Where an EF's content comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Iccid,
    Imsi,
    Dir,
    Arr,
    /// Stored in the card state under the EF's name.
    Stored,
}

/// One elementary file.
#[derive(Debug, PartialEq, Eq)]
pub struct Ef {
    pub fid: u16,
    pub name: &'static str,
    pub dir: Dir,
    pub sfi: Option<u8>,
    pub structure: Structure,
    /// Total size in bytes (record length × records for linear fixed files).
    pub size: usize,
    pub read: Access,
    pub update: Access,
    pub source: Source,
}

impl Ef {
    pub fn records(&self) -> usize {
        match self.structure {
            Structure::Transparent => 0,
            Structure::LinearFixed { record_len } => self.size / usize::from(record_len.max(1)),
        }
    }
}

const fn ef(
    fid: u16,
    name: &'static str,
    dir: Dir,
    sfi: Option<u8>,
    size: usize,
    (read, update): (Access, Access),
    source: Source,
) -> Ef {
    Ef { fid, name, dir, sfi, structure: Structure::Transparent, size, read, update, source }
}

const ARR_RECORD_LEN: u8 = 0x20;
const DIR_RECORD_LEN: u8 = 0x20;

use Access::{Adm1, Always, Never, Pin1};
use Dir::{Mf, Usim};

/// Every EF of the card. SFIs from TS 102 221 §13 and TS 31.102 §4.2 (Annex H list).
pub static EFS: [Ef; 21] = [
    Ef {
        fid: 0x2F00,
        name: "EF_DIR",
        dir: Mf,
        sfi: Some(0x1E),
        structure: Structure::LinearFixed { record_len: DIR_RECORD_LEN },
        size: 2 * DIR_RECORD_LEN as usize,
        read: Always,
        update: Never,
        source: Source::Dir,
    },
    ef(0x2FE2, "EF_ICCID", Mf, Some(0x02), 10, (Always, Never), Source::Iccid),
    ef(0x2F05, "EF_PL", Mf, Some(0x05), 10, (Always, Pin1), Source::Stored),
    Ef {
        fid: 0x2F06,
        name: "EF_ARR",
        dir: Mf,
        sfi: Some(0x06),
        structure: Structure::LinearFixed { record_len: ARR_RECORD_LEN },
        size: ARR_RECORDS.len() * ARR_RECORD_LEN as usize,
        read: Always,
        update: Never,
        source: Source::Arr,
    },
    ef(0x6F05, "EF_LI", Usim, Some(0x02), 10, (Always, Pin1), Source::Stored),
    Ef {
        fid: 0x6F06,
        name: "EF_ARR_USIM",
        dir: Usim,
        sfi: Some(0x17),
        structure: Structure::LinearFixed { record_len: ARR_RECORD_LEN },
        size: ARR_RECORDS.len() * ARR_RECORD_LEN as usize,
        read: Always,
        update: Never,
        source: Source::Arr,
    },
    ef(0x6F07, "EF_IMSI", Usim, Some(0x07), 9, (Pin1, Never), Source::Imsi),
    ef(0x6F08, "EF_KEYS", Usim, Some(0x08), 33, (Pin1, Pin1), Source::Stored),
    ef(0x6F09, "EF_KEYSPS", Usim, Some(0x09), 33, (Pin1, Pin1), Source::Stored),
    ef(0x6F31, "EF_HPPLMN", Usim, Some(0x12), 1, (Pin1, Adm1), Source::Stored),
    ef(0x6F38, "EF_UST", Usim, Some(0x04), 8, (Pin1, Adm1), Source::Stored),
    ef(0x6F46, "EF_SPN", Usim, None, 17, (Always, Adm1), Source::Stored),
    ef(0x6F56, "EF_EST", Usim, Some(0x05), 1, (Pin1, Pin1), Source::Stored),
    ef(0x6F5B, "EF_START_HFN", Usim, Some(0x0F), 6, (Pin1, Pin1), Source::Stored),
    ef(0x6F5C, "EF_THRESHOLD", Usim, Some(0x10), 3, (Pin1, Adm1), Source::Stored),
    ef(0x6F73, "EF_PSLOCI", Usim, Some(0x0C), 14, (Pin1, Pin1), Source::Stored),
    ef(0x6F78, "EF_ACC", Usim, Some(0x06), 2, (Pin1, Adm1), Source::Stored),
    ef(0x6F7B, "EF_FPLMN", Usim, Some(0x0D), 12, (Pin1, Pin1), Source::Stored),
    ef(0x6F7E, "EF_LOCI", Usim, Some(0x0B), 11, (Pin1, Pin1), Source::Stored),
    ef(0x6FAD, "EF_AD", Usim, Some(0x03), 4, (Always, Adm1), Source::Stored),
    ef(0x6FE3, "EF_EPSLOCI", Usim, Some(0x1E), 18, (Pin1, Pin1), Source::Stored),
];

/// The EF with this FID directly under `dir`.
pub fn ef_by_fid(dir: Dir, fid: u16) -> Option<&'static Ef> {
    EFS.iter().find(|e| e.dir == dir && e.fid == fid)
}

pub fn ef_by_sfi(dir: Dir, sfi: u8) -> Option<&'static Ef> {
    EFS.iter().find(|e| e.dir == dir && e.sfi == Some(sfi))
}

pub fn ef_by_name(name: &str) -> Option<&'static Ef> {
    EFS.iter().find(|e| e.name == name)
}

/// The services of the default EF_UST (TS 31.102 §4.2.8): n°17 service provider name,
/// n°27 GSM access (Kc in the 3G AUTHENTICATE response), n°33 (shall be set), n°38 GSM
/// security context.
pub const DEFAULT_SERVICES: [u8; 4] = [17, 27, 33, 38];
pub const SERVICE_GSM_ACCESS: u8 = 27;
pub const SERVICE_GSM_SECURITY_CONTEXT: u8 = 38;

/// Whether service `n` (1-based) is available in a service table (TS 31.102 §4.2.8).
pub fn service_available(ust: &[u8], n: u8) -> bool {
    let Some(i) = n.checked_sub(1) else { return false };
    ust.get(usize::from(i / 8)).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// The initial content of a stored EF for a subscription. Location, key and forbidden-PLMN
/// files start "not updated"/empty, as after a subscription change.
pub fn default_content(ef: &Ef, imsi: &Imsi, mnc_len: u8) -> Vec<u8> {
    let mut bytes = vec![0xFF; ef.size];
    match ef.name {
        // Language "en", rest unused (TS 102 221 §13.5, TS 31.102 §4.2.1).
        "EF_PL" | "EF_LI" => bytes[..2].copy_from_slice(b"en"),
        // KSI 07: no key available (TS 31.102 §4.2.4).
        "EF_KEYS" | "EF_KEYSPS" => bytes[0] = 0x07,
        // Search period 60 minutes (TS 31.102 §4.2.6).
        "EF_HPPLMN" => bytes[0] = 0x0A,
        "EF_UST" => {
            bytes.fill(0);
            for n in DEFAULT_SERVICES {
                let i = usize::from(n - 1);
                bytes[i / 8] |= 1 << (i % 8);
            }
        }
        // Display condition 00, no name.
        "EF_SPN" => bytes[0] = 0x00,
        "EF_EST" => bytes[0] = 0x00,
        "EF_START_HFN" => bytes.copy_from_slice(&[0xF0, 0x00, 0x00, 0xF0, 0x00, 0x00]),
        // LAI / RAI with LAC FFFE (deleted), status "not updated" (TS 31.102 §4.2.17, .23).
        "EF_LOCI" => {
            bytes[7..9].copy_from_slice(&[0xFF, 0xFE]);
            bytes[10] = 0x01;
        }
        "EF_PSLOCI" => {
            bytes[10..12].copy_from_slice(&[0xFF, 0xFE]);
            bytes[13] = 0x01;
        }
        "EF_EPSLOCI" => bytes[17] = 0x01,
        "EF_ACC" => bytes.copy_from_slice(&access_class(imsi)),
        // Normal operation, MNC length (TS 31.102 §4.2.18).
        "EF_AD" => bytes.copy_from_slice(&[0x00, 0x00, 0x00, mnc_len]),
        _ => {}
    }
    bytes
}

/// Stored EFs that belong to the subscription rather than to the card: reset when a new
/// profile is installed.
pub fn is_per_subscription(ef: &Ef) -> bool {
    matches!(
        ef.name,
        "EF_KEYS"
            | "EF_KEYSPS"
            | "EF_START_HFN"
            | "EF_LOCI"
            | "EF_PSLOCI"
            | "EF_EPSLOCI"
            | "EF_FPLMN"
            | "EF_ACC"
    )
}

/// EF_ACC: the access class is the last digit of the IMSI (3GPP TS 22.011 §4.2), bit n of
/// the 16-bit big-endian value.
pub fn access_class(imsi: &Imsi) -> [u8; 2] {
    let last = imsi.as_str().bytes().last().map_or(0, |b| b.saturating_sub(b'0')) % 10;
    (1u16 << last).to_be_bytes()
}

/// EF_IMSI (TS 31.102 §4.2.2): length byte, then the digits in swapped BCD with the parity
/// indication in the low nibble of the first byte (b4 set for an odd number of digits,
/// b3..b1 = 001), padded with F.
pub fn encode_imsi(imsi: &Imsi) -> [u8; 9] {
    let digits: Vec<u8> = imsi.as_str().bytes().map(|b| b - b'0').collect();
    let parity = if digits.len() % 2 == 1 { 0x09 } else { 0x01 };
    let mut nibbles = Vec::with_capacity(16);
    nibbles.push(parity);
    nibbles.extend_from_slice(&digits);
    let mut out = [0xFF; 9];
    // (digits + 1) nibbles in whole bytes: at most 8 for 15 digits.
    out[0] = u8::try_from(nibbles.len().div_ceil(2)).unwrap_or(8);
    for (i, pair) in nibbles.chunks(2).enumerate() {
        let lo = pair.first().copied().unwrap_or(0x0F);
        let hi = pair.get(1).copied().unwrap_or(0x0F);
        if let Some(b) = out.get_mut(i + 1) {
            *b = (hi << 4) | lo;
        }
    }
    out
}

/// Decodes EF_IMSI back to digits; `None` if it is not a well-formed encoding.
pub fn decode_imsi(bytes: &[u8]) -> Option<String> {
    let (&len, rest) = bytes.split_first()?;
    let body = rest.get(..usize::from(len))?;
    let mut nibbles = body.iter().flat_map(|b| [b & 0x0F, b >> 4]);
    let parity = nibbles.next()?;
    let digits: String = nibbles.take_while(|&n| n != 0x0F).map(|n| char::from(b'0' + n)).collect();
    let odd = digits.len() % 2 == 1;
    (parity == if odd { 0x09 } else { 0x01 }).then_some(digits)
}

/// EF_ICCID (TS 102 221 §13.2): the ICCID digits in swapped BCD, padded with F.
pub fn encode_iccid(iccid: &Iccid) -> [u8; 10] {
    let mut out = [0xFF; 10];
    let digits = iccid.as_str().as_bytes();
    for (i, pair) in digits.chunks(2).enumerate() {
        let lo = pair.first().map_or(0x0F, |d| d - b'0');
        let hi = pair.get(1).map_or(0x0F, |d| d - b'0');
        if let Some(b) = out.get_mut(i) {
            *b = (hi << 4) | lo;
        }
    }
    out
}

/// EF_DIR (TS 102 221 §13.1): one application template per record,
/// 61 L { 4F 10 AID, 50 04 "USIM" }, padded with FF; the second record is empty.
pub fn dir_content() -> Vec<u8> {
    let mut record = vec![0x61, 0x18, 0x4F, 0x10];
    record.extend_from_slice(&USIM_AID);
    record.extend_from_slice(&[0x50, 0x04]);
    record.extend_from_slice(b"USIM");
    let mut out = vec![0xFF; 2 * usize::from(DIR_RECORD_LEN)];
    out[..record.len()].copy_from_slice(&record);
    out
}

/// The EF_ARR records (ISO/IEC 7816-4 §9.3.3 expanded format, TS 102 221 §9.2.4): AM_DO 80
/// (access mode byte: 01 read, 02 update, 03 both) followed by an SC_DO: 90 00 always,
/// 97 00 never, A4 { 83 01 key reference, 95 01 08 } user verification with PIN1 (01) or
/// ADM1 (0A).
const ARR_RECORDS: [&[u8]; 7] = [
    // 1: read always, update ADM1
    &[
        0x80, 0x01, 0x01, 0x90, 0x00, 0x80, 0x01, 0x02, 0xA4, 0x06, 0x83, 0x01, 0x0A, 0x95, 0x01,
        0x08,
    ],
    // 2: read PIN1, update ADM1
    &[
        0x80, 0x01, 0x01, 0xA4, 0x06, 0x83, 0x01, 0x01, 0x95, 0x01, 0x08, 0x80, 0x01, 0x02, 0xA4,
        0x06, 0x83, 0x01, 0x0A, 0x95, 0x01, 0x08,
    ],
    // 3: read and update PIN1
    &[0x80, 0x01, 0x03, 0xA4, 0x06, 0x83, 0x01, 0x01, 0x95, 0x01, 0x08],
    // 4: read PIN1, update never
    &[
        0x80, 0x01, 0x01, 0xA4, 0x06, 0x83, 0x01, 0x01, 0x95, 0x01, 0x08, 0x80, 0x01, 0x02, 0x97,
        0x00,
    ],
    // 5: read always, update never
    &[0x80, 0x01, 0x01, 0x90, 0x00, 0x80, 0x01, 0x02, 0x97, 0x00],
    // 6: read always, update PIN1
    &[
        0x80, 0x01, 0x01, 0x90, 0x00, 0x80, 0x01, 0x02, 0xA4, 0x06, 0x83, 0x01, 0x01, 0x95, 0x01,
        0x08,
    ],
    // 7: directories: no administrative operation
    &[0x80, 0x01, 0x7F, 0x97, 0x00],
];

pub fn arr_content() -> Vec<u8> {
    let mut out = vec![0xFF; ARR_RECORDS.len() * usize::from(ARR_RECORD_LEN)];
    for (chunk, record) in out.chunks_mut(usize::from(ARR_RECORD_LEN)).zip(ARR_RECORDS) {
        if let Some(dst) = chunk.get_mut(..record.len()) {
            dst.copy_from_slice(record);
        }
    }
    out
}

/// The EF_ARR record that states an EF's access conditions.
fn arr_record(read: Access, update: Access) -> u8 {
    match (read, update) {
        (Always, Adm1) => 1,
        (Pin1, Adm1) => 2,
        (Pin1, Pin1) => 3,
        (Pin1, Never) => 4,
        (Always, Never) => 5,
        (Always, Pin1) => 6,
        // Not used by any EF of this card; the strictest record.
        _ => 7,
    }
}

/// The PIN status of the card, as the FCP of a directory reports it.
#[derive(Clone, Copy, Debug)]
pub struct PinStatus {
    pub pin1_enabled: bool,
}

/// FCP template of an EF (TS 102 221 §11.1.1.3.2).
pub fn ef_fcp(ef: &Ef) -> Vec<u8> {
    let mut body = Vec::with_capacity(32);
    match ef.structure {
        Structure::Transparent => tlv(&mut body, 0x82, &[0x41, 0x21]),
        Structure::LinearFixed { record_len } => {
            let records = u8::try_from(ef.records()).unwrap_or(0xFF);
            tlv(&mut body, 0x82, &[0x42, 0x21, 0x00, record_len, records]);
        }
    }
    tlv(&mut body, 0x83, &ef.fid.to_be_bytes());
    tlv(&mut body, 0x8A, &[0x05]); // life cycle: operational, activated
    let arr_fid: u16 = if ef.dir == Dir::Mf { 0x2F06 } else { 0x6F06 };
    let [a, b] = arr_fid.to_be_bytes();
    tlv(&mut body, 0x8B, &[a, b, arr_record(ef.read, ef.update)]);
    tlv(&mut body, 0x80, &u16::try_from(ef.size).unwrap_or(u16::MAX).to_be_bytes());
    match ef.sfi {
        Some(sfi) => tlv(&mut body, 0x88, &[sfi << 3]),
        None => tlv(&mut body, 0x88, &[]),
    }
    wrap(0x62, &body)
}

/// FCP template of the MF or ADF_USIM (TS 102 221 §11.1.1.3.1), with the PIN status template
/// DO listing PIN1 (01) and ADM1 (0A), PIN1's enabled bit first.
pub fn dir_fcp(dir: Dir, pins: PinStatus) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    tlv(&mut body, 0x82, &[0x78, 0x21]);
    match dir {
        Dir::Mf => tlv(&mut body, 0x83, &MF_FID.to_be_bytes()),
        Dir::Usim => {
            tlv(&mut body, 0x83, &CURRENT_ADF_FID.to_be_bytes());
            tlv(&mut body, 0x84, &USIM_AID);
        }
    }
    // Proprietary information: UICC characteristics (clock stop allowed, 5 V / 3 V / 1.8 V).
    tlv(&mut body, 0xA5, &[0x80, 0x01, 0x71]);
    tlv(&mut body, 0x8A, &[0x05]);
    tlv(&mut body, 0x8B, &[0x2F, 0x06, 7]);
    let ps_do = if pins.pin1_enabled { 0xC0 } else { 0x40 };
    tlv(&mut body, 0xC6, &[0x90, 0x01, ps_do, 0x83, 0x01, 0x01, 0x83, 0x01, 0x0A]);
    let total: usize = EFS.iter().filter(|e| e.dir == dir).map(|e| e.size).sum();
    tlv(&mut body, 0x81, &u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
    wrap(0x62, &body)
}

/// Appends a BER-TLV with a one-byte tag and a short (< 128) length.
fn tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    out.push(u8::try_from(value.len()).unwrap_or(0x7F));
    out.extend_from_slice(value);
}

fn wrap(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2);
    tlv(&mut out, tag, body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imsi_encoding_follows_ts_31_102() {
        // 15 digits (odd): parity nibble 9; the classic test IMSI 001010123456789.
        let imsi: Imsi = "001010123456789".parse().unwrap();
        assert_eq!(hex::encode(encode_imsi(&imsi)), "080910101032547698");
        // 14 digits (even): parity nibble 1, last high nibble F.
        let imsi: Imsi = "26201012345678".parse().unwrap();
        assert_eq!(hex::encode(encode_imsi(&imsi)), "0821261010325476f8");
        assert_eq!(decode_imsi(&encode_imsi(&imsi)).unwrap(), "26201012345678");
        let imsi: Imsi = "310150123456789".parse().unwrap();
        assert_eq!(decode_imsi(&encode_imsi(&imsi)).unwrap(), "310150123456789");
        assert_eq!(decode_imsi(&[0x09, 0x09]), None);
    }

    #[test]
    fn iccid_is_swapped_bcd() {
        let iccid: Iccid = "89883030000000000015".parse().unwrap();
        assert_eq!(hex::encode(encode_iccid(&iccid)), "98880303000000000051");
        let iccid: Iccid = "8949000000000000001".parse().unwrap();
        assert_eq!(hex::encode(encode_iccid(&iccid)), "989400000000000000f1");
    }

    #[test]
    fn file_table_is_consistent() {
        for e in &EFS {
            assert_eq!(EFS.iter().filter(|o| o.dir == e.dir && o.fid == e.fid).count(), 1);
            if let Some(sfi) = e.sfi {
                assert!(sfi < 0x1F);
                assert_eq!(ef_by_sfi(e.dir, sfi), Some(e), "{}", e.name);
            }
            assert!(ef_fcp(e).len() < 0x80, "FCP lengths are short BER lengths");
        }
        assert_eq!(dir_content().len(), ef_by_name("EF_DIR").unwrap().size);
        assert_eq!(arr_content().len(), ef_by_name("EF_ARR").unwrap().size);
        let imsi: Imsi = "001010123456789".parse().unwrap();
        for e in EFS.iter().filter(|e| e.source == Source::Stored) {
            assert_eq!(default_content(e, &imsi, 2).len(), e.size, "{}", e.name);
        }
    }

    #[test]
    fn services_and_access_class() {
        let ust =
            default_content(ef_by_name("EF_UST").unwrap(), &"001010123456789".parse().unwrap(), 2);
        assert!(service_available(&ust, 27) && service_available(&ust, 38));
        assert!(
            !service_available(&ust, 1)
                && !service_available(&ust, 0)
                && !service_available(&ust, 200)
        );
        assert_eq!(access_class(&"001010123456789".parse().unwrap()), [0x02, 0x00]);
        assert_eq!(access_class(&"001010123456780".parse().unwrap()), [0x00, 0x01]);
    }

    #[test]
    fn fcp_templates_are_well_formed() {
        let fcp = ef_fcp(ef_by_name("EF_IMSI").unwrap());
        assert_eq!(fcp[0], 0x62);
        assert_eq!(usize::from(fcp[1]), fcp.len() - 2);
        assert_eq!(hex::encode(&fcp[2..]), "8202412183026f078a01058b036f060480020009880138");
        let fcp = dir_fcp(Dir::Usim, PinStatus { pin1_enabled: false });
        assert_eq!(usize::from(fcp[1]), fcp.len() - 2);
        assert!(fcp.windows(18).any(|w| w[..2] == [0x84, 0x10] && w[2..] == USIM_AID));
    }
}
