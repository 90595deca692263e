//! `tresor::front` on loopback: connections handed round robin to plain TCP echo backends
//! (each answers with its own id first), a refusing or stopped backend skipped, a backend
//! that does not accept in time skipped, every backend dead closing the client's
//! connection, megabytes both ways with half-close intact, mutual TLS passed through to
//! real HTTPS instances (`transport::serve`), and the `tresor front` process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use provisioning::pki::{self, PeerAuth, Role};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use transport::PeerIdentity;
use tresor::front::{BackendStats, Front, FrontOptions};

/// A plain TCP backend on 127.0.0.1: to each connection it writes its id and a newline,
/// then echoes what it reads and closes its side after the client's.
struct Echo {
    addr: SocketAddr,
    accepting: Option<JoinHandle<()>>,
}

impl Echo {
    async fn start(id: &str) -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let greeting = format!("{id}\n");
        let accepting = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let greeting = greeting.clone();
                tokio::spawn(async move {
                    let (mut from, mut to) = socket.split();
                    to.write_all(greeting.as_bytes()).await?;
                    tokio::io::copy(&mut from, &mut to).await?;
                    to.shutdown().await
                });
            }
        });
        Echo { addr, accepting: Some(accepting) }
    }

    /// Stops accepting and closes its port, as a killed instance does.
    async fn kill(mut self) {
        if let Some(task) = self.accepting.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(task) = self.accepting.take() {
            task.abort();
        }
    }
}

/// A loopback address nothing listens on: connecting to it is refused.
async fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

async fn front(backends: &[SocketAddr]) -> tresor::front::Running {
    Front::bind("127.0.0.1:0".parse().unwrap(), backends.to_vec()).await.unwrap().spawn()
}

/// Connects through the front and reads the id of the backend that answered.
async fn who(front: SocketAddr) -> String {
    let stream = TcpStream::connect(front).await.unwrap();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(stream).read_line(&mut line),
    )
    .await
    .unwrap()
    .unwrap();
    line.trim_end().to_owned()
}

fn counts(stats: &[BackendStats]) -> Vec<(u64, u64)> {
    stats.iter().map(|s| (s.handed, s.connect_failures)).collect()
}

#[tokio::test]
async fn connections_go_round_robin() {
    let backends = [Echo::start("b0").await, Echo::start("b1").await, Echo::start("b2").await];
    let front = front(&backends.iter().map(|b| b.addr).collect::<Vec<_>>()).await;

    let mut answered = Vec::new();
    for _ in 0..7 {
        answered.push(who(front.local_addr()).await);
    }
    assert_eq!(answered, ["b0", "b1", "b2", "b0", "b1", "b2", "b0"]);
    assert_eq!(counts(&front.stats()), [(3, 0), (2, 0), (2, 0)]);
    assert_eq!(front.stats()[1].addr, backends[1].addr);
    front.stop().await.unwrap();
}

#[tokio::test]
async fn a_refusing_or_killed_backend_is_skipped() {
    let b0 = Echo::start("b0").await;
    let b2 = Echo::start("b2").await;
    let dead = closed_port().await;
    let front = front(&[b0.addr, dead, b2.addr]).await;

    // Turns 0, 1 (refused: on to b2), 2, 0, 1, 2: every client is served.
    let mut answered = Vec::new();
    for _ in 0..6 {
        answered.push(who(front.local_addr()).await);
    }
    assert_eq!(answered, ["b0", "b2", "b2", "b0", "b2", "b2"]);
    assert_eq!(counts(&front.stats()), [(2, 0), (0, 2), (4, 0)]);

    // An instance that stops while the front runs costs its clients nothing either.
    b2.kill().await;
    let mut answered = Vec::new();
    for _ in 0..3 {
        answered.push(who(front.local_addr()).await);
    }
    assert_eq!(answered, ["b0", "b0", "b0"]);
    assert_eq!(counts(&front.stats()), [(5, 0), (0, 3), (4, 2)]);
}

#[tokio::test]
async fn a_backend_that_does_not_accept_in_time_is_skipped() {
    // A listener with a backlog of 0 whose one queue slot is taken and never accepted: the
    // kernel drops further SYNs, so a connect to it hangs (as to a host that is down).
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let stuck = socket.listen(0).unwrap();
    let stuck_addr = stuck.local_addr().unwrap();
    let _queued = TcpStream::connect(stuck_addr).await.unwrap();
    let b1 = Echo::start("b1").await;

    let options =
        FrontOptions { connect_timeout: Duration::from_millis(300), ..Default::default() };
    let front =
        Front::bind_with("127.0.0.1:0".parse().unwrap(), vec![stuck_addr, b1.addr], options)
            .await
            .unwrap()
            .spawn();
    let started = Instant::now();
    assert_eq!(who(front.local_addr()).await, "b1");
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(counts(&front.stats()), [(0, 1), (1, 0)]);
    drop(stuck);
}

#[tokio::test]
async fn every_backend_dead_closes_the_client_connection() {
    let front = front(&[closed_port().await, closed_port().await]).await;
    let mut stream = TcpStream::connect(front.local_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.unwrap();
    // An orderly close (0 bytes), or a reset: either way nothing came, and it ended.
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(counts(&front.stats()), [(0, 1), (0, 1)]);

    // The front itself stays up for the next client.
    let _ = TcpStream::connect(front.local_addr()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabytes_both_ways_arrive_intact_with_half_close() {
    const LEN: usize = 8 * 1024 * 1024;
    let backend = Echo::start("b0").await;
    let front = front(&[backend.addr]).await;
    let data: Vec<u8> = (0..LEN).map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8).collect();

    let stream = TcpStream::connect(front.local_addr()).await.unwrap();
    let (mut from, mut to) = stream.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        to.write_all(&sent).await.unwrap();
        // Half-close: the backend sees EOF, finishes echoing, then closes its side.
        to.shutdown().await.unwrap();
        to
    });
    let mut received = Vec::with_capacity(LEN + 3);
    tokio::time::timeout(Duration::from_secs(60), from.read_to_end(&mut received))
        .await
        .unwrap()
        .unwrap();
    let _to = writer.await.unwrap();

    assert_eq!(&received[..3], b"b0\n");
    assert_eq!(received.len() - 3, LEN);
    assert!(received[3..] == data[..], "the echoed bytes differ");
    assert_eq!(counts(&front.stats()), [(1, 0)]);
}

#[tokio::test]
async fn mutual_tls_reaches_each_https_instance_unchanged() {
    let parent = tempfile::tempdir().unwrap();
    let pki = pki::init(&parent.path().join("pki"), false).unwrap();
    // Two instances of the PVA, each with the PVA's certificate, as issue 15 runs them.
    let mut instances = Vec::new();
    let mut stops = Vec::new();
    for instance in ["pva-0", "pva-1"] {
        let router = Router::new().route(
            "/whoami",
            get(move |peer: PeerIdentity| async move {
                format!("{instance} {}", peer.common_name.unwrap_or_default())
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        instances.push(listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let tls = pki.server_config(Role::Pva, PeerAuth::Mutual).unwrap();
        let server = tokio::spawn(transport::serve(listener, tls, router, async move {
            let _ = stopped.await;
        }));
        stops.push((stop, server));
    }
    let front = front(&instances).await;
    let url = format!("https://localhost:{}/whoami", front.local_addr().port());

    // A new client each time: one connection each, so each goes to the next instance.
    let mut answered = Vec::new();
    for _ in 0..4 {
        let client = pki.client(Role::mno_b()).unwrap();
        let response = client.get(&url).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        answered.push(response.text().await.unwrap());
    }
    assert_eq!(answered, ["pva-0 mno-b", "pva-1 mno-b", "pva-0 mno-b", "pva-1 mno-b"]);

    // The instance, not the front, refuses a client without a certificate.
    assert!(pki.anonymous_client().unwrap().get(&url).send().await.is_err());
    assert_eq!(counts(&front.stats()), [(3, 0), (2, 0)]);

    front.stop().await.unwrap();
    for (stop, server) in stops {
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}

#[test]
fn the_front_command_relays_until_sigterm() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (b0, b1) = runtime.block_on(async { (Echo::start("b0").await, Echo::start("b1").await) });
    let child = Command::new(support::TRESOR)
        .args(["front", "--listen", "127.0.0.1:0"])
        .args(["--backend", &b0.addr.to_string(), "--backend", &b1.addr.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Stopped (SIGTERM, then SIGKILL) on drop, also when an assertion fails.
    let mut front = support::Service { name: "front", child };
    let mut stdout = BufReader::new(front.child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim().strip_prefix("listening on ").unwrap().parse().unwrap();

    let ask = |stream: &mut std::net::TcpStream, text: &str| {
        stream.write_all(text.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let (mut id, mut echo) = (String::new(), String::new());
        reader.read_line(&mut id).unwrap();
        reader.read_line(&mut echo).unwrap();
        (id.trim_end().to_owned(), echo)
    };
    let mut first = std::net::TcpStream::connect(addr).unwrap();
    assert_eq!(ask(&mut first, "hello\n"), ("b0".to_owned(), "hello\n".to_owned()));
    let mut second = std::net::TcpStream::connect(addr).unwrap();
    assert_eq!(ask(&mut second, "again\n"), ("b1".to_owned(), "again\n".to_owned()));
    drop(second);

    // SIGTERM: no new connections; the open one goes on until its client closes it.
    support::signal(front.child.id(), "TERM");
    assert!(support::wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_err()
    }));
    first.write_all(b"still there\n").unwrap();
    let mut echo = String::new();
    BufReader::new(first.try_clone().unwrap()).read_line(&mut echo).unwrap();
    assert_eq!(echo, "still there\n");
    drop(first);
    let status = support::wait_exit(&mut front.child, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
