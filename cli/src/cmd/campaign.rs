//! `tresor campaign`: a subscriber's campaign at the RO, created with an operator's
//! certificate (mutual TLS), its status (every device's state, what it waits for, step
//! timings) and its cancellation.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use protocol::{DeviceId, Iccid};
use provisioning::mno::api::CampaignDevice;
use provisioning::ro::{CampaignReport, CampaignSummary, NewCampaign};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Create a campaign: move the listed devices from one operator to another.
    Create(CreateArgs),
    /// List the RO's campaigns (id, operators, state).
    List(ListArgs),
    /// Show a campaign's devices, states and step timings.
    Status(StatusArgs),
    /// End a campaign: devices not yet started are released at both operators, devices
    /// under way restore their old profile, devices past the commit finish their switch.
    Cancel(StatusArgs),
}

/// How to reach the RO and as whom.
#[derive(clap::Args)]
struct Connection {
    /// Base URL of the RO.
    #[arg(long, default_value = "https://localhost:8443")]
    ro: String,
    /// PKI directory (`tresor pki init`): uses `ci.pem` and the operator's certificate and key.
    #[arg(long, default_value = "pki")]
    pki: PathBuf,
    /// The operator whose certificate authenticates the request (default: the new one).
    #[arg(long = "as")]
    operator: Option<String>,
}

#[derive(clap::Args)]
struct CreateArgs {
    /// The old operator.
    #[arg(long)]
    from: String,
    /// The new operator.
    #[arg(long)]
    to: String,
    /// Devices, one "DEVICE_ID ICCID" per line (`#` starts a comment), or a JSON array of
    /// {"device_id", "iccid"} objects.
    #[arg(long)]
    devices: PathBuf,
    #[command(flatten)]
    connection: Connection,
    /// Print the campaign as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// The campaign id `campaign create` printed.
    id: String,
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match args.command {
            Command::Create(args) => {
                let devices = read_devices(&args.devices)?;
                let new = NewCampaign { from: args.from, to: args.to.clone(), devices };
                let client = client(&args.connection, &args.to)?;
                let url = format!("{}/v1/campaigns", args.connection.ro.trim_end_matches('/'));
                let report: CampaignReport =
                    transport::client::json(client.post(url).json(&new).send().await?).await?;
                show(&report, args.json)
            }
            Command::List(args) => {
                let client = client(&args.connection, "mno-b")?;
                let url = format!("{}/v1/campaigns", args.connection.ro.trim_end_matches('/'));
                let list: Vec<CampaignSummary> =
                    transport::client::json(client.get(url).send().await?).await?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    for c in &list {
                        println!("{}  {} → {}  {}", c.id, c.from, c.to, c.state);
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Status(args) => {
                let client = client(&args.connection, "mno-b")?;
                let url = format!(
                    "{}/v1/campaigns/{}",
                    args.connection.ro.trim_end_matches('/'),
                    args.id
                );
                let report: CampaignReport =
                    transport::client::json(client.get(url).send().await?).await?;
                show(&report, args.json)
            }
            Command::Cancel(args) => {
                let client = client(&args.connection, "mno-b")?;
                let url = format!(
                    "{}/v1/campaigns/{}/cancel",
                    args.connection.ro.trim_end_matches('/'),
                    args.id
                );
                let report: CampaignReport =
                    transport::client::json(client.post(url).send().await?).await?;
                show(&report, args.json)
            }
        }
    })
}

fn client(connection: &Connection, default_operator: &str) -> anyhow::Result<reqwest::Client> {
    let operator = connection.operator.as_deref().unwrap_or(default_operator);
    let dir = &connection.pki;
    let identity = transport::Identity::from_pem_files(
        &dir.join(format!("{operator}.pem")),
        &dir.join(format!("{operator}.key")),
    )
    .with_context(|| format!("the certificate and key of {operator} in {}", dir.display()))?;
    let roots = transport::tls::roots_from_pem_file(&dir.join("ci.pem"))?;
    let ro = transport::ServerRole::Expected(protocol::role::Expected::named(
        protocol::role::Role::Ro,
        "ro",
    ));
    Ok(transport::client::client(&roots, Some(&identity), &ro)?)
}

fn read_devices(path: &PathBuf) -> anyhow::Result<Vec<CampaignDevice>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON device list", path.display()));
    }
    let mut devices = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(id), Some(iccid), None) = (fields.next(), fields.next(), fields.next()) else {
            anyhow::bail!("{}:{}: expected \"DEVICE_ID ICCID\"", path.display(), n + 1);
        };
        let device_id: DeviceId =
            id.parse().with_context(|| format!("{}:{}: device id", path.display(), n + 1))?;
        let iccid: Iccid =
            iccid.parse().with_context(|| format!("{}:{}: ICCID", path.display(), n + 1))?;
        devices.push(CampaignDevice { device_id, iccid });
    }
    Ok(devices)
}

fn show(report: &CampaignReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("campaign {} ({} → {}): {}", report.id, report.from, report.to, report.state);
        if let Some(failure) = &report.failure {
            println!("  failed: {failure}");
        }
        for d in &report.devices {
            let detail = d.failure.as_deref().map(|f| format!(" — {f}")).unwrap_or_default();
            let waiting =
                d.waiting.as_deref().map(|w| format!(" (waiting: {w})")).unwrap_or_default();
            println!("  {}  {}  {}{detail}{waiting}", d.device_id, d.iccid, d.state);
            for refused in &d.report_refused {
                println!("    report refused: {refused}");
            }
        }
        let s = &report.summary;
        println!(
            "switched {}, rolled back {}, in progress {}, reconciling {}, reports pending {}",
            s.switched, s.failed, s.in_progress, s.reconciling, s.reports_pending
        );
    }
    Ok(if report.state == "failed" { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
