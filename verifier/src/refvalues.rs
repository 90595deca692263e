//! Reference values: the known-good measurements of a device image, with the PCR map and the
//! appraisal policy, in one versioned TOML file (`docs/reference-values.md`). Loaded once;
//! everything appraisal needs per evidence is computed here: the allow-list index by digest,
//! the PCR values the reference events predict (a replay of the events in order, TCG PFP
//! 1.05 §10.2) and from them the authPolicy a bundle key must carry (TPM 2.0 Part 3 §23.7
//! PolicyPCR over the policy's selection).
//!
//! PCR values may also be pinned directly (`[pcr_values.BANK]` for a PCR no reference event
//! extends, as Keylime's `tpm_policy`): such a PCR is appraised by its value alone, so a
//! plain TPM without a firmware event log (swtpm) can be attested against a file of pinned
//! values and no events.
//!
//! [`derive`] writes such a file from an image directory with `protocol::image::measure`, the
//! code the TRE measures with, so the two cannot drift apart. [`derive_from_log`]
//! (`from_log`) writes one from a golden event log of a real machine instead, as Keylime's
//! `create_mb_refstate` does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use protocol::eventlog::{BankDigest, EventLog, EventType, Measurement, PcrBanks};
use protocol::image::{self, Manifest};
use protocol::tpm::{HashAlg, PcrValues, policy_pcr};
use serde::Deserialize;

use crate::policy::{Policy, RawPolicy};

mod from_log;

pub use from_log::{derive_from_log, policy_id_for_log};

/// The only reference-values format defined.
pub const FORMAT: u32 = 1;
/// Largest reference-values file read.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;
/// Most reference events in one file.
pub const MAX_EVENTS: usize = 4096;
/// The hash of the bundle key's name and policy: SHA-256 (`docs/appraisal.md`).
pub const POLICY_HASH: HashAlg = HashAlg::Sha256;

/// Why a reference-values file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefValuesError {
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("not valid TOML of the expected shape: {0}")]
    Syntax(String),
    #[error("format {0} is not supported (expected {FORMAT})")]
    UnsupportedFormat(u32),
    #[error("id {0:?} must be 1 to 128 characters of letters, digits, '.', '_', ':' and '-'")]
    BadId(String),
    #[error("pcr_map: {0}")]
    PcrMap(String),
    #[error("policy: {0}")]
    Policy(String),
    #[error("event {index}: {reason}")]
    Event { index: usize, reason: String },
    #[error(
        "no reference events, and not every PCR of the policy selection is pinned in pcr_values"
    )]
    NoEvents,
    #[error("more than {MAX_EVENTS} reference events")]
    TooManyEvents,
    #[error("cannot predict the PCR values: {0}")]
    Prediction(String),
    #[error("startup_locality {0} is not a locality TPM2_Startup or an H-CRTM gives (0, 3, 4)")]
    BadStartupLocality(u8),
    #[error("pcr_values: {0}")]
    PcrValues(String),
    #[error(
        "the reference values would be {size} bytes, more than the {MAX_FILE_SIZE} a PVA loads"
    )]
    TooLarge { size: usize },
    #[error("event log: {0}")]
    EventLog(String),
    #[error("image: {0}")]
    Image(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawFile {
    format: u32,
    id: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    image: Option<RawImage>,
    #[serde(default)]
    startup_locality: Option<u8>,
    pcr_map: BTreeMap<String, String>,
    policy: RawPolicy,
    /// bank name → PCR index → hex value: what the events must replay to.
    #[serde(default)]
    pcr_values: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    event: Vec<RawEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    name: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    pcr: u32,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    component: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    sha1: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    sha384: Option<String>,
    #[serde(default)]
    sha512: Option<String>,
    #[serde(default)]
    sm3_256: Option<String>,
}

/// One known-good measurement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceEvent {
    pub pcr: u32,
    pub event_type: EventType,
    /// (name, version) of the component this event measures, if any.
    pub component: Option<(String, String)>,
    /// Every digest the file gives: one per policy bank at least, others checked when the
    /// device's log carries them.
    pub digests: Vec<(HashAlg, Vec<u8>)>,
}

impl ReferenceEvent {
    pub fn digest(&self, bank: HashAlg) -> Option<&[u8]> {
        self.digests.iter().find(|(b, _)| *b == bank).map(|(_, d)| d.as_slice())
    }
}

/// A loaded, checked reference-values file: the unit of appraisal policy, named by its id.
#[derive(Clone, Debug)]
pub struct ReferenceValues {
    id: String,
    description: Option<String>,
    image: Option<(String, String)>,
    pcr_map: BTreeMap<u8, String>,
    policy: Policy,
    startup_locality: u8,
    events: Vec<ReferenceEvent>,
    /// bank → digest → indices of the events with that digest.
    index: HashMap<HashAlg, HashMap<Vec<u8>, Vec<usize>>>,
    predicted: PcrValues,
    /// PCRs pinned in `pcr_values` that no reference event extends: appraised by value.
    pinned_only: PcrValues,
    expected_auth_policy: Vec<u8>,
}

impl ReferenceValues {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Self, RefValuesError> {
        use std::io::Read;
        let io = |e: std::io::Error| RefValuesError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(io)?
            .take(MAX_FILE_SIZE + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_FILE_SIZE {
            return Err(RefValuesError::Io {
                path: path.display().to_string(),
                reason: format!("larger than {MAX_FILE_SIZE} bytes"),
            });
        }
        Self::parse(&text)
    }

    /// Parses and checks reference-values TOML, and computes the predicted PCR values and
    /// the expected bundle-key authPolicy.
    pub fn parse(text: &str) -> Result<Self, RefValuesError> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| RefValuesError::Syntax(e.to_string()))?;
        if raw.format != FORMAT {
            return Err(RefValuesError::UnsupportedFormat(raw.format));
        }
        let id_ok = (1..=128).contains(&raw.id.len())
            && raw.id.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
        if !id_ok {
            return Err(RefValuesError::BadId(raw.id));
        }
        let pcr_map = pcr_map(raw.pcr_map)?;
        let policy = Policy::from_raw(raw.policy)?;
        for (_, pcr) in policy.selection.iter() {
            if !pcr_map.contains_key(&pcr) {
                return Err(RefValuesError::Policy(format!(
                    "pcr_selection PCR {pcr} is not in the pcr_map"
                )));
            }
        }
        if raw.event.len() > MAX_EVENTS {
            return Err(RefValuesError::TooManyEvents);
        }
        let events = raw
            .event
            .into_iter()
            .enumerate()
            .map(|(index, e)| reference_event(index, e, &policy, &pcr_map))
            .collect::<Result<Vec<_>, _>>()?;
        let components: BTreeSet<&str> =
            events.iter().filter_map(|e| e.component.as_ref().map(|(n, _)| n.as_str())).collect();
        for c in policy.required_components.iter().chain(policy.minimum_versions.keys()) {
            if !components.contains(c.as_str()) {
                return Err(RefValuesError::Policy(format!(
                    "component {c:?} has no reference event"
                )));
            }
        }

        let mut index: HashMap<HashAlg, HashMap<Vec<u8>, Vec<usize>>> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            for (bank, digest) in &e.digests {
                index.entry(*bank).or_default().entry(digest.clone()).or_default().push(i);
            }
        }
        let startup_locality = raw.startup_locality.unwrap_or(0);
        if !matches!(startup_locality, 0 | 3 | 4) {
            return Err(RefValuesError::BadStartupLocality(startup_locality));
        }
        let mut pcr_values = pcr_values(raw.pcr_values, &pcr_map)?;
        let pinned_only = pinned_only(&mut pcr_values, &events, &policy)?;
        if events.is_empty()
            && policy.selection.iter().any(|(bank, pcr)| pinned_only.get(bank, pcr).is_none())
        {
            return Err(RefValuesError::NoEvents);
        }
        let (predicted, expected_auth_policy) =
            predict(&events, &policy, startup_locality, &pcr_values, &pinned_only)?;
        Ok(Self {
            id: raw.id,
            description: raw.description,
            image: raw.image.map(|i| (i.name, i.version)),
            pcr_map,
            policy,
            startup_locality,
            events,
            index,
            predicted,
            pinned_only,
            expected_auth_policy,
        })
    }

    /// The policy id: `ear.appraisal-policy-id` of every EAR made with these values.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The image (name, version) the values were derived from, as the file says.
    pub fn image(&self) -> Option<(&str, &str)> {
        self.image.as_ref().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn pcr_map(&self) -> &BTreeMap<u8, String> {
        &self.pcr_map
    }

    pub fn events(&self) -> &[ReferenceEvent] {
        &self.events
    }

    /// The locality PCR 0 starts from before the events (0 unless the golden log had a
    /// StartupLocality event saying 3 or 4).
    pub fn startup_locality(&self) -> u8 {
        self.startup_locality
    }

    /// Whether any reference event records a digest in `bank`.
    pub fn records_bank(&self, bank: HashAlg) -> bool {
        self.index.contains_key(&bank)
    }

    /// The reference events with this digest in this bank.
    pub fn lookup(&self, bank: HashAlg, digest: &[u8]) -> &[usize] {
        self.index.get(&bank).and_then(|m| m.get(digest)).map_or(&[], Vec::as_slice)
    }

    pub fn event(&self, index: usize) -> Option<&ReferenceEvent> {
        self.events.get(index)
    }

    /// The value the reference events predict for a PCR of the policy selection.
    pub fn predicted(&self, bank: HashAlg, pcr: u8) -> Option<&[u8]> {
        self.predicted.get(bank, pcr)
    }

    /// The pinned value of a PCR that no reference event extends (appraised by its value,
    /// not by an event log).
    pub fn pinned_only(&self, bank: HashAlg, pcr: u8) -> Option<&[u8]> {
        self.pinned_only.get(bank, pcr)
    }

    /// Whether evidence must carry an event log: unless every PCR of the policy selection
    /// is pinned, there are reference events to match it against.
    pub fn needs_event_log(&self) -> bool {
        !self.events.is_empty()
    }

    /// PolicyPCR (SHA-256) over the policy selection with the predicted values: the only
    /// authPolicy a bundle key may carry.
    pub fn expected_auth_policy(&self) -> &[u8] {
        &self.expected_auth_policy
    }
}

fn pcr_map(raw: BTreeMap<String, String>) -> Result<BTreeMap<u8, String>, RefValuesError> {
    let mut map = BTreeMap::new();
    for (k, v) in raw {
        let pcr: u8 =
            k.parse().ok().filter(|p| *p < 24 && (k == "0" || !k.starts_with('0'))).ok_or_else(
                || RefValuesError::PcrMap(format!("{k:?} is not a PCR index 0..=23")),
            )?;
        if v.trim().is_empty() {
            return Err(RefValuesError::PcrMap(format!("PCR {pcr} has an empty description")));
        }
        map.insert(pcr, v);
    }
    if map.is_empty() {
        return Err(RefValuesError::PcrMap("empty".into()));
    }
    Ok(map)
}

fn reference_event(
    index: usize,
    raw: RawEvent,
    policy: &Policy,
    pcr_map: &BTreeMap<u8, String>,
) -> Result<ReferenceEvent, RefValuesError> {
    let bad = |reason: String| RefValuesError::Event { index, reason };
    let pcr8 = u8::try_from(raw.pcr).ok().filter(|p| pcr_map.contains_key(p));
    let Some(pcr8) = pcr8 else {
        return Err(bad(format!("PCR {} is not in the pcr_map", raw.pcr)));
    };
    let event_type = parse_event_type(&raw.event_type)
        .ok_or_else(|| bad(format!("unknown event type {:?}", raw.event_type)))?;
    if event_type == EventType::EV_NO_ACTION {
        return Err(bad(
            "EV_NO_ACTION events are not extended and cannot be reference values".into()
        ));
    }
    let component = match (raw.component, raw.version) {
        (Some(n), Some(v)) if label_ok(&n) && label_ok(&v) => Some((n, v)),
        (None, None) => None,
        _ => return Err(bad("component and version must both be given, without spaces".into())),
    };
    let mut digests = Vec::new();
    for (bank, hex_digest) in [
        (HashAlg::Sha1, raw.sha1),
        (HashAlg::Sha256, raw.sha256),
        (HashAlg::Sha384, raw.sha384),
        (HashAlg::Sha512, raw.sha512),
        (HashAlg::Sm3_256, raw.sm3_256),
    ] {
        let Some(hex_digest) = hex_digest else { continue };
        let digest =
            hex::decode(&hex_digest).map_err(|_| bad(format!("{bank} digest is not hex")))?;
        if digest.len() != bank.size() {
            return Err(bad(format!(
                "{bank} digest has {} bytes, not {}",
                digest.len(),
                bank.size()
            )));
        }
        digests.push((bank, digest));
    }
    for bank in &policy.banks {
        if !digests.iter().any(|(b, _)| b == bank) {
            return Err(bad(format!("no {bank} digest, but the policy allows that bank")));
        }
    }
    for bank in policy.selection.banks() {
        if !bank.contains(pcr8) {
            return Err(bad(format!(
                "PCR {pcr8} is not in the policy's {} selection: the event could never be verified",
                bank.hash()
            )));
        }
    }
    Ok(ReferenceEvent { pcr: raw.pcr, event_type, component, digests })
}

fn label_ok(s: &str) -> bool {
    (1..=64).contains(&s.len()) && !s.contains(char::is_whitespace)
}

/// `[pcr_values.BANK]` checked: known banks, PCRs of the PCR map, values of the bank's size.
fn pcr_values(
    raw: BTreeMap<String, BTreeMap<String, String>>,
    pcr_map: &BTreeMap<u8, String>,
) -> Result<BTreeMap<HashAlg, BTreeMap<u8, Vec<u8>>>, RefValuesError> {
    let bad = |reason: String| RefValuesError::PcrValues(reason);
    let mut out = BTreeMap::new();
    for (bank, values) in raw {
        let alg: HashAlg = bank.parse().map_err(|e| bad(format!("{e}")))?;
        let mut checked = BTreeMap::new();
        for (pcr, value) in values {
            let index = pcr.parse::<u8>().ok().filter(|p| pcr_map.contains_key(p) && *p < 24);
            let Some(index) = index.filter(|p| pcr == p.to_string()) else {
                return Err(bad(format!("{bank}: PCR {pcr:?} is not in the pcr_map")));
            };
            let value = hex::decode(&value).map_err(|_| bad(format!("{bank}:{pcr} is not hex")))?;
            if value.len() != alg.size() {
                return Err(bad(format!(
                    "{bank}:{pcr} has {} bytes, not {}",
                    value.len(),
                    alg.size()
                )));
            }
            checked.insert(index, value);
        }
        out.insert(alg, checked);
    }
    Ok(out)
}

/// Takes out of `pcr_values` the PCRs that no reference event extends: pinned values
/// appraised by value. Each must be in the policy selection (a pinned value nobody quotes
/// would be a check that never runs). What remains are values the events must replay to.
fn pinned_only(
    pcr_values: &mut BTreeMap<HashAlg, BTreeMap<u8, Vec<u8>>>,
    events: &[ReferenceEvent],
    policy: &Policy,
) -> Result<PcrValues, RefValuesError> {
    let mut out = PcrValues::new();
    for (bank, values) in pcr_values.iter_mut() {
        let pinned: Vec<u8> = values
            .keys()
            .copied()
            .filter(|pcr| !events.iter().any(|e| e.pcr == u32::from(*pcr)))
            .collect();
        for pcr in pinned {
            if !policy.selection.contains(*bank, pcr) {
                return Err(RefValuesError::PcrValues(format!(
                    "{bank}:{pcr} is pinned, no event extends it, and the policy's pcr_selection \
                     does not quote it: the value would never be checked"
                )));
            }
            if let Some(value) = values.remove(&pcr) {
                out.insert(*bank, pcr, value)
                    .map_err(|e| RefValuesError::PcrValues(e.to_string()))?;
            }
        }
    }
    pcr_values.retain(|_, values| !values.is_empty());
    Ok(out)
}

/// The reference events replayed in file order from `startup_locality`, in the policy's
/// banks and those of `pcr_values` (every event must carry a digest in each): the PCR
/// values a device booted this way holds.
fn replay(
    events: &[ReferenceEvent],
    policy: &Policy,
    startup_locality: u8,
    pcr_values: &BTreeMap<HashAlg, BTreeMap<u8, Vec<u8>>>,
) -> Result<PcrBanks, RefValuesError> {
    let err = |e: &dyn std::fmt::Display| RefValuesError::Prediction(e.to_string());
    let mut banks = policy.banks.clone();
    banks.extend(pcr_values.keys().filter(|b| !policy.banks.contains(b)));
    let mut log = EventLog::new(&banks).map_err(|e| err(&e))?;
    if startup_locality != 0 {
        log.push_measurement(&Measurement::startup_locality(startup_locality, &banks))
            .map_err(|e| err(&e))?;
    }
    for (index, e) in events.iter().enumerate() {
        let mut digests = Vec::with_capacity(banks.len());
        for &bank in &banks {
            let Some(d) = e.digest(bank) else {
                return Err(RefValuesError::Event {
                    index,
                    reason: format!("no {bank} digest, but pcr_values gives that bank"),
                });
            };
            digests.push(BankDigest { alg: bank, value: d.to_vec() });
        }
        let m = Measurement { pcr: e.pcr, event_type: e.event_type, data: Vec::new(), digests };
        log.push_measurement(&m).map_err(|e| err(&e))?;
    }
    log.replay().map_err(|e| err(&e))
}

/// The predicted values of the policy selection (a pinned-only PCR's is its pinned value)
/// and the bundle key's expected authPolicy; every value `pcr_values` gives for a PCR that
/// events extend must be the prediction.
fn predict(
    events: &[ReferenceEvent],
    policy: &Policy,
    startup_locality: u8,
    pcr_values: &BTreeMap<HashAlg, BTreeMap<u8, Vec<u8>>>,
    pinned_only: &PcrValues,
) -> Result<(PcrValues, Vec<u8>), RefValuesError> {
    let err = |e: &dyn std::fmt::Display| RefValuesError::Prediction(e.to_string());
    let banks = replay(events, policy, startup_locality, pcr_values)?;
    for (bank, values) in pcr_values {
        for (pcr, value) in values {
            let predicted = banks.value(*bank, u32::from(*pcr)).unwrap_or_default();
            if predicted != value.as_slice() {
                return Err(RefValuesError::PcrValues(format!(
                    "{bank}:{pcr} is {} but the events replay to {}",
                    hex::encode(value),
                    hex::encode(predicted)
                )));
            }
        }
    }
    let mut values = PcrValues::new();
    for (bank, pcr) in policy.selection.iter() {
        let value = match pinned_only.get(bank, pcr) {
            Some(pinned) => pinned,
            None => banks.value(bank, u32::from(pcr)).ok_or_else(|| err(&"no value"))?,
        };
        values.insert(bank, pcr, value).map_err(|e| err(&e))?;
    }
    let auth = policy_pcr(POLICY_HASH, &policy.selection, &values).map_err(|e| err(&e))?;
    Ok((values, auth.as_bytes().to_vec()))
}

/// An event type by its PFP name (`EV_IPL`) or as hexadecimal (`0x0000000d`).
pub fn parse_event_type(s: &str) -> Option<EventType> {
    if let Some(hex_value) = s.strip_prefix("0x") {
        return u32::from_str_radix(hex_value, 16).ok().map(EventType);
    }
    (0u32..=0x12)
        .chain(0x8000_0001..=0x8000_0010)
        .chain(0x8000_00E0..=0x8000_00E2)
        .map(EventType)
        .find(|t| t.name() == Some(s))
}

pub(crate) fn event_type_text(t: EventType) -> String {
    t.name().map_or_else(|| format!("0x{:08x}", t.0), str::to_owned)
}

/// Reference values for the image in `dir`, measured in `banks` with the TRE's own
/// measuring code, as TOML text: every measurement an event (components in boot order,
/// then the separators) with its digest in every bank, the PCR map from the manifest, and a
/// policy that quotes every measured PCR in the first non-SHA-1 bank, allows the non-SHA-1
/// banks (SHA-1 only when it is the only bank) and requires every component.
pub fn derive(dir: &Path, banks: &[HashAlg]) -> Result<String, RefValuesError> {
    let img = |e: image::ImageError| RefValuesError::Image(e.to_string());
    let manifest = Manifest::load(dir).map_err(img)?;
    let measurements = image::measure_manifest(dir, &manifest, banks).map_err(img)?;
    let quote_bank = banks
        .iter()
        .copied()
        .find(|b| *b != HashAlg::Sha1)
        .or_else(|| banks.first().copied())
        .ok_or_else(|| RefValuesError::Policy("no bank".into()))?;
    let pcrs: BTreeSet<u32> = measurements.iter().map(|m| m.pcr).collect();
    let id: String = format!("{}-{}", manifest.name, manifest.version)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._:-".contains(c) { c } else { '-' })
        .collect();
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();

    let mut out = String::new();
    let w = &mut out;
    let _ =
        writeln!(w, "# tresor reference values and appraisal policy (docs/reference-values.md)");
    let _ = writeln!(
        w,
        "# derived by `tresor pva reference-values` from the image in {}",
        dir.display()
    );
    let _ = writeln!(w, "format = {FORMAT}");
    let _ = writeln!(w, "id = {}", q(&id));
    let _ = writeln!(
        w,
        "description = {}",
        q(&format!("known-good image {} {}", manifest.name, manifest.version))
    );
    let _ =
        writeln!(w, "\n[image]\nname = {}\nversion = {}", q(&manifest.name), q(&manifest.version));
    let _ = writeln!(w, "\n# What each measured PCR holds.\n[pcr_map]");
    for pcr in &pcrs {
        let names: Vec<String> = manifest
            .components
            .iter()
            .filter(|c| c.pcr == *pcr)
            .map(|c| format!("{} ({})", c.name, c.kind.name()))
            .collect();
        let _ = writeln!(w, "{} = {}", q(&pcr.to_string()), q(&names.join(", ")));
    }
    let selection: Vec<String> = pcrs.iter().map(u32::to_string).collect();
    // SHA-1 digests are recorded, but SHA-1 quotes are allowed only when SHA-1 is the
    // only bank asked for: an operator enables it by adding "sha1" to `banks`.
    let allowed: Vec<HashAlg> =
        match banks.iter().copied().filter(|b| *b != HashAlg::Sha1).collect::<Vec<_>>() {
            none if none.is_empty() => banks.to_vec(),
            some => some,
        };
    let bank_names: Vec<String> = allowed.iter().map(|b| q(b.name())).collect();
    let required: Vec<String> = manifest.components.iter().map(|c| q(&c.name)).collect();
    let _ = writeln!(w, "\n[policy]");
    let _ = writeln!(
        w,
        "# The PCRs the quote must cover and the bundle key's PolicyPCR is computed over."
    );
    let _ = writeln!(w, "pcr_selection = {}", q(&format!("{quote_bank}:{}", selection.join(","))));
    let _ = writeln!(w, "# PCR banks a quote may select; SHA-1 only if listed here.");
    let _ = writeln!(w, "banks = [{}]", bank_names.join(", "));
    let _ = writeln!(w, "required_components = [{}]", required.join(", "));
    let _ = writeln!(
        w,
        "# \"warning\" or \"contraindicated\" for a component below its minimum version."
    );
    let _ = writeln!(w, "below_minimum_version = \"contraindicated\"");
    let _ = writeln!(w, "ear_validity_seconds = {}", crate::policy::DEFAULT_EAR_VALIDITY.as_secs());
    let _ = writeln!(w, "\n# Minimum versions, compared numerically by dotted components.");
    let _ = writeln!(w, "[policy.minimum_versions]");
    for c in &manifest.components {
        let _ = writeln!(w, "# {} = {}", q(&c.name), q(&c.version));
    }
    for m in &measurements {
        let _ = writeln!(
            w,
            "\n[[event]]\npcr = {}\ntype = {}",
            m.pcr,
            q(&event_type_text(m.event_type))
        );
        if let Some((name, version)) = image::component_of(m.event_type, &m.data) {
            let _ = writeln!(w, "component = {}\nversion = {}", q(name), q(version));
        }
        for d in &m.digests {
            let _ = writeln!(w, "{} = {}", d.alg.name(), q(&hex::encode(&d.value)));
        }
    }
    // What we wrote must load.
    ReferenceValues::parse(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_image() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/image")
    }

    #[test]
    fn derives_loadable_reference_values_from_the_example_image() {
        let text = derive(&example_image(), &[HashAlg::Sha256]).unwrap();
        let refs = ReferenceValues::parse(&text).unwrap();
        assert_eq!(refs.id(), "tresor-sample-m2me-2025.1");
        assert_eq!(refs.policy().selection.to_string(), "sha256:0,2,4,8,9");
        assert_eq!(refs.events().len(), 10, "five components, five separators");
        assert_eq!(refs.expected_auth_policy().len(), 32);
        // The prediction is the image measurement's replay.
        let measurements = image::measure(&example_image(), &[HashAlg::Sha256]).unwrap();
        let expected = image::expected_pcrs(&[HashAlg::Sha256], &measurements).unwrap();
        for pcr in [0u8, 2, 4, 8, 9] {
            assert_eq!(
                refs.predicted(HashAlg::Sha256, pcr).unwrap(),
                expected.value(HashAlg::Sha256, u32::from(pcr)).unwrap()
            );
        }
        let os = refs.events().iter().find(|e| e.component.as_ref().is_some_and(|c| c.0 == "os"));
        assert_eq!(os.unwrap().event_type, EventType::EV_IPL);
    }

    #[test]
    fn sha1_digests_are_recorded_but_sha1_quotes_not_allowed() {
        let text = derive(&example_image(), &[HashAlg::Sha1, HashAlg::Sha256]).unwrap();
        assert!(text.contains("banks = [\"sha256\"]"), "{text}");
        assert!(text.contains("sha1 = "));
        let refs = ReferenceValues::parse(&text).unwrap();
        assert!(!refs.policy().allows_bank(HashAlg::Sha1));
        let only_sha1 = derive(&example_image(), &[HashAlg::Sha1]).unwrap();
        let refs = ReferenceValues::parse(&only_sha1).unwrap();
        assert!(refs.policy().allows_bank(HashAlg::Sha1));
        assert_eq!(refs.policy().selection.to_string(), "sha1:0,2,4,8,9");
    }

    #[test]
    fn refuses_inconsistent_files() {
        let text = derive(&example_image(), &[HashAlg::Sha256]).unwrap();
        let cases = [
            ("format = 1", "format = 2", "format"),
            ("banks = [\"sha256\"]", "banks = [\"sha256\", \"sha1\"]", "sha1 digests missing"),
            (
                "pcr_selection = \"sha256:0,2,4,8,9\"",
                "pcr_selection = \"sha256:0,2,4,8\"",
                "PCR 9 unquoted",
            ),
            (
                "pcr_selection = \"sha256:0,2,4,8,9\"",
                "pcr_selection = \"sha256:0,2,4,8,9,16\"",
                "PCR 16 unmapped",
            ),
            ("type = \"EV_IPL\"", "type = \"EV_BOGUS\"", "event type"),
            (
                "[policy.minimum_versions]",
                "[policy.minimum_versions]\nghost = \"1\"",
                "unknown component",
            ),
            ("id = \"tresor-sample-m2me-2025.1\"", "id = \"has space\"", "id"),
            ("format = 1", "format = 1\nsurprise = true", "unknown field"),
        ];
        for (from, to, why) in cases {
            assert!(text.contains(from), "{why}: {from}");
            let bad = text.replacen(from, to, 1);
            assert!(ReferenceValues::parse(&bad).is_err(), "{why}");
        }
    }

    fn pinned(selection: &str, pins: &[(&str, &str)], extra: &str) -> String {
        let mut t = format!(
            "format = 1\nid = \"pinned\"\n[pcr_map]\n\"16\" = \"debug\"\n\"23\" = \"application\"\n\
             [policy]\npcr_selection = \"{selection}\"\nbanks = [\"sha256\"]\n{extra}\n[pcr_values.sha256]\n"
        );
        for (pcr, value) in pins {
            t.push_str(&format!("\"{pcr}\" = \"{value}\"\n"));
        }
        t
    }

    #[test]
    fn pcr_values_alone_pin_pcrs_no_event_extends() {
        let (a, b) = ("11".repeat(32), "22".repeat(32));
        let text = pinned("sha256:16,23", &[("16", &a), ("23", &b)], "bundle_key = \"none\"");
        let refs = ReferenceValues::parse(&text).unwrap();
        assert!(!refs.needs_event_log());
        assert_eq!(refs.policy().bundle_key, crate::policy::BundleKeyPolicy::None);
        assert_eq!(
            refs.pinned_only(HashAlg::Sha256, 16),
            Some(hex::decode(&a).unwrap().as_slice())
        );
        assert_eq!(refs.predicted(HashAlg::Sha256, 23), Some(hex::decode(&b).unwrap().as_slice()));
        assert_eq!(refs.pinned_only(HashAlg::Sha256, 0), None);

        // Fail closed on what could never be checked or means nothing.
        let cases = [
            // A PCR of the selection neither pinned nor extended by any event.
            (pinned("sha256:16,23", &[("16", &a)], ""), "not every PCR"),
            // A pin nobody quotes.
            (pinned("sha256:16", &[("16", &a), ("23", &b)], ""), "never be checked"),
            // A pin of the wrong size, not hex, an unmapped PCR.
            (pinned("sha256:16,23", &[("16", "11"), ("23", &b)], ""), "bytes"),
            (pinned("sha256:16,23", &[("16", "zz"), ("23", &b)], ""), "hex"),
            (pinned("sha256:16,23", &[("16", &a), ("23", &b), ("7", &a)], ""), "pcr_map"),
            // Only "required" and "none".
            (
                pinned("sha256:16,23", &[("16", &a), ("23", &b)], "bundle_key = \"maybe\""),
                "variant",
            ),
        ];
        for (text, why) in cases {
            let err = ReferenceValues::parse(&text).unwrap_err().to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn a_pinned_pcr_beside_reference_events() {
        let text = derive(&example_image(), &[HashAlg::Sha256]).unwrap();
        let pin = "33".repeat(32);
        let text = text
            .replace("[pcr_map]", "[pcr_map]\n\"16\" = \"debug\"")
            .replace("\"sha256:0,2,4,8,9\"", "\"sha256:0,2,4,8,9,16\"")
            .replace(
                "[policy.minimum_versions]",
                &format!("[pcr_values.sha256]\n\"16\" = \"{pin}\"\n[policy.minimum_versions]"),
            );
        let refs = ReferenceValues::parse(&text).unwrap();
        assert!(refs.needs_event_log());
        assert_eq!(
            refs.pinned_only(HashAlg::Sha256, 16),
            Some(hex::decode(&pin).unwrap().as_slice())
        );
        assert_eq!(refs.pinned_only(HashAlg::Sha256, 9), None);
        // A pin of a PCR that events extend is still checked against their replay.
        let wrong =
            text.replace("[pcr_values.sha256]", &format!("[pcr_values.sha256]\n\"9\" = \"{pin}\""));
        let err = ReferenceValues::parse(&wrong).unwrap_err().to_string();
        assert!(err.contains("replay"), "{err}");
        // Existing files keep meaning "required".
        assert_eq!(refs.policy().bundle_key, crate::policy::BundleKeyPolicy::Required);
    }

    #[test]
    fn event_types_parse_by_name_and_number() {
        assert_eq!(parse_event_type("EV_SEPARATOR"), Some(EventType::EV_SEPARATOR));
        assert_eq!(
            parse_event_type("EV_EFI_VARIABLE_AUTHORITY"),
            Some(EventType::EV_EFI_VARIABLE_AUTHORITY)
        );
        assert_eq!(parse_event_type("0x0000000d"), Some(EventType::EV_IPL));
        assert_eq!(parse_event_type("EV_NOPE"), None);
    }
}
