//! Campaign events for device-management stacks (`docs/campaigns.md`, "Events"): every
//! device transition and every campaign's end, as JSON documents with a unique `id`.
//!
//! Webhooks: each event is written to the outbox once per configured webhook, in the same
//! transaction as the state change it reports (`Ro::transition`), so an event is never lost
//! and never sent for a change that did not happen. The outbox delivers it with its backoff
//! until the receiver answers 2xx; a 4xx other than 408 and 429 keeps it as dead. Each
//! delivery is signed with HMAC-SHA256 under the webhook's secret, over the timestamp and the
//! body (header [`SIGNATURE_HEADER`]: `t=<unix seconds>,v1=<hex>`); a receiver checks the
//! signature, refuses old timestamps, and drops an `id` it has seen, since a delivery whose
//! acknowledgement was lost is repeated: at least once from here, exactly once in effect.
//!
//! The same events feed the Server-Sent Events stream of `GET /v1/events` (memory only: a
//! live view; the webhooks are the durable channel).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::DeviceId;
use ring::hmac;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::RoError;
use super::metrics::{StateLabel, StepLabel};
use super::state::DeviceState;
use super::store::{DeviceRow, OutboxMessage};

/// Header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." ‖ body)>`.
pub const SIGNATURE_HEADER: &str = "tresor-webhook-signature";
/// Header carrying the event's `id` (also in the body).
pub const ID_HEADER: &str = "tresor-webhook-id";
/// The outbox's peer name of a webhook is this prefix and the webhook's name.
pub(crate) const PEER_PREFIX: &str = "webhook:";
/// Shortest secret accepted: 32 bytes, as an HMAC-SHA256 key should be.
const MIN_SECRET_LEN: usize = 32;

/// `[[webhooks]]` in the RO's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A name for logs and the outbox (letters, digits, hyphens).
    pub name: String,
    /// `https://…`, or `http://` to a loopback address only.
    pub url: String,
    /// File of mode 0600 holding the HMAC secret (at least 32 bytes; surrounding whitespace
    /// is ignored).
    pub secret_file: PathBuf,
    /// PEM roots the `https://` receiver's certificate chains to (required for https).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// What happened: a device moved, or a campaign ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// A device's change moved from one state to another (`docs/flow.md`, RO states).
    DeviceTransition {
        id: String,
        campaign: String,
        device_id: DeviceId,
        from: String,
        to: String,
        /// The new state is final: `switched` or `rolled-back`.
        #[serde(rename = "final")]
        is_final: bool,
        at_ms: u64,
    },
    /// Every device of the campaign is final (`completed`) or the campaign ended otherwise
    /// (`cancelled`, `failed`).
    CampaignFinished {
        id: String,
        campaign: String,
        state: String,
        switched: u32,
        rolled_back: u32,
        at_ms: u64,
    },
}

impl Event {
    pub fn id(&self) -> &str {
        match self {
            Event::DeviceTransition { id, .. } | Event::CampaignFinished { id, .. } => id,
        }
    }

    pub fn campaign(&self) -> &str {
        match self {
            Event::DeviceTransition { campaign, .. } | Event::CampaignFinished { campaign, .. } => {
                campaign
            }
        }
    }

    /// A device transition; its id is unique because a device enters a state at most once
    /// per millisecond.
    pub fn transition(
        campaign: &str,
        device: &DeviceId,
        from: &str,
        to: &str,
        is_final: bool,
        at_ms: u64,
    ) -> Self {
        Event::DeviceTransition {
            id: format!("{campaign}/{}/{to}/{at_ms}", device.to_hex()),
            campaign: campaign.to_owned(),
            device_id: device.clone(),
            from: from.to_owned(),
            to: to.to_owned(),
            is_final,
            at_ms,
        }
    }

    /// A campaign's end; a campaign ends once.
    pub fn finished(campaign: &str, state: &str, switched: u32, rolled_back: u32) -> Self {
        Event::CampaignFinished {
            id: format!("{campaign}/{state}"),
            campaign: campaign.to_owned(),
            state: state.to_owned(),
            switched,
            rolled_back,
            at_ms: now_ms(),
        }
    }

    /// The outbox messages that deliver this event to every webhook.
    pub(crate) fn messages(&self, webhooks: &Webhooks) -> Result<Vec<OutboxMessage>, RoError> {
        if webhooks.hooks.is_empty() {
            return Ok(Vec::new());
        }
        let body = serde_json::to_vec(self).map_err(|e| RoError::Store(e.to_string()))?;
        let device_id = match self {
            Event::DeviceTransition { device_id, .. } => Some(device_id.clone()),
            Event::CampaignFinished { .. } => None,
        };
        Ok(webhooks
            .hooks
            .iter()
            .map(|hook| OutboxMessage {
                key: format!("event/{}/{}", hook.name, self.id()),
                peer: format!("{PEER_PREFIX}{}", hook.name),
                path: String::new(),
                body: body.clone(),
                missing_ok: false,
                campaign_id: self.campaign().to_owned(),
                device_id: device_id.clone(),
            })
            .collect())
    }
}

/// The configured webhooks, each with its secret and HTTPS client.
#[derive(Default)]
pub(crate) struct Webhooks {
    hooks: Vec<Webhook>,
}

struct Webhook {
    name: String,
    url: String,
    key: hmac::Key,
    client: reqwest::Client,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.hooks.iter().map(|h| h.name.as_str()).collect();
        f.debug_struct("Webhooks").field("names", &names).finish_non_exhaustive()
    }
}

impl Webhooks {
    pub(crate) fn load(configs: &[WebhookConfig], timeout: Duration) -> Result<Self, RoError> {
        let bad = |name: &str, reason: String| RoError::Config(format!("webhook {name}: {reason}"));
        let mut hooks = Vec::new();
        for c in configs {
            if !protocol::role::valid_name(&c.name)
                || hooks.iter().any(|h: &Webhook| h.name == c.name)
            {
                return Err(bad(&c.name, "a name must be a unique lower-case DNS label".into()));
            }
            check_url(&c.url).map_err(|r| bad(&c.name, r))?;
            let secret = read_secret(&c.secret_file).map_err(|r| bad(&c.name, r))?;
            let client = if c.url.starts_with("https://") {
                let ca = c.ca_file.as_ref().ok_or_else(|| {
                    bad(&c.name, "an https:// webhook needs ca_file, the receiver's roots".into())
                })?;
                let roots = transport::tls::roots_from_pem_file(ca)
                    .map_err(|e| bad(&c.name, format!("{}: {e}", ca.display())))?;
                transport::client::client_builder(&roots, None, &transport::ServerRole::Outside)
                    .map_err(|e| bad(&c.name, e.to_string()))?
            } else {
                let tls = transport::tls::trust_nothing_config()
                    .map_err(|e| bad(&c.name, e.to_string()))?;
                reqwest::Client::builder().use_preconfigured_tls(tls).no_proxy()
            }
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| bad(&c.name, e.to_string()))?;
            hooks.push(Webhook {
                name: c.name.clone(),
                url: c.url.clone(),
                key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
                client,
            });
        }
        Ok(Self { hooks })
    }

    /// Posts one outbox message to its webhook, signed.
    pub(crate) async fn deliver(&self, peer: &str, body: &[u8], id: &str) -> Result<(), RoError> {
        let name = peer.strip_prefix(PEER_PREFIX).unwrap_or(peer);
        let unreachable = |detail: String| RoError::PeerUnreachable { peer: peer.into(), detail };
        let hook = self
            .hooks
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| unreachable("no such webhook is configured any more".into()))?;
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let response = hook
            .client
            .post(&hook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(ID_HEADER, id)
            .header(SIGNATURE_HEADER, signature(&hook.key, t, body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let code = status.as_u16();
        if status.is_client_error() && code != 408 && code != 429 {
            return Err(RoError::PeerRefused {
                peer: peer.into(),
                status: code,
                problem_type: String::new(),
                detail: format!("webhook answered {status}"),
            });
        }
        Err(unreachable(format!("webhook answered {status}")))
    }
}

impl super::Ro {
    /// Moves a device to `state` (`RoStore::transition`) with the events it causes queued
    /// for the webhooks in the same transaction; then counts it, logs it, and publishes it
    /// on the event stream. `completed` are the steps that brought it there, timed from
    /// when the device entered its previous state.
    pub(crate) fn transition(
        &self,
        row: &DeviceRow,
        state: &DeviceState,
        completed: &[u8],
        messages: &[OutboxMessage],
    ) -> Result<(), RoError> {
        self.transition_by(row, state, completed, messages, |queued| {
            self.store.transition(&row.campaign_id, &row.device_id, state, completed, queued)
        })
    }

    /// [`Ro::transition`] written by `write`, which must queue the messages it is given in
    /// the transaction that moves the device (e.g. `RoStore::set_enrolled`).
    pub(crate) fn transition_by(
        &self,
        row: &DeviceRow,
        state: &DeviceState,
        completed: &[u8],
        messages: &[OutboxMessage],
        write: impl FnOnce(&[OutboxMessage]) -> Result<(), RoError>,
    ) -> Result<(), RoError> {
        let now = now_ms();
        let event = Event::transition(
            &row.campaign_id,
            &row.device_id,
            row.state.name(),
            state.name(),
            state.is_final(),
            now,
        );
        let mut queued = messages.to_vec();
        queued.extend(event.messages(&self.webhooks)?);
        write(&queued)?;
        if state.is_final() && !row.state.is_final() && row.state != DeviceState::Pending {
            self.admission.released();
        }
        let share = match completed.len() {
            0 => 0.0,
            n => now.saturating_sub(row.since_ms) as f64 / 1000.0 / n as f64,
        };
        for step in completed {
            self.observe_step(*step, share);
        }
        self.metrics.transitions.get_or_create(&StateLabel { state: state.name().into() }).inc();
        tracing::info!(
            campaign = %row.campaign_id,
            device = %row.device_id,
            from = row.state.name(),
            to = state.name(),
            "device transition"
        );
        if !queued.is_empty() {
            self.outbox_wake.notify_one();
        }
        let _ = self.events.send(event);
        Ok(())
    }

    /// Adds `ms` to a step's recorded time (`RoStore::record_step`) and to its histogram.
    pub(crate) fn record_step(&self, row: &DeviceRow, step: u8, ms: u64) -> Result<(), RoError> {
        self.store.record_step(&row.campaign_id, &row.device_id, step, ms)?;
        self.observe_step(step, ms as f64 / 1000.0);
        Ok(())
    }

    fn observe_step(&self, step: u8, seconds: f64) {
        let label = StepLabel { step: format!("{step:02}-{}", super::state::step_name(step)) };
        self.metrics.step_seconds.get_or_create(&label).observe(seconds);
    }

    /// The end of a campaign as an event: queued for the webhooks, published on the stream.
    pub(crate) fn campaign_finished_event(
        &self,
        campaign: &str,
        state: &str,
    ) -> Result<(Event, Vec<OutboxMessage>), RoError> {
        let (mut switched, mut rolled_back) = (0, 0);
        for row in self.store.campaign_devices(campaign)? {
            match row.state {
                DeviceState::Switched => switched += 1,
                DeviceState::RolledBack { .. } => rolled_back += 1,
                _ => {}
            }
        }
        let event = Event::finished(campaign, state, switched, rolled_back);
        let messages = event.messages(&self.webhooks)?;
        Ok((event, messages))
    }

    /// Publishes a committed event on the stream and wakes the outbox.
    pub(crate) fn published(&self, event: Event) {
        self.outbox_wake.notify_one();
        let _ = self.events.send(event);
    }
}

/// `t=<t>,v1=<hex HMAC-SHA256(key, "<t>." ‖ body)>`.
pub fn signature(key: &hmac::Key, t: u64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(format!("{t}.").as_bytes());
    ctx.update(body);
    format!("t={t},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Checks a [`SIGNATURE_HEADER`] value as a receiver does: the HMAC over the timestamp and
/// `body` under `secret`, and a timestamp within `tolerance` of `now` (Unix seconds).
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: Duration,
) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(tag)) = (t, v1) else { return false };
    if t.abs_diff(now) > tolerance.as_secs() {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    hmac::verify(&key, &message, &tag).is_ok()
}

fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")) => Ok(()),
        _ => Err(format!("url {url:?} must be https:// (http:// only to a loopback address)")),
    }
}

fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!("{shown} is readable by others; a secret file must be 0600"));
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?);
    let text = bytes.trim_ascii();
    if text.len() < MIN_SECRET_LEN {
        return Err(format!("{shown}: the secret must be at least {MIN_SECRET_LEN} bytes"));
    }
    Ok(Zeroizing::new(text.to_vec()))
}

fn now_ms() -> u64 {
    super::store::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_fail_closed() {
        let secret = [7u8; 32];
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let body = br#"{"type":"campaign-finished"}"#;
        let header = signature(&key, 1_000, body);
        let ok =
            |h: &str, b: &[u8], now| verify_signature(&secret, h, b, now, Duration::from_secs(300));
        assert!(ok(&header, body, 1_100));
        assert!(!ok(&header, b"{}", 1_100), "another body");
        assert!(!ok(&header, body, 2_000), "too old");
        assert!(!verify_signature(&[8u8; 32], &header, body, 1_100, Duration::from_secs(300)));
        for bad in ["", "t=1000", "v1=00", "t=x,v1=00", &header.replace("v1=", "v1=zz")] {
            assert!(!ok(bad, body, 1_000), "{bad}");
        }
        let later = header.replace("t=1000", "t=1001");
        assert!(!ok(&later, body, 1_001), "the timestamp is signed");
    }

    #[test]
    fn urls_and_secrets_are_checked() {
        assert!(check_url("https://dm.example/hooks").is_ok());
        assert!(check_url("http://127.0.0.1:9000/x").is_ok());
        assert!(check_url("http://dm.example/hooks").is_err());
        assert!(check_url("ftp://127.0.0.1/").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "short").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        assert!(read_secret(&path).unwrap_err().contains("at least 32"));
        std::fs::write(&path, format!("{}\n", "s".repeat(40))).unwrap();
        assert_eq!(read_secret(&path).unwrap().len(), 40);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert!(read_secret(&path).unwrap_err().contains("0600"));
    }

    #[test]
    fn events_serialise_with_their_type() {
        let device = DeviceId::from_name(&[0, 11, 1, 2, 3]).unwrap_or_else(|_| {
            let mut name = vec![0x00, 0x0B];
            name.extend([0xA5; 32]);
            DeviceId::from_name(&name).unwrap()
        });
        let e = Event::transition("c-1", &device, "pending", "tre-activated", false, 5);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "device-transition");
        assert_eq!(json["final"], false);
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), e);
        let f = Event::finished("c-1", "completed", 3, 1);
        assert_eq!(serde_json::to_value(&f).unwrap()["type"], "campaign-finished");
        assert_eq!(f.id(), "c-1/completed");
    }
}
