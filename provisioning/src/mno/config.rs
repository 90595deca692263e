//! The operator's configuration file (TOML, `docs/mno.md` "Configuration"): which operator
//! this process is, where it listens, its certificate and key under the CI, its store (an
//! SQLite file, or a `postgres://` URL for several instances) and the key that encrypts
//! subscriber secrets at rest, its IMSI range and ICCID issuer
//! prefix, OP for the OPc derivation (3GPP TS 35.206 §4.1), its peer operators and how it
//! verifies attestation results.
//!
//! Unknown keys are refused, relative paths are resolved against the file's directory, and
//! every secret (storage key, OP) is read from a file of mode 0600 or, for tests, inline.
//! Errors name the key at fault and never echo a secret.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::Amf;
use protocol::milenage::Op;
use serde::Deserialize;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::pool::PoolConfig;
use crate::pki::Role;

/// Largest configuration or key file read.
const MAX_FILE_LEN: u64 = 64 * 1024;
/// Default lifetime of a signed profile.
const DEFAULT_PROFILE_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("give exactly one of {a} and {b}")]
    OneOf { a: &'static str, b: &'static str },
    #[error("{path} has mode {mode:o}; secret files must not be readable by group or others")]
    InsecureFile { path: PathBuf, mode: u32 },
    #[error("certificate {path} names {found:?}, but this operator is configured as {expected:?}")]
    RoleMismatch { path: PathBuf, expected: String, found: String },
}

/// The 256-bit AES-GCM key that encrypts K, OPc, the OTA keys, XRES and signed profiles in
/// the store. Zeroizes on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StorageKey([u8; 32]);

impl StorageKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// 64 hex digits; the error does not echo the input.
    pub fn from_hex(s: &str) -> Result<Self, ConfigError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| ConfigError::Invalid {
            key: "store.key",
            reason: "the storage key must be 64 hexadecimal digits (32 bytes)".into(),
        })?;
        Ok(Self(bytes))
    }

    /// A fresh random key.
    pub fn random() -> Result<Self, ring::error::Unspecified> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// Reads a key file: 64 hex digits, mode 0600 or stricter.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_hex(&read_secret_file(path)?)
    }

    /// Writes a new random key file (mode 0600 from creation; an existing file is refused),
    /// as the CLI and the demo do before the first start.
    pub fn generate_file(path: &Path) -> Result<Self, ConfigError> {
        use std::io::Write;
        let key = Self::random().map_err(|_| ConfigError::Invalid {
            key: "store.key_file",
            reason: "no randomness available".into(),
        })?;
        let io = |source| ConfigError::Io { path: path.into(), source };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(key.0)));
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(key)
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageKey(…)")
    }
}

/// How this operator verifies EARs (`protocol::ear::EarVerifier`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EarSettings {
    /// Common names of the certificates (under the CI) allowed to sign EARs.
    pub signers: Vec<String>,
    /// Clock skew tolerated for the EAR's issue time.
    pub leeway: Duration,
}

/// A loaded and checked operator configuration.
#[derive(Debug)]
pub struct MnoConfig {
    /// The operator's name (`mno-a`, `acme-mobile`): the common name of its certificate.
    pub role: Role,
    pub listen: SocketAddr,
    /// PEM: this operator's certificate (then any intermediates).
    pub certificate: PathBuf,
    /// PEM: its PKCS#8 private key (TLS and profile signing).
    pub key: PathBuf,
    /// PEM: the CI root(s) every peer certificate and EAR signer must chain to.
    pub ci_root: PathBuf,
    /// The store (`store.path`): an SQLite file, created on first start, or a PostgreSQL
    /// database (`postgres://…`) that instances of this operator share, whose schema is
    /// created or migrated at start.
    pub database: storage::Location,
    pub storage_key: StorageKey,
    pub pool: PoolConfig,
    pub op: Op,
    pub amf: Amf,
    /// Peer operators by name (certificate common name) → base URL (`https://…`).
    pub peers: BTreeMap<String, String>,
    pub ear: EarSettings,
    pub profile_validity: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    role: String,
    listen: String,
    pki: RawPki,
    store: RawStore,
    subscribers: RawSubscribers,
    #[serde(default)]
    peers: BTreeMap<String, String>,
    #[serde(default)]
    ear: RawEar,
    #[serde(default)]
    profiles: RawProfiles,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPki {
    certificate: PathBuf,
    key: PathBuf,
    ci_root: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    /// An SQLite file (or a `postgres://` URL).
    #[serde(default)]
    path: Option<String>,
    /// A `postgres://` URL: the name the RO's and the PVA's configurations use too.
    #[serde(default)]
    database: Option<String>,
    key_file: Option<PathBuf>,
    key: Option<InlineSecret>,
}

/// A secret given inline in the file (tests): zeroized when dropped.
struct InlineSecret(Zeroizing<String>);

impl<'de> Deserialize<'de> for InlineSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(Zeroizing::new(String::deserialize(d)?)))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscribers {
    mcc: String,
    mnc: String,
    first_msin: String,
    count: u64,
    iccid_prefix: String,
    op: Option<InlineSecret>,
    op_file: Option<PathBuf>,
    #[serde(default = "default_amf")]
    amf: String,
}

fn default_amf() -> String {
    // AMF separation bit set (TS 33.102 Annex H / TS 33.401 §6.1.1), other bits zero.
    "8000".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEar {
    #[serde(default = "default_signers")]
    signers: Vec<String>,
    #[serde(default = "default_leeway")]
    leeway_secs: u64,
}

impl Default for RawEar {
    fn default() -> Self {
        Self { signers: default_signers(), leeway_secs: default_leeway() }
    }
}

fn default_signers() -> Vec<String> {
    vec![protocol::ear::DEFAULT_SIGNER.into()]
}

fn default_leeway() -> u64 {
    protocol::ear::DEFAULT_LEEWAY.as_secs()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProfiles {
    validity_secs: Option<u64>,
}

impl MnoConfig {
    /// Reads and checks a configuration file; relative paths are taken from its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_bounded(path)?;
        let text = String::from_utf8(text.to_vec())
            .map_err(|_| ConfigError::Parse { path: path.into(), reason: "not UTF-8".into() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base).map_err(|e| match e {
            ConfigError::Parse { reason, .. } => ConfigError::Parse { path: path.into(), reason },
            other => other,
        })
    }

    /// Parses a configuration; relative paths are taken from `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, ConfigError> {
        // The message and the line only: toml's Display quotes the offending line, which may
        // hold an inline secret.
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map_or(0, |s| text.get(..s.start).map_or(0, |t| t.matches('\n').count() + 1));
            ConfigError::Parse {
                path: PathBuf::from("(config)"),
                reason: format!("line {line}: {}", e.message()),
            }
        })?;
        let role = Role::operator(&raw.role).map_err(|_| {
            invalid(
                "role",
                "must be the operator's name: a DNS label (lower-case letters, digits, hyphens) \
                 other than pva, ro, ci and manufacturer, as in its certificate",
            )
        })?;
        let listen = raw
            .listen
            .parse()
            .map_err(|_| invalid("listen", "must be an address:port such as 127.0.0.1:8443"))?;
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };

        let storage_key = match (&raw.store.key_file, &raw.store.key) {
            (Some(file), None) => StorageKey::from_file(&resolve(file))?,
            (None, Some(inline)) => StorageKey::from_hex(&inline.0)?,
            _ => return Err(ConfigError::OneOf { a: "store.key_file", b: "store.key" }),
        };
        let s = &raw.subscribers;
        let op = match (&s.op_file, &s.op) {
            (Some(file), None) => Op::from_hex(&read_secret_file(&resolve(file))?),
            (None, Some(inline)) => Op::from_hex(&inline.0),
            _ => return Err(ConfigError::OneOf { a: "subscribers.op_file", b: "subscribers.op" }),
        }
        .map_err(|_| invalid("subscribers.op", "OP must be 32 hexadecimal digits (16 bytes)"))?;
        let mut amf = [0u8; 2];
        hex::decode_to_slice(&s.amf, &mut amf)
            .map_err(|_| invalid("subscribers.amf", "AMF must be 4 hexadecimal digits"))?;
        let pool = PoolConfig::new(&s.mcc, &s.mnc, &s.first_msin, s.count, &s.iccid_prefix)?;

        for (name, url) in &raw.peers {
            if name.parse::<Role>().is_err() {
                return Err(invalid("peers", &format!("{name:?} is not an operator name")));
            }
            if !url.starts_with("https://") {
                return Err(invalid(
                    "peers",
                    &format!("the URL of {name} must start with https://"),
                ));
            }
        }
        if raw.ear.signers.is_empty() {
            return Err(invalid("ear.signers", "name at least one EAR signer (e.g. \"pva\")"));
        }
        let validity =
            raw.profiles.validity_secs.map_or(DEFAULT_PROFILE_VALIDITY, Duration::from_secs);
        if validity.is_zero() {
            return Err(invalid("profiles.validity_secs", "must be positive"));
        }
        Ok(Self {
            role,
            listen,
            certificate: resolve(&raw.pki.certificate),
            key: resolve(&raw.pki.key),
            ci_root: resolve(&raw.pki.ci_root),
            database: match (&raw.store.path, &raw.store.database) {
                (Some(path), None) => storage::Location::parse(path, |p| resolve(&p)),
                (None, Some(url)) if storage::is_postgres_url(url) => {
                    storage::Location::Postgres(url.clone())
                }
                _ => {
                    return Err(ConfigError::OneOf {
                        a: "store.path",
                        b: "store.database (postgres://…)",
                    });
                }
            },
            storage_key,
            pool,
            op,
            amf: Amf(amf),
            peers: raw
                .peers
                .into_iter()
                .map(|(n, u)| (n, u.trim_end_matches('/').to_owned()))
                .collect(),
            ear: EarSettings {
                signers: raw.ear.signers,
                leeway: Duration::from_secs(raw.ear.leeway_secs),
            },
            profile_validity: validity,
        })
    }

    /// The operator's name: its role and its certificate's common name.
    pub fn name(&self) -> &str {
        self.role.name()
    }
}

fn invalid(key: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

pub(crate) fn read_bounded(path: &Path) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    use std::io::Read;
    let io = |source| ConfigError::Io { path: path.into(), source };
    let mut bytes = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(ConfigError::Parse {
            path: path.into(),
            reason: format!("larger than {MAX_FILE_LEN} bytes"),
        });
    }
    Ok(bytes)
}

/// A secret file: mode 0600 or stricter, UTF-8 text.
pub(crate) fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, ConfigError> {
    let meta =
        std::fs::metadata(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::InsecureFile { path: path.into(), mode });
    }
    let bytes = read_bounded(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ConfigError::Parse { path: path.into(), reason: "not UTF-8 text".into() })?;
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INLINE: &str = r#"
        role = "mno-b"
        listen = "127.0.0.1:0"
        [pki]
        certificate = "pki/mno-b.pem"
        key = "pki/mno-b.key"
        ci_root = "pki/ci.pem"
        [store]
        path = "mno-b.sqlite"
        key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        [subscribers]
        mcc = "001"
        mnc = "02"
        first_msin = "0000000001"
        count = 100
        iccid_prefix = "8900102"
        op = "cdc202d5123e20f62b6d676ac72cb318"
        [peers]
        mno-a = "https://localhost:8441/"
    "#;

    #[test]
    fn inline_configuration_loads_with_defaults() {
        let c = MnoConfig::from_toml(INLINE, Path::new("/etc/tresor")).unwrap();
        assert_eq!(c.name(), "mno-b");
        assert_eq!(c.database.file(), Some(Path::new("/etc/tresor/mno-b.sqlite")));
        assert_eq!(c.peers["mno-a"], "https://localhost:8441");
        assert_eq!(c.amf, Amf([0x80, 0x00]));
        assert_eq!(c.ear.signers, ["pva"]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("0001020304"), "{shown}");
        assert!(!shown.contains("cdc202"), "{shown}");
    }

    #[test]
    fn the_store_may_be_a_postgres_database_whose_password_is_never_shown() {
        let url = "postgres://mno:hunter2@db.example:5432/mno_b";
        let text = INLINE.replace("path = \"mno-b.sqlite\"", &format!("path = \"{url}\""));
        let c = MnoConfig::from_toml(&text, Path::new("/etc/tresor")).unwrap();
        assert_eq!(c.database, storage::Location::Postgres(url.into()));
        let shown = format!("{c:?} {}", c.database);
        assert!(!shown.contains("hunter2"), "{shown}");
        // `database`, as the RO and the PVA name it, is the same; both at once are refused.
        let named = INLINE.replace("path = \"mno-b.sqlite\"", &format!("database = \"{url}\""));
        let c = MnoConfig::from_toml(&named, Path::new("/etc/tresor")).unwrap();
        assert_eq!(c.database, storage::Location::Postgres(url.into()));
        let both = INLINE
            .replace("path = \"mno-b.sqlite\"", &format!("path = \"x\"\ndatabase = \"{url}\""));
        assert!(MnoConfig::from_toml(&both, Path::new("/etc/tresor")).is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let extra = INLINE.replace("[peers]", "colour = \"red\"\n[peers]");
        assert!(matches!(
            MnoConfig::from_toml(&extra, Path::new(".")),
            Err(ConfigError::Parse { .. })
        ));
        let ro = INLINE.replace("role = \"mno-b\"", "role = \"ro\"");
        assert!(matches!(
            MnoConfig::from_toml(&ro, Path::new(".")),
            Err(ConfigError::Invalid { key: "role", .. })
        ));
        let http = INLINE.replace("https://localhost", "http://localhost");
        assert!(matches!(
            MnoConfig::from_toml(&http, Path::new(".")),
            Err(ConfigError::Invalid { key: "peers", .. })
        ));
        let short = INLINE.replace("1e1f\"", "\"");
        let err = MnoConfig::from_toml(&short, Path::new(".")).unwrap_err();
        assert!(!err.to_string().contains("0001020304"));
    }

    #[test]
    fn any_operator_name_but_another_roles_is_an_operator() {
        let acme = INLINE.replace("role = \"mno-b\"", "role = \"acme-mobile\"");
        assert_eq!(MnoConfig::from_toml(&acme, Path::new(".")).unwrap().name(), "acme-mobile");
        for bad in ["pva", "ci", "manufacturer", "ACME", "acme_mobile", ""] {
            let text = INLINE.replace("role = \"mno-b\"", &format!("role = \"{bad}\""));
            assert!(
                matches!(
                    MnoConfig::from_toml(&text, Path::new(".")),
                    Err(ConfigError::Invalid { key: "role", .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn key_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let key = StorageKey::generate_file(&path).unwrap();
        assert_eq!(StorageKey::from_file(&path).unwrap().expose(), key.expose());
        assert!(StorageKey::generate_file(&path).is_err(), "never overwrites a key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(StorageKey::from_file(&path), Err(ConfigError::InsecureFile { .. })));
    }
}
