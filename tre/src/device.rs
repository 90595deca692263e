//! A device as its own process (`tresor device run --config FILE`): the configuration file
//! names its swtpm state, its UICC state, its software image and its RO; running it starts
//! the swtpm, measures the image (measured boot), opens the card and runs the agent until
//! the campaign is done for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::x509::{TrustAnchors, certificates_from_pem};
use serde::Deserialize;

use crate::agent::{Agent, AgentConfig, Outcome};
use crate::attester::{Attester, AttesterOptions};
use crate::error::{Error, Result};
use crate::swtpm::{Swtpm, SwtpmConfig};
use crate::tpm::{KeyAlg, Tpm};

/// `examples/device.toml` is a commented example.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Base URL of the RO.
    pub ro: String,
    /// PEM file of the CI root the device trusts (RO's TLS, operator signatures).
    pub ci_root: PathBuf,
    /// The device's software image (a directory with `manifest.toml`).
    pub image: PathBuf,
    /// Where to keep evidence, EAR, bundle and receipt for inspection (optional).
    #[serde(default)]
    pub artifacts: Option<PathBuf>,
    /// Give up after this long without a final state.
    #[serde(default = "default_deadline")]
    pub deadline_secs: u64,
    /// The fallback timer: how long a new profile runs on trial without the RO's commit
    /// before the card restores the old one.
    #[serde(default = "default_fallback")]
    pub fallback_secs: u64,
    pub tpm: TpmSection,
    pub uicc: UiccSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmSection {
    /// swtpm state directory; the device starts its own swtpm on it.
    pub state: PathBuf,
    /// EK and AK algorithm: `ecc` (default) or `rsa`.
    #[serde(default)]
    pub ek: KeyAlg,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiccSection {
    /// The card's state file (`tresor uicc new`, or manufacturing).
    pub state: PathBuf,
}

fn default_deadline() -> u64 {
    600
}

fn default_fallback() -> u64 {
    600
}

impl DeviceConfig {
    /// Reads a configuration; relative paths are taken from its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Config(format!("{}: {reason}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut config: Self = toml::from_str(&text).map_err(|e| bad(e.message().to_owned()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut paths = vec![
            &mut config.ci_root,
            &mut config.image,
            &mut config.tpm.state,
            &mut config.uicc.state,
        ];
        if let Some(artifacts) = config.artifacts.as_mut() {
            paths.push(artifacts);
        }
        for p in paths {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if !config.ro.starts_with("https://") {
            return Err(bad(format!("ro must be an https:// URL, not {:?}", config.ro)));
        }
        Ok(config)
    }

    /// The agent's part of the configuration.
    pub fn agent_config(&self) -> Result<AgentConfig> {
        let pem = std::fs::read(&self.ci_root)
            .map_err(|e| Error::Config(format!("{}: {e}", self.ci_root.display())))?;
        let ci_roots =
            TrustAnchors::from_pem(&pem).map_err(|e| Error::Config(format!("CI root: {e}")))?;
        let ci_roots_der =
            certificates_from_pem(&pem).map_err(|e| Error::Config(format!("CI root: {e}")))?;
        Ok(AgentConfig {
            ro_url: self.ro.trim_end_matches('/').to_owned(),
            ci_roots,
            ci_roots_der,
            deadline: Duration::from_secs(self.deadline_secs),
            fallback: Duration::from_secs(self.fallback_secs),
            journal: crate::journal::journal_path(&self.uicc.state),
            artifacts: self.artifacts.clone(),
        })
    }
}

/// Powers the device on and runs its agent to the end of its campaign.
pub async fn run(config: &DeviceConfig) -> Result<Outcome> {
    let swtpm = Swtpm::start_owned(&config.tpm.state, &SwtpmConfig::load()?)?;
    if swtpm.recover_clock()? {
        tracing::warn!(state = %config.tpm.state.display(), "the TPM was not shut down in order (power loss); its clock was set forward to be safe again");
    }
    let tpm = Tpm::connect(&swtpm.tcti())?;
    let options = AttesterOptions { ek_alg: config.tpm.ek, ..Default::default() };
    let attester = Attester::boot(tpm, &config.image, options)?;
    let card = uicc::Card::open(&config.uicc.state).map_err(|e| Error::Uicc(e.to_string()))?;
    let mut agent = Agent::new(attester, card, config.agent_config()?)?;
    let outcome = agent.run().await;
    // The agent (and its TPM connection) goes first, so the swtpm can shut down in order.
    drop(agent);
    drop(swtpm);
    outcome
}
