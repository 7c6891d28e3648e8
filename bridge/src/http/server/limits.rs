//! What one client, or many, can hold of the server: the connection caps (global and per client
//! address), the descriptors they need, and the timeouts and buffer bound of a connection whose
//! request head is not complete (applied in `worker` and `head`). The same phases nginx bounds with
//! `worker_connections`, `client_header_timeout`, `keepalive_timeout` and
//! `large_client_header_buffers`. Settings and their defaults: docs/api.md "Connections".
//!
//! Descriptors: every open connection is one descriptor, and everything else the bridge does (the
//! listener, each ring, the FUSE device, a worker's runtime, files read briefly) needs one too. So
//! the global cap is fitted at start-up to the open-file limit (`RLIMIT_NOFILE`) minus what is
//! already open minus a reserve ([`fit_descriptors`]): connections alone can then never use the
//! last descriptors, and accepting stops at the cap instead of failing with EMFILE.
//!
//! At the global cap the acceptor stops calling `accept` until a connection closes (a permit of
//! [`Admission`] per connection, held by the connection's task): new clients wait in the listen
//! backlog and are served in arrival order as slots free up, no descriptor is spent on them, and
//! nothing spins. Answering them with a quick 503 instead would need a descriptor per refused
//! client at the moment there are none to spare, and would turn waiting clients into retrying
//! ones. Over the per-client cap a connection has to be accepted to learn its address; it gets a
//! short 429 (best effort, without waiting for the socket) and is closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::HttpError;

// The defaults, in a file of their own that `build.rs` also reads (the man page shows them).
include!("defaults.rs");

/// The connection limits (from the command line, see `Config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most open connections. `None`: [`DEFAULT_MAX_CONNECTIONS`], lowered to what the open-file
    /// limit allows; `Some(n)`: exactly `n`, or start-up fails if the limit cannot hold it.
    pub max_connections: Option<usize>,
    /// Most open connections per client address (an IPv6 client's /64); 0 = no per-client cap.
    pub per_client: usize,
    /// From accept until the first request head is complete; then the connection is closed.
    pub header_timeout: Duration,
    /// From the end of an answer until the next request head is complete on a kept-alive
    /// connection; then the connection is closed.
    pub idle_timeout: Duration,
    /// Largest request head; a larger one gets 431 and the connection is closed.
    pub max_header_bytes: usize,
    /// Descriptors kept free for everything but HTTP connections (see [`fit_descriptors`]).
    pub reserved_fds: usize,
    /// From accept until a TLS handshake is complete; then the connection is closed.
    pub handshake_timeout: Duration,
    /// Most concurrent streams of an HTTP/2 connection.
    pub http2_max_streams: u32,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: None,
            per_client: DEFAULT_PER_CLIENT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            reserved_fds: DEFAULT_RESERVED_FDS,
            handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            http2_max_streams: DEFAULT_HTTP2_MAX_STREAMS,
        }
    }
}

/// An open-file limit (`RLIMIT_NOFILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: u64,
}

/// What [`plan_descriptors`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdPlan {
    /// The global connection cap.
    pub max_connections: usize,
    /// The soft limit to run with (at least the current one).
    pub soft: u64,
    /// The default cap had to be lowered to fit the limit.
    pub lowered: bool,
}

/// The connection cap and soft limit for `requested` connections (None: the default) when `open`
/// descriptors are open and `reserved` must stay free: `cap + open + reserved <= soft`, the soft
/// limit raised as far as needed, up to the hard limit.
pub fn plan_descriptors(
    requested: Option<usize>,
    reserved: usize,
    open: usize,
    limit: FdLimit,
) -> Result<FdPlan, HttpError> {
    let base = (open as u64).saturating_add(reserved as u64);
    let wanted = requested.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    let need = base.saturating_add(wanted as u64);
    let soft = if limit.soft >= need { limit.soft } else { need.min(limit.hard).max(limit.soft) };
    let room = usize::try_from(soft.saturating_sub(base)).unwrap_or(usize::MAX);
    let too_few = || HttpError::Descriptors {
        connections: wanted,
        reserved,
        open,
        need,
        soft: limit.soft,
        hard: limit.hard,
    };
    match requested {
        Some(n) if n > room => Err(too_few()),
        Some(n) => Ok(FdPlan { max_connections: n, soft, lowered: false }),
        None if room < MIN_CONNECTIONS => Err(too_few()),
        None => Ok(FdPlan { max_connections: wanted.min(room), soft, lowered: room < wanted }),
    }
}

/// A listening socket on `addr` with the given backlog (and `SO_REUSEADDR`, as tokio's `bind`).
/// Call inside the tokio runtime.
pub fn bind(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// Descriptors this process has open (`/proc/self/fd`, less the one reading it).
fn open_descriptors() -> std::io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count().saturating_sub(1))
}

/// Fits the global connection cap to this process's open-file limit: raises the soft limit as far
/// as the cap needs (up to the hard limit), and returns the cap. Call once the server's own
/// descriptors (listener, worker runtimes) are open, so they count as open, not as reserve.
pub fn fit_descriptors(limits: &ConnLimits) -> Result<usize, HttpError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| HttpError::Serve(std::io::Error::from(e)))?;
    let open = open_descriptors().map_err(HttpError::Serve)?;
    let mut plan = plan_descriptors(
        limits.max_connections,
        limits.reserved_fds,
        open,
        FdLimit { soft, hard },
    )?;
    if plan.soft > soft {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, plan.soft, hard) {
            // A system call filter may refuse it; then the soft limit is all there is.
            tracing::warn!(error = %e, soft, wanted = plan.soft, "cannot raise the open-file limit");
            plan = plan_descriptors(
                limits.max_connections,
                limits.reserved_fds,
                open,
                FdLimit { soft, hard: soft },
            )?;
        } else {
            tracing::info!(from = soft, to = plan.soft, "raised the soft open-file limit");
        }
    }
    if plan.lowered {
        tracing::warn!(
            max_connections = plan.max_connections,
            default = DEFAULT_MAX_CONNECTIONS,
            open_file_limit = plan.soft,
            open,
            reserved = limits.reserved_fds,
            "HTTP connection cap lowered to fit the open-file limit (raise LimitNOFILE= or ulimit -n)"
        );
    }
    Ok(plan.max_connections)
}

/// The address a per-client cap counts by: IPv4 addresses as they are (also when they arrive
/// IPv4-mapped on an IPv6 socket), IPv6 addresses by their /64, the smallest prefix a site is
/// given (RFC 6177), so one host cannot take a fresh address per connection.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Open connections per client key.
type Clients = Mutex<HashMap<IpAddr, usize>>;

/// Admission of connections: a global count of slots and, when configured, a count per client.
#[derive(Debug)]
pub(super) struct Admission {
    slots: Arc<Semaphore>,
    per_client: usize,
    clients: Arc<Clients>,
}

/// One admitted connection: its slot is free again when this is dropped (however the connection
/// ends, on whichever thread).
#[derive(Debug)]
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
    client: Option<(IpAddr, Arc<Clients>)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((key, clients)) = &self.client {
            let mut m = clients.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = m.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    m.remove(key);
                }
            }
        }
    }
}

impl Admission {
    pub(super) fn new(max_connections: usize, per_client: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_connections)),
            per_client,
            clients: Arc::default(),
        }
    }

    /// A global slot at once, if one is free.
    pub(super) fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    /// Waits for a global slot.
    pub(super) async fn slot(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.slots).acquire_owned().await.expect("the slot semaphore is never closed")
    }

    /// Admits a connection from `ip` on `permit`, or None if that client is at its cap. A
    /// connection with no address (a Unix socket's: a local client) has only the global cap.
    pub(super) fn admit(&self, permit: OwnedSemaphorePermit, ip: Option<IpAddr>) -> Option<Slot> {
        let Some(ip) = ip.filter(|_| self.per_client > 0) else {
            return Some(Slot { _permit: permit, client: None });
        };
        let key = client_key(ip);
        let mut m = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(key).or_insert(0);
        if *n >= self.per_client {
            return None;
        }
        *n += 1;
        Some(Slot { _permit: permit, client: Some((key, Arc::clone(&self.clients))) })
    }

    /// Connections open now.
    #[cfg(test)]
    pub(super) fn open(&self, max_connections: usize) -> usize {
        max_connections - self.slots.available_permits()
    }
}

/// The answer to a connection over its client's cap: 429 with the API's JSON error shape
/// (docs/api.md), then the connection is closed.
pub(super) fn over_client_cap_answer() -> &'static [u8] {
    static ANSWER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ANSWER.get_or_init(|| {
        let body = r#"{"error":{"code":"too_many_connections","message":"too many open connections from this address"}}"#;
        format!(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
             cache-control: no-store\r\nretry-after: 1\r\nconnection: close\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(soft: u64, hard: u64) -> FdLimit {
        FdLimit { soft, hard }
    }

    #[test]
    fn the_default_cap_raises_the_soft_limit_as_far_as_it_needs() {
        let p = plan_descriptors(None, 256, 40, limit(1024, 1 << 20)).expect("plan");
        assert_eq!(p, FdPlan { max_connections: 4096, soft: 4096 + 256 + 40, lowered: false });
        // A soft limit already high enough stays as it is.
        let p = plan_descriptors(None, 256, 40, limit(1 << 16, 1 << 20)).expect("plan");
        assert_eq!(p, FdPlan { max_connections: 4096, soft: 1 << 16, lowered: false });
    }

    #[test]
    fn the_default_cap_is_lowered_to_what_the_hard_limit_allows() {
        let p = plan_descriptors(None, 256, 40, limit(1024, 1024)).expect("plan");
        assert_eq!(p, FdPlan { max_connections: 1024 - 256 - 40, soft: 1024, lowered: true });
        let p = plan_descriptors(None, 256, 40, limit(512, 2048)).expect("plan");
        assert_eq!(p, FdPlan { max_connections: 2048 - 256 - 40, soft: 2048, lowered: true });
        // Not even the minimum fits.
        assert!(plan_descriptors(None, 256, 40, limit(300, 300)).is_err());
    }

    #[test]
    fn an_explicit_cap_is_kept_or_refused_with_the_arithmetic() {
        let p = plan_descriptors(Some(700), 256, 40, limit(1024, 1024)).expect("plan");
        assert_eq!(p, FdPlan { max_connections: 700, soft: 1024, lowered: false });
        let p = plan_descriptors(Some(5000), 256, 40, limit(1024, 8192)).expect("plan");
        assert_eq!(p.soft, 5296);
        let e = plan_descriptors(Some(5000), 256, 40, limit(1024, 4096)).expect_err("too many");
        let text = e.to_string();
        for part in
            ["5000", "256", "40", "5296", "1024", "4096", "LimitNOFILE", "--http-max-connections"]
        {
            assert!(text.contains(part), "{part} missing from: {text}");
        }
        // An unlimited hard limit.
        let p = plan_descriptors(Some(100_000), 256, 40, limit(1024, u64::MAX)).expect("plan");
        assert_eq!(p.soft, 100_296);
    }

    #[test]
    fn clients_are_counted_by_address_and_ipv6_prefix() {
        let v4: IpAddr = "192.0.2.7".parse().expect("ip");
        assert_eq!(client_key(v4), v4);
        assert_eq!(client_key("::ffff:192.0.2.7".parse().expect("ip")), v4);
        assert_eq!(
            client_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().expect("ip")),
            "2001:db8:1:2::".parse::<IpAddr>().expect("ip")
        );
        assert_ne!(
            client_key("2001:db8:1:2::1".parse().expect("ip")),
            client_key("2001:db8:1:3::1".parse().expect("ip"))
        );
    }

    #[tokio::test]
    async fn the_listen_backlog_is_what_was_asked_for() {
        // Completed connections the kernel queues without an accept: backlog + 1 on Linux.
        let queued = |backlog| async move {
            let l = bind("127.0.0.1:0".parse().expect("addr"), backlog).expect("bind");
            let addr = l.local_addr().expect("addr");
            let mut held = Vec::new();
            for _ in 0..16 {
                let c = tokio::time::timeout(
                    Duration::from_millis(300),
                    tokio::net::TcpStream::connect(addr),
                )
                .await;
                match c {
                    Ok(Ok(s)) => held.push(s),
                    _ => break,
                }
            }
            held.len()
        };
        assert!(queued(2).await <= 3);
        assert_eq!(queued(64).await, 16);
    }

    #[tokio::test]
    async fn slots_are_capped_globally_and_per_client_and_freed_on_drop() {
        let a = Admission::new(3, 2);
        let x: IpAddr = "192.0.2.1".parse().expect("ip");
        let y: IpAddr = "192.0.2.2".parse().expect("ip");
        let s1 = a.admit(a.try_slot().expect("slot"), Some(x)).expect("x 1");
        let s2 = a.admit(a.try_slot().expect("slot"), Some(x)).expect("x 2");
        // x is at its cap: refused, and the refused connection's slot is free again.
        assert!(a.admit(a.try_slot().expect("slot"), Some(x)).is_none());
        assert_eq!(a.open(3), 2);
        let s3 = a.admit(a.try_slot().expect("slot"), Some(y)).expect("y 1");
        // Globally full.
        assert!(a.try_slot().is_none());
        drop(s1);
        let s4 = a.admit(a.slot().await, Some(x)).expect("x again after one closed");
        drop((s2, s3, s4));
        assert_eq!(a.open(3), 0);
        assert!(a.clients.lock().expect("lock").is_empty(), "no entry outlives its connections");
    }
}
