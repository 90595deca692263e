//! `tresor`: the command-line shell over the role crates. Each subcommand parses its
//! arguments and calls a library function that the tests call too.

#![deny(unsafe_code)]

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "tresor",
    version,
    about = "IMSI change and key transfer by TRE (3GPP TR 33.812 alternative 3d), gated by TPM attestation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text (colour only on a terminal) or as one JSON object per line.
    #[arg(long, global = true, value_enum, env = "TRESOR_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    /// TPM credential protection in tpm2-tools formats: make-credential, activate-credential.
    Tpm(cmd::tpm::Args),
    /// The PVA's tools: reference values from an image, tpm2_checkquote-style checks.
    Pva(cmd::pva::Args),
    /// Attest any TPM at a PVA: enrol, activate, challenge, quote, appraise; save the EAR.
    Attest(cmd::attest::Args),
    /// EAT Attestation Results: verify one as a relying party does.
    Ear(cmd::ear::Args),
    /// The TRE's evidence: decode it field by field.
    Evidence(cmd::evidence::Args),
    /// Throughput figures (appraisal, ...).
    Bench(cmd::bench::Args),
    /// Run one network role: the PVA, the RO, or an operator (MNO-A/MNO-B).
    Serve(cmd::serve::Args),
    /// A round-robin TCP front (TLS passed through) for several instances of one role.
    Front(cmd::front::Args),
    /// A device (M2ME): manufacture it, or power it on and run its agent.
    Device(cmd::device::Args),
    /// Create a campaign at the RO, follow it, cancel it.
    Campaign(cmd::campaign::Args),
    /// An operator's own tools: an attach check (AKA) of a card against its AuC.
    Mno(cmd::mno::Args),
    /// The main job: N devices switch from MNO-A to MNO-B on this machine.
    Demo(cmd::demo::Args),
    /// The attack matrix: every attack tresor claims to stop, and which check stops it.
    Attack(cmd::attack::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    raise_open_file_limit();
    let result = match cli.command {
        Command::Pki(args) => cmd::pki::run(args),
        Command::Eventlog(args) => cmd::eventlog::run(args),
        Command::Uicc(args) => cmd::uicc::run(args),
        Command::Tre(args) => cmd::tre::run(args),
        Command::Tpm(args) => cmd::tpm::run(args),
        Command::Pva(args) => cmd::pva::run(args),
        Command::Attest(args) => cmd::attest::run(args),
        Command::Ear(args) => cmd::ear::run(args),
        Command::Evidence(args) => cmd::evidence::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Front(args) => cmd::front::run(args),
        Command::Device(args) => cmd::device::run(args),
        Command::Campaign(args) => cmd::campaign::run(args),
        Command::Mno(args) => cmd::mno::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Attack(args) => cmd::attack::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tresor: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit of open files (RLIMIT_NOFILE) to the hard limit. A role serving a
/// fleet holds a socket per device, and the demo's process runs every device's agent and
/// TPM connection next to the four services: the usual soft limit of 1024 would stop them
/// near 250 devices, while the hard limit is usually far higher. Best effort: a refusal
/// leaves the limit as it was, and `accept` backs off on EMFILE.
fn raise_open_file_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::debug!(error = %e, "could not raise the open-file limit");
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings), as text with colour only
/// when stderr is a terminal (a file or journald gets no escape codes), or as JSON lines
/// (`--log-format json`: one object per event, its fields at the top level, for log
/// shippers). The TSS's own log, which reports every refused TPM command as an error (a
/// failed PolicyPCR is the point of an attack scenario), follows `TSS2_LOG`, quiet unless
/// set.
fn init_logging(format: LogFormat) {
    if std::env::var_os("TSS2_LOG").is_none() {
        // SAFETY: called first thing in main, before any thread exists, so no other thread
        // can read the environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("TSS2_LOG", "all+NONE");
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init()
        }
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks of every subcommand (duplicate argument names, …),
    /// which otherwise fire only when that subcommand runs.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
