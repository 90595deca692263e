//! `tresor attack`: the attack matrix of issue 7 (`docs/SECURITY.md`). Starts a lab on this
//! machine, runs every scenario of `tresor::attack` against it, prints which stage stopped
//! each attack with which named check, and exits non-zero if any attack was accepted or
//! stopped elsewhere than expected (an earlier, stricter stage is allowed and shown).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tresor::attack::{self, Options};

#[derive(clap::Args)]
pub struct Args {
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the matrix into this markdown file (e.g. docs/SECURITY.md), between its
    /// attack-matrix marker comments; appended when the file has none.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Keep the lab (PKI, stores, devices, artifacts) in this directory.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Run only the scenarios whose name contains this (repeatable).
    #[arg(long)]
    only: Vec<String>,
    /// How many scenarios run at once.
    #[arg(long, default_value_t = 6)]
    parallel: usize,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.list {
        for s in attack::scenarios() {
            println!("{:>2}  {:<36} {:<10} {}", s.item, s.name, s.expect.stage, s.action);
        }
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(
        args.markdown.is_none() || args.only.is_empty(),
        "--markdown writes the whole matrix; it cannot be combined with --only"
    );
    let options = Options { keep: args.keep, only: args.only, parallel: args.parallel };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build()?;
    println!(
        "tresor attack: every attack of the matrix against PVA, RO, MNO-A, MNO-B and swtpm devices on this machine"
    );
    let report = runtime.block_on(attack::run(&options))?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.to_json())?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        let existing = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        std::fs::write(path, attack::splice_matrix(&existing, &report.markdown_matrix()))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
