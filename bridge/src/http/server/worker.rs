//! One HTTP worker: a thread with a single-threaded tokio runtime that serves every connection it
//! is handed, from its first byte to its last, and runs the lent-answer watchdog
//! ([`super::super::lent`]) for them.
//!
//! A connection's life: an HTTPS connection's TLS handshake completes under the handshake timeout;
//! its first request head is read under the header timeout ([`head`]), then hyper serves it, its
//! buffers bounded by the head limit, under the idle timeout ([`idle`]: once a second the worker
//! closes connections idle that long). Its admission slot ([`Slot`]) is held to the end.
//!
//! HTTP/2: chosen by ALPN on TLS, and on a plain connection by its first bytes being the
//! HTTP/2 preface ("prior knowledge", RFC 9113 §3.3), which the head reader sees as a complete
//! head (`PRI * HTTP/2.0` and an empty line), so HTTP/1.1 pays one comparison for it. An
//! HTTP/2 connection must start a request within the header timeout. Its streams run as tasks of
//! their own on the worker's runtime, outside the connection's task that the lent-answer
//! watchdog closes, so HTTP/2 answers, like HTTPS ones (TLS encrypts into its own buffer
//! anyway), are copied, never lent ([`lent::copy_only`]).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::server::graceful::Watcher;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;

use super::head::{self, Prefixed};
use super::idle::{self, Activity};
use super::limits::{ConnLimits, Slot};
use super::listen::Accepted;
use super::placement::pin_current_thread;
use super::RunOptions;
use crate::http::lent::{self, Closer};
use crate::http::Entry;

/// A connection handed to a worker.
pub(super) struct Handoff {
    pub(super) stream: Accepted,
    /// The client's address (TCP only).
    pub(super) peer: Option<SocketAddr>,
    /// The TLS settings of its listener, if HTTPS.
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(super) watcher: Watcher,
    /// Its admission slot, freed when the connection ends.
    pub(super) slot: Slot,
    /// Changes (closes) when the server stops accepting: a connection still reading its first
    /// head then closes, as hyper closes an idle one.
    pub(super) stop: tokio::sync::watch::Receiver<()>,
}

/// What every connection of a worker shares.
struct Shared {
    app: Entry,
    http: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<StreamExec>,
    limits: ConnLimits,
    connect_info: bool,
}

pub(super) struct Worker {
    pub(super) tx: mpsc::UnboundedSender<Handoff>,
    pub(super) open: Arc<AtomicUsize>,
    pub(super) thread: std::thread::JoinHandle<()>,
    /// The CPU this worker is pinned to, if it is.
    pub(super) cpu: Option<usize>,
}

/// Decrements a worker's open-connection count when its connection ends (however it ends).
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The number of workers for `requested` (0 = one per CPU).
pub fn worker_count(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// hyper's settings for a connection under `limits` (see the module docs). No timer: the
/// timeouts are `head`'s and `idle`'s.
fn http1(limits: &ConnLimits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.max_header_size(limits.max_header_bytes)
        // hyper's smallest allowed; it bounds the read buffer while a head is incomplete.
        .max_buf_size(limits.max_header_bytes.max(8192));
    b
}

/// Runs each HTTP/2 stream as a task of the worker's runtime whose answer is copied, never lent
/// (module docs).
#[derive(Debug, Clone, Copy)]
struct StreamExec;

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        tokio::spawn(lent::copy_only(stream));
    }
}

/// hyper's HTTP/2 settings under `limits`: the stream cap, the head limit as the header list
/// limit. No timer: no keep-alive pings (the idle timeout closes idle connections).
fn http2(limits: &ConnLimits) -> hyper::server::conn::http2::Builder<StreamExec> {
    let mut b = hyper::server::conn::http2::Builder::new(StreamExec);
    b.max_concurrent_streams(limits.http2_max_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    b
}

pub(super) fn start_worker(
    index: usize,
    app: Entry,
    open: Arc<AtomicUsize>,
    opts: &RunOptions,
    cpu: Option<usize>,
) -> io::Result<Worker> {
    let limits = &opts.limits;
    let shared = Arc::new(Shared {
        app,
        http: http1(limits),
        h2: http2(limits),
        limits: limits.clone(),
        connect_info: opts.connect_info,
    });
    let idle_timeout = limits.idle_timeout;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Handoff>();
    let counter = Arc::clone(&open);
    let (pinned_tx, pinned_rx) = std::sync::mpsc::sync_channel(1);
    let thread =
        std::thread::Builder::new().name(format!("qrng-http-{index}")).spawn(move || {
            let pinned = cpu.filter(|&c| match pin_current_thread(c) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(worker = index, cpu = c, error = %e, "cannot pin an HTTP worker to its CPU; it runs unpinned");
                    false
                }
            });
            let _ = pinned_tx.send(pinned);
            runtime.block_on(async move {
                let lent_checks = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(lent::LEND_CHECK);
                    loop {
                        tick.tick().await;
                        lent::check();
                        let closed = idle::sweep(idle_timeout);
                        if closed > 0 {
                            tracing::debug!(closed, "closed idle connections");
                        }
                    }
                });
                while let Some(h) = rx.recv().await {
                    let guard = OpenGuard(Arc::clone(&counter));
                    let closer = Closer::default();
                    let conn = serve_connection(h, Arc::clone(&shared), guard, closer.clone());
                    let _ = closer.set(tokio::spawn(conn).abort_handle());
                }
                lent_checks.abort();
            });
            // The channel closed: shutdown has drained what it could; dropping the runtime drops any
            // connection left after the drain limit.
        })?;
    // The thread says whether it is pinned before it serves anything.
    let cpu = pinned_rx.recv().ok().flatten();
    Ok(Worker { tx, open, thread, cpu })
}

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Http1,
    Http2,
}

/// The first bytes of the HTTP/2 client preface (RFC 9113 §3.4), as far as the head reader takes
/// them: a request line, then the empty line that ends a head.
const H2_PREFACE_HEAD: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";

/// What serving a connection needs besides its stream.
struct Conn {
    peer: Option<SocketAddr>,
    watcher: Watcher,
    stop: tokio::sync::watch::Receiver<()>,
    shared: Arc<Shared>,
    closer: Closer,
}

async fn serve_connection(h: Handoff, shared: Arc<Shared>, _guard: OpenGuard, closer: Closer) {
    let Handoff { stream, peer, tls, watcher, slot, stop } = h;
    let c = Conn { peer, watcher, stop, shared, closer };
    // The HTTPS and Unix socket arms are boxed: a plain TCP connection's task stays the size it
    // is without them (what a connection costs before its first head: module docs of `head`).
    match stream {
        Accepted::Tcp(s) => match (TcpStream::from_std(s), tls) {
            (Ok(s), None) => serve_plain(s, c).await,
            (Ok(s), Some(tls)) => Box::pin(serve_tls(s, tls, c)).await,
            (Err(e), _) => tracing::warn!(error = %e, "cannot register an accepted connection"),
        },
        Accepted::Unix(s) => match UnixStream::from_std(s) {
            Ok(s) => Box::pin(serve_plain(s, c)).await,
            Err(e) => tracing::warn!(error = %e, "cannot register an accepted connection"),
        },
    }
    drop(slot);
}

/// Reads a connection's first head under the header timeout (or until the server stops
/// accepting); None: the connection is done.
async fn head_within<F>(read: F, c: &mut Conn) -> Option<Vec<u8>>
where
    F: std::future::Future<Output = io::Result<Option<Vec<u8>>>>,
{
    let first = tokio::time::timeout(c.shared.limits.header_timeout, read);
    tokio::select! {
        biased;
        _ = c.stop.changed() => None,
        read = first => match read {
            Ok(Ok(head)) => head,
            Ok(Err(e)) => {
                tracing::debug!(peer = ?c.peer, error = %e, "connection failed before its first request");
                None
            }
            Err(_) => {
                tracing::debug!(peer = ?c.peer, "no complete request head within the header timeout; closing");
                None
            }
        },
    }
}

/// A plain (TCP or Unix socket) connection: HTTP/1.1, or HTTP/2 with prior knowledge.
async fn serve_plain<S>(stream: S, mut c: Conn)
where
    S: head::Socket + tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let max = c.shared.limits.max_header_bytes;
    let Some(head) = head_within(head::first_head(&stream, max), &mut c).await else { return };
    let (proto, copy) = if head.starts_with(H2_PREFACE_HEAD) {
        (Proto::Http2, true)
    } else {
        (Proto::Http1, false)
    };
    // Boxed: the hyper connection's state is allocated only now, not for every connection still
    // sending its first head.
    Box::pin(serve_http(Prefixed::new(head, stream), proto, copy, c)).await;
}

/// An HTTPS connection: the handshake under the handshake timeout, then HTTP/2 or HTTP/1.1 as
/// ALPN chose (HTTP/1.1 without ALPN). Answers are copied (module docs).
async fn serve_tls(stream: TcpStream, tls: tokio_rustls::TlsAcceptor, mut c: Conn) {
    let handshake = tokio::time::timeout(c.shared.limits.handshake_timeout, tls.accept(stream));
    let mut stream = tokio::select! {
        biased;
        _ = c.stop.changed() => return,
        done = handshake => match done {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                // Plain HTTP sent to this port ends here too: rustls answers with an alert.
                tracing::debug!(peer = ?c.peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = ?c.peer, "TLS handshake not complete within the handshake timeout; closing");
                return;
            }
        },
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_http(Prefixed::new(Vec::new(), stream), Proto::Http2, true, c).await;
        return;
    }
    let max = c.shared.limits.max_header_bytes;
    let Some(head) = head_within(head::first_head_from(&mut stream, max), &mut c).await else {
        return;
    };
    serve_http(Prefixed::new(head, stream), Proto::Http1, true, c).await;
}

/// Serves a connection whose first head (if any) was read; `copy`: answers are never lent.
async fn serve_http<I>(io: Prefixed<I>, proto: Proto, copy: bool, c: Conn)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let Conn { peer, watcher, shared, closer, .. } = c;
    let app = shared.app.clone();
    let connect_info = shared.connect_info;
    let activity = Activity::new();
    idle::watch(&activity, &closer);
    let started = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let request = activity.begin();
        // The peer address is only needed by the rate limiter and the failed-authentication
        // throttle; recording it costs an allocation in every request's extensions, so it is only
        // recorded when one of them is configured.
        if connect_info {
            if let Some(peer) = peer {
                req.extensions_mut().insert(ConnectInfo(peer));
            }
        }
        let app = app.clone();
        async move {
            let resp = app.handle(req).await;
            Ok::<_, Infallible>(resp.map(|body| idle::Tracked::new(body, request)))
        }
    });
    // The lent-answer watchdog (`lent::watch`) and the idle check (`idle::sweep`) may abort this
    // task; that drops the connection here.
    let ended = match proto {
        // HTTP/1.1 requests run in the connection's task: one scope covers them all, and the
        // request futures of plain HTTP stay as they are.
        Proto::Http1 if copy => {
            let conn = shared.http.serve_connection(io, service);
            lent::copy_only(lent::scope(closer, watcher.watch(conn))).await
        }
        Proto::Http1 => {
            let conn = shared.http.serve_connection(io, service);
            lent::scope(closer, watcher.watch(conn)).await
        }
        Proto::Http2 => {
            let conn = shared.h2.serve_connection(io, service);
            // No request head has been read yet: the first request must begin within the
            // header timeout.
            let header_timeout = shared.limits.header_timeout;
            let first_request = async move {
                tokio::time::sleep(header_timeout).await;
                if started.started() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                ended = lent::scope(closer, watcher.watch(conn)) => ended,
                () = first_request => {
                    tracing::debug!(peer = ?peer, "no HTTP/2 request within the header timeout; closing");
                    return;
                }
            }
        }
    };
    if let Err(e) = ended {
        // A client that hangs up mid-request is routine: not an error of the server.
        tracing::debug!(peer = ?peer, error = %e, "connection ended with an error");
    }
}
