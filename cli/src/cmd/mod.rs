//! One module per subcommand group; each exposes `Args` and `run(Args)`.

pub mod attack;
pub mod attest;
pub mod bench;
mod bench_fleet;
mod bench_tpm;
pub mod campaign;
mod checkquote_json;
pub mod demo;
pub mod device;
pub mod ear;
pub mod eventlog;
pub mod evidence;
pub mod front;
pub mod mno;
pub mod pki;
pub mod pva;
pub mod serve;
mod serve_check;
pub mod tpm;
pub mod tre;
pub mod uicc;

/// Resolves on Ctrl-C or SIGTERM: a served role then finishes its open requests and stops.
pub async fn shutdown_signal() {
    match StopSignals::install() {
        Ok(mut signals) => {
            signals.recv().await;
        }
        // No handler could be installed: the default action (termination) stays in force.
        Err(_) => std::future::pending::<()>().await,
    }
}

/// A signal that asks a command to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Stop {
    /// The exit status of a command stopped by this signal: 128 + the signal's number, as
    /// a shell reports a process killed by it.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Interrupt => 128 + 2,
            Self::Terminate => 128 + 15,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
        }
    }
}

/// SIGINT and SIGTERM handlers, installed when this is made (from then on neither signal
/// ends the process by itself): make it before starting anything that must be cleaned up.
/// Needs a tokio runtime.
pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next SIGINT or SIGTERM.
    pub async fn recv(&mut self) -> Stop {
        tokio::select! {
            Some(()) = self.interrupt.recv() => Stop::Interrupt,
            Some(()) = self.terminate.recv() => Stop::Terminate,
            else => std::future::pending().await,
        }
    }
}
