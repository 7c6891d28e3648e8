//! One HTTP worker: a thread with a single-threaded tokio runtime that serves every connection it
//! is handed, from its first byte to its last, and runs the lent-answer watchdog
//! ([`super::super::lent`]) for them.
//!
//! A connection's life: its first request head is read under the header timeout ([`head`]), then
//! hyper serves it, its buffers bounded by the head limit, under the idle timeout ([`idle`]: once
//! a second the worker closes connections idle that long). Its admission slot ([`Slot`]) is held
//! to the end.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::server::graceful::Watcher;
use tokio::sync::mpsc;

use super::head::{self, Prefixed};
use super::idle::{self, Activity};
use super::limits::{ConnLimits, Slot};
use super::placement::pin_current_thread;
use crate::http::lent::{self, Closer};
use crate::http::Entry;

/// A connection handed to a worker.
pub(super) struct Handoff {
    pub(super) stream: std::net::TcpStream,
    pub(super) peer: SocketAddr,
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

pub(super) fn start_worker(
    index: usize,
    app: Entry,
    open: Arc<AtomicUsize>,
    connect_info: bool,
    limits: &ConnLimits,
    cpu: Option<usize>,
) -> io::Result<Worker> {
    let shared =
        Arc::new(Shared { app, http: http1(limits), limits: limits.clone(), connect_info });
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

async fn serve_connection(mut h: Handoff, shared: Arc<Shared>, _guard: OpenGuard, closer: Closer) {
    let stream = match tokio::net::TcpStream::from_std(h.stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot register an accepted connection");
            return;
        }
    };
    let peer = h.peer;
    let limits = &shared.limits;
    let first = tokio::time::timeout(
        limits.header_timeout,
        head::first_head(&stream, limits.max_header_bytes),
    );
    let head = tokio::select! {
        biased;
        _ = h.stop.changed() => return,
        read = first => match read {
            Ok(Ok(Some(head))) => head,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "connection failed before its first request");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "no complete request head within the header timeout; closing");
                return;
            }
        },
    };
    // Boxed: the hyper connection's state is allocated only now, not for every connection still
    // sending its first head.
    Box::pin(serve_http(Prefixed::new(head, stream), peer, h.watcher, shared, closer)).await;
    drop(h.slot);
}

async fn serve_http(
    io: Prefixed,
    peer: SocketAddr,
    watcher: Watcher,
    shared: Arc<Shared>,
    closer: Closer,
) {
    let app = shared.app.clone();
    let connect_info = shared.connect_info;
    let activity = Activity::new();
    idle::watch(&activity, &closer);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let request = activity.begin();
        // The peer address is only needed by the rate limiter and the failed-authentication
        // throttle; recording it costs an allocation in every request's extensions, so it is only
        // recorded when one of them is configured.
        if connect_info {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        let app = app.clone();
        async move {
            let resp = app.handle(req).await;
            Ok::<_, Infallible>(resp.map(|body| idle::Tracked::new(body, request)))
        }
    });
    let conn = shared.http.serve_connection(io, service);
    // The lent-answer watchdog (`lent::watch`) and the idle check (`idle::sweep`) may abort this
    // task; that drops the connection here.
    if let Err(e) = lent::scope(closer, watcher.watch(conn)).await {
        // A client that hangs up mid-request is routine: not an error of the server.
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}
