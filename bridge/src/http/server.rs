//! The HTTP server loop: one acceptor and `threads` workers, each a thread with its own
//! single-threaded tokio runtime that serves the connections it is handed from start to end.
//!
//! Why not `axum::serve` on tokio's work-stealing runtime: on a loaded machine its workers keep
//! waking one another to steal tasks, and each wake-up is a futex call and a context switch; a
//! connection that stays on one thread costs none of that (measured with bridge/bench/http.sh:
//! 32-byte hex went from 0.97× to 1.08× nginx's requests per second on two CPUs, see
//! docs/architecture.md, Performance).
//!
//! Each accepted connection goes to the worker with the fewest open connections, so a burst of
//! connects is spread evenly whichever thread is awake. (`SO_REUSEPORT` listeners per worker would
//! spread them by hash instead, and would let a second process of the same user bind the same port
//! and silently take half the connections, where now it fails with "address in use".)
//!
//! CPU placement (`HttpConfig::pin`, on by default): when there is one worker per CPU the process
//! may run on, worker `i` is pinned to the `i`-th of those CPUs, and a new connection goes to the
//! worker on the CPU its packets arrive on (`SO_INCOMING_CPU`: the CPU that ran the network stack
//! for it, i.e. the NIC queue's CPU for a remote client, the client's own CPU for a local one),
//! unless that worker has more than [`STEER_SLACK`] connections above the least loaded one. The
//! request is then parsed, and its answer copied into the socket, on the CPU whose caches the
//! packets already went through, and the kernel hands the answer to a local client on that same
//! CPU instead of moving it across (measured with bridge/bench/http.sh: 64 KiB answers went from
//! 0.90-0.97x to 1.06x nginx's requests per second, 32-byte hex from 1.32x to 1.50x; see
//! bridge/bench/README.md). A pinned worker cannot move off a CPU that other work keeps busy, so
//! on a host shared with CPU-heavy jobs `--http-cpu-affinity off` lets the scheduler place the
//! workers.
//!
//! Shutdown: stop accepting, ask every connection to finish (hyper's graceful shutdown: a request
//! in flight is answered, an idle keep-alive connection is closed), wait at most the drain limit
//! (`HttpConfig::drain`, default [`DRAIN_LIMIT`]), then stop the workers, which drops whatever is
//! left (a client that never finishes sending its request cannot hold shutdown up).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::sync::mpsc;

use super::{Entry, HttpError};
use crate::dispenser::Dispenser;

/// How long shutdown waits by default for open connections to finish before dropping them.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Pause after an accept error that is not about one connection (EMFILE, ENFILE, ENOMEM), so a
/// full descriptor table does not turn into a busy loop; connections already open keep working.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How many more open connections than the least loaded worker the worker on a connection's own
/// CPU may have and still be given it (see the module docs). Small enough that the load stays
/// even, large enough that a client's connections made in a burst from one CPU mostly stay there.
pub const STEER_SLACK: usize = 8;

/// How often a lent response's watchdog looks at it (see [`watch_lent`]).
pub const LEND_CHECK: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// The current connection's own task, for [`watch_lent`] to abort.
    static CLOSE: Closer;
}

/// A connection task's abort handle, set right after it is spawned. Aborting drops the connection
/// (and with it any response body it holds) at once.
type Closer = Arc<std::sync::OnceLock<tokio::task::AbortHandle>>;

/// A lent response being watched (see [`watch_lent`]).
struct LentWatch {
    done: Arc<AtomicBool>,
    since: std::time::Instant,
    close: Closer,
    dispenser: Dispenser,
    device: String,
}

thread_local! {
    /// This worker's lent responses not yet known to be done.
    static LENT: std::cell::RefCell<Vec<LentWatch>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Watches a response whose bytes are lent from the ring (`done` turns true when hyper drops
/// the body, i.e. the kernel has them). A client that stops reading keeps them lent, and the
/// producer cannot reuse that space; lending stops at half the ring, but copies made after a
/// stuck lease still cannot be freed before it. So each worker looks at its lent responses once
/// a second ([`LEND_CHECK`]): one that is not done after a check interval, while more than half
/// of its device's ring is held (`Dispenser::lend_pressure`), gets its connection closed, which
/// drops the body and frees the space. A slow client is left alone as long as the ring has room.
/// Outside a served connection (router tests) there is nothing to close.
pub fn watch_lent(dispenser: &Dispenser, device: String, done: Arc<AtomicBool>) {
    let Ok(close) = CLOSE.try_with(Arc::clone) else { return };
    LENT.with(|l| {
        let mut l = l.borrow_mut();
        if l.len() >= 64 {
            // Almost all are long done: keep the list short between checks.
            l.retain(|w| !w.done.load(Ordering::Acquire));
        }
        l.push(LentWatch {
            done,
            since: std::time::Instant::now(),
            close,
            dispenser: dispenser.clone(),
            device,
        });
    });
}

/// One worker's periodic look at its lent responses (see [`watch_lent`]).
fn check_lent() {
    LENT.with(|l| {
        l.borrow_mut().retain(|w| {
            if w.done.load(Ordering::Acquire) {
                return false;
            }
            if w.since.elapsed() >= LEND_CHECK && w.dispenser.lend_pressure(&w.device) {
                tracing::warn!(device = %w.device, "closing a connection that has not taken its response while the ring is short of space");
                if let Some(task) = w.close.get() {
                    task.abort();
                }
                return false;
            }
            true
        });
    });
}

/// A connection handed to a worker.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
}

struct Worker {
    tx: mpsc::UnboundedSender<Handoff>,
    open: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
    /// The CPU this worker is pinned to, if it is.
    cpu: Option<usize>,
}

/// The acceptor's counters, shown by `/metrics`.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Open connections, one entry per worker (`http_connections_open{worker}`).
    pub open: Vec<Arc<AtomicUsize>>,
    /// Connections given to the worker on the CPU their packets arrive on
    /// (`http_connections_accepted_total{placement="local"}`).
    pub local: AtomicU64,
    /// Connections given to the least loaded worker (`placement="balanced"`): workers not
    /// pinned, the CPU unknown or not a worker's, or that worker too far ahead.
    pub balanced: AtomicU64,
}

impl ServerStats {
    /// Counters for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self { open: (0..workers).map(|_| Arc::default()).collect(), ..Self::default() }
    }
}

/// How [`run`] serves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Record each request's peer address (`ConnectInfo`, for the rate limiter).
    pub connect_info: bool,
    /// How long shutdown waits for open connections.
    pub drain: Duration,
    /// Pin workers to CPUs and steer connections to the worker on their CPU (module docs).
    pub pin: bool,
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

/// The CPUs this process may run on (its affinity mask, which also reflects a cgroup's cpuset), in
/// increasing order; empty if it cannot be read.
pub fn allowed_cpus() -> Vec<usize> {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect()
}

/// The CPU each of `workers` workers is pinned to: the allowed CPUs in order when there are
/// exactly as many workers as CPUs, else none (fewer workers than CPUs would leave CPUs whose
/// connections have no local worker; more would share CPUs).
pub fn pin_plan(allowed: &[usize], workers: usize) -> Option<Vec<usize>> {
    (workers > 0 && allowed.len() == workers).then(|| allowed.to_vec())
}

/// Pins the calling thread to `cpu`.
fn pin_current_thread(cpu: usize) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    // Pid 0: the calling thread (sched_setaffinity applies to one thread).
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

/// Which worker gets a connection: the one pinned to `local` (the connection's CPU, an index
/// into `open`) unless it has more than [`STEER_SLACK`] connections above the least loaded,
/// else the least loaded. Returns the index and whether it is the local one.
pub fn choose_worker(open: &[usize], local: Option<usize>) -> Option<(usize, bool)> {
    let least = least_loaded(open.iter().copied())?;
    match local.and_then(|l| open.get(l).map(|&n| (l, n))) {
        Some((l, n)) if n <= open[least].saturating_add(STEER_SLACK) => Some((l, true)),
        _ => Some((least, false)),
    }
}

fn start_worker(
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
                    let mut tick = tokio::time::interval(LEND_CHECK);
                    loop {
                        tick.tick().await;
                        check_lent();
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
    // The watchdog may abort this task (see `watch_lent`); that drops the connection here.
    if let Err(e) = CLOSE.scope(closer, h.watcher.watch(conn)).await {
        // A client that hangs up mid-request is routine: not an error of the server.
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
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

/// Which worker gets the next connection: the one with the fewest open, ties to the lowest index.
pub fn least_loaded(open: impl IntoIterator<Item = usize>) -> Option<usize> {
    open.into_iter().enumerate().min_by_key(|&(i, n)| (n, i)).map(|(i, _)| i)
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains (see the module docs). One
/// worker per entry of `stats.open`, which counts that worker's open connections.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: Entry,
    stats: Arc<ServerStats>,
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
        let w = start_worker(i, app.clone(), Arc::clone(open), opts.connect_info, cpu);
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
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if per_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // No Nagle: a response's last partial segment must not wait for the client's delayed ACK.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand over an accepted connection");
                continue;
            }
        };
        let local = if on_cpu.is_empty() {
            None
        } else {
            socket2::SockRef::from(&stream)
                .cpu_affinity()
                .ok()
                .and_then(|c| on_cpu.get(c).copied().flatten())
        };
        let open: Vec<usize> = workers.iter().map(|w| w.open.load(Ordering::Relaxed)).collect();
        let Some((w, is_local)) = choose_worker(&open, local) else { break };
        let w = &workers[w];
        if is_local { &stats.local } else { &stats.balanced }.fetch_add(1, Ordering::Relaxed);
        w.open.fetch_add(1, Ordering::Relaxed);
        if w.tx.send(Handoff { stream, peer, watcher: graceful.watcher() }).is_err() {
            // Only if the worker thread died (a panic outside any request): the connection is
            // dropped, and the worker's count is set out of reach so it gets no more.
            tracing::error!("an HTTP worker is gone; connection dropped");
            w.open.store(usize::MAX / 2, Ordering::Relaxed);
        }
    }
    drop(listener);
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
