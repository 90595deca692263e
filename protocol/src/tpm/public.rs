//! The public area of a TPM key: TPMT_PUBLIC and TPM2B_PUBLIC for RSA and ECC keys
//! (TPM 2.0 Part 2 §12.2), its object attributes (TPMA_OBJECT, Part 2 §8.3) and its name,
//! nameAlg ‖ H_nameAlg(marshalled TPMT_PUBLIC) (Part 1 §16 "Names").
//!
//! Parsing is strict and canonical: every byte read is kept, so marshalling a parsed public
//! area gives back the same bytes and the computed name is the name the TPM computed.
//! Keyed-hash and symmetric objects are refused as unsupported.

use std::fmt;

use super::alg::{HashAlg, id};
use super::error::WireError;
use super::wire::{
    Digest, EccParameter, Marshal, Name, PublicKeyRsa, Reader, Unmarshal, put_sized, put_u16,
    put_u32,
};

/// sizeof(TPMT_PUBLIC) in tpm2-tss: the largest TPM2B_PUBLIC body accepted.
pub const MAX_PUBLIC_SIZE: usize = 612;

/// TPMA_OBJECT (TPM 2.0 Part 2 §8.3.2), a bit set that can only hold defined bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ObjectAttributes(u32);

impl ObjectAttributes {
    pub const FIXED_TPM: Self = Self(1 << 1);
    pub const ST_CLEAR: Self = Self(1 << 2);
    pub const FIXED_PARENT: Self = Self(1 << 4);
    pub const SENSITIVE_DATA_ORIGIN: Self = Self(1 << 5);
    pub const USER_WITH_AUTH: Self = Self(1 << 6);
    pub const ADMIN_WITH_POLICY: Self = Self(1 << 7);
    /// TPM 2.0 Library 1.83.
    pub const FIRMWARE_LIMITED: Self = Self(1 << 8);
    /// TPM 2.0 Library 1.83.
    pub const SVN_LIMITED: Self = Self(1 << 9);
    pub const NO_DA: Self = Self(1 << 10);
    pub const ENCRYPTED_DUPLICATION: Self = Self(1 << 11);
    pub const RESTRICTED: Self = Self(1 << 16);
    pub const DECRYPT: Self = Self(1 << 17);
    /// `sign` / `encrypt`.
    pub const SIGN_ENCRYPT: Self = Self(1 << 18);
    pub const X509_SIGN: Self = Self(1 << 19);

    /// Each defined bit with its Part 2 name, in bit order.
    pub const NAMED: [(Self, &'static str); 14] = [
        (Self::FIXED_TPM, "fixedTPM"),
        (Self::ST_CLEAR, "stClear"),
        (Self::FIXED_PARENT, "fixedParent"),
        (Self::SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
        (Self::USER_WITH_AUTH, "userWithAuth"),
        (Self::ADMIN_WITH_POLICY, "adminWithPolicy"),
        (Self::FIRMWARE_LIMITED, "firmwareLimited"),
        (Self::SVN_LIMITED, "svnLimited"),
        (Self::NO_DA, "noDA"),
        (Self::ENCRYPTED_DUPLICATION, "encryptedDuplication"),
        (Self::RESTRICTED, "restricted"),
        (Self::DECRYPT, "decrypt"),
        (Self::SIGN_ENCRYPT, "sign"),
        (Self::X509_SIGN, "x509sign"),
    ];

    const DEFINED: u32 = 0x000F_0FF6;

    pub const fn empty() -> Self {
        Self(0)
    }

    /// Refuses reserved bits: a TPM never sets them, so their presence means forgery or
    /// corruption.
    pub fn from_bits(bits: u32) -> Result<Self, WireError> {
        if bits & !Self::DEFINED != 0 {
            return Err(WireError::BadValue {
                what: "TPMA_OBJECT (reserved bits)",
                value: u64::from(bits),
            });
        }
        Ok(Self(bits))
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    /// All bits of `other` are set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// At least one bit of `other` is set in `self`.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMED.into_iter().filter(move |(bit, _)| self.contains(*bit)).map(|(_, name)| name)
    }
}

impl std::ops::BitOr for ObjectAttributes {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ObjectAttributes {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// `fixedTPM|fixedParent|…`, the names of Part 2 §8.3.
impl fmt::Display for ObjectAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.names().collect();
        f.write_str(&names.join("|"))
    }
}

impl fmt::Debug for ObjectAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectAttributes({:#010x}: {self})", self.0)
    }
}

fn read_hash(r: &mut Reader<'_>, what: &'static str) -> Result<HashAlg, WireError> {
    let id = r.u16(what)?;
    HashAlg::from_id(id).ok_or(WireError::UnsupportedAlg { what, id })
}

/// TPMI_ALG_SYM_OBJECT.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SymAlgorithm {
    Aes,
    Sm4,
    Camellia,
}

/// TPMI_ALG_SYM_MODE.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SymMode {
    Ctr,
    Ofb,
    Cbc,
    Cfb,
    Ecb,
    Null,
}

impl SymMode {
    const IDS: [(Self, u16); 6] = [
        (Self::Ctr, id::CTR),
        (Self::Ofb, id::OFB),
        (Self::Cbc, id::CBC),
        (Self::Cfb, id::CFB),
        (Self::Ecb, id::ECB),
        (Self::Null, id::NULL),
    ];

    pub fn id(self) -> u16 {
        Self::IDS.iter().find(|(m, _)| *m == self).map_or(id::NULL, |(_, i)| *i)
    }
}

/// TPMT_SYM_DEF_OBJECT: the symmetric algorithm of a storage key (an EK's is AES-128-CFB).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SymDefObject {
    Null,
    Cipher { algorithm: SymAlgorithm, key_bits: u16, mode: SymMode },
}

impl Marshal for SymDefObject {
    fn marshal(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Null => put_u16(out, id::NULL),
            Self::Cipher { algorithm, key_bits, mode } => {
                put_u16(
                    out,
                    match algorithm {
                        SymAlgorithm::Aes => id::AES,
                        SymAlgorithm::Sm4 => id::SM4,
                        SymAlgorithm::Camellia => id::CAMELLIA,
                    },
                );
                put_u16(out, key_bits);
                put_u16(out, mode.id());
            }
        }
    }
}

impl Unmarshal for SymDefObject {
    const NAME: &'static str = "TPMT_SYM_DEF_OBJECT";
    fn unmarshal(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let what = "TPMT_SYM_DEF_OBJECT.algorithm";
        let algorithm = match r.u16(what)? {
            id::NULL => return Ok(Self::Null),
            id::AES => SymAlgorithm::Aes,
            id::SM4 => SymAlgorithm::Sm4,
            id::CAMELLIA => SymAlgorithm::Camellia,
            other => return Err(WireError::UnsupportedAlg { what, id: other }),
        };
        let key_bits = r.u16("TPMT_SYM_DEF_OBJECT.keyBits")?;
        let what = "TPMT_SYM_DEF_OBJECT.mode";
        let mode_id = r.u16(what)?;
        let mode = SymMode::IDS
            .iter()
            .find(|(_, i)| *i == mode_id)
            .map(|(m, _)| *m)
            .ok_or(WireError::UnsupportedAlg { what, id: mode_id })?;
        Ok(Self::Cipher { algorithm, key_bits, mode })
    }
}

/// TPMT_RSA_SCHEME.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RsaScheme {
    Null,
    Rsassa(HashAlg),
    Rsapss(HashAlg),
    Rsaes,
    Oaep(HashAlg),
}

impl RsaScheme {
    pub fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Rsassa(_) => "rsassa",
            Self::Rsapss(_) => "rsapss",
            Self::Rsaes => "rsaes",
            Self::Oaep(_) => "oaep",
        }
    }
}

impl Marshal for RsaScheme {
    fn marshal(&self, out: &mut Vec<u8>) {
        let (scheme, hash) = match *self {
            Self::Null => (id::NULL, None),
            Self::Rsassa(h) => (id::RSASSA, Some(h)),
            Self::Rsapss(h) => (id::RSAPSS, Some(h)),
            Self::Rsaes => (id::RSAES, None),
            Self::Oaep(h) => (id::OAEP, Some(h)),
        };
        put_u16(out, scheme);
        if let Some(h) = hash {
            put_u16(out, h.id());
        }
    }
}

impl Unmarshal for RsaScheme {
    const NAME: &'static str = "TPMT_RSA_SCHEME";
    fn unmarshal(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let what = "TPMT_RSA_SCHEME.scheme";
        let hash = "TPMT_RSA_SCHEME.details.hashAlg";
        Ok(match r.u16(what)? {
            id::NULL => Self::Null,
            id::RSASSA => Self::Rsassa(read_hash(r, hash)?),
            id::RSAPSS => Self::Rsapss(read_hash(r, hash)?),
            id::RSAES => Self::Rsaes,
            id::OAEP => Self::Oaep(read_hash(r, hash)?),
            other => return Err(WireError::UnsupportedAlg { what, id: other }),
        })
    }
}

/// TPMT_ECC_SCHEME.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EccScheme {
    Null,
    Ecdsa(HashAlg),
    Ecdh(HashAlg),
    Ecdaa { hash: HashAlg, count: u16 },
    Sm2(HashAlg),
    Ecschnorr(HashAlg),
    Ecmqv(HashAlg),
}

impl EccScheme {
    pub fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Ecdsa(_) => "ecdsa",
            Self::Ecdh(_) => "ecdh",
            Self::Ecdaa { .. } => "ecdaa",
            Self::Sm2(_) => "sm2",
            Self::Ecschnorr(_) => "ecschnorr",
            Self::Ecmqv(_) => "ecmqv",
        }
    }
}

impl Marshal for EccScheme {
    fn marshal(&self, out: &mut Vec<u8>) {
        let (scheme, hash) = match *self {
            Self::Null => (id::NULL, None),
            Self::Ecdsa(h) => (id::ECDSA, Some(h)),
            Self::Ecdh(h) => (id::ECDH, Some(h)),
            Self::Ecdaa { hash, .. } => (id::ECDAA, Some(hash)),
            Self::Sm2(h) => (id::SM2, Some(h)),
            Self::Ecschnorr(h) => (id::ECSCHNORR, Some(h)),
            Self::Ecmqv(h) => (id::ECMQV, Some(h)),
        };
        put_u16(out, scheme);
        if let Some(h) = hash {
            put_u16(out, h.id());
        }
        if let Self::Ecdaa { count, .. } = *self {
            put_u16(out, count);
        }
    }
}

impl Unmarshal for EccScheme {
    const NAME: &'static str = "TPMT_ECC_SCHEME";
    fn unmarshal(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let what = "TPMT_ECC_SCHEME.scheme";
        let hash = "TPMT_ECC_SCHEME.details.hashAlg";
        Ok(match r.u16(what)? {
            id::NULL => Self::Null,
            id::ECDSA => Self::Ecdsa(read_hash(r, hash)?),
            id::ECDH => Self::Ecdh(read_hash(r, hash)?),
            id::ECDAA => {
                let hash = read_hash(r, hash)?;
                Self::Ecdaa { hash, count: r.u16("TPMS_SCHEME_ECDAA.count")? }
            }
            id::SM2 => Self::Sm2(read_hash(r, hash)?),
            id::ECSCHNORR => Self::Ecschnorr(read_hash(r, hash)?),
            id::ECMQV => Self::Ecmqv(read_hash(r, hash)?),
            other => return Err(WireError::UnsupportedAlg { what, id: other }),
        })
    }
}

/// TPMT_KDF_SCHEME.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum KdfScheme {
    Null,
    Mgf1(HashAlg),
    Kdf1Sp800_56a(HashAlg),
    Kdf2(HashAlg),
    Kdf1Sp800_108(HashAlg),
}

impl Marshal for KdfScheme {
    fn marshal(&self, out: &mut Vec<u8>) {
        let (scheme, hash) = match *self {
            Self::Null => (id::NULL, None),
            Self::Mgf1(h) => (id::MGF1, Some(h)),
            Self::Kdf1Sp800_56a(h) => (id::KDF1_SP800_56A, Some(h)),
            Self::Kdf2(h) => (id::KDF2, Some(h)),
            Self::Kdf1Sp800_108(h) => (id::KDF1_SP800_108, Some(h)),
        };
        put_u16(out, scheme);
        if let Some(h) = hash {
            put_u16(out, h.id());
        }
    }
}

impl Unmarshal for KdfScheme {
    const NAME: &'static str = "TPMT_KDF_SCHEME";
    fn unmarshal(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let what = "TPMT_KDF_SCHEME.scheme";
        let hash = "TPMT_KDF_SCHEME.details.hashAlg";
        Ok(match r.u16(what)? {
            id::NULL => Self::Null,
            id::MGF1 => Self::Mgf1(read_hash(r, hash)?),
            id::KDF1_SP800_56A => Self::Kdf1Sp800_56a(read_hash(r, hash)?),
            id::KDF2 => Self::Kdf2(read_hash(r, hash)?),
            id::KDF1_SP800_108 => Self::Kdf1Sp800_108(read_hash(r, hash)?),
            other => return Err(WireError::UnsupportedAlg { what, id: other }),
        })
    }
}

/// TPMI_ECC_CURVE (TPM_ECC_CURVE, Part 2 §6.4).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EccCurve {
    NistP192,
    NistP224,
    NistP256,
    NistP384,
    NistP521,
    BnP256,
    BnP638,
    Sm2P256,
}

impl EccCurve {
    const ALL: [(Self, u16, usize, &'static str); 8] = [
        (Self::NistP192, 0x0001, 24, "NIST P-192"),
        (Self::NistP224, 0x0002, 28, "NIST P-224"),
        (Self::NistP256, 0x0003, 32, "NIST P-256"),
        (Self::NistP384, 0x0004, 48, "NIST P-384"),
        (Self::NistP521, 0x0005, 66, "NIST P-521"),
        (Self::BnP256, 0x0010, 32, "BN P-256"),
        (Self::BnP638, 0x0011, 80, "BN P-638"),
        (Self::Sm2P256, 0x0020, 32, "SM2 P-256"),
    ];

    fn entry(self) -> (Self, u16, usize, &'static str) {
        Self::ALL.into_iter().find(|e| e.0 == self).unwrap_or((self, 0, 0, "?"))
    }

    pub fn id(self) -> u16 {
        self.entry().1
    }

    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.1 == id).map(|e| e.0)
    }

    /// Bytes of a coordinate or scalar.
    pub fn coordinate_size(self) -> usize {
        self.entry().2
    }

    pub fn name(self) -> &'static str {
        self.entry().3
    }
}

/// TPMS_RSA_PARMS.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RsaParms {
    pub symmetric: SymDefObject,
    pub scheme: RsaScheme,
    pub key_bits: u16,
    /// 0 means the default exponent 2¹⁶ + 1.
    pub exponent: u32,
}

impl RsaParms {
    /// The public exponent with the default applied.
    pub fn effective_exponent(&self) -> u32 {
        if self.exponent == 0 { 65537 } else { self.exponent }
    }
}

/// TPMS_ECC_PARMS.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct EccParms {
    pub symmetric: SymDefObject,
    pub scheme: EccScheme,
    pub curve: EccCurve,
    pub kdf: KdfScheme,
}

/// TPMS_ECC_POINT.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct EccPoint {
    pub x: EccParameter,
    pub y: EccParameter,
}

impl Marshal for EccPoint {
    fn marshal(&self, out: &mut Vec<u8>) {
        self.x.marshal(out);
        self.y.marshal(out);
    }
}

impl Unmarshal for EccPoint {
    const NAME: &'static str = "TPMS_ECC_POINT";
    fn unmarshal(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let x = EccParameter::read(r, "TPMS_ECC_POINT.x")?;
        let y = EccParameter::read(r, "TPMS_ECC_POINT.y")?;
        Ok(Self { x, y })
    }
}

/// The type-specific part of TPMT_PUBLIC: parameters and unique (the public key).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum PublicKey {
    Rsa { parms: RsaParms, modulus: PublicKeyRsa },
    Ecc { parms: EccParms, point: EccPoint },
}

impl PublicKey {
    pub fn symmetric(&self) -> SymDefObject {
        match self {
            Self::Rsa { parms, .. } => parms.symmetric,
            Self::Ecc { parms, .. } => parms.symmetric,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Rsa { .. } => "RSA",
            Self::Ecc { .. } => "ECC",
        }
    }
}

/// TPMT_PUBLIC of an RSA or ECC key.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Public {
    pub name_alg: HashAlg,
    pub attributes: ObjectAttributes,
    pub auth_policy: Digest,
    pub key: PublicKey,
}

impl Public {
    /// The object's name: nameAlg ‖ H_nameAlg(TPMT_PUBLIC) (TPM 2.0 Part 1 §16).
    pub fn name(&self) -> Name {
        let mut name = self.name_alg.id().to_be_bytes().to_vec();
        name.extend(self.name_alg.digest(&self.to_bytes()));
        Name::from_bounded(name)
    }

    /// Parses a TPM2B_PUBLIC (what `tpm2_readpublic -o`, `tpm2_createak -u` and
    /// `tpm2_createek -u` write).
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let public = Self::unmarshal_tpm2b(&mut r)?;
        r.finish("TPM2B_PUBLIC")?;
        Ok(public)
    }

    pub fn unmarshal_tpm2b(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let mut body = r.sub(MAX_PUBLIC_SIZE, "TPM2B_PUBLIC.size")?;
        let public = Self::unmarshal(&mut body)?;
        body.finish("TPM2B_PUBLIC.publicArea")?;
        Ok(public)
    }

    /// The TPM2B_PUBLIC form.
    pub fn to_tpm2b(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.marshal_tpm2b(&mut out);
        out
    }

    pub fn marshal_tpm2b(&self, out: &mut Vec<u8>) {
        put_sized(out, |out| self.marshal(out));
    }
}

impl Marshal for Public {
    fn marshal(&self, out: &mut Vec<u8>) {
        put_u16(
            out,
            match self.key {
                PublicKey::Rsa { .. } => id::RSA,
                PublicKey::Ecc { .. } => id::ECC,
            },
        );
        put_u16(out, self.name_alg.id());
        put_u32(out, self.attributes.bits());
        self.auth_policy.marshal(out);
        match &self.key {
            PublicKey::Rsa { parms, modulus } => {
                parms.symmetric.marshal(out);
                parms.scheme.marshal(out);
                put_u16(out, parms.key_bits);
                put_u32(out, parms.exponent);
                modulus.marshal(out);
            }
            PublicKey::Ecc { parms, point } => {
                parms.symmetric.marshal(out);
                parms.scheme.marshal(out);
                put_u16(out, parms.curve.id());
                parms.kdf.marshal(out);
                point.marshal(out);
            }
        }
    }
}

impl Unmarshal for Public {
    const NAME: &'static str = "TPMT_PUBLIC";
    fn unmarshal(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let what = "TPMT_PUBLIC.type";
        let key_type = r.u16(what)?;
        if key_type != id::RSA && key_type != id::ECC {
            return Err(WireError::UnsupportedAlg { what, id: key_type });
        }
        let name_alg = read_hash(r, "TPMT_PUBLIC.nameAlg")?;
        let attributes = ObjectAttributes::from_bits(r.u32("TPMT_PUBLIC.objectAttributes")?)?;
        let auth_policy = Digest::read(r, "TPMT_PUBLIC.authPolicy")?;
        let symmetric = SymDefObject::unmarshal(r)?;
        let key = if key_type == id::RSA {
            let scheme = RsaScheme::unmarshal(r)?;
            let key_bits = r.u16("TPMS_RSA_PARMS.keyBits")?;
            let exponent = r.u32("TPMS_RSA_PARMS.exponent")?;
            let modulus = PublicKeyRsa::read(r, "TPMT_PUBLIC.unique.rsa")?;
            PublicKey::Rsa { parms: RsaParms { symmetric, scheme, key_bits, exponent }, modulus }
        } else {
            let scheme = EccScheme::unmarshal(r)?;
            let what = "TPMS_ECC_PARMS.curveID";
            let curve_id = r.u16(what)?;
            let curve = EccCurve::from_id(curve_id)
                .ok_or(WireError::UnsupportedAlg { what, id: curve_id })?;
            let kdf = KdfScheme::unmarshal(r)?;
            let point = EccPoint::unmarshal(r)?;
            PublicKey::Ecc { parms: EccParms { symmetric, scheme, curve, kdf }, point }
        };
        Ok(Self { name_alg, attributes, auth_policy, key })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `tpm2_createak -C ek.ctx -G ecc -g sha256 -s ecdsa -u ak.pub` on swtpm 0.7.1
    /// (tpm2-tools 5.4), and the name `tpm2_readpublic` printed for it.
    pub(crate) const AK_ECC_TPM2B: &str = "00580023000b00050072000000100018000b00030010\
        0020aa636c02c30b81aa1fabe8e3724db9aea118e4fb9d7e1cb4ed3180d9d859ea78\
        00201a66879d38365d6a60f89095ce9c9abb64d84b2937bb6b61947c3cdbf20126fb";
    const AK_ECC_NAME: &str =
        "000bbf5ee3e17b8fd647c8158f497ba8c83f62e7d9c8f8879649182880ffd0812a64";

    /// `tpm2_createek -G ecc -u ek.pub` on the same swtpm, and its name.
    pub(crate) const EK_ECC_TPM2B: &str = "007a0023000b000300b20020837197674484b3f81a90cc8d46a5d724fd52d76e\
        06520b64f2a1da1b331469aa000600800043001000030010\
        0020dbea57d40f684133ae3364343bb292b4e4af916bc3d00f154a7a3d9a8831f6a7\
        00201650b5f00d8080cab9321c830dd4b8e7ff9907286a75b7255b8ee781d9f209f3";
    const EK_ECC_NAME: &str =
        "000ba6e663079d23f2b34eb2198e981e39567931f879c48d2398beeb17e3a621d94d";

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    #[test]
    fn parses_a_real_ak_and_computes_its_name() {
        let bytes = unhex(AK_ECC_TPM2B);
        let ak = Public::from_tpm2b(&bytes).unwrap();
        assert_eq!(ak.name_alg, HashAlg::Sha256);
        assert_eq!(
            ak.attributes.to_string(),
            "fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign"
        );
        let PublicKey::Ecc { parms, point } = &ak.key else { panic!("not ECC") };
        assert_eq!(parms.scheme, EccScheme::Ecdsa(HashAlg::Sha256));
        assert_eq!(parms.curve, EccCurve::NistP256);
        assert_eq!(parms.symmetric, SymDefObject::Null);
        assert_eq!(parms.kdf, KdfScheme::Null);
        assert_eq!(point.x.len(), 32);
        assert_eq!(hex::encode(ak.name().as_bytes()), AK_ECC_NAME);
        assert_eq!(ak.to_tpm2b(), bytes);
    }

    #[test]
    fn parses_a_real_ek_and_computes_its_name() {
        let bytes = unhex(EK_ECC_TPM2B);
        let ek = Public::from_tpm2b(&bytes).unwrap();
        assert!(ek.attributes.contains(ObjectAttributes::RESTRICTED | ObjectAttributes::DECRYPT));
        assert!(ek.attributes.contains(ObjectAttributes::ADMIN_WITH_POLICY));
        assert!(
            !ek.attributes
                .intersects(ObjectAttributes::SIGN_ENCRYPT | ObjectAttributes::USER_WITH_AUTH)
        );
        assert_eq!(ek.auth_policy.len(), 32);
        assert_eq!(
            ek.key.symmetric(),
            SymDefObject::Cipher {
                algorithm: SymAlgorithm::Aes,
                key_bits: 128,
                mode: SymMode::Cfb
            }
        );
        assert_eq!(hex::encode(ek.name().as_bytes()), EK_ECC_NAME);
        assert_eq!(ek.to_tpm2b(), bytes);
    }

    #[test]
    fn refuses_malformed_public_areas() {
        let good = unhex(AK_ECC_TPM2B);
        // Every strict prefix is truncated or mis-sized.
        for n in 0..good.len() {
            assert!(Public::from_tpm2b(&good[..n]).is_err(), "prefix {n}");
        }
        // Trailing byte after the TPM2B.
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(Public::from_tpm2b(&long), Err(WireError::TrailingBytes { .. })));
        // Size field larger than the body it wraps would be TrailingBytes inside.
        let mut inner = good.clone();
        inner[1] += 1;
        inner.push(0);
        assert!(matches!(Public::from_tpm2b(&inner), Err(WireError::TrailingBytes { .. })));
        // Keyed-hash object type.
        let mut keyed = good.clone();
        keyed[3] = 0x08;
        assert!(matches!(
            Public::from_tpm2b(&keyed),
            Err(WireError::UnsupportedAlg { id: 0x0008, .. })
        ));
        // Reserved attribute bit 0.
        let mut reserved = good.clone();
        reserved[9] |= 1;
        assert!(matches!(Public::from_tpm2b(&reserved), Err(WireError::BadValue { .. })));
        // Unknown curve.
        let mut curve = good.clone();
        curve[19] = 0x09;
        assert!(matches!(
            Public::from_tpm2b(&curve),
            Err(WireError::UnsupportedAlg { id: 0x0009, .. })
        ));
    }

    #[test]
    fn attributes_print_their_names() {
        let a = ObjectAttributes::FIXED_TPM | ObjectAttributes::DECRYPT;
        assert_eq!(a.to_string(), "fixedTPM|decrypt");
        assert_eq!(format!("{a:?}"), "ObjectAttributes(0x00020002: fixedTPM|decrypt)");
        assert!(ObjectAttributes::from_bits(1 << 20).is_err());
        assert!(ObjectAttributes::from_bits(0x000F_0FF6).is_ok());
    }
}
