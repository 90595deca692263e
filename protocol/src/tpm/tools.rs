//! The file formats of tpm2-tools 5.4 that `tpm2_quote`, `tpm2_checkquote`,
//! `tpm2_pcrread`, `tpm2_makecredential` and `tpm2_activatecredential` read and write:
//!
//! - `quote.msg` (`-m`): the marshalled TPMS_ATTEST ([`Attest`](super::attest::Attest)).
//! - `quote.sig` (`-s`, format `tss`): the marshalled TPMT_SIGNATURE
//!   ([`Signature`](super::signature::Signature)).
//! - `quote.pcrs` (`tpm2_quote -o`, `tpm2_checkquote -f`, format `serialized`, the default):
//!   [`QuotePcrs`], a memory dump of the C structures (tpm2-tools `lib/pcr.c`,
//!   `pcr_fwrite_serialized`): TPML_PCR_SELECTION (132 bytes: u32 count, 16 ×
//!   {u16 hash, u8 sizeofSelect, u8 pcrSelect[4], 1 byte padding}), u32 count of digest
//!   lists, then that many TPML_DIGEST (532 bytes: u32 count, 8 × {u16 size, 64 bytes}),
//!   integers little-endian (tpm2-tools writes `htole`).
//! - PCR values (`tpm2_pcrread -o`, `tpm2_quote -F values`, `tpm2_createpolicy -f`): the
//!   selected values concatenated in selection order ([`read_pcr_values`]).
//! - The credential blob (`tpm2_makecredential -o`, `tpm2_activatecredential -i`):
//!   big-endian magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET
//!   (`tools/tpm2_makecredential.c`, `write_cred_and_secret`).

use super::credential::MadeCredential;
use super::error::{PcrError, WireError};
use super::pcr::{MAX_BANKS, PcrSelection, PcrValues};
use super::wire::{EncryptedSecret, IdObject, Marshal, Reader, Unmarshal, put_u32};

/// The magic of tpm2-tools' own file headers (`lib/files.c`).
pub const TPM2_TOOLS_MAGIC: u32 = 0xBADC_C0DE;
const CREDENTIAL_FILE_VERSION: u32 = 1;

/// sizeof(TPMS_PCR_SELECTION) and sizeof(TPML_PCR_SELECTION) on the C side.
const C_PCR_SELECTION: usize = 8;
const C_PCR_SELECTION_LIST: usize = 4 + MAX_BANKS * C_PCR_SELECTION;
/// TPML_DIGEST holds 8 digests of sizeof(TPMU_HA) = 64 bytes; sizeof = 532.
const DIGESTS_PER_LIST: usize = 8;
const C_DIGEST: usize = 2 + 64;
const C_DIGEST_LIST: usize = 4 + DIGESTS_PER_LIST * C_DIGEST;
/// TPM2_MAX_PCRS: the length of tpm2_pcrs.pcr_values, the most lists tpm2_checkquote reads.
const MAX_DIGEST_LISTS: usize = 32;

/// A `quote.pcrs` file: the quoted selection and the PCR values tpm2_quote read with it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct QuotePcrs {
    pub selection: PcrSelection,
    pub values: PcrValues,
}

impl QuotePcrs {
    /// Parses the `serialized` format. Every selected PCR must have exactly one value of
    /// its bank's size, and nothing may follow the last digest list.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let selection = read_c_selection(&mut r)?;
        let lists = le_u32(&mut r, "quote.pcrs digest list count")?;
        if lists > MAX_DIGEST_LISTS {
            return Err(WireError::TooLarge {
                what: "quote.pcrs digest list count",
                size: lists,
                max: MAX_DIGEST_LISTS,
            });
        }
        let mut digests = Vec::new();
        for _ in 0..lists {
            let mut list = Reader::new(r.take(C_DIGEST_LIST, "TPML_DIGEST")?);
            let count = le_u32(&mut list, "TPML_DIGEST.count")?;
            if count > DIGESTS_PER_LIST {
                return Err(WireError::TooLarge {
                    what: "TPML_DIGEST.count",
                    size: count,
                    max: DIGESTS_PER_LIST,
                });
            }
            for _ in 0..count {
                let mut slot = Reader::new(list.take(C_DIGEST, "TPM2B_DIGEST")?);
                let size = usize::from(u16::from_le_bytes(slot.array("TPM2B_DIGEST.size")?));
                if size > 64 {
                    return Err(WireError::TooLarge { what: "TPM2B_DIGEST.size", size, max: 64 });
                }
                digests.push(slot.take(size, "TPM2B_DIGEST.buffer")?);
            }
        }
        r.finish("quote.pcrs")?;
        let selected = selection.count();
        if digests.len() != selected {
            return Err(WireError::SizeMismatch {
                what: "quote.pcrs values",
                declared: selected,
                actual: digests.len(),
            });
        }
        let values = collect_values(&selection, digests.into_iter())?;
        Ok(Self { selection, values })
    }

    /// Writes the `serialized` format, values in selection order, 8 per TPML_DIGEST.
    pub fn to_bytes(&self) -> Result<Vec<u8>, PcrError> {
        let values = self.selection.values_in_order(&self.values)?;
        let max = MAX_DIGEST_LISTS * DIGESTS_PER_LIST;
        if values.len() > max {
            return Err(PcrError::TooManyValues { count: values.len(), max });
        }
        let mut out =
            Vec::with_capacity(C_PCR_SELECTION_LIST + 4 + C_DIGEST_LIST * values.len().div_ceil(8));
        out.extend_from_slice(&u32_le(self.selection.banks().len()));
        for i in 0..MAX_BANKS {
            let mut entry = [0u8; C_PCR_SELECTION];
            if let Some(bank) = self.selection.banks().get(i) {
                entry[..2].copy_from_slice(&bank.hash().id().to_le_bytes());
                entry[2] = bank.size_of_select();
                let bitmap = bank.bitmap();
                entry[3..3 + bitmap.len()].copy_from_slice(bitmap);
            }
            out.extend_from_slice(&entry);
        }
        let chunks: Vec<_> = values.chunks(DIGESTS_PER_LIST).collect();
        out.extend_from_slice(&u32_le(chunks.len()));
        for chunk in chunks {
            out.extend_from_slice(&u32_le(chunk.len()));
            for i in 0..DIGESTS_PER_LIST {
                let mut slot = [0u8; C_DIGEST];
                if let Some(value) = chunk.get(i) {
                    slot[..2]
                        .copy_from_slice(&u16::try_from(value.len()).unwrap_or(0).to_le_bytes());
                    slot[2..2 + value.len()].copy_from_slice(value);
                }
                out.extend_from_slice(&slot);
            }
        }
        Ok(out)
    }
}

/// Parses PCR values written as a plain concatenation in the order of `selection`
/// (`tpm2_pcrread -o`, `tpm2_quote -F values`).
pub fn read_pcr_values(selection: &PcrSelection, bytes: &[u8]) -> Result<PcrValues, WireError> {
    let mut r = Reader::new(bytes);
    let mut digests = Vec::new();
    for (bank, _) in selection.iter() {
        digests.push(r.take(bank.size(), "PCR value")?);
    }
    r.finish("PCR values file")?;
    collect_values(selection, digests.into_iter())
}

/// The selected values concatenated in selection order.
pub fn write_pcr_values(selection: &PcrSelection, values: &PcrValues) -> Result<Vec<u8>, PcrError> {
    Ok(selection.values_in_order(values)?.concat())
}

impl MadeCredential {
    /// The file `tpm2_makecredential -o` writes and `tpm2_activatecredential -i` reads.
    pub fn to_tpm2_tools(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(8 + 2 + self.id_object.len() + 2 + self.encrypted_secret.len());
        put_u32(&mut out, TPM2_TOOLS_MAGIC);
        put_u32(&mut out, CREDENTIAL_FILE_VERSION);
        self.id_object.marshal(&mut out);
        self.encrypted_secret.marshal(&mut out);
        out
    }

    pub fn from_tpm2_tools(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let magic = r.u32("credential file magic")?;
        if magic != TPM2_TOOLS_MAGIC {
            return Err(WireError::BadValue {
                what: "credential file magic",
                value: u64::from(magic),
            });
        }
        let version = r.u32("credential file version")?;
        if version != CREDENTIAL_FILE_VERSION {
            return Err(WireError::BadValue {
                what: "credential file version",
                value: u64::from(version),
            });
        }
        let id_object = IdObject::read(&mut r, "TPM2B_ID_OBJECT")?;
        let encrypted_secret = EncryptedSecret::read(&mut r, "TPM2B_ENCRYPTED_SECRET")?;
        r.finish("credential file")?;
        Ok(Self { id_object, encrypted_secret })
    }
}

/// Reads the C layout of TPML_PCR_SELECTION; entries past `count` are ignored, as
/// tpm2_checkquote ignores them.
fn read_c_selection(r: &mut Reader<'_>) -> Result<PcrSelection, WireError> {
    let count = le_u32(r, "TPML_PCR_SELECTION.count")?;
    if count > MAX_BANKS {
        return Err(WireError::TooLarge {
            what: "TPML_PCR_SELECTION.count",
            size: count,
            max: MAX_BANKS,
        });
    }
    let mut wire = u32::try_from(count).unwrap_or(0).to_be_bytes().to_vec();
    for i in 0..MAX_BANKS {
        let mut e = Reader::new(r.take(C_PCR_SELECTION, "TPMS_PCR_SELECTION")?);
        let hash = u16::from_le_bytes(e.array("TPMS_PCR_SELECTION.hash")?);
        let size = e.u8("TPMS_PCR_SELECTION.sizeofSelect")?;
        let select = e.array::<4>("TPMS_PCR_SELECTION.pcrSelect")?;
        if i < count {
            // Reuse the canonical parser, which checks the hash and sizeofSelect.
            wire.extend_from_slice(&hash.to_be_bytes());
            wire.push(size);
            wire.extend_from_slice(select.get(..usize::from(size)).unwrap_or(&select));
        }
    }
    let selection = PcrSelection::from_bytes(&wire)?;
    Ok(selection)
}

fn collect_values<'a>(
    selection: &PcrSelection,
    digests: impl Iterator<Item = &'a [u8]>,
) -> Result<PcrValues, WireError> {
    let mut values = PcrValues::new();
    for ((bank, pcr), value) in selection.iter().zip(digests) {
        if value.len() != bank.size() {
            return Err(WireError::SizeMismatch {
                what: "PCR value",
                declared: bank.size(),
                actual: value.len(),
            });
        }
        match values.insert(bank, pcr, value.to_vec()) {
            Ok(Some(previous)) if previous != value => {
                return Err(WireError::BadValue {
                    what: "PCR listed twice with different values",
                    value: u64::from(pcr),
                });
            }
            Ok(_) => {}
            Err(_) => return Err(WireError::BadValue { what: "PCR index", value: u64::from(pcr) }),
        }
    }
    Ok(values)
}

fn le_u32(r: &mut Reader<'_>, what: &'static str) -> Result<usize, WireError> {
    let v = u32::from_le_bytes(r.array(what)?);
    Ok(usize::try_from(v).unwrap_or(usize::MAX))
}

fn u32_le(v: usize) -> [u8; 4] {
    u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::alg::HashAlg;

    /// The `quote.pcrs` tpm2_quote 5.4 wrote for `QUOTE_MSG` (sha256:0,1,2+sha1:0): 668
    /// bytes, given here as its non-zero runs (offset, bytes).
    fn real_quote_pcrs() -> Vec<u8> {
        let mut f = vec![0u8; 668];
        for (at, run) in [
            (0, "020000000b000307"),
            (12, "04000301"),
            (
                132,
                "010000000400000020009ef814b42fa0be12d197c44d3e8e03441a4b1118237658368ba1351090e556ed",
            ),
            (206, "20"),
            (272, "20"),
            (338, "14"),
        ] {
            let run = hex::decode(run).unwrap();
            f[at..at + run.len()].copy_from_slice(&run);
        }
        f
    }

    #[test]
    fn reads_and_writes_a_real_quote_pcrs_file() {
        let bytes = real_quote_pcrs();
        let pcrs = QuotePcrs::from_bytes(&bytes).unwrap();
        assert_eq!(pcrs.selection.to_string(), "sha256:0,1,2+sha1:0");
        assert_eq!(pcrs.values.get(HashAlg::Sha1, 0).unwrap(), &[0u8; 20]);
        assert_eq!(
            hex::encode(
                pcrs.selection.pcr_digest(HashAlg::Sha256, &pcrs.values).unwrap().as_bytes()
            ),
            "8e7c5dece68fd1da5739f5126efdf9baf79400c832b13d92c7be6c9127377c5d"
        );
        assert_eq!(pcrs.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn refuses_malformed_quote_pcrs() {
        let good = real_quote_pcrs();
        for n in [0, 4, 131, 135, 136, 667] {
            assert!(QuotePcrs::from_bytes(&good[..n]).is_err(), "prefix {n}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(QuotePcrs::from_bytes(&long), Err(WireError::TrailingBytes { .. })));
        let mut banks = good.clone();
        banks[0] = 17;
        assert!(matches!(QuotePcrs::from_bytes(&banks), Err(WireError::TooLarge { .. })));
        let mut lists = good.clone();
        lists[132] = 33;
        assert!(matches!(QuotePcrs::from_bytes(&lists), Err(WireError::TooLarge { .. })));
        let mut digests = good.clone();
        digests[136] = 9;
        assert!(matches!(QuotePcrs::from_bytes(&digests), Err(WireError::TooLarge { .. })));
        let mut fewer = good.clone();
        fewer[136] = 3;
        assert!(matches!(QuotePcrs::from_bytes(&fewer), Err(WireError::SizeMismatch { .. })));
        let mut size = good.clone();
        size[140] = 0x41;
        assert!(matches!(QuotePcrs::from_bytes(&size), Err(WireError::TooLarge { .. })));
        let mut short = good.clone();
        short[140] = 0x1F;
        assert!(matches!(QuotePcrs::from_bytes(&short), Err(WireError::SizeMismatch { .. })));
    }

    #[test]
    fn many_values_split_into_lists_of_eight() {
        let selection: PcrSelection = "sha256:all+sha1:0,1".parse().unwrap();
        let mut values = PcrValues::new();
        for (bank, pcr) in selection.iter() {
            values.insert(bank, pcr, vec![pcr; bank.size()]).unwrap();
        }
        let pcrs = QuotePcrs { selection, values };
        let bytes = pcrs.to_bytes().unwrap();
        assert_eq!(bytes.len(), 132 + 4 + 4 * 532);
        assert_eq!(QuotePcrs::from_bytes(&bytes).unwrap(), pcrs);
        let flat = write_pcr_values(&pcrs.selection, &pcrs.values).unwrap();
        assert_eq!(flat.len(), 24 * 32 + 2 * 20);
        assert_eq!(read_pcr_values(&pcrs.selection, &flat).unwrap(), pcrs.values);
        assert!(read_pcr_values(&pcrs.selection, &flat[1..]).is_err());
    }

    #[test]
    fn credential_file_round_trips_and_checks_its_header() {
        let made = MadeCredential {
            id_object: IdObject::new(vec![1; 68]).unwrap(),
            encrypted_secret: EncryptedSecret::new(vec![2; 68]).unwrap(),
        };
        let bytes = made.to_tpm2_tools();
        assert_eq!(&bytes[..10], &[0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1, 0, 68]);
        assert_eq!(MadeCredential::from_tpm2_tools(&bytes).unwrap(), made);
        let mut magic = bytes.clone();
        magic[0] = 0;
        assert!(matches!(MadeCredential::from_tpm2_tools(&magic), Err(WireError::BadValue { .. })));
        let mut version = bytes.clone();
        version[7] = 2;
        assert!(matches!(
            MadeCredential::from_tpm2_tools(&version),
            Err(WireError::BadValue { .. })
        ));
        let mut big = bytes.clone();
        big[8..10].copy_from_slice(&133u16.to_be_bytes());
        assert!(matches!(
            MadeCredential::from_tpm2_tools(&big),
            Err(WireError::TooLarge { max: 132, .. })
        ));
        assert!(MadeCredential::from_tpm2_tools(&bytes[..bytes.len() - 1]).is_err());
    }
}
