//! `tresor eventlog`: TCG PC Client event logs (PFP 1.05 §10) on the command line.
//!
//! - `replay FILE [--json]`: parse a binary log (Linux `binary_bios_measurements`, or one
//!   the TRE wrote) and print the PCR values it replays to, as `tpm2_eventlog` does.
//! - `measure --image DIR [--bank ALG]… [--out FILE] [--json]`: measure a device image,
//!   print its events and the PCR values a freshly reset TPM would hold afterwards, and
//!   write the event log the TRE would write.
//! - `refvalues FILE [--id ID] [--out FILE]`: reference values and a starting policy
//!   (`docs/reference-values.md`) from a golden log of a real machine, which `tresor serve
//!   pva` loads like those derived from an image (`verifier::refvalues::derive_from_log`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use protocol::eventlog::{EventLog, LogFormat, MAX_LOG_SIZE, PcrBank, PcrBanks};
use protocol::image;
use protocol::tpm::HashAlg;
use serde::ser::{Serialize, SerializeMap, Serializer};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Replay a binary event log to PCR values.
    Replay {
        /// The log (e.g. /sys/kernel/security/tpm0/binary_bios_measurements).
        file: PathBuf,
        /// Print `{"events": N, "pcrs": {"sha256": {"0": "<hex>", ...}, ...}}`.
        #[arg(long)]
        json: bool,
    },
    /// Measure a device image and predict the PCR values it leads to.
    Measure {
        /// The image directory, holding manifest.toml.
        #[arg(long)]
        image: PathBuf,
        /// PCR bank to measure in; repeat for several.
        #[arg(long = "bank", default_value = "sha256")]
        banks: Vec<HashAlg>,
        /// Write the event log here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the predicted PCRs as JSON, in the shape `replay --json` prints.
        #[arg(long)]
        json: bool,
    },
    /// Derive reference values and a policy from a golden event log.
    Refvalues {
        /// The log of a boot known to be good (binary_bios_measurements).
        file: PathBuf,
        /// The policy id (default: eventlog- and the file name).
        #[arg(long)]
        id: Option<String>,
        /// Write the TOML here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Replay { file, json } => replay(&file, json),
        Command::Measure { image, banks, out, json } => {
            measure(&image, &banks, out.as_deref(), json)
        }
        Command::Refvalues { file, id, out } => refvalues(&file, id, out.as_deref()),
    }
}

fn replay(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let bytes = read_log(file)?;
    let log = EventLog::parse(&bytes)
        .with_context(|| format!("{}: malformed event log", file.display()))?;
    let pcrs =
        log.replay().with_context(|| format!("{}: cannot replay event log", file.display()))?;
    if json {
        print_json(log.events().len(), &pcrs)?;
    } else {
        let format = match log.format() {
            LogFormat::CryptoAgile(_) => "crypto-agile (Spec ID Event03)",
            LogFormat::Sha1 => "SHA-1 (TCG_PCR_EVENT)",
        };
        println!("{}: {format} log, {}", file.display(), records(log.events().len()));
        print_banks(&pcrs);
    }
    Ok(ExitCode::SUCCESS)
}

fn measure(
    dir: &Path,
    banks: &[HashAlg],
    out: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let measurements = image::measure(dir, banks)
        .with_context(|| format!("{}: cannot measure image", dir.display()))?;
    let log = EventLog::from_measurements(banks, &measurements)?;
    let pcrs = log.replay()?;
    if let Some(out) = out {
        std::fs::write(out, log.to_bytes())
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    if json {
        print_json(log.events().len(), &pcrs)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}: {}", dir.display(), records(measurements.len()));
    for m in &measurements {
        let label = match image::component_of(m.event_type, &m.data) {
            Some((name, version)) => format!("{name} {version}"),
            None => hex::encode(&m.data),
        };
        let digest = m
            .digests
            .first()
            .map(|d| format!("{}:{}", d.alg, hex::encode(&d.value)))
            .unwrap_or_default();
        println!("  PCR {:>2}  {:<16} {label:<28} {digest}", m.pcr, m.event_type.to_string());
    }
    println!("PCR values after a fresh TPM reset:");
    print_banks(&pcrs);
    if let Some(out) = out {
        println!("event log written to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn refvalues(file: &Path, id: Option<String>, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let bytes = read_log(file)?;
    let log = EventLog::parse(&bytes)
        .with_context(|| format!("{}: malformed event log", file.display()))?;
    let name = file.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let id = id.unwrap_or_else(|| verifier::refvalues::policy_id_for_log(&name));
    let text = verifier::refvalues::derive_from_log(&log, &id, &file.display().to_string())
        .with_context(|| format!("{}: cannot derive reference values", file.display()))?;
    match out {
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("reference values {id:?} written to {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads at most one byte more than the parser accepts, so a huge (or endless) file is
/// refused without reading it all. Works on securityfs files, whose size reads as zero.
fn read_log(file: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(file)
        .and_then(|f| f.take(MAX_LOG_SIZE as u64 + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", file.display()))?;
    Ok(bytes)
}

fn records(n: usize) -> String {
    if n == 1 { "1 event".to_owned() } else { format!("{n} events") }
}

fn print_banks(pcrs: &PcrBanks) {
    for bank in pcrs.iter() {
        if bank.measured().next().is_none() {
            println!("{}: declared, no PCR measured", bank.alg());
            continue;
        }
        println!("{}:", bank.alg());
        for (pcr, value) in bank.measured() {
            println!("  {pcr:>2}: {}", hex::encode(value));
        }
    }
}

fn print_json(events: usize, pcrs: &PcrBanks) -> anyhow::Result<()> {
    let doc = ReplayJson { events, pcrs: JsonBanks(pcrs) };
    println!("{}", serde_json::to_string(&doc)?);
    Ok(())
}

/// `{"events": N, "pcrs": {...}}`. N counts every record after the Spec ID header
/// (EV_NO_ACTION records included), or every record of a SHA-1 log.
#[derive(serde::Serialize)]
struct ReplayJson<'a> {
    events: usize,
    pcrs: JsonBanks<'a>,
}

/// Banks with at least one measured PCR, each a map from PCR index (a decimal string) to
/// lowercase hex, in ascending PCR order: the PCRs `tpm2_eventlog` prints.
struct JsonBanks<'a>(&'a PcrBanks);

struct JsonBank<'a>(&'a PcrBank);

impl Serialize for JsonBanks<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for bank in self.0.iter().filter(|b| b.measured().next().is_some()) {
            map.serialize_entry(bank.alg().name(), &JsonBank(bank))?;
        }
        map.end()
    }
}

impl Serialize for JsonBank<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (pcr, value) in self.0.measured() {
            map.serialize_entry(&pcr.to_string(), &hex::encode(value))?;
        }
        map.end()
    }
}
