//! `tresor pki`: create and check the certificate infrastructure (`provisioning::pki`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use provisioning::pki::{self, Pki};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Create a CI root, PVA, RO and operator certificates and a TPM manufacturer CA in DIR.
    Init {
        /// Directory for ci.pem, pva.pem, ro.pem, one <operator>.pem per operator,
        /// manufacturer.pem and their .key files (created if missing).
        dir: PathBuf,
        /// Replace an existing PKI in DIR.
        #[arg(long)]
        force: bool,
        /// An operator to certify (repeat, or separate with commas); default mno-a and mno-b.
        #[arg(long = "operator", value_delimiter = ',')]
        operators: Vec<String>,
    },
    /// Certify one more operator under the CI of the PKI in DIR (reads DIR/ci.key).
    AddOperator {
        dir: PathBuf,
        /// Its name: a DNS label (e.g. acme-mobile), its certificate's CN.
        name: String,
    },
    /// Load DIR and check it: chains to the CI, validity, key pairs, key file modes.
    Check { dir: PathBuf },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Init { dir, force, operators } => {
            let operators: Vec<&str> = if operators.is_empty() {
                pki::DEFAULT_OPERATORS.to_vec()
            } else {
                operators.iter().map(String::as_str).collect()
            };
            let pki = pki::init_with(&dir, force, &operators)
                .with_context(|| format!("tresor pki init {}", dir.display()))?;
            println!("PKI written to {}", dir.display());
            print_summary(&pki);
        }
        Command::AddOperator { dir, name } => {
            let pki = pki::add_operator(&dir, &name)
                .with_context(|| format!("tresor pki add-operator {} {name}", dir.display()))?;
            println!("{name}.pem and {name}.key written to {}", dir.display());
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
    for role in pki.roles() {
        println!(
            "  {:<17} {role}, signed by the CI (TLS server + client, COSE signing)",
            format!("{role}.pem")
        );
    }
    println!("  manufacturer.pem  TPM manufacturer root CA (ECDSA P-384), signs EK certificates");
    println!("  *.key             PKCS#8 private keys, mode 0600");
    let _ = pki.dir();
}
