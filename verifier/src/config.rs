//! The PVA's configuration file (TOML, `docs/pva-api.md` §Configuration). Relative paths
//! are resolved against the directory of the file. Every key is checked at start-up; a
//! missing signing key, TLS identity, manufacturer root or policy stops the PVA.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use protocol::ear::EarProfile;
use protocol::role::Role;
use serde::Deserialize;

use crate::error::Error;
use crate::pva::ClockTolerance;

/// How the PVA's TLS server treats client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Certificates under `client_ca` are verified when offered (RO, MNOs); devices connect
    /// without one and authenticate by attestation.
    #[default]
    Optional,
    /// Only clients with a certificate under `client_ca` (a PVA reached only through the RO).
    Required,
    /// No client certificates.
    None,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database: String,
    tls_certificate: PathBuf,
    tls_key: PathBuf,
    #[serde(default)]
    client_ca: Option<PathBuf>,
    #[serde(default)]
    client_auth: ClientAuth,
    signing_certificate: PathBuf,
    signing_key: PathBuf,
    manufacturer_roots: PathBuf,
    policies: Vec<PathBuf>,
    #[serde(default)]
    default_policy: Option<String>,
    #[serde(default = "default_nonce_ttl")]
    nonce_ttl_seconds: u64,
    #[serde(default = "default_enrolment_ttl")]
    enrolment_ttl_seconds: u64,
    #[serde(default = "default_max_outstanding")]
    max_outstanding_challenges: u32,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    ear_profile: EarProfile,
    #[serde(default)]
    open_enrolment: bool,
    #[serde(default)]
    ek_allow_list: Option<PathBuf>,
    #[serde(default = "default_enrol_roles")]
    enrol_roles: Vec<String>,
    #[serde(default = "default_clock_drift")]
    clock_drift_percent: u8,
    #[serde(default = "default_clock_slack")]
    clock_slack_ms: u64,
}

fn default_nonce_ttl() -> u64 {
    crate::nonce::DEFAULT_TTL.as_secs()
}
fn default_enrolment_ttl() -> u64 {
    300
}
fn default_max_outstanding() -> u32 {
    crate::nonce::DEFAULT_MAX_OUTSTANDING
}
fn default_enrol_roles() -> Vec<String> {
    crate::pva::EnrolmentAccess::default().roles.iter().map(ToString::to_string).collect()
}
fn default_clock_drift() -> u8 {
    ClockTolerance::default().drift_percent
}
fn default_clock_slack() -> u64 {
    u64::try_from(ClockTolerance::default().slack.as_millis()).unwrap_or(u64::MAX)
}

/// A checked configuration with absolute paths.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file this configuration was loaded from (policy reloads read it again).
    pub source: Option<PathBuf>,
    /// The store: an SQLite file, created on first start, or a `postgres://` URL of the
    /// database that several PVA instances share (its schema created or migrated at start).
    pub database: storage::Location,
    /// TLS server certificate chain (PEM) and key.
    pub tls_certificate: PathBuf,
    pub tls_key: PathBuf,
    /// Roots for client certificates (the CI root).
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// EAR signing certificate chain (PEM, PVA first) and PKCS#8 key.
    pub signing_certificate: PathBuf,
    pub signing_key: PathBuf,
    /// Directory of TPM manufacturer root certificates (PEM/DER files).
    pub manufacturer_roots: PathBuf,
    /// Reference-values files; each is one appraisal policy.
    pub policies: Vec<PathBuf>,
    /// The policy id used when a challenge names none; may be omitted with one policy.
    pub default_policy: Option<String>,
    pub nonce_ttl: Duration,
    pub enrolment_ttl: Duration,
    pub max_outstanding_challenges: u32,
    /// Socket address for `tresor` to bind (the library takes a listener instead).
    pub listen: Option<String>,
    /// The encoding of the EARs this PVA signs: `ietf` (draft-ietf-rats-ear-04, the
    /// default) or `veraison` (draft-ietf-rats-ear-00, for relying parties that speak only
    /// Veraison's profile). tresor's relying parties read both.
    pub ear_profile: EarProfile,
    /// Enrolment for anyone, also without a client certificate (default: off).
    pub open_enrolment: bool,
    /// EK names admitted without an EK certificate (`verifier::ek_allow`); none by default.
    pub ek_allow_list: Option<PathBuf>,
    /// Otherwise the roles (of client certificates) that may enrol devices.
    pub enrol_roles: Vec<Role>,
    /// How far a running TPM's clock may lag the wall time (`docs/appraisal.md` "Clock").
    pub clock: ClockTolerance,
}

impl Config {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let mut config = Self::from_toml(&text, base)?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Parses configuration text whose relative paths are relative to `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, Error> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        if !(1..=3600).contains(&raw.nonce_ttl_seconds) {
            return Err(Error::Config("nonce_ttl_seconds must be 1 to 3600".into()));
        }
        if !(1..=86_400).contains(&raw.enrolment_ttl_seconds) {
            return Err(Error::Config("enrolment_ttl_seconds must be 1 to 86400".into()));
        }
        if raw.max_outstanding_challenges == 0 || raw.max_outstanding_challenges > 1024 {
            return Err(Error::Config("max_outstanding_challenges must be 1 to 1024".into()));
        }
        if raw.policies.is_empty() {
            return Err(Error::Config("no policies configured".into()));
        }
        if raw.client_auth != ClientAuth::None && raw.client_ca.is_none() {
            return Err(Error::Config("client_auth needs client_ca (the CI root)".into()));
        }
        if !raw.open_enrolment
            && (raw.client_auth == ClientAuth::None || raw.enrol_roles.is_empty())
        {
            return Err(Error::Config(
                "enrolment needs client certificates (client_auth optional or required) and \
                 enrol_roles, or open_enrolment = true"
                    .into(),
            ));
        }
        let enrol_roles = raw
            .enrol_roles
            .iter()
            .map(|r| r.parse::<Role>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("enrol_roles: {e} (roles: pva, ro, operator)")))?;
        if raw.clock_drift_percent > 50 {
            return Err(Error::Config("clock_drift_percent must be 0 to 50".into()));
        }
        if raw.clock_slack_ms > 600_000 {
            return Err(Error::Config("clock_slack_ms must be 0 to 600000".into()));
        }
        Ok(Self {
            source: None,
            database: storage::Location::parse(&raw.database, abs),
            tls_certificate: abs(raw.tls_certificate),
            tls_key: abs(raw.tls_key),
            client_ca: raw.client_ca.map(abs),
            client_auth: raw.client_auth,
            signing_certificate: abs(raw.signing_certificate),
            signing_key: abs(raw.signing_key),
            manufacturer_roots: abs(raw.manufacturer_roots),
            policies: raw.policies.into_iter().map(abs).collect(),
            default_policy: raw.default_policy,
            nonce_ttl: Duration::from_secs(raw.nonce_ttl_seconds),
            enrolment_ttl: Duration::from_secs(raw.enrolment_ttl_seconds),
            max_outstanding_challenges: raw.max_outstanding_challenges,
            listen: raw.listen,
            ear_profile: raw.ear_profile,
            open_enrolment: raw.open_enrolment,
            ek_allow_list: raw.ek_allow_list.map(abs),
            enrol_roles,
            clock: ClockTolerance {
                drift_percent: raw.clock_drift_percent,
                slack: Duration::from_millis(raw.clock_slack_ms),
            },
        })
    }

    /// The rustls server configuration for the PVA's HTTPS service.
    pub fn tls(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        let identity = transport::Identity::from_pem_files(&self.tls_certificate, &self.tls_key)?;
        let roots = match &self.client_ca {
            Some(path) => transport::tls::roots_from_pem_file(path)?,
            None => Vec::new(),
        };
        let auth = match self.client_auth {
            ClientAuth::None => transport::ClientAuth::None,
            ClientAuth::Optional => transport::ClientAuth::Optional(roots),
            ClientAuth::Required => transport::ClientAuth::Required(roots),
        };
        Ok(transport::server_config(&identity, auth)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
database = "pva.sqlite"
tls_certificate = "pki/pva.pem"
tls_key = "pki/pva.key"
client_ca = "pki/ci.pem"
signing_certificate = "pki/pva.pem"
signing_key = "pki/pva.key"
manufacturer_roots = "manufacturers"
policies = ["policy.toml"]
"#;

    #[test]
    fn resolves_paths_and_applies_defaults() {
        let c = Config::from_toml(MINIMAL, Path::new("/etc/tresor")).unwrap();
        assert_eq!(c.database.file(), Some(Path::new("/etc/tresor/pva.sqlite")));
        let url = "postgres://pva:secret@db/pva";
        let shared = MINIMAL.replace("\"pva.sqlite\"", &format!("\"{url}\""));
        let c = Config::from_toml(&shared, Path::new("/etc/tresor")).unwrap();
        assert_eq!(c.database, storage::Location::Postgres(url.into()));
        assert!(!format!("{c:?}").contains("secret"), "the password is never printed");
        assert_eq!(c.policies, [Path::new("/etc/tresor/policy.toml")]);
        assert_eq!(c.nonce_ttl, Duration::from_secs(60));
        assert_eq!(c.client_auth, ClientAuth::Optional);
        assert_eq!(c.ear_profile, EarProfile::Ietf);
        assert!(!c.open_enrolment);
        assert_eq!(c.enrol_roles, [Role::Ro, Role::Operator]);
        assert_eq!(c.clock, ClockTolerance::default());
        let open = format!("{MINIMAL}open_enrolment = true\nenrol_roles = [\"ro\"]\n");
        let c = Config::from_toml(&open, Path::new("/")).unwrap();
        assert!(c.open_enrolment);
        assert_eq!(c.enrol_roles, [Role::Ro]);
        let wrong = format!("{MINIMAL}enrol_roles = [\"mno-a\"]\n");
        let e = Config::from_toml(&wrong, Path::new("/")).unwrap_err().to_string();
        assert!(e.contains("enrol_roles") && e.contains("mno-a"), "{e}");
    }

    #[test]
    fn the_ear_profile_is_a_setting() {
        for (text, profile) in [("ietf", EarProfile::Ietf), ("veraison", EarProfile::Veraison)] {
            let c =
                Config::from_toml(&format!("{MINIMAL}ear_profile = \"{text}\"\n"), Path::new("/"))
                    .unwrap();
            assert_eq!(c.ear_profile, profile);
        }
        for bad in ["\"IETF\"", "\"draft-00\"", "1"] {
            let text = format!("{MINIMAL}ear_profile = {bad}\n");
            assert!(Config::from_toml(&text, Path::new("/")).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_bad_settings() {
        for (from, to) in [
            ("policies = [\"policy.toml\"]", "policies = []"),
            ("database", "databse"),
            ("client_ca = \"pki/ci.pem\"\n", ""),
        ] {
            assert!(Config::from_toml(&MINIMAL.replace(from, to), Path::new("/")).is_err(), "{to}");
        }
        let long = format!("{MINIMAL}nonce_ttl_seconds = 0\n");
        assert!(Config::from_toml(&long, Path::new("/")).is_err());
        let no_signing_key = MINIMAL.replace("signing_key = \"pki/pva.key\"\n", "");
        assert!(Config::from_toml(&no_signing_key, Path::new("/")).is_err());
        // Enrolment closed to everyone, by mistake: refused at start.
        for closed in ["client_auth = \"none\"\n", "enrol_roles = []\n"] {
            let text = format!("{MINIMAL}{closed}");
            assert!(Config::from_toml(&text, Path::new("/")).is_err(), "{closed}");
            let open = format!("{text}open_enrolment = true\n");
            assert!(Config::from_toml(&open, Path::new("/")).is_ok(), "{closed}");
        }
        for bad in ["clock_drift_percent = 51\n", "clock_slack_ms = 600001\n"] {
            assert!(Config::from_toml(&format!("{MINIMAL}{bad}"), Path::new("/")).is_err());
        }
    }
}
