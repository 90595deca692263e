//! One module per subcommand group; each exposes `Args` and `run(Args)`.

pub mod attack;
pub mod bench;
mod bench_tpm;
pub mod campaign;
pub mod demo;
pub mod device;
pub mod eventlog;
pub mod pki;
pub mod pva;
pub mod serve;
pub mod tre;
pub mod uicc;

/// Resolves on Ctrl-C or SIGTERM: a served role then finishes its open requests and stops.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
