//! The device agent (TR 33.812 §5.1.3.5.3, DESIGN.md §2 steps 4–12 on the device): polls
//! the RO for tasks and carries them out with the TPM (attester) and the UICC — activate the
//! TRE, attach, enrol the AK, attest, install the new profile on trial, answer the new
//! operator's AKA, commit — or restore the old profile with the USIM active.
//!
//! The install is where the device's own checks live: the bundle opens only inside the TPM
//! in the attested PCR state (TPM2_ECDH_ZGen under PolicyPCR), the profile must be signed
//! under the CI root by the new operator that MNO-A's MACed activate-TRE command named (the
//! card's TRE activation, never what a task says), for the campaign it named, and its
//! sequence must exceed the TPM's anti-rollback counter. Any failure leaves the old profile
//! active with the USIM.
//!
//! Every answer is a function of durable state — the card's state file (which profile runs,
//! whether the change is on trial, committed or fell back), the TPM's NV counter and the
//! agent's [`Journal`] of signed receipts — so an agent killed and restarted at any point
//! continues: a re-delivered bundle already installed gets the same receipt, a repeated
//! commit or abort the same word. The card's fallback timer is the agent's to run: once it
//! expires the card goes back to the old profile and no commit is taken any more.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::device_api::{
    AbortAck, AkaResult, AttachRequest, CommitResult, DeviceTask, InstallResult,
};
use protocol::device_auth::{
    self, CredentialChallenge, CredentialProof, CredentialRequest, NONCE_LEN, RequestStatement,
};
use protocol::ear::EarVerifier;
use protocol::milenage::{Autn, Rand};
use protocol::order::{OrderError, OrderExpectations, OrderKind, verify_order};
use protocol::pva_api::{ActivateRequest, CredentialSecret, EnrolRequest, Message};
use protocol::receipt::{ANSWER_SIGNATURE_HEADER, AnswerStatement, Receipt, SignedReceipt};
use protocol::role::{Expected, Role as CertRole};
use protocol::tpm::PcrSelection;
use protocol::x509::TrustAnchors;
use protocol::{DeviceId, Nonce, SubscriptionProfile, bundle};
use reqwest::Method;
use serde_bytes::ByteBuf;
use transport::retry::Backoff;
use uicc::auth::Outcome as AkaOutcome;
use uicc::{Card, ChangeRef, Phase, UiccError};

use crate::attester::Attester;
pub use crate::card::Uicc;
use crate::error::{Error, Result};
use crate::journal::{Journal, JournalReceipt};
use crate::tpm::Tpm;

/// The most a bundle's sequence may run ahead of the TPM's counter. The counter only moves
/// one step per TPM2_NV_Increment, and a bundle far ahead would let a buggy or hostile
/// signer burn through it.
const MAX_SEQUENCE_JUMP: u64 = 16;
/// The agent's waits after a failure: 200 ms doubling up to 5 s, ±50 % jitter. A failing
/// agent thus asks at most about once a second on average, and thousands of them do not
/// hit a recovering RO in step.
const RETRY: Backoff = Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(5) };
/// The role name (certificate common name) whose signed orders end a change.
const RO_ROLE: &str = "ro";

/// Where the agent stands, read off the card: mirrors the RO's view (docs/flow.md) from the
/// device's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentState {
    /// Running on the old profile, nothing asked of it.
    Idle,
    /// TRE active, USIM inactive.
    TreActive,
    /// The new profile runs on trial, the old one kept as fallback.
    Installed,
    /// The card committed the new profile: done.
    Switched,
    /// The change was abandoned and the old profile is active again.
    RolledBack,
}

/// How the agent reaches the RO and what it trusts.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Base URL of the RO, e.g. `https://127.0.0.1:8443`.
    pub ro_url: String,
    /// The CI root(s): the RO's server certificate and every operator signature chain here.
    pub ci_roots: TrustAnchors,
    /// The CI root(s) as DER, for TLS.
    pub ci_roots_der: Vec<Vec<u8>>,
    /// Give up after this long without reaching a final state.
    pub deadline: Duration,
    /// How long a new profile may run on trial without the RO's commit before the card
    /// falls back to the old one (the fallback timer; it survives restarts in the card).
    pub fallback: Duration,
    /// The agent's journal of signed receipts (beside the card's state file).
    pub journal: std::path::PathBuf,
    /// If set, the agent keeps what it sent and received here: `evidence.cbor`, `ear.cbor`,
    /// `bundle.cose`, `receipt.cbor` (for inspection; none of them holds a plaintext secret).
    pub artifacts: Option<std::path::PathBuf>,
}

/// What became of the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub state: AgentState,
    pub imsi: String,
    pub iccid: String,
    pub usim_active: bool,
    pub tre_active: bool,
    /// Why the change was abandoned, if it was.
    pub abort_reason: Option<String>,
}

/// The device agent: one TPM, one UICC, one RO.
pub struct Agent<C: Uicc = Card> {
    attester: Attester,
    card: C,
    http: reqwest::Client,
    config: AgentConfig,
    journal: Journal,
    device_id: DeviceId,
    abort_reason: Option<String>,
    /// Consecutive failures, for the backoff.
    failures: u32,
    /// Whether the RO holds this device's AK (`protocol::device_auth`), as far as we know.
    bound: bool,
    /// The nonce the RO's latest answer carried, for the next request.
    nonce: Option<[u8; NONCE_LEN]>,
}

impl<C: Uicc> std::fmt::Debug for Agent<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("device_id", &self.device_id).finish_non_exhaustive()
    }
}

impl<C: Uicc> Agent<C> {
    pub fn new(mut attester: Attester, card: C, config: AgentConfig) -> Result<Self> {
        let roots: Vec<_> = config
            .ci_roots_der
            .iter()
            .map(|der| rustls_pki_types::CertificateDer::from(der.clone()))
            .collect();
        // Only the RO's certificate: any other role under the CI (the PVA's, an operator's)
        // is refused in the handshake, so nobody else can hand this device tasks.
        let ro = transport::ServerRole::Expected(Expected::role(CertRole::Ro));
        let http = transport::client::client(&roots, None, &ro)
            .map_err(|e| Error::Network(e.to_string()))?;
        let device_id = attester.device_id()?;
        let journal = Journal::open(&config.journal)?;
        Ok(Self {
            attester,
            card,
            http,
            config,
            journal,
            device_id,
            abort_reason: None,
            failures: 0,
            bound: false,
            nonce: None,
        })
    }

    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// Where the device stands, from its card.
    pub fn state(&self) -> AgentState {
        match self.card.change().map(|c| c.phase()) {
            Some(Phase::Trial) => AgentState::Installed,
            _ if self.card.tre_active() => AgentState::TreActive,
            Some(Phase::Committed) => AgentState::Switched,
            Some(Phase::FellBack { .. }) => AgentState::RolledBack,
            None => AgentState::Idle,
        }
    }

    pub fn card(&self) -> &C {
        &self.card
    }

    /// The TPM, for experiments between tasks (the attack matrix extends PCRs here).
    pub fn tpm(&mut self) -> &mut Tpm {
        self.attester.tpm()
    }

    /// The attester, for experiments between tasks (the attack matrix builds its forged
    /// evidence from genuine evidence of this TPM).
    pub fn attester(&mut self) -> &mut Attester {
        &mut self.attester
    }

    /// The UICC, for experiments between tasks (the attack matrix hands it OTA commands).
    pub fn card_mut(&mut self) -> &mut C {
        &mut self.card
    }

    /// Polls and works until the RO says the change is over. Failures — the RO or a peer
    /// down, a task that could not be carried out — are retried with exponential backoff
    /// and jitter; the fallback timer runs throughout.
    pub async fn run(&mut self) -> Result<Outcome> {
        let started = Instant::now();
        loop {
            if started.elapsed() > self.config.deadline {
                // Giving up is a terminal state too: without the RO's word the change did
                // not happen, so the old profile and the USIM come back (a committed change
                // stays, as always).
                if let Err(e) = self.restore_old_profile("no final word from the RO in time") {
                    tracing::error!(device = %self.device_id, error = %e, "the card did not fall back");
                }
                return Err(Error::Network(format!(
                    "no final state after {:?} (device {})",
                    self.config.deadline, self.device_id
                )));
            }
            if let Err(e) = self.run_fallback_timer() {
                // The card could not write its fallback (a full disk): try again later.
                self.back_off("the fallback timer expired but the card did not fall back", &e)
                    .await;
                continue;
            }
            let task = match self.next_task_or_fallback().await {
                // The RO answers: whatever failed before may work now.
                Ok(Some(task)) => {
                    self.failures = self.failures.min(1);
                    task
                }
                Ok(None) => continue,
                Err(e) => {
                    // The RO may be restarting: it resumes where it stopped, so wait and ask again.
                    self.back_off("no task from the RO", &e).await;
                    continue;
                }
            };
            match task {
                DeviceTask::Idle => {
                    self.failures = 0;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                DeviceTask::Done { campaign, switched, reason } => {
                    return self.done(&campaign, switched, reason);
                }
                task => match self.handle(task).await {
                    Ok(()) => self.failures = 0,
                    // The RO decides what a refused answer means (usually an abort task);
                    // the agent keeps polling.
                    Err(e) => self.back_off("task failed", &e).await,
                },
            }
        }
    }

    /// Waits before the next try after a failure ([`RETRY`]).
    async fn back_off(&mut self, what: &str, error: &Error) {
        let wait = RETRY.wait(self.failures);
        self.failures = self.failures.saturating_add(1);
        tracing::warn!(device = %self.device_id, error = %error, attempt = self.failures, retry_in_ms = wait.as_millis() as u64, "{what}");
        tokio::time::sleep(wait).await;
    }

    /// The next task, unless the fallback timer of a change on trial expires first.
    async fn next_task_or_fallback(&mut self) -> Result<Option<DeviceTask>> {
        let due = self.card.change().filter(|c| c.on_trial()).map(|c| c.fallback_at);
        let Some(due) = due else { return self.next_task().await.map(Some) };
        let wait = Duration::from_secs(due.saturating_sub(unix_now()));
        tokio::select! {
            task = self.next_task() => task.map(Some),
            () = tokio::time::sleep(wait) => Ok(None),
        }
    }

    /// The fallback timer: a change on trial past its time goes back to the old profile.
    fn run_fallback_timer(&mut self) -> Result<()> {
        if self.card.fallback_due(unix_now()) {
            self.card
                .fall_back("fallback timer expired")
                .map_err(|e| Error::Uicc(e.to_string()))?;
            tracing::warn!(device = %self.device_id, imsi = %self.card.imsi(), "fallback timer expired: old profile restored");
        }
        Ok(())
    }

    /// The RO says the change is over. Anything but its word that the card committed this
    /// change ends with the old profile and the USIM active.
    fn done(&mut self, campaign: &str, switched: bool, reason: Option<String>) -> Result<Outcome> {
        let committed = self.committed(campaign);
        if switched && !committed {
            tracing::error!(device = %self.device_id, campaign, "the RO reports a switch the card never committed");
        }
        if !committed {
            self.restore_old_profile(reason.as_deref().unwrap_or("the change ended"))?;
            self.abort_reason = reason.or_else(|| Some("the change ended without a commit".into()));
        }
        let mut outcome = self.outcome();
        outcome.state = if committed { AgentState::Switched } else { AgentState::RolledBack };
        Ok(outcome)
    }

    /// Carries out one task and posts its result, between the fault points
    /// `device.<task>.before` and `device.<task>.after` (`protocol::fault`).
    pub async fn handle(&mut self, task: DeviceTask) -> Result<()> {
        let kind = task_kind(&task);
        fault(&format!("device.{kind}.before"))?;
        self.carry_out(task).await?;
        fault(&format!("device.{kind}.after"))
    }

    async fn carry_out(&mut self, task: DeviceTask) -> Result<()> {
        match task {
            DeviceTask::Idle | DeviceTask::Done { .. } => Ok(()),
            DeviceTask::ActivateTre { campaign, command } => {
                self.journal.set_campaign(&campaign)?;
                self.activate_tre(&campaign, &command).await
            }
            DeviceTask::Enrol => {
                let request = self.attester.enrolment_request()?;
                let body = EnrolRequest {
                    device_id: request.device_id,
                    ek_certificate: ByteBuf::from(request.ek_certificate),
                    ek_intermediates: Vec::new(),
                    ek_public: ByteBuf::from(request.ek_public),
                    ak_public: ByteBuf::from(request.ak_public),
                };
                let bytes = body.to_cbor().map_err(|e| Error::Protocol(e.to_string()))?;
                self.post_raw("enrolment", bytes).await
            }
            DeviceTask::ActivateCredential { id_object, encrypted_secret } => {
                let secret = self.attester.activate_credential(&id_object, &encrypted_secret)?;
                let body = ActivateRequest {
                    device_id: self.device_id.clone(),
                    ak_name: ByteBuf::from(self.attester.ak_name()?),
                    secret: CredentialSecret::from_slice(&secret)
                        .map_err(|e| Error::Protocol(e.to_string()))?,
                };
                let bytes = body.to_cbor().map_err(|e| Error::Protocol(e.to_string()))?;
                self.post_raw("activation", bytes).await
            }
            DeviceTask::Attest { nonce, pcr_selection } => {
                let selection: PcrSelection = pcr_selection
                    .parse()
                    .map_err(|e| Error::Protocol(format!("PCR selection from the PVA: {e}")))?;
                self.attester.set_selection(selection);
                let evidence = self.evidence(&nonce)?;
                let bytes = evidence.to_cbor().map_err(|e| Error::Protocol(e.to_string()))?;
                self.keep("evidence.cbor", &bytes)?;
                self.post_raw("evidence", bytes).await
            }
            DeviceTask::Install { bundle, ear, .. } => {
                // The answer is signed for the bundle key this device attested, which the
                // RO knows too, whatever happened to the task on its way here.
                let task = AnswerStatement::install_task(&self.bundle_key_name()?);
                self.keep("ear.cbor", &ear)?;
                self.keep("bundle.cose", &bundle)?;
                let result = match self.install(&bundle, &ear) {
                    Ok(receipt) => {
                        self.keep("receipt.cbor", &receipt)?;
                        InstallResult::Installed { receipt: ByteBuf::from(receipt) }
                    }
                    Err(e @ Error::Io { .. }) => return Err(e),
                    Err(e) => {
                        tracing::warn!(device = %self.device_id, error = %e, "install refused");
                        self.restore_old_profile(&format!("install refused: {e}"))?;
                        InstallResult::Failed { reason: e.to_string() }
                    }
                };
                self.post_answer("install", &result, task).await
            }
            DeviceTask::Aka { rand, autn } => {
                let result = self.aka(&rand, &autn);
                self.post_answer("aka", &result, AnswerStatement::aka_task(&rand, &autn)).await
            }
            DeviceTask::Commit { campaign, sequence, order } => {
                // Checked against the change the card runs on trial, not the task's word;
                // a task that names another change than the card's is refused as well.
                if let Some(change) = self.card.change().filter(|c| c.on_trial()) {
                    self.check_order(
                        &order,
                        OrderKind::Commit,
                        &change.campaign,
                        Some(change.sequence),
                    )?;
                    let refused = if change.campaign != campaign {
                        Some(OrderError::WrongCampaign {
                            expected: change.campaign,
                            found: campaign.clone(),
                        })
                    } else if change.sequence != sequence {
                        Some(OrderError::WrongSequence {
                            expected: change.sequence,
                            found: Some(sequence),
                        })
                    } else {
                        None
                    };
                    if let Some(e) = refused {
                        return Err(Error::Protocol(format!("commit order refused: {e}")));
                    }
                } else {
                    self.check_order(&order, OrderKind::Commit, &campaign, Some(sequence))?;
                }
                // The timer is the card's word: once it expired, no commit is taken.
                self.run_fallback_timer()?;
                let result = match self.card.commit_change(&campaign, sequence) {
                    Ok(Phase::Committed) => {
                        tracing::info!(device = %self.device_id, imsi = %self.card.imsi(), "change committed");
                        CommitResult::Committed { imsi: self.card.imsi().to_string() }
                    }
                    Ok(Phase::FellBack { reason }) => {
                        CommitResult::FellBack { imsi: self.card.imsi().to_string(), reason }
                    }
                    Ok(Phase::Trial) => {
                        return Err(Error::Uicc("the card stayed on trial after a commit".into()));
                    }
                    Err(e) => return Err(Error::Uicc(e.to_string())),
                };
                let task = AnswerStatement::order_task("commit", &campaign);
                self.post_answer("commit", &result, task).await
            }
            DeviceTask::Abort { campaign, reason, order } => {
                // Only the change under way may be aborted: the one on trial, or the one
                // MNO-A's MACed command activated the TRE for (the card's word, not the
                // journal's). With nothing to undo any campaign's order is moot.
                let under_way = match self.card.change().filter(|c| c.on_trial()) {
                    Some(change) => Some(change.campaign),
                    None if self.card.tre_active() => {
                        self.card.tre_activation().map(|a| a.campaign().to_owned())
                    }
                    None => None,
                };
                let on = under_way.unwrap_or_else(|| campaign.clone());
                self.check_order(&order, OrderKind::Abort, &on, None)?;
                let committed = self.committed(&campaign);
                if !committed && let Err(e) = self.restore_old_profile(&reason) {
                    // Reported through the flags below; the RO asks again.
                    tracing::error!(device = %self.device_id, error = %e, "the card did not fall back");
                }
                self.abort_reason = Some(reason);
                let ack = AbortAck {
                    usim_active: self.card.usim_active(),
                    tre_active: self.card.tre_active(),
                    imsi: self.card.imsi().to_string(),
                    committed,
                };
                let task = AnswerStatement::order_task("abort", &campaign);
                self.post_answer("abort", &ack, task).await
            }
        }
    }

    /// Step 4 on the card, then step 5: attach with the EK certificate and the card's MACed
    /// response to the command, which the RO forwards to MNO-A as the card's proof of its
    /// ICCID, IMSI and the campaign.
    async fn activate_tre(&mut self, campaign: &str, command: &[u8]) -> Result<()> {
        let activated = |card: &C| {
            card.tre_activation().filter(|a| card.tre_active() && a.campaign() == campaign)
        };
        // Carried out before (its attach was lost, or the agent restarted): the card's
        // response stands. Otherwise the card runs the command; one it refuses (bad MAC,
        // replayed counter, another card's) leaves the USIM active and gives no proof: the
        // DRF learns it from `tre_active`, MNO-A from the missing proof.
        if activated(&self.card).is_none()
            && let Err(e) = self.card.ota(command)
        {
            tracing::warn!(device = %self.device_id, error = %e, "activate-TRE refused by the UICC");
        }
        let proof = activated(&self.card).map(|a| a.response().to_vec()).unwrap_or_default();
        let request = self.attester.enrolment_request()?;
        let attach = AttachRequest {
            device_id: request.device_id,
            ek_certificate: ByteBuf::from(request.ek_certificate),
            ek_public: ByteBuf::from(request.ek_public),
            tre_active: self.card.tre_active(),
            activation_proof: ByteBuf::from(proof),
        };
        let body =
            protocol::device_api::to_cbor(&attach).map_err(|e| Error::Protocol(e.to_string()))?;
        self.post_raw("attach", body).await
    }

    /// Step 11: open the bundle inside the TPM, check it — signed by the new operator the
    /// card's TRE activation names, for its campaign — and install it on trial; returns the
    /// signed receipt (CBOR). A bundle already installed is answered from the journal.
    fn install(&mut self, bundle_bytes: &[u8], ear: &[u8]) -> Result<Vec<u8>> {
        let activation = self.card.tre_activation().ok_or_else(|| {
            Error::Bundle("the card holds no TRE activation naming the new operator".into())
        })?;
        let operator = activation.operator().to_owned();
        let ear_hash = bundle::ear_hash(ear);
        let selection = self.attester.selection().clone();
        let device_id = self.device_id.clone();
        let nonce = self.evidence_nonce()?;
        let tpm = self.attester.tpm();
        let key = tpm.bundle_key()?.ok_or(Error::Protocol("no bundle key: not attested".into()))?;
        // Before the bundle is opened, the PVA's word, checked here and not taken from the
        // RO: signed by the PVA role under the CI, for this device, answering this device's
        // latest evidence, affirming, unexpired, certifying the bundle key this TPM holds.
        // A re-delivery of the change the card already holds was checked so when it came
        // first (its EAR may have expired since): the journal's receipt answers it below.
        let holds_change = self.card.change().is_some_and(|c| {
            c.campaign == activation.campaign() && !matches!(c.phase(), Phase::FellBack { .. })
        });
        if !holds_change {
            check_attestation_result_for(
                &self.config.ci_roots,
                ear,
                &device_id,
                &nonce,
                &key.name,
            )?;
        }
        let expected = bundle::BundleExpectations {
            ci_roots: &self.config.ci_roots,
            now: SystemTime::now(),
            operator: &operator,
            device_id: &device_id,
            ear_hash: &ear_hash,
        };
        let verified = bundle::open_bundle(bundle_bytes, &expected, |x, y| {
            tpm.ecdh_z_gen(&key, &selection, x, y)
        })
        .map_err(|e| Error::Bundle(e.to_string()))?;
        let sequence = verified.sequence();
        let campaign = verified.payload.campaign.clone();
        let profile = verified.payload.profile.clone();
        if campaign != activation.campaign() {
            return Err(Error::Bundle(format!(
                "the profile is for campaign {campaign:?}, the TRE is activated for {:?}",
                activation.campaign()
            )));
        }
        if let Some(change) = self.card.change()
            && change.campaign == campaign
            && change.sequence == sequence
        {
            return match change.phase() {
                // Installed before the answer got through: the same receipt again.
                Phase::Trial | Phase::Committed => self.receipt(&campaign, sequence, &profile),
                Phase::FellBack { reason } => {
                    Err(Error::Bundle(format!("this change already fell back: {reason}")))
                }
            };
        }
        let counter = self.attester.tpm().rollback_counter()?;
        bundle::check_sequence(sequence, counter).map_err(|e| Error::Bundle(e.to_string()))?;
        if sequence - counter > MAX_SEQUENCE_JUMP {
            return Err(Error::Bundle(format!(
                "sequence {sequence} runs more than {MAX_SEQUENCE_JUMP} ahead of the counter {counter}"
            )));
        }
        let change = ChangeRef {
            campaign: campaign.clone(),
            sequence,
            fallback_at: unix_now().saturating_add(self.config.fallback.as_secs()),
        };
        self.card.install_on_trial(profile.clone(), change).map_err(|e| {
            if not_installed(&e) {
                Error::Uicc(e.to_string())
            } else {
                // Perhaps written, not confirmed: the next delivery finds out from the card.
                Error::Io {
                    what: "the card's state".into(),
                    source: std::io::Error::other(e.to_string()),
                }
            }
        })?;
        self.receipt(&campaign, sequence, &profile)
    }

    /// The receipt for an installed change: the anti-rollback counter brought up to its
    /// sequence, then the journal's receipt, or a new one signed and journaled first.
    fn receipt(
        &mut self,
        campaign: &str,
        sequence: u64,
        profile: &SubscriptionProfile,
    ) -> Result<Vec<u8>> {
        let tpm = self.attester.tpm();
        let mut now = tpm.rollback_counter()?;
        while now < sequence {
            fault("device.counter.before")?;
            now = tpm.increment_rollback_counter()?;
            fault("device.counter.after")?;
        }
        if let Some(receipt) = self.journal.receipt(campaign, sequence) {
            return Ok(receipt.to_vec());
        }
        let receipt =
            Receipt::new(self.device_id.clone(), profile.iccid.clone(), &profile.imsi, sequence);
        let message = receipt.to_cbor().map_err(|e| Error::Protocol(e.to_string()))?;
        let ak = tpm.ak(crate::tpm::KeyAlg::Ecc)?;
        let signature = tpm.sign(&ak, &message)?;
        let signed =
            SignedReceipt { receipt: ByteBuf::from(message), signature: ByteBuf::from(signature) }
                .to_cbor()
                .map_err(|e| Error::Protocol(e.to_string()))?;
        self.journal.set_receipt(JournalReceipt {
            campaign: campaign.to_owned(),
            sequence,
            receipt: signed.clone(),
        })?;
        Ok(signed)
    }

    /// Step 12 on the card: USIM AUTHENTICATE in 3G context.
    fn aka(&mut self, rand: &[u8], autn: &[u8]) -> AkaResult {
        let (Ok(rand), Ok(autn)) = (<[u8; 16]>::try_from(rand), <[u8; 16]>::try_from(autn)) else {
            return AkaResult::Failed { reason: "RAND and AUTN must be 16 bytes".into() };
        };
        match self.card.run_aka(&Rand(rand), &Autn(autn)) {
            AkaOutcome::Success { res, .. } => {
                AkaResult::Res { res: ByteBuf::from(res.0.to_vec()) }
            }
            AkaOutcome::SyncFailure(auts) => {
                AkaResult::Auts { auts: ByteBuf::from(auts.0.to_vec()) }
            }
            AkaOutcome::MacFailure => AkaResult::Failed { reason: "MAC failure (SW 9862)".into() },
            AkaOutcome::Refused(sw) => {
                AkaResult::Failed { reason: format!("refused with SW {sw:?}") }
            }
            AkaOutcome::Malformed => AkaResult::Failed { reason: "malformed answer".into() },
        }
    }

    /// The device's own check of an attestation result it is handed with a bundle (as
    /// [`Agent::handle`] makes it for an install): signed by the PVA role under the CI, for
    /// this device, answering its latest evidence's nonce, affirming, unexpired, certifying
    /// the bundle key its TPM holds.
    pub fn check_attestation_result(&mut self, ear: &[u8]) -> Result<()> {
        let nonce = self.evidence_nonce()?;
        let key = self
            .attester
            .tpm()
            .bundle_key()?
            .ok_or(Error::Protocol("no bundle key: not attested".into()))?;
        check_attestation_result_for(&self.config.ci_roots, ear, &self.device_id, &nonce, &key.name)
    }

    /// The nonce of the device's latest evidence (journaled).
    fn evidence_nonce(&self) -> Result<Nonce> {
        let nonce = self.journal.nonce().map(Nonce::from_bytes).transpose();
        nonce
            .map_err(|e| Error::Protocol(format!("journal nonce: {e}")))?
            .ok_or_else(|| Error::Bundle("no evidence sent: no attestation result expected".into()))
    }

    /// Evidence for `nonce` (the attester's current PCR selection); the nonce is journaled
    /// first, for the attestation result that comes back with a bundle must answer it.
    pub fn evidence(&mut self, nonce: &Nonce) -> Result<protocol::evidence::Evidence> {
        self.journal.set_nonce(nonce.as_bytes())?;
        self.attester.evidence(nonce)
    }

    /// The TPM name of the bundle key of the latest attestation (empty if none).
    pub fn bundle_key_name(&mut self) -> Result<Vec<u8>> {
        Ok(self.attester.tpm().bundle_key()?.map(|k| k.name).unwrap_or_default())
    }

    /// The RO's signed order (`protocol::order`) must be the RO's, for this device, this
    /// campaign and, for a commit, the change on trial: nobody else ends a change.
    fn check_order(
        &self,
        order: &[u8],
        kind: OrderKind,
        campaign: &str,
        sequence: Option<u64>,
    ) -> Result<()> {
        let expected = OrderExpectations {
            ci_roots: &self.config.ci_roots,
            now: SystemTime::now(),
            signer: RO_ROLE,
            kind,
            device_id: &self.device_id,
            campaign,
            sequence,
        };
        verify_order(order, &expected)
            .map(drop)
            .map_err(|e| Error::Protocol(format!("{} order refused: {e}", kind.name())))
    }

    /// Whether the card committed the change of `campaign`.
    fn committed(&self, campaign: &str) -> bool {
        self.card.change().is_some_and(|c| c.campaign == campaign && c.phase() == Phase::Committed)
    }

    /// Back to the old profile with the USIM active: the TRE deactivated, a change on trial
    /// undone. A committed change stays.
    fn restore_old_profile(&mut self, reason: &str) -> Result<()> {
        let on_trial = self.card.change().is_some_and(|c| c.on_trial());
        if !on_trial && !self.card.tre_active() {
            return Ok(());
        }
        self.card.fall_back(reason).map(drop).map_err(|e| Error::Uicc(e.to_string()))
    }

    /// Writes an artifact if the configuration asks for them.
    fn keep(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(dir) = &self.config.artifacts else { return Ok(()) };
        let io =
            |source| Error::Io { what: format!("artifact {name} in {}", dir.display()), source };
        storage::private_dir(dir).map_err(io)?;
        uicc::store::write_atomic(&dir.join(name), bytes, &uicc::store::FaultPlan::default())
            .map_err(|f| io(f.source))
    }

    fn outcome(&self) -> Outcome {
        let abort_reason = match self.card.change().map(|c| c.phase()) {
            Some(Phase::FellBack { reason }) if self.abort_reason.is_none() => Some(reason),
            _ => self.abort_reason.clone(),
        };
        Outcome {
            state: self.state(),
            imsi: self.card.imsi().to_string(),
            iccid: self.card.iccid().to_string(),
            usim_active: self.card.usim_active(),
            tre_active: self.card.tre_active(),
            abort_reason,
        }
    }

    async fn next_task(&mut self) -> Result<DeviceTask> {
        let path = format!("/v1/devices/{}/task", self.device_id);
        let bytes = self.request(Method::GET, &path, Vec::new(), None).await?;
        protocol::device_api::from_cbor(&bytes).map_err(|e| Error::Protocol(e.to_string()))
    }

    async fn post_raw(&mut self, what: &str, body: Vec<u8>) -> Result<()> {
        let path = format!("/v1/devices/{}/{what}", self.device_id);
        self.request(Method::POST, &path, body, None).await.map(drop)
    }

    /// Posts an answer that decides the change (install, AKA, commit, abort) with the AK's
    /// signature over its [`AnswerStatement`]: the RO acts only on answers of this
    /// device's TPM.
    async fn post_answer<T: serde::Serialize>(
        &mut self,
        what: &str,
        body: &T,
        task: [u8; 32],
    ) -> Result<()> {
        let bytes =
            protocol::device_api::to_cbor(body).map_err(|e| Error::Protocol(e.to_string()))?;
        let statement = AnswerStatement::new(self.device_id.clone(), task, &bytes)
            .to_cbor()
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let tpm = self.attester.tpm();
        let ak = tpm.ak(crate::tpm::KeyAlg::Ecc)?;
        let signature = hex::encode(tpm.sign(&ak, &statement)?);
        let path = format!("/v1/devices/{}/{what}", self.device_id);
        self.request(Method::POST, &path, bytes, Some(signature)).await.map(drop)
    }

    /// One request on the device channel (`protocol::device_auth`): binds the AK first if
    /// the RO does not know it, signs the request with the AK over the RO's latest nonce,
    /// keeps the nonce the answer carries, and retries once when the RO refused the nonce
    /// (it restarted, or the nonce expired) or no longer knows the AK.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        answer_signature: Option<String>,
    ) -> Result<Bytes> {
        if !self.bound {
            self.bind().await?;
        }
        let mut retried = false;
        loop {
            let nonce = self.nonce.take().unwrap_or([0; NONCE_LEN]);
            let statement =
                RequestStatement::new(self.device_id.clone(), method.as_str(), path, nonce, &body)
                    .to_cbor()
                    .map_err(|e| Error::Protocol(e.to_string()))?;
            let tpm = self.attester.tpm();
            let ak = tpm.ak(crate::tpm::KeyAlg::Ecc)?;
            let signature = hex::encode(tpm.sign(&ak, &statement)?);
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.config.ro_url))
                .header(device_auth::NONCE_HEADER, hex::encode(nonce))
                .header(device_auth::SIGNATURE_HEADER, signature);
            if method == Method::POST {
                request = request.header("content-type", "application/cbor").body(body.clone());
            }
            if let Some(answer) = &answer_signature {
                request = request.header(ANSWER_SIGNATURE_HEADER, answer);
            }
            let response = request.send().await.map_err(|e| Error::Network(e.to_string()))?;
            self.keep_nonce(response.headers());
            match transport::client::check(response).await {
                Ok(response) => {
                    return transport::client::read_limited(
                        response,
                        protocol::device_api::MAX_MESSAGE_SIZE,
                    )
                    .await
                    .map_err(|e| Error::Network(e.to_string()));
                }
                Err(transport::Error::Problem(p))
                    if !retried && p.type_uri.ends_with("/device-nonce") =>
                {
                    retried = true;
                }
                Err(transport::Error::Problem(p))
                    if !retried && p.type_uri.ends_with("/device-not-authenticated") =>
                {
                    retried = true;
                    self.bind().await?;
                }
                Err(e) => return Err(Error::Network(e.to_string())),
            }
        }
    }

    /// Binds the AK to this device at the RO: TPM2_ActivateCredential answers the RO's
    /// challenge, which only the TPM holding both the EK and the AK can.
    async fn bind(&mut self) -> Result<()> {
        let request = self.attester.enrolment_request()?;
        let body = protocol::device_api::to_cbor(&CredentialRequest {
            ek_certificate: ByteBuf::from(request.ek_certificate),
            ek_public: ByteBuf::from(request.ek_public),
            ak_public: ByteBuf::from(request.ak_public),
        })
        .map_err(|e| Error::Protocol(e.to_string()))?;
        let path = format!("/v1/devices/{}/credential", self.device_id);
        let challenge: CredentialChallenge = {
            let bytes = self.plain_post(&path, body).await?;
            protocol::device_api::from_cbor(&bytes).map_err(|e| Error::Protocol(e.to_string()))?
        };
        let secret =
            self.attester.activate_credential(&challenge.id_object, &challenge.encrypted_secret)?;
        let proof = protocol::device_api::to_cbor(&CredentialProof {
            secret: ByteBuf::from(secret.to_vec()),
        })
        .map_err(|e| Error::Protocol(e.to_string()))?;
        self.plain_post(&format!("{path}/activate"), proof).await?;
        self.bound = true;
        tracing::info!(device = %self.device_id, "AK bound at the RO");
        Ok(())
    }

    /// An unsigned POST (the binding's two steps).
    async fn plain_post(&mut self, path: &str, body: Vec<u8>) -> Result<Bytes> {
        let response = self
            .http
            .post(format!("{}{path}", self.config.ro_url))
            .header("content-type", "application/cbor")
            .body(body)
            .send()
            .await
            .map_err(|e| Error::Network(e.to_string()))?;
        self.keep_nonce(response.headers());
        let response =
            transport::client::check(response).await.map_err(|e| Error::Network(e.to_string()))?;
        transport::client::read_limited(response, protocol::device_api::MAX_MESSAGE_SIZE)
            .await
            .map_err(|e| Error::Network(e.to_string()))
    }

    fn keep_nonce(&mut self, headers: &reqwest::header::HeaderMap) {
        if let Some(nonce) = headers
            .get(device_auth::NEXT_NONCE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(device_auth::parse_nonce)
        {
            self.nonce = Some(nonce);
        }
    }
}

/// The name of a task's kind, as its fault points and the RO's routes spell it.
/// The check of [`Agent::check_attestation_result`], for a given nonce and bundle key: the
/// EAR verifies under the CI roots (signed by a PVA, unexpired, affirming, for this device
/// and this nonce) and certifies exactly the TPM's bundle key. An EAR of an
/// attestation-only appraisal (no bundle-key claim) is refused: it says nothing about the
/// key a bundle would be encrypted to.
pub fn check_attestation_result_for(
    ci_roots: &TrustAnchors,
    ear: &[u8],
    device: &DeviceId,
    nonce: &Nonce,
    bundle_key_name: &[u8],
) -> Result<()> {
    let verified =
        EarVerifier::new(ci_roots.clone()).verify(ear, SystemTime::now(), device, Some(nonce))?;
    let key = verified.bundle_key().map_err(|_| {
        Error::Bundle(
            "the attestation result certifies no bundle key (an attestation-only appraisal): \
             it cannot gate a bundle"
                .into(),
        )
    })?;
    if key.tpm_name() != bundle_key_name {
        return Err(Error::Bundle(
            "the attestation result certifies another bundle key than this TPM's".into(),
        ));
    }
    Ok(())
}

fn task_kind(task: &DeviceTask) -> &'static str {
    match task {
        DeviceTask::Idle => "idle",
        DeviceTask::ActivateTre { .. } => "activate-tre",
        DeviceTask::Enrol => "enrol",
        DeviceTask::ActivateCredential { .. } => "activate-credential",
        DeviceTask::Attest { .. } => "attest",
        DeviceTask::Install { .. } => "install",
        DeviceTask::Aka { .. } => "aka",
        DeviceTask::Commit { .. } => "commit",
        DeviceTask::Abort { .. } => "abort",
        DeviceTask::Done { .. } => "done",
    }
}

fn fault(point: &str) -> Result<()> {
    protocol::fault::point(point).map_err(|e| Error::Uicc(e.to_string()))
}

/// Whether a failed install certainly left the new profile off the card (so the answer is
/// "not installed"), as opposed to a write whose outcome is unknown.
fn not_installed(e: &UiccError) -> bool {
    match e {
        UiccError::InstallFailed { committed, .. } => !committed,
        UiccError::Persist { step, .. } => !step.committed(),
        UiccError::TreNotActive
        | UiccError::ChangeOnTrial { .. }
        | UiccError::ChangeMismatch { .. }
        | UiccError::ChangeSettled { .. }
        | UiccError::NotActivated
        | UiccError::ActivationMismatch { .. } => true,
        _ => false,
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
