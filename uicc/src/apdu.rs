//! Command APDUs and status words: ISO/IEC 7816-4 §5.1 (the four cases, short and extended
//! length) and §5.6 (status words), with the UICC meanings of ETSI TS 102 221 §10.2.
//!
//! Parsing is total: every byte string either becomes a [`Command`] or a status word that says
//! what is wrong with it, without panicking and without allocating.

use std::fmt;

/// A status word SW1 SW2.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sw(pub u16);

impl Sw {
    pub const OK: Sw = Sw(0x9000);
    /// Authentication error, incorrect MAC (TS 31.102 §7.3.1; SW1 98 is TS 102 221's).
    pub const AUTH_MAC_FAILURE: Sw = Sw(0x9862);
    pub const MEMORY_PROBLEM: Sw = Sw(0x6581);
    pub const WRONG_LENGTH: Sw = Sw(0x6700);
    pub const LOGICAL_CHANNEL_NOT_SUPPORTED: Sw = Sw(0x6881);
    pub const SECURE_MESSAGING_NOT_SUPPORTED: Sw = Sw(0x6882);
    pub const CHAINING_NOT_SUPPORTED: Sw = Sw(0x6884);
    pub const INCOMPATIBLE_FILE_STRUCTURE: Sw = Sw(0x6981);
    pub const SECURITY_NOT_SATISFIED: Sw = Sw(0x6982);
    pub const AUTH_METHOD_BLOCKED: Sw = Sw(0x6983);
    pub const CONDITIONS_NOT_SATISFIED: Sw = Sw(0x6985);
    pub const NO_CURRENT_EF: Sw = Sw(0x6986);
    pub const WRONG_DATA: Sw = Sw(0x6A80);
    pub const FILE_NOT_FOUND: Sw = Sw(0x6A82);
    pub const RECORD_NOT_FOUND: Sw = Sw(0x6A83);
    pub const INCORRECT_P1_P2: Sw = Sw(0x6A86);
    pub const REFERENCED_DATA_NOT_FOUND: Sw = Sw(0x6A88);
    pub const WRONG_P1_P2: Sw = Sw(0x6B00);
    pub const INS_NOT_SUPPORTED: Sw = Sw(0x6D00);
    pub const CLA_NOT_SUPPORTED: Sw = Sw(0x6E00);
    pub const TECHNICAL_PROBLEM: Sw = Sw(0x6F00);

    /// 61xx: response bytes still available, to be fetched with GET RESPONSE (T=0).
    pub fn bytes_available(n: usize) -> Sw {
        Sw(0x6100 | low_byte(n))
    }

    /// 6Cxx: wrong Le; xx is the exact length available (T=0).
    pub fn wrong_le(n: usize) -> Sw {
        Sw(0x6C00 | low_byte(n))
    }

    /// 63Cx: verification failed, x retries left.
    pub fn verify_failed(retries: u8) -> Sw {
        Sw(0x63C0 | u16::from(retries.min(0x0F)))
    }

    pub fn to_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
}

/// The low byte of a length of at most 256 (256 is encoded as 00, as Le is).
fn low_byte(n: usize) -> u16 {
    (n & 0xFF) as u16
}

impl fmt::Debug for Sw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sw({:04X})", self.0)
    }
}

impl fmt::Display for Sw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

/// A parsed command APDU, borrowing its data field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command<'a> {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    /// The command data field (empty in cases 1 and 2).
    pub data: &'a [u8],
    /// Ne, the maximum number of response bytes expected (cases 2 and 4): 1..=256 for a short
    /// Le (00 means 256), 1..=65536 for an extended one.
    pub le: Option<usize>,
}

impl<'a> Command<'a> {
    /// Decodes one command APDU (ISO/IEC 7816-4 §5.1). Anything that is not exactly one of
    /// cases 1, 2S, 3S, 4S, 2E, 3E, 4E is "wrong length".
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Sw> {
        let Some((&[cla, ins, p1, p2], body)) = bytes.split_first_chunk::<4>() else {
            return Err(Sw::WRONG_LENGTH);
        };
        let header = |data, le| Command { cla, ins, p1, p2, data, le };
        let (data, le) = match body {
            [] => (&[][..], None),
            [le] => (&[][..], Some(short_ne(*le))),
            [0, rest @ ..] if rest.len() >= 2 => parse_extended(rest)?,
            [lc, rest @ ..] if *lc != 0 => {
                let lc = usize::from(*lc);
                match rest.len().checked_sub(lc) {
                    Some(0) => (rest, None),
                    Some(1) => {
                        let (data, le) = rest.split_at(lc);
                        (data, le.first().map(|&b| short_ne(b)))
                    }
                    _ => return Err(Sw::WRONG_LENGTH),
                }
            }
            _ => return Err(Sw::WRONG_LENGTH),
        };
        Ok(header(data, le))
    }

    /// True when the command carries no data field but expects response data (case 2): the
    /// T=0 answer to a too-short Le is then 6Cxx rather than 61xx.
    pub fn is_case_2(&self) -> bool {
        self.data.is_empty() && self.le.is_some()
    }
}

fn short_ne(le: u8) -> usize {
    if le == 0 { 256 } else { usize::from(le) }
}

fn extended_ne(hi: u8, lo: u8) -> usize {
    match usize::from(u16::from_be_bytes([hi, lo])) {
        0 => 65536,
        n => n,
    }
}

/// The body after the 00 that announces extended length: Le (2E), Lc ‖ data (3E) or
/// Lc ‖ data ‖ Le (4E).
fn parse_extended(rest: &[u8]) -> Result<(&[u8], Option<usize>), Sw> {
    match rest {
        [hi, lo] => Ok((&[][..], Some(extended_ne(*hi, *lo)))),
        [hi, lo, tail @ ..] => {
            let lc = usize::from(u16::from_be_bytes([*hi, *lo]));
            if lc == 0 {
                return Err(Sw::WRONG_LENGTH);
            }
            match tail.len().checked_sub(lc) {
                Some(0) => Ok((tail, None)),
                Some(2) => {
                    let (data, le) = tail.split_at(lc);
                    match le {
                        [hi, lo] => Ok((data, Some(extended_ne(*hi, *lo)))),
                        _ => Err(Sw::WRONG_LENGTH),
                    }
                }
                _ => Err(Sw::WRONG_LENGTH),
            }
        }
        _ => Err(Sw::WRONG_LENGTH),
    }
}

/// Response data followed by the status word.
pub fn respond(data: &[u8], sw: Sw) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 2);
    out.extend_from_slice(data);
    out.extend_from_slice(&sw.to_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(hex: &str) -> Result<Command<'static>, Sw> {
        let bytes: &'static [u8] = Box::leak(hex::decode(hex).unwrap().into_boxed_slice());
        Command::parse(bytes)
    }

    #[test]
    fn the_seven_cases() {
        let c = parse("00a40004").unwrap();
        assert_eq!((c.data.len(), c.le), (0, None));
        assert_eq!(parse("00b0000000").unwrap().le, Some(256));
        assert_eq!(parse("00b0000009").unwrap().le, Some(9));
        let c = parse("00a40004023f00").unwrap();
        assert_eq!((c.data, c.le), (&[0x3f, 0x00][..], None));
        let c = parse("00a40004023f0000").unwrap();
        assert_eq!((c.data, c.le), (&[0x3f, 0x00][..], Some(256)));
        assert_eq!(parse("00b00000000000").unwrap().le, Some(65536));
        assert_eq!(parse("00b00000000102").unwrap().le, Some(258));
        let c = parse("00d600000000021122").unwrap();
        assert_eq!((c.data, c.le), (&[0x11, 0x22][..], None));
        let c = parse("00d6000000000211220010").unwrap();
        assert_eq!((c.data, c.le), (&[0x11, 0x22][..], Some(16)));
    }

    #[test]
    fn malformed_lengths_are_6700() {
        for bad in [
            "",
            "00",
            "00a400",
            "00a40004033f00",
            "00a40004013f0000",
            "00b000000000",
            "00b0000000000000",
            "00a400040000033f00",
        ] {
            assert_eq!(parse(bad).err(), Some(Sw::WRONG_LENGTH), "{bad}");
        }
    }

    #[test]
    fn status_word_helpers() {
        assert_eq!(Sw::bytes_available(256), Sw(0x6100));
        assert_eq!(Sw::bytes_available(0x35), Sw(0x6135));
        assert_eq!(Sw::wrong_le(9), Sw(0x6C09));
        assert_eq!(Sw::verify_failed(2), Sw(0x63C2));
        assert_eq!(respond(&[1, 2], Sw::OK), vec![1, 2, 0x90, 0x00]);
    }
}
