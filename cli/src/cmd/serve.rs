//! `tresor serve pva|ro|mno --config FILE`: one network role as its own process, on the
//! address its configuration names, until Ctrl-C or SIGTERM (then it finishes open requests).

use std::path::{Path, PathBuf};
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
    /// Once listening, write the service's base URL (https://localhost:PORT) to this file:
    /// with `listen = "127.0.0.1:0"` the system picks the port, and scripts learn it here.
    #[arg(long)]
    ready_file: Option<PathBuf>,
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
    let ready = args.ready_file.as_deref();
    match args.role {
        Role::Pva => {
            let pva = verifier::Config::load(config)?;
            let listen =
                pva.listen.clone().context("the PVA configuration has no `listen` address")?;
            let listener = bind(&listen, ready).await?;
            verifier::serve(pva, listener, super::shutdown_signal()).await?;
        }
        Role::Ro => {
            let ro = ro::RoConfig::load(config)?;
            let listener = bind(&ro.listen, ready).await?;
            ro::serve(ro, listener, super::shutdown_signal()).await?;
        }
        Role::Mno => {
            let mno = mno::MnoConfig::load(config)?;
            let listener = bind(&mno.listen.to_string(), ready).await?;
            mno::serve(mno, listener, super::shutdown_signal()).await?;
        }
    }
    Ok(())
}

/// Binds `address`, reports the bound URL in the log and the ready file.
async fn bind(address: &str, ready: Option<&Path>) -> anyhow::Result<TcpListener> {
    let listener =
        TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))?;
    let url = format!("https://localhost:{}", listener.local_addr()?.port());
    tracing::info!(%url, "serving");
    if let Some(path) = ready {
        // Written whole, then renamed: a reader never sees half a URL.
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, format!("{url}\n"))
            .with_context(|| format!("cannot write {}", temp.display()))?;
        std::fs::rename(&temp, path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(listener)
}
