//! `tresor bench fleet`: the fleet curve of issue 14 — one campaign switching N devices
//! (TR 33.812 alternative 3d, steps 1–12) on a lab of this machine, measured.
//!
//! For each N: a fresh lab (PKI, PVA, RO, operators; with `--processes` every role its own
//! `tresor serve` process, as a deployment runs them), N devices manufactured on swtpm by a
//! bounded pool of parallel manufactures, one campaign from the first operator to the last,
//! every device's agent on a thread of this process. Reported: the wall time from the
//! campaign's creation to the last final report acknowledged, manufacturing time, per-step
//! p50/p90 (the RO's step timings of the campaign report), the outcome (switched, rolled
//! back and why), CPU (user + system, from `/proc/<pid>/stat`) of each role process, of
//! this process (the agents; with in-process roles the roles too) and of the swtpm
//! processes, during the switch, and peak memory (`VmHWM`) of each, with memory per device
//! (this process's and the swtpm processes' peaks over N).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use provisioning::pki::Role;
use serde::Serialize;
use tre::agent::{AgentState, Outcome};
use tre::tpm::KeyAlg;
use tresor::lab::{self, Lab, LabDevice, LabOptions};

#[derive(clap::Args)]
pub struct FleetArgs {
    /// Fleet sizes, one run each: `10,100,1000`.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    devices: Vec<usize>,
    /// How many operators (mno-a, mno-b, …); the campaign goes from the first to the last.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=26))]
    operators: u8,
    /// Every role as its own `tresor serve` process (else tasks of this process).
    #[arg(long)]
    processes: bool,
    /// Instances of the PVA and of the RO, each role behind a round-robin front; more
    /// than one runs the roles as processes on PostgreSQL.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    instances: u8,
    /// Where the PVA and the RO keep their stores: sqlite, or postgres (a private server
    /// the lab starts).
    #[arg(long, value_enum, default_value_t = lab::Backend::Sqlite)]
    database: lab::Backend,
    /// Devices manufactured at once (each starts a swtpm and creates its EK); default: the
    /// machine's cores.
    #[arg(long)]
    manufacture_parallel: Option<usize>,
    /// The RO's admission control: devices in the middle of a change at once (0: no
    /// bound); default: the RO's.
    #[arg(long)]
    max_in_flight: Option<u64>,
    /// How long a device may take before its agent gives up.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// EK and AK algorithm of the devices: ecc or rsa.
    #[arg(long, default_value = "ecc")]
    ek: KeyAlg,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One fleet size's figures.
#[derive(Serialize)]
struct Run {
    devices: usize,
    operators: u8,
    processes: bool,
    instances: u8,
    database: &'static str,
    max_in_flight: Option<u64>,
    /// Campaign created to the last final report acknowledged.
    wall_s: f64,
    manufacture: Manufacture,
    switched: usize,
    rolled_back: usize,
    /// Rolled-back or failed devices by reason.
    failures: BTreeMap<String, usize>,
    /// Step number → latency percentiles (ms).
    steps: BTreeMap<u8, Percentiles>,
    /// CPU seconds (user + system) during the switch, by process group.
    cpu_s: BTreeMap<String, Cpu>,
    /// Peak resident memory (VmHWM, MiB) by process group.
    peak_mib: BTreeMap<String, f64>,
    /// (this process + every swtpm) peak memory over N, MiB.
    mib_per_device: f64,
    /// `/proc/loadavg` at the start and the end: other work on the machine.
    loadavg: [String; 2],
}

#[derive(Serialize)]
struct Manufacture {
    parallel: usize,
    wall_s: f64,
    per_device: Percentiles,
}

#[derive(Serialize)]
struct Percentiles {
    n: usize,
    p50_ms: u64,
    p90_ms: u64,
    max_ms: u64,
}

#[derive(Serialize, Default, Clone, Copy)]
struct Cpu {
    user: f64,
    sys: f64,
}

pub fn run(args: FleetArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.devices.iter().all(|n| (1..=10_000).contains(n)),
        "--devices: each size must be 1 to 10000"
    );
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build()?;
    let mut runs = Vec::new();
    let mut ok = true;
    for &n in &args.devices {
        let run = runtime.block_on(fleet(&args, n))?;
        print_run(&run);
        ok &= run.switched == n;
        runs.push(run);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&runs)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn fleet(args: &FleetArgs, n: usize) -> anyhow::Result<Run> {
    let load_before = loadavg();
    let temp = tempfile::Builder::new().prefix("tresor-fleet-").tempdir()?;
    let dir = temp.path();
    let names = lab::operator_names(usize::from(args.operators));
    let image = lab::write_sample_image(&dir.join("image"))?;
    let processes =
        if args.processes || args.instances > 1 { Some(std::env::current_exe()?) } else { None };
    let options = LabOptions {
        operators: names.clone(),
        processes,
        max_in_flight: args.max_in_flight,
        instances: usize::from(args.instances),
        database: if args.instances > 1 { lab::Backend::Postgres } else { args.database },
        ..LabOptions::default()
    };
    let lab = Lab::start_with(dir, &image, &options).await.context("starting the lab")?;

    let parallel = args.manufacture_parallel.unwrap_or_else(lab::manufacture_parallelism).max(1);
    let made = Instant::now();
    let devices = lab.manufacture_fleet(n, args.ek, parallel)?;
    let manufacture = Manufacture {
        parallel,
        wall_s: made.elapsed().as_secs_f64(),
        per_device: percentiles(devices.iter().map(|d| d.manufacture_ms).collect()),
    };

    let pids = lab.role_pids();
    let before = cpu_of(&lab, &pids, &devices);
    let started = Instant::now();
    let (from, to) = (&names[0], &names[names.len() - 1]);
    let members = devices
        .iter()
        .map(|d| provisioning::mno::api::CampaignDevice {
            device_id: d.device_id.clone(),
            iccid: d.iccid.clone(),
        })
        .collect();
    let campaign =
        lab.create_campaign_between(Role::operator(from)?, Role::operator(to)?, members).await?;
    anyhow::ensure!(campaign.state == "ready", "campaign not ready: {:?}", campaign.failure);
    let deadline = Duration::from_secs(args.timeout_secs);
    let agents: Vec<_> = devices
        .iter()
        .map(|d| lab.agent_config(d, deadline).map(|c| lab::run_agent(d, &lab.image, c)))
        .collect::<anyhow::Result<_>>()?;
    // No polling while the agents run: the bench should not load the RO it measures.
    let outcomes: Vec<anyhow::Result<Outcome>> = tokio::task::spawn_blocking(move || {
        agents
            .into_iter()
            .map(|a| a.join().unwrap_or_else(|_| Err(anyhow::anyhow!("agent thread panicked"))))
            .collect()
    })
    .await?;
    let report = loop {
        let report = lab.campaign(&campaign.id).await?;
        let over = report.state != "ready" && report.summary.reports_pending == 0;
        if over || started.elapsed() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wall_s = started.elapsed().as_secs_f64();
    let after = cpu_of(&lab, &pids, &devices);
    let peak_mib = peaks(&pids, &devices);

    let mut failures = BTreeMap::new();
    for (outcome, row) in outcomes.iter().zip(&report.devices) {
        let reason = match outcome {
            Ok(o) if o.state == AgentState::Switched => continue,
            Ok(o) => o.abort_reason.clone().or_else(|| row.failure.clone()),
            Err(e) => Some(format!("{e:#}")),
        };
        *failures.entry(reason.unwrap_or_else(|| "unknown".into())).or_insert(0) += 1;
    }
    let mut by_step: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    for row in &report.devices {
        for s in &row.steps {
            by_step.entry(s.step).or_default().push(s.ms);
        }
    }
    let cpu_s = after
        .iter()
        .map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or_default();
            (k.clone(), Cpu { user: a.user - b.user, sys: a.sys - b.sys })
        })
        .collect();
    let device_side = peak_mib.get("bench (agents)").copied().unwrap_or(0.0)
        + peak_mib.get("bench (roles, agents)").copied().unwrap_or(0.0)
        + peak_mib.get("swtpm (sum)").copied().unwrap_or(0.0);
    let run = Run {
        devices: n,
        operators: args.operators,
        processes: args.processes || args.instances > 1,
        instances: args.instances,
        database: match (args.instances, args.database) {
            (1, lab::Backend::Sqlite) => "sqlite",
            _ => "postgres",
        },
        max_in_flight: args.max_in_flight,
        wall_s,
        manufacture,
        switched: report.summary.switched,
        rolled_back: report.summary.failed,
        failures,
        steps: by_step.into_iter().map(|(step, ms)| (step, percentiles(ms))).collect(),
        cpu_s,
        mib_per_device: device_side / n as f64,
        peak_mib,
        loadavg: [load_before, loadavg()],
    };
    drop(devices);
    lab.stop().await;
    Ok(run)
}

fn percentiles(mut ms: Vec<u64>) -> Percentiles {
    ms.sort_unstable();
    let at = |q: f64| -> u64 {
        if ms.is_empty() {
            return 0;
        }
        let i = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1;
        ms[i]
    };
    Percentiles {
        n: ms.len(),
        p50_ms: at(0.5),
        p90_ms: at(0.9),
        max_ms: ms.last().copied().unwrap_or(0),
    }
}

/// CPU seconds so far of each process group: every role process, this process, the swtpm
/// processes summed.
fn cpu_of(lab: &Lab, pids: &[(String, u32)], devices: &[LabDevice]) -> BTreeMap<String, Cpu> {
    let mut cpu = BTreeMap::new();
    for (name, pid) in pids {
        cpu.insert(name.clone(), proc_cpu(&pid.to_string()).unwrap_or_default());
    }
    let own = if lab.role_pids().is_empty() { "bench (roles, agents)" } else { "bench (agents)" };
    cpu.insert(own.into(), proc_cpu("self").unwrap_or_default());
    let mut swtpm = Cpu::default();
    for d in devices {
        let c = proc_cpu(&d.swtpm.pid().to_string()).unwrap_or_default();
        swtpm.user += c.user;
        swtpm.sys += c.sys;
    }
    cpu.insert("swtpm (sum)".into(), swtpm);
    if let Some(postmaster) = lab.database_pid() {
        cpu.insert("postgres (sum)".into(), process_tree_cpu(postmaster));
    }
    cpu
}

/// A process's CPU with its children's: the live ones', and (cutime, cstime) the exited
/// ones' it reaped — a PostgreSQL server's backends.
fn process_tree_cpu(parent: u32) -> Cpu {
    let ticks = |pid: &str, i: usize| stat_fields(pid).and_then(|f| f.get(i)?.parse::<f64>().ok());
    let parent_pid = parent.to_string();
    let mut total = proc_cpu(&parent_pid).unwrap_or_default();
    total.user += ticks(&parent_pid, 13).unwrap_or(0.0) / 100.0;
    total.sys += ticks(&parent_pid, 14).unwrap_or(0.0) / 100.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if ticks(&pid, 1) == Some(f64::from(parent)) {
            let c = proc_cpu(&pid).unwrap_or_default();
            total.user += c.user;
            total.sys += c.sys;
        }
    }
    total
}

/// The fields of `/proc/<pid>/stat` after the command name, which is in parentheses and may
/// hold spaces: index 0 is field 3 of stat(5), the state.
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(") ")?.1.split_whitespace().map(str::to_owned).collect())
}

/// utime and stime of `/proc/<pid>/stat`, in seconds (USER_HZ is 100 on Linux).
fn proc_cpu(pid: &str) -> Option<Cpu> {
    let fields = stat_fields(pid)?;
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).map(|t| t / 100.0);
    // utime and stime are fields 14 and 15 of stat(5).
    Some(Cpu { user: tick(11)?, sys: tick(12)? })
}

/// VmHWM of `/proc/<pid>/status`, MiB.
fn proc_peak_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn peaks(pids: &[(String, u32)], devices: &[LabDevice]) -> BTreeMap<String, f64> {
    let mut peak = BTreeMap::new();
    for (name, pid) in pids {
        peak.insert(name.clone(), proc_peak_mib(&pid.to_string()).unwrap_or(0.0));
    }
    let own = if pids.is_empty() { "bench (roles, agents)" } else { "bench (agents)" };
    peak.insert(own.into(), proc_peak_mib("self").unwrap_or(0.0));
    let swtpm: f64 = devices.iter().filter_map(|d| proc_peak_mib(&d.swtpm.pid().to_string())).sum();
    peak.insert("swtpm (sum)".into(), swtpm);
    peak
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn print_run(run: &Run) {
    println!(
        "fleet of {} device(s), {} operators, roles {}: wall {:.1}s (campaign created to last report)",
        run.devices,
        run.operators,
        if run.processes { "as processes" } else { "in process" },
        run.wall_s
    );
    println!(
        "  switched {}, rolled back {}; load average {} → {}",
        run.switched, run.rolled_back, run.loadavg[0], run.loadavg[1]
    );
    for (reason, count) in &run.failures {
        println!("    {count} × {reason}");
    }
    let m = &run.manufacture;
    println!(
        "  manufacture ({} at a time): {:.1}s, per device p50 {} ms, p90 {} ms",
        m.parallel, m.wall_s, m.per_device.p50_ms, m.per_device.p90_ms
    );
    println!("  {:<4} {:<48} {:>8} {:>8} {:>8}", "step", "", "p50 ms", "p90 ms", "max ms");
    for (step, p) in &run.steps {
        println!(
            "  {:<4} {:<48} {:>8} {:>8} {:>8}",
            step,
            provisioning::ro::step_name(*step),
            p.p50_ms,
            p.p90_ms,
            p.max_ms
        );
    }
    println!("  {:<30} {:>8} {:>8} {:>10}", "CPU during the switch", "user s", "sys s", "peak MiB");
    for (name, cpu) in &run.cpu_s {
        println!(
            "  {:<30} {:>8.2} {:>8.2} {:>10.1}",
            name,
            cpu.user,
            cpu.sys,
            run.peak_mib.get(name).copied().unwrap_or(0.0)
        );
    }
    println!("  memory per device (agents + swtpm): {:.2} MiB", run.mib_per_device);
}
