//! The RO's peer steps of a device's change (docs/flow.md steps 4–12): MNO-A's
//! activate-TRE command and its check of the card's answer, the registration with the new
//! operator, the PVA's nonce and
//! appraisal, the new operator's signed profile through the DPF, the AuC's challenge and
//! verdict — and what happens when one fails.
//!
//! [`Ro::advance`] runs whichever step the device's state calls for, each persisted before
//! the next; a poll, a device's answer and a restart all call it. A step that fails
//! transiently (a peer down or busy, a store write that failed) leaves the state as it is
//! with a retry noted and is tried again with backoff; a refusal, or a failure past the
//! step's deadline, abandons the change: `aborting` (the device must restore its old
//! profile and say so, signed) or, for a device that never received a command,
//! `rolled-back` at once.

use std::time::{Instant, SystemTime};

use protocol::DeviceId;
use protocol::device_api::AkaResult;
use protocol::evidence::Evidence;
use serde_bytes::ByteBuf;

use super::Ro;
use super::dpf::ExpectedReceipt;
use super::error::RoError;
use super::outbox::{backoff, final_reports};
use super::peers::AkaAnswer;
use super::state::DeviceState;
use super::store::{DeviceRow, OutboxMessage, now_ms};

/// Peer steps run one after another in one call to `advance` at most this often (a poll
/// may take a device from `attested` through `delivered`; never loops).
const MAX_STEPS_PER_ADVANCE: usize = 4;

/// The PVA's problem types for a nonce a crashed or slow attempt used up: the RO asks for
/// a fresh one instead of abandoning the change.
const STALE_NONCE: [&str; 3] = ["pva/nonce-reused", "pva/nonce-expired", "pva/nonce-unknown"];

impl Ro {
    /// Runs the peer steps the device's state calls for, each persisted before the next;
    /// returns the row as it is afterwards.
    pub(crate) async fn advance(&self, mut row: DeviceRow) -> Result<DeviceRow, RoError> {
        for _ in 0..MAX_STEPS_PER_ADVANCE {
            if row.retry.as_ref().is_some_and(|r| r.next_attempt_ms > now_ms()) {
                break;
            }
            let step = row.state.step();
            let next = match &row.state {
                // Admission control: a device the RO cannot take yet stays pending.
                DeviceState::Pending if !self.admission.admit(&self.store)? => break,
                DeviceState::Pending => self.activate_tre(&row).await,
                DeviceState::TreActivated { proof } => self.confirm_activation(&row, proof).await,
                DeviceState::Attached => self.register(&row).await,
                DeviceState::Registered | DeviceState::Enrolled
                    if self.store.enrolled_ak(&row.device_id)?.is_some() =>
                {
                    self.challenge(&row).await
                }
                DeviceState::Appraising { nonce, evidence } => {
                    self.appraise(&row, *nonce, evidence).await
                }
                DeviceState::Attested { ear, bundle_key } => {
                    self.release(&row, ear, bundle_key).await
                }
                DeviceState::Installed { expected } => self.aka_challenge(&row, expected).await,
                DeviceState::AkaAnswered { rand, answer, expected, .. } => {
                    self.aka_verdict(&row, rand, answer, expected).await
                }
                _ => break,
            };
            match next {
                Ok((state, completed)) => self.transition(&row, &state, completed, &[])?,
                Err(e) => {
                    self.step_failed(&row, step, e)?;
                }
            }
            match self.store.device(&row.device_id)? {
                Some(next) if next.state != row.state => row = next,
                Some(next) => {
                    row = next;
                    break;
                }
                None => break,
            }
        }
        Ok(row)
    }

    /// A step failed: retried later if the failure may pass and the step is within its
    /// deadline, else the change is abandoned.
    pub(crate) fn step_failed(
        &self,
        row: &DeviceRow,
        step: u8,
        error: RoError,
    ) -> Result<(), RoError> {
        self.metrics.peer_error(&error);
        if error.is_transient() && !self.past_deadline(row.since_ms) {
            let attempts = row.retry.as_ref().map_or(0, |r| r.attempts);
            let next = now_ms() + backoff(attempts).as_millis() as u64;
            tracing::warn!(device = %row.device_id, step, attempts = attempts + 1, error = %error, "step failed; will retry");
            return self.store.note_retry(
                &row.campaign_id,
                &row.device_id,
                &error.to_string(),
                next,
            );
        }
        let reason = if error.is_transient() {
            format!("{error} (still failing after the step's deadline)")
        } else {
            error.to_string()
        };
        self.abandon_locked(row, step, &reason)
    }

    /// Gives up the device's change (its lock held): a device that never received a command
    /// is rolled back at once; one that may have changed its card is told to restore it.
    /// Past the commit decision nothing is abandoned.
    pub(crate) fn abandon_locked(
        &self,
        row: &DeviceRow,
        step: u8,
        reason: &str,
    ) -> Result<(), RoError> {
        if row.state.is_final() || row.state.past_commit_decision() {
            return Ok(());
        }
        if matches!(row.state, DeviceState::Aborting { .. } | DeviceState::Reconciling { .. }) {
            return Ok(());
        }
        tracing::warn!(device = %row.device_id, step, reason, "device change abandoned");
        if row.state.device_involved() {
            let state = DeviceState::Aborting { step, reason: reason.to_owned() };
            self.transition(row, &state, &[], &[])
        } else {
            self.finish(row, DeviceState::RolledBack { step, reason: reason.to_owned() })
        }
    }

    /// Abandons a device's change in campaign `campaign` (a cancellation).
    pub(crate) async fn abandon(
        &self,
        device: &DeviceId,
        campaign: &str,
        reason: &str,
    ) -> Result<(), RoError> {
        let _guard = self.lock(device).await?;
        match self.store.device(device)? {
            Some(row) if row.campaign_id == campaign => {
                let step = row.state.step();
                self.abandon_locked(&row, step, reason)
            }
            _ => Ok(()),
        }
    }

    /// Moves a device to a final state with its reports to both operators, in one
    /// transaction.
    pub(crate) fn finish(&self, row: &DeviceRow, state: DeviceState) -> Result<(), RoError> {
        let campaign = self.campaign_of(&row.campaign_id)?;
        let reports: Vec<OutboxMessage> = match &state {
            DeviceState::Switched => final_reports(&campaign, &row.device_id, Ok(()))?,
            DeviceState::RolledBack { step, reason } => {
                final_reports(&campaign, &row.device_id, Err((*step, reason)))?
            }
            _ => Vec::new(),
        };
        self.transition(row, &state, &[], &reports)?;
        tracing::info!(device = %row.device_id, campaign = %row.campaign_id, state = state.name(), "device finished");
        self.outbox_wake.notify_one();
        self.campaign_progress(&row.campaign_id)
    }

    // The steps: each returns the next state and the steps it completed.

    /// Step 4: MNO-A's activate-TRE command (idempotent there: a repeat returns the same).
    async fn activate_tre(&self, row: &DeviceRow) -> Result<(DeviceState, &'static [u8]), RoError> {
        let timer = Instant::now();
        let command =
            self.peers.activate_tre(&self.campaign_of(&row.campaign_id)?, &row.device_id).await?;
        self.record_step(row, 4, ms(timer))?;
        Ok((DeviceState::TreActivation { command: ByteBuf::from(command) }, &[]))
    }

    /// Step 4 confirmed: MNO-A checks the card's MACed answer to its command — the ICCID
    /// binding — before the change goes on (idempotent there: the same answer is accepted
    /// again). A refusal abandons the change; the device restores its USIM.
    async fn confirm_activation(
        &self,
        row: &DeviceRow,
        proof: &[u8],
    ) -> Result<(DeviceState, &'static [u8]), RoError> {
        let timer = Instant::now();
        self.peers
            .tre_activated(&self.campaign_of(&row.campaign_id)?, &row.device_id, proof)
            .await?;
        self.record_step(row, 4, ms(timer))?;
        Ok((DeviceState::Attached, &[]))
    }

    /// Steps 6–7: the new operator registers the device and asks for validation.
    async fn register(&self, row: &DeviceRow) -> Result<(DeviceState, &'static [u8]), RoError> {
        let timer = Instant::now();
        self.peers.register(&self.campaign_of(&row.campaign_id)?, &row.device_id).await?;
        self.record_step(row, 6, ms(timer))?;
        Ok((DeviceState::Registered, &[]))
    }

    /// Step 8: a nonce from the PVA.
    async fn challenge(&self, row: &DeviceRow) -> Result<(DeviceState, &'static [u8]), RoError> {
        let challenge = self.peers.challenge(&row.device_id).await?;
        let state = DeviceState::Attesting {
            nonce: challenge.nonce,
            pcr_selection: challenge.pcr_selection,
        };
        Ok((state, &[7]))
    }

    /// Step 8: the PVA appraises the evidence; a nonce a crashed attempt used up (or one
    /// that expired while a peer was down) gets the device a fresh one.
    async fn appraise(
        &self,
        row: &DeviceRow,
        nonce: protocol::Nonce,
        evidence: &[u8],
    ) -> Result<(DeviceState, &'static [u8]), RoError> {
        let timer = Instant::now();
        let parsed = Evidence::from_cbor(evidence).map_err(|e| RoError::Decode(e.to_string()))?;
        let appraisal = match self.peers.appraise(evidence.to_vec()).await {
            Ok(appraisal) => appraisal,
            Err(e) if e.peer_problem().is_some_and(|p| STALE_NONCE.contains(&p)) => {
                tracing::info!(device = %row.device_id, error = %e, "nonce used up; a fresh challenge");
                return Ok((DeviceState::Enrolled, &[]));
            }
            Err(e) => return Err(e),
        };
        self.record_step(row, 8, ms(timer))?;
        let ear = appraisal.ear.into_vec();
        let key = super::dpf::Dpf::evidence_bundle_key(&parsed)?;
        let verified = self.dpf.check_ear(&ear, &row.device_id, &nonce, &key, SystemTime::now())?;
        let bundle_key = verified.bundle_key().map(|k| k.tpm_name().to_vec()).unwrap_or_default();
        Ok((
            DeviceState::Attested {
                ear: ByteBuf::from(ear),
                bundle_key: ByteBuf::from(bundle_key),
            },
            &[8],
        ))
    }

    /// Steps 9–11: the EAR to the new operator (checked again first: it may have expired
    /// while a peer was down), its bundle through the DPF's checks. The bundle is encrypted
    /// to the device's bundle key by the operator itself; the RO never holds the profile.
    async fn release(
        &self,
        row: &DeviceRow,
        ear: &[u8],
        bundle_key: &[u8],
    ) -> Result<(DeviceState, &'static [u8]), RoError> {
        let campaign = self.campaign_of(&row.campaign_id)?;
        let verified = self
            .dpf
            .ears()
            .verify(ear, SystemTime::now(), &row.device_id, None)
            .map_err(|e| RoError::Release(format!("attestation result: {e}")))?;
        let timer = Instant::now();
        let answer = self.peers.attestation(&campaign, &row.device_id, ear).await?;
        self.record_step(row, 9, ms(timer))?;
        let timer = Instant::now();
        let release = self.dpf.accept(&verified, ear, &row.device_id, &row.iccid, answer)?;
        self.record_step(row, 10, ms(timer))?;
        Ok((
            DeviceState::Delivering {
                bundle: ByteBuf::from(release.bundle),
                ear: ByteBuf::from(ear.to_vec()),
                operator: campaign.to,
                expected: release.expected,
                bundle_key: ByteBuf::from(bundle_key.to_vec()),
            },
            &[],
        ))
    }

    /// Step 12: the AuC's challenge for the new USIM.
    async fn aka_challenge(
        &self,
        row: &DeviceRow,
        expected: &ExpectedReceipt,
    ) -> Result<(DeviceState, &'static [u8]), RoError> {
        let timer = Instant::now();
        let (rand, autn) =
            self.peers.aka_challenge(&self.campaign_of(&row.campaign_id)?, &row.device_id).await?;
        self.record_step(row, 12, ms(timer))?;
        let state = DeviceState::Aka {
            rand: ByteBuf::from(rand),
            autn: ByteBuf::from(autn),
            expected: expected.clone(),
        };
        Ok((state, &[12]))
    }

    /// Step 12: the USIM's answer to the AuC. RES = XRES is the commit decision.
    async fn aka_verdict(
        &self,
        row: &DeviceRow,
        rand: &[u8],
        answer: &[u8],
        expected: &ExpectedReceipt,
    ) -> Result<(DeviceState, &'static [u8]), RoError> {
        let result: AkaResult = protocol::device_api::from_cbor(answer)
            .map_err(|e| RoError::Store(format!("stored AKA answer: {e}")))?;
        let campaign = self.campaign_of(&row.campaign_id)?;
        let timer = Instant::now();
        let verdict = match result {
            AkaResult::Res { res } => {
                self.peers.aka_response(&campaign, &row.device_id, Some(&res), None).await?
            }
            AkaResult::Auts { auts } => {
                self.peers.aka_response(&campaign, &row.device_id, None, Some(&auts)).await?
            }
            AkaResult::Failed { reason } => {
                return Err(RoError::Aka(format!(
                    "the new USIM refused AUTHENTICATE (RAND {}): {reason}",
                    hex::encode(rand)
                )));
            }
        };
        self.record_step(row, 12, ms(timer))?;
        Ok(match verdict {
            AkaAnswer::Live => {
                tracing::info!(device = %row.device_id, "new USIM authenticated; commit decided");
                let state = DeviceState::Committing {
                    sequence: expected.sequence,
                    imsi: expected.imsi.clone(),
                };
                (state, &[])
            }
            AkaAnswer::Retry { rand, autn } => {
                tracing::info!(device = %row.device_id, "AuC resynchronised; AKA again");
                let state = DeviceState::Aka {
                    rand: ByteBuf::from(rand),
                    autn: ByteBuf::from(autn),
                    expected: expected.clone(),
                };
                (state, &[])
            }
        })
    }
}

/// Milliseconds since `timer` started.
pub(super) fn ms(timer: Instant) -> u64 {
    timer.elapsed().as_millis() as u64
}
