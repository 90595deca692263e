//! TPMS_ATTEST, the structure a TPM signs in TPM2_Quote and TPM2_Certify (TPM 2.0 Part 2
//! §10.12.12), with TPMS_CLOCK_INFO (§10.11.1), TPMS_QUOTE_INFO (§10.12.4) and
//! TPMS_CERTIFY_INFO (§10.12.3). Other attestation types (time, audit, creation, NV) are
//! kept as their raw bytes.
//!
//! Parsing does not judge: a wrong magic or an unexpected type parses, so that the verifier
//! can refuse it with its own, specific error. [`Attest::is_tpm_generated`] and the type
//! accessors are what it checks.

use super::error::WireError;
use super::pcr::PcrSelection;
use super::wire::{Data, Digest, Marshal, Name, Reader, Unmarshal, put_u16, put_u32, put_u64};

/// TPM_GENERATED_VALUE: the magic of every TPMS_ATTEST the TPM produced itself.
pub const TPM_GENERATED_VALUE: u32 = 0xFF54_4347;
/// TPM_ST_ATTEST_CERTIFY.
pub const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;
/// TPM_ST_ATTEST_QUOTE.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// sizeof(TPMS_ATTEST) in tpm2-tss: the largest TPM2B_ATTEST body accepted.
pub const MAX_ATTEST_SIZE: usize = 2304;

/// TPMS_CLOCK_INFO.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since its last TPM2_Clear.
    pub clock: u64,
    /// TPM resets (TPM2_Startup(CLEAR) after a TPM reset) since the last TPM2_Clear.
    pub reset_count: u32,
    /// TPM restarts and resumes since the last reset.
    pub restart_count: u32,
    /// Whether `clock` is known not to have gone backwards (TPMI_YES_NO).
    pub safe: bool,
}

/// TPMS_QUOTE_INFO.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct QuoteInfo {
    pub pcr_select: PcrSelection,
    pub pcr_digest: Digest,
}

/// TPMS_CERTIFY_INFO.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct CertifyInfo {
    /// Name of the certified object.
    pub name: Name,
    pub qualified_name: Name,
}

/// TPMU_ATTEST, selected by TPMS_ATTEST.type.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Attested {
    Quote(QuoteInfo),
    Certify(CertifyInfo),
    /// Any other TPMI_ST_ATTEST (or an unknown tag): the tag and the bytes after it.
    Other {
        tag: u16,
        body: Vec<u8>,
    },
}

/// TPMS_ATTEST.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Attest {
    pub magic: u32,
    /// Qualified name of the signing key.
    pub qualified_signer: Name,
    /// The caller's qualifying data (the verifier's nonce).
    pub extra_data: Data,
    pub clock_info: ClockInfo,
    /// Vendor-specific firmware version.
    pub firmware_version: u64,
    pub attested: Attested,
}

impl Attest {
    /// The magic is TPM_GENERATED_VALUE, i.e. the TPM made this structure itself rather
    /// than signing caller-supplied bytes that look like one.
    pub fn is_tpm_generated(&self) -> bool {
        self.magic == TPM_GENERATED_VALUE
    }

    /// TPMS_ATTEST.type.
    pub fn tag(&self) -> u16 {
        match &self.attested {
            Attested::Quote(_) => TPM_ST_ATTEST_QUOTE,
            Attested::Certify(_) => TPM_ST_ATTEST_CERTIFY,
            Attested::Other { tag, .. } => *tag,
        }
    }

    pub fn quote(&self) -> Option<&QuoteInfo> {
        match &self.attested {
            Attested::Quote(q) => Some(q),
            _ => None,
        }
    }

    pub fn certify(&self) -> Option<&CertifyInfo> {
        match &self.attested {
            Attested::Certify(c) => Some(c),
            _ => None,
        }
    }

    /// Parses a TPM2B_ATTEST (the form TPM2_Quote returns, before tpm2-tools strips the size).
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let body = r.sized(MAX_ATTEST_SIZE, "TPM2B_ATTEST.size")?;
        r.finish("TPM2B_ATTEST")?;
        Self::from_bytes(body)
    }
}

impl Marshal for Attest {
    fn marshal(&self, out: &mut Vec<u8>) {
        put_u32(out, self.magic);
        put_u16(out, self.tag());
        self.qualified_signer.marshal(out);
        self.extra_data.marshal(out);
        put_u64(out, self.clock_info.clock);
        put_u32(out, self.clock_info.reset_count);
        put_u32(out, self.clock_info.restart_count);
        out.push(u8::from(self.clock_info.safe));
        put_u64(out, self.firmware_version);
        match &self.attested {
            Attested::Quote(q) => {
                q.pcr_select.marshal(out);
                q.pcr_digest.marshal(out);
            }
            Attested::Certify(c) => {
                c.name.marshal(out);
                c.qualified_name.marshal(out);
            }
            Attested::Other { body, .. } => out.extend_from_slice(body),
        }
    }
}

impl Unmarshal for Attest {
    const NAME: &'static str = "TPMS_ATTEST";

    /// Reads a TPMS_ATTEST. For types kept raw the body runs to the end of the input, so
    /// parse those with [`Unmarshal::from_bytes`] on exactly the attestation bytes.
    fn unmarshal(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let magic = r.u32("TPMS_ATTEST.magic")?;
        let tag = r.u16("TPMS_ATTEST.type")?;
        let qualified_signer = Name::read(r, "TPMS_ATTEST.qualifiedSigner")?;
        let extra_data = Data::read(r, "TPMS_ATTEST.extraData")?;
        let clock = r.u64("TPMS_CLOCK_INFO.clock")?;
        let reset_count = r.u32("TPMS_CLOCK_INFO.resetCount")?;
        let restart_count = r.u32("TPMS_CLOCK_INFO.restartCount")?;
        let safe = match r.u8("TPMS_CLOCK_INFO.safe")? {
            0 => false,
            1 => true,
            other => {
                return Err(WireError::BadValue {
                    what: "TPMS_CLOCK_INFO.safe",
                    value: u64::from(other),
                });
            }
        };
        let clock_info = ClockInfo { clock, reset_count, restart_count, safe };
        let firmware_version = r.u64("TPMS_ATTEST.firmwareVersion")?;
        let attested = match tag {
            TPM_ST_ATTEST_QUOTE => Attested::Quote(QuoteInfo {
                pcr_select: PcrSelection::unmarshal(r)?,
                pcr_digest: Digest::read(r, "TPMS_QUOTE_INFO.pcrDigest")?,
            }),
            TPM_ST_ATTEST_CERTIFY => Attested::Certify(CertifyInfo {
                name: Name::read(r, "TPMS_CERTIFY_INFO.name")?,
                qualified_name: Name::read(r, "TPMS_CERTIFY_INFO.qualifiedName")?,
            }),
            tag => {
                let body = r.take_rest();
                if body.len() > MAX_ATTEST_SIZE {
                    return Err(WireError::TooLarge {
                        what: "TPMS_ATTEST.attested",
                        size: body.len(),
                        max: MAX_ATTEST_SIZE,
                    });
                }
                Attested::Other { tag, body: body.to_vec() }
            }
        };
        Ok(Self { magic, qualified_signer, extra_data, clock_info, firmware_version, attested })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tpm::alg::HashAlg;

    /// `tpm2_quote -c ak.ctx -l sha256:0,1,2+sha1:0 -q 0102030405 -m quote.msg -g sha256`
    /// on swtpm 0.7.1 (tpm2-tools 5.4), signed by the AK of `public::tests::AK_ECC_TPM2B`.
    pub(crate) const QUOTE_MSG: &str = "ff54434780180022000b446f6b404a7cd384f86ddcfd8fed8bae31b98e325fa4e82f8725085aedee\
        6d9a0005010203040500000000000015f7000000010000000001201910230016363600000002000b\
        0307000000040301000000208e7c5dece68fd1da5739f5126efdf9baf79400c832b13d92c7be6c91\
        27377c5d";

    pub(crate) fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    #[test]
    fn parses_a_real_quote() {
        let bytes = unhex(QUOTE_MSG);
        let attest = Attest::from_bytes(&bytes).unwrap();
        assert!(attest.is_tpm_generated());
        assert_eq!(attest.tag(), TPM_ST_ATTEST_QUOTE);
        assert_eq!(attest.extra_data.as_bytes(), &[1, 2, 3, 4, 5]);
        assert_eq!(
            hex::encode(attest.qualified_signer.as_bytes()),
            "000b446f6b404a7cd384f86ddcfd8fed8bae31b98e325fa4e82f8725085aedee6d9a"
        );
        assert_eq!(attest.clock_info.reset_count, 1);
        assert_eq!(attest.clock_info.restart_count, 0);
        assert!(attest.clock_info.safe);
        let quote = attest.quote().unwrap();
        assert_eq!(quote.pcr_select.to_string(), "sha256:0,1,2+sha1:0");
        assert_eq!(
            hex::encode(quote.pcr_digest.as_bytes()),
            "8e7c5dece68fd1da5739f5126efdf9baf79400c832b13d92c7be6c9127377c5d"
        );
        assert!(attest.certify().is_none());
        assert_eq!(attest.to_bytes(), bytes);
        let mut tpm2b = (bytes.len() as u16).to_be_bytes().to_vec();
        tpm2b.extend(&bytes);
        assert_eq!(Attest::from_tpm2b(&tpm2b).unwrap(), attest);
        let _ = HashAlg::Sha256;
    }

    #[test]
    fn refuses_malformed_attestations() {
        let good = unhex(QUOTE_MSG);
        for n in 0..good.len() {
            assert!(Attest::from_bytes(&good[..n]).is_err(), "prefix {n}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(Attest::from_bytes(&long), Err(WireError::TrailingBytes { .. })));
        // safe = 2
        let mut safe = good.clone();
        let at = 4 + 2 + 36 + 7 + 16;
        assert_eq!(safe[at], 1);
        safe[at] = 2;
        assert!(matches!(Attest::from_bytes(&safe), Err(WireError::BadValue { .. })));
        // extraData claims 67 bytes (TPM2B_DATA holds at most 66).
        let mut extra = good.clone();
        extra[4 + 2 + 36 + 1] = 67;
        assert!(matches!(Attest::from_bytes(&extra), Err(WireError::TooLarge { max: 66, .. })));
    }

    #[test]
    fn wrong_magic_and_other_types_parse_for_the_verifier_to_judge() {
        let mut bytes = unhex(QUOTE_MSG);
        bytes[0] = 0;
        let attest = Attest::from_bytes(&bytes).unwrap();
        assert!(!attest.is_tpm_generated());
        // TPM_ST_ATTEST_TIME: kept raw.
        let mut time = unhex(QUOTE_MSG);
        time[4..6].copy_from_slice(&0x8019u16.to_be_bytes());
        let attest = Attest::from_bytes(&time).unwrap();
        assert_eq!(attest.tag(), 0x8019);
        assert!(attest.quote().is_none());
        assert_eq!(attest.to_bytes(), time);
    }

    #[test]
    fn certify_round_trips() {
        let attest = Attest {
            magic: TPM_GENERATED_VALUE,
            qualified_signer: Name::new(vec![0, 0x0b, 1, 2]).unwrap(),
            extra_data: Data::new(vec![9; 32]).unwrap(),
            clock_info: ClockInfo { clock: 7, reset_count: 1, restart_count: 2, safe: false },
            firmware_version: 0x2019_1023_0016_3636,
            attested: Attested::Certify(CertifyInfo {
                name: Name::new(vec![0, 0x0b, 3]).unwrap(),
                qualified_name: Name::new(vec![0, 0x0b, 4]).unwrap(),
            }),
        };
        let bytes = attest.to_bytes();
        assert_eq!(Attest::from_bytes(&bytes).unwrap(), attest);
        assert_eq!(attest.tag(), TPM_ST_ATTEST_CERTIFY);
    }
}
