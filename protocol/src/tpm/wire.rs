//! The TPM 2.0 marshalling codec (TPM 2.0 Part 1 §18 "Command/Response Structure" and
//! Part 2 §5–§11 for the canonical big-endian encoding): one bounded [`Reader`], one
//! [`Marshal`]/[`Unmarshal`] pair of traits that every TPM structure in this module
//! implements, and [`Tpm2b`], the size-prefixed byte buffer with its Part 2 maximum.
//!
//! The reader never reads past the end of its input and never allocates from a length it
//! read: a TPM2B's size is checked against the structure's maximum before a byte is
//! copied, and every copy is of bytes that are already in the input.

use std::fmt;
use std::ops::Deref;

use super::error::WireError;

/// Writes a TPM structure in its canonical wire form.
pub trait Marshal {
    fn marshal(&self, out: &mut Vec<u8>);

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.marshal(&mut out);
        out
    }
}

/// Reads a TPM structure from its canonical wire form.
pub trait Unmarshal: Sized {
    /// The Part 2 name of the structure, for error messages.
    const NAME: &'static str;

    fn unmarshal(r: &mut Reader<'_>) -> Result<Self, WireError>;

    /// Parses exactly one structure: trailing bytes are an error.
    fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let value = Self::unmarshal(&mut r)?;
        r.finish(Self::NAME)?;
        Ok(value)
    }
}

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.rest.len() {
            return Err(WireError::Truncated { what });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Everything that is left.
    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// The body of a TPM2B whose size must not exceed `max`.
    pub fn sized(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let size = usize::from(self.u16(what)?);
        if size > max {
            return Err(WireError::TooLarge { what, size, max });
        }
        self.take(size, what)
    }

    /// A reader over the body of a TPM2B that wraps a structure (TPM2B_PUBLIC,
    /// TPM2B_ATTEST, …); the caller must consume it entirely (see [`Reader::finish`]).
    pub fn sub(&mut self, max: usize, what: &'static str) -> Result<Reader<'a>, WireError> {
        Ok(Reader::new(self.sized(max, what)?))
    }

    /// Succeeds only if every byte was consumed.
    pub fn finish(self, what: &'static str) -> Result<(), WireError> {
        match self.rest.len() {
            0 => Ok(()),
            extra => Err(WireError::TrailingBytes { what, extra }),
        }
    }
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Writes a TPM2B around whatever `body` writes. The caller guarantees the body fits a
/// u16 (every structure of this module is bounded far below 64 KiB).
pub(crate) fn put_sized(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    body(out);
    let len = u16::try_from(out.len() - at - 2).unwrap_or(u16::MAX);
    if let Some(slot) = out.get_mut(at..at + 2) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

/// A TPM2B byte buffer (TPM 2.0 Part 2 §10.4) holding at most `MAX` bytes; the bound is
/// checked on construction, so marshalling cannot overflow the 16-bit size.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Tpm2b<const MAX: usize>(Vec<u8>);

/// TPM2B_DIGEST: at most sizeof(TPMU_HA) = 64 bytes.
pub type Digest = Tpm2b<64>;
/// TPM2B_DATA: at most sizeof(TPMT_HA) = 66 bytes.
pub type Data = Tpm2b<66>;
/// TPM2B_NAME: at most sizeof(TPMU_NAME) = 68 bytes; an object name is nameAlg ‖ digest.
pub type Name = Tpm2b<68>;
/// TPM2B_ECC_PARAMETER: at most MAX_ECC_KEY_BYTES = 128 (tpm2-tss's bound).
pub type EccParameter = Tpm2b<128>;
/// TPM2B_PUBLIC_KEY_RSA: at most MAX_RSA_KEY_BYTES = 512.
pub type PublicKeyRsa = Tpm2b<512>;
/// TPM2B_ENCRYPTED_SECRET: at most sizeof(TPMU_ENCRYPTED_SECRET) = 512.
pub type EncryptedSecret = Tpm2b<512>;
/// TPM2B_ID_OBJECT: at most sizeof(TPMS_ID_OBJECT) = 132.
pub type IdObject = Tpm2b<132>;

impl<const MAX: usize> Tpm2b<MAX> {
    pub const MAX: usize = MAX;

    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, WireError> {
        let bytes = bytes.into();
        if bytes.len() > MAX {
            return Err(WireError::TooLarge { what: "TPM2B", size: bytes.len(), max: MAX });
        }
        Ok(Self(bytes))
    }

    pub fn empty() -> Self {
        Self(Vec::new())
    }

    /// For values this module computed and knows to be within `MAX` (digests, names).
    pub(crate) fn from_bounded(bytes: Vec<u8>) -> Self {
        let mut bytes = bytes;
        bytes.truncate(MAX);
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }

    /// Reads a TPM2B, naming the field in errors.
    pub fn read(r: &mut Reader<'_>, what: &'static str) -> Result<Self, WireError> {
        Ok(Self(r.sized(MAX, what)?.to_vec()))
    }
}

impl<const MAX: usize> Deref for Tpm2b<MAX> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const MAX: usize> AsRef<[u8]> for Tpm2b<MAX> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl<const MAX: usize> TryFrom<&[u8]> for Tpm2b<MAX> {
    type Error = WireError;
    fn try_from(bytes: &[u8]) -> Result<Self, WireError> {
        Self::new(bytes)
    }
}

impl<const MAX: usize> TryFrom<Vec<u8>> for Tpm2b<MAX> {
    type Error = WireError;
    fn try_from(bytes: Vec<u8>) -> Result<Self, WireError> {
        Self::new(bytes)
    }
}

impl<const MAX: usize> fmt::Debug for Tpm2b<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tpm2b({})", hex::encode(&self.0))
    }
}

impl<const MAX: usize> Marshal for Tpm2b<MAX> {
    fn marshal(&self, out: &mut Vec<u8>) {
        put_sized(out, |out| out.extend_from_slice(&self.0));
    }
}

impl<const MAX: usize> Unmarshal for Tpm2b<MAX> {
    const NAME: &'static str = "TPM2B";
    fn unmarshal(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Self::read(r, Self::NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_to_run_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16("a").unwrap(), 0x0102);
        assert_eq!(r.u16("b"), Err(WireError::Truncated { what: "b" }));
        assert_eq!(r.u8("c").unwrap(), 3);
        assert!(r.is_empty());
        assert_eq!(Reader::new(&[0; 7]).u64("d"), Err(WireError::Truncated { what: "d" }));
    }

    #[test]
    fn tpm2b_size_is_checked_before_reading() {
        // Declares 65 bytes for a TPM2B_DIGEST: refused before the (absent) body is read.
        let err = Digest::from_bytes(&[0x00, 0x41]).unwrap_err();
        assert_eq!(err, WireError::TooLarge { what: "TPM2B", size: 65, max: 64 });
        // Declares 4 bytes, carries 3.
        assert!(matches!(Digest::from_bytes(&[0, 4, 1, 2, 3]), Err(WireError::Truncated { .. })));
        // Trailing byte.
        assert!(matches!(
            Digest::from_bytes(&[0, 1, 1, 9]),
            Err(WireError::TrailingBytes { extra: 1, .. })
        ));
        assert!(Digest::new(vec![0u8; 65]).is_err());
    }

    #[test]
    fn tpm2b_round_trips() {
        let d = Digest::new(vec![0xAB; 32]).unwrap();
        let bytes = d.to_bytes();
        assert_eq!(&bytes[..2], &[0, 32]);
        assert_eq!(Digest::from_bytes(&bytes).unwrap(), d);
        assert_eq!(Name::empty().to_bytes(), vec![0, 0]);
    }

    #[test]
    fn sub_reader_is_bounded_by_its_size() {
        let mut r = Reader::new(&[0, 2, 0xAA, 0xBB, 0xCC]);
        let mut sub = r.sub(16, "x").unwrap();
        assert_eq!(sub.u16("y").unwrap(), 0xAABB);
        assert!(sub.u8("z").is_err());
        assert_eq!(r.u8("w").unwrap(), 0xCC);
    }
}
