//! Subscriber secrets: K, OPc (3GPP TS 35.206), the OTA keys KIc and KID (ETSI TS 102 225),
//! and the subscription profile that carries them.
//!
//! Every secret zeroizes on drop and prints as `Name(…)`: secrets never reach logs, errors
//! or `Debug` output. The only ways to see the bytes are `expose()` and serialisation, which
//! the card's state, the MNO's encrypted store and the encrypted bundle use.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::ids::{Iccid, Imsi};

/// Why bytes are not a valid secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("{name} must be {expected} bytes")]
    Length { name: &'static str, expected: usize },
    #[error("{name} is not hexadecimal")]
    Hex { name: &'static str },
}

/// Declares a fixed-size secret byte array: zeroizing, redacted in `Debug`, serialised as a
/// byte string.
macro_rules! secret_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; $len]);

        impl $name {
            pub const LEN: usize = $len;

            pub fn new(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            pub fn from_slice(bytes: &[u8]) -> Result<Self, SecretError> {
                let arr: [u8; $len] = bytes.try_into().map_err(|_| SecretError::Length {
                    name: stringify!($name),
                    expected: $len,
                })?;
                Ok(Self(arr))
            }

            /// Parses hex (as on a command line); the error never echoes the input.
            pub fn from_hex(s: &str) -> Result<Self, SecretError> {
                let mut bytes = [0u8; $len];
                hex::decode_to_slice(s.trim(), &mut bytes).map_err(|e| match e {
                    hex::FromHexError::InvalidStringLength
                    | hex::FromHexError::OddLength => SecretError::Length {
                        name: stringify!($name),
                        expected: $len,
                    },
                    _ => SecretError::Hex { name: stringify!($name) },
                })?;
                Ok(Self(bytes))
            }

            /// A fresh random value from the operating system's CSPRNG.
            pub fn random() -> Result<Self, ring::error::Unspecified> {
                use ring::rand::SecureRandom;
                let mut bytes = [0u8; $len];
                ring::rand::SystemRandom::new().fill(&mut bytes)?;
                Ok(Self(bytes))
            }

            /// The secret bytes. Callers must not log or format them.
            pub fn expose(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(…)"))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&hex::encode(self.0))
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::Error as _;
                if d.is_human_readable() {
                    let s = zeroize::Zeroizing::new(String::deserialize(d)?);
                    Self::from_hex(&s).map_err(D::Error::custom)
                } else {
                    let b = zeroize::Zeroizing::new(serde_bytes::ByteBuf::deserialize(d)?.into_vec());
                    Self::from_slice(&b).map_err(D::Error::custom)
                }
            }
        }
    };
}

pub(crate) use secret_bytes;

secret_bytes!(
    /// K: the 128-bit subscriber key shared by the USIM and the AuC (3GPP TS 33.102 §6.3).
    SubscriberKey, 16
);
secret_bytes!(
    /// OPc: the operator variant key derived from OP and K (3GPP TS 35.206 §4.1).
    Opc, 16
);
secret_bytes!(
    /// An AES-128 OTA key: KIc (ciphering) or KID (integrity) of ETSI TS 102 225 §5.1.
    OtaKey, 16
);

/// AMF: the 16-bit authentication management field (3GPP TS 33.102 §6.3.2). Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Amf(pub [u8; 2]);

/// The OTA security of a profile (ETSI TS 102 225): the keys the operator uses to send
/// authenticated commands to the card, and the counter that prevents their replay.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OtaKeys {
    pub kic: OtaKey,
    pub kid: OtaKey,
    /// The highest counter value the card has accepted (ETSI TS 102 225 §5.1.1, 5 bytes).
    pub counter: u64,
}

/// A subscription as the card holds it: one operator's identifiers and secrets.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SubscriptionProfile {
    pub iccid: Iccid,
    pub imsi: Imsi,
    pub k: SubscriberKey,
    pub opc: Opc,
    pub amf: Amf,
    pub ota: OtaKeys,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let k = SubscriberKey::from_hex("465b5ce8b199b49faa5f0a2ee238a6bc").unwrap();
        let shown = format!("{k:?}");
        assert_eq!(shown, "SubscriberKey(…)");
        assert!(!shown.contains("465b"));
    }

    #[test]
    fn hex_errors_do_not_echo_input() {
        let err = Opc::from_hex("zz5b5ce8b199b49faa5f0a2ee238a6bc").unwrap_err();
        assert!(!err.to_string().contains("zz5b"));
        assert!(matches!(Opc::from_hex("00"), Err(SecretError::Length { .. })));
    }

    #[test]
    fn profile_debug_hides_every_secret() {
        let p = SubscriptionProfile {
            iccid: "89883030000000000015".parse().unwrap(),
            imsi: "001010000000001".parse().unwrap(),
            k: SubscriberKey::new([0xAB; 16]),
            opc: Opc::new([0xCD; 16]),
            amf: Amf([0x80, 0x00]),
            ota: OtaKeys { kic: OtaKey::new([0xEF; 16]), kid: OtaKey::new([0x12; 16]), counter: 0 },
        };
        let shown = format!("{p:?}");
        for needle in ["abab", "cdcd", "efef", "1212", "171", "205", "239"] {
            assert!(!shown.to_lowercase().contains(needle), "{needle} in {shown}");
        }
    }
}
