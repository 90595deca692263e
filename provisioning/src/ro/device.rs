//! The RO's device API (docs/flow.md steps 4–12): which task a device gets next (with the
//! RO's signed commit and abort orders), and what the RO records of each answer — the
//! DRF's attach, the relays to the PVA, the receipt, the AKA answer, the commit and abort
//! acknowledgements, each decisive one checked against the enrolled AK's signature.
//!
//! Every handler runs under the device's lock. A device's answer is checked and persisted
//! first; the peer step it enables runs after, from `Ro::advance` (`steps`).

use std::time::{Instant, SystemTime};

use protocol::device_api::{
    AbortAck, AkaResult, AttachRequest, CommitResult, DeviceTask, InstallResult,
};
use protocol::evidence::Evidence;
use protocol::order::{Order, OrderKind, sign_order};
use protocol::pva_api::{ActivateRequest, EnrolRequest, Message};
use protocol::receipt::AnswerStatement;
use protocol::tpm::{Public, Unmarshal};
use protocol::wire::Format;
use protocol::{DeviceId, ekcert};
use serde_bytes::ByteBuf;

use super::Ro;
use super::error::RoError;
use super::outbox::backoff;
use super::state::DeviceState;
use super::steps::ms;
use super::store::{DeviceRow, now_ms};

/// A device's answer as posted: its body, and the AK signature its header carried (hex).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Answer<'a> {
    pub body: &'a [u8],
    pub signature: Option<&'a str>,
}

impl Ro {
    /// The device's next task, after running any peer step that is due.
    pub(crate) async fn task_for(&self, device: &DeviceId) -> Result<DeviceTask, RoError> {
        let _guard = self.lock(device).await?;
        let Some(row) = self.store.device(device)? else { return Ok(DeviceTask::Idle) };
        let row = self.advance(row).await?;
        self.task_of(&row)
    }

    /// The task a state asks for, without side effects.
    fn task_of(&self, row: &DeviceRow) -> Result<DeviceTask, RoError> {
        let campaign = row.campaign_id.clone();
        Ok(match &row.state {
            DeviceState::TreActivation { command } => {
                DeviceTask::ActivateTre { campaign, command: command.clone() }
            }
            DeviceState::Registered if self.store.enrolled_ak(&row.device_id)?.is_none() => {
                DeviceTask::Enrol
            }
            DeviceState::Enrolling { id_object, encrypted_secret, .. } => {
                DeviceTask::ActivateCredential {
                    id_object: id_object.clone(),
                    encrypted_secret: encrypted_secret.clone(),
                }
            }
            DeviceState::Attesting { nonce, pcr_selection } => {
                DeviceTask::Attest { nonce: *nonce, pcr_selection: pcr_selection.clone() }
            }
            DeviceState::Delivering { bundle, ear, .. } => {
                DeviceTask::Install { campaign, bundle: bundle.clone(), ear: ear.clone() }
            }
            DeviceState::Aka { rand, autn, .. } => {
                DeviceTask::Aka { rand: rand.clone(), autn: autn.clone() }
            }
            DeviceState::Committing { sequence, .. } => {
                let order = self.order(row, OrderKind::Commit, Some(*sequence), None)?;
                DeviceTask::Commit { campaign, sequence: *sequence, order }
            }
            DeviceState::Aborting { step, reason } => {
                let reason = format!("step {step}: {reason}");
                let order = self.order(row, OrderKind::Abort, None, Some(&reason))?;
                DeviceTask::Abort { campaign, reason, order }
            }
            DeviceState::Switched => DeviceTask::Done { campaign, switched: true, reason: None },
            DeviceState::RolledBack { step, reason } => DeviceTask::Done {
                campaign,
                switched: false,
                reason: Some(format!("step {step}: {reason}")),
            },
            // The RO's own work is next (a peer step, or a person for `reconciling`).
            _ => DeviceTask::Idle,
        })
    }

    /// The RO's signed order ending the device's change (`protocol::order`).
    fn order(
        &self,
        row: &DeviceRow,
        kind: OrderKind,
        sequence: Option<u64>,
        reason: Option<&str>,
    ) -> Result<ByteBuf, RoError> {
        let order = Order {
            kind,
            device_id: row.device_id.clone(),
            campaign: row.campaign_id.clone(),
            sequence,
            reason: reason.map(str::to_owned),
            issued: now_ms() / 1000,
        };
        sign_order(&self.signer, &order)
            .map(ByteBuf::from)
            .map_err(|e| RoError::Config(format!("signing an order: {e}")))
    }

    /// Steps 5–7 (DRF): the device attaches with its EK certificate and its card's answer to
    /// MNO-A's activate-TRE command after the TRE took over; the DRF checks the certificate,
    /// MNO-A the card's answer (a peer step), then the new operator registers the device.
    pub(crate) async fn attach(&self, request: AttachRequest) -> Result<(), RoError> {
        let device = request.device_id.clone();
        let _guard = self.lock(&device).await?;
        let row = self.row(&device)?;
        match &row.state {
            DeviceState::TreActivation { .. } => {}
            // A repeated attach (the device retried) changes nothing.
            DeviceState::TreActivated { .. } | DeviceState::Attached | DeviceState::Registered => {
                return Ok(());
            }
            other => return Err(RoError::WrongState { device, state: other.name() }),
        }
        if !request.tre_active {
            let reason = "the UICC refused MNO-A's activate-TRE command";
            return self.abandon_locked(&row, 4, reason);
        }
        let timer = Instant::now();
        if let Err(e) =
            self.check_identity(&request.device_id, &request.ek_certificate, &request.ek_public)
        {
            return self.abandon_locked(&row, 5, &e.to_string());
        }
        self.record_step(&row, 5, ms(timer))?;
        // The card's proof is MNO-A's to check: only it knows the KID.
        let state = DeviceState::TreActivated { proof: request.activation_proof };
        self.transition(&row, &state, &[4], &[])?;
        drop(_guard);
        self.advance_now(&device).await
    }

    /// The DRF's identity check: the EK certificate chains to a TPM manufacturer and
    /// certifies the presented EK, whose TPM name is the claimed device id.
    pub(crate) fn check_identity(
        &self,
        device: &DeviceId,
        ek_certificate: &[u8],
        ek_public: &[u8],
    ) -> Result<(), RoError> {
        let ek = Public::from_bytes(ek_public)
            .map_err(|e| RoError::Attach(format!("EK public area: {e}")))?;
        if ek.name().as_ref() != device.as_bytes() {
            return Err(RoError::Attach("the EK's name is not the device id".into()));
        }
        let spki = ek.to_spki_der().map_err(|e| RoError::Attach(format!("EK public key: {e}")))?;
        ekcert::verify_ek_certificate(
            ek_certificate,
            &[],
            &self.manufacturer_roots,
            &spki,
            SystemTime::now(),
        )
        .map_err(|e| RoError::Attach(format!("EK certificate: {e}")))?;
        Ok(())
    }

    /// Step 8 (relay): the device's enrolment request to the PVA.
    pub(crate) async fn enrolment(
        &self,
        device: &DeviceId,
        format: Format,
        body: &[u8],
    ) -> Result<(), RoError> {
        let request =
            EnrolRequest::decode(format, body).map_err(|e| RoError::Decode(e.to_string()))?;
        if request.device_id != *device {
            return Err(RoError::Decode("enrolment request for another device".into()));
        }
        // Only the AK the device channel bound is relayed: the PVA then enrols the key
        // that signs the device's requests, never another one a device (or an attacker
        // with a stolen request) would like on record.
        if self.store.bound_ak(device)?.as_deref() != Some(request.ak_public.as_slice()) {
            return Err(RoError::DeviceNotAuthenticated(
                "the enrolment names another AK than the one bound to the device".into(),
            ));
        }
        let _guard = self.lock(device).await?;
        let row = self.row(device)?;
        match &row.state {
            DeviceState::Registered => {}
            DeviceState::Enrolling { .. } | DeviceState::Enrolled => return Ok(()),
            other => {
                return Err(RoError::WrongState { device: device.clone(), state: other.name() });
            }
        }
        match self.peers.enrol(&request).await {
            Ok(response) => {
                let state = DeviceState::Enrolling {
                    id_object: response.credential_blob,
                    encrypted_secret: response.encrypted_secret,
                    ak_public: request.ak_public,
                };
                self.transition(&row, &state, &[7], &[])
            }
            Err(e) => self.relay_failed(&row, 7, e),
        }
    }

    /// Step 8 (relay): the secret from TPM2_ActivateCredential to the PVA.
    pub(crate) async fn activation(
        &self,
        device: &DeviceId,
        format: Format,
        body: &[u8],
    ) -> Result<(), RoError> {
        let request =
            ActivateRequest::decode(format, body).map_err(|e| RoError::Decode(e.to_string()))?;
        if request.device_id != *device {
            return Err(RoError::Decode("activation for another device".into()));
        }
        let _guard = self.lock(device).await?;
        let row = self.row(device)?;
        let ak = match &row.state {
            DeviceState::Enrolling { ak_public, .. } => ak_public.clone(),
            DeviceState::Enrolled | DeviceState::Attesting { .. } => return Ok(()),
            other => {
                return Err(RoError::WrongState { device: device.clone(), state: other.name() });
            }
        };
        let response = match self.peers.activate(&request).await {
            Ok(response) => response,
            // The PVA took this activation before, and the RO died before it recorded that
            // (or the answer was lost): enrol again, which the device answers as before.
            Err(e) if e.peer_problem() == Some("pva/no-pending-enrolment") => {
                tracing::info!(device = %device, "activation already taken; enrolling again");
                return self.transition(&row, &DeviceState::Registered, &[], &[]);
            }
            Err(e) => return self.relay_failed(&row, 7, e),
        };
        // The PVA accepted this AK: the DPF checks the install receipt with it.
        let name = Public::from_bytes(&ak).map(|p| p.name().as_ref().to_vec()).unwrap_or_default();
        if name != response.ak_name.as_ref() {
            return self.abandon_locked(&row, 7, "the PVA enrolled another AK");
        }
        self.transition_by(&row, &DeviceState::Enrolled, &[7], &[], |queued| {
            self.store.set_enrolled(&row.campaign_id, device, &ak, queued)
        })?;
        drop(_guard);
        self.advance_now(device).await
    }

    /// A relayed request the PVA did not take: the device posts it again later if the PVA
    /// may come back within the step's deadline (503 to the device), else the change ends.
    fn relay_failed(&self, row: &DeviceRow, step: u8, error: RoError) -> Result<(), RoError> {
        if error.is_transient() && !self.past_deadline(row.since_ms) {
            let next =
                now_ms() + backoff(row.retry.as_ref().map_or(0, |r| r.attempts)).as_millis() as u64;
            self.store.note_retry(&row.campaign_id, &row.device_id, &error.to_string(), next)?;
            return Err(RoError::Busy(error.to_string()));
        }
        self.step_failed(row, step, error)
    }

    /// Step 8: the device's evidence, kept for the PVA's appraisal (as CBOR, the PVA's
    /// evidence format, whatever the device sent: the TPM's signatures are over the TPM
    /// structures inside, which travel unchanged either way).
    pub(crate) async fn evidence(
        &self,
        device: &DeviceId,
        format: Format,
        body: &[u8],
    ) -> Result<(), RoError> {
        let cbor = match format {
            Format::Cbor => body.to_vec(),
            Format::Json => {
                protocol::wire::from_json::<Evidence>(body, protocol::evidence::MAX_EVIDENCE_SIZE)
                    .map_err(|e| RoError::Decode(e.to_string()))?
                    .to_cbor()
                    .map_err(|e| RoError::Decode(e.to_string()))?
            }
        };
        let body = cbor.as_slice();
        let evidence = Evidence::from_cbor(body).map_err(|e| RoError::Decode(e.to_string()))?;
        if evidence.device_id != *device {
            return Err(RoError::Decode("evidence of another device".into()));
        }
        let _guard = self.lock(device).await?;
        let row = self.row(device)?;
        let nonce = match &row.state {
            DeviceState::Attesting { nonce, .. } => *nonce,
            DeviceState::Appraising { .. }
            | DeviceState::Attested { .. }
            | DeviceState::Delivering { .. } => return Ok(()),
            other => {
                return Err(RoError::WrongState { device: device.clone(), state: other.name() });
            }
        };
        let state = DeviceState::Appraising { nonce, evidence: ByteBuf::from(body.to_vec()) };
        self.transition(&row, &state, &[8], &[])?;
        drop(_guard);
        self.advance_now(device).await
    }

    /// Steps 11–12: the install receipt (or the device's failure). The card now runs the
    /// new profile on trial, its old one kept as fallback.
    pub(crate) async fn install(
        &self,
        device: &DeviceId,
        result: InstallResult,
        answer: Answer<'_>,
    ) -> Result<(), RoError> {
        let _guard = self.lock(device).await?;
        let row = self.row(device)?;
        let (expected, bundle_key) = match &row.state {
            DeviceState::Delivering { expected, bundle_key, .. } => (expected.clone(), bundle_key),
            DeviceState::Installed { .. }
            | DeviceState::Aka { .. }
            | DeviceState::AkaAnswered { .. }
            | DeviceState::Committing { .. }
            | DeviceState::Switched => return Ok(()),
            other => {
                return Err(RoError::WrongState { device: device.clone(), state: other.name() });
            }
        };
        self.check_answer(device, AnswerStatement::install_task(bundle_key), answer)?;
        let receipt = match result {
            InstallResult::Installed { receipt } => receipt,
            InstallResult::Failed { reason } => {
                // Its abort acknowledgement will say whether the old profile runs again.
                return self.abandon_locked(
                    &row,
                    11,
                    &format!("the device did not install: {reason}"),
                );
            }
        };
        let timer = Instant::now();
        let ak = self
            .store
            .enrolled_ak(device)?
            .ok_or_else(|| RoError::Receipt("no enrolled AK".into()))?;
        if let Err(e) = self.dpf.verify_receipt(&receipt, &ak, device, &expected) {
            return self.abandon_locked(&row, 12, &e.to_string());
        }
        self.record_step(&row, 12, ms(timer))?;
        let state = DeviceState::Installed { expected };
        self.transition(&row, &state, &[11], &[])?;
        drop(_guard);
        self.advance_now(device).await
    }

    /// Step 12: the USIM's AKA answer, kept for the new operator's AuC.
    pub(crate) async fn aka(
        &self,
        device: &DeviceId,
        result: AkaResult,
        answer: Answer<'_>,
    ) -> Result<(), RoError> {
        let _guard = self.lock(device).await?;
        let row = self.row(device)?;
        let (rand, autn, expected) = match &row.state {
            DeviceState::Aka { rand, autn, expected } => {
                (rand.clone(), autn.clone(), expected.clone())
            }
            DeviceState::AkaAnswered { .. }
            | DeviceState::Committing { .. }
            | DeviceState::Switched => return Ok(()),
            other => {
                return Err(RoError::WrongState { device: device.clone(), state: other.name() });
            }
        };
        self.check_answer(device, AnswerStatement::aka_task(&rand, &autn), answer)?;
        let body =
            protocol::device_api::to_cbor(&result).map_err(|e| RoError::Decode(e.to_string()))?;
        let state = DeviceState::AkaAnswered { rand, autn, answer: ByteBuf::from(body), expected };
        self.transition(&row, &state, &[12], &[])?;
        drop(_guard);
        self.advance_now(device).await
    }

    /// Step 12, the commit point: the device's signed word on what its card did with the
    /// commit order. Only now may the old operator retire the old IMSI.
    pub(crate) async fn commit(
        &self,
        device: &DeviceId,
        result: CommitResult,
        answer: Answer<'_>,
    ) -> Result<(), RoError> {
        let _guard = self.lock(device).await?;
        let row = self.row(device)?;
        let imsi = match &row.state {
            DeviceState::Committing { imsi, .. } => imsi.clone(),
            DeviceState::Switched | DeviceState::RolledBack { .. } => return Ok(()),
            other => {
                return Err(RoError::WrongState { device: device.clone(), state: other.name() });
            }
        };
        let task = AnswerStatement::order_task("commit", &row.campaign_id);
        self.check_answer(device, task, answer)?;
        match result {
            CommitResult::Committed { imsi: runs } if runs == imsi.as_str() => {
                self.finish(&row, DeviceState::Switched)
            }
            CommitResult::Committed { imsi: runs } => {
                let reason =
                    format!("the card committed IMSI {runs}, but the released profile is {imsi}");
                let state = DeviceState::Reconciling { reason };
                self.transition(&row, &state, &[], &[])
            }
            CommitResult::FellBack { reason, .. } => self.finish(
                &row,
                DeviceState::RolledBack {
                    step: 12,
                    reason: format!("the card fell back before the commit: {reason}"),
                },
            ),
        }
    }

    /// After an abort order: the device's signed word that its old profile runs again.
    pub(crate) async fn abort(
        &self,
        device: &DeviceId,
        ack: AbortAck,
        answer: Answer<'_>,
    ) -> Result<(), RoError> {
        let _guard = self.lock(device).await?;
        let row = self.row(device)?;
        let (step, reason) = match &row.state {
            DeviceState::Aborting { step, reason } => (*step, reason.clone()),
            DeviceState::RolledBack { .. } => return Ok(()),
            other => {
                return Err(RoError::WrongState { device: device.clone(), state: other.name() });
            }
        };
        // Before its AK is enrolled a device can have done nothing but activate its TRE;
        // its acknowledgement is then taken unsigned — but cannot claim a commit, which it
        // cannot have made — and the agent restores its USIM on any end that is not a
        // verified commit of its change (docs/flow.md).
        let signed = self.store.enrolled_ak(device)?.is_some();
        if signed {
            let task = AnswerStatement::order_task("abort", &row.campaign_id);
            self.check_answer(device, task, answer)?;
        }
        if ack.committed && signed {
            let reason = format!(
                "the card committed the new profile (IMSI {}) although the change was abandoned: {reason}",
                ack.imsi
            );
            let state = DeviceState::Reconciling { reason };
            return self.transition(&row, &state, &[], &[]);
        }
        if !ack.usim_active || ack.tre_active {
            // The card could not restore yet (e.g. its state could not be written): the
            // device keeps the abort task and tries again.
            let next =
                now_ms() + backoff(row.retry.as_ref().map_or(0, |r| r.attempts)).as_millis() as u64;
            return self.store.note_retry(
                &row.campaign_id,
                device,
                "the device has not restored its USIM yet",
                next,
            );
        }
        self.finish(&row, DeviceState::RolledBack { step, reason })
    }

    /// Runs the device's due peer steps now (after an answer), under its lock.
    async fn advance_now(&self, device: &DeviceId) -> Result<(), RoError> {
        let _guard = self.lock(device).await?;
        if let Some(row) = self.store.device(device)? {
            self.advance(row).await?;
        }
        self.device_wake(device).notify_waiters();
        Ok(())
    }

    /// An answer that decides the change (install, AKA, commit, abort) must carry the
    /// enrolled AK's signature over its statement (`protocol::receipt::AnswerStatement`): the
    /// device API takes anonymous clients, and a forged "failed" after the card installed
    /// the new profile would have both operators give up the subscription the card now
    /// runs. A refused answer changes nothing; the device's own answer still counts.
    fn check_answer(
        &self,
        device: &DeviceId,
        task: [u8; 32],
        answer: Answer<'_>,
    ) -> Result<(), RoError> {
        let refused = |why: String| RoError::AnswerNotSigned(why);
        let signature = answer.signature.ok_or_else(|| refused("no answer signature".into()))?;
        let signature = hex::decode(signature)
            .map_err(|_| refused("the answer signature is not hex".into()))?;
        let ak = self
            .store
            .enrolled_ak(device)?
            .ok_or_else(|| refused("the device has no enrolled AK".into()))?;
        let ak =
            Public::from_bytes(&ak).map_err(|e| RoError::Store(format!("enrolled AK: {e}")))?;
        AnswerStatement::new(device.clone(), task, answer.body)
            .verify(&ak, &signature)
            .map_err(|e| refused(e.to_string()))
    }

    /// The campaign a device row belongs to: its old (`from`) and new (`to`) operators.
    pub(crate) fn campaign_of(&self, id: &str) -> Result<super::store::CampaignRow, RoError> {
        self.store.campaign(id)?.ok_or_else(|| RoError::UnknownCampaign(id.to_owned()))
    }

    fn row(&self, device: &DeviceId) -> Result<DeviceRow, RoError> {
        self.store.device(device)?.ok_or_else(|| RoError::NotInCampaign(device.clone()))
    }
}
