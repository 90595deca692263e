//! `tresor front --listen ADDR --backend ADDR --backend ADDR …`: several instances of one
//! role behind one address (`tresor::front`: round robin, TLS passed through), until Ctrl-C
//! or SIGTERM (then open connections get the grace period to close).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use tresor::front::Front;

#[derive(clap::Args)]
pub struct Args {
    /// The address clients connect to (port 0: the system picks one, printed on start).
    #[arg(long)]
    listen: SocketAddr,
    /// An instance's address, in the order connections are handed out; repeat for each.
    #[arg(long = "backend", required = true)]
    backends: Vec<SocketAddr>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let front = Front::bind(args.listen, args.backends)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        println!("listening on {}", front.local_addr());
        front.run(super::shutdown_signal()).await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
