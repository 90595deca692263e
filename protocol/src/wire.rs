//! The two encodings of every API message: CBOR (RFC 8949, `application/cbor`), what
//! tresor's own clients send and the default, and JSON (RFC 8259, `application/json`) for
//! clients that have no CBOR library at hand. The message types are the same; only byte
//! strings differ: a CBOR byte string, or in JSON a string of base64url without padding
//! (RFC 4648 §5). [`bytes`] does that on each byte-string field (`#[serde(with = …)]`),
//! keyed on `Serializer::is_human_readable` (serde_json: true, ciborium: false), so the
//! CBOR encoding is exactly what plain `serde_bytes::ByteBuf` fields gave.
//!
//! JSON decoding is as strict as CBOR decoding: bounded before parsing, unknown and
//! duplicate fields refused by the types, trailing data refused, and a refusal names the
//! field it is about ([`from_json`]).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `application/cbor`.
pub const CBOR_MEDIA_TYPE: &str = "application/cbor";
/// `application/json`.
pub const JSON_MEDIA_TYPE: &str = "application/json";

/// Longest reason a refusal quotes from the JSON parser: its messages can quote input.
const MAX_REASON_LEN: usize = 200;

/// One of the two encodings of an API message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Cbor,
    Json,
}

impl Format {
    /// Its media type.
    pub const fn media_type(self) -> &'static str {
        match self {
            Self::Cbor => CBOR_MEDIA_TYPE,
            Self::Json => JSON_MEDIA_TYPE,
        }
    }

    /// The format of a media type (parameters and case ignored), if it is one of the two.
    pub fn of_media_type(media_type: &str) -> Option<Self> {
        let essence = media_type.split(';').next().unwrap_or("").trim();
        [Self::Cbor, Self::Json].into_iter().find(|f| essence.eq_ignore_ascii_case(f.media_type()))
    }
}

/// Why bytes are not a JSON message of the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    /// `field` is the path of the offending field (`.` for the message itself).
    #[error("JSON field `{field}`: {reason}")]
    Json { field: String, reason: String },
    #[error("message could not be encoded: {0}")]
    Encode(String),
}

/// Decodes a JSON message of at most `max` bytes; a refusal names the field.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge { size: bytes.len(), max });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let reason = e.into_inner().to_string().chars().take(MAX_REASON_LEN).collect();
        WireError::Json { field, reason }
    })?;
    de.end().map_err(|e| WireError::Json {
        field: ".".into(),
        reason: e.to_string().chars().take(MAX_REASON_LEN).collect(),
    })?;
    Ok(value)
}

/// Encodes a message as JSON.
pub fn to_json<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    serde_json::to_vec(message).map_err(|e| WireError::Encode(e.to_string()))
}

/// base64url without padding (RFC 4648 §5) of `bytes`.
pub fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding; padding, the standard alphabet and non-zero
/// trailing bits are refused (one spelling per value).
pub fn from_base64url(text: &str) -> Result<Vec<u8>, &'static str> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| "not base64url without padding (RFC 4648 §5)")
}

/// The OpenAPI schema of a byte-string field: base64url without padding in JSON (a CBOR
/// byte string in CBOR). Fields name it with `#[schema(value_type = wire::Base64Url)]`.
pub struct Base64Url;

impl utoipa::PartialSchema for Base64Url {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            "Bytes: base64url without padding (RFC 4648 §5) in JSON, a byte string in CBOR",
            "^[A-Za-z0-9_-]*$",
        )
    }
}

impl utoipa::ToSchema for Base64Url {}

/// A string schema with a description and a pattern (for the types whose serde code is
/// written by hand, so utoipa cannot derive it).
pub fn string_schema(
    description: &str,
    pattern: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .into()
}

/// `#[serde(with = "protocol::wire::bytes")]` on a byte-string field (`ByteBuf`, `Vec<u8>`):
/// a CBOR byte string, or base64url in JSON.
pub mod bytes {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::ByteBuf;

    pub fn serialize<T: AsRef<[u8]>, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&super::base64url(value.as_ref()))
        } else {
            s.serialize_bytes(value.as_ref())
        }
    }

    pub fn deserialize<'de, T: From<Vec<u8>>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            super::from_base64url(&text).map(T::from).map_err(D::Error::custom)
        } else {
            Ok(T::from(ByteBuf::deserialize(d)?.into_vec()))
        }
    }
}

/// [`bytes`] for a list of byte strings (`Vec<ByteBuf>`).
pub mod bytes_list {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::ByteBuf;

    /// One element, encoded by [`super::bytes`].
    #[derive(serde::Serialize, Deserialize)]
    #[serde(transparent)]
    struct Item(#[serde(with = "super::bytes")] ByteBuf);

    pub fn serialize<S: Serializer>(value: &[ByteBuf], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(value.len()))?;
        for item in value {
            seq.serialize_element(&Item(item.clone()))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ByteBuf>, D::Error> {
        Ok(Vec::<Item>::deserialize(d)?.into_iter().map(|i| i.0).collect())
    }
}

/// [`bytes`] for the values of a bank → PCR → value map (`Evidence::pcr_values`).
pub mod pcr_values {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_bytes::ByteBuf;

    use crate::tpm::HashAlg;

    #[derive(Serialize, Deserialize)]
    #[serde(transparent)]
    struct Item(#[serde(with = "super::bytes")] ByteBuf);

    type Values = BTreeMap<HashAlg, BTreeMap<u8, ByteBuf>>;

    pub fn serialize<S: Serializer>(value: &Option<Values>, s: S) -> Result<S::Ok, S::Error> {
        let items: Option<BTreeMap<HashAlg, BTreeMap<u8, Item>>> = value.as_ref().map(|banks| {
            banks
                .iter()
                .map(|(bank, pcrs)| {
                    (*bank, pcrs.iter().map(|(pcr, v)| (*pcr, Item(v.clone()))).collect())
                })
                .collect()
        });
        items.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Values>, D::Error> {
        let items = Option::<BTreeMap<HashAlg, BTreeMap<u8, Item>>>::deserialize(d)?;
        Ok(items.map(|banks| {
            banks
                .into_iter()
                .map(|(bank, pcrs)| (bank, pcrs.into_iter().map(|(pcr, v)| (pcr, v.0)).collect()))
                .collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_bytes::ByteBuf;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(with = "bytes")]
        one: ByteBuf,
        #[serde(with = "bytes_list", default)]
        many: Vec<ByteBuf>,
        n: u32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Plain {
        one: ByteBuf,
        #[serde(default)]
        many: Vec<ByteBuf>,
        n: u32,
    }

    fn sample() -> Sample {
        Sample {
            one: ByteBuf::from(vec![0xFB, 0xFF, 0x00]),
            many: vec![ByteBuf::from(vec![1]), ByteBuf::new()],
            n: 7,
        }
    }

    #[test]
    fn cbor_is_that_of_plain_byte_strings() {
        let ours = sample();
        let plain = Plain { one: ours.one.clone(), many: ours.many.clone(), n: ours.n };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        ciborium::into_writer(&ours, &mut a).unwrap();
        ciborium::into_writer(&plain, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(ciborium::from_reader::<Sample, _>(a.as_slice()).unwrap(), ours);
    }

    /// RFC 4648 §10 test vectors, in the URL-safe alphabet without padding, and 0xFB 0xFF,
    /// which differs between the two alphabets.
    #[test]
    fn json_is_base64url_without_padding() {
        let json = String::from_utf8(to_json(&sample()).unwrap()).unwrap();
        assert_eq!(json, r#"{"one":"-_8A","many":["AQ",""],"n":7}"#);
        for (plain, encoded) in
            [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg")]
        {
            assert_eq!(base64url(plain.as_bytes()), encoded);
            assert_eq!(from_base64url(encoded).unwrap(), plain.as_bytes());
        }
        assert_eq!(from_json::<Sample>(json.as_bytes(), 1024).unwrap(), sample());
    }

    #[test]
    fn json_refusals_name_the_field() {
        let refuse = |json: &str| match from_json::<Sample>(json.as_bytes(), 1024) {
            Err(WireError::Json { field, reason }) => (field, reason),
            other => panic!("{json}: {other:?}"),
        };
        // Padding, the standard alphabet, and a non-canonical last character.
        for bad in ["Zg==", "+/8A", "Zh"] {
            let (field, _) = refuse(&format!(r#"{{"one":"{bad}","n":1}}"#));
            assert_eq!(field, "one", "{bad}");
        }
        let (field, _) = refuse(r#"{"one":"","many":["AQ","*"],"n":1}"#);
        assert_eq!(field, "many[1]");
        let (_, reason) = refuse(r#"{"one":"","n":1,"extra":true}"#);
        assert!(reason.contains("extra"), "{reason}");
        let (_, reason) = refuse(r#"{"one":""}"#);
        assert!(reason.contains("`n`"), "{reason}");
        let (_, reason) = refuse(r#"{"one":"","n":1,"n":2}"#);
        assert!(reason.contains("duplicate"), "{reason}");
        let (field, _) = refuse(r#"{"one":"","n":1} {}"#);
        assert_eq!(field, ".");
        assert!(matches!(
            from_json::<Sample>(&[b' '; 1025], 1024),
            Err(WireError::TooLarge { size: 1025, max: 1024 })
        ));
    }

    #[test]
    fn media_types() {
        assert_eq!(Format::of_media_type("application/JSON; charset=utf-8"), Some(Format::Json));
        assert_eq!(Format::of_media_type(" application/cbor"), Some(Format::Cbor));
        assert_eq!(Format::of_media_type("application/cbor-seq"), None);
        assert_eq!(Format::of_media_type("text/plain"), None);
    }

    #[test]
    fn pcr_values_are_base64url_in_json_and_byte_strings_in_cbor() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct WithPcrs {
            #[serde(default, with = "pcr_values")]
            pcrs: Option<
                std::collections::BTreeMap<
                    crate::tpm::HashAlg,
                    std::collections::BTreeMap<u8, ByteBuf>,
                >,
            >,
        }
        let mut bank = std::collections::BTreeMap::new();
        bank.insert(16u8, ByteBuf::from(vec![0xFF; 32]));
        let mut banks = std::collections::BTreeMap::new();
        banks.insert(crate::tpm::HashAlg::Sha256, bank);
        let value = WithPcrs { pcrs: Some(banks) };
        let json = serde_json::to_value(&value).unwrap();
        assert_eq!(json["pcrs"]["sha256"]["16"], base64url(&[0xFF; 32]));
        assert_eq!(serde_json::from_value::<WithPcrs>(json).unwrap(), value);
        let mut cbor = Vec::new();
        ciborium::into_writer(&value, &mut cbor).unwrap();
        assert!(cbor.windows(34).any(|w| w[0] == 0x58 && w[1] == 32 && w[2..] == [0xFF; 32]));
        assert_eq!(ciborium::from_reader::<WithPcrs, _>(&cbor[..]).unwrap(), value);
        assert!(serde_json::from_str::<WithPcrs>(r#"{"pcrs":{"sha256":{"16":"+/=="}}}"#).is_err());
    }
}
