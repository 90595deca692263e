//! The RO's configuration file (TOML); `examples/ro.toml` is a commented example.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::RoError;

/// Where the RO listens, what it stores, and whom it talks to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoConfig {
    /// Listen address, e.g. `127.0.0.1:8443`.
    pub listen: String,
    pub pki: PkiPaths,
    pub store: StorePath,
    /// Base URLs of the other roles.
    pub peers: Peers,
    /// How long a device's task request may wait for work (long poll).
    #[serde(default = "default_poll_ms")]
    pub poll_timeout_ms: u64,
    /// How long a step may keep failing transiently (a peer down, a full disk) before the
    /// device's change — or a campaign's creation — is abandoned, safely.
    #[serde(default = "default_step_deadline")]
    pub step_deadline_secs: u64,
    /// How long a call to a peer may take before it counts as failed (and is retried).
    #[serde(default = "default_peer_timeout")]
    pub peer_timeout_ms: u64,
    /// Admission control (`ro::admission`): at most this many devices between their first
    /// step and their final state at once; the others wait, `pending`, their long polls
    /// answered `idle`. 0: no bound.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u64,
    /// Receivers of campaign events (`ro::events`): each gets every device transition and
    /// campaign end, signed, from the outbox.
    #[serde(default)]
    pub webhooks: Vec<super::webhooks::WebhookConfig>,
}

/// The RO's certificate and key (TLS server and client), the CI root every peer chains to,
/// and the TPM manufacturer root(s) the DRF checks EK certificates against.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkiPaths {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub ci_root: PathBuf,
    /// A PEM file or a directory of PEM files.
    pub manufacturer_roots: PathBuf,
}

/// Where campaigns and device states are kept: `path`, an SQLite file created on first
/// start (one RO), or `database`, a `postgres://` URL of the database several RO instances
/// share (issue 15). Exactly one of the two.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorePath {
    #[serde(default)]
    pub path: PathBuf,
    #[serde(default)]
    pub database: Option<storage::Location>,
}

impl StorePath {
    /// The store as configured.
    pub fn location(&self) -> storage::Location {
        match &self.database {
            Some(database) => database.clone(),
            None => storage::Location::File(self.path.clone()),
        }
    }
}

/// Base URLs (https://host:port) of the PVA and of every operator, by name: `pva = "…"`, and
/// one `<operator> = "…"` per operator (`mno-a`, `acme-mobile`, …), at least two. Campaigns
/// move devices between these operators only, and only they may create campaigns.
#[derive(Debug, Clone, Deserialize)]
pub struct Peers {
    pub pva: String,
    #[serde(flatten)]
    pub operators: std::collections::BTreeMap<String, String>,
}

fn default_poll_ms() -> u64 {
    20_000
}

fn default_step_deadline() -> u64 {
    300
}

fn default_peer_timeout() -> u64 {
    30_000
}

fn default_max_in_flight() -> u64 {
    256
}

impl RoConfig {
    pub fn load(path: &Path) -> Result<Self, RoError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RoError::Config(format!("{}: {e}", path.display())))?;
        let mut config: Self = toml::from_str(&text)
            .map_err(|e| RoError::Config(format!("{}: {e}", path.display())))?;
        // Relative paths are relative to the configuration file, not to the working directory.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.pki.certificate,
            &mut config.pki.key,
            &mut config.pki.ci_root,
            &mut config.pki.manufacturer_roots,
            &mut config.store.path,
        ]
        .into_iter()
        .chain(
            config
                .webhooks
                .iter_mut()
                .flat_map(|w| std::iter::once(&mut w.secret_file).chain(w.ca_file.as_mut())),
        ) {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), RoError> {
        match (&self.store.database, self.store.path.as_os_str().is_empty()) {
            (Some(storage::Location::Postgres(_)), true) | (None, false) => {}
            (Some(storage::Location::File(_)), _) => {
                return Err(RoError::Config(
                    "store.database: a postgres:// URL (an SQLite file is store.path)".into(),
                ));
            }
            (Some(_), false) => {
                return Err(RoError::Config("store: path or database, not both".into()));
            }
            (None, true) => {
                return Err(RoError::Config("store: path or database is missing".into()));
            }
        }
        for name in self.peers.operators.keys() {
            if crate::pki::Role::operator(name).is_err() {
                return Err(RoError::Config(format!(
                    "peers.{name}: not an operator name (a DNS label other than pva, ro, ci and \
                     manufacturer)"
                )));
            }
        }
        if self.peers.operators.len() < 2 {
            return Err(RoError::Config(
                "peers must name at least two operators besides pva (a campaign moves devices \
                 from one to another)"
                    .into(),
            ));
        }
        let urls = self.peers.operators.iter().map(|(name, url)| (name.as_str(), url));
        for (name, url) in std::iter::once(("pva", &self.peers.pva)).chain(urls) {
            if !url.starts_with("https://") {
                return Err(RoError::Config(format!(
                    "peers.{name} must be an https:// URL, not {url:?}"
                )));
            }
        }
        if self.poll_timeout_ms == 0 || self.poll_timeout_ms > 120_000 {
            return Err(RoError::Config("poll_timeout_ms must be 1..=120000".into()));
        }
        if !(100..=600_000).contains(&self.peer_timeout_ms) {
            return Err(RoError::Config("peer_timeout_ms must be 100..=600000".into()));
        }
        if self.step_deadline_secs == 0 || self.step_deadline_secs > 7 * 24 * 3600 {
            return Err(RoError::Config("step_deadline_secs must be 1..=604800".into()));
        }
        Ok(())
    }

    pub fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.peer_timeout_ms)
    }

    pub fn step_deadline(&self) -> Duration {
        Duration::from_secs(self.step_deadline_secs)
    }

    pub fn poll_timeout(&self) -> Duration {
        Duration::from_millis(self.poll_timeout_ms)
    }

    /// The base URL of an operator by its name.
    pub fn operator_url(&self, name: &str) -> Option<&str> {
        self.peers.operators.get(name).map(String::as_str)
    }

    /// The operators' names, sorted.
    pub fn operators(&self) -> impl Iterator<Item = &str> {
        self.peers.operators.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(peers: &str) -> Result<RoConfig, RoError> {
        config_with_store("path = \"ro.sqlite\"", peers)
    }

    fn config_with_store(store: &str, peers: &str) -> Result<RoConfig, RoError> {
        let text = format!(
            "listen = \"127.0.0.1:0\"\n[pki]\ncertificate = \"ro.pem\"\nkey = \"ro.key\"\n\
             ci_root = \"ci.pem\"\nmanufacturer_roots = \"m\"\n[store]\n{store}\n\
             [peers]\npva = \"https://localhost:1\"\n{peers}"
        );
        let config: RoConfig = toml::from_str(&text).map_err(|e| RoError::Config(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    #[test]
    fn the_store_is_a_file_or_a_postgres_database_never_both() {
        let peers = "mno-a = \"https://localhost:2\"\nmno-b = \"https://localhost:3\"";
        let file = config(peers).unwrap();
        assert_eq!(file.store.location(), storage::Location::File("ro.sqlite".into()));
        let url = "postgres://ro:secret@db/ro";
        let shared = config_with_store(&format!("database = \"{url}\""), peers).unwrap();
        assert_eq!(shared.store.location(), storage::Location::Postgres(url.into()));
        assert!(!format!("{shared:?}").contains("secret"), "the password is never printed");
        let refused = |store: &str| config_with_store(store, peers).unwrap_err().to_string();
        assert!(
            refused(&format!("path = \"ro.sqlite\"\ndatabase = \"{url}\"")).contains("not both")
        );
        assert!(refused("database = \"ro.sqlite\"").contains("postgres:// URL"));
        assert!(refused("").contains("missing"));
    }

    #[test]
    fn operators_are_every_peer_but_the_pva() {
        let c = config(
            "mno-a = \"https://localhost:2/\"\nacme-mobile = \"https://localhost:3\"\n\
             op7 = \"https://localhost:4\"",
        )
        .unwrap();
        assert_eq!(c.operators().collect::<Vec<_>>(), ["acme-mobile", "mno-a", "op7"]);
        assert_eq!(c.operator_url("acme-mobile"), Some("https://localhost:3"));
        assert_eq!(c.operator_url("pva"), None, "the PVA is not an operator");
        assert_eq!(c.operator_url("mno-b"), None);
    }

    #[test]
    fn fewer_than_two_operators_bad_names_and_plain_http_are_refused() {
        let refused = |peers: &str| config(peers).unwrap_err().to_string();
        assert!(refused("mno-a = \"https://localhost:2\"").contains("at least two operators"));
        for bad in ["ro", "ci", "Mno-A", "mno_a"] {
            let e = refused(&format!(
                "mno-a = \"https://localhost:2\"\n{bad} = \"https://localhost:3\""
            ));
            assert!(e.contains("not an operator name"), "{bad}: {e}");
        }
        let e = refused("mno-a = \"https://localhost:2\"\nmno-b = \"http://localhost:3\"");
        assert!(e.contains("peers.mno-b must be an https:// URL"), "{e}");
        assert!(refused("mno-a = \"https://localhost:2\"\nmno-b = 7").contains("invalid type"));
    }
}
