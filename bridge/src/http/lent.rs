//! Large binary answers lent straight from the ring, and the watchdog that keeps slow readers of
//! lent answers from holding the ring's space.
//!
//! A lent answer's body is a `qrng_ring::Lease`: the bytes stay in the ring until hyper has
//! written them and drops the body. Each HTTP worker watches the lent answers of its connections
//! ([`watch`], [`check`]) and closes a connection that does not take its answer while the ring is
//! short of space.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;

use super::random::labelled;
use super::AppState;
use crate::dispenser::{Dispenser, Lent};

/// Binary answers from this size on are sent straight from the ring (lent, not copied) when the
/// dispenser can lend them. Below it the copy is small and a lease's bookkeeping (a watch entry,
/// two more allocations) is not worth it; the value is a round figure, not a tuned one.
pub const LEND_MIN: usize = 16 << 10;

/// A lent range as an HTTP body: the bytes stay in the ring until hyper has written them and
/// drops the body; `done` tells the connection's watchdog ([`watch`]).
struct LentBody {
    lease: qrng_ring::Lease,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AsRef<[u8]> for LentBody {
    fn as_ref(&self) -> &[u8] {
        self.lease.as_ref()
    }
}

impl Drop for LentBody {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// A binary answer sent straight from the ring: the bytes stay lent until hyper has written them
/// and drops the body, and the connection's watchdog ([`watch`]) closes a
/// client too slow to take them while the ring is under pressure.
pub(super) fn answer(s: &AppState, lent: Lent) -> Response {
    let Lent { lease, source, device } = lent;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body = Body::from(bytes::Bytes::from_owner(LentBody { lease, done: done.clone() }));
    let resp = labelled(&source, &device, "application/octet-stream", Response::new(body));
    watch(s.dispenser(), device, done);
    resp
}

/// How often a lent response's watchdog looks at it (see [`watch`]).
pub const LEND_CHECK: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// The current connection's own task, for [`watch`] to abort.
    static CLOSE: Closer;
}

/// A connection task's abort handle, set right after it is spawned. Aborting drops the connection
/// (and with it any response body it holds) at once.
pub(crate) type Closer = Arc<std::sync::OnceLock<tokio::task::AbortHandle>>;

/// A lent response being watched (see [`watch`]).
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
pub fn watch(dispenser: &Dispenser, device: String, done: Arc<AtomicBool>) {
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

/// One worker's periodic look at its lent responses (see [`watch`]).
pub(crate) fn check() {
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

tokio::task_local! {
    /// Set while a request of a connection whose answers are never lent (HTTPS, HTTP/2) runs.
    static COPY_ONLY: ();
}

/// Whether the current request's answer may be lent: not on connections that must copy
/// ([`copy_only`]).
pub(crate) fn may_lend() -> bool {
    COPY_ONLY.try_with(|()| ()).is_err()
}

/// Runs a request's future so that its answer is copied, never lent: TLS encrypts into its own
/// buffer, so lending would only hold the ring's space longer, and an HTTP/2 stream runs outside
/// the connection task the watchdog ([`watch`]) could close.
pub(crate) async fn copy_only<F: std::future::Future>(f: F) -> F::Output {
    COPY_ONLY.scope((), f).await
}

/// Runs a connection's future with its abort handle in scope, so [`watch`] can find it.
pub(crate) async fn scope<F: std::future::Future>(closer: Closer, f: F) -> F::Output {
    CLOSE.scope(closer, f).await
}
