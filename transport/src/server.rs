//! The HTTPS serve loop every network role runs: TCP accept, TLS handshake (rustls through
//! tokio-rustls, bounded by a timeout), HTTP/1.1 or HTTP/2 (hyper-util's auto connection
//! builder), and the axum router. The verified client certificate's identity reaches handlers
//! as a [`PeerIdentity`] request extension. A failing connection is logged and dropped; the
//! server keeps running until `shutdown` completes, then stops accepting, lets open
//! connections finish their requests (for a bounded grace period) and returns.
//!
//! Every accepted socket gets TCP_NODELAY: a response written in two segments (head, then
//! body) would otherwise wait for the client's delayed ACK (Nagle's algorithm, RFC 896,
//! against RFC 1122 §4.2.3.2), about 40 ms on Linux. Roles bind with [`bind`], whose
//! listen backlog has room for a fleet connecting at once.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use x509_parser::extensions::GeneralName;

use protocol::role::{CertifiedRole, Expected, Role, RoleError};

use crate::deadline::{self, DeadlineBody};
use crate::problem::{CLIENT_CERTIFICATE_REQUIRED, Problem, ROLE_NOT_ALLOWED};

/// Listen backlog of a role's socket: a fleet's devices connecting at once wait there
/// instead of being refused. The kernel caps it at `net.core.somaxconn` (4096 by default
/// since Linux 5.4, 128 before).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a role's listening socket on the first address `addr` resolves to, with
/// SO_REUSEADDR (a restarted role finds its port in TIME_WAIT) and [`LISTEN_BACKLOG`].
pub async fn bind(addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the address resolves to nothing")
    }))
}

/// Accepts the next connection and sets TCP_NODELAY on it (module comment).
async fn accept(listener: &TcpListener) -> std::io::Result<(TcpStream, SocketAddr)> {
    let (tcp, remote) = listener.accept().await?;
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(%remote, error = %e, "cannot set TCP_NODELAY");
    }
    Ok((tcp, remote))
}

/// Limits of the serve loop.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A client that has not completed the TLS handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// A client that has not sent a complete HTTP/1 request head by then is dropped.
    pub header_read_timeout: Duration,
    /// A request whose body has not arrived in full this long after its head gets 408 and
    /// its connection is closed.
    pub body_read_timeout: Duration,
    /// How long open connections may take to finish after shutdown before they are cut.
    pub shutdown_grace: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// Serves `router` over HTTPS on `listener` until `shutdown` completes, with
/// [`ServeOptions::default`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_with(listener, tls, router, shutdown, ServeOptions::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
    options: ServeOptions,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let (stop_tx, stop_rx) = watch::channel(false);
    let local = listener.local_addr()?;
    tracing::info!(%local, "HTTPS server listening");
    let limits =
        AcceptLimits { max_connections: options.max_connections, grace: options.shutdown_grace };
    accept_until(
        listener,
        limits,
        shutdown,
        |open| {
            tracing::info!(%local, open, "HTTPS server shutting down");
            let _ = stop_tx.send(true);
        },
        |tcp, remote| {
            let conn = Connection {
                acceptor: acceptor.clone(),
                router: router.clone(),
                options: options.clone(),
                remote,
                stop: stop_rx.clone(),
            };
            conn.run(tcp)
        },
    )
    .await
}

/// How many connections [`accept_until`] handles at once, and how long they may go on
/// after shutdown.
#[derive(Debug, Clone, Copy)]
pub struct AcceptLimits {
    /// Connections handled at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// After shutdown, how long open connections may take to finish before they are cut.
    pub grace: Duration,
}

/// The accept loop of a server (the HTTPS roles, `tresor front`): hands each connection
/// accepted on `listener` (TCP_NODELAY set) to `handle`, as a task of its own, at most
/// `limits.max_connections` at once, until `shutdown` completes; then stops accepting,
/// calls `stopping` with the number of open connections, and lets them finish within
/// `limits.grace` before cutting them. A failed accept (EMFILE and friends) backs off
/// instead of spinning; the server stays up.
pub async fn accept_until<F>(
    listener: TcpListener,
    limits: AcceptLimits,
    shutdown: impl Future<Output = ()>,
    stopping: impl FnOnce(usize),
    mut handle: impl FnMut(TcpStream, SocketAddr) -> F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, remote) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = accept(&listener) => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let handled = handle(tcp, remote);
        connections.spawn(async move {
            handled.await;
            drop(permit);
        });
    }

    drop(listener);
    stopping(connections.len());
    let drained = tokio::time::timeout(limits.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(open = connections.len(), "grace period over; closing connections");
        connections.shutdown().await;
    }
    Ok(())
}

struct Connection {
    acceptor: TlsAcceptor,
    router: Router,
    options: ServeOptions,
    remote: SocketAddr,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(self, tcp: TcpStream) {
        let remote = self.remote;
        let tls =
            match tokio::time::timeout(self.options.handshake_timeout, self.acceptor.accept(tcp))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "TLS handshake timed out");
                    return;
                }
            };
        let peer = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            Some(cert) => match PeerIdentity::from_certificate(cert.clone()) {
                Some(p) => Some(p),
                None => {
                    tracing::warn!(%remote, "verified client certificate does not parse; dropping");
                    return;
                }
            },
            None => None,
        };
        let router = self.router;
        let body_timeout = self.options.body_read_timeout;
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                if let Some(peer) = &peer {
                    req.extensions_mut().insert(peer.clone());
                }
                req.extensions_mut().insert(ConnectInfo(remote));
                let cut = Arc::new(AtomicBool::new(false));
                let req = req.map(|body| {
                    let body = axum::body::Body::new(body);
                    axum::body::Body::new(DeadlineBody::new(body, body_timeout, Arc::clone(&cut)))
                });
                let router = router.clone();
                async move {
                    let response = router.oneshot(req).await;
                    if cut.load(Ordering::SeqCst) {
                        tracing::info!(%remote, "request body timed out");
                        return Ok(deadline::timed_out(body_timeout));
                    }
                    response
                }
            });

        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.options.header_read_timeout);
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(conn);
        let mut stop = self.stop;
        let stopped = async move {
            // The guard wait_for returns is not Send; drop it before the connection is awaited.
            let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
        };
        let result = tokio::select! {
            r = conn.as_mut() => r,
            () = stopped => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::info!(%remote, error = %e, "connection ended with an error");
        }
    }
}

/// Who is on the other end of a mutual-TLS connection: the verified client certificate's
/// role (`protocol::role`, when it has a valid one), subject common name, subject alternative
/// names and DER. Extract it in a handler as `peer: PeerIdentity` (a request without a client
/// certificate gets a 401 problem) or `peer: Option<PeerIdentity>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The certificate's role and name; why it has none otherwise.
    pub role: Result<CertifiedRole, RoleError>,
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub uris: Vec<String>,
    pub certificate: CertificateDer<'static>,
}

impl PeerIdentity {
    /// Reads the identity of an already verified certificate.
    pub fn from_certificate(certificate: CertificateDer<'static>) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(&certificate).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let (mut dns_names, mut ip_addresses, mut uris) = (Vec::new(), Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                    GeneralName::URI(u) => uris.push((*u).to_owned()),
                    GeneralName::IPAddress(ip) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*ip) {
                            ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*ip) {
                            ip_addresses.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        let role = CertifiedRole::of(&cert);
        drop(cert);
        Some(Self { role, common_name, dns_names, ip_addresses, uris, certificate })
    }

    /// Admits the peer if its certificate holds one of the `allowed` roles (and names);
    /// returns its name. Otherwise a 403 problem a handler can return as is. A certificate
    /// without a valid role is never admitted, whatever its common name says.
    pub fn require(&self, allowed: &[Expected]) -> Result<&str, Problem> {
        let refused = |detail: String| {
            Problem::new(StatusCode::FORBIDDEN, ROLE_NOT_ALLOWED, "Role not allowed")
                .with_detail(detail)
        };
        let role = self.role.as_ref().map_err(|e| refused(format!("client certificate: {e}")))?;
        if allowed.iter().any(|expected| role.require(expected).is_ok()) {
            return Ok(&role.name);
        }
        let wanted: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        Err(refused(format!("{role} may not call this endpoint (allowed: {})", wanted.join(", "))))
    }

    /// [`PeerIdentity::require`] one role, any name.
    pub fn require_role(&self, role: Role) -> Result<&str, Problem> {
        self.require(&[Expected::role(role)])
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PeerIdentity {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<PeerIdentity>().cloned().ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                CLIENT_CERTIFICATE_REQUIRED,
                "Client certificate required",
            )
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for PeerIdentity {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<PeerIdentity>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_nodelay_and_roles_bind_with_a_fleet_backlog()
    -> std::io::Result<()> {
        let listener = bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // More clients than tokio's own default backlog (1024) would queue are not needed
        // to show the option; what the serve loop accepts is what counts.
        let client = TcpStream::connect(addr).await?;
        let (server, remote) = accept(&listener).await?;
        assert!(server.nodelay()?, "the serve loop's accepted socket has TCP_NODELAY");
        assert_eq!(remote, client.local_addr()?);
        Ok(())
    }

    #[tokio::test]
    async fn bind_fails_with_the_error_of_a_taken_port() -> std::io::Result<()> {
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let err = bind(taken.local_addr()?).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(std::io::ErrorKind::AddrInUse));
        Ok(())
    }
}
