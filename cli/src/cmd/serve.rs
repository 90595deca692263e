//! `tresor serve pva|ro|mno --config FILE [--init | --check]`: one network role as its own process, on
//! the address its configuration names, until Ctrl-C or SIGTERM (then it finishes open
//! requests).
//!
//! Start-up runs in this order: the role is opened (keys, certificates, its store under
//! `storage`'s policy), then its address is bound, then `--ready-file` is written, then it
//! serves. A role whose store is refused therefore never announces itself.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use provisioning::{mno, ro};
use storage::OpenMode;
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
    /// Also create the role's store in an existing empty (0-byte) store file. Without it an
    /// empty file is refused, since it usually means the store was lost; a file with content
    /// that is not this role's store is refused either way. A missing file is always created.
    #[arg(long)]
    init: bool,
    /// Check the configuration, its certificates and its store (reading only), print what
    /// was found, and exit: 0 ready, 1 refused. Nothing is bound or started.
    #[arg(long, conflicts_with_all = ["init", "ready_file"])]
    check: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum Role {
    /// The platform validation authority.
    Pva,
    /// The registration operator (DRF and DPF).
    Ro,
    /// An operator, MNO-A or MNO-B (the configuration's `role` says which).
    Mno,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.check {
        return Ok(super::serve_check::check(args.role, &args.config));
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let config = &args.config;
    let ready = args.ready_file.as_deref();
    let mode = if args.init { OpenMode::Init } else { OpenMode::CreateIfMissing };
    match args.role {
        Role::Pva => {
            let pva = verifier::Config::load(config)?;
            let listen =
                pva.listen.clone().context("the PVA configuration has no `listen` address")?;
            let (pva, tls) = verifier::start(pva, mode).await?;
            reload_on_sighup(std::sync::Arc::clone(&pva))?;
            let listener = bind(&listen, ready).await?;
            verifier::serve_pva(pva, tls, listener, super::shutdown_signal()).await?;
        }
        Role::Ro => {
            let ro = ro::RoConfig::load(config)?;
            let listen = ro.listen.clone();
            let ro = tokio::task::spawn_blocking(move || ro::Ro::open(ro, mode)).await??;
            let listener = bind(&listen, ready).await?;
            ro::serve_ro(Arc::new(ro), listener, super::shutdown_signal()).await?;
        }
        Role::Mno => {
            let mno = mno::MnoConfig::load(config)?;
            let listen = mno.listen.to_string();
            let operator =
                tokio::task::spawn_blocking(move || mno::Operator::open_with(&mno, mode)).await??;
            let listener = bind(&listen, ready).await?;
            mno::serve_operator(Arc::new(operator), listener, super::shutdown_signal()).await?;
        }
    }
    Ok(())
}

/// Binds `address` for a role that is open, reports the bound URL in the log and the
/// ready file.
async fn bind(address: &str, ready: Option<&Path>) -> anyhow::Result<TcpListener> {
    let listener =
        transport::bind(address).await.with_context(|| format!("cannot listen on {address}"))?;
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

/// SIGHUP: the PVA reads its policies and reference values again (`Pva::reload`); a
/// configuration that does not load leaves the running policies as they were.
fn reload_on_sighup(pva: std::sync::Arc<verifier::Pva>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let pva = std::sync::Arc::clone(&pva);
            match tokio::task::spawn_blocking(move || pva.reload()).await {
                Ok(Ok(ids)) => tracing::info!(policies = ?ids, "SIGHUP: policies reloaded"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "SIGHUP: policies not reloaded; they stay as they were");
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: the reload task failed"),
            }
        }
    });
    Ok(())
}
