//! ES256 signatures (RFC 9053 §2.1: ECDSA P-256 with SHA-256, r ‖ s of 32 bytes each) in
//! one encoding only. ECDSA is malleable: if (r, s) verifies, so does (r, n − s), n being
//! the order of the P-256 group (SEC 2 §2.4.2). Every COSE_Sign1 tresor reads (EARs, MNO
//! profiles, RO orders) is also hashed or compared as bytes (the EAR hash in a bundle's AAD
//! and in the profile), so a second valid encoding of the same signature is a second
//! object. tresor therefore admits only the low-S form, s ≤ (n − 1) / 2 (the rule of
//! Bitcoin's BIP 62 and of libsecp256k1), and its signers produce it: ring's ECDSA does not
//! normalise s, so [`to_low_s`] does.

/// The order n of the P-256 base point, big-endian (SEC 2 §2.4.2, FIPS 186-5 D.1.2.3).
const N: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];
/// (n − 1) / 2, the largest low s.
const HALF_N: [u8; 32] = [
    0x7F, 0xFF, 0xFF, 0xFF, 0x80, 0x00, 0x00, 0x00, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xDE, 0x73, 0x7D, 0x56, 0xD3, 0x8B, 0xCF, 0x42, 0x79, 0xDC, 0xE5, 0x61, 0x7E, 0x31, 0x92, 0xA8,
];

/// Length of an ES256 signature: r ‖ s.
pub const SIGNATURE_LEN: usize = 64;

/// Whether `signature` is 64 bytes with s ≤ (n − 1) / 2. Anything else (another length, a
/// high s) is not the one encoding tresor accepts; the signature check proper (r and s in
/// 1..n−1, the equation) is ring's.
pub fn is_low_s(signature: &[u8]) -> bool {
    signature.len() == SIGNATURE_LEN && signature[32..] <= HALF_N[..]
}

/// `signature` with s replaced by n − s when s is high: the same signature in its low-S
/// form, which verifies exactly when the input does. Other lengths are returned unchanged
/// (the verifier refuses them).
pub fn to_low_s(signature: &[u8]) -> Vec<u8> {
    if signature.len() != SIGNATURE_LEN || is_low_s(signature) {
        return signature.to_vec();
    }
    flip_s(signature)
}

/// (r, n − s): the other valid encoding of a signature, high when the input is low. For
/// tests and the attack matrix, which show that it is refused. Returned unchanged when not
/// 64 bytes, or when s is 0 or not below n (no valid signature has such an s).
pub fn flip_s(signature: &[u8]) -> Vec<u8> {
    let mut out = signature.to_vec();
    let Some(s) = out.get_mut(32..64).filter(|_| signature.len() == SIGNATURE_LEN) else {
        return out;
    };
    if s.iter().all(|b| *b == 0) || s[..] >= N[..] {
        return out;
    }
    // n − s, big-endian with borrow; s < n, so no borrow is left at the end.
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(N[i]) - i16::from(s[i]) - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        s[i] = d as u8;
    }
    out
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
        UnparsedPublicKey,
    };

    use super::*;

    #[test]
    fn half_n_is_n_minus_one_halved() {
        // 2 · HALF_N + 1 = N, computed byte by byte from the least significant end.
        let mut carry = 1u16;
        let mut twice = [0u8; 32];
        for i in (0..32).rev() {
            let v = u16::from(HALF_N[i]) * 2 + carry;
            twice[i] = (v & 0xFF) as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0);
        assert_eq!(twice, N);
    }

    #[test]
    fn boundaries() {
        let mut sig = [0u8; 64];
        sig[32..].copy_from_slice(&HALF_N);
        assert!(is_low_s(&sig), "(n − 1) / 2 is low");
        let flipped = flip_s(&sig);
        // n − (n − 1) / 2 = (n + 1) / 2 = HALF_N + 1: the smallest high s.
        let mut half_plus_one = HALF_N;
        half_plus_one[31] += 1;
        assert_eq!(&flipped[32..], half_plus_one.as_slice());
        assert!(!is_low_s(&flipped));
        assert_eq!(to_low_s(&flipped), sig.to_vec());
        // Not 64 bytes: never low, left alone.
        assert!(!is_low_s(&sig[..63]));
        assert_eq!(to_low_s(&sig[..63]), sig[..63].to_vec());
        // s = 0 and s ≥ n are no signature: flip leaves them.
        let zero = [0u8; 64];
        assert_eq!(flip_s(&zero), zero.to_vec());
        let mut big = [0u8; 64];
        big[32..].copy_from_slice(&N);
        assert_eq!(flip_s(&big), big.to_vec());
        assert!(!is_low_s(&big));
    }

    #[test]
    fn both_encodings_verify_and_normalising_keeps_it_valid() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key().as_ref());
        let (mut low, mut high) = (0, 0);
        for i in 0..64u8 {
            let message = [i; 40];
            let raw = key.sign(&rng, &message).unwrap().as_ref().to_vec();
            if is_low_s(&raw) {
                low += 1
            } else {
                high += 1
            }
            let normal = to_low_s(&raw);
            assert!(is_low_s(&normal));
            let twin = flip_s(&normal);
            assert!(!is_low_s(&twin));
            public.verify(&message, &normal).unwrap();
            public.verify(&message, &twin).unwrap();
            assert_eq!(to_low_s(&twin), normal);
        }
        // ring does not normalise: both forms come out of it (each with probability 1/2;
        // 64 signatures all of one form would happen once in 2^63 runs).
        assert!(low > 0 && high > 0, "low {low}, high {high}");
    }
}
