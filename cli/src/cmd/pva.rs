//! `tresor pva`: the PVA's tools on the command line.
//!
//! - `reference-values --image DIR [--bank ALG]… [--out FILE]`: reference values and a
//!   starting policy for a known-good device image (`docs/reference-values.md`), measured
//!   with the code the TRE measures with.
//! - `check-quote --ak PEM --msg FILE --sig FILE --pcrs FILE --nonce HEX [-g ALG]`: the
//!   inputs and exit status of `tpm2_checkquote`: 0 when the quote is valid, 1 with the
//!   failed check otherwise (`verifier::checkquote`). `--json` prints every check with its
//!   result and the PCR values of the PCR file (bank, index, digest).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use protocol::tpm::{HashAlg, Spki};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Derive reference values and a policy from a known-good device image.
    ReferenceValues {
        /// The image directory, holding manifest.toml.
        #[arg(long)]
        image: PathBuf,
        /// PCR bank to record digests for; repeat for several. The policy allows the
        /// non-SHA-1 banks given (SHA-1 only when it is the only one).
        #[arg(long = "bank", default_value = "sha256")]
        banks: Vec<HashAlg>,
        /// Write the TOML here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify a quote made by tpm2_quote, as tpm2_checkquote does.
    CheckQuote {
        #[command(flatten)]
        quote: CheckQuoteArgs,
        /// Print a JSON document: the checks passed and failed, the quote's fields and the
        /// PCR values.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
pub(super) struct CheckQuoteArgs {
    /// The AK's public key, PEM (tpm2_readpublic -f pem).
    #[arg(long, short = 'u')]
    ak: PathBuf,
    /// The quoted TPMS_ATTEST (tpm2_quote -m).
    #[arg(long, short = 'm')]
    msg: PathBuf,
    /// The TPMT_SIGNATURE (tpm2_quote -s).
    #[arg(long, short = 's')]
    sig: PathBuf,
    /// The PCR selection and values (tpm2_quote -o).
    #[arg(long, short = 'f')]
    pcrs: PathBuf,
    /// The qualifying data the quote must carry, hex.
    #[arg(long, short = 'q')]
    nonce: String,
    /// Hash of the PCR digest and the signature.
    #[arg(short = 'g', long = "hash-algorithm", default_value = "sha256")]
    hash: HashAlg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::ReferenceValues { image, banks, out } => {
            reference_values(&image, &banks, out.as_deref())
        }
        Command::CheckQuote { quote, json: false } => check_quote(&quote),
        Command::CheckQuote { quote, json: true } => super::checkquote_json::run(&quote),
    }
}

fn reference_values(
    image: &Path,
    banks: &[HashAlg],
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let text = verifier::refvalues::derive(image, banks)
        .with_context(|| format!("{}: cannot derive reference values", image.display()))?;
    match out {
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("reference values written to {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The inputs of `tpm2_checkquote`, read.
pub(super) struct QuoteFiles {
    pub ak_pem: String,
    pub msg: Vec<u8>,
    pub sig: Vec<u8>,
    pub pcrs: Vec<u8>,
    pub nonce: Vec<u8>,
    pub hash: HashAlg,
    ak_path: PathBuf,
}

impl QuoteFiles {
    pub fn read(args: &CheckQuoteArgs) -> anyhow::Result<Self> {
        Ok(Self {
            ak_pem: String::from_utf8(read(&args.ak)?).context("--ak is not PEM text")?,
            msg: read(&args.msg)?,
            sig: read(&args.sig)?,
            pcrs: read(&args.pcrs)?,
            nonce: hex::decode(args.nonce.trim()).context("--nonce is not hex")?,
            hash: args.hash,
            ak_path: args.ak.clone(),
        })
    }

    pub fn key(&self) -> anyhow::Result<Spki> {
        Spki::from_pem(&self.ak_pem)
            .with_context(|| format!("{}: not a public key", self.ak_path.display()))
    }
}

fn check_quote(args: &CheckQuoteArgs) -> anyhow::Result<ExitCode> {
    let f = QuoteFiles::read(args)?;
    let key = f.key()?;
    match verifier::checkquote::check_quote(&key, &f.msg, &f.sig, &f.pcrs, &f.nonce, f.hash) {
        Ok(q) => {
            println!(
                "quote verified: {} signed by the AK, nonce and PCR digest match; resetCount {}, restartCount {}, clock {} ms{}",
                q.selection,
                q.clock.reset_count,
                q.clock.restart_count,
                q.clock.clock,
                if q.clock.safe { "" } else { " (clock not safe)" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            eprintln!("tresor: quote is not valid: {reason}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Reads a file of at most 1 MiB.
fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    const MAX: u64 = 1024 * 1024;
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(bytes.len() as u64 <= MAX, "{} is larger than {MAX} bytes", path.display());
    Ok(bytes)
}
