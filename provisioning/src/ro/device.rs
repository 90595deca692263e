//! The RO's device side (docs/flow.md steps 4–12): which task a device gets next, and what
//! the RO does with each answer — the DRF's attach and registration, the relay to the PVA,
//! the DPF's release and receipt check, the new operator's AKA, the final reports.
//!
//! Every handler runs under the device's lock, checks that the device is in the state the
//! answer belongs to, does its peer calls, and persists the next state in one transaction.
//! A failed check moves the device to `failed`, which makes the next task an abort.

use std::time::{Instant, SystemTime};

use protocol::device_api::{AbortAck, AkaResult, AttachRequest, DeviceTask, InstallResult};
use protocol::evidence::Evidence;
use protocol::pva_api::{ActivateRequest, EnrolRequest, Message};
use protocol::receipt::AnswerStatement;
use protocol::tpm::{Public, Unmarshal};
use protocol::{DeviceId, ekcert};
use serde_bytes::ByteBuf;

use super::Ro;
use super::error::RoError;
use super::peers::AkaAnswer;
use super::state::DeviceState;
use super::store::{CampaignRow, DeviceRow};

/// A device's answer as posted: its body, and the AK signature its header carried (hex).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Answer<'a> {
    pub body: &'a [u8],
    pub signature: Option<&'a str>,
}

impl Ro {
    /// The device's next task; may call a peer to prepare it (MNO-A's activate-TRE command,
    /// the PVA's nonce, the AuC's challenge).
    pub(crate) async fn task_for(&self, device: &DeviceId) -> Result<DeviceTask, RoError> {
        let _guard = self.lock(device).await;
        let Some(row) = self.store.device(device)? else { return Ok(DeviceTask::Idle) };
        self.send_final_reports(&row).await;
        let campaign = row.campaign_id.clone();
        Ok(match row.state {
            DeviceState::Pending => {
                let timer = Instant::now();
                match self.peers.activate_tre(&self.campaign_of(&campaign)?, device).await {
                    Ok(command) => {
                        let state = DeviceState::TreActivation { command: ByteBuf::from(command) };
                        self.store.transition(&campaign, device, &state, &[])?;
                        self.store.record_step(&campaign, device, 4, ms(timer))?;
                        self.task_of(&campaign, &state)
                    }
                    Err(e) => self.fail(&row, 4, &e).await?,
                }
            }
            DeviceState::Registered => {
                if self.store.enrolled_ak(device)?.is_some() {
                    self.issue_challenge(&row).await?
                } else {
                    DeviceTask::Enrol
                }
            }
            DeviceState::Enrolled => self.issue_challenge(&row).await?,
            DeviceState::Installed => {
                let timer = Instant::now();
                match self.peers.aka_challenge(&self.campaign_of(&campaign)?, device).await {
                    Ok((rand, autn)) => {
                        let state = DeviceState::Aka {
                            rand: ByteBuf::from(rand),
                            autn: ByteBuf::from(autn),
                        };
                        self.store.transition(&campaign, device, &state, &[12])?;
                        self.store.record_step(&campaign, device, 12, ms(timer))?;
                        self.task_of(&campaign, &state)
                    }
                    Err(e) => self.fail(&row, 12, &e).await?,
                }
            }
            ref state => self.task_of(&campaign, state),
        })
    }

    /// The task a state asks for, without side effects.
    fn task_of(&self, campaign: &str, state: &DeviceState) -> DeviceTask {
        match state {
            DeviceState::Pending | DeviceState::Registered | DeviceState::Enrolled => {
                DeviceTask::Idle
            }
            DeviceState::TreActivation { command } => {
                DeviceTask::ActivateTre { campaign: campaign.to_owned(), command: command.clone() }
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
            DeviceState::Delivering { bundle, ear, operator, .. } => DeviceTask::Install {
                campaign: campaign.to_owned(),
                operator: operator.clone(),
                bundle: bundle.clone(),
                ear: ear.clone(),
            },
            DeviceState::Installed => DeviceTask::Idle,
            DeviceState::Aka { rand, autn } => {
                DeviceTask::Aka { rand: rand.clone(), autn: autn.clone() }
            }
            DeviceState::Switched | DeviceState::RolledBack { .. } => DeviceTask::Done,
            DeviceState::Failed { reason, step } => {
                DeviceTask::Abort { reason: format!("step {step}: {reason}") }
            }
        }
    }

    /// Steps 5–7 (DRF): the device attaches with its EK certificate after the TRE took over;
    /// the DRF checks the certificate, finds the campaign and registers the device with the
    /// new operator.
    pub(crate) async fn attach(&self, request: AttachRequest) -> Result<(), RoError> {
        let device = request.device_id.clone();
        let _guard = self.lock(&device).await;
        let row = self.row(&device)?;
        match &row.state {
            DeviceState::TreActivation { .. } => {}
            // A repeated attach after registration (the device retried) is answered again.
            DeviceState::Registered => return Ok(()),
            other => return Err(RoError::WrongState { device, state: other.name() }),
        }
        let campaign = row.campaign_id.clone();
        self.store.transition(&campaign, &device, &row.state, &[4])?;
        if !request.tre_active {
            return self
                .fail(
                    &row,
                    4,
                    &RoError::Attach("the UICC refused MNO-A's activate-TRE command".into()),
                )
                .await
                .map(drop);
        }
        let timer = Instant::now();
        if let Err(e) = self.check_identity(&request) {
            return self.fail(&row, 5, &e).await.map(drop);
        }
        self.store.record_step(&campaign, &device, 5, ms(timer))?;
        let timer = Instant::now();
        if let Err(e) = self.peers.register(&self.campaign_of(&campaign)?, &device).await {
            return self.fail(&row, 6, &e).await.map(drop);
        }
        self.store.record_step(&campaign, &device, 6, ms(timer))?;
        self.store.transition(&campaign, &device, &DeviceState::Registered, &[])?;
        Ok(())
    }

    /// The DRF's identity check: the EK certificate chains to a TPM manufacturer and
    /// certifies the presented EK, whose TPM name is the claimed device id.
    fn check_identity(&self, request: &AttachRequest) -> Result<(), RoError> {
        let ek = Public::from_bytes(&request.ek_public)
            .map_err(|e| RoError::Attach(format!("EK public area: {e}")))?;
        if ek.name().as_ref() != request.device_id.as_bytes() {
            return Err(RoError::Attach("the EK's name is not the device id".into()));
        }
        let spki = ek.to_spki_der().map_err(|e| RoError::Attach(format!("EK public key: {e}")))?;
        ekcert::verify_ek_certificate(
            &request.ek_certificate,
            &[],
            &self.manufacturer_roots,
            &spki,
            SystemTime::now(),
        )
        .map_err(|e| RoError::Attach(format!("EK certificate: {e}")))?;
        Ok(())
    }

    /// Step 8 (relay): the device's enrolment request to the PVA.
    pub(crate) async fn enrolment(&self, device: &DeviceId, body: &[u8]) -> Result<(), RoError> {
        let request = EnrolRequest::from_cbor(body).map_err(|e| RoError::Decode(e.to_string()))?;
        if request.device_id != *device {
            return Err(RoError::Decode("enrolment request for another device".into()));
        }
        let _guard = self.lock(device).await;
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
                self.store.transition(&row.campaign_id, device, &state, &[7])
            }
            Err(e) => self.fail(&row, 7, &e).await.map(drop),
        }
    }

    /// Step 8 (relay): the secret from TPM2_ActivateCredential to the PVA.
    pub(crate) async fn activation(&self, device: &DeviceId, body: &[u8]) -> Result<(), RoError> {
        let request =
            ActivateRequest::from_cbor(body).map_err(|e| RoError::Decode(e.to_string()))?;
        if request.device_id != *device {
            return Err(RoError::Decode("activation for another device".into()));
        }
        let _guard = self.lock(device).await;
        let row = self.row(device)?;
        let ak = match &row.state {
            DeviceState::Enrolling { ak_public, .. } => ak_public.clone(),
            DeviceState::Enrolled => return Ok(()),
            other => {
                return Err(RoError::WrongState { device: device.clone(), state: other.name() });
            }
        };
        match self.peers.activate(&request).await {
            Ok(response) => {
                // The PVA accepted this AK: the DPF checks the install receipt with it.
                let name =
                    Public::from_bytes(&ak).map(|p| p.name().as_ref().to_vec()).unwrap_or_default();
                if name != response.ak_name.as_ref() {
                    return self
                        .fail(&row, 7, &RoError::Decode("the PVA enrolled another AK".into()))
                        .await
                        .map(drop);
                }
                self.store.set_enrolled(device, &ak)?;
                self.store.transition(&row.campaign_id, device, &DeviceState::Enrolled, &[7])
            }
            Err(e) => self.fail(&row, 7, &e).await.map(drop),
        }
    }

    async fn issue_challenge(&self, row: &DeviceRow) -> Result<DeviceTask, RoError> {
        let device = &row.device_id;
        match self.peers.challenge(device).await {
            Ok(challenge) => {
                let state = DeviceState::Attesting {
                    nonce: challenge.nonce,
                    pcr_selection: challenge.pcr_selection,
                };
                self.store.transition(&row.campaign_id, device, &state, &[7])?;
                Ok(self.task_of(&row.campaign_id, &state))
            }
            Err(e) => self.fail(row, 8, &e).await,
        }
    }

    /// Steps 8–11: evidence to the PVA, the EAR to the new operator, the profile through the
    /// DPF's checks into an encrypted bundle.
    pub(crate) async fn evidence(&self, device: &DeviceId, body: &[u8]) -> Result<(), RoError> {
        let evidence = Evidence::from_cbor(body).map_err(|e| RoError::Decode(e.to_string()))?;
        if evidence.device_id != *device {
            return Err(RoError::Decode("evidence of another device".into()));
        }
        let _guard = self.lock(device).await;
        let row = self.row(device)?;
        let nonce = match &row.state {
            DeviceState::Attesting { nonce, .. } => *nonce,
            DeviceState::Delivering { .. } => return Ok(()),
            other => {
                return Err(RoError::WrongState { device: device.clone(), state: other.name() });
            }
        };
        let campaign = row.campaign_id.clone();
        self.store.transition(&campaign, device, &row.state, &[8])?;
        let timer = Instant::now();
        let appraisal = match self.peers.appraise(body.to_vec()).await {
            Ok(appraisal) => appraisal,
            Err(e) => return self.fail(&row, 8, &e).await.map(drop),
        };
        self.store.record_step(&campaign, device, 8, ms(timer))?;
        let ear = appraisal.ear.into_vec();
        let verified = match super::dpf::Dpf::evidence_bundle_key(&evidence)
            .and_then(|key| self.dpf.check_ear(&ear, device, &nonce, &key, SystemTime::now()))
        {
            Ok(verified) => verified,
            Err(e) => return self.fail(&row, 9, &e).await.map(drop),
        };
        let timer = Instant::now();
        let signed_profile =
            match self.peers.attestation(&self.campaign_of(&campaign)?, device, &ear).await {
                Ok(profile) => profile,
                Err(e) => return self.fail(&row, 9, &e).await.map(drop),
            };
        self.store.record_step(&campaign, device, 9, ms(timer))?;
        let timer = Instant::now();
        let campaign_row = self
            .store
            .campaign(&campaign)?
            .ok_or_else(|| RoError::UnknownCampaign(campaign.clone()))?;
        let release = match self.dpf.release(
            &verified,
            &ear,
            &campaign_row.to,
            device,
            &signed_profile,
            SystemTime::now(),
        ) {
            Ok(release) => release,
            Err(e) => return self.fail(&row, 10, &e).await.map(drop),
        };
        self.store.record_step(&campaign, device, 10, ms(timer))?;
        let bundle_key = verified.bundle_key().map(|k| k.tpm_name().to_vec()).unwrap_or_default();
        let state = DeviceState::Delivering {
            bundle: ByteBuf::from(release.bundle),
            ear: ByteBuf::from(ear),
            operator: campaign_row.to,
            expected: release.expected,
            bundle_key: ByteBuf::from(bundle_key),
        };
        self.store.transition(&campaign, device, &state, &[])
    }

    /// Steps 11–12: the install receipt (or the device's failure).
    pub(crate) async fn install(
        &self,
        device: &DeviceId,
        result: InstallResult,
        answer: Answer<'_>,
    ) -> Result<(), RoError> {
        let _guard = self.lock(device).await;
        let row = self.row(device)?;
        let (expected, bundle_key) = match &row.state {
            DeviceState::Delivering { expected, bundle_key, .. } => (expected.clone(), bundle_key),
            DeviceState::Installed | DeviceState::Aka { .. } => return Ok(()),
            other => {
                return Err(RoError::WrongState { device: device.clone(), state: other.name() });
            }
        };
        self.check_answer(device, AnswerStatement::install_task(bundle_key), answer)?;
        let campaign = row.campaign_id.clone();
        self.store.transition(&campaign, device, &row.state, &[11])?;
        let receipt = match result {
            InstallResult::Installed { receipt } => receipt,
            InstallResult::Failed { reason } => {
                return self
                    .fail(
                        &row,
                        11,
                        &RoError::Receipt(format!("the device did not install: {reason}")),
                    )
                    .await
                    .map(drop);
            }
        };
        let timer = Instant::now();
        let ak = self
            .store
            .enrolled_ak(device)?
            .ok_or_else(|| RoError::Receipt("no enrolled AK".into()))?;
        if let Err(e) = self.dpf.verify_receipt(&receipt, &ak, device, &expected) {
            return self.fail(&row, 12, &e).await.map(drop);
        }
        self.store.record_step(&campaign, device, 12, ms(timer))?;
        self.store.transition(&campaign, device, &DeviceState::Installed, &[])
    }

    /// Step 12: the USIM's AKA answer to the new operator's AuC.
    pub(crate) async fn aka(
        &self,
        device: &DeviceId,
        result: AkaResult,
        answer: Answer<'_>,
    ) -> Result<(), RoError> {
        let _guard = self.lock(device).await;
        let row = self.row(device)?;
        match &row.state {
            DeviceState::Aka { rand, autn } => {
                self.check_answer(device, AnswerStatement::aka_task(rand, autn), answer)?;
            }
            DeviceState::Switched => return Ok(()),
            other => {
                return Err(RoError::WrongState { device: device.clone(), state: other.name() });
            }
        }
        let campaign = row.campaign_id.clone();
        self.store.transition(&campaign, device, &row.state, &[12])?;
        let timer = Instant::now();
        let answer = match result {
            AkaResult::Res { res } => {
                self.peers
                    .aka_response(&self.campaign_of(&campaign)?, device, Some(&res), None)
                    .await
            }
            AkaResult::Auts { auts } => {
                self.peers
                    .aka_response(&self.campaign_of(&campaign)?, device, None, Some(&auts))
                    .await
            }
            AkaResult::Failed { reason } => Err(RoError::PeerRefused {
                peer: "device".into(),
                status: 0,
                problem_type: "aka-failed".into(),
                detail: format!("the new USIM refused AUTHENTICATE: {reason}"),
            }),
        };
        self.store.record_step(&campaign, device, 12, ms(timer))?;
        match answer {
            Ok(AkaAnswer::Live) => {
                self.store.transition(&campaign, device, &DeviceState::Switched, &[])?;
                if let Some(row) = self.store.device(device)? {
                    self.send_final_reports(&row).await;
                }
                Ok(())
            }
            Ok(AkaAnswer::Retry { rand, autn }) => {
                let state =
                    DeviceState::Aka { rand: ByteBuf::from(rand), autn: ByteBuf::from(autn) };
                self.store.transition(&campaign, device, &state, &[])
            }
            Err(e) => self.fail(&row, 12, &e).await.map(drop),
        }
    }

    /// After a failure: the device restored its old profile.
    pub(crate) async fn abort(&self, device: &DeviceId, ack: AbortAck) -> Result<(), RoError> {
        let _guard = self.lock(device).await;
        let row = self.row(device)?;
        let (step, reason) = match &row.state {
            DeviceState::Failed { step, reason } => (*step, reason.clone()),
            DeviceState::RolledBack { .. } => return Ok(()),
            other => {
                return Err(RoError::WrongState { device: device.clone(), state: other.name() });
            }
        };
        if !ack.usim_active || ack.tre_active {
            tracing::warn!(%device, "device reports it did not restore the USIM");
        }
        let state = DeviceState::RolledBack { step, reason };
        self.store.transition(&row.campaign_id, device, &state, &[])
    }

    /// Moves the device to `failed` at `step`, tells both operators, and returns the abort
    /// task the device gets next.
    async fn fail(
        &self,
        row: &DeviceRow,
        step: u8,
        error: &RoError,
    ) -> Result<DeviceTask, RoError> {
        tracing::warn!(device = %row.device_id, step, error = %error, "device change failed");
        let state = DeviceState::Failed { step, reason: error.to_string() };
        self.store.transition(&row.campaign_id, &row.device_id, &state, &[])?;
        if let Some(row) = self.store.device(&row.device_id)? {
            self.send_final_reports(&row).await;
        }
        Ok(self.task_of(&row.campaign_id, &state))
    }

    /// Reports a final outcome to both operators once (retried on every later poll until
    /// both took it).
    async fn send_final_reports(&self, row: &DeviceRow) {
        if row.reported {
            return;
        }
        let outcome = match &row.state {
            DeviceState::Switched => Ok(()),
            DeviceState::Failed { step, reason } | DeviceState::RolledBack { step, reason } => {
                Err((*step, reason.clone()))
            }
            _ => return,
        };
        let reported = match self.campaign_of(&row.campaign_id) {
            Ok(campaign) => self.peers.report(&campaign, &row.device_id, &outcome).await,
            Err(e) => Err(e),
        };
        match reported {
            Ok(()) => {
                if let Err(e) = self.store.mark_reported(&row.campaign_id, &row.device_id) {
                    tracing::error!(error = %e, "cannot record the report");
                }
            }
            Err(e) => {
                tracing::warn!(device = %row.device_id, error = %e, "report not delivered; will retry")
            }
        }
    }

    /// An answer that decides the change (install, AKA) must carry the enrolled AK's signature
    /// over its statement (`protocol::receipt::AnswerStatement`): the device API takes
    /// anonymous clients, and a forged "failed" after the card installed the new profile
    /// would have both operators give up the subscription the card now runs. A refused
    /// answer changes nothing; the device's own answer still counts.
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
    fn campaign_of(&self, id: &str) -> Result<CampaignRow, RoError> {
        self.store.campaign(id)?.ok_or_else(|| RoError::UnknownCampaign(id.to_owned()))
    }

    fn row(&self, device: &DeviceId) -> Result<DeviceRow, RoError> {
        self.store.device(device)?.ok_or_else(|| RoError::NotInCampaign(device.clone()))
    }
}

fn ms(timer: Instant) -> u64 {
    timer.elapsed().as_millis() as u64
}
