//! The TPM key derivation functions: KDFa, SP 800-108 counter mode with HMAC (TPM 2.0
//! Part 1 §11.4.10.2), and KDFe, the SP 800-56A concatenation KDF (Part 1 §11.4.10.3).
//!
//! Both follow the TPM reference implementation (`CryptKDFa`/`CryptKDFe`) in two details
//! the prose leaves open: the label gets a terminating 0x00 unless it already ends in one,
//! and when `bits` is not a multiple of 8 the unused high bits of the first byte are
//! cleared.

use zeroize::Zeroizing;

use super::alg::HashAlg;
use super::error::CredentialError;

/// The largest output asked of either KDF (far above any TPM key, far below the 2³² blocks
/// the 32-bit counter allows).
pub const MAX_KDF_BITS: u32 = 8 * 8192;

/// KDFa(hashAlg, key, label, contextU, contextV, bits):
/// HMAC_key(counter ‖ label ‖ 0x00 ‖ contextU ‖ contextV ‖ bits) for counter = 1, 2, …
pub fn kdfa(
    hash: HashAlg,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    let hmac_alg = hash.hmac_algorithm().ok_or(CredentialError::UnsupportedNameAlg(hash))?;
    let hmac_key = ring::hmac::Key::new(hmac_alg, key);
    derive(bits, |counter| {
        let mut ctx = ring::hmac::Context::with_key(&hmac_key);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label);
        if !label.ends_with(&[0]) {
            ctx.update(&[0]);
        }
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        ctx.sign().as_ref().to_vec()
    })
}

/// KDFe(hashAlg, Z, label, partyUInfo, partyVInfo, bits):
/// H(counter ‖ Z ‖ label ‖ 0x00 ‖ partyUInfo ‖ partyVInfo) for counter = 1, 2, …
pub fn kdfe(
    hash: HashAlg,
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    derive(bits, |counter| {
        let mut h = hash.hasher();
        h.update(&counter.to_be_bytes());
        h.update(z);
        h.update(label);
        if !label.ends_with(&[0]) {
            h.update(&[0]);
        }
        h.update(party_u);
        h.update(party_v);
        h.finish()
    })
}

fn derive(
    bits: u32,
    mut block: impl FnMut(u32) -> Vec<u8>,
) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    if bits > MAX_KDF_BITS {
        return Err(CredentialError::KdfLength(u64::from(bits)));
    }
    let bytes = usize::try_from(bits.div_ceil(8))
        .map_err(|_| CredentialError::KdfLength(u64::from(bits)))?;
    let mut out = Zeroizing::new(Vec::with_capacity(bytes + 64));
    let mut counter = 0u32;
    while out.len() < bytes {
        counter += 1;
        let b = Zeroizing::new(block(counter));
        out.extend_from_slice(&b);
    }
    out.truncate(bytes);
    if !bits.is_multiple_of(8)
        && let Some(first) = out.first_mut()
    {
        *first &= (1u8 << (bits % 8)) - 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// KDFa self-test vectors of the TCG TPM 2.0 reference implementation
    /// (`KdfTestData.h`, as shipped in libtpms 0.9): key, label "KDFSELFTESTLABEL\0",
    /// contextU, contextV, 160 bits, one result per hash algorithm.
    #[test]
    fn kdfa_tcg_reference_self_test() {
        let key = h("271FA08BBDC5060EC3DFA928FF9B73123A12DA0C");
        let label = b"KDFSELFTESTLABEL\0";
        let u = h("CE244F395DCA7391");
        let v = h("DA504031DDF12E83");
        for (alg, expected) in [
            (HashAlg::Sha1, "55b5a7184aa07423c47dae766c26a2377d7cf851"),
            (HashAlg::Sha256, "bb0259e1c8ba607e6a2cd704b69a902e9ade84c4"),
            (HashAlg::Sha384, "1dce70c9113eb2dba47bd9cfc72bf46f45b09312"),
            (HashAlg::Sha512, "8be2c1b85b78569b9fa759f5857c56d684810fd3"),
        ] {
            assert_eq!(
                hex::encode(&*kdfa(alg, &key, label, &u, &v, 160).unwrap()),
                expected,
                "{alg}"
            );
            // The label without its terminator derives the same key.
            assert_eq!(
                hex::encode(&*kdfa(alg, &key, b"KDFSELFTESTLABEL", &u, &v, 160).unwrap()),
                expected
            );
        }
    }

    /// Longer outputs, computed independently with Python's hmac/hashlib from the
    /// Part 1 §11.4.10.2 definition (no published vector of this shape was found).
    #[test]
    fn kdfa_multi_block_independent() {
        let out = kdfa(HashAlg::Sha256, &[0x11; 32], b"STORAGE", b"name", b"", 400).unwrap();
        assert_eq!(out.len(), 50);
        assert_eq!(hex::encode(&*out), KDFA_PY_400);
    }
    const KDFA_PY_400: &str = "410a8d7e330af640d0912ca214488f79687db88e611d456ea1084bad886e8909dd631a6e6b519202c640bb89a81bfdb60c65";

    /// KDFe vectors of github.com/chrisfenner/tpm-test-vectors `vectors/kdfe.json`
    /// (generated with go-tpm's KDFe).
    #[test]
    fn kdfe_tpm_test_vectors() {
        for (name, alg, z, usage, u, v, bits, expected) in [
            (
                "04_SHA1_253",
                HashAlg::Sha1,
                "",
                "STORAGE",
                "",
                "c0227aff",
                253,
                "0f10d821af67e1ec776b390f3b4572bb433efd2b94fa7842d879d24d825ed2f9",
            ),
            (
                "06_SHA1_32",
                HashAlg::Sha1,
                "9b050039c8e5ca60deeb978f2faf573c94af61",
                "IDENTITY",
                "ff1a1852db7b60a5c963f17eb306f3a905d100ae",
                "0047ee45771a256d58b091b6d6",
                32,
                "94c3c160",
            ),
            (
                "31_SHA256_13",
                HashAlg::Sha256,
                "739245447ead0deea5f834f06e043159c6ff",
                "IDENTITY",
                "ad503e36c2314ec9afa2f4047bf19ce7fbc6fe2def32c58459c0fc828c00",
                "ba6dd80b788034161743c95e8ef7a9486fbd69d3ff",
                13,
                "0956",
            ),
            (
                "44_SHA256_659",
                HashAlg::Sha256,
                "ffe8361b9fdfe01398db23a1b2a1bc35ffe737",
                "IDENTITY",
                "",
                "ff26e2f76cb6fbf1",
                659,
                "007d2cb3d906980fbce09d1bfe42b8d3c827c2d9fed082e0344e40c80f08c0a9eb629068d66164fbf03b3e18124f8ae3400647cf06f6c43be3740a49ec96c25f9115cff6625822878a451c601fa6bf749d2321",
            ),
            (
                "30_SHA256_109",
                HashAlg::Sha256,
                "c3e3c34e82ccfa82d8999bf2635bb7cd01f3d65f03ff",
                "CFB",
                "55576a51c0e45b86557535e9ea50d5e7f4a80bb426e7ff",
                "dffdece923181dc335c1e936ff",
                109,
                "1106264c89948737c140d2f5b40e",
            ),
            (
                "59_SHA384_242",
                HashAlg::Sha384,
                "50571aa539a2176d9df76ecab38ae1a24b2cc1a4f557ff",
                "DUPLICATE",
                "ff635ad310f27b3600455658ad215bdb15512f5c3a5d19731120d72bad247b140c18a6f00d",
                "a5c7c29ab33d942a675baf1bf8efe910173ec61dad00f9d7776cea67de94e33e03681c3910ef312e44ac15c3ce417aff",
                242,
                "0129f1add4e07ba8ef9b90b2d2a51a67de50c70b81929f2e1486448da59c9f",
            ),
        ] {
            let out = kdfe(alg, &h(z), usage.as_bytes(), &h(u), &h(v), bits).unwrap();
            assert_eq!(hex::encode(&*out), expected, "{name}");
        }
    }

    #[test]
    fn output_length_is_bounded() {
        assert_eq!(kdfa(HashAlg::Sha256, b"k", b"L", b"", b"", 0).unwrap().len(), 0);
        assert!(matches!(
            kdfa(HashAlg::Sha256, b"k", b"L", b"", b"", u32::MAX),
            Err(CredentialError::KdfLength(_))
        ));
        assert!(matches!(
            kdfe(HashAlg::Sha256, b"z", b"L", b"", b"", MAX_KDF_BITS + 1),
            Err(CredentialError::KdfLength(_))
        ));
    }

    #[test]
    fn kdfa_needs_an_hmac() {
        assert_eq!(
            kdfa(HashAlg::Sm3_256, b"k", b"L", b"", b"", 128),
            Err(CredentialError::UnsupportedNameAlg(HashAlg::Sm3_256))
        );
        // KDFe is a plain hash, so it is defined for SM3_256 (one block: H(1 ‖ Z ‖ label ‖ 0)).
        let out = kdfe(HashAlg::Sm3_256, b"z", b"L", b"", b"", 256).unwrap();
        assert_eq!(*out, HashAlg::Sm3_256.digest(b"\0\0\0\x01zL\0"));
    }
}
