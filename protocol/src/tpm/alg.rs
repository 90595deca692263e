//! Hash algorithms by their TPM_ALG_ID (TPM 2.0 Part 2 §6.3, TCG Algorithm Registry), the
//! one list of banks and name algorithms every module uses.
//!
//! SHA-1 and SHA-2 are computed with ring. SM3_256 (TPM_ALG_SM3_256 0x0012, GB/T
//! 32905-2016, the bank of TPMs built for the Chinese market) is computed with RustCrypto's
//! `sm3`, which ring lacks: it is a PCR bank here (event-log replay, quotes, policies) and
//! can be hashed, but has no HMAC, so it is refused as a name algorithm for credential
//! protection ([`HashAlg::hmac_algorithm`] is `None`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sm3::Digest as _;

/// A hash algorithm a PCR bank, an event log or a TPM name can use.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Debug,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    Sm3_256,
}

impl HashAlg {
    /// The banks of a PC Client TPM as swtpm (libtpms) implements them: SHA-1, SHA-256,
    /// SHA-384, SHA-512. SM3_256 is not among them (libtpms builds without it), so code
    /// that allocates or compares a TPM's banks can use this list as it is.
    pub const ALL: [HashAlg; 4] =
        [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512];

    /// Every algorithm known here: [`HashAlg::ALL`] and SM3_256.
    pub const KNOWN: [HashAlg; 5] =
        [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512, HashAlg::Sm3_256];

    /// TPM_ALG_ID.
    pub const fn id(self) -> u16 {
        match self {
            HashAlg::Sha1 => 0x0004,
            HashAlg::Sha256 => 0x000B,
            HashAlg::Sha384 => 0x000C,
            HashAlg::Sha512 => 0x000D,
            HashAlg::Sm3_256 => 0x0012,
        }
    }

    pub fn from_id(id: u16) -> Option<Self> {
        Self::KNOWN.into_iter().find(|a| a.id() == id)
    }

    /// Digest size in bytes.
    pub const fn size(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 | HashAlg::Sm3_256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// The name tpm2-tools and the TCG use: `sha1`, `sha256`, …, `sm3_256`.
    pub const fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
            HashAlg::Sm3_256 => "sm3_256",
        }
    }

    /// An incremental hash of this algorithm.
    pub fn hasher(self) -> Hasher {
        let ring = |ring_alg| Inner::Ring(ring::digest::Context::new(ring_alg));
        let inner = match self {
            HashAlg::Sha1 => ring(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
            HashAlg::Sha256 => ring(&ring::digest::SHA256),
            HashAlg::Sha384 => ring(&ring::digest::SHA384),
            HashAlg::Sha512 => ring(&ring::digest::SHA512),
            HashAlg::Sm3_256 => Inner::Sm3(sm3::Sm3::new()),
        };
        Hasher { alg: self, inner }
    }

    /// H(data).
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        self.digest_parts(&[data])
    }

    /// H(part₀ ‖ part₁ ‖ …) without concatenating.
    pub fn digest_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut h = self.hasher();
        for p in parts {
            h.update(p);
        }
        h.finish()
    }

    /// PCR extend: H(old ‖ digest) (TPM 2.0 Part 1 §17.2).
    pub fn extend(self, pcr: &mut Vec<u8>, digest: &[u8]) {
        *pcr = self.digest_parts(&[pcr, digest]);
    }

    /// ring's HMAC with this hash; `None` for SM3_256, which ring does not implement.
    pub fn hmac_algorithm(self) -> Option<ring::hmac::Algorithm> {
        match self {
            HashAlg::Sha1 => Some(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY),
            HashAlg::Sha256 => Some(ring::hmac::HMAC_SHA256),
            HashAlg::Sha384 => Some(ring::hmac::HMAC_SHA384),
            HashAlg::Sha512 => Some(ring::hmac::HMAC_SHA512),
            HashAlg::Sm3_256 => None,
        }
    }

    /// HMAC(key, part₀ ‖ part₁ ‖ …) (RFC 2104) with this hash; `None` without an HMAC
    /// ([`HashAlg::hmac_algorithm`]).
    pub fn hmac_parts(self, key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
        let mut ctx =
            ring::hmac::Context::with_key(&ring::hmac::Key::new(self.hmac_algorithm()?, key));
        for p in parts {
            ctx.update(p);
        }
        Some(ctx.sign().as_ref().to_vec())
    }
}

/// An incremental hash ([`HashAlg::hasher`]): ring's context, or RustCrypto's SM3.
pub struct Hasher {
    alg: HashAlg,
    inner: Inner,
}

enum Inner {
    Ring(ring::digest::Context),
    Sm3(sm3::Sm3),
}

impl Hasher {
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.inner {
            Inner::Ring(ctx) => ctx.update(data),
            Inner::Sm3(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self.inner {
            Inner::Ring(ctx) => ctx.finish().as_ref().to_vec(),
            Inner::Sm3(h) => h.finalize().to_vec(),
        }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hasher({})", self.alg)
    }
}

/// TPM_ALG_ID values other than hashes (TPM 2.0 Part 2 §6.3, TCG Algorithm Registry).
pub mod id {
    pub const RSA: u16 = 0x0001;
    pub const AES: u16 = 0x0006;
    pub const MGF1: u16 = 0x0007;
    pub const KEYEDHASH: u16 = 0x0008;
    pub const NULL: u16 = 0x0010;
    pub const SM4: u16 = 0x0013;
    pub const RSASSA: u16 = 0x0014;
    pub const RSAES: u16 = 0x0015;
    pub const RSAPSS: u16 = 0x0016;
    pub const OAEP: u16 = 0x0017;
    pub const ECDSA: u16 = 0x0018;
    pub const ECDH: u16 = 0x0019;
    pub const ECDAA: u16 = 0x001A;
    pub const SM2: u16 = 0x001B;
    pub const ECSCHNORR: u16 = 0x001C;
    pub const ECMQV: u16 = 0x001D;
    pub const KDF1_SP800_56A: u16 = 0x0020;
    pub const KDF2: u16 = 0x0021;
    pub const KDF1_SP800_108: u16 = 0x0022;
    pub const ECC: u16 = 0x0023;
    pub const SYMCIPHER: u16 = 0x0025;
    pub const CAMELLIA: u16 = 0x0026;
    pub const CTR: u16 = 0x0040;
    pub const OFB: u16 = 0x0041;
    pub const CBC: u16 = 0x0042;
    pub const CFB: u16 = 0x0043;
    pub const ECB: u16 = 0x0044;
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not one of `sha1`, `sha256`, `sha384`, `sha512`, `sm3_256`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hash algorithm {0:?} (expected sha1, sha256, sha384, sha512 or sm3_256)")]
pub struct UnknownHashAlg(pub String);

impl FromStr for HashAlg {
    type Err = UnknownHashAlg;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::KNOWN
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownHashAlg(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sizes_and_names_agree() {
        for a in HashAlg::KNOWN {
            assert_eq!(HashAlg::from_id(a.id()), Some(a));
            assert_eq!(a.digest(b"").len(), a.size());
            assert_eq!(a.name().parse::<HashAlg>().unwrap(), a);
            assert_eq!(a.hasher().alg(), a);
        }
        assert_eq!(HashAlg::from_id(0x0012), Some(HashAlg::Sm3_256));
        // TPM_ALG_SHA3_256: registered, not known here.
        assert!(HashAlg::from_id(0x0027).is_none());
        assert!(!HashAlg::ALL.contains(&HashAlg::Sm3_256), "swtpm has no SM3 bank");
        assert_eq!(serde_json::to_string(&HashAlg::Sm3_256).unwrap(), "\"sm3_256\"");
    }

    #[test]
    fn sm3_matches_the_standard() {
        // GB/T 32905-2016 Appendix A, examples 1 and 2 (also OpenSSL's `dgst -sm3`).
        assert_eq!(
            hex::encode(HashAlg::Sm3_256.digest(b"abc")),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        let abcd = b"abcd".repeat(16);
        assert_eq!(
            hex::encode(HashAlg::Sm3_256.digest_parts(&[&abcd[..5], &abcd[5..]])),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
        );
    }

    #[test]
    fn sm3_has_no_hmac() {
        assert!(HashAlg::Sm3_256.hmac_algorithm().is_none());
        assert!(HashAlg::Sm3_256.hmac_parts(b"k", &[b"m"]).is_none());
        // RFC 4231 test case 2 for a hash that has one.
        assert_eq!(
            hex::encode(
                HashAlg::Sha256
                    .hmac_parts(b"Jefe", &[b"what do ya want ", b"for nothing?"])
                    .unwrap()
            ),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn extend_matches_definition() {
        let mut pcr = vec![0u8; 32];
        HashAlg::Sha256.extend(&mut pcr, &[1u8; 32]);
        let mut cat = vec![0u8; 32];
        cat.extend([1u8; 32]);
        assert_eq!(pcr, HashAlg::Sha256.digest(&cat));
    }
}
