//! `tresor campaign`: a subscriber's campaign at the RO (`docs/campaigns.md`), created with
//! an operator's certificate (mutual TLS, with an `Idempotency-Key` when given), the list,
//! its status (every device's state, what it waits for, step timings; or one device), its
//! cancellation, and its events as they happen (`watch`). The same API a device-management
//! stack calls. The RO's URL comes from `--ro` or `TRESOR_RO`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use protocol::{DeviceId, Iccid};
use provisioning::mno::api::CampaignDevice;
use provisioning::ro::{CampaignPage, CampaignReport, DeviceReport, NewCampaign};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Create a campaign: move the listed devices from one operator to another.
    Create(CreateArgs),
    /// List the RO's campaigns (id, operators, state, devices by state), oldest first.
    List(ListArgs),
    /// Show a campaign's devices, states and step timings (or one device's).
    Status(StatusArgs),
    /// End a campaign: devices not yet started are released at both operators, devices
    /// under way restore their old profile, devices past the commit finish their switch.
    Cancel(StatusArgs),
    /// Print the campaign events as the RO commits them (Server-Sent Events), until the
    /// campaign finishes (or forever without an id).
    Watch(WatchArgs),
}

/// How to reach the RO and as whom.
#[derive(clap::Args)]
struct Connection {
    /// Base URL of the RO.
    #[arg(long, env = "TRESOR_RO", default_value = "https://localhost:8443")]
    ro: String,
    /// PKI directory (`tresor pki init`): uses `ci.pem` and the certificate and key of the
    /// caller.
    #[arg(long, env = "TRESOR_PKI", default_value = "pki")]
    pki: PathBuf,
    /// Whose certificate authenticates the request: an operator, or `ro` (the RO's own
    /// tooling, which may read). Default: the new operator to create, the campaign's new
    /// operator to cancel, `ro` to read.
    #[arg(long = "as")]
    caller: Option<String>,
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
    /// Sent as `Idempotency-Key`: repeating the command with the same key and devices
    /// answers the campaign the first one created instead of making another.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Print the campaign as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    connection: Connection,
    /// Only campaigns in this state (preparing, ready, completed, failed, cancelling,
    /// cancelled).
    #[arg(long)]
    state: Option<String>,
    /// Only campaigns this operator is in.
    #[arg(long)]
    operator: Option<String>,
    /// Campaigns per request (the RO's pages; every page is fetched).
    #[arg(long, default_value_t = 100)]
    page: usize,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct WatchArgs {
    /// Only this campaign's events; the watch ends when it finishes.
    id: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// The campaign id `campaign create` printed.
    id: String,
    /// Only this device (status only).
    #[arg(long)]
    device: Option<DeviceId>,
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
                let mut request = client.post(url(&args.connection, "/v1/campaigns")).json(&new);
                if let Some(key) = &args.idempotency_key {
                    request = request.header("idempotency-key", key);
                }
                let report: CampaignReport = transport::client::json(request.send().await?).await?;
                show(&report, args.json)
            }
            Command::List(args) => {
                let client = client(&args.connection, "ro")?;
                let mut campaigns = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let mut query = vec![("limit", args.page.to_string())];
                    for (key, value) in
                        [("state", &args.state), ("operator", &args.operator), ("after", &after)]
                    {
                        if let Some(value) = value {
                            query.push((key, value.clone()));
                        }
                    }
                    let request = client.get(url(&args.connection, "/v1/campaigns")).query(&query);
                    let page: CampaignPage = transport::client::json(request.send().await?).await?;
                    campaigns.extend(page.campaigns);
                    match page.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&campaigns)?);
                } else {
                    for c in &campaigns {
                        let devices: Vec<String> =
                            c.devices.iter().map(|(state, n)| format!("{n} {state}")).collect();
                        println!(
                            "{}  {} → {}  {}  {}",
                            c.id,
                            c.from,
                            c.to,
                            c.state,
                            devices.join(", ")
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Status(args) => {
                let client = client(&args.connection, "ro")?;
                let base = format!("/v1/campaigns/{}", args.id);
                if let Some(device) = &args.device {
                    let path = format!("{base}/devices/{device}");
                    let report: DeviceReport = transport::client::json(
                        client.get(url(&args.connection, &path)).send().await?,
                    )
                    .await?;
                    return show_device(&report, args.json);
                }
                let report: CampaignReport =
                    transport::client::json(client.get(url(&args.connection, &base)).send().await?)
                        .await?;
                show(&report, args.json)
            }
            Command::Cancel(args) => {
                let operator = match &args.connection.caller {
                    Some(operator) => operator.clone(),
                    None => {
                        // The campaign's new operator, as the RO's own tooling reads it.
                        let reader = client(&args.connection, "ro")?;
                        let path = format!("/v1/campaigns/{}", args.id);
                        let report: CampaignReport = transport::client::json(
                            reader.get(url(&args.connection, &path)).send().await?,
                        )
                        .await?;
                        report.to
                    }
                };
                let client = client(&args.connection, &operator)?;
                let path = format!("/v1/campaigns/{}/cancel", args.id);
                let report: CampaignReport = transport::client::json(
                    client.post(url(&args.connection, &path)).send().await?,
                )
                .await?;
                show(&report, args.json)
            }
            Command::Watch(args) => watch(&args).await,
        }
    })
}

fn url(connection: &Connection, path: &str) -> String {
    format!("{}{path}", connection.ro.trim_end_matches('/'))
}

/// Prints each event of the stream as one JSON line; ends with the campaign it watches.
async fn watch(args: &WatchArgs) -> anyhow::Result<ExitCode> {
    let client = client(&args.connection, "ro")?;
    let mut request = client
        .get(url(&args.connection, "/v1/events"))
        .header("accept", "text/event-stream")
        .timeout(std::time::Duration::from_secs(365 * 24 * 3600));
    if let Some(id) = &args.id {
        request = request.query(&[("campaign", id)]);
    }
    let mut response = transport::client::check(request.send().await?).await?;
    let mut buffer = String::new();
    let (mut event, mut data) = (String::new(), String::new());
    while let Some(chunk) = response.chunk().await? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(value) = line.strip_prefix("event:") {
                event = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                println!("{data}");
                if event == "campaign-finished" && args.id.is_some() {
                    return Ok(ExitCode::SUCCESS);
                }
                event.clear();
                data.clear();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn client(connection: &Connection, default_caller: &str) -> anyhow::Result<reqwest::Client> {
    let caller = connection.caller.as_deref().unwrap_or(default_caller);
    let dir = &connection.pki;
    let identity = transport::Identity::from_pem_files(
        &dir.join(format!("{caller}.pem")),
        &dir.join(format!("{caller}.key")),
    )
    .with_context(|| format!("the certificate and key of {caller} in {}", dir.display()))?;
    let roots = transport::tls::roots_from_pem_file(&dir.join("ci.pem"))?;
    let ro = transport::ServerRole::Expected(protocol::role::Expected::named(
        protocol::role::Role::Ro,
        "ro",
    ));
    Ok(transport::client::client(&roots, Some(&identity), &ro)?)
}

fn show_device(d: &DeviceReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(d)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("device {} ({}): {}", d.device_id, d.iccid, d.state);
    if let Some(failure) = &d.failure {
        println!("  failed at step {}: {failure}", d.failed_step.unwrap_or(0));
    }
    if let Some(waiting) = &d.waiting {
        println!("  waiting: {waiting}");
    }
    for s in &d.steps {
        println!("  {:>2} {:<36} {:>6} ms", s.step, s.name, s.ms);
    }
    Ok(ExitCode::SUCCESS)
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
