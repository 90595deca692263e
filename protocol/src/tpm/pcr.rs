//! PCR selections, PCR values and the PCR digest a quote signs: TPMS_PCR_SELECTION and
//! TPML_PCR_SELECTION (TPM 2.0 Part 2 §10.6.2, §10.9.7), the tpm2-tools selection syntax
//! (`sha256:0,1,2+sha1:0`, tpm2-tools `lib/pcr.c`), and pcrDigest = H(PCR values in
//! selection order) (TPM 2.0 Part 3 §18.4 TPM2_Quote, Part 1 §17.6.5 "PCR selection").
//!
//! Order matters everywhere: the TPM walks the banks in the order the selection lists them
//! and, within a bank, the PCRs in ascending index. [`PcrSelection::iter`] is that order.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::alg::HashAlg;
use super::error::{PcrError, WireError};
use super::wire::{Digest, Marshal, Reader, Unmarshal, put_u16, put_u32};

/// PCRs a PC Client TPM has in each bank (TCG PC Client Platform TPM Profile §4.6.1).
pub const PCR_COUNT: u8 = 24;
/// sizeofSelect that covers PCRs 0–23 (PCR_SELECT_MIN of the PC Client profile).
const SIZE_OF_SELECT: u8 = 3;
/// PCR_SELECT_MAX of tpm2-tss: the largest sizeofSelect accepted on the wire.
const PCR_SELECT_MAX: usize = 4;
/// TPM2_NUM_PCR_BANKS of tpm2-tss: the largest TPML_PCR_SELECTION.count accepted.
pub const MAX_BANKS: usize = 16;

/// TPMS_PCR_SELECTION: one bank and a bitmap of its selected PCRs. `sizeofSelect` is kept
/// as read, because the marshalled selection is hashed into policy digests.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BankSelection {
    hash: HashAlg,
    size_of_select: u8,
    select: [u8; PCR_SELECT_MAX],
}

impl BankSelection {
    /// Selects `pcrs` (each 0–23) of bank `hash`, with sizeofSelect 3.
    pub fn new(hash: HashAlg, pcrs: impl IntoIterator<Item = u8>) -> Result<Self, PcrError> {
        let mut select = [0u8; PCR_SELECT_MAX];
        for pcr in pcrs {
            if pcr >= PCR_COUNT {
                return Err(PcrError::IndexOutOfRange(u32::from(pcr)));
            }
            if let Some(byte) = select.get_mut(usize::from(pcr / 8)) {
                *byte |= 1 << (pcr % 8);
            }
        }
        Ok(Self { hash, size_of_select: SIZE_OF_SELECT, select })
    }

    /// PCRs 0–23 of bank `hash`.
    pub fn all(hash: HashAlg) -> Self {
        Self { hash, size_of_select: SIZE_OF_SELECT, select: [0xFF, 0xFF, 0xFF, 0] }
    }

    pub fn hash(&self) -> HashAlg {
        self.hash
    }

    pub fn size_of_select(&self) -> u8 {
        self.size_of_select
    }

    /// The pcrSelect bitmap (`size_of_select` bytes).
    pub fn bitmap(&self) -> &[u8] {
        self.select.get(..usize::from(self.size_of_select)).unwrap_or(&[])
    }

    pub fn contains(&self, pcr: u8) -> bool {
        self.bitmap().get(usize::from(pcr / 8)).is_some_and(|byte| byte & (1 << (pcr % 8)) != 0)
    }

    /// The selected PCR indices, ascending.
    pub fn pcrs(&self) -> impl Iterator<Item = u8> + '_ {
        let bits = u8::try_from(self.bitmap().len() * 8).unwrap_or(0);
        (0..bits).filter(move |&pcr| self.contains(pcr))
    }

    pub fn is_empty(&self) -> bool {
        self.bitmap().iter().all(|&b| b == 0)
    }
}

impl fmt::Debug for BankSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `sha256:0,1,2` as tpm2-tools writes it (`sha256:none` for an empty bank).
impl fmt::Display for BankSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.hash)?;
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, pcr) in self.pcrs().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{pcr}")?;
        }
        Ok(())
    }
}

impl Marshal for BankSelection {
    fn marshal(&self, out: &mut Vec<u8>) {
        put_u16(out, self.hash.id());
        out.push(self.size_of_select);
        out.extend_from_slice(self.bitmap());
    }
}

impl Unmarshal for BankSelection {
    const NAME: &'static str = "TPMS_PCR_SELECTION";
    fn unmarshal(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let id = r.u16("TPMS_PCR_SELECTION.hash")?;
        let hash = HashAlg::from_id(id)
            .ok_or(WireError::UnsupportedAlg { what: "TPMS_PCR_SELECTION.hash", id })?;
        let size_of_select = r.u8("TPMS_PCR_SELECTION.sizeofSelect")?;
        let size = usize::from(size_of_select);
        if size > PCR_SELECT_MAX {
            return Err(WireError::TooLarge {
                what: "TPMS_PCR_SELECTION.sizeofSelect",
                size,
                max: PCR_SELECT_MAX,
            });
        }
        let mut select = [0u8; PCR_SELECT_MAX];
        let bitmap = r.take(size, "TPMS_PCR_SELECTION.pcrSelect")?;
        if let Some(dst) = select.get_mut(..size) {
            dst.copy_from_slice(bitmap);
        }
        Ok(Self { hash, size_of_select, select })
    }
}

/// TPML_PCR_SELECTION: banks in the order given, at most [`MAX_BANKS`].
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct PcrSelection {
    banks: Vec<BankSelection>,
}

impl PcrSelection {
    pub fn new(banks: Vec<BankSelection>) -> Result<Self, PcrError> {
        if banks.len() > MAX_BANKS {
            return Err(PcrError::TooManyBanks { got: banks.len(), max: MAX_BANKS });
        }
        Ok(Self { banks })
    }

    pub fn banks(&self) -> &[BankSelection] {
        &self.banks
    }

    /// Every selected (bank, PCR) in TPM order: banks as listed, PCRs ascending.
    pub fn iter(&self) -> impl Iterator<Item = (HashAlg, u8)> + '_ {
        self.banks.iter().flat_map(|b| b.pcrs().map(move |pcr| (b.hash, pcr)))
    }

    /// Number of selected PCR values (a PCR selected in two entries counts twice).
    pub fn count(&self) -> usize {
        self.iter().count()
    }

    pub fn contains(&self, bank: HashAlg, pcr: u8) -> bool {
        self.banks.iter().any(|b| b.hash == bank && b.contains(pcr))
    }

    /// The selected values of `values` in TPM order.
    pub fn values_in_order<'v>(&self, values: &'v PcrValues) -> Result<Vec<&'v [u8]>, PcrError> {
        self.iter()
            .map(|(bank, pcr)| values.get(bank, pcr).ok_or(PcrError::MissingValue { bank, pcr }))
            .collect()
    }

    /// pcrDigest of TPM2_Quote and TPM2_PolicyPCR: `hash`(selected values in TPM order).
    pub fn pcr_digest(&self, hash: HashAlg, values: &PcrValues) -> Result<Digest, PcrError> {
        let parts = self.values_in_order(values)?;
        Ok(Digest::from_bounded(hash.digest_parts(&parts)))
    }
}

impl fmt::Debug for PcrSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PcrSelection({self})")
    }
}

/// The tpm2-tools form, banks joined by `+`.
impl fmt::Display for PcrSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, bank) in self.banks.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{bank}")?;
        }
        Ok(())
    }
}

/// Parses the tpm2-tools syntax: `BANK:LIST[+BANK:LIST…]` where BANK is `sha1`, `sha256`,
/// `sha384`, `sha512` or `sm3_256` and LIST is `all`, `none` or comma-separated decimal PCR indices
/// 0–23. Multi-digit indices with a leading zero are refused, because tpm2-tools reads
/// them as octal.
impl FromStr for PcrSelection {
    type Err = PcrError;
    fn from_str(s: &str) -> Result<Self, PcrError> {
        let syntax = |reason| PcrError::Syntax { input: s.to_owned(), reason };
        if s.is_empty() {
            return Err(syntax("empty"));
        }
        let mut banks = Vec::new();
        for part in s.split('+') {
            let (alg, list) = part.split_once(':').ok_or_else(|| syntax("expected BANK:PCRS"))?;
            let hash: HashAlg = alg.parse().map_err(|_| syntax("unknown bank"))?;
            let bank = match list {
                "all" => BankSelection::all(hash),
                "none" => BankSelection::new(hash, [])?,
                _ => {
                    let mut pcrs = Vec::new();
                    for item in list.split(',') {
                        let digits = !item.is_empty() && item.bytes().all(|c| c.is_ascii_digit());
                        if !digits {
                            return Err(syntax("PCR index is not a decimal number"));
                        }
                        if item.len() > 1 && item.starts_with('0') {
                            return Err(syntax("PCR index has a leading zero"));
                        }
                        let pcr: u32 = item.parse().map_err(|_| syntax("PCR index too large"))?;
                        let pcr = u8::try_from(pcr).map_err(|_| PcrError::IndexOutOfRange(pcr))?;
                        pcrs.push(pcr);
                    }
                    BankSelection::new(hash, pcrs)?
                }
            };
            banks.push(bank);
        }
        Self::new(banks)
    }
}

impl Marshal for PcrSelection {
    fn marshal(&self, out: &mut Vec<u8>) {
        put_u32(out, u32::try_from(self.banks.len()).unwrap_or(0));
        for bank in &self.banks {
            bank.marshal(out);
        }
    }
}

impl Unmarshal for PcrSelection {
    const NAME: &'static str = "TPML_PCR_SELECTION";
    fn unmarshal(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let count = r.u32("TPML_PCR_SELECTION.count")?;
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count > MAX_BANKS {
            return Err(WireError::TooLarge {
                what: "TPML_PCR_SELECTION.count",
                size: count,
                max: MAX_BANKS,
            });
        }
        let banks = (0..count).map(|_| BankSelection::unmarshal(r)).collect::<Result<_, _>>()?;
        Ok(Self { banks })
    }
}

/// PCR values by bank and index, each checked against its bank's digest size.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PcrValues {
    values: BTreeMap<(HashAlg, u8), Vec<u8>>,
}

impl PcrValues {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets PCR `pcr` of `bank`; returns the value it replaces.
    pub fn insert(
        &mut self,
        bank: HashAlg,
        pcr: u8,
        value: impl Into<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, PcrError> {
        let value = value.into();
        if usize::from(pcr) >= PCR_SELECT_MAX * 8 {
            return Err(PcrError::IndexOutOfRange(u32::from(pcr)));
        }
        if value.len() != bank.size() {
            return Err(PcrError::ValueSize { bank, pcr, expected: bank.size(), got: value.len() });
        }
        Ok(self.values.insert((bank, pcr), value))
    }

    pub fn get(&self, bank: HashAlg, pcr: u8) -> Option<&[u8]> {
        self.values.get(&(bank, pcr)).map(Vec::as_slice)
    }

    /// All values, by bank (TPM_ALG_ID order) then PCR index.
    pub fn iter(&self) -> impl Iterator<Item = (HashAlg, u8, &[u8])> {
        self.values.iter().map(|(&(bank, pcr), v)| (bank, pcr, v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl fmt::Debug for PcrValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(bank, pcr, v)| (format!("{bank}:{pcr}"), hex::encode(v))))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_tpm2_tools_syntax() {
        let sel: PcrSelection = "sha256:0,1,2+sha1:0".parse().unwrap();
        assert_eq!(sel.to_string(), "sha256:0,1,2+sha1:0");
        let order: Vec<_> = sel.iter().collect();
        assert_eq!(
            order,
            [(HashAlg::Sha256, 0), (HashAlg::Sha256, 1), (HashAlg::Sha256, 2), (HashAlg::Sha1, 0)]
        );
        // Indices are sorted within a bank, whatever order they were written in.
        let sel: PcrSelection = "sha256:7,3,3,0".parse().unwrap();
        assert_eq!(sel.to_string(), "sha256:0,3,7");
        assert_eq!("sha384:all".parse::<PcrSelection>().unwrap().count(), 24);
        assert_eq!("sha256:none".parse::<PcrSelection>().unwrap().to_string(), "sha256:none");
    }

    #[test]
    fn refuses_bad_selection_strings() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "md5:0",
            "sha256:0,,1",
            "sha256:x",
            "sha256:07",
            "sha256:-1",
            "+sha1:0",
            "sha256:0+",
        ] {
            assert!(matches!(bad.parse::<PcrSelection>(), Err(PcrError::Syntax { .. })), "{bad}");
        }
        assert_eq!("sha256:24".parse::<PcrSelection>(), Err(PcrError::IndexOutOfRange(24)));
        assert!(matches!(
            "sha256:4294967296".parse::<PcrSelection>(),
            Err(PcrError::Syntax { reason: "PCR index too large", .. })
        ));
        let many = vec!["sha1:0"; 17].join("+");
        assert_eq!(many.parse::<PcrSelection>(), Err(PcrError::TooManyBanks { got: 17, max: 16 }));
    }

    #[test]
    fn marshals_like_the_tpm() {
        // Bytes of the pcrSelect field of a quote made by tpm2_quote -l sha256:0,1,2+sha1:0 on swtpm.
        let wire = hex::decode("00000002000b03070000000403010000").unwrap();
        let sel = PcrSelection::from_bytes(&wire).unwrap();
        assert_eq!(sel.to_string(), "sha256:0,1,2+sha1:0");
        assert_eq!(sel.to_bytes(), wire);
    }

    #[test]
    fn sm3_256_is_a_bank() {
        // TPMS_PCR_SELECTION { hash = TPM_ALG_SM3_256 (0x0012), sizeofSelect 3, PCRs 0 and 7 }.
        let wire = hex::decode("00000001001203810000").unwrap();
        let sel = PcrSelection::from_bytes(&wire).unwrap();
        assert_eq!(sel.to_string(), "sm3_256:0,7");
        assert_eq!(sel.to_bytes(), wire);
        assert_eq!("sm3_256:0,7".parse::<PcrSelection>().unwrap(), sel);
        let mut values = PcrValues::new();
        values.insert(HashAlg::Sm3_256, 0, vec![1u8; 32]).unwrap();
        values.insert(HashAlg::Sm3_256, 7, vec![2u8; 32]).unwrap();
        assert!(matches!(
            values.insert(HashAlg::Sm3_256, 1, vec![0u8; 20]),
            Err(PcrError::ValueSize { expected: 32, got: 20, .. })
        ));
        let mut cat = vec![1u8; 32];
        cat.extend([2u8; 32]);
        let digest = sel.pcr_digest(HashAlg::Sha256, &values).unwrap();
        assert_eq!(digest.as_bytes(), HashAlg::Sha256.digest(&cat));
    }

    #[test]
    fn keeps_a_nonstandard_size_of_select() {
        let wire = hex::decode("00000001000b0401000080").unwrap();
        let sel = PcrSelection::from_bytes(&wire).unwrap();
        assert_eq!(sel.iter().map(|(_, p)| p).collect::<Vec<_>>(), [0, 31]);
        assert_eq!(sel.to_bytes(), wire);
        let wire = hex::decode("00000001000b00").unwrap();
        assert_eq!(PcrSelection::from_bytes(&wire).unwrap().count(), 0);
    }

    #[test]
    fn refuses_bad_wire_selections() {
        assert!(matches!(
            PcrSelection::from_bytes(&hex::decode("00000011").unwrap()),
            Err(WireError::TooLarge { .. })
        ));
        assert!(matches!(
            PcrSelection::from_bytes(&hex::decode("00000001000b050000000000").unwrap()),
            Err(WireError::TooLarge { .. })
        ));
        // TPM_ALG_SHA3_256 is registered but not a bank we can compute.
        assert!(matches!(
            PcrSelection::from_bytes(&hex::decode("000000010027030000").unwrap()),
            Err(WireError::UnsupportedAlg { id: 0x27, .. })
        ));
        assert!(matches!(
            PcrSelection::from_bytes(&hex::decode("00000001000b0301").unwrap()),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(
            PcrSelection::from_bytes(&hex::decode("ffffffff").unwrap()),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn pcr_digest_hashes_values_in_selection_order() {
        let sel: PcrSelection = "sha256:1,0+sha1:2".parse().unwrap();
        let mut values = PcrValues::new();
        values.insert(HashAlg::Sha256, 0, vec![0u8; 32]).unwrap();
        values.insert(HashAlg::Sha256, 1, vec![1u8; 32]).unwrap();
        values.insert(HashAlg::Sha1, 2, vec![2u8; 20]).unwrap();
        let mut cat = vec![0u8; 32];
        cat.extend([1u8; 32]);
        cat.extend([2u8; 20]);
        let digest = sel.pcr_digest(HashAlg::Sha256, &values).unwrap();
        assert_eq!(digest.as_bytes(), HashAlg::Sha256.digest(&cat));
        let missing: PcrSelection = "sha256:5".parse().unwrap();
        assert_eq!(
            missing.pcr_digest(HashAlg::Sha256, &values),
            Err(PcrError::MissingValue { bank: HashAlg::Sha256, pcr: 5 })
        );
        assert!(matches!(
            values.insert(HashAlg::Sha1, 0, vec![0u8; 32]),
            Err(PcrError::ValueSize { .. })
        ));
    }

    #[test]
    fn pcr_digest_of_quote_made_by_swtpm() {
        // tpm2_quote -l sha256:0,1,2+sha1:0 on swtpm 0.7.1 after
        // tpm2_pcrextend 0:sha256=aa…aa (32 bytes of 0xAA): pcrDigest printed by tpm2_quote.
        let sel: PcrSelection = "sha256:0,1,2+sha1:0".parse().unwrap();
        let mut values = PcrValues::new();
        let pcr0 = hex::decode("9ef814b42fa0be12d197c44d3e8e03441a4b1118237658368ba1351090e556ed")
            .unwrap();
        values.insert(HashAlg::Sha256, 0, pcr0).unwrap();
        values.insert(HashAlg::Sha256, 1, vec![0u8; 32]).unwrap();
        values.insert(HashAlg::Sha256, 2, vec![0u8; 32]).unwrap();
        values.insert(HashAlg::Sha1, 0, vec![0u8; 20]).unwrap();
        let digest = sel.pcr_digest(HashAlg::Sha256, &values).unwrap();
        assert_eq!(
            hex::encode(digest.as_bytes()),
            "8e7c5dece68fd1da5739f5126efdf9baf79400c832b13d92c7be6c9127377c5d"
        );
    }
}
