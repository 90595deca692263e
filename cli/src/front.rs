//! A round-robin TCP front for several instances of one role (issue 15: the PVA's or the
//! RO's instances behind one address, sharing one PostgreSQL, any of them able to take any
//! request). Each accepted connection is handed to the next backend in turn and its bytes
//! are copied both ways until both sides have closed (`tokio::io::copy_bidirectional`:
//! a half-close is passed on, and each direction holds one fixed 8 KiB buffer).
//!
//! Why layer 4: every instance of a role presents the same role certificate, so the front
//! need not terminate TLS. It passes the handshake through, the client's mutual TLS reaches
//! the instance unchanged, and the instance sees the client certificate it authorises by
//! (`transport::PeerIdentity`); the front holds no key and reads no request.
//!
//! A backend that refuses the connection, or does not accept it within
//! [`FrontOptions::connect_timeout`], is skipped for that connection and the next one is
//! tried: a stopped instance costs a client nothing. When every backend fails, the client's
//! connection is closed. There are no health checks: each connection tries afresh.
//!
//! `docs/scale-out.md`, "The front", shows the nginx and HAProxy equivalents for production.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Limits of a front.
#[derive(Debug, Clone)]
pub struct FrontOptions {
    /// A backend that has not accepted a connection by then is skipped for it.
    pub connect_timeout: Duration,
    /// After shutdown, how long open connections may go on before they are cut. A layer-4
    /// front cannot see request boundaries, so it waits for the peers to close.
    pub shutdown_grace: Duration,
    /// Client connections relayed at once (each holds two sockets); further clients wait in
    /// the listen backlog.
    pub max_connections: usize,
}

impl Default for FrontOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

/// What a front has done with one backend so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendStats {
    pub addr: SocketAddr,
    /// Client connections handed to it (it accepted).
    pub handed: u64,
    /// Connections it refused or did not accept in time.
    pub connect_failures: u64,
}

/// A bound front, not yet running: [`Front::run`] or [`Front::spawn`] runs it.
pub struct Front {
    listener: TcpListener,
    local: SocketAddr,
    shared: Arc<Shared>,
}

impl Front {
    /// Binds `listen` (`transport::bind`: SO_REUSEADDR and a fleet-sized backlog) for
    /// `backends`, with [`FrontOptions::default`].
    pub async fn bind(listen: SocketAddr, backends: Vec<SocketAddr>) -> io::Result<Front> {
        Self::bind_with(listen, backends, FrontOptions::default()).await
    }

    /// [`Front::bind`] with explicit limits.
    pub async fn bind_with(
        listen: SocketAddr,
        backends: Vec<SocketAddr>,
        options: FrontOptions,
    ) -> io::Result<Front> {
        Self::on(transport::bind(listen).await?, backends, options)
    }

    /// A front on a listener already bound (the lab's, which reserved the role's port
    /// before any role started: rebinding it later could lose it to another socket).
    pub fn on(
        listener: TcpListener,
        backends: Vec<SocketAddr>,
        options: FrontOptions,
    ) -> io::Result<Front> {
        if backends.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a front needs a backend"));
        }
        let local = listener.local_addr()?;
        let backends = backends.into_iter().map(Backend::new).collect();
        Ok(Front {
            listener,
            local,
            shared: Arc::new(Shared { backends, next: 0.into(), options }),
        })
    }

    /// The address it listens on (with port 0 asked, the one the system chose).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Each backend's counts, in the order the backends were given.
    pub fn stats(&self) -> Vec<BackendStats> {
        self.shared.stats()
    }

    /// Relays connections until `shutdown` completes, then stops accepting and lets open
    /// connections finish within [`FrontOptions::shutdown_grace`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Front { listener, local, shared } = self;
        let backends: Vec<_> = shared.backends.iter().map(|b| b.addr).collect();
        tracing::info!(%local, ?backends, "front listening");
        let limits = transport::AcceptLimits {
            max_connections: shared.options.max_connections,
            grace: shared.options.shutdown_grace,
        };
        transport::accept_until(
            listener,
            limits,
            shutdown,
            |open| tracing::info!(%local, open, "front shutting down"),
            |client, remote| {
                let shared = Arc::clone(&shared);
                async move { shared.relay(client, remote).await }
            },
        )
        .await
    }

    /// Runs the front on the current tokio runtime until the returned handle is stopped or
    /// dropped.
    pub fn spawn(self) -> Running {
        let local = self.local;
        let shared = Arc::clone(&self.shared);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async move {
            let _ = stopped.await;
        }));
        Running { local, shared, stop: Some(stop), task: Some(task) }
    }
}

/// A spawned front; dropping it stops the front and cuts its open connections at once.
pub struct Running {
    local: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> Vec<BackendStats> {
        self.shared.stats()
    }

    /// Stops accepting and waits for open connections as [`Front::run`] does.
    pub async fn stop(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Shared {
    backends: Vec<Backend>,
    /// The backend the next connection tries first, modulo their number.
    next: AtomicUsize,
    options: FrontOptions,
}

impl Shared {
    fn stats(&self) -> Vec<BackendStats> {
        self.backends.iter().map(Backend::stats).collect()
    }

    /// Connects `client` to the next backend that accepts and copies until both sides close.
    async fn relay(&self, mut client: TcpStream, remote: SocketAddr) {
        let Some((mut backend, addr)) = self.connect().await else {
            tracing::warn!(%remote, "no backend accepted; closing the client's connection");
            return;
        };
        // A TLS record split over two segments would otherwise wait for a delayed ACK at
        // each hop (`transport::server`, module comment); the client's socket has it from
        // the accept.
        if let Err(e) = backend.set_nodelay(true) {
            tracing::debug!(%remote, error = %e, "cannot set TCP_NODELAY");
        }
        match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            Ok((up, down)) => tracing::debug!(%remote, backend = %addr, up, down, "closed"),
            Err(e) => tracing::debug!(%remote, backend = %addr, error = %e, "ended with an error"),
        }
    }

    /// Tries each backend once, starting with the next in turn.
    async fn connect(&self) -> Option<(TcpStream, SocketAddr)> {
        let n = self.backends.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let backend = &self.backends[first.wrapping_add(i) % n];
            let timeout = self.options.connect_timeout;
            match tokio::time::timeout(timeout, TcpStream::connect(backend.addr)).await {
                Ok(Ok(stream)) => {
                    backend.handed.fetch_add(1, Ordering::Relaxed);
                    return Some((stream, backend.addr));
                }
                Ok(Err(e)) => {
                    tracing::info!(backend = %backend.addr, error = %e, "backend refused");
                }
                Err(_) => {
                    tracing::info!(backend = %backend.addr, ?timeout, "backend did not accept");
                }
            }
            backend.connect_failures.fetch_add(1, Ordering::Relaxed);
        }
        None
    }
}

struct Backend {
    addr: SocketAddr,
    handed: AtomicU64,
    connect_failures: AtomicU64,
}

impl Backend {
    fn new(addr: SocketAddr) -> Self {
        Self { addr, handed: 0.into(), connect_failures: 0.into() }
    }

    fn stats(&self) -> BackendStats {
        BackendStats {
            addr: self.addr,
            handed: self.handed.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
        }
    }
}
