//! The HTTP server loop: one acceptor and `threads` workers, each a thread with its own
//! single-threaded tokio runtime that serves the connections it is handed from start to end.
//!
//! Why not `axum::serve` on tokio's work-stealing runtime: on a loaded machine its workers keep
//! waking one another to steal tasks, and each wake-up is a futex call and a context switch; a
//! connection that stays on one thread costs none of that (figures: docs/benchmarks.md).
//!
//! Each accepted connection goes to the worker with the fewest open connections, so a burst of
//! connects is spread evenly whichever thread is awake. (`SO_REUSEPORT` listeners per worker would
//! spread them by hash instead, and would let a second process of the same user bind the same port
//! and silently take half the connections, where now it fails with "address in use".)
//!
//! CPU placement (`HttpConfig::pin`, on by default; [`placement`]): when there is one worker per
//! CPU the process may run on, worker `i` is pinned to the `i`-th of those CPUs, and a new
//! connection goes to the worker on the CPU its packets arrive on (`SO_INCOMING_CPU`: the CPU that
//! ran the network stack for it, i.e. the NIC queue's CPU for a remote client, the client's own CPU
//! for a local one), unless that worker has more than [`placement::STEER_SLACK`] connections above
//! the least loaded one. The request is then parsed, and its answer copied into the socket, on the
//! CPU whose caches the packets already went through, and the kernel hands the answer to a local
//! client on that same CPU instead of moving it across. A pinned worker cannot move off a CPU that
//! other work keeps busy, so on a host shared with CPU-heavy jobs `--http-cpu-affinity off` lets
//! the scheduler place the workers.
//!
//! Shutdown: stop accepting, ask every connection to finish (hyper's graceful shutdown: a request
//! in flight is answered, an idle keep-alive connection is closed), wait at most the drain limit
//! (`HttpConfig::drain`, default [`DRAIN_LIMIT`]), then stop the workers, which drops whatever is
//! left (a client that never finishes sending its request cannot hold shutdown up).
//!
//! Listeners (`listen`): any number of TCP and Unix sockets, each with an accept loop of its own
//! on the acceptor's task; a TCP listener serves plain HTTP or HTTPS (`tls`). Every connection,
//! whichever listener it came from, goes to the same workers and counts against the same caps.
//! (Each waiting accept loop holds one slot of the global cap.)
//!
//! Protocols (`worker`): HTTP/1.1, and HTTP/2 over TLS (ALPN `h2`) or in cleartext with prior
//! knowledge (a connection whose first bytes are the HTTP/2 preface), streams per connection
//! capped by `ConnLimits::http2_max_streams`.
//!
//! Admission (`limits`): the acceptor takes a slot of the global connection cap before each
//! `accept` and waits while there is none, and refuses a connection whose client address is at its
//! own cap; every connection holds its slot until it ends. The header and idle timeouts and the
//! head limit are applied per connection (`worker`, `head`).
//!
//! Layout: this file (the acceptor), `worker` (a worker thread and its connections), `head` (a
//! connection's first request head), `idle` (the idle timeout), `limits` (caps, descriptors,
//! timeouts), `placement` (CPU pinning and the choice of worker).

mod head;
mod idle;
pub mod limits;
pub mod listen;
mod placement;
pub mod tls;
mod worker;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;

use super::metrics::ServerMetrics;
use super::{Entry, HttpError};
pub use limits::ConnLimits;
pub use listen::{Listener, Socket, UnixAccess};
pub use placement::{allowed_cpus, choose_worker, least_loaded, pin_plan, STEER_SLACK};
pub use worker::worker_count;
use worker::{start_worker, Handoff};

/// How long shutdown waits by default for open connections to finish before dropping them.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Pause after an accept error that is not about one connection (EMFILE, ENFILE, ENOMEM), so a
/// full descriptor table does not turn into a busy loop; connections already open keep working.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one "cap reached" warning per this interval (the metric counts every time).
const CAP_WARN_EVERY: Duration = Duration::from_secs(10);

/// How [`run`] serves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Record each request's peer address (`ConnectInfo`, for the rate limiter).
    pub connect_info: bool,
    /// How long shutdown waits for open connections.
    pub drain: Duration,
    /// Pin workers to CPUs and steer connections to the worker on their CPU (module docs).
    pub pin: bool,
    /// Connection caps, timeouts and the head limit.
    pub limits: ConnLimits,
}

/// True for accept errors that concern only the connection being accepted.
fn per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Serves `app` on `listeners` until `shutdown` resolves, then drains (see the module docs). One
/// worker per entry of `stats.open`, which counts that worker's open connections.
pub async fn run(
    listeners: Vec<Listener>,
    app: Entry,
    stats: Arc<ServerMetrics>,
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let n = stats.open.len();
    if n == 0 {
        return Err(HttpError::Serve(io::Error::other("no HTTP worker threads")));
    }
    let allowed = allowed_cpus();
    let plan = if opts.pin { pin_plan(&allowed, n) } else { None };
    let mut workers = Vec::with_capacity(n);
    for (i, open) in stats.open.iter().enumerate() {
        let cpu = plan.as_ref().and_then(|p| p.get(i).copied());
        let w = start_worker(i, app.clone(), Arc::clone(open), &opts, cpu);
        workers.push(w.map_err(HttpError::Serve)?);
    }
    // CPU number -> the worker pinned to it.
    let mut on_cpu: Vec<Option<usize>> = Vec::new();
    for (i, w) in workers.iter().enumerate() {
        if let Some(c) = w.cpu {
            if on_cpu.len() <= c {
                on_cpu.resize(c + 1, None);
            }
            on_cpu[c] = Some(i);
        }
    }
    let pinned: Vec<usize> = workers.iter().filter_map(|w| w.cpu).collect();
    if !pinned.is_empty() {
        tracing::info!(workers = n, cpus = ?pinned, "HTTP workers pinned; connections go to the worker on their CPU");
    } else if opts.pin {
        tracing::info!(
            workers = n,
            cpus = allowed.len(),
            "HTTP workers not pinned: pinning needs one worker per allowed CPU"
        );
    } else {
        tracing::debug!(workers = n, "HTTP workers started, not pinned");
    }
    // With the listeners and the workers' runtimes open, what is left of the open-file limit.
    let max_connections = limits::fit_descriptors(&opts.limits)?;
    let admission = limits::Admission::new(max_connections, opts.limits.per_client);
    tracing::info!(
        max_connections,
        per_client = opts.limits.per_client,
        header_timeout = ?opts.limits.header_timeout,
        idle_timeout = ?opts.limits.idle_timeout,
        tls_handshake_timeout = ?opts.limits.handshake_timeout,
        http2_max_streams = opts.limits.http2_max_streams,
        "HTTP connection limits"
    );
    let graceful = GracefulShutdown::new();
    let (stop, stopped) = tokio::sync::watch::channel(());
    stats.max_connections.store(max_connections, Ordering::Relaxed);
    let acceptor = Acceptor {
        workers: &workers,
        on_cpu: &on_cpu,
        admission: &admission,
        stats: &stats,
        graceful: &graceful,
        stopped: &stopped,
        max_connections,
        last_cap_warning: std::sync::Mutex::new(None),
    };
    // One accept loop per listener, all on this task: dropping them (at shutdown) closes the
    // listeners.
    let loops = futures_util::future::join_all(listeners.into_iter().map(|l| acceptor.serve(l)));
    tokio::select! {
        biased;
        () = shutdown => {}
        _ = loops => {}
    }
    drop(stop);
    let open: usize = workers.iter().map(|w| w.open.load(Ordering::Relaxed)).sum();
    tracing::info!(connections = open, "HTTP: no longer accepting; draining open connections");
    if tokio::time::timeout(opts.drain, graceful.shutdown()).await.is_err() {
        let left: usize = workers.iter().map(|w| w.open.load(Ordering::Relaxed)).sum();
        tracing::warn!(connections = left, limit = ?opts.drain, "HTTP: connections still open after the drain limit; closing them");
    }
    let threads: Vec<_> = workers
        .into_iter()
        .map(|w| {
            drop(w.tx);
            w.thread
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        for t in threads {
            if t.join().is_err() {
                tracing::error!("an HTTP worker panicked");
            }
        }
    })
    .await
    .map_err(|e| HttpError::Serve(io::Error::other(e)))?;
    Ok(())
}

/// What the accept loops of all listeners share.
struct Acceptor<'a> {
    workers: &'a [worker::Worker],
    on_cpu: &'a [Option<usize>],
    admission: &'a limits::Admission,
    stats: &'a ServerMetrics,
    graceful: &'a GracefulShutdown,
    stopped: &'a tokio::sync::watch::Receiver<()>,
    max_connections: usize,
    last_cap_warning: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Acceptor<'_> {
    /// Accepts connections on `listener` and hands them to the workers; ends only if every
    /// worker is gone.
    async fn serve(&self, listener: Listener) {
        let Listener { socket, tls } = listener;
        loop {
            let permit = match self.admission.try_slot() {
                Some(p) => p,
                None => {
                    // At the cap: no accept until a connection ends (module docs of `limits`).
                    self.stats.cap_reached.fetch_add(1, Ordering::Relaxed);
                    let warn = {
                        let mut last = self
                            .last_cap_warning
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let due = last.is_none_or(|t| t.elapsed() >= CAP_WARN_EVERY);
                        if due {
                            *last = Some(std::time::Instant::now());
                        }
                        due
                    };
                    if warn {
                        tracing::warn!(
                            max_connections = self.max_connections,
                            "HTTP connection cap reached; new connections wait in the listen backlog"
                        );
                    }
                    self.admission.slot().await
                }
            };
            let (stream, peer) = match listen::accept(&socket).await {
                Ok(a) => a,
                Err(e) if per_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Some(slot) = self.admission.admit(permit, peer.map(|p| p.ip())) else {
                self.stats.client_cap.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = ?peer, "client at its connection cap; refused");
                match &stream {
                    // Best effort: one non-blocking write, then the connection is closed. An
                    // HTTPS listener never sends plain HTTP: its client is just closed.
                    listen::Accepted::Tcp(s) if tls.is_none() => {
                        let _ = io::Write::write(&mut &*s, limits::over_client_cap_answer());
                    }
                    _ => {}
                }
                continue;
            };
            let local = match &stream {
                listen::Accepted::Tcp(s) if !self.on_cpu.is_empty() => socket2::SockRef::from(s)
                    .cpu_affinity()
                    .ok()
                    .and_then(|c| self.on_cpu.get(c).copied().flatten()),
                _ => None,
            };
            let open: Vec<usize> =
                self.workers.iter().map(|w| w.open.load(Ordering::Relaxed)).collect();
            let Some((w, is_local)) = choose_worker(&open, local) else { return };
            let w = &self.workers[w];
            if is_local { &self.stats.local } else { &self.stats.balanced }
                .fetch_add(1, Ordering::Relaxed);
            w.open.fetch_add(1, Ordering::Relaxed);
            let handoff = Handoff {
                stream,
                peer,
                tls: tls.as_ref().map(|t| t.acceptor.clone()),
                watcher: self.graceful.watcher(),
                slot,
                stop: self.stopped.clone(),
            };
            if w.tx.send(handoff).is_err() {
                // Only if the worker thread died (a panic outside any request): the connection
                // is dropped, and the worker's count is set out of reach so it gets no more.
                tracing::error!("an HTTP worker is gone; connection dropped");
                w.open.store(usize::MAX / 2, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests;
