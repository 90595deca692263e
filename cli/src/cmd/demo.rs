//! `tresor demo`: the main job. A temporary PKI, N devices manufactured on swtpm with MNO-A
//! profiles, the PVA, the RO and the operators on loopback HTTPS, and one campaign that
//! moves every device to MNO-B — all twelve steps of TR 33.812 alternative 3d — with a
//! progress bar per device, a table of the outcome and timings, and exit status 0 only when
//! every device switched. With `--operators 3` (or more) the fleet then moves on, one
//! campaign per hop, MNO-B → MNO-C → … and back to MNO-A; each hop reboots the devices.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use provisioning::pki::Role;
use serde::Serialize;
use tre::agent::{AgentState, Outcome};
use tre::tpm::KeyAlg;
use tresor::lab::{self, Lab, LabDevice, LabOptions};

#[derive(clap::Args)]
pub struct Args {
    /// How many devices to switch.
    #[arg(long, default_value_t = 5)]
    devices: usize,
    /// Also write the outcome as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep PKI, configurations and per-device artifacts in this directory (else a
    /// temporary one, removed at the end).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// EK and AK algorithm of the devices: ecc or rsa.
    #[arg(long, default_value = "ecc")]
    ek: KeyAlg,
    /// How long a device may take before the demo gives up on it.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// How many operators (mno-a, mno-b, mno-c, …; 2 to 26). With more than two, the fleet
    /// goes round them all and back to MNO-A, one campaign per hop.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=26))]
    operators: u8,
    /// Instances of the PVA and of the RO, each role behind a round-robin front (every
    /// role then runs as its own process, on PostgreSQL).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    instances: u8,
    /// Where the PVA and the RO keep their stores: sqlite (files), or postgres (a private
    /// server the demo starts; `make deps` installs PostgreSQL).
    #[arg(long, value_enum, default_value_t = lab::Backend::Sqlite)]
    database: lab::Backend,
}

/// The `--json` document: every hop, and (as `devices`) the last hop's devices.
#[derive(Serialize)]
struct Report {
    hops: Vec<Hop>,
    devices: Vec<DeviceResult>,
    summary: Summary,
}

/// One campaign of the demo: every device from `from` to `to`.
#[derive(Serialize)]
struct Hop {
    from: String,
    to: String,
    campaign: String,
    devices: Vec<DeviceResult>,
    switched: usize,
    wall_s: f64,
}

#[derive(Serialize, Clone)]
struct DeviceResult {
    device_id: String,
    iccid: String,
    new_iccid: String,
    old_imsi: String,
    new_imsi: String,
    /// `switched` or `failed`.
    status: &'static str,
    aka_ok: bool,
    usim_active: bool,
    tre_active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
    steps: Vec<Step>,
}

#[derive(Serialize, Clone)]
struct Step {
    step: u8,
    name: &'static str,
    ms: u64,
}

/// `switched`: devices that switched in every hop.
#[derive(Serialize)]
struct Summary {
    switched: usize,
    failed: usize,
    wall_s: f64,
}

/// How the demo ended.
enum Ended {
    Finished(anyhow::Result<ExitCode>),
    Stopped(super::Stop),
}

/// The most devices one demo runs: each is a swtpm process and two threads on this machine.
/// No resource of the lab sets it (swtpm listens on Unix sockets, the CLI raises its
/// open-file limit); it only keeps a typo from starting a million processes.
const MAX_DEVICES: usize = 10_000;

/// Runs the demo; SIGINT or SIGTERM stops it, with every swtpm of its lab, and exits with
/// 130 or 143.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (1..=MAX_DEVICES).contains(&args.devices),
        "--devices must be 1 to {MAX_DEVICES}"
    );
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build()?;
    // Handlers before the first swtpm starts: from here on a signal reaches the select
    // below instead of ending the process with its swtpm children still running.
    let mut signals = {
        let _runtime = runtime.enter();
        super::StopSignals::install()?
    };
    let ended = runtime.block_on(async {
        tokio::select! {
            result = demo(args) => Ended::Finished(result),
            stop = signals.recv() => Ended::Stopped(stop),
        }
    });
    match ended {
        Ended::Finished(result) => result,
        Ended::Stopped(stop) => {
            // The demo is dropped by now, at its last await (a signal during manufacturing
            // waits for the devices being made): every device's swtpm has been killed and
            // reaped with its handle, a temporary directory removed. What is left — the
            // services' tasks, the agents' threads — ends with the process.
            runtime.shutdown_background();
            eprintln!(
                "tresor demo: stopped by {}; the lab and its swtpm processes are stopped",
                stop.name()
            );
            Ok(ExitCode::from(stop.exit_code()))
        }
    }
}

async fn demo(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let temp;
    let dir = match &args.keep {
        Some(dir) => {
            anyhow::ensure!(
                !dir.join("pki").exists(),
                "{} already holds a demo; choose another --keep",
                dir.display()
            );
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("tresor-demo-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let names = lab::operator_names(usize::from(args.operators));
    let mut hops: Vec<(String, String)> =
        names.windows(2).map(|w| (w[0].clone(), w[1].clone())).collect();
    if names.len() > 2 {
        hops.push((names[names.len() - 1].clone(), names[0].clone()));
    }
    let route: Vec<&str> =
        std::iter::once(hops[0].0.as_str()).chain(hops.iter().map(|h| h.1.as_str())).collect();
    println!(
        "tresor demo: {} device(s) move {} (3GPP TR 33.812 alternative 3d)",
        args.devices,
        route.iter().map(|n| n.to_uppercase()).collect::<Vec<_>>().join(" → ")
    );
    let image = lab::write_sample_image(&dir.join("image"))?;
    let scaled = args.instances > 1;
    let options = LabOptions {
        operators: names.clone(),
        instances: usize::from(args.instances),
        database: if scaled { lab::Backend::Postgres } else { args.database },
        processes: if scaled { Some(std::env::current_exe()?) } else { None },
        ..LabOptions::default()
    };
    let lab = Lab::start_with(&dir, &image, &options)
        .await
        .context("starting the PVA, the RO and the operators")?;
    let operators: Vec<String> =
        lab.urls.operators.iter().map(|(n, url)| format!("{} {url}", n.to_uppercase())).collect();
    println!("  PVA {}  RO {}  {}", lab.urls.pva, lab.urls.ro, operators.join("  "));
    if scaled || args.database == lab::Backend::Postgres {
        println!(
            "  {} instance(s) each of the PVA and the RO{}, stores on PostgreSQL",
            args.instances,
            if scaled { " behind round-robin fronts" } else { "" }
        );
    }

    let devices = manufacture(&lab, args.devices, args.ek)?;
    println!("  step 1: {} device(s) manufactured with MNO-A profiles", devices.len());
    let mut iccids: Vec<String> = devices.iter().map(|d| d.iccid.to_string()).collect();
    let mut imsis: Vec<String> = devices.iter().map(|d| d.imsi.to_string()).collect();
    let mut report = Report {
        hops: Vec::new(),
        devices: Vec::new(),
        summary: Summary { switched: 0, failed: 0, wall_s: 0.0 },
    };
    for (n, (from, to)) in hops.iter().enumerate() {
        if n > 0 {
            // A reboot between campaigns: the next attestation measures a fresh boot.
            for d in &devices {
                d.swtpm.power_cycle()?;
            }
            println!();
        }
        let hop = run_hop(&lab, &args, &devices, (from, to), (&iccids, &imsis), n == 0).await?;
        for (i, d) in hop.devices.iter().enumerate() {
            if d.status == "switched" {
                iccids[i] = d.new_iccid.clone();
                imsis[i] = d.new_imsi.clone();
            }
        }
        print_table(&hop);
        report.hops.push(hop);
    }
    let switched = (0..devices.len())
        .filter(|&i| report.hops.iter().all(|h| h.devices[i].status == "switched"))
        .count();
    report.summary = Summary {
        switched,
        failed: devices.len() - switched,
        wall_s: started.elapsed().as_secs_f64(),
    };
    if let Some(last) = report.hops.last() {
        report.devices = last.devices.clone();
    }
    if report.hops.len() > 1 {
        println!(
            "  every hop: switched {}, failed {}, wall {:.1}s",
            report.summary.switched, report.summary.failed, report.summary.wall_s
        );
    }
    let served = lab.instance_connections();
    if !served.is_empty() {
        let shown: Vec<String> = served.iter().map(|(name, n)| format!("{name} {n}")).collect();
        println!("  connections the fronts handed each instance: {}", shown.join(", "));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let swtpms: Vec<_> =
        devices.into_iter().map(|d| (d.dir.clone(), d.device_id.clone(), d.swtpm)).collect();
    lab.stop().await;
    if args.keep.is_some() {
        // Devices are known by their id once the EK exists: name their directories so.
        for (old, id, swtpm) in swtpms {
            drop(swtpm);
            let new = old.with_file_name(id.to_string());
            std::fs::rename(&old, &new)
                .with_context(|| format!("cannot rename {}", old.display()))?;
        }
        println!(
            "kept in {}: pki/, pva/, ro/, {}/, devices/<device id>/",
            dir.display(),
            names.join("/, ")
        );
    }
    Ok(if report.summary.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Manufactures the devices, one per core at a time (`Lab::manufacture_fleet`).
fn manufacture(lab: &Lab, count: usize, ek: KeyAlg) -> anyhow::Result<Vec<LabDevice>> {
    lab.manufacture_fleet(count, ek, lab::manufacture_parallelism())
}

/// Shows a progress bar per device (its state at the RO) until every agent has finished.
async fn follow(
    lab: &Lab,
    campaign: &str,
    devices: &[LabDevice],
    agents: Vec<std::thread::JoinHandle<anyhow::Result<Outcome>>>,
) -> anyhow::Result<Vec<anyhow::Result<Outcome>>> {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("  {prefix} [{bar:24}] {msg}")?.progress_chars("=> ");
    let bar: BTreeMap<String, ProgressBar> = devices
        .iter()
        .map(|d| {
            let pb = bars.add(ProgressBar::new(12));
            pb.set_style(style.clone());
            pb.set_prefix(short(&d.device_id.to_string()));
            (d.device_id.to_string(), pb)
        })
        .collect();
    let waiting = tokio::task::spawn_blocking(move || {
        agents
            .into_iter()
            .map(|a| a.join().unwrap_or_else(|_| Err(anyhow::anyhow!("agent thread panicked"))))
            .collect()
    });
    tokio::pin!(waiting);
    loop {
        if let Ok(status) = lab.campaign(campaign).await {
            for d in &status.devices {
                if let Some(pb) = bar.get(&d.device_id.to_string()) {
                    pb.set_position(u64::from(progress(&d.state)));
                    pb.set_message(d.state.clone());
                }
            }
        }
        tokio::select! {
            outcomes = &mut waiting => {
                if let Ok(status) = lab.campaign(campaign).await {
                    for d in &status.devices {
                        if let Some(pb) = bar.get(&d.device_id.to_string()) {
                            pb.set_position(u64::from(progress(&d.state)));
                            pb.finish_with_message(d.state.clone());
                        }
                    }
                }
                return Ok(outcomes?);
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// How far along the twelve steps a state is, for the progress bar.
fn progress(state: &str) -> u8 {
    match state {
        "pending" => 3,
        "tre-activation-issued" | "tre-activated" => 4,
        "registered" => 6,
        "enrolling" | "enrolled" => 7,
        "attesting" => 8,
        "delivered" => 10,
        "installed" => 11,
        "aka" => 11,
        _ => 12,
    }
}

/// Whether the new operator marked the subscription live (its AuC saw RES = XRES).
async fn subscription_live(client: &reqwest::Client, operator: &str, imsi: &str) -> bool {
    let Ok(response) = client.get(format!("{operator}/v1/subscribers/{imsi}")).send().await else {
        return false;
    };
    match transport::client::json::<serde_json::Value>(response).await {
        Ok(view) => view.get("status").and_then(|s| s.as_str()) == Some("live"),
        Err(_) => false,
    }
}

fn short(id: &str) -> String {
    id.get(4..16).unwrap_or(id).to_owned()
}

fn print_table(report: &Hop) {
    println!();
    println!(
        "  {} → {}, campaign {}",
        report.from.to_uppercase(),
        report.to.to_uppercase(),
        report.campaign
    );
    println!(
        "  {:<12}  {:<33}  {:<8}  {:<3}  {:>7}",
        "device", "old IMSI → new IMSI", "result", "AKA", "total"
    );
    for d in &report.devices {
        let total: u64 = d.steps.iter().map(|s| s.ms).sum();
        println!(
            "  {:<12}  {:<33}  {:<8}  {:<3}  {:>5}ms",
            short(&d.device_id),
            format!("{} → {}", d.old_imsi, d.new_imsi),
            d.status,
            if d.aka_ok { "ok" } else { "—" },
            total
        );
        if let Some(failure) = &d.failure {
            println!("      {failure}");
        }
    }
    println!();
    println!("  time per step (ms)");
    let columns = report.devices.len().min(8);
    print!("  {:<36}", "step");
    for d in report.devices.iter().take(columns) {
        print!(" {:>12}", short(&d.device_id));
    }
    println!();
    for step in 1..=12u8 {
        print!("  {:>2} {:<33}", step, hop_step_name(step, &report.from, &report.to));
        for d in report.devices.iter().take(columns) {
            match d.steps.iter().find(|s| s.step == step) {
                Some(s) => print!(" {:>12}", s.ms),
                None => print!(" {:>12}", "—"),
            }
        }
        println!();
    }
    println!();
    println!(
        "  switched {}, failed {}, wall {:.1}s",
        report.switched,
        report.devices.len() - report.switched,
        report.wall_s
    );
}

/// The step's name with this hop's operators in place of the default MNO-A and MNO-B.
fn hop_step_name(step: u8, from: &str, to: &str) -> String {
    provisioning::ro::step_name(step)
        .replace("MNO-A", "\u{0}")
        .replace("MNO-B", &to.to_uppercase())
        .replace('\u{0}', &from.to_uppercase())
}

/// One campaign: every device from `from` to `to`, run to the end; `iccids` and `imsis`
/// are what the devices run now. Step 1 (manufacturing) is reported in the first hop only.
async fn run_hop(
    lab: &Lab,
    args: &Args,
    devices: &[LabDevice],
    (from, to): (&str, &str),
    (iccids, imsis): (&[String], &[String]),
    first: bool,
) -> anyhow::Result<Hop> {
    let started = Instant::now();
    let members = devices
        .iter()
        .zip(iccids)
        .map(|(d, iccid)| {
            Ok(provisioning::mno::api::CampaignDevice {
                device_id: d.device_id.clone(),
                iccid: iccid.parse()?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let campaign =
        lab.create_campaign_between(Role::operator(from)?, Role::operator(to)?, members).await?;
    anyhow::ensure!(campaign.state == "ready", "campaign not ready: {:?}", campaign.failure);
    println!(
        "  steps 2–3: campaign {} created, IMSI list sent by {} to {}",
        campaign.id,
        to.to_uppercase(),
        from.to_uppercase()
    );

    let deadline = Duration::from_secs(args.timeout_secs);
    let agents: Vec<_> = devices
        .iter()
        .map(|d| lab.agent_config(d, deadline).map(|c| lab::run_agent(d, &lab.image, c)))
        .collect::<anyhow::Result<_>>()?;
    let outcomes = follow(lab, &campaign.id, devices, agents).await?;
    let status = lab.campaign(&campaign.id).await?;

    let client = lab.pki.client(Role::Ro)?;
    let to_url = lab.urls.operator(to).context("no such operator")?;
    let mut results = Vec::new();
    for (i, (device, outcome)) in devices.iter().zip(&outcomes).enumerate() {
        let row = status.devices.iter().find(|r| r.device_id == device.device_id);
        let mut steps = Vec::new();
        if first {
            steps.push(Step {
                step: 1,
                name: provisioning::ro::step_name(1),
                ms: device.manufacture_ms,
            });
        }
        if let Some(row) = row {
            steps.extend(row.steps.iter().map(|s| Step {
                step: s.step,
                name: provisioning::ro::step_name(s.step),
                ms: s.ms,
            }));
        }
        let (switched, new_imsi, new_iccid, usim, tre, mut failure) = match outcome {
            Ok(o) => (
                o.state == AgentState::Switched,
                o.imsi.clone(),
                o.iccid.clone(),
                o.usim_active,
                o.tre_active,
                o.abort_reason.clone(),
            ),
            Err(e) => {
                (false, imsis[i].clone(), iccids[i].clone(), false, false, Some(format!("{e:#}")))
            }
        };
        if failure.is_none() && !switched {
            failure = row.and_then(|r| r.failure.clone());
        }
        let aka_ok = switched && subscription_live(&client, to_url, &new_imsi).await;
        results.push(DeviceResult {
            device_id: device.device_id.to_string(),
            iccid: iccids[i].clone(),
            new_iccid: if switched { new_iccid } else { iccids[i].clone() },
            old_imsi: imsis[i].clone(),
            new_imsi: if switched { new_imsi } else { imsis[i].clone() },
            status: if switched && aka_ok { "switched" } else { "failed" },
            aka_ok,
            usim_active: usim,
            tre_active: tre,
            failure,
            steps,
        });
    }
    let switched = results.iter().filter(|r| r.status == "switched").count();
    Ok(Hop {
        from: from.to_owned(),
        to: to.to_owned(),
        campaign: campaign.id,
        devices: results,
        switched,
        wall_s: started.elapsed().as_secs_f64(),
    })
}
