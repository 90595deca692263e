//! Strict CBOR (RFC 8949) decoding of the serde structures that carry secrets or are signed:
//! exactly one data item, no trailing bytes, and error messages that can never echo a value.
//!
//! serde's "invalid type"/"invalid value" messages quote the offending value (a string, an
//! integer); in a subscription profile that value could be part of a secret, so only the
//! messages that name a field, never a value, are passed on.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Decodes exactly one CBOR data item from `bytes` into `T`. The caller has bounded
/// `bytes`; ciborium allocates only for items present in the input and limits nesting.
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut rest = bytes;
    let value: T = ciborium::de::from_reader(&mut rest).map_err(|e| describe(&e))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the CBOR item", rest.len()));
    }
    Ok(value)
}

/// Encodes `value` as CBOR.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(256);
    ciborium::ser::into_writer(value, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// A decoding error without any decoded value in it.
fn describe<E: std::fmt::Debug>(e: &ciborium::de::Error<E>) -> String {
    use ciborium::de::Error;
    match e {
        Error::Io(_) => "input ends early".into(),
        Error::Syntax(offset) => format!("not well-formed CBOR at byte {offset}"),
        Error::RecursionLimitExceeded => "nested too deeply".into(),
        Error::Semantic(_, msg) => {
            let names_a_field_only = ["missing field", "duplicate field", "unknown field"]
                .iter()
                .any(|p| msg.starts_with(p));
            if names_a_field_only {
                // Field names are ours or the sender's choice, never secret; cap the length.
                msg.chars().take(120).collect()
            } else {
                "a field has the wrong type or an invalid value".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Two {
        a: u64,
        b: String,
    }

    #[test]
    fn round_trip_and_trailing_bytes() {
        let bytes = encode(&Two { a: 1, b: "x".into() }).unwrap();
        assert_eq!(decode_exact::<Two>(&bytes).unwrap(), Two { a: 1, b: "x".into() });
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_exact::<Two>(&longer).unwrap_err(), "1 bytes after the CBOR item");
        assert_eq!(decode_exact::<Two>(&bytes[..bytes.len() - 1]).unwrap_err(), "input ends early");
    }

    #[test]
    fn values_never_appear_in_errors() {
        // {"a": "secret-value", "b": "x"}: a string where an integer belongs.
        #[derive(serde::Serialize)]
        struct Wrong {
            a: &'static str,
            b: &'static str,
        }
        let bytes = encode(&Wrong { a: "secret-value", b: "x" }).unwrap();
        let err = decode_exact::<Two>(&bytes).unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        #[derive(serde::Serialize)]
        struct Extra {
            a: u64,
            b: &'static str,
            c: u8,
        }
        let err = decode_exact::<Two>(&encode(&Extra { a: 1, b: "x", c: 0 }).unwrap()).unwrap_err();
        assert!(err.starts_with("unknown field `c`"), "{err}");
    }
}
