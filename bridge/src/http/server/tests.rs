//! The connection limits on a real socket: timeouts, caps and the head limit. Each test bounds
//! its waits with [`GUARD`], a limit reached only when the behaviour under test is missing.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use super::ConnLimits;
use crate::dispenser::{Dispenser, DispenserConfig};
use crate::http::{serve, AppState, HttpConfig, HttpError};

/// How long a test waits for what it expects before failing.
const GUARD: Duration = Duration::from_secs(10);

/// A server with no devices (the API answers 503 for random values, 200 for the rest) and
/// `limits`, on an ephemeral port.
struct Server {
    addr: SocketAddr,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), HttpError>>,
}

impl Server {
    async fn start(limits: ConnLimits) -> Server {
        Self::start_cfg(HttpConfig { conn: limits, ..HttpConfig::default() }).await
    }

    async fn start_cfg(cfg: HttpConfig) -> Server {
        let dispenser = Dispenser::new(DispenserConfig::default());
        let cfg = HttpConfig { threads: 1, pin: false, ..cfg };
        let state = AppState::new(dispenser, cfg).expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Server { addr, state, stop: Some(tx), task }
    }

    /// A connection from the loopback address `from` (127.0.0.x).
    async fn connect_from(&self, from: [u8; 4]) -> TcpStream {
        let s = TcpSocket::new_v4().expect("socket");
        s.bind(SocketAddr::from((from, 0))).expect("bind the client address");
        s.connect(self.addr).await.expect("connect")
    }

    async fn connect(&self) -> TcpStream {
        self.connect_from([127, 0, 0, 1]).await
    }

    fn open(&self) -> usize {
        self.state.0.server.open.iter().map(|o| o.load(Ordering::Relaxed)).sum()
    }

    async fn wait_open(&self, n: usize) {
        tokio::time::timeout(GUARD, async {
            while self.open() != n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{} connections open, expected {n}", self.open()));
    }

    async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        tokio::time::timeout(GUARD, &mut self.task)
            .await
            .expect("shutdown")
            .expect("join")
            .expect("serve");
        self.state.dispenser().shutdown();
    }
}

/// Everything the server sends until it closes the connection (or GUARD passes: then the test
/// fails, the connection was never closed).
async fn read_to_close(c: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(GUARD, async {
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    out
}

/// One request with `Connection: close`; the status code of the answer.
async fn status_of(c: &mut TcpStream, head: &str) -> u16 {
    c.write_all(format!("GET {head} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let text = String::from_utf8_lossy(&read_to_close(c).await).into_owned();
    text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {text:?}"))
}

fn limits() -> ConnLimits {
    ConnLimits { max_connections: Some(64), ..ConnLimits::default() }
}

#[tokio::test]
async fn a_head_not_complete_within_the_header_timeout_is_closed() {
    let srv =
        Server::start(ConnLimits { header_timeout: Duration::from_millis(200), ..limits() }).await;
    let mut idle = srv.connect().await;
    let mut half = srv.connect().await;
    half.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
    assert!(read_to_close(&mut half).await.is_empty(), "closed without an answer");
    assert!(read_to_close(&mut idle).await.is_empty(), "a silent connection too");
    srv.wait_open(0).await;
    srv.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let srv =
        Server::start(ConnLimits { idle_timeout: Duration::from_millis(200), ..limits() }).await;
    let mut c = srv.connect().await;
    c.write_all(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let answer = read_to_close(&mut c).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&answer[..40]));
    srv.wait_open(0).await;
    srv.stop().await;
}

#[tokio::test]
async fn a_head_over_the_limit_gets_431() {
    let srv = Server::start(ConnLimits { max_header_bytes: 512, ..limits() }).await;
    let mut c = srv.connect().await;
    c.write_all(
        format!("GET /health HTTP/1.1\r\nX-Padding: {}\r\n\r\n", "a".repeat(600)).as_bytes(),
    )
    .await
    .expect("write");
    let answer = read_to_close(&mut c).await;
    assert!(answer.starts_with(b"HTTP/1.1 431"), "{:?}", String::from_utf8_lossy(&answer));
    // Also when it arrives in pieces, and on a later request of a kept-alive connection.
    let mut c = srv.connect().await;
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.write_all(format!("X-Padding: {}\r\n\r\n", "a".repeat(600)).as_bytes()).await.expect("write");
    let answer = read_to_close(&mut c).await;
    assert!(answer.starts_with(b"HTTP/1.1 431"), "{:?}", String::from_utf8_lossy(&answer));
    let mut c = srv.connect().await;
    c.write_all(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    c.write_all(
        format!("GET /health HTTP/1.1\r\nX-Padding: {}\r\n\r\n", "a".repeat(600)).as_bytes(),
    )
    .await
    .expect("write");
    let answer = String::from_utf8_lossy(&read_to_close(&mut c).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("HTTP/1.1 431"), "{answer}");
    srv.stop().await;
}

#[tokio::test]
async fn connections_over_the_client_cap_get_429_and_other_clients_are_served() {
    let srv = Server::start(ConnLimits { per_client: 2, ..limits() }).await;
    let held = [srv.connect().await, srv.connect().await];
    srv.wait_open(2).await;
    let mut third = srv.connect().await;
    let answer = String::from_utf8_lossy(&read_to_close(&mut third).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.contains("too_many_connections") && answer.contains("retry-after: 1"),
        "{answer}"
    );
    // Another address is a client of its own.
    assert_eq!(status_of(&mut srv.connect_from([127, 0, 0, 2]).await, "/health").await, 503);
    // A closed connection frees its client's slot.
    drop(held);
    srv.wait_open(0).await;
    assert_eq!(status_of(&mut srv.connect().await, "/api/v1/openapi.json").await, 200);
    let metrics = String::from_utf8_lossy(&{
        let mut c = srv.connect().await;
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        read_to_close(&mut c).await
    })
    .into_owned();
    assert!(
        metrics.contains("qrng_http_connections_refused_total{reason=\"client_cap\"} 1"),
        "{metrics}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn at_the_global_cap_accepting_waits_until_a_connection_closes() {
    let srv = Server::start(ConnLimits {
        max_connections: Some(2),
        per_client: 0,
        ..ConnLimits::default()
    })
    .await;
    let held = [srv.connect().await, srv.connect().await];
    srv.wait_open(2).await;
    // The kernel completes the handshake (the listen backlog); the server does not accept it.
    let mut waiting = srv.connect().await;
    waiting
        .write_all(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    tokio::time::timeout(GUARD, async {
        while srv.state.0.server.cap_reached.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the acceptor reaches the cap");
    let mut early = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_millis(200), waiting.read(&mut early)).await;
    assert!(r.is_err(), "no answer while every slot is taken: {r:?}");
    assert_eq!(srv.open(), 2);
    // One closes: the waiting connection is accepted and answered.
    drop(held);
    let answer = read_to_close(&mut waiting).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&answer));
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_closes_connections_still_sending_their_first_head() {
    let srv = Server::start_cfg(HttpConfig {
        conn: ConnLimits { header_timeout: Duration::from_secs(3600), ..limits() },
        drain: Duration::from_secs(3600),
        ..HttpConfig::default()
    })
    .await;
    let mut half = srv.connect().await;
    half.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
    srv.wait_open(1).await;
    // Within GUARD, far below the header timeout and the drain limit.
    srv.stop().await;
    assert!(read_to_close(&mut half).await.is_empty());
}
