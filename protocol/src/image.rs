//! Device images and their measurement: the manifest of an M2ME's software, and the PCR
//! events that measuring it produces (TCG PC Client Platform Firmware Profile 1.05, §3.3.4
//! PCR usage, §10.4.1 event types). `docs/eventlog.md` documents the manifest format and the
//! PCR assignment.
//!
//! One function, [`measure`], serves both sides: the TRE extends its TPM's PCRs with the
//! measurements and writes the event log from them, and the PVA computes its reference
//! values and the expected PCR values from the same image with the same code.
//!
//! The manifest is hostile input for the PVA (it may come with an image from a supplier), so
//! it is parsed strictly: unknown fields are refused, component names are unique, PCRs are
//! in 0–15, and component files are relative paths that stay inside the image directory,
//! symbolic links included.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Component as PathPart, Path, PathBuf};

use serde::Deserialize;

use crate::eventlog::{BankDigest, EventLog, EventLogError, EventType, Measurement, PcrBanks};
use crate::tpm::HashAlg;

/// The manifest's file name inside an image directory.
pub const MANIFEST_FILE: &str = "manifest.toml";
/// The only manifest format version defined.
pub const MANIFEST_FORMAT: u32 = 1;
/// Largest manifest read.
pub const MAX_MANIFEST_SIZE: u64 = 64 * 1024;
/// Most components in one image.
pub const MAX_COMPONENTS: usize = 64;
/// Highest PCR a component may be measured into. PCRs 0–7 are the platform's (SRTM), 8–15
/// the OS's; 16 is the debug PCR and 23 the application PCR, both resettable by software,
/// and 17–22 belong to the dynamic RTM (PC Client PTP §4.6), so none of those can vouch for
/// a boot.
pub const MAX_PCR: u32 = 15;
/// Longest component name, version or image name.
pub const MAX_LABEL_LEN: usize = 64;
/// Longest component file path.
pub const MAX_PATH_LEN: usize = 255;
/// taggedEventID of the TCG_PCClientTaggedEvent we log for configuration components:
/// "TRES" read as a big-endian number, written little-endian like every PFP field.
pub const TAGGED_EVENT_ID: u32 = 0x5452_4553;
/// Event data of an EV_SEPARATOR: the normal separator value 0x00000000 (PFP §10.4.1).
pub const SEPARATOR_DATA: [u8; 4] = [0; 4];

/// Why an image could not be loaded or measured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest is larger than {max} bytes")]
    ManifestTooLarge { max: u64 },
    #[error("manifest is not valid: {0}")]
    ManifestSyntax(String),
    #[error("manifest format {0} is not supported (expected {MANIFEST_FORMAT})")]
    UnsupportedFormat(u32),
    #[error("manifest lists no component")]
    NoComponents,
    #[error("manifest lists more than {max} components")]
    TooManyComponents { max: usize },
    #[error("{what} {value:?} is not valid: 1 to 64 characters of {}", .label.allowed())]
    BadLabel { what: &'static str, value: String, label: Label },
    #[error("component name {0:?} appears twice")]
    DuplicateName(String),
    #[error("component {component:?}: PCR {pcr} is outside 0..={MAX_PCR}")]
    PcrNotAllowed { component: String, pcr: u32 },
    #[error("component {component:?}: file {path:?} {problem}")]
    BadPath { component: String, path: String, problem: &'static str },
    #[error("component {component:?}: file {path:?} is outside the image directory")]
    OutsideImage { component: String, path: PathBuf },
    #[error("component {component:?}: {path:?} is not a regular file")]
    NotAFile { component: String, path: PathBuf },
    #[error("no PCR bank requested")]
    NoBanks,
    #[error("PCR bank {0} requested twice")]
    DuplicateBank(HashAlg),
    #[error(transparent)]
    EventLog(#[from] EventLogError),
}

/// What a component is; decides the event type it is logged with.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    Bootloader,
    Os,
    TreAgent,
    ModemFirmware,
    Configuration,
}

impl ComponentKind {
    pub const ALL: [ComponentKind; 5] = [
        ComponentKind::Bootloader,
        ComponentKind::Os,
        ComponentKind::TreAgent,
        ComponentKind::ModemFirmware,
        ComponentKind::Configuration,
    ];

    /// The manifest spelling.
    pub fn name(self) -> &'static str {
        match self {
            ComponentKind::Bootloader => "bootloader",
            ComponentKind::Os => "os",
            ComponentKind::TreAgent => "tre-agent",
            ComponentKind::ModemFirmware => "modem-firmware",
            ComponentKind::Configuration => "configuration",
        }
    }

    /// The event type a component of this kind is logged with (PFP 1.05 §10.4.1):
    /// bootloader EV_POST_CODE (platform firmware code), OS and TRE agent EV_IPL (code a
    /// loader hands control to), modem firmware EV_NONHOST_CODE (code run on a processor
    /// other than the host's), configuration EV_EVENT_TAG (a tagged event).
    pub fn event_type(self) -> EventType {
        match self {
            ComponentKind::Bootloader => EventType::EV_POST_CODE,
            ComponentKind::Os | ComponentKind::TreAgent => EventType::EV_IPL,
            ComponentKind::ModemFirmware => EventType::EV_NONHOST_CODE,
            ComponentKind::Configuration => EventType::EV_EVENT_TAG,
        }
    }

    /// The PCR `docs/eventlog.md` assigns to this kind: bootloader 0, modem firmware 2,
    /// OS 4, TRE agent 8, configuration 9.
    pub fn recommended_pcr(self) -> u32 {
        match self {
            ComponentKind::Bootloader => 0,
            ComponentKind::ModemFirmware => 2,
            ComponentKind::Os => 4,
            ComponentKind::TreAgent => 8,
            ComponentKind::Configuration => 9,
        }
    }
}

/// One component of an image, validated.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Component {
    pub name: String,
    pub version: String,
    pub kind: ComponentKind,
    /// Relative to the image directory, without `.`, `..` or a root.
    pub file: PathBuf,
    pub pcr: u32,
}

impl Component {
    /// The event data logged for this component: UTF-8 "name version" (both free of
    /// spaces, so the split is unambiguous), wrapped for configuration in a
    /// TCG_PCClientTaggedEvent (taggedEventID [`TAGGED_EVENT_ID`], taggedEventDataSize,
    /// taggedEventData) as EV_EVENT_TAG requires.
    pub fn event_data(&self) -> Vec<u8> {
        let label = format!("{} {}", self.name, self.version).into_bytes();
        match self.kind {
            ComponentKind::Configuration => {
                let mut data = Vec::with_capacity(8 + label.len());
                data.extend_from_slice(&TAGGED_EVENT_ID.to_le_bytes());
                // Names and versions are at most 64 bytes each, so the label fits a UINT32.
                data.extend_from_slice(
                    &u32::try_from(label.len()).unwrap_or(u32::MAX).to_le_bytes(),
                );
                data.extend_from_slice(&label);
                data
            }
            _ => label,
        }
    }
}

/// The (name, version) a component event names, if `data` has the shape
/// [`Component::event_data`] writes for a component of `event_type`. Lets a verifier apply
/// version policy to the events of a log. Event data is not covered by the digest, so the
/// answer is only as trustworthy as the match of the event's digest with a reference value.
pub fn component_of(event_type: EventType, data: &[u8]) -> Option<(&str, &str)> {
    let label = if event_type == EventType::EV_EVENT_TAG {
        let (id, rest) = data.split_first_chunk::<4>()?;
        let (size, label) = rest.split_first_chunk::<4>()?;
        if u32::from_le_bytes(*id) != TAGGED_EVENT_ID
            || usize::try_from(u32::from_le_bytes(*size)).ok()? != label.len()
        {
            return None;
        }
        label
    } else if ComponentKind::ALL.iter().any(|k| k.event_type() == event_type) {
        data
    } else {
        return None;
    };
    let (name, version) = std::str::from_utf8(label).ok()?.split_once(' ')?;
    (Label::Name.is_valid(name) && Label::Version.is_valid(version)).then_some((name, version))
}

/// A validated manifest.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// In measurement (boot) order.
    pub components: Vec<Component>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: u32,
    name: String,
    version: String,
    #[serde(default)]
    component: Vec<RawComponent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    name: String,
    version: String,
    kind: ComponentKind,
    file: String,
    pcr: u32,
}

/// The two kinds of label a manifest holds, and the characters each may use. Neither may
/// contain a space, which separates name and version in the event data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Label {
    /// Image and component names.
    Name,
    /// Image and component versions.
    Version,
}

impl Label {
    fn allowed(self) -> &'static str {
        match self {
            Label::Name => "letters, digits, '.', '_' and '-'",
            Label::Version => "letters, digits, '.', '_', '-', '+' and '~'",
        }
    }

    fn is_valid(self, value: &str) -> bool {
        let extra: &[char] = match self {
            Label::Name => &['.', '_', '-'],
            Label::Version => &['.', '_', '-', '+', '~'],
        };
        (1..=MAX_LABEL_LEN).contains(&value.len())
            && value.chars().all(|ch| ch.is_ascii_alphanumeric() || extra.contains(&ch))
    }
}

impl Manifest {
    /// Reads and validates `dir/manifest.toml`.
    pub fn load(dir: &Path) -> Result<Self, ImageError> {
        let path = dir.join(MANIFEST_FILE);
        let io = |source| ImageError::Io { path: path.clone(), source };
        let mut text = String::new();
        File::open(&path)
            .map_err(io)?
            .take(MAX_MANIFEST_SIZE + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(ImageError::ManifestTooLarge { max: MAX_MANIFEST_SIZE });
        }
        Self::parse(&text)
    }

    /// Parses and validates manifest text.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| ImageError::ManifestSyntax(e.to_string()))?;
        if raw.format != MANIFEST_FORMAT {
            return Err(ImageError::UnsupportedFormat(raw.format));
        }
        check_label("image name", &raw.name, Label::Name)?;
        check_label("image version", &raw.version, Label::Version)?;
        if raw.component.is_empty() {
            return Err(ImageError::NoComponents);
        }
        if raw.component.len() > MAX_COMPONENTS {
            return Err(ImageError::TooManyComponents { max: MAX_COMPONENTS });
        }
        let mut names = BTreeSet::new();
        let mut components = Vec::with_capacity(raw.component.len());
        for c in raw.component {
            check_label("component name", &c.name, Label::Name)?;
            check_label("component version", &c.version, Label::Version)?;
            if !names.insert(c.name.clone()) {
                return Err(ImageError::DuplicateName(c.name));
            }
            if c.pcr > MAX_PCR {
                return Err(ImageError::PcrNotAllowed { component: c.name, pcr: c.pcr });
            }
            let file = relative_path(&c.name, &c.file)?;
            components.push(Component {
                name: c.name,
                version: c.version,
                kind: c.kind,
                file,
                pcr: c.pcr,
            });
        }
        Ok(Self { name: raw.name, version: raw.version, components })
    }
}

/// Measures the image in `dir` in every bank of `banks`: one measurement per component, in
/// manifest order, then one EV_SEPARATOR per measured PCR in ascending order, as firmware
/// closes its PCRs before handing over. Extending these into a freshly reset TPM, and
/// logging them with [`EventLog::from_measurements`], yields the PCR values that
/// [`expected_pcrs`] predicts.
pub fn measure(dir: &Path, banks: &[HashAlg]) -> Result<Vec<Measurement>, ImageError> {
    let manifest = Manifest::load(dir)?;
    measure_manifest(dir, &manifest, banks)
}

/// [`measure`] with an already loaded manifest.
pub fn measure_manifest(
    dir: &Path,
    manifest: &Manifest,
    banks: &[HashAlg],
) -> Result<Vec<Measurement>, ImageError> {
    check_banks(banks)?;
    let root =
        dir.canonicalize().map_err(|source| ImageError::Io { path: dir.to_path_buf(), source })?;
    let mut measurements = Vec::with_capacity(manifest.components.len() * 2);
    let mut pcrs = BTreeSet::new();
    for c in &manifest.components {
        let digests = digest_file(&root, c, banks)?;
        measurements.push(Measurement {
            pcr: c.pcr,
            event_type: c.kind.event_type(),
            data: c.event_data(),
            digests,
        });
        pcrs.insert(c.pcr);
    }
    for pcr in pcrs {
        let digests = banks
            .iter()
            .map(|&alg| BankDigest { alg, value: alg.digest(&SEPARATOR_DATA) })
            .collect();
        measurements.push(Measurement {
            pcr,
            event_type: EventType::EV_SEPARATOR,
            data: SEPARATOR_DATA.to_vec(),
            digests,
        });
    }
    Ok(measurements)
}

/// The PCR values of a freshly reset TPM (all PCRs zero, locality 0) after extending
/// `measurements`, per bank: what PolicyPCR for the bundle key must be computed over.
pub fn expected_pcrs(
    banks: &[HashAlg],
    measurements: &[Measurement],
) -> Result<PcrBanks, ImageError> {
    check_banks(banks)?;
    Ok(EventLog::from_measurements(banks, measurements)?.replay()?)
}

fn check_banks(banks: &[HashAlg]) -> Result<(), ImageError> {
    if banks.is_empty() {
        return Err(ImageError::NoBanks);
    }
    for (i, alg) in banks.iter().enumerate() {
        if banks.iter().skip(i + 1).any(|b| b == alg) {
            return Err(ImageError::DuplicateBank(*alg));
        }
    }
    Ok(())
}

/// Hashes a component's file in every bank in one streaming pass, after checking that the
/// file, with symbolic links resolved, is a regular file inside the image directory.
fn digest_file(
    root: &Path,
    c: &Component,
    banks: &[HashAlg],
) -> Result<Vec<BankDigest>, ImageError> {
    let joined = root.join(&c.file);
    let path =
        joined.canonicalize().map_err(|source| ImageError::Io { path: joined.clone(), source })?;
    if !path.starts_with(root) {
        return Err(ImageError::OutsideImage { component: c.name.clone(), path: c.file.clone() });
    }
    let io = |source| ImageError::Io { path: path.clone(), source };
    let mut file = File::open(&path).map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(ImageError::NotAFile { component: c.name.clone(), path: c.file.clone() });
    }
    let mut contexts: Vec<_> = banks.iter().map(|alg| alg.hasher()).collect();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        let Some(chunk) = buf.get(..n) else { break };
        if chunk.is_empty() {
            break;
        }
        for ctx in &mut contexts {
            ctx.update(chunk);
        }
    }
    Ok(banks
        .iter()
        .zip(contexts)
        .map(|(&alg, ctx)| BankDigest { alg, value: ctx.finish() })
        .collect())
}

fn check_label(what: &'static str, value: &str, label: Label) -> Result<(), ImageError> {
    if label.is_valid(value) {
        Ok(())
    } else {
        Err(ImageError::BadLabel { what, value: value.to_owned(), label })
    }
}

/// A relative path of normal parts only: no root, no drive prefix, no `.` or `..`.
fn relative_path(component: &str, file: &str) -> Result<PathBuf, ImageError> {
    let bad = |problem| ImageError::BadPath {
        component: component.to_owned(),
        path: file.to_owned(),
        problem,
    };
    if file.is_empty() {
        return Err(bad("is empty"));
    }
    if file.len() > MAX_PATH_LEN {
        return Err(bad("is longer than 255 bytes"));
    }
    if file.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if file.contains('\\') {
        return Err(bad("contains a backslash (use '/')"));
    }
    let path = Path::new(file);
    for part in path.components() {
        match part {
            PathPart::Normal(_) => {}
            PathPart::ParentDir => return Err(bad("contains '..'")),
            PathPart::CurDir => return Err(bad("contains '.'")),
            PathPart::RootDir | PathPart::Prefix(_) => return Err(bad("is absolute")),
        }
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
format = 1
name = "img"
version = "1.0"

[[component]]
name = "boot"
kind = "bootloader"
version = "2.1.0"
file = "boot/loader.bin"
pcr = 0

[[component]]
name = "cfg"
kind = "configuration"
version = "7"
file = "config.toml"
pcr = 9
"#;

    fn with(find: &str, replace: &str) -> Result<Manifest, ImageError> {
        assert!(GOOD.contains(find), "{find}");
        Manifest::parse(&GOOD.replacen(find, replace, 1))
    }

    #[test]
    fn parses_a_good_manifest() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.name, "img");
        assert_eq!(m.components.len(), 2);
        assert_eq!(m.components[0].kind, ComponentKind::Bootloader);
        assert_eq!(m.components[0].file, Path::new("boot/loader.bin"));
        assert_eq!(m.components[1].pcr, 9);
    }

    #[test]
    fn refuses_unknown_fields_and_kinds() {
        assert!(matches!(
            with("pcr = 0", "pcr = 0\nhash = \"x\""),
            Err(ImageError::ManifestSyntax(_))
        ));
        assert!(matches!(
            with("format = 1", "format = 1\nsigned = true"),
            Err(ImageError::ManifestSyntax(_))
        ));
        assert!(matches!(
            with("kind = \"bootloader\"", "kind = \"firmware\""),
            Err(ImageError::ManifestSyntax(_))
        ));
        assert!(matches!(with("pcr = 0", "pcr = -1"), Err(ImageError::ManifestSyntax(_))));
        assert!(matches!(with("version = \"2.1.0\"\n", ""), Err(ImageError::ManifestSyntax(_))));
        assert!(matches!(with("format = 1", "format = 2"), Err(ImageError::UnsupportedFormat(2))));
    }

    #[test]
    fn refuses_bad_names_duplicates_and_pcrs() {
        assert!(
            matches!(with("name = \"boot\"", "name = \"cfg\""), Err(ImageError::DuplicateName(n)) if n == "cfg")
        );
        assert!(matches!(
            with("name = \"boot\"", "name = \"boot loader\""),
            Err(ImageError::BadLabel { .. })
        ));
        assert!(matches!(with("name = \"boot\"", "name = \"\""), Err(ImageError::BadLabel { .. })));
        assert!(matches!(
            with("version = \"2.1.0\"", "version = \"2.1 beta\""),
            Err(ImageError::BadLabel { .. })
        ));
        let long = format!("name = \"{}\"", "a".repeat(65));
        assert!(matches!(with("name = \"boot\"", &long), Err(ImageError::BadLabel { .. })));
        assert!(matches!(
            with("pcr = 9", "pcr = 16"),
            Err(ImageError::PcrNotAllowed { pcr: 16, .. })
        ));
        assert!(matches!(
            with("pcr = 9", "pcr = 23"),
            Err(ImageError::PcrNotAllowed { pcr: 23, .. })
        ));
        assert!(with("pcr = 9", "pcr = 15").is_ok());
        let none = "format = 1\nname = \"x\"\nversion = \"1\"\n";
        assert!(matches!(Manifest::parse(none), Err(ImageError::NoComponents)));
    }

    #[test]
    fn refuses_paths_that_leave_the_image() {
        for (path, problem) in [
            ("../etc/passwd", "contains '..'"),
            ("boot/../../x", "contains '..'"),
            ("/etc/passwd", "is absolute"),
            ("./x", "contains '.'"),
            ("", "is empty"),
            ("a\\b", "contains a backslash (use '/')"),
        ] {
            let line = format!("file = {path:?}");
            match with("file = \"boot/loader.bin\"", &line) {
                Err(ImageError::BadPath { problem: p, .. }) => assert_eq!(p, problem, "{path}"),
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    #[test]
    fn event_data_names_component_and_version() {
        let m = Manifest::parse(GOOD).unwrap();
        let boot = &m.components[0];
        assert_eq!(boot.event_data(), b"boot 2.1.0");
        assert_eq!(
            component_of(EventType::EV_POST_CODE, &boot.event_data()),
            Some(("boot", "2.1.0"))
        );
        let cfg = &m.components[1];
        let data = cfg.event_data();
        assert_eq!(&data[..8], [0x53, 0x45, 0x52, 0x54, 5, 0, 0, 0]);
        assert_eq!(component_of(EventType::EV_EVENT_TAG, &data), Some(("cfg", "7")));
        // Not ours: wrong type, wrong tag, bad label.
        assert_eq!(component_of(EventType::EV_SEPARATOR, &[0; 4]), None);
        assert_eq!(component_of(EventType::EV_EVENT_TAG, b"cfg 7"), None);
        assert_eq!(component_of(EventType::EV_IPL, b"grub_cmd linux /vmlinuz"), None);
    }

    #[test]
    fn kinds_have_distinct_recommended_pcrs() {
        let pcrs: BTreeSet<u32> = ComponentKind::ALL.iter().map(|k| k.recommended_pcr()).collect();
        assert_eq!(pcrs.len(), ComponentKind::ALL.len());
        assert!(pcrs.iter().all(|&p| p <= MAX_PCR));
    }
}
