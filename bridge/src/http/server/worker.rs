//! One HTTP worker: a thread with a single-threaded tokio runtime that serves every connection it
//! is handed, from its first byte to its last, and runs the lent-answer watchdog
//! ([`super::super::lent`]) for them.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::sync::mpsc;

use super::placement::pin_current_thread;
use crate::http::lent::{self, Closer};
use crate::http::Entry;

/// A connection handed to a worker.
pub(super) struct Handoff {
    pub(super) stream: std::net::TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) watcher: Watcher,
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

pub(super) fn start_worker(
    index: usize,
    app: Entry,
    open: Arc<AtomicUsize>,
    connect_info: bool,
    cpu: Option<usize>,
) -> io::Result<Worker> {
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
                let lent_checks = tokio::spawn(async {
                    let mut tick = tokio::time::interval(lent::LEND_CHECK);
                    loop {
                        tick.tick().await;
                        lent::check();
                    }
                });
                while let Some(h) = rx.recv().await {
                    let guard = OpenGuard(Arc::clone(&counter));
                    let closer = Closer::default();
                    let conn =
                        serve_connection(h, app.clone(), connect_info, guard, closer.clone());
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

async fn serve_connection(
    h: Handoff,
    app: Entry,
    connect_info: bool,
    _guard: OpenGuard,
    closer: Closer,
) {
    let stream = match tokio::net::TcpStream::from_std(h.stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot register an accepted connection");
            return;
        }
    };
    let peer = h.peer;
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        // The peer address is only needed by the rate limiter; recording it costs an allocation
        // in every request's extensions, so it is only recorded when a limit is configured.
        if connect_info {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.handle(req).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    // The watchdog may abort this task (see `lent::watch`); that drops the connection here.
    if let Err(e) = lent::scope(closer, h.watcher.watch(conn)).await {
        // A client that hangs up mid-request is routine: not an error of the server.
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}
