//! TPMT_SIGNATURE (TPM 2.0 Part 2 §11.3.4) for ECDSA, RSASSA-PKCS1-v1_5 and RSA-PSS, and
//! its verification in software with ring.
//!
//! A TPM signs digest = H_sigHash(message), where for TPM2_Quote and TPM2_Certify the
//! message is the marshalled TPMS_ATTEST (Part 3 §18.2). ring hashes the message itself, so
//! [`Signature::verify`] takes the message, not the digest. Accepted: ECDSA on P-256 and
//! P-384 with SHA-256 or SHA-384; RSASSA and RSA-PSS (salt length = hash length, as the TPM
//! reference implementation signs) with SHA-256, SHA-384 or SHA-512 and 2048–8192-bit keys.
//! SHA-1 is refused.

use ring::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};

use super::alg::{HashAlg, id};
use super::error::{SignatureError, WireError};
use super::public::{EccCurve, EccScheme, ObjectAttributes, Public, PublicKey, RsaScheme};
use super::spki::Spki;
use super::wire::{EccParameter, Marshal, PublicKeyRsa, Reader, Unmarshal, put_u16};

/// TPMT_SIGNATURE of the schemes this module verifies.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Signature {
    Rsassa { hash: HashAlg, sig: PublicKeyRsa },
    Rsapss { hash: HashAlg, sig: PublicKeyRsa },
    Ecdsa { hash: HashAlg, r: EccParameter, s: EccParameter },
}

impl Signature {
    /// The hash the signer applied to the message (the scheme's hashAlg).
    pub fn hash_alg(&self) -> HashAlg {
        match self {
            Self::Rsassa { hash, .. } | Self::Rsapss { hash, .. } | Self::Ecdsa { hash, .. } => {
                *hash
            }
        }
    }

    pub fn scheme_name(&self) -> &'static str {
        match self {
            Self::Rsassa { .. } => "rsassa",
            Self::Rsapss { .. } => "rsapss",
            Self::Ecdsa { .. } => "ecdsa",
        }
    }

    /// Verifies a signature over `message` by the TPM key `key`: the key must have the
    /// sign attribute, be of the signature's type, and, if its scheme is not TPM_ALG_NULL,
    /// have exactly the signature's scheme and hash.
    pub fn verify(&self, key: &Public, message: &[u8]) -> Result<(), SignatureError> {
        if !key.attributes.contains(ObjectAttributes::SIGN_ENCRYPT) {
            return Err(SignatureError::KeyCannotSign);
        }
        let hash = self.hash_alg();
        let allowed = match (&key.key, self) {
            (PublicKey::Ecc { parms, .. }, Self::Ecdsa { .. }) => match parms.scheme {
                EccScheme::Null => None,
                EccScheme::Ecdsa(h) => Some(h),
                other => return Err(self.scheme_mismatch(other.name())),
            },
            (PublicKey::Rsa { parms, .. }, Self::Rsassa { .. } | Self::Rsapss { .. }) => {
                match (parms.scheme, self) {
                    (RsaScheme::Null, _) => None,
                    (RsaScheme::Rsassa(h), Self::Rsassa { .. })
                    | (RsaScheme::Rsapss(h), Self::Rsapss { .. }) => Some(h),
                    (other, _) => return Err(self.scheme_mismatch(other.name())),
                }
            }
            (k, s) => {
                return Err(SignatureError::KeyTypeMismatch {
                    key: k.type_name(),
                    signature: s.scheme_name(),
                });
            }
        };
        if let Some(key_hash) = allowed
            && key_hash != hash
        {
            return Err(SignatureError::HashNotAllowed { key: key_hash, signature: hash });
        }
        let spki = Spki::from_public(key)
            .map_err(|_| SignatureError::BadKey("public area holds no usable key"))?;
        self.verify_spki(&spki, message)
    }

    /// Verifies a signature over `message` by a plain public key (e.g. an `ak.pem`), with no
    /// TPM scheme restrictions beyond the signature's own.
    pub fn verify_spki(&self, key: &Spki, message: &[u8]) -> Result<(), SignatureError> {
        match (self, key) {
            (Self::Ecdsa { hash, r, s }, Spki::Ecc { curve, .. }) => {
                let alg: &dyn sig::VerificationAlgorithm = match (curve, hash) {
                    (EccCurve::NistP256, HashAlg::Sha256) => &sig::ECDSA_P256_SHA256_ASN1,
                    (EccCurve::NistP256, HashAlg::Sha384) => &sig::ECDSA_P256_SHA384_ASN1,
                    (EccCurve::NistP384, HashAlg::Sha256) => &sig::ECDSA_P384_SHA256_ASN1,
                    (EccCurve::NistP384, HashAlg::Sha384) => &sig::ECDSA_P384_SHA384_ASN1,
                    (EccCurve::NistP256 | EccCurve::NistP384, h) => {
                        return Err(SignatureError::UnsupportedHash(*h));
                    }
                    (c, _) => return Err(SignatureError::UnsupportedCurve(c.name())),
                };
                let point = key.sec1_point().unwrap_or_default();
                let der = ecdsa_der(r, s, curve.coordinate_size())?;
                UnparsedPublicKey::new(alg, point)
                    .verify(message, &der)
                    .map_err(|_| SignatureError::BadSignature)
            }
            (
                Self::Rsassa { hash, sig } | Self::Rsapss { hash, sig },
                Spki::Rsa { modulus, exponent },
            ) => {
                let pss = matches!(self, Self::Rsapss { .. });
                let params: &sig::RsaParameters = match (pss, hash) {
                    (false, HashAlg::Sha256) => &sig::RSA_PKCS1_2048_8192_SHA256,
                    (false, HashAlg::Sha384) => &sig::RSA_PKCS1_2048_8192_SHA384,
                    (false, HashAlg::Sha512) => &sig::RSA_PKCS1_2048_8192_SHA512,
                    (true, HashAlg::Sha256) => &sig::RSA_PSS_2048_8192_SHA256,
                    (true, HashAlg::Sha384) => &sig::RSA_PSS_2048_8192_SHA384,
                    (true, HashAlg::Sha512) => &sig::RSA_PSS_2048_8192_SHA512,
                    (_, h) => return Err(SignatureError::UnsupportedHash(*h)),
                };
                // ring takes both integers without leading zero bytes.
                let e = exponent.to_be_bytes();
                let e = e.get(e.iter().take_while(|&&b| b == 0).count()..).unwrap_or_default();
                RsaPublicKeyComponents { n: modulus.as_slice(), e }
                    .verify(params, message, sig)
                    .map_err(|_| SignatureError::BadSignature)
            }
            (s, k) => Err(SignatureError::KeyTypeMismatch {
                key: match k {
                    Spki::Rsa { .. } => "RSA",
                    Spki::Ecc { .. } => "ECC",
                },
                signature: s.scheme_name(),
            }),
        }
    }

    fn scheme_mismatch(&self, key: &'static str) -> SignatureError {
        SignatureError::SchemeNotAllowed { key, signature: self.scheme_name() }
    }
}

/// ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } (RFC 3279 §2.2.3) from the TPM's
/// big-endian r and s, each at most one coordinate long.
fn ecdsa_der(r: &[u8], s: &[u8], size: usize) -> Result<Vec<u8>, SignatureError> {
    let int = |v: &[u8]| -> Result<Vec<u8>, SignatureError> {
        let mut v = v;
        while let [0, rest @ ..] = v {
            v = rest;
        }
        if v.is_empty() || v.len() > size {
            return Err(SignatureError::Malformed("ECDSA r or s is zero or longer than the curve"));
        }
        let mut out = vec![0x02];
        let pad = v.first().is_some_and(|&b| b & 0x80 != 0);
        out.push(
            u8::try_from(v.len() + usize::from(pad))
                .map_err(|_| SignatureError::Malformed("ECDSA size"))?,
        );
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
        Ok(out)
    };
    let body = [int(r)?, int(s)?].concat();
    let mut out = vec![0x30];
    // At most 2 × (2 + 67) = 138 bytes for P-521; P-256/P-384 stay below 128.
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(u8::try_from(body.len()).map_err(|_| SignatureError::Malformed("ECDSA size"))?);
    out.extend(body);
    Ok(out)
}

fn read_hash(r: &mut Reader<'_>) -> Result<HashAlg, WireError> {
    let what = "TPMT_SIGNATURE.signature.hash";
    let id = r.u16(what)?;
    HashAlg::from_id(id).ok_or(WireError::UnsupportedAlg { what, id })
}

impl Marshal for Signature {
    fn marshal(&self, out: &mut Vec<u8>) {
        match self {
            Self::Rsassa { hash, sig } | Self::Rsapss { hash, sig } => {
                put_u16(
                    out,
                    if matches!(self, Self::Rsassa { .. }) { id::RSASSA } else { id::RSAPSS },
                );
                put_u16(out, hash.id());
                sig.marshal(out);
            }
            Self::Ecdsa { hash, r, s } => {
                put_u16(out, id::ECDSA);
                put_u16(out, hash.id());
                r.marshal(out);
                s.marshal(out);
            }
        }
    }
}

impl Unmarshal for Signature {
    const NAME: &'static str = "TPMT_SIGNATURE";
    fn unmarshal(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let what = "TPMT_SIGNATURE.sigAlg";
        Ok(match r.u16(what)? {
            id::RSASSA => {
                let hash = read_hash(r)?;
                Self::Rsassa { hash, sig: PublicKeyRsa::read(r, "TPMS_SIGNATURE_RSA.sig")? }
            }
            id::RSAPSS => {
                let hash = read_hash(r)?;
                Self::Rsapss { hash, sig: PublicKeyRsa::read(r, "TPMS_SIGNATURE_RSA.sig")? }
            }
            id::ECDSA => {
                let hash = read_hash(r)?;
                let sig_r = EccParameter::read(r, "TPMS_SIGNATURE_ECC.signatureR")?;
                let sig_s = EccParameter::read(r, "TPMS_SIGNATURE_ECC.signatureS")?;
                Self::Ecdsa { hash, r: sig_r, s: sig_s }
            }
            other => return Err(WireError::UnsupportedAlg { what, id: other }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::attest::tests::{QUOTE_MSG, unhex};
    use crate::tpm::public::tests::{AK_ECC_TPM2B, EK_ECC_TPM2B};
    use crate::tpm::public::{EccParms, KdfScheme, SymDefObject};

    /// The `quote.sig` (tpm2-tools "tss" format) of `QUOTE_MSG`.
    const QUOTE_SIG: &str = "0018000b002020ab304603680f81c829ac3a575a16a92160ec6c4f96141243454446f308bbde\
        0020a68b452617e7f0261e5f34f8638ba0d9af585aef3ad384d977256d1fa62e6dd5";

    fn ak() -> Public {
        Public::from_tpm2b(&unhex(AK_ECC_TPM2B)).unwrap()
    }

    #[test]
    fn a_real_quote_verifies() {
        let sig = Signature::from_bytes(&unhex(QUOTE_SIG)).unwrap();
        assert_eq!(sig.hash_alg(), HashAlg::Sha256);
        assert_eq!(sig.to_bytes(), unhex(QUOTE_SIG));
        sig.verify(&ak(), &unhex(QUOTE_MSG)).unwrap();
        sig.verify_spki(&Spki::from_public(&ak()).unwrap(), &unhex(QUOTE_MSG)).unwrap();
    }

    #[test]
    fn a_modified_message_fails() {
        let sig = Signature::from_bytes(&unhex(QUOTE_SIG)).unwrap();
        let mut msg = unhex(QUOTE_MSG);
        let last = msg.len() - 1;
        msg[last] ^= 1;
        assert_eq!(sig.verify(&ak(), &msg), Err(SignatureError::BadSignature));
    }

    #[test]
    fn another_key_fails() {
        let sig = Signature::from_bytes(&unhex(QUOTE_SIG)).unwrap();
        let mut other = ak();
        let PublicKey::Ecc { point, .. } = &mut other.key else { panic!() };
        // The EK's point: a valid P-256 point of another key.
        let ek = Public::from_tpm2b(&unhex(EK_ECC_TPM2B)).unwrap();
        let PublicKey::Ecc { point: ek_point, .. } = &ek.key else { panic!() };
        *point = ek_point.clone();
        assert_eq!(sig.verify(&other, &unhex(QUOTE_MSG)), Err(SignatureError::BadSignature));
        // The EK itself cannot sign.
        assert_eq!(sig.verify(&ek, &unhex(QUOTE_MSG)), Err(SignatureError::KeyCannotSign));
    }

    #[test]
    fn a_hash_the_key_does_not_allow_fails() {
        let Signature::Ecdsa { r, s, .. } = Signature::from_bytes(&unhex(QUOTE_SIG)).unwrap()
        else {
            panic!()
        };
        let sig = Signature::Ecdsa { hash: HashAlg::Sha384, r, s };
        assert_eq!(
            sig.verify(&ak(), &unhex(QUOTE_MSG)),
            Err(SignatureError::HashNotAllowed {
                key: HashAlg::Sha256,
                signature: HashAlg::Sha384
            })
        );
        // Without a key scheme the hash is free, and the wrong one simply does not verify.
        let mut free = ak();
        if let PublicKey::Ecc { parms, .. } = &mut free.key {
            *parms = EccParms { scheme: EccScheme::Null, ..*parms };
        }
        assert_eq!(sig.verify(&free, &unhex(QUOTE_MSG)), Err(SignatureError::BadSignature));
        let sha1 = Signature::Ecdsa {
            hash: HashAlg::Sha1,
            r: EccParameter::empty(),
            s: EccParameter::empty(),
        };
        assert_eq!(sha1.verify(&free, b""), Err(SignatureError::UnsupportedHash(HashAlg::Sha1)));
    }

    #[test]
    fn scheme_and_type_mismatches_fail() {
        let rsa_sig = Signature::Rsassa {
            hash: HashAlg::Sha256,
            sig: PublicKeyRsa::new(vec![1; 256]).unwrap(),
        };
        assert_eq!(
            rsa_sig.verify(&ak(), b"m"),
            Err(SignatureError::KeyTypeMismatch { key: "ECC", signature: "rsassa" })
        );
        let mut ecdh = ak();
        if let PublicKey::Ecc { parms, .. } = &mut ecdh.key {
            *parms = EccParms {
                scheme: EccScheme::Ecdh(HashAlg::Sha256),
                kdf: KdfScheme::Null,
                symmetric: SymDefObject::Null,
                ..*parms
            };
        }
        let sig = Signature::from_bytes(&unhex(QUOTE_SIG)).unwrap();
        assert_eq!(
            sig.verify(&ecdh, &unhex(QUOTE_MSG)),
            Err(SignatureError::SchemeNotAllowed { key: "ecdh", signature: "ecdsa" })
        );
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let good = unhex(QUOTE_SIG);
        for n in 0..good.len() {
            assert!(Signature::from_bytes(&good[..n]).is_err());
        }
        let mut hmac = good.clone();
        hmac[1] = 0x05;
        assert!(matches!(
            Signature::from_bytes(&hmac),
            Err(WireError::UnsupportedAlg { id: 5, .. })
        ));
        let zero = Signature::Ecdsa {
            hash: HashAlg::Sha256,
            r: EccParameter::new(vec![0; 32]).unwrap(),
            s: EccParameter::new(vec![1]).unwrap(),
        };
        assert!(matches!(zero.verify(&ak(), b"m"), Err(SignatureError::Malformed(_))));
        let long = Signature::Ecdsa {
            hash: HashAlg::Sha256,
            r: EccParameter::new(vec![1; 33]).unwrap(),
            s: EccParameter::new(vec![1]).unwrap(),
        };
        assert!(matches!(long.verify(&ak(), b"m"), Err(SignatureError::Malformed(_))));
    }

    #[test]
    fn ecdsa_der_encoding() {
        assert_eq!(
            ecdsa_der(&[0x01], &[0x80], 32).unwrap(),
            [0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x80]
        );
        let big = ecdsa_der(&[0xFF; 66], &[0xFF; 66], 66).unwrap();
        assert_eq!(big[..3], [0x30, 0x81, 0x8A]);
    }
}
