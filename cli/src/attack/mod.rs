//! The attack matrix (issue 7, `docs/SECURITY.md`): every attack on the subscription change
//! of 3GPP TR 33.812 alternative 3d that tresor claims to stop, run against the real
//! components of a [`Lab`] — swtpm devices, UICC emulators, the PVA, the RO, MNO-A and MNO-B
//! on loopback HTTPS with mutual TLS — from where a real attacker sits: compromised software
//! on a device talking to the RO's device API, a local attacker on the device, a network
//! attacker, or a rogue peer holding a certificate of the CI. Each scenario names the stage
//! expected to stop it and the check it expects to fire; the run reports the stage that did
//! and the named check (an error variant, an EAR's failed check, a problem type).
//!
//! Verdicts ([`Verdict`]): an attack **accepted** anywhere fails the run. A rejection by the
//! expected stage whose named checks include the expected one passes. A rejection by a stage
//! the scenario lists as an earlier, stricter alternative passes and is shown as `earlier`.
//! Any other rejection fails as `unexpected`: the check the scenario targets did not fire, a
//! regression in one layer that another layer happens to hide.
//!
//! Layout:
//! - this module: [`Scenario`], [`Stage`], [`Observed`], [`Verdict`], [`run`].
//! - `device`: the hostile device — the genuine agent, whose tasks a plan may intercept.
//! - `observe`: outcomes read from the RO's campaign status, the card and HTTP answers, and
//!   the names of the checks in their messages.
//! - `report`: the terminal table, the JSON document and the markdown matrix.
//! - `forge`: the attackers' tools (their own CA, software keys, made-up profiles).
//! - one file per family of attacks: `evidence`, `identity`, `clock`, `bundle_key`, `ear`,
//!   `bundle`, `ota`, `operators`, `malformed`, `answers` (forged device answers, found
//!   while building the matrix), `orders` (the commit point of issue 11: forged commit
//!   and abort answers, an unsigned acknowledgement claiming a commit, a forged final word
//!   to the device), `signed_orders` (forged commit and abort orders to the device) and
//!   `cose_hygiene` (issue 12: malleated signatures and unprotected headers on EARs and
//!   profiles), `end_to_end` (issue 12: an EAR replayed to MNO-B by a rogue RO) and
//!   `iccid` (issue 12: a campaign pairing a device with another card's ICCID, an install
//!   task naming another operator than MNO-A's command).

mod answers;
mod bundle;
mod bundle_key;
mod clock;
mod cose_hygiene;
mod device;
mod ear;
mod end_to_end;
mod evidence;
mod forge;
mod hygiene;
mod iccid;
mod identity;
mod malformed;
mod observe;
mod operators;
mod orders;
mod ota;
mod report;
mod roles;
mod signed_orders;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use protocol::x509::TrustAnchors;
use tre::tpm::KeyAlg;

use crate::lab::{self, Lab, LabDevice, LabOptions};

pub use report::{MATRIX_BEGIN, MATRIX_END, Report, ScenarioResult, matrix_of, splice_matrix};

/// The PVA's nonce lifetime in the attack lab: short, so that evidence for an expired nonce
/// can be presented without waiting a minute, and long enough for every genuine device.
pub const NONCE_TTL_SECS: u64 = 5;

/// Who attacks (docs/SECURITY.md, "Threat model").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attacker {
    /// Software on the device that is not what the reference values describe, or that
    /// lies in what it sends: it talks to the RO's device API only.
    Device,
    /// Someone with code execution on the device after it attested (extends PCRs, talks to
    /// the TPM and the card).
    Local,
    /// Someone on the network path who records, replays, redirects or alters messages.
    Network,
    /// A peer with a certificate of the CI (a rogue or compromised operator, RO or PVA
    /// host), or someone with a certificate of a CA nobody trusts.
    Peer,
}

impl Attacker {
    pub fn name(self) -> &'static str {
        match self {
            Attacker::Device => "compromised device",
            Attacker::Local => "local attacker",
            Attacker::Network => "network attacker",
            Attacker::Peer => "rogue peer",
        }
    }
}

/// The layers that can stop an attack, in the order a subscription change meets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The UICC's own checks: OTA MAC and counter, APDU parsing.
    Uicc,
    /// The RO's DRF: the device's identity at attach (EK certificate, EK name).
    Drf,
    /// The PVA: enrolment and credential activation, appraisal (a refusal, or a signed EAR
    /// that is not affirming and names the failed checks).
    Pva,
    /// The old operator (IMSI list sender).
    MnoA,
    /// The new operator: its own verification of the EAR before it signs a profile, and the
    /// profile's encryption to the EAR's bundle key (end to end to the device).
    MnoB,
    /// The RO's DPF: asks for the profile only against a verified EAR for this device, nonce
    /// and bundle key; relays a bundle bound to this device and EAR, whose facts fit the
    /// campaign (it never sees the profile).
    Dpf,
    /// The device's TRE: the bundle's headers, AEAD, signer and anti-rollback sequence.
    Tre,
    /// The device's TPM: PolicyPCR, credential activation.
    Tpm,
    /// Input validation of an HTTP API (problem documents for malformed bodies).
    PvaApi,
    RoDeviceApi,
    RoCampaignApi,
    MnoApi,
    /// The role a TLS peer's certificate names (`protocol::role`), checked by servers of
    /// their clients and by clients of their servers.
    Tls,
    /// The host's file system: who else may read the roles' state.
    Host,
    /// A failure that names no known stage (shown with its message).
    Unknown,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Uicc => "UICC",
            Stage::Drf => "DRF",
            Stage::Pva => "PVA",
            Stage::MnoA => "MNO-A",
            Stage::MnoB => "MNO-B",
            Stage::Dpf => "DPF",
            Stage::Tre => "TRE",
            Stage::Tpm => "TPM",
            Stage::PvaApi => "PVA API",
            Stage::RoDeviceApi => "RO device API",
            Stage::RoCampaignApi => "RO campaign API",
            Stage::MnoApi => "MNO API",
            Stage::Tls => "TLS role",
            Stage::Host => "host files",
            Stage::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a layer let the attack through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Rejected,
    Accepted,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Rejected => "rejected",
            Outcome::Accepted => "accepted",
        }
    }
}

/// What one layer did with the attack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub stage: Stage,
    pub outcome: Outcome,
    /// The named checks that fired, the deciding one first (empty when accepted).
    pub checks: Vec<String>,
    /// The message as the layer gave it (may hold ids, times, hashes; never a secret).
    pub detail: String,
}

impl Layer {
    pub fn rejected(stage: Stage, checks: Vec<String>, detail: impl Into<String>) -> Self {
        Self { stage, outcome: Outcome::Rejected, checks, detail: detail.into() }
    }

    pub fn accepted(stage: Stage, detail: impl Into<String>) -> Self {
        Self { stage, outcome: Outcome::Accepted, checks: Vec::new(), detail: detail.into() }
    }
}

/// What a scenario saw: the layer that decided, and other layers that refused the same
/// attack on their own (defence in depth; each of them must reject too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub decided: Layer,
    pub also: Vec<Layer>,
}

impl Observed {
    pub fn new(decided: Layer) -> Self {
        Self { decided, also: Vec::new() }
    }

    pub fn with(mut self, also: Layer) -> Self {
        self.also.push(also);
        self
    }
}

/// Where a scenario expects to be stopped.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    pub stage: Stage,
    /// The named check that must be among the deciding layer's checks.
    pub check: &'static str,
    /// Earlier, stricter stages whose rejection is acceptable (shown as `earlier`).
    pub earlier: &'static [Stage],
}

impl Expect {
    pub const fn at(stage: Stage, check: &'static str) -> Self {
        Self { stage, check, earlier: &[] }
    }
}

/// The verdict on one scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Rejected by the expected stage with the expected check.
    Pass,
    /// Rejected by an earlier stage the scenario accepts.
    Earlier,
    /// Accepted, rejected elsewhere, or not run to a conclusion.
    Fail(String),
}

impl Verdict {
    pub fn of(expect: &Expect, observed: &Result<Observed, String>) -> Self {
        let observed = match observed {
            Ok(o) => o,
            Err(e) => return Verdict::Fail(format!("inconclusive: {e}")),
        };
        if let Some(layer) = observed.also.iter().find(|l| l.outcome == Outcome::Accepted) {
            return Verdict::Fail(format!("accepted by {}", layer.stage));
        }
        let d = &observed.decided;
        if d.outcome == Outcome::Accepted {
            return Verdict::Fail(format!("ACCEPTED ({})", d.stage));
        }
        if d.stage == expect.stage && d.checks.iter().any(|c| c == expect.check) {
            Verdict::Pass
        } else if expect.earlier.contains(&d.stage) {
            Verdict::Earlier
        } else if d.stage == expect.stage {
            Verdict::Fail(format!("unexpected check: expected {}", expect.check))
        } else {
            Verdict::Fail(format!("unexpected stage: expected {}", expect.stage))
        }
    }

    pub fn passed(&self) -> bool {
        !matches!(self, Verdict::Fail(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Earlier => "earlier",
            Verdict::Fail(_) => "FAIL",
        }
    }
}

/// When a scenario may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// With the others, each on its own devices and campaigns.
    Concurrent,
    /// Alone, once every device has finished: the scenario compares the stores' row counts
    /// before and after.
    Quiet,
}

/// One attack.
#[derive(Clone, Copy)]
pub struct Scenario {
    /// Stable, kebab-case: the matrix's key.
    pub name: &'static str,
    /// The item of issue 7's list it belongs to (1–16; 17: found while building the matrix;
    /// 18: the commit point of issue 11; 19: the trust boundaries of issue 12).
    pub item: u8,
    pub attacker: Attacker,
    /// What the attacker does.
    pub action: &'static str,
    pub expect: Expect,
    pub phase: Phase,
    /// Takes seconds (waits for a nonce to expire, runs two campaigns): started first.
    pub slow: bool,
    run: fn(&Ctx) -> Result<Observed>,
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario").field("name", &self.name).field("item", &self.item).finish()
    }
}

impl Scenario {
    pub(crate) const fn new(
        name: &'static str,
        item: u8,
        attacker: Attacker,
        action: &'static str,
        expect: Expect,
        run: fn(&Ctx) -> Result<Observed>,
    ) -> Self {
        Self { name, item, attacker, action, expect, phase: Phase::Concurrent, slow: false, run }
    }

    pub(crate) const fn quiet(mut self) -> Self {
        self.phase = Phase::Quiet;
        self
    }

    pub(crate) const fn slow(mut self) -> Self {
        self.slow = true;
        self
    }
}

/// Every scenario, in the order of issue 7's list (then 17, 18 and 19).
pub fn scenarios() -> Vec<Scenario> {
    let mut all = Vec::new();
    all.extend(evidence::scenarios());
    all.extend(identity::scenarios());
    all.extend(clock::scenarios());
    all.extend(bundle_key::scenarios());
    all.extend(ear::scenarios());
    all.extend(cose_hygiene::scenarios());
    all.extend(bundle::scenarios());
    all.extend(ota::scenarios());
    all.extend(operators::scenarios());
    all.extend(malformed::scenarios());
    all.extend(answers::scenarios());
    all.extend(orders::scenarios());
    all.extend(signed_orders::scenarios());
    all.extend(end_to_end::scenarios());
    all.extend(iccid::scenarios());
    all.extend(roles::scenarios());
    all.extend(hygiene::scenarios());
    all.sort_by_key(|s| s.item);
    all
}

/// How to run the matrix.
#[derive(Clone, Debug)]
pub struct Options {
    /// Keep the lab (PKI, stores, devices, artifacts) in this directory; else a temporary
    /// one, removed at the end.
    pub keep: Option<PathBuf>,
    /// Run only the scenarios whose name contains one of these (all when empty).
    pub only: Vec<String>,
    /// How many scenarios run at once in the concurrent phase.
    pub parallel: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { keep: None, only: Vec::new(), parallel: 6 }
    }
}

/// What every scenario shares: the lab, device numbering, the CI root.
pub(crate) struct Ctx {
    pub lab: Arc<Lab>,
    next_device: AtomicUsize,
    pub ci: TrustAnchors,
    /// The known-good image the reference values were made from.
    pub image: PathBuf,
    /// A scratch directory for the attackers' own files.
    pub work: PathBuf,
    /// Campaigns the scenarios created, to wait for before the quiet phase.
    campaigns: Mutex<Vec<String>>,
    /// The genuine device that switched before the attacks (`None` if it did not).
    baseline: Mutex<Option<Baseline>>,
}

/// The genuine device of the run: it switched, and its artifacts hold genuine evidence.
#[derive(Clone, Debug)]
pub(crate) struct Baseline {
    pub dir: PathBuf,
    pub device_id: protocol::DeviceId,
    pub campaign: String,
    /// Its EK's TPMT_PUBLIC.
    pub ek_public: Vec<u8>,
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx").field("work", &self.work).finish_non_exhaustive()
    }
}

impl Ctx {
    /// A new device (swtpm with EK certificate, UICC with an MNO-A profile).
    pub fn manufacture(&self) -> Result<LabDevice> {
        let index = self.next_device.fetch_add(1, Ordering::SeqCst);
        self.lab.manufacture(index, KeyAlg::Ecc)
    }

    pub(crate) fn remember_campaign(&self, id: &str) {
        if let Ok(mut c) = self.campaigns.lock() {
            c.push(id.to_owned());
        }
    }

    /// A scratch path for `name`.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    pub(crate) fn baseline(&self) -> Option<Baseline> {
        self.baseline.lock().ok().and_then(|b| b.clone())
    }
}

/// Starts a lab, runs the selected scenarios (concurrent ones first, then the quiet ones
/// one by one), stops the lab and returns the report.
pub async fn run(options: &Options) -> Result<Report> {
    let started = Instant::now();
    let temp;
    let dir = match &options.keep {
        Some(dir) => {
            anyhow::ensure!(
                !dir.join("pki").exists(),
                "{} already holds a lab; choose another",
                dir.display()
            );
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("tresor-attack-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let selected: Vec<Scenario> = scenarios()
        .into_iter()
        .filter(|s| {
            options.only.is_empty() || options.only.iter().any(|o| s.name.contains(o.as_str()))
        })
        .collect();
    anyhow::ensure!(!selected.is_empty(), "no scenario matches {:?}", options.only);

    let image = lab::write_sample_image(&dir.join("image"))?;
    let lab_options =
        LabOptions { nonce_ttl_seconds: Some(NONCE_TTL_SECS), ..LabOptions::default() };
    let lab = Lab::start_with(&dir, &image, &lab_options).await.context("starting the lab")?;
    let work = dir.join("attack");
    storage::private_dir(&work)?;
    let ci = TrustAnchors::from_file(&dir.join("pki/ci.pem"))?;
    let ctx = Arc::new(Ctx {
        lab: Arc::new(lab),
        next_device: AtomicUsize::new(0),
        ci,
        image,
        work,
        campaigns: Mutex::new(Vec::new()),
        baseline: Mutex::new(None),
    });

    // The baseline first: a genuine device must switch in this lab.
    let runner = Arc::clone(&ctx);
    let baseline = tokio::task::spawn_blocking(move || device::baseline(&runner)).await?;
    let baseline = match baseline {
        Ok(b) => {
            if let Ok(mut slot) = ctx.baseline.lock() {
                *slot = Some(b);
            }
            Ok(())
        }
        Err(e) => Err(format!("{e:#}")),
    };

    let parallel = options.parallel.max(1);
    let runner = Arc::clone(&ctx);
    let (concurrent, quiet): (Vec<Scenario>, Vec<Scenario>) =
        selected.iter().partition(|s| s.phase == Phase::Concurrent);
    let mut results =
        tokio::task::spawn_blocking(move || run_pool(&runner, &concurrent, parallel)).await?;
    wait_quiet(&ctx).await;
    let runner = Arc::clone(&ctx);
    results.extend(
        tokio::task::spawn_blocking(move || {
            quiet.iter().map(|s| run_one(&runner, s)).collect::<Vec<_>>()
        })
        .await?,
    );

    // Matrix order, whatever order they ran in.
    results.sort_by_key(|r| selected.iter().position(|s| s.name == r.scenario.name));
    let lab =
        Arc::try_unwrap(ctx).map_err(|_| anyhow::anyhow!("a scenario still holds the lab"))?.lab;
    let lab =
        Arc::try_unwrap(lab).map_err(|_| anyhow::anyhow!("a scenario still holds the lab"))?;
    lab.stop().await;
    Ok(Report { scenarios: results, baseline, wall_ms: started.elapsed().as_millis() as u64 })
}

/// Runs `scenarios` on `parallel` threads, the ones expected to take longest first.
fn run_pool(ctx: &Ctx, scenarios: &[Scenario], parallel: usize) -> Vec<ScenarioResult> {
    let mut queue = scenarios.to_vec();
    queue.sort_by_key(|s| !s.slow);
    let queue = Mutex::new(queue);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..parallel.min(scenarios.len()) {
            scope.spawn(|| {
                loop {
                    let next = queue
                        .lock()
                        .ok()
                        .and_then(|mut q| if q.is_empty() { None } else { Some(q.remove(0)) });
                    let Some(scenario) = next else { break };
                    let result = run_one(ctx, &scenario);
                    if let Ok(mut r) = results.lock() {
                        r.push(result);
                    }
                }
            });
        }
    });
    results.into_inner().unwrap_or_default()
}

fn run_one(ctx: &Ctx, scenario: &Scenario) -> ScenarioResult {
    let started = Instant::now();
    // A panic in a scenario is a bug of the harness, not a verdict on the attack: report it.
    let observed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (scenario.run)(ctx)))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the scenario panicked")))
        .map_err(|e| format!("{e:#}"));
    let verdict = Verdict::of(&scenario.expect, &observed);
    ScenarioResult {
        scenario: *scenario,
        observed,
        verdict,
        ms: started.elapsed().as_millis() as u64,
    }
}

/// Waits until no device of the scenarios' campaigns is still under way (at most 30 s), so
/// the quiet phase sees stores nobody writes to.
async fn wait_quiet(ctx: &Ctx) {
    let campaigns = ctx.campaigns.lock().map(|c| c.clone()).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in campaigns {
        while Instant::now() < deadline {
            match ctx.lab.campaign(&id).await {
                Ok(report)
                    if report.summary.in_progress == 0
                        && report.devices.iter().all(|d| d.reported) =>
                {
                    break;
                }
                Err(_) => break,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// A copy of the known-good image with `edit` applied, in the scratch directory.
pub(crate) fn image_variant(
    ctx: &Ctx,
    name: &str,
    edit: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let out = ctx.scratch(name);
    std::fs::create_dir_all(&out)?;
    for entry in std::fs::read_dir(&ctx.image)? {
        let path = entry?.path();
        if let Some(file) = path.file_name() {
            std::fs::copy(&path, out.join(file))?;
        }
    }
    edit(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(stage: Stage, check: &str) -> Layer {
        Layer::rejected(stage, vec![check.into()], "")
    }

    #[test]
    fn verdicts_follow_the_documented_rules() {
        let expect = Expect { stage: Stage::Pva, check: "nonce-reused", earlier: &[Stage::Drf] };
        let v = |o: Observed| Verdict::of(&expect, &Ok(o));
        assert_eq!(v(Observed::new(layer(Stage::Pva, "nonce-reused"))), Verdict::Pass);
        assert_eq!(v(Observed::new(layer(Stage::Drf, "x"))), Verdict::Earlier);
        assert!(matches!(v(Observed::new(layer(Stage::Dpf, "x"))), Verdict::Fail(_)));
        assert!(matches!(v(Observed::new(layer(Stage::Pva, "other"))), Verdict::Fail(_)));
        assert!(matches!(
            v(Observed::new(Layer::accepted(Stage::Tre, "installed"))),
            Verdict::Fail(_)
        ));
        let also_accepted = Observed::new(layer(Stage::Pva, "nonce-reused"))
            .with(Layer::accepted(Stage::Dpf, "released"));
        assert!(matches!(v(also_accepted), Verdict::Fail(_)));
        assert!(matches!(Verdict::of(&expect, &Err("timeout".into())), Verdict::Fail(_)));
    }

    #[test]
    fn scenario_names_are_unique_and_every_item_is_covered() {
        let all = scenarios();
        let mut names: Vec<_> = all.iter().map(|s| s.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "duplicate scenario names");
        for item in 1..=19u8 {
            assert!(all.iter().any(|s| s.item == item), "no scenario for item {item}");
        }
        for s in &all {
            assert!(
                s.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                s.name
            );
        }
    }
}
