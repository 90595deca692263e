//! Identities that cross role boundaries: the device id (TPM name of the EK), the verifier's
//! nonce, and the subscription identifiers IMSI (3GPP TS 23.003 §2.2) and ICCID (ITU-T E.118).
//!
//! Each is a newtype that can only hold a well-formed value, so a `DeviceId` that reached a
//! function is known to be a TPM name and an `Imsi` is known to be 6–15 decimal digits.

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;

/// Why a string or byte string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("device id is not a TPM name (nameAlg ‖ digest): {0}")]
    DeviceId(&'static str),
    #[error("nonce must be {expected} bytes, got {got}")]
    NonceLength { expected: usize, got: usize },
    #[error("IMSI must be 6 to 15 decimal digits")]
    Imsi,
    #[error("ICCID must be 18 to 20 decimal digits")]
    Iccid,
    #[error("not hexadecimal")]
    Hex,
}

/// TPM_ALG_SHA1, TPM_ALG_SHA256, TPM_ALG_SHA384, TPM_ALG_SHA512 (TPM 2.0 Part 2 §6.3) and
/// their digest sizes: the name algorithms a TPM name may carry.
const NAME_ALGS: [(u16, usize); 4] = [(0x0004, 20), (0x000B, 32), (0x000C, 48), (0x000D, 64)];

/// The identity of an M2ME: the TPM name of its EK (nameAlg ‖ H(TPMT_PUBLIC)), as
/// TPM 2.0 Part 1 §16 defines names. It is stable for the life of the TPM's endorsement
/// hierarchy and binds everything else (AK, bundle key, EAR, bundle) to one TPM.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(Vec<u8>);

impl DeviceId {
    /// Accepts the bytes of a TPM2B_NAME's `name` field for an object (not a handle name).
    pub fn from_name(name: &[u8]) -> Result<Self, IdError> {
        if name.len() < 2 {
            return Err(IdError::DeviceId("shorter than a name algorithm"));
        }
        let alg = u16::from_be_bytes([name[0], name[1]]);
        let Some(&(_, size)) = NAME_ALGS.iter().find(|(a, _)| *a == alg) else {
            return Err(IdError::DeviceId("unknown name algorithm"));
        };
        if name.len() != 2 + size {
            return Err(IdError::DeviceId("digest length does not match the name algorithm"));
        }
        Ok(Self(name.to_vec()))
    }

    /// The name bytes: nameAlg (big-endian u16) ‖ digest.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lowercase hex of the name; used in file names, URLs and logs.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.to_hex())
    }
}

impl FromStr for DeviceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::from_name(&hex::decode(s).map_err(|_| IdError::Hex)?)
    }
}

impl Serialize for DeviceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(D::Error::custom)
        } else {
            let b = serde_bytes::ByteBuf::deserialize(d)?;
            Self::from_name(&b).map_err(D::Error::custom)
        }
    }
}

/// Hex of the TPM name, in JSON; a byte string in CBOR.
impl utoipa::PartialSchema for DeviceId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::wire::string_schema(
            "Device id: the TPM name of the EK (nameAlg ‖ digest); lowercase hex in JSON and \
             URLs, a byte string in CBOR",
            "^[0-9a-fA-F]{4,132}$",
        )
    }
}

impl utoipa::ToSchema for DeviceId {}

/// A verifier challenge: 32 random bytes, used once (the TPM's qualifying data for a quote).
#[derive(Clone, Copy, Eq)]
pub struct Nonce([u8; Nonce::LEN]);

impl Nonce {
    pub const LEN: usize = 32;

    /// A fresh nonce from the operating system's CSPRNG.
    pub fn random() -> Result<Self, ring::error::Unspecified> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; Self::LEN];
        ring::rand::SystemRandom::new().fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        let arr: [u8; Self::LEN] = bytes
            .try_into()
            .map_err(|_| IdError::NonceLength { expected: Self::LEN, got: bytes.len() })?;
        Ok(Self(arr))
    }

    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Constant time: a nonce comparison must not tell an attacker how many bytes matched.
impl PartialEq for Nonce {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", self.to_hex())
    }
}

impl FromStr for Nonce {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::from_bytes(&hex::decode(s).map_err(|_| IdError::Hex)?)
    }
}

impl Serialize for Nonce {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Nonce {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            String::deserialize(d)?.parse().map_err(D::Error::custom)
        } else {
            Self::from_bytes(&serde_bytes::ByteBuf::deserialize(d)?).map_err(D::Error::custom)
        }
    }
}

impl utoipa::PartialSchema for Nonce {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::wire::string_schema(
            "Nonce: 32 bytes; lowercase hex in JSON, a byte string in CBOR",
            "^[0-9a-fA-F]{64}$",
        )
    }
}

impl utoipa::ToSchema for Nonce {}

/// Declares a string newtype of decimal digits with a length range, serialised as a string.
macro_rules! digit_string {
    ($(#[$doc:meta])* $name:ident, $min:expr, $max:expr, $err:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                if (($min)..=($max)).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err($err)
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(D::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::wire::string_schema(
                    concat!(stringify!($name), ": decimal digits"),
                    concat!("^[0-9]{", stringify!($min), ",", stringify!($max), "}$"),
                )
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

digit_string!(
    /// International Mobile Subscriber Identity: MCC (3) ‖ MNC (2–3) ‖ MSIN, at most 15
    /// digits (3GPP TS 23.003 §2.2).
    Imsi, 6, 15, IdError::Imsi
);

digit_string!(
    /// Integrated Circuit Card Identifier: 18–20 digits, the last a Luhn check digit
    /// (ITU-T E.118).
    Iccid, 18, 20, IdError::Iccid
);

impl Imsi {
    /// The first three digits: the mobile country code.
    pub fn mcc(&self) -> &str {
        &self.0[..3]
    }
}

impl Iccid {
    /// Appends the Luhn check digit to an 17–19 digit ICCID body.
    pub fn with_check_digit(body: &str) -> Result<Self, IdError> {
        if !(17..=19).contains(&body.len()) || !body.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::Iccid);
        }
        let sum: u32 = body
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let d = u32::from(b - b'0');
                if i % 2 == 0 {
                    let d2 = d * 2;
                    if d2 > 9 { d2 - 9 } else { d2 }
                } else {
                    d
                }
            })
            .sum();
        let check = (10 - sum % 10) % 10;
        format!("{body}{check}").parse()
    }
}

/// Whether `s` is a campaign id as the RO chooses them: 1 to 64 of `A–Z a–z 0–9 . _ -`,
/// neither `.` nor `..`, so it is safe in a URL path and a log line. The operators' API
/// type (`provisioning::mno::CampaignId`) and MNO-A's OTA command both hold to it.
pub fn valid_campaign_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && s != "."
        && s != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_requires_a_tpm_name() {
        let mut name = vec![0x00, 0x0B];
        name.extend([7u8; 32]);
        let id = DeviceId::from_name(&name).unwrap();
        assert_eq!(id.to_hex().parse::<DeviceId>().unwrap(), id);
        assert!(DeviceId::from_name(&name[..20]).is_err());
        assert!(DeviceId::from_name(&[0x00, 0x99, 1, 2]).is_err());
        assert!(DeviceId::from_name(&[]).is_err());
    }

    #[test]
    fn imsi_and_iccid_are_digits_of_bounded_length() {
        assert!("001010123456789".parse::<Imsi>().is_ok());
        assert!("0010101234567890".parse::<Imsi>().is_err());
        assert!("00101a".parse::<Imsi>().is_err());
        assert_eq!("001010123456789".parse::<Imsi>().unwrap().mcc(), "001");
        assert!("8949000000000000001".parse::<Iccid>().is_ok());
    }

    #[test]
    fn iccid_check_digit_is_luhn() {
        // Luhn (ISO/IEC 7812-1 Annex B), checked by hand: the doubled digits of
        // 8988303000000000001 sum to 45, so the check digit is 5.
        assert_eq!(
            Iccid::with_check_digit("8988303000000000001").unwrap().as_str(),
            "89883030000000000015"
        );
        assert!(Iccid::with_check_digit("8988").is_err());
    }

    #[test]
    fn nonce_round_trips_and_compares() {
        let n = Nonce::random().unwrap();
        assert_eq!(n.to_hex().parse::<Nonce>().unwrap(), n);
        assert!(Nonce::from_bytes(&[0u8; 31]).is_err());
    }
}
