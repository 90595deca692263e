//! The COSE building blocks of the bundle, independent of what tresor puts in it:
//! direct key agreement ECDH-ES + HKDF-256 (RFC 9053 §6.3) with the COSE_KDF_Context of
//! RFC 9053 §5.2, content encryption A256GCM (RFC 9053 §4.1) over the Enc_structure of
//! RFC 9052 §5.3, EC2 P-256 COSE_Keys (RFC 9053 §7.1.1) and ES256 (RFC 9053 §2.1) with
//! fixed-length r ‖ s.
//!
//! These functions are checked against the cose-wg Examples (`p256-hkdf-256-02.json`,
//! `ecdsa-sig-01.json`) in the tests below.

use coset::cbor::value::Value;
use coset::iana::{self, EnumI64};
use coset::{
    AsCborValue, CoseEncrypt, CoseKey, CoseKeyBuilder, Header, KeyType, Label, ProtectedHeader,
    RegisteredLabelWithPrivate,
};
use ring::aead::{self, Aad, LessSafeKey, UnboundKey};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use ring::rand::SystemRandom;
use zeroize::Zeroizing;

use super::BundleError;

/// Bytes of a P-256 coordinate and of the ECDH shared secret Z (its x-coordinate).
pub const P256_COORDINATE_LEN: usize = 32;
/// AES-GCM nonce length used by COSE (RFC 9053 §4.1).
pub const IV_LEN: usize = 12;
/// AES-GCM tag length (RFC 9053 §4.1: 128-bit tags).
pub const TAG_LEN: usize = 16;
/// A256GCM key length in bits: keyDataLength of the KDF context.
const CEK_BITS: u64 = 256;

/// A P-256 point given as affine coordinates.
pub(crate) type Coordinates = ([u8; P256_COORDINATE_LEN], [u8; P256_COORDINATE_LEN]);

/// The algorithm of a header, for error messages: its number or name, or "none".
pub(crate) fn alg_name(header: &Header) -> String {
    match &header.alg {
        None => "none".into(),
        Some(RegisteredLabelWithPrivate::Assigned(a)) => a.to_i64().to_string(),
        Some(RegisteredLabelWithPrivate::PrivateUse(i)) => i.to_string(),
        Some(RegisteredLabelWithPrivate::Text(t)) => format!("{t:?}"),
    }
}

/// Whether `header` names exactly `alg`.
pub(crate) fn has_alg(header: &Header, alg: iana::Algorithm) -> bool {
    header.alg == Some(RegisteredLabelWithPrivate::Assigned(alg))
}

/// The value of an integer-labelled header parameter outside coset's named fields.
pub(crate) fn header_value(header: &Header, label: i64) -> Option<&Value> {
    header.rest.iter().find(|(l, _)| *l == Label::Int(label)).map(|(_, v)| v)
}

/// COSE_KDF_Context (RFC 9053 §5.2) for direct key agreement into A256GCM: AlgorithmID =
/// 3, PartyUInfo and PartyVInfo all nil, SuppPubInfo = [256, the recipient's protected
/// header exactly as serialized in the message].
pub(crate) fn kdf_context(recipient_protected: &ProtectedHeader) -> Result<Vec<u8>, BundleError> {
    let nil3 = || Value::Array(vec![Value::Null, Value::Null, Value::Null]);
    let protected = recipient_protected
        .clone()
        .cbor_bstr()
        .map_err(|e| BundleError::Encode(format!("recipient protected header: {e}")))?;
    let context = Value::Array(vec![
        Value::from(iana::Algorithm::A256GCM.to_i64()),
        nil3(),
        nil3(),
        Value::Array(vec![Value::from(CEK_BITS), protected]),
    ]);
    let mut out = Vec::with_capacity(32);
    ciborium::ser::into_writer(&context, &mut out)
        .map_err(|e| BundleError::Encode(format!("KDF context: {e}")))?;
    Ok(out)
}

/// ring's HKDF output length for a 256-bit key.
struct Len32;

impl ring::hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// CEK = HKDF-SHA-256(salt = none, IKM = Z, info = context, L = 32) (RFC 9053 §5.1; an
/// absent salt is HashLen zero bytes, RFC 5869 §2.2, which is what an empty HMAC key is).
pub(crate) fn derive_cek(z: &[u8], context: &[u8]) -> Result<Zeroizing<[u8; 32]>, BundleError> {
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(z);
    let mut cek = Zeroizing::new([0u8; 32]);
    prk.expand(&[context], Len32)
        .and_then(|okm| okm.fill(cek.as_mut_slice()))
        .map_err(|_| BundleError::Encode("HKDF output length".into()))?;
    Ok(cek)
}

fn aead_key(cek: &[u8; 32]) -> Result<LessSafeKey, BundleError> {
    UnboundKey::new(&aead::AES_256_GCM, cek)
        .map(LessSafeKey::new)
        .map_err(|_| BundleError::Encode("AES-256-GCM key".into()))
}

/// AES-256-GCM encryption; the tag is appended (RFC 9053 §4.1).
pub(crate) fn seal(
    cek: &[u8; 32],
    iv: &[u8; IV_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, BundleError> {
    let mut in_out = Vec::with_capacity(plaintext.len() + TAG_LEN);
    in_out.extend_from_slice(plaintext);
    aead_key(cek)?
        .seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(*iv),
            Aad::from(aad),
            &mut in_out,
        )
        .map_err(|_| BundleError::Encode("AES-256-GCM sealing".into()))?;
    Ok(in_out)
}

/// AES-256-GCM decryption and tag check; any failure is [`BundleError::DecryptionFailed`].
pub(crate) fn open(
    cek: &[u8; 32],
    iv: &[u8; IV_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, BundleError> {
    let mut in_out = Zeroizing::new(ciphertext.to_vec());
    let len = aead_key(cek)?
        .open_in_place(aead::Nonce::assume_unique_for_key(*iv), Aad::from(aad), &mut in_out)
        .map_err(|_| BundleError::DecryptionFailed)?
        .len();
    in_out.truncate(len);
    Ok(in_out)
}

/// The SEC1 uncompressed encoding 04 ‖ x ‖ y.
pub(crate) fn sec1_uncompressed(x: &[u8; 32], y: &[u8; 32]) -> [u8; 65] {
    let mut point = [0u8; 65];
    point[0] = 0x04;
    point[1..33].copy_from_slice(x);
    point[33..].copy_from_slice(y);
    point
}

/// Splits a SEC1 uncompressed P-256 point into its coordinates.
pub(crate) fn coordinates(sec1: &[u8]) -> Option<Coordinates> {
    match sec1 {
        [0x04, rest @ ..] if rest.len() == 64 => {
            let (x, y) = rest.split_at(32);
            Some((x.try_into().ok()?, y.try_into().ok()?))
        }
        _ => None,
    }
}

/// Whether (x, y) is a point of P-256 other than the point at infinity, with coordinates
/// below p. ring validates a peer's public key fully before any ECDH (SEC1 §3.2.2.1), so one
/// agreement with a throw-away key is the check.
pub(crate) fn is_p256_point(x: &[u8; 32], y: &[u8; 32]) -> bool {
    let Ok(throwaway) = EphemeralPrivateKey::generate(&agreement::ECDH_P256, &SystemRandom::new())
    else {
        return false;
    };
    let peer = UnparsedPublicKey::new(&agreement::ECDH_P256, sec1_uncompressed(x, y));
    agreement::agree_ephemeral(throwaway, &peer, |_| ()).is_ok()
}

/// An EC2 P-256 public COSE_Key {1: 2, -1: 1, -2: x, -3: y} as a CBOR value.
pub(crate) fn ec2_public_key(x: &[u8; 32], y: &[u8; 32]) -> Result<Value, BundleError> {
    CoseKeyBuilder::new_ec2_pub_key(iana::EllipticCurve::P_256, x.to_vec(), y.to_vec())
        .build()
        .to_cbor_value()
        .map_err(|e| BundleError::Encode(format!("COSE_Key: {e}")))
}

/// Reads an ephemeral public COSE_Key: kty EC2, crv P-256, x and y of 32 bytes each (the
/// compressed form, y as a bool, is refused), no private key. The curve check comes later.
pub(crate) fn parse_ec2_public_key(value: &Value) -> Result<Coordinates, BundleError> {
    let bad = BundleError::MalformedEphemeralKey;
    let key = CoseKey::from_cbor_value(value.clone()).map_err(|_| bad("not a COSE_Key"))?;
    if key.kty != KeyType::Assigned(iana::KeyType::EC2) {
        return Err(bad("key type is not EC2"));
    }
    let param = |p: iana::Ec2KeyParameter| {
        key.params.iter().find(|(l, _)| *l == Label::Int(p.to_i64())).map(|(_, v)| v)
    };
    if param(iana::Ec2KeyParameter::Crv) != Some(&Value::from(iana::EllipticCurve::P_256.to_i64()))
    {
        return Err(bad("curve is not P-256"));
    }
    if param(iana::Ec2KeyParameter::D).is_some() {
        return Err(bad("carries a private key"));
    }
    let coordinate = |p: iana::Ec2KeyParameter, name: &'static str| match param(p) {
        Some(Value::Bytes(b)) => <[u8; 32]>::try_from(b.as_slice()).map_err(|_| bad(name)),
        _ => Err(bad(name)),
    };
    Ok((
        coordinate(iana::Ec2KeyParameter::X, "x is not a 32-byte string")?,
        coordinate(
            iana::Ec2KeyParameter::Y,
            "y is not a 32-byte string (compressed points are not accepted)",
        )?,
    ))
}

/// Z as RFC 9053 §6.3 uses it: the x-coordinate as exactly 32 bytes. A TPM returns it as
/// a TPM2B, which an implementation may hand over without its leading zero bytes; those are
/// restored. Empty or longer values are refused.
fn fixed_length_z(z: &[u8]) -> Result<Zeroizing<[u8; P256_COORDINATE_LEN]>, BundleError> {
    let mut out = Zeroizing::new([0u8; P256_COORDINATE_LEN]);
    let start = P256_COORDINATE_LEN
        .checked_sub(z.len())
        .filter(|_| !z.is_empty())
        .ok_or(BundleError::SharedSecretLength { len: z.len() })?;
    out.get_mut(start..)
        .ok_or(BundleError::SharedSecretLength { len: z.len() })?
        .copy_from_slice(z);
    Ok(out)
}

/// Decrypts a COSE_Encrypt with exactly one ECDH-ES + HKDF-256 recipient and A256GCM
/// content, binding `external_aad`. Checks, each with its own error, in this order: the
/// content algorithm, the IV, the recipient count and structure, the recipient algorithm,
/// the ephemeral key's form and curve membership; then asks `zgen` for Z, derives the CEK
/// and opens the ciphertext.
pub(crate) fn open_direct_ecdh<E: std::fmt::Display>(
    message: &CoseEncrypt,
    external_aad: &[u8],
    zgen: impl FnOnce(&[u8; 32], &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, E>,
) -> Result<Zeroizing<Vec<u8>>, BundleError> {
    let header = &message.protected.header;
    if message.unprotected.alg.is_some() {
        return Err(BundleError::UnprotectedAlgorithm { structure: "COSE_Encrypt" });
    }
    if !has_alg(header, iana::Algorithm::A256GCM) {
        return Err(BundleError::ContentAlgorithm { found: alg_name(header) });
    }
    if !header.iv.is_empty()
        || !header.partial_iv.is_empty()
        || !message.unprotected.partial_iv.is_empty()
    {
        return Err(BundleError::BadIv("only a full IV in the unprotected header is accepted"));
    }
    let iv: [u8; IV_LEN] = message
        .unprotected
        .iv
        .as_slice()
        .try_into()
        .map_err(|_| BundleError::BadIv("the IV must be 12 bytes"))?;

    let [recipient] = message.recipients.as_slice() else {
        return Err(BundleError::RecipientCount { count: message.recipients.len() });
    };
    let r_header = &recipient.protected.header;
    if recipient.unprotected.alg.is_some() {
        return Err(BundleError::UnprotectedAlgorithm { structure: "COSE_recipient" });
    }
    if !has_alg(r_header, iana::Algorithm::ECDH_ES_HKDF_256) {
        return Err(BundleError::KeyAgreementAlgorithm { found: alg_name(r_header) });
    }
    if !recipient.recipients.is_empty() {
        return Err(BundleError::RecipientStructure("nested recipients"));
    }
    if recipient.ciphertext.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(BundleError::RecipientStructure(
            "a recipient ciphertext (direct key agreement has none)",
        ));
    }
    let eph_label = iana::HeaderAlgorithmParameter::EphemeralKey.to_i64();
    if header_value(r_header, eph_label).is_some() {
        return Err(BundleError::RecipientStructure(
            "the ephemeral key belongs in the unprotected header",
        ));
    }
    let eph =
        header_value(&recipient.unprotected, eph_label).ok_or(BundleError::MissingEphemeralKey)?;
    let (x, y) = parse_ec2_public_key(eph)?;
    if !is_p256_point(&x, &y) {
        return Err(BundleError::EphemeralKeyNotOnCurve);
    }

    let ciphertext = message.ciphertext.as_deref().ok_or(BundleError::MissingCiphertext)?;
    if ciphertext.len() < TAG_LEN {
        return Err(BundleError::MissingCiphertext);
    }
    let context = kdf_context(&recipient.protected)?;
    let z = zgen(&x, &y).map_err(|e| BundleError::KeyAgreement(e.to_string()))?;
    let z = fixed_length_z(&z)?;
    let cek = derive_cek(z.as_slice(), &context)?;
    let aad = coset::enc_structure_data(
        coset::EncryptionContext::CoseEncrypt,
        message.protected.clone(),
        external_aad,
    );
    open(&cek, &iv, &aad, ciphertext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coset::{CborSerializable, TaggedCborSerializable};

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    // cose-wg/Examples ecdh-direct-examples/p256-hkdf-256-02.json: "ECDH-ES direct w/
    // hkdf-sha-256 for 256-bit key" (A256GCM), the exact algorithm pair of the bundle.
    const EX02_CBOR: &str = "\
        D8608443A10103A1054CC9CF4DF2FE6C632BF788641358243E63CBB945790A3AAA7EBDA78779DFB3\
        1FF2EF54DD07C2447A224B6828D3781749A76A4E818344A1013818A220A40102200121582098F50A\
        4FF6C05861C8860D13A638EA56C3F5AD7590BBFBF054E1C7B4D91D6280225820F01400B089867804\
        B8E9FC96C3932161F1934F4223069170D924B7E03BF822BB0458246D65726961646F632E6272616E\
        64796275636B406275636B6C616E642E6578616D706C6540";
    const EX02_SECRET: &str = "4B31712E096E5F20B4ECF9790FD8CC7C8B7E2C8AD90BDA81CB224F62C0E7B9A6";
    const EX02_CONTEXT: &str = "840383F6F6F683F6F6F68219010044A1013818";
    const EX02_CEK: &str = "29CAA7326B683A73C98777707866D8838A3ADC3E3F46C180C54C5AAF01F1CC0C";
    const EX02_AAD: &str = "8367456E637279707443A1010340";
    const EX02_IV: &str = "C9CF4DF2FE6C632BF7886413";
    const EX02_PLAINTEXT: &[u8] = b"This is the content.";

    fn example_02() -> CoseEncrypt {
        CoseEncrypt::from_tagged_slice(&unhex(EX02_CBOR)).unwrap()
    }

    #[test]
    fn kdf_context_cek_and_aad_match_the_cose_wg_example() {
        let msg = example_02();
        let context = kdf_context(&msg.recipients[0].protected).unwrap();
        assert_eq!(context, unhex(EX02_CONTEXT));
        let cek = derive_cek(&unhex(EX02_SECRET), &context).unwrap();
        assert_eq!(cek.as_slice(), unhex(EX02_CEK));
        let aad = coset::enc_structure_data(
            coset::EncryptionContext::CoseEncrypt,
            msg.protected.clone(),
            &[],
        );
        assert_eq!(aad, unhex(EX02_AAD));
        // Our sealing reproduces the example's ciphertext byte for byte.
        let iv: [u8; 12] = unhex(EX02_IV).try_into().unwrap();
        assert_eq!(seal(&cek, &iv, &aad, EX02_PLAINTEXT).unwrap(), msg.ciphertext.unwrap());
    }

    #[test]
    fn the_cose_wg_example_decrypts_with_its_shared_secret() {
        let msg = example_02();
        let plaintext = open_direct_ecdh(&msg, &[], |x, y| {
            // The ephemeral key the example carries.
            assert_eq!(
                hex::encode_upper(x),
                "98F50A4FF6C05861C8860D13A638EA56C3F5AD7590BBFBF054E1C7B4D91D6280"
            );
            assert_eq!(
                hex::encode_upper(y),
                "F01400B089867804B8E9FC96C3932161F1934F4223069170D924B7E03BF822BB"
            );
            Ok::<_, BundleError>(Zeroizing::new(unhex(EX02_SECRET)))
        })
        .unwrap();
        assert_eq!(plaintext.as_slice(), EX02_PLAINTEXT);
        // Any external AAD other than the empty one the example used fails.
        let err = open_direct_ecdh(&msg, b"x", |_, _| {
            Ok::<_, BundleError>(Zeroizing::new(unhex(EX02_SECRET)))
        });
        assert_eq!(err.unwrap_err(), BundleError::DecryptionFailed);
    }

    #[test]
    fn structural_checks_come_before_key_agreement() {
        let never = |_: &[u8; 32], _: &[u8; 32]| -> Result<Zeroizing<Vec<u8>>, BundleError> {
            panic!("zgen must not be called")
        };
        // A128GCM content (example 01's algorithm).
        let mut msg = example_02();
        msg.protected = ProtectedHeader {
            original_data: None,
            header: coset::HeaderBuilder::new().algorithm(iana::Algorithm::A128GCM).build(),
        };
        assert_eq!(
            open_direct_ecdh(&msg, &[], never).unwrap_err(),
            BundleError::ContentAlgorithm { found: "1".into() }
        );
        let mut msg = example_02();
        msg.unprotected.iv.pop();
        assert!(matches!(open_direct_ecdh(&msg, &[], never), Err(BundleError::BadIv(_))));
        let mut msg = example_02();
        msg.recipients.push(msg.recipients[0].clone());
        assert_eq!(
            open_direct_ecdh(&msg, &[], never).unwrap_err(),
            BundleError::RecipientCount { count: 2 }
        );
        let mut msg = example_02();
        msg.recipients[0].protected = ProtectedHeader {
            original_data: None,
            header: coset::HeaderBuilder::new()
                .algorithm(iana::Algorithm::ECDH_SS_HKDF_256)
                .build(),
        };
        assert_eq!(
            open_direct_ecdh(&msg, &[], never).unwrap_err(),
            BundleError::KeyAgreementAlgorithm { found: "-27".into() }
        );
        let mut msg = example_02();
        msg.recipients[0].ciphertext = Some(vec![1]);
        assert!(matches!(
            open_direct_ecdh(&msg, &[], never),
            Err(BundleError::RecipientStructure(_))
        ));
        let mut msg = example_02();
        msg.recipients[0].unprotected.rest.clear();
        assert_eq!(
            open_direct_ecdh(&msg, &[], never).unwrap_err(),
            BundleError::MissingEphemeralKey
        );
        // A point off the curve: y + 1.
        let mut msg = example_02();
        let (x, mut y) = {
            let v = header_value(&msg.recipients[0].unprotected, -1).unwrap();
            parse_ec2_public_key(v).unwrap()
        };
        y[31] ^= 1;
        msg.recipients[0].unprotected.rest[0].1 = ec2_public_key(&x, &y).unwrap();
        assert_eq!(
            open_direct_ecdh(&msg, &[], never).unwrap_err(),
            BundleError::EphemeralKeyNotOnCurve
        );
        let mut msg = example_02();
        msg.ciphertext = Some(vec![0; 15]);
        assert_eq!(open_direct_ecdh(&msg, &[], never).unwrap_err(), BundleError::MissingCiphertext);
    }

    #[test]
    fn zgen_failures_and_short_secrets_are_reported() {
        let msg = example_02();
        assert_eq!(
            open_direct_ecdh(&msg, &[], |_, _| Err("TPM_RC_POLICY_FAIL")).unwrap_err(),
            BundleError::KeyAgreement("TPM_RC_POLICY_FAIL".into())
        );
        for len in [0, 33] {
            assert_eq!(
                open_direct_ecdh(&msg, &[], |_, _| Ok::<_, BundleError>(Zeroizing::new(vec![
                    0;
                    len
                ])))
                .unwrap_err(),
                BundleError::SharedSecretLength { len }
            );
        }
        // A Z whose leading zero bytes were dropped is padded back (and here, being the
        // wrong Z, fails the AEAD rather than the length check).
        assert_eq!(
            open_direct_ecdh(&msg, &[], |_, _| Ok::<_, BundleError>(Zeroizing::new(vec![1; 31])))
                .unwrap_err(),
            BundleError::DecryptionFailed
        );
        assert_eq!(fixed_length_z(&[7]).unwrap()[..], [[0u8; 31].as_slice(), &[7]].concat());
    }

    #[test]
    fn ephemeral_keys_must_be_uncompressed_public_p256() {
        let (x, y) = ([1u8; 32], [2u8; 32]);
        let good = ec2_public_key(&x, &y).unwrap();
        assert_eq!(parse_ec2_public_key(&good).unwrap(), (x, y));
        let with = |label: i64, v: Value| {
            let mut key = CoseKey::from_cbor_value(good.clone()).unwrap();
            key.params.retain(|(l, _)| *l != Label::Int(label));
            key.params.push((Label::Int(label), v));
            key.to_cbor_value().unwrap()
        };
        for bad in [
            with(-1, Value::from(2)),            // P-384
            with(-3, Value::Bool(true)),         // compressed
            with(-2, Value::Bytes(vec![1; 31])), // short x
            with(-4, Value::Bytes(vec![3; 32])), // private key
            Value::from(7),
        ] {
            assert!(matches!(
                parse_ec2_public_key(&bad),
                Err(BundleError::MalformedEphemeralKey(_))
            ));
        }
        let okp = CoseKeyBuilder::new_okp_key().build().to_cbor_value().unwrap();
        assert!(parse_ec2_public_key(&okp).is_err());
    }

    #[test]
    fn p256_point_check() {
        // The example's ephemeral key is on the curve; (1, 2) is not.
        let msg = example_02();
        let (x, y) =
            parse_ec2_public_key(header_value(&msg.recipients[0].unprotected, -1).unwrap())
                .unwrap();
        assert!(is_p256_point(&x, &y));
        assert!(!is_p256_point(&[1; 32], &[2; 32]));
        assert!(!is_p256_point(&[0xFF; 32], &[0xFF; 32]));
        let sec1 = sec1_uncompressed(&x, &y);
        assert_eq!(coordinates(&sec1), Some((x, y)));
        assert_eq!(coordinates(&sec1[1..]), None);
    }

    #[test]
    fn header_serialization_is_what_coset_parsed() {
        // The recipient protected header keeps its original bytes (h'A1013818').
        let msg = example_02();
        assert_eq!(
            msg.recipients[0].protected.clone().cbor_bstr().unwrap(),
            Value::Bytes(unhex("A1013818"))
        );
        let _ = msg.to_vec().unwrap();
    }
}
