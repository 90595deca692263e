//! `tresor`: the command-line shell over the role crates. Each subcommand parses its
//! arguments and calls a library function that the tests call too.

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(name = "tresor", version, about = "IMSI change and key transfer by TRE (3GPP TR 33.812 alternative 3d), gated by TPM attestation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Certificate infrastructure: CI root, role certificates, TPM manufacturer CA.
    Pki(cmd::pki::Args),
    /// TCG PC Client event logs: parse and replay.
    Eventlog(cmd::eventlog::Args),
    /// UICC/USIM emulator: create cards, serve them over vpcd, run Milenage.
    Uicc(cmd::uicc::Args),
    /// The device's TPM side: quotes in tpm2-tools formats.
    Tre(cmd::tre::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pki(args) => cmd::pki::run(args),
        Command::Eventlog(args) => cmd::eventlog::run(args),
        Command::Uicc(args) => cmd::uicc::run(args),
        Command::Tre(args) => cmd::tre::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tresor: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
