//! A bounded little-endian reader over an event log, in the style of rustls's `codec::Reader`:
//! every read checks the bytes that are left first, so parsing never indexes past the end
//! and never allocates more than the input holds.

use super::EventLogError;

/// A cursor over a byte slice. `base` is the absolute offset of `buf[0]` in the log, so a
/// reader over one record's event data still reports offsets from the start of the log.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self::with_base(buf, 0)
    }

    /// A reader over bytes that sit at offset `base` of the log.
    pub(crate) fn with_base(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    /// Absolute offset of the next byte to be read.
    pub(crate) fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes, or `Truncated` naming `what` was being read.
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EventLogError> {
        let truncated = || EventLogError::Truncated {
            offset: self.offset(),
            what,
            needed: n,
            available: self.remaining(),
        };
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], EventLogError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, EventLogError> {
        Ok(u8::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, EventLogError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, EventLogError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A u32 length field followed by that many bytes. The length is checked against what
    /// is left before anything is taken, so a huge length is an error, not an allocation.
    pub(crate) fn sized(&mut self, what: &'static str) -> Result<&'a [u8], EventLogError> {
        let len = self.u32(what)?;
        // A u32 always fits a usize on the 32- and 64-bit targets we build for; if it did
        // not, the saturated length is still larger than any slice and fails below.
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.take(len, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_tracks_offsets() {
        let mut r = Reader::new(&[1, 0, 2, 0, 0, 0, 9, 8]);
        assert_eq!(r.u16("a").unwrap(), 1);
        assert_eq!(r.u32("b").unwrap(), 2);
        assert_eq!(r.offset(), 6);
        let mut data = Reader::with_base(r.take(2, "c").unwrap(), 6);
        assert_eq!(data.u8("d").unwrap(), 9);
        assert_eq!(data.offset(), 7);
        assert!(r.is_empty());
    }

    #[test]
    fn over_read_is_truncated_not_panic() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1]);
        let err = r.sized("event data").unwrap_err();
        assert_eq!(
            err,
            EventLogError::Truncated {
                offset: 4,
                what: "event data",
                needed: 0xffff_ffff,
                available: 1
            }
        );
        let mut r = Reader::new(&[]);
        assert!(matches!(r.u8("x"), Err(EventLogError::Truncated { offset: 0, .. })));
    }
}
