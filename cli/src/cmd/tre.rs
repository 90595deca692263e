//! `tresor tre`: the device's TPM side by hand. `tre quote` makes a quote in the file
//! formats of tpm2-tools (`tpm2_quote -m -s -o`, `tpm2_readpublic -f pem`) so that the real
//! `tpm2_checkquote` can verify it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use protocol::tpm::tools::QuotePcrs;
use protocol::tpm::{PcrSelection, PcrValues, Public, Unmarshal};
use tre::tpm::{KeyAlg, Tpm};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Quote PCRs with the device's AK (created, with its EK, if the TPM has none).
    Quote(QuoteArgs),
}

#[derive(clap::Args)]
struct QuoteArgs {
    /// tpm2-tss TCTI of the TPM, e.g. swtpm:path=/run/tpm/tpm.sock or swtpm:host=127.0.0.1,port=2321.
    #[arg(long, env = "TPM2TOOLS_TCTI")]
    tcti: String,
    /// Qualifying data, hex (the verifier's nonce), at most 64 bytes.
    #[arg(long)]
    nonce: String,
    /// PCR selection in tpm2-tools syntax.
    #[arg(long, default_value = "sha256:0,1,2,3,4,5,6,7")]
    pcrs: PcrSelection,
    /// AK algorithm: ecc or rsa.
    #[arg(long, default_value = "ecc")]
    ak: KeyAlg,
    /// Output directory for quote.msg, quote.sig, quote.pcrs and ak.pem.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Quote(args) => quote(args),
    }
}

fn quote(args: QuoteArgs) -> anyhow::Result<ExitCode> {
    let nonce = hex::decode(args.nonce.trim()).context("--nonce is not hex")?;
    anyhow::ensure!(nonce.len() <= 64, "--nonce is {} bytes; a TPM takes at most 64", nonce.len());
    let mut tpm = Tpm::connect(&args.tcti)?;
    let ak = tpm.ak(args.ak)?;
    let quote = tpm.quote(&ak, &nonce, &args.pcrs)?;
    let mut values = PcrValues::new();
    for bank in args.pcrs.banks() {
        let pcrs: Vec<u8> = bank.pcrs().collect();
        for (pcr, value) in tpm.pcr_read(bank.hash(), &pcrs)? {
            values.insert(bank.hash(), pcr, value)?;
        }
    }
    let pcrs = QuotePcrs { selection: args.pcrs.clone(), values }.to_bytes()?;
    let pem = Public::from_bytes(&ak.public_bytes()?)?.to_pem()?;

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for (name, bytes) in [
        ("quote.msg", quote.attest.as_slice()),
        ("quote.sig", quote.signature.as_slice()),
        ("quote.pcrs", pcrs.as_slice()),
        ("ak.pem", pem.as_bytes()),
    ] {
        let path = args.out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("quote of {} written to {}", args.pcrs, args.out.display());
    Ok(ExitCode::SUCCESS)
}
