//! The EGD (Entropy Gathering Daemon) protocol server: what QEMU's `rng-egd` backend and
//! libvirt's `<backend model='egd'>` speak, so a virtual machine's virtio-rng device draws from the
//! card (docs/egd.md).
//!
//! - [`proto`]: the wire format (commands 0x00-0x04) and a parser with no I/O.
//! - `conn`: one client connection: requests answered in order, bytes taken from the
//!   [`Dispenser`] only when the socket can take them.
//! - Here: the listeners (`--egd-listen unix:PATH`, `tcp:ADDR`), the client cap and the metrics.
//!
//! The dispenser's rules hold unchanged: each byte goes to exactly one client, and a device that
//! cannot serve (failed, stopped, detached) answers nothing. A blocking read then waits (the
//! guest's `/dev/hwrng` read blocks) and a non-blocking read gets a count of 0; no client is ever
//! sent bytes that did not come out of a healthy ring. Bytes a client offers with command 0x03 are
//! read and discarded: the bridge serves only the card's bytes and credits nothing to anyone.

mod conn;
pub mod proto;
#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;

pub use crate::config::EgdListen;
use crate::dispenser::Dispenser;

/// The send buffer asked for on each client socket (`SO_SNDBUF`; Linux doubles it). Bytes in it
/// are served and gone from the ring; a client that stops reading holds at most this much (plus
/// one answer, ≤ [`proto::MAX_REQUEST`] bytes): small, because an EGD answer is at most 259 bytes.
pub const SEND_BUFFER: usize = 4096;

/// How long one blocking read waits in the dispenser before asking again (the read itself waits
/// for ever, as EGD's blocking read does; the slices let a closed client be noticed).
pub const TAKE_SLICE: Duration = Duration::from_secs(1);

/// How long a blocking read sleeps after the dispenser refused at once (no device can serve)
/// before asking again.
pub const RETRY_AFTER_REFUSAL: Duration = Duration::from_millis(200);

/// Errors starting the EGD listeners.
#[derive(Debug, thiserror::Error)]
pub enum EgdError {
    #[error("failed to listen for EGD clients on {path}: {source} (is its directory there and writable?)")]
    BindUnix {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("EGD socket {path} is in use by a running process (another qrng-bridge?); stop it or choose another path")]
    InUse { path: PathBuf },
    #[error("EGD socket path {path} exists and is not a socket; remove it or choose another path")]
    NotSocket { path: PathBuf },
    #[error("failed to set the mode of EGD socket {path}: {source}")]
    Chmod {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to listen for EGD clients on {addr}: {source}")]
    BindTcp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The EGD server's settings (`--egd-*`).
#[derive(Debug, Clone)]
pub struct EgdConfig {
    pub listen: Vec<EgdListen>,
    /// Most clients connected at once over all listeners; more are closed as they connect.
    pub max_clients: usize,
    /// Permission bits of the Unix sockets.
    pub socket_mode: u32,
}

/// Request kinds, in the order of [`EgdMetrics::requests`] and their `command` label.
pub const COMMANDS: [&str; 5] = ["level", "read_nonblocking", "read_blocking", "write", "pid"];

/// The EGD server's counters (rendered by `http::metrics` as `qrng_egd_*`).
#[derive(Debug, Default)]
pub struct EgdMetrics {
    /// Clients connected now (`qrng_egd_connections_open`).
    pub open: AtomicUsize,
    /// Clients accepted (`qrng_egd_connections_accepted_total`).
    pub accepted: AtomicU64,
    /// Clients closed at once because `--egd-max-clients` were connected
    /// (`qrng_egd_connections_refused_total{reason="max_clients"}`).
    pub refused: AtomicU64,
    /// Requests by command, indexed as [`COMMANDS`] (`qrng_egd_requests_total{command}`).
    pub requests: [AtomicU64; 5],
    /// Random bytes sent to clients (`qrng_egd_served_bytes_total`).
    pub served_bytes: AtomicU64,
    /// Bytes clients offered with command 0x03, discarded (`qrng_egd_client_entropy_ignored_bytes_total`).
    pub ignored_bytes: AtomicU64,
    /// Times a read found no device able to serve and waited or answered nothing
    /// (`qrng_egd_unserved_waits_total`).
    pub unserved: AtomicU64,
    /// Connections closed for an unknown command byte (`qrng_egd_protocol_errors_total`).
    pub protocol_errors: AtomicU64,
}

impl EgdMetrics {
    fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One bound listener.
#[derive(Debug)]
pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener, SocketAddr),
}

/// Binds every `--egd-listen` address (call inside the tokio runtime). A Unix socket left behind
/// by a bridge that died is replaced; one a live process answers on is refused.
pub fn bind(cfg: &EgdConfig) -> Result<Vec<Listener>, EgdError> {
    cfg.listen
        .iter()
        .map(|l| match l {
            EgdListen::Unix(path) => bind_unix(path, cfg.socket_mode),
            EgdListen::Tcp(addr) => {
                let std = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| EgdError::BindTcp { addr: *addr, source })?;
                let l = TcpListener::from_std(std)
                    .map_err(|source| EgdError::BindTcp { addr: *addr, source })?;
                let local = l.local_addr().unwrap_or(*addr);
                Ok(Listener::Tcp(l, local))
            }
        })
        .collect()
}

fn bind_unix(path: &Path, mode: u32) -> Result<Listener, EgdError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(EgdError::NotSocket { path: path.to_owned() });
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(EgdError::InUse { path: path.to_owned() });
        }
        // Left behind by a process that is gone: nobody answers on it.
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path)
        .map_err(|source| EgdError::BindUnix { path: path.to_owned(), source })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|source| EgdError::Chmod { path: path.to_owned(), source })?;
    Ok(Listener::Unix(l, path.to_owned()))
}

/// What every connection shares.
struct Ctx {
    dispenser: Dispenser,
    metrics: Arc<EgdMetrics>,
    max_clients: usize,
}

/// The running listeners; dropping it stops them, closes every client and removes the Unix
/// socket files.
#[derive(Debug)]
pub struct EgdServer {
    tasks: Vec<JoinHandle<()>>,
    conns: Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
    paths: Vec<PathBuf>,
}

impl EgdServer {
    /// Serves `listeners` on the current tokio runtime.
    pub fn start(
        listeners: Vec<Listener>,
        dispenser: Dispenser,
        metrics: Arc<EgdMetrics>,
        max_clients: usize,
    ) -> EgdServer {
        let ctx = Arc::new(Ctx { dispenser, metrics, max_clients });
        let conns = Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        let mut paths = Vec::new();
        let tasks = listeners
            .into_iter()
            .map(|l| {
                let (ctx, conns) = (Arc::clone(&ctx), Arc::clone(&conns));
                match l {
                    Listener::Unix(l, path) => {
                        tracing::info!(listen = %path.display(), "serving EGD");
                        paths.push(path);
                        tokio::spawn(async move {
                            loop {
                                let r = l.accept().await.map(|(s, _)| s);
                                admit(&ctx, &conns, r, prepare_unix).await;
                            }
                        })
                    }
                    Listener::Tcp(l, addr) => {
                        tracing::info!(listen = %addr, "serving EGD");
                        tokio::spawn(async move {
                            loop {
                                let r = l.accept().await.map(|(s, _)| s);
                                admit(&ctx, &conns, r, prepare_tcp).await;
                            }
                        })
                    }
                }
            })
            .collect();
        EgdServer { tasks, conns, paths }
    }
}

impl Drop for EgdServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        conn_lock(&self.conns).abort_all();
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn conn_lock(
    m: &std::sync::Mutex<tokio::task::JoinSet<()>>,
) -> std::sync::MutexGuard<'_, tokio::task::JoinSet<()>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn prepare_unix(s: &UnixStream) {
    let _ = socket2::SockRef::from(s).set_send_buffer_size(SEND_BUFFER);
}

fn prepare_tcp(s: &TcpStream) {
    let sock = socket2::SockRef::from(s);
    let _ = sock.set_send_buffer_size(SEND_BUFFER);
    // Answers are small and each is awaited by the client: send them at once.
    let _ = s.set_nodelay(true);
}

/// Decrements the open-connection gauge when a connection task ends or is aborted.
struct OpenGuard(Arc<EgdMetrics>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Admits an accepted client (or closes it at the cap) and spawns its connection task.
async fn admit<S: conn::Stream + 'static>(
    ctx: &Arc<Ctx>,
    conns: &std::sync::Mutex<tokio::task::JoinSet<()>>,
    accepted: io::Result<S>,
    prepare: fn(&S),
) {
    let stream = match accepted {
        Ok(s) => s,
        Err(e) => {
            // Out of descriptors or a client gone before accept: back off briefly and go on.
            tracing::warn!(error = %e, "EGD accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
    };
    let m = &ctx.metrics;
    if m.open.load(Ordering::Relaxed) >= ctx.max_clients {
        EgdMetrics::count(&m.refused, 1);
        tracing::warn!(max = ctx.max_clients, "EGD client refused: --egd-max-clients connected");
        return;
    }
    m.open.fetch_add(1, Ordering::Relaxed);
    EgdMetrics::count(&m.accepted, 1);
    prepare(&stream);
    let guard = OpenGuard(Arc::clone(m));
    let ctx = Arc::clone(ctx);
    let mut set = conn_lock(conns);
    // Reap finished connections so the set stays as small as the open count.
    while set.try_join_next().is_some() {}
    set.spawn(async move {
        let _guard = guard;
        conn::serve(stream, &ctx).await;
    });
}
