//! The RO's outbox (docs/flow.md, "Reports: the outbox"): every report the RO owes an
//! operator is written to the store in the same transaction as the state change that causes
//! it, and a background task delivers it with retries — exponential backoff with jitter —
//! until the operator acknowledges it, whether or not the device still polls and across
//! restarts of the RO. Operators handle a repeated message idempotently (keyed by campaign
//! and device), so "at least once" from here is "exactly once in effect" there.
//!
//! Here: the final reports a device's end causes, the delivery task, and the store's
//! queries of the `outbox` table (the rows are written by `store`, in the transaction of
//! the state change that causes them).
//!
//! A message the operator refuses for good (a 4xx other than 408 and 429, e.g. a report
//! that contradicts one it already has) is kept as `dead` with the operator's reason and
//! shown in the campaign's status: that needs a person, not a retry.

use std::sync::Arc;
use std::time::Duration;

use transport::retry::Backoff;

use protocol::DeviceId;

use super::Ro;
use super::error::RoError;
use super::metrics::PeerLabel;
use super::webhooks;
use storage::{Dialect, args};

use super::store::{CampaignRow, OutboxMessage, RoStore, ms, now_ms};
use crate::mno::api::{CampaignId, MAX_REASON_LEN, Report, ReportOutcome, path as mno_path};

/// Retries of the outbox and of the RO's peer steps: 250 ms doubling up to 30 s, ±50 %.
const BACKOFF: Backoff = Backoff { base: Duration::from_millis(250), cap: Duration::from_secs(30) };
/// Messages delivered at once.
const BATCH: usize = 32;
/// A claimed message is this instance's to deliver for one delivery attempt (the peer
/// timeout bounds it) and this much longer; then another instance may take it, so the
/// messages of an instance that died are sent again soon.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);
/// How often an instance sharing a store looks for campaign creations to take over.
const RESUME_EVERY: Duration = Duration::from_secs(2);

/// How long to wait before attempt `attempts + 1` ([`BACKOFF`]).
pub(crate) fn backoff(attempts: u32) -> Duration {
    BACKOFF.wait(attempts)
}

/// The final reports of a device to the campaign's two operators (step 12): success when
/// the card committed, failure with the step and reason when it runs the old profile again.
/// The new operator is told first in the list; the two are delivered independently.
pub(crate) fn final_reports(
    campaign: &CampaignRow,
    device: &DeviceId,
    outcome: Result<(), (u8, &str)>,
) -> Result<Vec<OutboxMessage>, RoError> {
    let id: CampaignId = campaign.id.parse().map_err(|e: &str| RoError::Store(e.into()))?;
    let report = match outcome {
        Ok(()) => Report {
            campaign: id,
            device_id: device.clone(),
            outcome: ReportOutcome::Success,
            step: None,
            reason: None,
        },
        Err((step, reason)) => Report {
            campaign: id,
            device_id: device.clone(),
            outcome: ReportOutcome::Failure,
            step: Some(step),
            reason: Some(reason.chars().take(MAX_REASON_LEN).collect()),
        },
    };
    let body = serde_json::to_vec(&report).map_err(|e| RoError::Store(e.to_string()))?;
    Ok([&campaign.to, &campaign.from]
        .into_iter()
        .map(|operator| OutboxMessage {
            key: format!("report/{}/{}/{operator}", campaign.id, device.to_hex()),
            peer: operator.clone(),
            path: mno_path::REPORTS.to_owned(),
            body: body.clone(),
            missing_ok: false,
            campaign_id: campaign.id.clone(),
            device_id: Some(device.clone()),
        })
        .collect())
}

impl Ro {
    /// Delivers the outbox for as long as the RO runs; woken early when a message is queued.
    pub(crate) async fn run_outbox(self: Arc<Self>) {
        let claim_ms = (self.config.peer_timeout() + CLAIM_MARGIN).as_millis() as u64;
        let mut last_resume = tokio::time::Instant::now();
        loop {
            // On a shared store, the creations another instance left are taken over here.
            if self.store.is_shared() && last_resume.elapsed() >= RESUME_EVERY {
                last_resume = tokio::time::Instant::now();
                if let Err(e) = self.resume_creations() {
                    tracing::warn!(error = %e, "cannot look for campaigns to resume");
                }
            }
            let rows = match self.store.outbox_claim(now_ms(), BATCH, claim_ms) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    Vec::new()
                }
            };
            let handles: Vec<_> = rows
                .into_iter()
                .map(|row| {
                    let ro = Arc::clone(&self);
                    tokio::spawn(async move { ro.deliver(row).await })
                })
                .collect();
            for handle in handles {
                let _ = handle.await;
            }
            // A campaign whose last device finished just before a crash is completed here.
            if let Err(e) = self.campaigns_progress() {
                tracing::warn!(error = %e, "cannot update the campaigns' progress");
            }
            let wait = match self.store.outbox_next_due() {
                Ok(Some(due)) => Duration::from_millis(due.saturating_sub(now_ms())),
                _ => Duration::from_secs(5),
            };
            let wait = wait.clamp(Duration::from_millis(10), Duration::from_secs(5));
            let _ = tokio::time::timeout(wait, self.outbox_wake.notified()).await;
        }
    }

    async fn deliver(&self, row: OutboxRow) {
        let m = &row.message;
        let sent = async {
            if m.peer.starts_with(webhooks::PEER_PREFIX) {
                let id = m.key.splitn(3, '/').nth(2).unwrap_or(&m.key);
                return self.webhooks.deliver(&m.peer, &m.body, id).await.map(|()| Vec::new());
            }
            let base = self.peers.operator(&m.peer)?;
            self.peers
                .post(&m.peer, &format!("{base}{}", m.path), "application/json", m.body.clone())
                .await
        }
        .await;
        let outcome = match sent {
            Ok(_) => Ok(()),
            Err(RoError::PeerRefused { status: 404, .. }) if m.missing_ok => Ok(()),
            Err(e) => Err(e),
        };
        let counted = match &outcome {
            Ok(()) => "delivered",
            Err(e) if e.is_transient() => "retry",
            Err(_) => "dead",
        };
        let peer_label =
            if m.peer.starts_with(webhooks::PEER_PREFIX) { "webhook" } else { &m.peer };
        self.metrics
            .deliveries
            .get_or_create(&PeerLabel { peer: peer_label.into(), outcome: counted.into() })
            .inc();
        let recorded = match outcome {
            Ok(()) => {
                tracing::info!(key = %m.key, peer = %m.peer, attempts = row.attempts + 1, "delivered");
                self.store.outbox_delivered(row.id)
            }
            Err(e) => {
                let dead = !e.is_transient();
                let next = now_ms() + backoff(row.attempts).as_millis() as u64;
                if dead {
                    tracing::error!(key = %m.key, peer = %m.peer, error = %e, "refused for good; kept as dead");
                } else {
                    tracing::warn!(key = %m.key, peer = %m.peer, attempts = row.attempts + 1, error = %e, "not delivered; will retry");
                }
                self.store.outbox_failed(row.id, &e.to_string(), next, dead)
            }
        };
        if let Err(e) = recorded {
            tracing::error!(key = %m.key, error = %e, "cannot record the delivery attempt");
        }
    }
}

/// An undelivered outbox message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub message: OutboxMessage,
    pub attempts: u32,
}

/// What the outbox still owes for a device or a campaign.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxState {
    pub pending: u32,
    pub delivered: u32,
    /// Messages a peer refused for good, with its reason.
    pub dead: Vec<String>,
    pub last_error: Option<String>,
}

impl RoStore {
    /// Undelivered messages due by `now`, oldest first, claimed for `claim_ms` by this
    /// instance: on a shared store, instances draining the outbox at once each take other
    /// rows (`FOR UPDATE SKIP LOCKED`, and the claim re-checked by the update itself), and
    /// a message whose instance died is taken again once its claim lapses.
    pub(super) fn outbox_claim(
        &self,
        now: u64,
        limit: usize,
        claim_ms: u64,
    ) -> Result<Vec<OutboxRow>, RoError> {
        let (now, until) = (ms(now), ms(now.saturating_add(claim_ms)));
        self.autocommit(|tx| {
            let skip_locked = match tx.dialect() {
                Dialect::Sqlite => "",
                Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            };
            let mut rows = tx.query(
                &format!(
                    "UPDATE outbox SET claim_until = ?3
                     WHERE id IN (SELECT id FROM outbox
                                  WHERE delivered_ms IS NULL AND dead = 0 AND next_attempt_ms <= ?1
                                    AND claim_until <= ?1
                                  ORDER BY next_attempt_ms, id LIMIT ?2{skip_locked})
                       AND delivered_ms IS NULL AND dead = 0 AND claim_until <= ?1
                     RETURNING id, key, peer, path, body, missing_ok, campaign_id, device_id,
                               attempts, next_attempt_ms"
                ),
                args![now, limit as i64, until],
            )?;
            rows.sort_by_key(|r| (r.get::<i64>(9).unwrap_or(0), r.get::<i64>(0).unwrap_or(0)));
            rows.iter()
                .map(|r| {
                    let device_id = r
                        .get::<Option<String>>(7)?
                        .map(|d| d.parse().map_err(|e| RoError::Store(format!("device id: {e}"))))
                        .transpose()?;
                    Ok(OutboxRow {
                        id: r.get(0)?,
                        message: OutboxMessage {
                            key: r.get(1)?,
                            peer: r.get(2)?,
                            path: r.get(3)?,
                            body: r.get(4)?,
                            missing_ok: r.get(5)?,
                            campaign_id: r.get(6)?,
                            device_id,
                        },
                        attempts: u32::try_from(r.get::<i64>(8)?).unwrap_or(u32::MAX),
                    })
                })
                .collect()
        })
    }

    /// When the next undelivered message is due, if any (a claimed one when its claim lapses).
    pub fn outbox_next_due(&self) -> Result<Option<u64>, RoError> {
        self.autocommit(|tx| {
            let row = tx.query_one(
                "SELECT MIN(CASE WHEN claim_until > next_attempt_ms THEN claim_until
                                 ELSE next_attempt_ms END)
                 FROM outbox WHERE delivered_ms IS NULL AND dead = 0",
                &[],
            )?;
            Ok(row.get::<Option<i64>>(0)?.map(|v| v.max(0) as u64))
        })
    }

    /// The peer acknowledged message `id`.
    pub fn outbox_delivered(&self, id: i64) -> Result<(), RoError> {
        self.write("outbox-delivered", |tx| {
            tx.execute(
                "UPDATE outbox SET delivered_ms = ?2, attempts = attempts + 1, claim_until = 0
                 WHERE id = ?1",
                args![id, ms(now_ms())],
            )?;
            Ok(())
        })
    }

    /// Message `id` was not delivered: tried again from `next_attempt_ms`, or never again
    /// when `dead` (the peer refused it for good).
    pub fn outbox_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_ms: u64,
        dead: bool,
    ) -> Result<(), RoError> {
        self.autocommit(|tx| {
            Ok(tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_ms = ?3,
                        dead = ?4, claim_until = 0 WHERE id = ?1",
                args![id, error, ms(next_attempt_ms), dead],
            )?)
        })?;
        Ok(())
    }

    /// What the outbox holds for a campaign, or for one of its devices.
    pub fn outbox_state(
        &self,
        campaign: &str,
        device: Option<&DeviceId>,
    ) -> Result<OutboxState, RoError> {
        let rows = self.autocommit(|tx| {
            Ok(tx.query(
                "SELECT CASE WHEN delivered_ms IS NOT NULL THEN 1 ELSE 0 END, dead, last_error, key
                 FROM outbox WHERE campaign_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR device_id = ?2) ORDER BY id",
                args![campaign, device.map(DeviceId::to_hex)],
            )?)
        })?;
        let mut state = OutboxState::default();
        for r in rows {
            let (delivered, dead, error, key): (bool, bool, Option<String>, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            if delivered {
                state.delivered += 1;
            } else if dead {
                state.dead.push(format!("{key}: {}", error.unwrap_or_default()));
            } else {
                state.pending += 1;
                if error.is_some() {
                    state.last_error = error;
                }
            }
        }
        Ok(state)
    }
}
