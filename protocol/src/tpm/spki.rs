//! A TPM public key as X.509 sees it: DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7; RSA per
//! RFC 3279 §2.3.1, EC per RFC 5480 §2) and its PEM form (RFC 7468 "PUBLIC KEY"), which is
//! the `ak.pem` that `tpm2_createak -f pem`, `tpm2_readpublic -f pem` write and
//! `tpm2_checkquote -u` reads.
//!
//! [`Spki`] is the normalised key (modulus without leading zeros, coordinates padded to the
//! curve size), so two encodings of one key compare equal.

use super::error::KeyError;
use super::public::{EccCurve, Public, PublicKey};
use crate::der::{self, seq, strip, tlv, uint_der};

/// rsaEncryption, 1.2.840.113549.1.1.1.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
/// prime256v1, 1.2.840.10045.3.1.7.
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// secp384r1, 1.3.132.0.34.
const OID_P384: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x22];
/// secp521r1, 1.3.132.0.35.
const OID_P521: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x23];

/// The largest RSA modulus accepted (MAX_RSA_KEY_BYTES).
const MAX_MODULUS: usize = 512;

/// An RSA or EC public key without TPM attributes.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Spki {
    /// `modulus` big-endian without leading zero bytes.
    Rsa { modulus: Vec<u8>, exponent: u32 },
    /// Affine coordinates, each exactly `curve.coordinate_size()` bytes.
    Ecc { curve: EccCurve, x: Vec<u8>, y: Vec<u8> },
}

impl Spki {
    /// The key of a TPM public area. RSA: the modulus must have `keyBits / 8` bytes; ECC:
    /// the coordinates must fit the curve.
    pub fn from_public(public: &Public) -> Result<Self, KeyError> {
        match &public.key {
            PublicKey::Rsa { parms, modulus } => {
                if modulus.len() != usize::from(parms.key_bits / 8)
                    || modulus.first().is_none_or(|&b| b == 0)
                {
                    return Err(KeyError::Malformed("RSA modulus does not match keyBits"));
                }
                Ok(Self::Rsa { modulus: modulus.to_vec(), exponent: parms.effective_exponent() })
            }
            PublicKey::Ecc { parms, point } => {
                let size = parms.curve.coordinate_size();
                Ok(Self::Ecc {
                    curve: parms.curve,
                    x: pad(&point.x, size)?,
                    y: pad(&point.y, size)?,
                })
            }
        }
    }

    /// Parses a DER SubjectPublicKeyInfo of an RSA or a P-256/P-384/P-521 key.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        use x509_parser::prelude::FromDer;
        use x509_parser::public_key::PublicKey as X509Key;
        use x509_parser::x509::SubjectPublicKeyInfo;

        let spki_err = |e: String| KeyError::Spki(e);
        let (rest, spki) =
            SubjectPublicKeyInfo::from_der(der).map_err(|e| spki_err(e.to_string()))?;
        if !rest.is_empty() {
            return Err(spki_err("trailing bytes after the SubjectPublicKeyInfo".into()));
        }
        match spki.parsed().map_err(|e| spki_err(e.to_string()))? {
            X509Key::RSA(rsa) => {
                let modulus = strip(rsa.modulus);
                if modulus.is_empty() || modulus.len() > MAX_MODULUS {
                    return Err(KeyError::Malformed("RSA modulus size"));
                }
                let exponent = rsa.try_exponent().map_err(|e| spki_err(e.to_string()))?;
                let exponent = u32::try_from(exponent)
                    .map_err(|_| KeyError::Malformed("RSA exponent above 2^32"))?;
                Ok(Self::Rsa { modulus: modulus.to_vec(), exponent })
            }
            X509Key::EC(point) => {
                let curve_oid = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .ok_or_else(|| spki_err("EC key without a named curve".into()))?;
                let curve = match curve_oid.as_bytes() {
                    OID_P256 => EccCurve::NistP256,
                    OID_P384 => EccCurve::NistP384,
                    OID_P521 => EccCurve::NistP521,
                    _ => return Err(spki_err(format!("EC curve {curve_oid}"))),
                };
                let size = curve.coordinate_size();
                match point.data() {
                    [0x04, xy @ ..] if xy.len() == 2 * size => {
                        let (x, y) = xy.split_at(size);
                        Ok(Self::Ecc { curve, x: x.to_vec(), y: y.to_vec() })
                    }
                    _ => Err(KeyError::Malformed(
                        "EC point is not uncompressed or has the wrong size",
                    )),
                }
            }
            _ => Err(spki_err("neither RSA nor EC".into())),
        }
    }

    /// Parses a PEM "PUBLIC KEY" (the first one in `text`).
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let pem = pem::parse(text).map_err(|e| KeyError::Pem(e.to_string()))?;
        if pem.tag() != "PUBLIC KEY" {
            return Err(KeyError::Pem(format!("label is {:?}", pem.tag())));
        }
        Self::from_der(pem.contents())
    }

    /// DER SubjectPublicKeyInfo.
    pub fn to_der(&self) -> Result<Vec<u8>, KeyError> {
        let (algorithm, key) = match self {
            Self::Rsa { modulus, exponent } => {
                let algorithm = [tlv(der::OID, OID_RSA_ENCRYPTION), tlv(der::NULL, &[])].concat();
                let rsa_key = seq(&[uint_der(modulus), uint_der(&exponent.to_be_bytes())]);
                (algorithm, rsa_key)
            }
            Self::Ecc { curve, x, y } => {
                let oid = match curve {
                    EccCurve::NistP256 => OID_P256,
                    EccCurve::NistP384 => OID_P384,
                    EccCurve::NistP521 => OID_P521,
                    other => return Err(KeyError::UnsupportedCurve(other.name())),
                };
                let algorithm = [tlv(der::OID, OID_EC_PUBLIC_KEY), tlv(der::OID, oid)].concat();
                (algorithm, [&[0x04][..], x, y].concat())
            }
        };
        Ok(seq(&[tlv(der::SEQUENCE, &algorithm), der::bit_string(&key)]))
    }

    /// PEM "PUBLIC KEY" with 64-character lines and `\n` line ends, as OpenSSL writes it.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let pem = pem::Pem::new("PUBLIC KEY", self.to_der()?);
        Ok(pem::encode_config(&pem, pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF)))
    }

    /// Uncompressed SEC1 point 04 ‖ x ‖ y (what ring takes for ECDSA and ECDH).
    pub fn sec1_point(&self) -> Option<Vec<u8>> {
        match self {
            Self::Ecc { x, y, .. } => Some([&[0x04][..], x, y].concat()),
            Self::Rsa { .. } => None,
        }
    }
}

impl Public {
    /// The public key in DER SubjectPublicKeyInfo form.
    pub fn to_spki_der(&self) -> Result<Vec<u8>, KeyError> {
        Spki::from_public(self)?.to_der()
    }

    /// The public key as PEM, byte for byte what `tpm2_readpublic -f pem` writes.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        Spki::from_public(self)?.to_pem()
    }

    /// Whether an X.509 SubjectPublicKeyInfo (e.g. from the EK certificate) holds the same
    /// key as this public area. Compares the normalised keys, not the encodings.
    pub fn matches_spki_der(&self, spki_der: &[u8]) -> Result<bool, KeyError> {
        Ok(Spki::from_public(self)? == Spki::from_der(spki_der)?)
    }
}

/// Left-pads a big-endian coordinate to `size`; refuses one that does not fit.
fn pad(value: &[u8], size: usize) -> Result<Vec<u8>, KeyError> {
    let value = strip(value);
    if value.len() > size {
        return Err(KeyError::Malformed("EC coordinate longer than the curve"));
    }
    let mut out = vec![0u8; size - value.len()];
    out.extend_from_slice(value);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::public::tests::{AK_ECC_TPM2B, EK_ECC_TPM2B};

    fn public(hex_str: &str) -> Public {
        Public::from_tpm2b(&hex::decode(hex_str.split_whitespace().collect::<String>()).unwrap())
            .unwrap()
    }

    /// `tpm2_createak … -f pem -u ak.pem` for the AK of `AK_ECC_TPM2B`.
    const AK_PEM: &str = "-----BEGIN PUBLIC KEY-----\n\
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqmNsAsMLgaofq+jjck25rqEY5Pud\n\
        fhy07TGA2dhZ6ngaZoedODZdamD4kJXOnJq7ZNhLKTe7a2GUfDzb8gEm+w==\n\
        -----END PUBLIC KEY-----\n";

    #[test]
    fn pem_matches_tpm2_tools_byte_for_byte() {
        let ak = public(AK_ECC_TPM2B);
        assert_eq!(ak.to_pem().unwrap(), AK_PEM);
        let spki = Spki::from_pem(AK_PEM).unwrap();
        assert_eq!(spki, Spki::from_public(&ak).unwrap());
        assert!(ak.matches_spki_der(&ak.to_spki_der().unwrap()).unwrap());
        let ek = public(EK_ECC_TPM2B);
        assert!(!ek.matches_spki_der(&ak.to_spki_der().unwrap()).unwrap());
    }

    #[test]
    fn rsa_spki_round_trips() {
        let modulus: Vec<u8> = (0..256).map(|i| (i as u8) | 0x80).collect();
        let key = Spki::Rsa { modulus: modulus.clone(), exponent: 65537 };
        let der = key.to_der().unwrap();
        assert_eq!(Spki::from_der(&der).unwrap(), key);
        // Cross-check the encoding with the rsa crate.
        use rsa::pkcs8::DecodePublicKey;
        let parsed = rsa::RsaPublicKey::from_public_key_der(&der).unwrap();
        use rsa::traits::PublicKeyParts;
        assert_eq!(parsed.n().to_bytes_be(), modulus);
        assert_eq!(parsed.e().to_bytes_be(), vec![1, 0, 1]);
    }

    #[test]
    fn refuses_bad_keys() {
        assert!(matches!(Spki::from_pem("not pem"), Err(KeyError::Pem(_))));
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(Spki::from_pem(cert), Err(KeyError::Pem(_))));
        assert!(matches!(Spki::from_der(&[0x30, 0x00]), Err(KeyError::Spki(_))));
        let mut der = public(AK_ECC_TPM2B).to_spki_der().unwrap();
        der.push(0);
        assert!(matches!(Spki::from_der(&der), Err(KeyError::Spki(_))));
        let bn = Spki::Ecc { curve: EccCurve::BnP256, x: vec![1; 32], y: vec![2; 32] };
        assert!(matches!(bn.to_der(), Err(KeyError::UnsupportedCurve(_))));
    }
}
