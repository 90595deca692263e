//! `tresor mno`: an operator's own tools, run with its configuration (its store and keys).
//! `mno aka` is an attach check: the operator's AuC makes a fresh authentication vector
//! for the IMSI a card runs and the card answers AUTHENTICATE (3GPP TS 33.102 §6.3, real
//! Milenage on both sides); it succeeds only if the card holds the operator's K and OPc for
//! a subscription in service — not a retired one, nor one a campaign never made live.

use std::path::PathBuf;
use std::process::ExitCode;

use provisioning::mno::{MnoConfig, Operator};
use serde_json::json;
use uicc::auth::Outcome;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Authenticate a card with this operator's AuC: exit 0 if RES = XRES.
    Aka {
        /// The operator's configuration (examples/mno-a.toml).
        #[arg(long)]
        config: PathBuf,
        /// The card's state file (its device must not be running).
        #[arg(long)]
        card: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Aka { config, card, json } => aka(&config, &card, json),
    }
}

fn aka(
    config: &std::path::Path,
    card: &std::path::Path,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let operator = Operator::open(&MnoConfig::load(config)?)?;
    let mut card = uicc::Card::open(card)?;
    let imsi = card.imsi().clone();
    let result = match operator.attach_vector(&imsi) {
        Err(e) => Err(e.to_string()),
        Ok(vector) => match card.run_aka(&vector.rand, &vector.autn) {
            Outcome::Success { res, .. } if res == vector.xres => Ok(()),
            Outcome::Success { .. } => Err("RES differs from XRES".to_owned()),
            other => Err(format!("the card refused AUTHENTICATE: {other:?}")),
        },
    };
    if as_json {
        let (ok, reason) = match &result {
            Ok(()) => (true, None),
            Err(reason) => (false, Some(reason.clone())),
        };
        println!(
            "{}",
            json!({ "operator": operator.name(), "imsi": imsi.to_string(), "ok": ok, "reason": reason })
        );
    } else {
        match &result {
            Ok(()) => println!("{}: IMSI {imsi} authenticated (RES = XRES)", operator.name()),
            Err(reason) => println!("{}: IMSI {imsi} not authenticated: {reason}", operator.name()),
        }
    }
    Ok(if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
