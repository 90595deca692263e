//! `tresor pki`: create and check the certificate infrastructure (`provisioning::pki`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use provisioning::pki::{self, Pki, Role};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Create a CI root, PVA/RO/MNO-A/MNO-B certificates and a TPM manufacturer CA in DIR.
    Init {
        /// Directory for ci.pem, pva.pem, ro.pem, mno-a.pem, mno-b.pem, manufacturer.pem and
        /// their .key files (created if missing).
        dir: PathBuf,
        /// Replace an existing PKI in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Load DIR and check it: chains to the CI, validity, key pairs, key file modes.
    Check { dir: PathBuf },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Init { dir, force } => {
            let pki = pki::init(&dir, force)
                .with_context(|| format!("tresor pki init {}", dir.display()))?;
            println!("PKI written to {}", dir.display());
            print_summary(&pki);
        }
        Command::Check { dir } => {
            let pki = Pki::load(&dir).with_context(|| format!("PKI in {}", dir.display()))?;
            println!("PKI in {} is valid", dir.display());
            print_summary(&pki);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(pki: &Pki) {
    println!("  ci.pem            CI root (ECDSA P-256)");
    for role in Role::ALL {
        println!(
            "  {:<17} {role}, signed by the CI (TLS server + client, COSE signing)",
            format!("{role}.pem")
        );
    }
    println!("  manufacturer.pem  TPM manufacturer root CA (ECDSA P-384), signs EK certificates");
    println!("  *.key             PKCS#8 private keys, mode 0600");
    let _ = pki.dir();
}
