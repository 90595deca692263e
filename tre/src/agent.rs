//! The device agent (TR 33.812 §5.1.3.5.3, DESIGN.md §2 steps 4–12 on the device): polls
//! the RO for tasks and carries them out with the TPM (attester) and the UICC — activate the
//! TRE, attach, enrol the AK, attest, install the new profile, answer the new operator's
//! AKA — or, on abort, restore the old profile with the USIM active.
//!
//! The install is where the device's own checks live: the bundle opens only inside the TPM
//! in the attested PCR state (TPM2_ECDH_ZGen under PolicyPCR), the profile must be signed by
//! the expected new operator under the CI root, and its sequence must exceed the TPM's
//! anti-rollback counter. Any failure leaves the old profile active with the USIM.

use std::time::{Duration, Instant, SystemTime};

use protocol::device_api::{AbortAck, AkaResult, AttachRequest, DeviceTask, InstallResult};
use protocol::milenage::{Autn, Rand};
use protocol::pva_api::{ActivateRequest, CredentialSecret, EnrolRequest, Message};
use protocol::receipt::{ANSWER_SIGNATURE_HEADER, AnswerStatement, Receipt, SignedReceipt};
use protocol::tpm::PcrSelection;
use protocol::x509::TrustAnchors;
use protocol::{DeviceId, bundle};
use protocol::{Iccid, Imsi, SubscriptionProfile};
use serde_bytes::ByteBuf;
use uicc::auth::Outcome as AkaOutcome;
use uicc::{Card, UiccError};

use crate::attester::Attester;
use crate::error::{Error, Result};
use crate::tpm::Tpm;

/// The most a bundle's sequence may run ahead of the TPM's counter. The counter only moves
/// one step per TPM2_NV_Increment, and a bundle far ahead would let a buggy or hostile
/// signer burn through it.
const MAX_SEQUENCE_JUMP: u64 = 16;

/// Where the agent stands; mirrors the RO's view (docs/flow.md) from the device's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentState {
    /// Running on the old profile, nothing asked of it.
    Idle,
    /// TRE active, USIM inactive, attached to the DRF.
    TreActive,
    /// The new profile is installed and the USIM runs it.
    Installed,
    /// The new operator's AKA succeeded: done.
    Switched,
    /// The change was aborted and the old profile is active again.
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
    /// Why the change was aborted, if it was.
    pub abort_reason: Option<String>,
}

/// What the agent asks of its UICC: the TRE operations of TR 33.812 §5.4.4.3 and the
/// USIM's AKA. [`uicc::Card`] is the implementation; the trait lets end-to-end tests wrap
/// a real card to make one operation fail and watch the system's reaction.
pub trait Uicc {
    /// The operator's OTA command (activate TRE): MAC and counter checked by the card.
    fn ota(&mut self, apdu: &[u8]) -> std::result::Result<(), UiccError>;
    /// Atomic replace of the profile, then a reset: USIM active with the new IMSI.
    fn install_profile(
        &mut self,
        profile: SubscriptionProfile,
    ) -> std::result::Result<(), UiccError>;
    /// Back to the old profile with the USIM active.
    fn abort_tre(&mut self) -> std::result::Result<(), UiccError>;
    /// SELECT ADF_USIM and AUTHENTICATE (3G context).
    fn run_aka(&mut self, rand: &Rand, autn: &Autn) -> AkaOutcome;
    fn usim_active(&self) -> bool;
    fn tre_active(&self) -> bool;
    fn iccid(&self) -> Iccid;
    fn imsi(&self) -> Imsi;
}

impl Uicc for Card {
    fn ota(&mut self, apdu: &[u8]) -> std::result::Result<(), UiccError> {
        Card::ota(self, apdu).map(drop)
    }
    fn install_profile(
        &mut self,
        profile: SubscriptionProfile,
    ) -> std::result::Result<(), UiccError> {
        Card::install_profile(self, profile)
    }
    fn abort_tre(&mut self) -> std::result::Result<(), UiccError> {
        Card::abort_tre(self)
    }
    fn run_aka(&mut self, rand: &Rand, autn: &Autn) -> AkaOutcome {
        Card::run_aka(self, rand, autn)
    }
    fn usim_active(&self) -> bool {
        Card::usim_active(self)
    }
    fn tre_active(&self) -> bool {
        Card::tre_active(self)
    }
    fn iccid(&self) -> Iccid {
        Card::iccid(self).clone()
    }
    fn imsi(&self) -> Imsi {
        Card::imsi(self).clone()
    }
}

/// The device agent: one TPM, one UICC, one RO.
pub struct Agent<C: Uicc = Card> {
    attester: Attester,
    card: C,
    http: reqwest::Client,
    config: AgentConfig,
    device_id: DeviceId,
    state: AgentState,
    abort_reason: Option<String>,
}

impl<C: Uicc> std::fmt::Debug for Agent<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("device_id", &self.device_id)
            .field("state", &self.state)
            .finish()
    }
}

impl<C: Uicc> Agent<C> {
    pub fn new(mut attester: Attester, card: C, config: AgentConfig) -> Result<Self> {
        let roots: Vec<_> = config
            .ci_roots_der
            .iter()
            .map(|der| rustls_pki_types::CertificateDer::from(der.clone()))
            .collect();
        let http =
            transport::client::client(&roots, None).map_err(|e| Error::Network(e.to_string()))?;
        let device_id = attester.device_id()?;
        Ok(Self {
            attester,
            card,
            http,
            config,
            device_id,
            state: AgentState::Idle,
            abort_reason: None,
        })
    }

    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    pub fn state(&self) -> AgentState {
        self.state
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

    /// Polls and works until the RO says the change is done or was rolled back.
    pub async fn run(&mut self) -> Result<Outcome> {
        let started = Instant::now();
        loop {
            if started.elapsed() > self.config.deadline {
                return Err(Error::Network(format!(
                    "no final state after {:?} (device {})",
                    self.config.deadline, self.device_id
                )));
            }
            let task = match self.next_task().await {
                Ok(task) => task,
                Err(e) => {
                    // The RO may be restarting: it resumes where it stopped, so wait and ask again.
                    tracing::warn!(device = %self.device_id, error = %e, "no task from the RO");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            match task {
                DeviceTask::Idle => tokio::time::sleep(Duration::from_millis(50)).await,
                DeviceTask::Done => return Ok(self.outcome()),
                task => {
                    // The RO decides what a refused answer means (usually an abort task);
                    // the agent reports and keeps polling.
                    if let Err(e) = self.handle(task).await {
                        tracing::warn!(device = %self.device_id, error = %e, "task failed");
                    }
                }
            }
        }
    }

    /// Carries out one task and posts its result.
    pub async fn handle(&mut self, task: DeviceTask) -> Result<()> {
        match task {
            DeviceTask::Idle | DeviceTask::Done => Ok(()),
            DeviceTask::ActivateTre { command, .. } => self.activate_tre(&command).await,
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
                let evidence = self.attester.evidence(&nonce)?;
                let bytes = evidence.to_cbor().map_err(|e| Error::Protocol(e.to_string()))?;
                self.keep("evidence.cbor", &bytes)?;
                self.post_raw("evidence", bytes).await
            }
            DeviceTask::Install { operator, bundle, ear, .. } => {
                // The answer is signed for the bundle key this device attested, which the
                // RO knows too, whatever happened to the task on its way here.
                let task = AnswerStatement::install_task(&self.bundle_key_name()?);
                self.keep("ear.cbor", &ear)?;
                self.keep("bundle.cose", &bundle)?;
                let result = match self.install(&operator, &bundle, &ear) {
                    Ok(receipt) => {
                        self.keep("receipt.cbor", &receipt)?;
                        self.state = AgentState::Installed;
                        InstallResult::Installed { receipt: ByteBuf::from(receipt) }
                    }
                    Err(e) => {
                        tracing::warn!(device = %self.device_id, error = %e, "install refused");
                        self.restore_old_profile()?;
                        InstallResult::Failed { reason: e.to_string() }
                    }
                };
                self.post_answer("install", &result, task).await
            }
            DeviceTask::Aka { rand, autn } => {
                let result = self.aka(&rand, &autn);
                if matches!(result, AkaResult::Res { .. }) {
                    self.state = AgentState::Switched;
                }
                self.post_answer("aka", &result, AnswerStatement::aka_task(&rand, &autn)).await
            }
            DeviceTask::Abort { reason } => {
                self.restore_old_profile()?;
                self.state = AgentState::RolledBack;
                self.abort_reason = Some(reason);
                let ack = AbortAck {
                    usim_active: self.card.usim_active(),
                    tre_active: self.card.tre_active(),
                    imsi: self.card.imsi().to_string(),
                };
                self.post("abort", &ack).await
            }
        }
    }

    /// Step 4 on the card, then step 5: attach with the EK certificate.
    async fn activate_tre(&mut self, command: &[u8]) -> Result<()> {
        if !self.card.tre_active() {
            // A command the card refuses (bad MAC, replayed counter) leaves the USIM active;
            // the DRF learns it from `tre_active` and the campaign fails for this device.
            if let Err(e) = self.card.ota(command) {
                tracing::warn!(device = %self.device_id, error = %e, "activate-TRE refused by the UICC");
            }
        }
        if self.card.tre_active() {
            self.state = AgentState::TreActive;
        }
        let request = self.attester.enrolment_request()?;
        let attach = AttachRequest {
            device_id: request.device_id,
            ek_certificate: ByteBuf::from(request.ek_certificate),
            ek_public: ByteBuf::from(request.ek_public),
            tre_active: self.card.tre_active(),
        };
        let body =
            protocol::device_api::to_cbor(&attach).map_err(|e| Error::Protocol(e.to_string()))?;
        let url = format!("{}/v1/attach", self.config.ro_url);
        self.send(url, body).await
    }

    /// Step 11: open the bundle inside the TPM, check it, install it; returns the signed
    /// receipt (CBOR).
    fn install(&mut self, operator: &str, bundle_bytes: &[u8], ear: &[u8]) -> Result<Vec<u8>> {
        let ear_hash = bundle::ear_hash(ear);
        let selection = self.attester.selection().clone();
        let device_id = self.device_id.clone();
        let tpm = self.attester.tpm();
        let key = tpm.bundle_key()?.ok_or(Error::Protocol("no bundle key: not attested".into()))?;
        let expected = bundle::BundleExpectations {
            ci_roots: &self.config.ci_roots,
            now: SystemTime::now(),
            operator,
            device_id: &device_id,
            ear_hash: &ear_hash,
        };
        let verified = bundle::open_bundle(bundle_bytes, &expected, |x, y| {
            tpm.ecdh_z_gen(&key, &selection, x, y)
        })
        .map_err(|e| Error::Bundle(e.to_string()))?;
        let sequence = verified.sequence();
        let counter = tpm.rollback_counter()?;
        bundle::check_sequence(sequence, counter).map_err(|e| Error::Bundle(e.to_string()))?;
        if sequence - counter > MAX_SEQUENCE_JUMP {
            return Err(Error::Bundle(format!(
                "sequence {sequence} runs more than {MAX_SEQUENCE_JUMP} ahead of the counter {counter}"
            )));
        }
        let profile = verified.payload.profile.clone();
        self.card.install_profile(profile).map_err(|e| Error::Uicc(e.to_string()))?;
        let tpm = self.attester.tpm();
        let mut now = counter;
        while now < sequence {
            now = tpm.increment_rollback_counter()?;
        }
        let receipt =
            Receipt::new(self.device_id.clone(), self.card.iccid(), &self.card.imsi(), sequence);
        let message = receipt.to_cbor().map_err(|e| Error::Protocol(e.to_string()))?;
        let ak = tpm.ak(crate::tpm::KeyAlg::Ecc)?;
        let signature = tpm.sign(&ak, &message)?;
        SignedReceipt { receipt: ByteBuf::from(message), signature: ByteBuf::from(signature) }
            .to_cbor()
            .map_err(|e| Error::Protocol(e.to_string()))
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

    /// The TPM name of the bundle key of the latest attestation (empty if none).
    pub fn bundle_key_name(&mut self) -> Result<Vec<u8>> {
        Ok(self.attester.tpm().bundle_key()?.map(|k| k.name).unwrap_or_default())
    }

    /// Back to the old profile with the USIM active (the card's abort path).
    fn restore_old_profile(&mut self) -> Result<()> {
        if self.card.tre_active() {
            self.card.abort_tre().map_err(|e| Error::Uicc(e.to_string()))?;
        }
        Ok(())
    }

    /// Writes an artifact if the configuration asks for them.
    fn keep(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(dir) = &self.config.artifacts else { return Ok(()) };
        let io =
            |source| Error::Io { what: format!("artifact {name} in {}", dir.display()), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::write(dir.join(name), bytes).map_err(io)
    }

    fn outcome(&self) -> Outcome {
        Outcome {
            state: self.state,
            imsi: self.card.imsi().to_string(),
            iccid: self.card.iccid().to_string(),
            usim_active: self.card.usim_active(),
            tre_active: self.card.tre_active(),
            abort_reason: self.abort_reason.clone(),
        }
    }

    async fn next_task(&self) -> Result<DeviceTask> {
        let url = format!("{}/v1/devices/{}/task", self.config.ro_url, self.device_id);
        let response =
            self.http.get(url).send().await.map_err(|e| Error::Network(e.to_string()))?;
        let response =
            transport::client::check(response).await.map_err(|e| Error::Network(e.to_string()))?;
        let bytes =
            transport::client::read_limited(response, protocol::device_api::MAX_MESSAGE_SIZE)
                .await
                .map_err(|e| Error::Network(e.to_string()))?;
        protocol::device_api::from_cbor(&bytes).map_err(|e| Error::Protocol(e.to_string()))
    }

    async fn post<T: serde::Serialize>(&self, what: &str, body: &T) -> Result<()> {
        let bytes =
            protocol::device_api::to_cbor(body).map_err(|e| Error::Protocol(e.to_string()))?;
        self.post_raw(what, bytes).await
    }

    async fn post_raw(&self, what: &str, body: Vec<u8>) -> Result<()> {
        let url = format!("{}/v1/devices/{}/{what}", self.config.ro_url, self.device_id);
        self.send(url, body).await
    }

    /// Posts an answer that decides the change (install, AKA) with the AK's signature over
    /// its [`AnswerStatement`]: the RO acts only on answers of this device's TPM.
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
        let url = format!("{}/v1/devices/{}/{what}", self.config.ro_url, self.device_id);
        self.send_with(url, bytes, Some(signature)).await
    }

    async fn send(&self, url: String, body: Vec<u8>) -> Result<()> {
        self.send_with(url, body, None).await
    }

    async fn send_with(&self, url: String, body: Vec<u8>, signature: Option<String>) -> Result<()> {
        let mut request = self.http.post(url).header("content-type", "application/cbor");
        if let Some(signature) = signature {
            request = request.header(ANSWER_SIGNATURE_HEADER, signature);
        }
        let response =
            request.body(body).send().await.map_err(|e| Error::Network(e.to_string()))?;
        transport::client::check(response).await.map_err(|e| Error::Network(e.to_string()))?;
        Ok(())
    }
}
