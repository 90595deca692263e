//! The card's persistent state and its file format (JSON, one file, mode 0600): the active
//! subscription profile, which of USIM and TRE is active, the SQN array of TS 33.102
//! Annex C, PIN1 and ADM1 with their retry counters, the stored EFs, the record of the last
//! subscription change with, while it is on trial, the old subscription to fall back to (see
//! [`crate::change`]), and the authenticated TRE activation in force (see
//! [`crate::activation`]).
//!
//! Every file carries an integrity check: `integrity` is the SHA-256 of the canonical
//! serialization of all the other fields (compact JSON in field order, as this build writes
//! it), written on every save and verified at every load. It catches corruption and stray
//! edits; it is not a MAC, so it does not stop someone who can rewrite the file and
//! recompute it.
//!
//! Versions: 3 (this build) adds `activation`, written only while one is in force. Older
//! files are read and written as version 3 on the next save: version 2 (integrity check and
//! change record, no activation: a TRE it left active has no activation, so nothing installs
//! under it) and version 1 (neither check nor change record).
//!
//! This file is the only place where K, OPc, KIc, KID and the PINs are kept in the clear.
//! Errors about it never quote its content.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use protocol::milenage::Sqn;
use protocol::{Imsi, SubscriptionProfile};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::activation::TreActivation;
use crate::change::Change;
use crate::error::UiccError;
use crate::fs::{self, Source};

/// The `format` field of every state file.
pub const FORMAT: &str = "tresor-uicc-state";
/// The state file version this build writes. It also reads [`VERSION_2`] and [`VERSION_1`].
pub const VERSION: u32 = 3;
/// The second version: integrity check and change record, no TRE activation.
pub const VERSION_2: u32 = 2;
/// The first version: no integrity check, no change record.
pub const VERSION_1: u32 = 1;

/// Which of the two may act for the subscription (TR 33.812 §5.4.4.3): exactly one, always.
/// One field rather than two flags, so "both" and "neither" cannot be represented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Active {
    Usim,
    Tre,
}

/// A PIN or ADM key value: 8 bytes as VERIFY carries it (TS 102 221 §9.5.1: digits as ASCII,
/// padded with FF; ADM values may be any 8 bytes). Zeroizing, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Pin([u8; 8]);

impl Pin {
    /// 4 to 8 decimal digits, coded as ASCII and padded with FF.
    pub fn from_digits(digits: &str) -> Result<Self, UiccError> {
        if !(4..=8).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(UiccError::BadPin);
        }
        let mut v = [0xFF; 8];
        v[..digits.len()].copy_from_slice(digits.as_bytes());
        Ok(Self(v))
    }

    /// Exactly 16 hex digits: the 8 bytes of an ADM key as its issuer hands it out.
    pub fn from_hex(s: &str) -> Result<Self, UiccError> {
        let mut v = [0u8; 8];
        hex::decode_to_slice(s, &mut v).map_err(|_| UiccError::BadPin)?;
        Ok(Self(v))
    }

    /// Either form: 16 hex digits, or 4 to 8 decimal digits.
    pub fn parse(s: &str) -> Result<Self, UiccError> {
        if s.len() == 16 { Self::from_hex(s) } else { Self::from_digits(s) }
    }

    /// 8 random decimal digits from the operating system's CSPRNG.
    pub fn random_digits() -> Result<Self, UiccError> {
        use ring::rand::SecureRandom;
        let mut raw = Zeroizing::new([0u8; 8]);
        ring::rand::SystemRandom::new().fill(raw.as_mut()).map_err(|_| UiccError::Random)?;
        // 256 mod 10 = 6: the bias toward 0..5 is 1/25 per digit, irrelevant for a test ADM.
        let mut v = [0u8; 8];
        for (d, r) in v.iter_mut().zip(raw.iter()) {
            *d = b'0' + r % 10;
        }
        Ok(Self(v))
    }

    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0.ct_eq(candidate).into()
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(…)")
    }
}

impl Serialize for Pin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Zeroizing::new(hex::encode(self.0)))
    }
}

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        Self::from_hex(&s).map_err(|_| serde::de::Error::custom("PIN must be 16 hex digits"))
    }
}

/// A verification key with its retry counter (TS 102 221 §9.5).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PinState {
    pub value: Pin,
    pub enabled: bool,
    pub retries_left: u8,
    pub max_retries: u8,
}

impl PinState {
    pub fn new(value: Pin, enabled: bool, max_retries: u8) -> Self {
        Self { value, enabled, retries_left: max_retries, max_retries }
    }

    pub fn blocked(&self) -> bool {
        self.retries_left == 0
    }
}

/// The USIM's sequence number store of TS 33.102 Annex C.1.2: the highest SEQ accepted for
/// each of the 32 IND values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqnArray {
    seq: Vec<u64>,
}

/// Δ of TS 33.102 Annex C.2.2: how far ahead of the highest accepted SEQ a new one may be.
pub const SQN_DELTA: u64 = 1 << 28;
const IND_VALUES: usize = 1 << Sqn::IND_BITS;

impl Default for SqnArray {
    fn default() -> Self {
        Self { seq: vec![0; IND_VALUES] }
    }
}

impl SqnArray {
    /// Annex C.2.2 freshness: SEQ above the entry for its IND, and at most Δ above the
    /// highest SEQ accepted so far.
    pub fn is_fresh(&self, sqn: Sqn) -> bool {
        let entry = self.seq.get(usize::from(sqn.ind())).copied().unwrap_or(u64::MAX);
        sqn.seq() > entry && sqn.seq().saturating_sub(self.highest().0) <= SQN_DELTA
    }

    pub fn accept(&mut self, sqn: Sqn) {
        if let Some(entry) = self.seq.get_mut(usize::from(sqn.ind())) {
            *entry = sqn.seq();
        }
    }

    /// SQN_MS for resynchronisation: the highest accepted SEQ with its IND (Annex C.3.4).
    pub fn sqn_ms(&self) -> Sqn {
        let (seq, ind) = self.highest();
        Sqn::from_parts(seq, ind).unwrap_or_default()
    }

    fn highest(&self) -> (u64, u8) {
        let mut best = (0, 0u8);
        for (i, &seq) in self.seq.iter().enumerate() {
            if seq > best.0 {
                best = (seq, u8::try_from(i).unwrap_or(0));
            }
        }
        best
    }

    pub(crate) fn is_valid(&self) -> bool {
        self.seq.len() == IND_VALUES && self.seq.iter().all(|&s| s < (1 << 43))
    }
}

/// Everything the card keeps across power cycles.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub format: String,
    pub version: u32,
    pub active: Active,
    pub profile: SubscriptionProfile,
    pub sqn: SqnArray,
    pub pin1: PinState,
    pub adm1: PinState,
    /// MNC length in digits, as EF_AD reports it (2 or 3).
    pub mnc_len: u8,
    /// Stored EFs by name, hex-encoded.
    pub files: BTreeMap<String, HexBytes>,
    /// The last subscription change, kept after its commit or fall-back until the next
    /// install; `null` before the first. Absent in version 1 files.
    #[serde(default)]
    pub change: Option<Change>,
    /// The TRE activation in force (campaign, new operator, counter, the card's response).
    /// Absent when there is none, so a version 2 file's integrity check covers the same
    /// serialization as it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<TreActivation>,
}

/// What is written: the state and, last, its integrity check.
#[derive(Serialize)]
struct Sealed<'a> {
    #[serde(flatten)]
    state: &'a State,
    integrity: &'a str,
}

/// What is read besides the state: its integrity check, if any.
#[derive(Deserialize)]
struct Seal {
    #[serde(default)]
    integrity: Option<String>,
}

/// Bytes stored as a hex string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HexBytes(pub Vec<u8>);

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map(HexBytes).map_err(|_| serde::de::Error::custom("not hexadecimal"))
    }
}

impl State {
    /// A fresh card for `profile`: USIM active, SQN array empty, every stored EF at its
    /// default.
    pub fn new(profile: SubscriptionProfile, pin1: PinState, adm1: PinState, mnc_len: u8) -> Self {
        let files = default_files(&profile.imsi, mnc_len, |_| true);
        Self {
            format: FORMAT.to_owned(),
            version: VERSION,
            active: Active::Usim,
            profile,
            sqn: SqnArray::default(),
            pin1,
            adm1,
            mnc_len,
            files,
            change: None,
            activation: None,
        }
    }

    /// The state after installing `profile`: the USIM active with the new subscription, a
    /// fresh SQN array, the per-subscription EFs reset; PINs and card settings kept.
    pub fn with_new_profile(&self, profile: SubscriptionProfile) -> Self {
        let mut next = self.clone();
        let reset = default_files(&profile.imsi, self.mnc_len, fs::is_per_subscription);
        next.files.extend(reset);
        next.profile = profile;
        next.sqn = SqnArray::default();
        next.active = Active::Usim;
        next
    }

    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|h| h.0.as_slice())
    }

    /// The file content: the state, pretty-printed, with its integrity check.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, UiccError> {
        let integrity = hex::encode(self.digest()?);
        serde_json::to_vec_pretty(&Sealed { state: self, integrity: &integrity })
            .map(Zeroizing::new)
            .map_err(|e| UiccError::Encode(e.to_string()))
    }

    /// The canonical serialization the integrity check covers: compact JSON of every field
    /// but `integrity`, in declaration order (maps sorted by key).
    pub(crate) fn canonical(&self) -> Result<Zeroizing<Vec<u8>>, UiccError> {
        serde_json::to_vec(self).map(Zeroizing::new).map_err(|e| UiccError::Encode(e.to_string()))
    }

    fn digest(&self) -> Result<ring::digest::Digest, UiccError> {
        Ok(ring::digest::digest(&ring::digest::SHA256, &self.canonical()?))
    }

    /// Reads and validates a state file.
    pub fn load(path: &Path) -> Result<Self, UiccError> {
        let bytes = Zeroizing::new(
            std::fs::read(path)
                .map_err(|source| UiccError::Io { path: path.to_owned(), source })?,
        );
        Self::from_bytes(&bytes)
            .map_err(|reason| UiccError::BadState { path: path.to_owned(), reason })
    }

    /// Parses, checks the integrity and validates; the error names the problem and its
    /// position, never the content. A version 1 or 2 state comes back as version 3, so the
    /// next save migrates the file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let mut state: State = serde_json::from_slice(bytes).map_err(json_error)?;
        let seal: Seal = serde_json::from_slice(bytes).map_err(json_error)?;
        if state.format != FORMAT {
            return Err(format!("format is not {FORMAT}"));
        }
        match (state.version, seal.integrity) {
            (VERSION, Some(integrity)) => state.check_integrity(&integrity)?,
            (VERSION | VERSION_2, None) => return Err("integrity field is missing".into()),
            (VERSION_2, Some(integrity)) if state.activation.is_none() => {
                state.check_integrity(&integrity)?;
                state.version = VERSION;
            }
            (VERSION_2, Some(_)) => return Err("version 2 has no activation field".into()),
            (VERSION_1, None) if state.change.is_none() && state.activation.is_none() => {
                state.version = VERSION;
            }
            (VERSION_1, _) => {
                return Err("version 1 has no integrity field, change record or activation".into());
            }
            (v, _) => {
                return Err(format!(
                    "version {v} is not supported (this build reads {VERSION_1} to {VERSION})"
                ));
            }
        }
        state.validate()?;
        Ok(state)
    }

    fn check_integrity(&self, integrity: &str) -> Result<(), String> {
        let mut stored = [0u8; ring::digest::SHA256_OUTPUT_LEN];
        hex::decode_to_slice(integrity, &mut stored)
            .map_err(|_| "integrity must be 64 hex digits (SHA-256)".to_owned())?;
        let actual = self.digest().map_err(|e| e.to_string())?;
        if bool::from(actual.as_ref().ct_eq(&stored)) {
            Ok(())
        } else {
            Err("integrity check failed: the content does not match its SHA-256".into())
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !matches!(self.mnc_len, 2 | 3) {
            return Err("mnc_len must be 2 or 3".into());
        }
        if !self.sqn.is_valid() {
            return Err("sqn must hold 32 values below 2^43".into());
        }
        for pin in [&self.pin1, &self.adm1] {
            if pin.max_retries == 0 || pin.max_retries > 15 || pin.retries_left > pin.max_retries {
                return Err("PIN retry counters out of range".into());
            }
        }
        if self.profile.ota.counter > protocol::ota::COUNTER_MAX {
            return Err("OTA counter exceeds 5 bytes".into());
        }
        for (name, content) in &self.files {
            let Some(ef) = fs::ef_by_name(name).filter(|e| e.source == Source::Stored) else {
                return Err(format!("unknown stored file {name}"));
            };
            if content.0.len() != ef.size {
                return Err(format!("{name} must be {} bytes", ef.size));
            }
        }
        let stored = fs::EFS.iter().filter(|e| e.source == Source::Stored);
        if let Some(missing) = stored.clone().find(|e| !self.files.contains_key(e.name)) {
            return Err(format!("stored file {} is missing", missing.name));
        }
        if let Some(change) = &self.change {
            change.validate(self)?;
        }
        let on_trial = self.change.as_ref().is_some_and(Change::on_trial);
        match (&self.activation, self.active, on_trial) {
            (None, _, _) => {}
            (Some(activation), Active::Tre, _) => activation.validate(&self.profile)?,
            // The change on trial checks it against the profile kept as its fallback.
            (Some(_), Active::Usim, true) => {}
            (Some(_), Active::Usim, false) => {
                return Err("an activation outlives neither its TRE nor its trial".into());
            }
        }
        Ok(())
    }
}

/// A parse error by kind and position: serde's own message could quote a value.
fn json_error(e: serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "wrong field or value",
        serde_json::error::Category::Eof => "truncated",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

fn default_files(
    imsi: &Imsi,
    mnc_len: u8,
    which: impl Fn(&fs::Ef) -> bool,
) -> BTreeMap<String, HexBytes> {
    fs::EFS
        .iter()
        .filter(|e| e.source == Source::Stored && which(e))
        .map(|e| (e.name.to_owned(), HexBytes(fs::default_content(e, imsi, mnc_len))))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use protocol::{Amf, Opc, OtaKey, OtaKeys, SubscriberKey};

    pub fn profile(iccid: &str, imsi: &str) -> SubscriptionProfile {
        SubscriptionProfile {
            iccid: iccid.parse().unwrap(),
            imsi: imsi.parse().unwrap(),
            k: SubscriberKey::new([0x11; 16]),
            opc: Opc::new([0x22; 16]),
            amf: Amf([0x80, 0x00]),
            ota: OtaKeys { kic: OtaKey::new([0x33; 16]), kid: OtaKey::new([0x44; 16]), counter: 0 },
        }
    }

    fn state() -> State {
        State::new(
            profile("89883030000000000015", "001010123456789"),
            PinState::new(Pin::from_digits("1234").unwrap(), false, 3),
            PinState::new(Pin::from_digits("88888888").unwrap(), true, 10),
            2,
        )
    }

    #[test]
    fn round_trips_and_validates() {
        let s = state();
        let bytes = s.to_bytes().unwrap();
        let back = State::from_bytes(&bytes).unwrap();
        assert_eq!(back.profile, s.profile);
        assert_eq!(back.files, s.files);
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(text.contains("\"active\": \"usim\""));
        assert!(text.contains("\"change\": null") && text.contains("\"integrity\": \""));
        let broken = text.replace("\"EF_AD\": \"00000002\"", "\"EF_AD\": \"000002\"");
        assert_eq!(
            State::from_bytes(broken.as_bytes()).unwrap_err(),
            "integrity check failed: the content does not match its SHA-256"
        );
        // With a matching check, the field checks still apply.
        let resealed = serde_json::from_str::<State>(&broken).unwrap().to_bytes().unwrap();
        assert_eq!(State::from_bytes(&resealed).unwrap_err(), "EF_AD must be 4 bytes");
    }

    #[test]
    fn errors_never_quote_secrets() {
        let text = String::from_utf8(state().to_bytes().unwrap().to_vec()).unwrap();
        // K has the wrong type: serde would normally quote the offending value.
        let k = hex::encode([0x11u8; 16]);
        let broken = text.replace(&format!("\"{k}\""), "[1,2]");
        let err = State::from_bytes(broken.as_bytes()).unwrap_err();
        assert!(err.starts_with("wrong field or value"), "{err}");
        assert!(!err.contains("1111"));
        let debug = format!("{:?}", state());
        assert!(!debug.contains("1111") && !debug.contains("3838") && !debug.contains("3132"));
    }

    #[test]
    fn sqn_freshness_follows_annex_c() {
        let mut a = SqnArray::default();
        let s = |seq, ind| Sqn::from_parts(seq, ind).unwrap();
        assert!(a.is_fresh(s(1, 0)));
        assert!(!a.is_fresh(s(0, 0)));
        a.accept(s(10, 3));
        assert!(!a.is_fresh(s(10, 3)) && !a.is_fresh(s(9, 3)));
        // Another IND may still use a lower SEQ (vectors used out of order, Annex C.1.2).
        assert!(a.is_fresh(s(5, 4)));
        assert!(a.is_fresh(s(10 + SQN_DELTA, 4)));
        assert!(!a.is_fresh(s(11 + SQN_DELTA, 4)));
        assert_eq!(a.sqn_ms(), s(10, 3));
    }

    #[test]
    fn new_profile_resets_subscription_files_only() {
        let mut s = state();
        s.files.insert("EF_LOCI".into(), HexBytes(vec![0; 11]));
        s.files.insert("EF_SPN".into(), HexBytes(vec![0; 17]));
        s.sqn.accept(Sqn::from_parts(7, 1).unwrap());
        s.active = Active::Tre;
        let next = s.with_new_profile(profile("89883030000000000023", "001010000000002"));
        assert_eq!(next.active, Active::Usim);
        assert_eq!(next.sqn, SqnArray::default());
        assert_eq!(next.file("EF_SPN"), Some(&[0u8; 17][..]));
        assert_ne!(next.file("EF_LOCI"), Some(&[0u8; 11][..]));
        assert_eq!(next.file("EF_ACC"), Some(&[0x00, 0x04][..]));
    }

    #[test]
    fn pins_parse_and_compare() {
        assert!(Pin::from_digits("123").is_err());
        assert!(Pin::from_digits("12a4").is_err());
        let p = Pin::parse("1234").unwrap();
        assert!(p.matches(b"1234\xff\xff\xff\xff"));
        assert!(!p.matches(b"1235\xff\xff\xff\xff"));
        assert!(!p.matches(b"1234"));
        assert!(Pin::parse("3132333435363738").unwrap().matches(b"12345678"));
        let r = Pin::random_digits().unwrap();
        assert_eq!(format!("{r:?}"), "Pin(…)");
    }
}
