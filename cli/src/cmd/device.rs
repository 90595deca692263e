//! `tresor device`: a device (M2ME) as its own process. `device manufacture` is the
//! equipment supplier's step (EK, EK certificate, anti-rollback counter, a UICC with an
//! MNO-A subscription); `device run` powers it on and runs its agent until its campaign is
//! done.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use provisioning::mno::{MnoConfig, Operator};
use tre::agent::AgentState;
use tre::device::DeviceConfig;
use tre::ekcert::ManufacturerCa;
use tre::manufacture::{ManufactureOptions, manufacture};
use tre::swtpm::{Swtpm, SwtpmConfig};
use tre::tpm::Tpm;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Manufacture the device of a configuration: TPM and UICC with an MNO-A subscription.
    Manufacture(ManufactureArgs),
    /// Power the device on and run its agent until its campaign is done.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct ManufactureArgs {
    /// The device's configuration (examples/device.toml).
    #[arg(long)]
    config: PathBuf,
    /// The TPM manufacturer CA certificate (PEM).
    #[arg(long)]
    manufacturer_cert: PathBuf,
    /// The TPM manufacturer CA private key (PKCS#8 PEM).
    #[arg(long)]
    manufacturer_key: PathBuf,
    /// The old operator's configuration: its store issues the initial subscription.
    #[arg(long)]
    mno: PathBuf,
    /// Append "DEVICE_ID ICCID" to this file (the input of `tresor campaign create`).
    #[arg(long)]
    devices_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The device's configuration (examples/device.toml).
    #[arg(long)]
    config: PathBuf,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Manufacture(args) => manufacture_device(args),
        Command::Run(args) => run_device(args),
    }
}

fn manufacture_device(args: ManufactureArgs) -> anyhow::Result<ExitCode> {
    let config = DeviceConfig::load(&args.config)?;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let ca =
        ManufacturerCa::from_pem(&read(&args.manufacturer_cert)?, &read(&args.manufacturer_key)?)?;
    let operator = Operator::open(&MnoConfig::load(&args.mno)?)?;

    // On the main thread, which lives as long as the process: the swtpm dies with it.
    let swtpm = Swtpm::start_owned(&config.tpm.state, &SwtpmConfig::load()?)?;
    let made = {
        let mut tpm = Tpm::connect(&swtpm.tcti())?;
        manufacture(
            &mut tpm,
            &ca,
            &ManufactureOptions { ek_alg: config.tpm.ek, ..Default::default() },
        )?
    };
    drop(swtpm);
    let profile = operator.issue_subscription()?;
    let (iccid, imsi) = (profile.iccid.clone(), profile.imsi.clone());
    if let Some(dir) = config.uicc.state.parent() {
        storage::private_dir(dir)?;
    }
    drop(uicc::Card::create(&config.uicc.state, profile, uicc::CardOptions::new()?)?);
    println!(
        "manufactured {} with ICCID {iccid}, IMSI {imsi} ({})",
        made.device_id,
        operator.name()
    );
    if let Some(file) = args.devices_file {
        let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&file)?;
        writeln!(out, "{} {iccid}", made.device_id)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn run_device(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = DeviceConfig::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let outcome = runtime.block_on(tre::device::run(&config))?;
    if args.json {
        let json = serde_json::json!({
            "state": format!("{:?}", outcome.state).to_lowercase(),
            "imsi": outcome.imsi,
            "iccid": outcome.iccid,
            "usim_active": outcome.usim_active,
            "tre_active": outcome.tre_active,
            "abort_reason": outcome.abort_reason,
        });
        println!("{json}");
    } else {
        match &outcome.abort_reason {
            None => {
                println!("{:?}: IMSI {} on ICCID {}", outcome.state, outcome.imsi, outcome.iccid)
            }
            Some(reason) => println!("rolled back ({reason}); IMSI {} still active", outcome.imsi),
        }
    }
    Ok(if outcome.state == AgentState::Switched { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
