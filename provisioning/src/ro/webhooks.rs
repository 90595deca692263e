//! Webhooks: the campaign events (`events`) delivered to a device-management stack's
//! receiver from the RO's outbox, with its backoff, until the receiver answers 2xx (a 4xx
//! other than 408 and 429 keeps the message as dead). Each delivery is signed with
//! HMAC-SHA256 under the webhook's secret, over the timestamp and the body (header
//! [`SIGNATURE_HEADER`]: `t=<unix seconds>,v1=<hex>`); a receiver checks the signature
//! ([`verify_signature`]), refuses old timestamps, and drops an `id` it has seen, since a
//! delivery whose acknowledgement was lost is repeated: at least once from here, exactly
//! once in effect.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::error::RoError;

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
    /// The configured webhooks' names.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.hooks.iter().map(|h| h.name.as_str()).collect()
    }

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
}
