//! The hostile device: a lab device running the genuine agent (`tre::agent`), driven task by
//! task from the RO's device API, where a scenario's plan may intercept any task — answer
//! it with a forgery, change it before the agent sees it, tamper with the TPM or the card
//! first — and hand everything else to the agent. It talks to the RO only, as a
//! compromised device does; what it posts is what the RO relays to the PVA and operators.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use protocol::device_api::{self, AttachRequest, DeviceTask, InstallResult};
use protocol::evidence::Evidence;
use protocol::receipt::AnswerStatement;
use protocol::tpm::PcrSelection;
use protocol::{DeviceId, Iccid, Imsi, Nonce};
use provisioning::mno::api::CampaignDevice;
use provisioning::pki::Role;
use provisioning::ro::{CampaignReport, NewCampaign};
use tre::agent::{Agent, AgentConfig};
use tre::attester::{Attester, AttesterOptions};
use tre::swtpm::Swtpm;
use tre::tpm::Tpm;

use super::observe::{self, card_layer, ro_layer};
use super::{Ctx, Layer, Observed};
use crate::lab::LabDevice;

/// How long a device may take to reach a final state in a scenario.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// A current-thread runtime for a scenario's thread (a TPM context stays on its thread).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// A device under attack: what manufacturing made, with a TPM the scenario may power off,
/// tamper with on disk, and power on again.
#[derive(Debug)]
pub(crate) struct Target {
    pub device_id: DeviceId,
    /// The ICCID and IMSI of its MNO-A profile.
    pub iccid: Iccid,
    pub imsi: Imsi,
    pub card: PathBuf,
    pub dir: PathBuf,
    swtpm: Option<Swtpm>,
    state_dir: PathBuf,
}

impl Target {
    pub fn new(device: LabDevice) -> Self {
        let state_dir = device.swtpm.state_dir().to_path_buf();
        Self {
            device_id: device.device_id,
            iccid: device.iccid,
            imsi: device.imsi,
            card: device.card,
            dir: device.dir,
            swtpm: Some(device.swtpm),
            state_dir,
        }
    }

    pub fn tcti(&self) -> Result<String> {
        self.swtpm.as_ref().map(Swtpm::tcti).context("the TPM is powered off")
    }

    /// The swtpm state directory (`tpm2-00.permall`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Orderly TPM2_Shutdown(CLEAR) and power off.
    pub fn power_off(&mut self) {
        drop(self.swtpm.take());
    }

    /// Power on (the TPM runs TPM2_Startup(CLEAR): a TPM Reset).
    pub fn power_on(&mut self, ctx: &Ctx) -> Result<()> {
        anyhow::ensure!(self.swtpm.is_none(), "the TPM is already on");
        self.swtpm = Some(Swtpm::start(&self.state_dir, &ctx.lab.swtpm)?);
        Ok(())
    }

    /// The TPM's command and control sockets.
    pub fn tpm_sockets(&self) -> Result<(PathBuf, PathBuf)> {
        let swtpm = self.swtpm.as_ref().context("the TPM is powered off")?;
        Ok((swtpm.tpm_socket().to_owned(), swtpm.control_socket().to_owned()))
    }
}

/// The configuration of a target's genuine agent, talking to the RO at `ro_url`.
pub(crate) fn agent_config(ctx: &Ctx, target: &Target, ro_url: &str) -> Result<AgentConfig> {
    let ci_pem = std::fs::read(ctx.lab.dir.join("pki/ci.pem"))?;
    Ok(AgentConfig {
        ro_url: ro_url.to_owned(),
        ci_roots: protocol::x509::TrustAnchors::from_pem(&ci_pem)?,
        ci_roots_der: vec![ctx.lab.pki.ci_root().to_vec()],
        deadline: DEADLINE,
        fallback: Duration::from_secs(600),
        journal: tre::journal::journal_path(&target.card),
        artifacts: Some(target.dir.clone()),
    })
}

/// What a plan does with a task.
pub(crate) enum Act {
    /// Let the genuine agent carry it out (possibly a task the plan changed).
    Agent(DeviceTask),
    /// Post this body to `/v1/devices/{id}/{endpoint}` instead.
    Post(&'static str, Vec<u8>),
    /// Post this answer (install, AKA) to `/v1/devices/{id}/{endpoint}`, signed by the
    /// device's AK for the task whose hash is given (`protocol::receipt::AnswerStatement`).
    Answer(&'static str, Vec<u8>, [u8; 32]),
    /// Post this attach request to `/v1/devices/{id}/attach` instead.
    Attach(AttachRequest),
    /// Post this body to `/v1/devices/{id}/{endpoint}` on the device's own channel and go
    /// on polling whatever the RO answers; a refusal is kept in [`Hostile::refusals`].
    Try(&'static str, Vec<u8>),
    /// Stop driving and give the task back to the scenario (to resume later).
    Pause(DeviceTask),
}

/// The genuine device: every task to the agent.
pub(crate) fn genuine(_: &mut Hostile, task: DeviceTask) -> Result<Act> {
    Ok(Act::Agent(task))
}

/// The InstallResult a device posts when it gives up on the install (the RO then aborts and
/// the device restores its MNO-A profile): how a scenario ends a campaign it needed only
/// for its attestation. Signed, as the genuine device's answers are.
pub(crate) fn refuse_install(device: &mut Hostile) -> Result<Act> {
    let body = device_api::to_cbor(&InstallResult::Failed {
        reason: "the scenario declines the install".into(),
    })?;
    let task = AnswerStatement::install_task(&device.agent.bundle_key_name()?);
    Ok(Act::Answer("install", body, task))
}

/// A device driven from the RO's device API.
pub(crate) struct Hostile {
    pub agent: Agent,
    pub id: DeviceId,
    /// Errors of tasks the agent could not carry out (the RO then waits or fails the device).
    pub agent_errors: Vec<String>,
    /// The RO's refusals of [`Act::Try`] posts.
    pub refusals: Vec<String>,
}

impl Hostile {
    /// Powers the device on: measured boot of `image` into its TPM, its card, the agent.
    pub fn boot(ctx: &Ctx, target: &Target, image: &Path) -> Result<Self> {
        let tpm = Tpm::connect(&target.tcti()?)?;
        let attester = Attester::boot(tpm, image, AttesterOptions::default())?;
        let card = super::observe::open_card(&target.card)?;
        let agent = Agent::new(attester, card, agent_config(ctx, target, &ctx.lab.urls.ro)?)?;
        Ok(Self {
            id: agent.device_id().clone(),
            agent,
            agent_errors: Vec::new(),
            refusals: Vec::new(),
        })
    }

    /// Drives the device until the RO says it is done, or the plan pauses (then the paused
    /// task is returned).
    pub async fn run(
        &mut self,
        plan: impl FnMut(&mut Hostile, DeviceTask) -> Result<Act>,
    ) -> Result<Option<DeviceTask>> {
        self.run_from(None, plan).await
    }

    /// [`Hostile::run`], handing `first` (a task given back by a pause) to the plan first.
    pub async fn run_from(
        &mut self,
        first: Option<DeviceTask>,
        mut plan: impl FnMut(&mut Hostile, DeviceTask) -> Result<Act>,
    ) -> Result<Option<DeviceTask>> {
        let started = Instant::now();
        let mut next = first;
        loop {
            anyhow::ensure!(
                started.elapsed() < DEADLINE,
                "device {} reached no final state in {DEADLINE:?} (the agent's errors: {:?})",
                self.id,
                self.agent_errors
            );
            let task = match next.take() {
                Some(task) => task,
                None => self.next_task().await?,
            };
            match task {
                DeviceTask::Idle => tokio::time::sleep(Duration::from_millis(20)).await,
                DeviceTask::Done { .. } => return Ok(None),
                task => match plan(self, task)? {
                    Act::Agent(task) => {
                        if let Err(e) = self.agent.handle(task).await {
                            self.agent_errors.push(e.to_string());
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    Act::Post(endpoint, body) => self.post(endpoint, body).await?,
                    Act::Answer(endpoint, body, task) => {
                        let signature = self.sign_answer(&body, task)?;
                        self.post_signed(endpoint, body, Some(&signature)).await?;
                    }
                    Act::Attach(request) => {
                        self.post("attach", device_api::to_cbor(&request)?).await?;
                    }
                    Act::Try(endpoint, body) => {
                        if let Err(e) = self.post(endpoint, body).await {
                            self.refusals.push(format!("{e:#}"));
                        }
                    }
                    Act::Pause(task) => return Ok(Some(task)),
                },
            }
        }
    }

    /// Evidence of this device's TPM for `nonce`, quoting `selection` (tpm2-tools syntax).
    pub fn evidence(&mut self, nonce: &Nonce, selection: &str) -> Result<Evidence> {
        let selection: PcrSelection =
            selection.parse().map_err(|e| anyhow::anyhow!("PCR selection {selection}: {e}"))?;
        self.agent.attester().set_selection(selection);
        Ok(self.agent.evidence(nonce)?)
    }

    /// The attach request the genuine device would send, with its card's answer to the
    /// activate-TRE command it ran (if any).
    pub fn attach_request(&mut self, tre_active: bool) -> Result<AttachRequest> {
        let request = self.agent.attester().enrolment_request()?;
        let proof = self.agent.card().tre_activation().map(|a| a.response().to_vec());
        Ok(AttachRequest {
            device_id: request.device_id,
            ek_certificate: serde_bytes::ByteBuf::from(request.ek_certificate),
            ek_public: serde_bytes::ByteBuf::from(request.ek_public),
            tre_active,
            activation_proof: serde_bytes::ByteBuf::from(proof.unwrap_or_default()),
        })
    }

    /// The next task, asked on the device's authenticated channel.
    async fn next_task(&mut self) -> Result<DeviceTask> {
        let path = format!("/v1/devices/{}/task", self.id);
        let bytes = self.agent.request(reqwest::Method::GET, &path, Vec::new(), None).await?;
        Ok(device_api::from_cbor(&bytes)?)
    }

    /// POSTs `body` to `/v1/devices/{id}/{endpoint}` on the device's authenticated channel:
    /// what the genuine TPM would sign if its software were hostile.
    pub async fn post(&mut self, endpoint: &str, body: Vec<u8>) -> Result<()> {
        self.post_signed(endpoint, body, None).await
    }

    /// The AK's signature (hex) over the answer statement of `body` for `task`.
    pub fn sign_answer(&mut self, body: &[u8], task: [u8; 32]) -> Result<String> {
        let statement = AnswerStatement::new(self.id.clone(), task, body).to_cbor()?;
        let tpm = self.agent.tpm();
        let ak = tpm.ak(tre::tpm::KeyAlg::Ecc)?;
        Ok(hex::encode(tpm.sign(&ak, &statement)?))
    }

    async fn post_signed(
        &mut self,
        endpoint: &str,
        body: Vec<u8>,
        signature: Option<&str>,
    ) -> Result<()> {
        let path = format!("/v1/devices/{}/{endpoint}", self.id);
        self.agent
            .request(reqwest::Method::POST, &path, body, signature.map(str::to_owned))
            .await
            .with_context(|| path.clone())?;
        Ok(())
    }
}

/// Creates a campaign at the RO that moves `devices` (id, current ICCID) from `from` to
/// `to`, as the new operator; returns its id.
pub(crate) async fn campaign(
    ctx: &Ctx,
    from: &str,
    to: &str,
    devices: &[(&DeviceId, &Iccid)],
) -> Result<String> {
    let new = NewCampaign {
        from: from.into(),
        to: to.into(),
        devices: devices
            .iter()
            .map(|(id, iccid)| CampaignDevice { device_id: (*id).clone(), iccid: (*iccid).clone() })
            .collect(),
    };
    let role = if to == "mno-a" { Role::mno_a() } else { Role::mno_b() };
    let client = ctx.lab.pki.client(role)?;
    let response =
        client.post(format!("{}/v1/campaigns", ctx.lab.urls.ro)).json(&new).send().await?;
    let report: CampaignReport = transport::client::json(response).await?;
    anyhow::ensure!(report.state == "ready", "campaign not ready: {:?}", report.failure);
    ctx.remember_campaign(&report.id);
    Ok(report.id)
}

/// Cancels `campaign` at the RO as its new operator: devices under way are told to restore
/// their old profile.
pub(crate) async fn cancel(ctx: &Ctx, campaign: &str) -> Result<()> {
    let client = ctx.lab.pki.client(Role::mno_b())?;
    let url = format!("{}/v1/campaigns/{campaign}/cancel", ctx.lab.urls.ro);
    let _: CampaignReport = transport::client::json(client.post(url).send().await?).await?;
    Ok(())
}

/// A device attacked through one campaign: what the RO recorded, and the card afterwards.
pub(crate) struct Attacked {
    pub target: Target,
    /// What the RO's status says (the stage that failed the device, or a switch).
    pub ro: Layer,
}

impl Attacked {
    /// The observation: the RO's, unless the card shows the attack got a profile onto it.
    pub fn observed(&self) -> Result<Observed> {
        match card_layer(&self.target.card, &self.target.imsi)? {
            Some(accepted) => Ok(Observed::new(accepted).with(self.ro.clone())),
            None => {
                let mut ro = self.ro.clone();
                ro.detail.push_str(" — the card still runs its MNO-A profile with the USIM active");
                Ok(Observed::new(ro))
            }
        }
    }
}

/// A device whose genuine evidence for the PVA's nonce `edit` changes before it is posted;
/// every other task is the agent's.
pub(crate) fn edited_evidence(
    ctx: &Ctx,
    mut edit: impl FnMut(&mut Hostile, &Nonce, &mut Evidence) -> Result<()>,
) -> Result<Attacked> {
    attack_one(ctx, &ctx.image, |d: &mut Hostile, task| match task {
        DeviceTask::Attest { nonce, pcr_selection } => {
            let mut evidence = d.evidence(&nonce, &pcr_selection)?;
            edit(d, &nonce, &mut evidence)?;
            Ok(Act::Post("evidence", evidence.to_cbor()?))
        }
        task => Ok(Act::Agent(task)),
    })
}

/// A device stopped where a scenario takes over.
pub(crate) struct Paused {
    /// Its campaign (MNO-A → MNO-B).
    pub campaign: String,
    pub device: Hostile,
    /// The task it stopped at; the agent carried out every one before.
    pub task: DeviceTask,
}

/// Creates a campaign MNO-A → MNO-B for `target`, boots it on the lab's image and lets its
/// agent work until the RO hands it a task `stop` picks.
pub(crate) fn pause_at(
    ctx: &Ctx,
    target: &Target,
    rt: &tokio::runtime::Runtime,
    stop: impl Fn(&DeviceTask) -> bool,
) -> Result<Paused> {
    let campaign =
        rt.block_on(campaign(ctx, "mno-a", "mno-b", &[(&target.device_id, &target.iccid)]))?;
    let mut device = Hostile::boot(ctx, target, &ctx.image)?;
    let paused = rt.block_on(device.run(|_: &mut Hostile, task| {
        Ok(if stop(&task) { Act::Pause(task) } else { Act::Agent(task) })
    }))?;
    let task = paused.context("the device never got the task the scenario waits for")?;
    Ok(Paused { campaign, device, task })
}

/// Manufactures a device, creates a campaign MNO-A → MNO-B for it, boots `image` and runs
/// `plan` to the end.
pub(crate) fn attack_one(
    ctx: &Ctx,
    image: &Path,
    plan: impl FnMut(&mut Hostile, DeviceTask) -> Result<Act>,
) -> Result<Attacked> {
    let target = Target::new(ctx.manufacture()?);
    attack_target(ctx, target, image, plan)
}

/// [`attack_one`] on a device already made (and perhaps tampered with).
pub(crate) fn attack_target(
    ctx: &Ctx,
    target: Target,
    image: &Path,
    plan: impl FnMut(&mut Hostile, DeviceTask) -> Result<Act>,
) -> Result<Attacked> {
    let rt = runtime()?;
    let campaign =
        rt.block_on(campaign(ctx, "mno-a", "mno-b", &[(&target.device_id, &target.iccid)]))?;
    let mut device = Hostile::boot(ctx, &target, image)?;
    rt.block_on(device.run(plan))?;
    drop(device);
    let row = rt.block_on(observe::ro_device(&ctx.lab, &campaign, &target.device_id))?;
    Ok(Attacked { ro: ro_layer(&row)?, target })
}

/// Runs a genuine device through a campaign and declines its install, so that it is
/// enrolled and appraised once and back on its MNO-A profile: what a scenario needs before
/// it attacks a second campaign of the same device.
pub(crate) fn attest_once(ctx: &Ctx, target: &Target, image: &Path) -> Result<Evidence> {
    let rt = runtime()?;
    let campaign =
        rt.block_on(campaign(ctx, "mno-a", "mno-b", &[(&target.device_id, &target.iccid)]))?;
    let mut device = Hostile::boot(ctx, target, image)?;
    let mut evidence = None;
    rt.block_on(device.run(|d: &mut Hostile, task| match task {
        DeviceTask::Attest { nonce, pcr_selection } => {
            let e = d.evidence(&nonce, &pcr_selection)?;
            let body = e.to_cbor()?;
            evidence = Some(e);
            Ok(Act::Post("evidence", body))
        }
        DeviceTask::Install { .. } => refuse_install(d),
        task => Ok(Act::Agent(task)),
    }))?;
    drop(device);
    let row = rt.block_on(observe::ro_device(&ctx.lab, &campaign, &target.device_id))?;
    anyhow::ensure!(
        row.failed_step == Some(11),
        "the first campaign did not reach the install: {:?}",
        row.failure
    );
    evidence.context("the device was never asked for evidence")
}

/// A genuine device switches from MNO-A to MNO-B in the attack lab: the baseline that shows
/// the scenarios are refused for what they change, not because nothing works. Its
/// artifacts (genuine evidence, EAR) serve the malformed-input scenarios.
pub(crate) fn baseline(ctx: &Ctx) -> Result<super::Baseline> {
    let target = Target::new(ctx.manufacture()?);
    let rt = runtime()?;
    let id = rt.block_on(campaign(ctx, "mno-a", "mno-b", &[(&target.device_id, &target.iccid)]))?;
    let mut device = Hostile::boot(ctx, &target, &ctx.image)?;
    let ek_public = device.agent.attester().enrolment_request()?.ek_public;
    rt.block_on(device.run(genuine))?;
    drop(device);
    let row = rt.block_on(observe::ro_device(&ctx.lab, &id, &target.device_id))?;
    let layer = ro_layer(&row)?;
    anyhow::ensure!(
        layer.outcome == super::Outcome::Accepted,
        "a genuine device did not switch: {}",
        layer.detail
    );
    if let Err(why) = observe::committed_card(&target.card, &target.imsi)? {
        anyhow::bail!("a genuine device switched at the RO, but {why}");
    }
    Ok(super::Baseline {
        dir: target.dir.clone(),
        device_id: target.device_id.clone(),
        campaign: id,
        ek_public,
    })
}
