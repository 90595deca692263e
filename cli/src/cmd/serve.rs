//! `tresor serve pva|ro|mno --config FILE`: one network role as its own process, on the
//! address its configuration names, until Ctrl-C or SIGTERM (then it finishes open requests).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use provisioning::{mno, ro};
use tokio::net::TcpListener;

#[derive(clap::Args)]
pub struct Args {
    /// The role to run.
    role: Role,
    /// Its configuration file (see examples/).
    #[arg(long)]
    config: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Role {
    /// The platform validation authority.
    Pva,
    /// The registration operator (DRF and DPF).
    Ro,
    /// An operator, MNO-A or MNO-B (the configuration's `role` says which).
    Mno,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let config = &args.config;
    match args.role {
        Role::Pva => {
            let pva = verifier::Config::load(config)?;
            let listen = pva.listen.clone().context("the PVA configuration has no `listen` address")?;
            let listener = bind(&listen).await?;
            tracing::info!(%listen, "PVA serving");
            verifier::serve(pva, listener, super::shutdown_signal()).await?;
        }
        Role::Ro => {
            let ro = ro::RoConfig::load(config)?;
            let listener = bind(&ro.listen).await?;
            tracing::info!(listen = %ro.listen, "RO serving");
            ro::serve(ro, listener, super::shutdown_signal()).await?;
        }
        Role::Mno => {
            let mno = mno::MnoConfig::load(config)?;
            tracing::info!(operator = mno.name(), listen = %mno.listen, "operator serving");
            mno::run(mno, super::shutdown_signal()).await?;
        }
    }
    Ok(())
}

async fn bind(address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))
}
