//! A webhook receiver of campaign events (`docs/campaigns.md`, "Events"), as a
//! device-management stack runs one: it checks every delivery's signature
//! (`ro::webhooks::verify_signature`) and the id header against the event, keeps each event
//! once by id (a repeated delivery is one event), and can refuse its first deliveries with
//! 503 to make the RO's outbox retry them. The lab's tests receive with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use protocol::DeviceId;
use provisioning::ro::Event;
use provisioning::ro::webhooks::{ID_HEADER, SIGNATURE_HEADER, verify_signature};

/// How far a delivery's timestamp may be from the receiver's clock.
const TOLERANCE: Duration = Duration::from_secs(300);

/// What the receiver has got so far.
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// Each event once, by id.
    pub events: BTreeMap<String, Event>,
    /// Every delivery, refused ones included.
    pub deliveries: usize,
    /// Deliveries whose signature or id header did not verify.
    pub bad_signatures: usize,
}

impl Received {
    /// The `campaign-finished` events.
    pub fn finished(&self) -> Vec<&Event> {
        self.events.values().filter(|e| matches!(e, Event::CampaignFinished { .. })).collect()
    }

    /// The states `device` went through, chained by the events' `from` and `to` from
    /// `pending`; an error if a state was left twice or some transition is off the chain.
    pub fn path(&self, device: &DeviceId) -> Result<Vec<String>, String> {
        let mut next: BTreeMap<&str, &str> = BTreeMap::new();
        for e in self.events.values() {
            if let Event::DeviceTransition { device_id, from, to, .. } = e
                && device_id == device
                && next.insert(from.as_str(), to.as_str()).is_some()
            {
                return Err(format!("{from} left twice"));
            }
        }
        let mut at = "pending";
        let mut path = vec![at.to_owned()];
        while let Some(to) = next.get(at) {
            at = to;
            path.push(at.to_owned());
            if path.len() > next.len() + 1 {
                return Err(format!("a cycle: {next:?}"));
            }
        }
        if path.len() != next.len() + 1 {
            return Err(format!("not one chain: {next:?}"));
        }
        Ok(path)
    }
}

struct Inbox {
    secret: Vec<u8>,
    refuse_first: usize,
    received: Mutex<Received>,
}

/// A running receiver on 127.0.0.1 (plain HTTP, which the RO allows to loopback only).
pub struct WebhookReceiver {
    /// What the RO's `[[webhooks]] url` names.
    pub url: String,
    /// The secret, in a 0600 file, for `[[webhooks]] secret_file`.
    pub secret_file: PathBuf,
    inbox: Arc<Inbox>,
}

impl WebhookReceiver {
    /// Starts a receiver whose secret (`secret`, at least 32 bytes) is written to
    /// `dir/webhook.secret`; it answers 503 to its first `refuse_first` deliveries.
    pub async fn start(dir: &Path, secret: &str, refuse_first: usize) -> Result<Self> {
        let secret_file = dir.join("webhook.secret");
        write_private(&secret_file, secret.as_bytes())?;
        let inbox = Arc::new(Inbox {
            secret: secret.as_bytes().to_vec(),
            refuse_first,
            received: Mutex::new(Received::default()),
        });
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(Arc::clone(&inbox));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://127.0.0.1:{}/hooks", listener.local_addr()?.port());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { url, secret_file, inbox })
    }

    /// A copy of what has been received so far.
    pub fn received(&self) -> Received {
        self.inbox.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Ok(mut r) = inbox.received.lock() else { return StatusCode::INTERNAL_SERVER_ERROR };
    r.deliveries += 1;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let event = serde_json::from_slice::<Event>(&body).ok().filter(|e| e.id() == header(ID_HEADER));
    let signed = verify_signature(&inbox.secret, header(SIGNATURE_HEADER), &body, now, TOLERANCE);
    let Some(event) = event.filter(|_| signed) else {
        r.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    };
    if r.deliveries <= inbox.refuse_first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.events.insert(event.id().to_owned(), event);
    StatusCode::NO_CONTENT
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}
