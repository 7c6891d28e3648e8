//! The idle timeout of kept-alive connections, at no cost per request beyond two counter updates.
//!
//! Each connection hyper serves has an [`Activity`] counter that changes when one of its requests
//! begins (its head is complete) and when it ends (the answer's body is dropped: written or
//! abandoned), and says how many are in flight. Once a second (with the lent-answer check,
//! `lent::LEND_CHECK`) each worker looks at its connections ([`sweep`]): one whose counter did not
//! move and that had nothing in flight since a look at least the idle timeout ago is closed. A next
//! request head not complete by then, or none started, is cut. So the timeout bounds the idle wait
//! and the next head together; it is applied up to two seconds late, never early.
//!
//! Why not hyper's own `header_read_timeout`: hyper arms a fresh boxed timer for every request
//! head and drops it once the head is parsed, which cost about 1,300 instructions per request
//! (callgrind, 32-byte hex answers over keep-alive: 17,250 → 18,580 per request, +7.7 %). This
//! costs two atomic additions per request and no clock read.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};

use crate::http::lent::Closer;

/// One in flight, in the low half of [`Activity`]'s counter.
const BEGIN: u64 = 1;
/// One ended and none in flight any more, in the high half.
const END: u64 = (1 << 32) - 1;

/// One connection's requests: the low 32 bits count those in flight, the high 32 bits those that
/// ended (wrapping; only a change matters).
#[derive(Debug, Default)]
pub(super) struct Activity(AtomicU64);

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A request of this connection is in flight until the returned guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.0.fetch_add(BEGIN, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Whether any request of this connection has begun.
    pub(super) fn started(&self) -> bool {
        self.load() != 0
    }

    fn load(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Whether a counter value has requests in flight.
fn busy(v: u64) -> bool {
    v & u64::from(u32::MAX) != 0
}

/// A request in flight (see [`Activity::begin`]).
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0 .0.fetch_add(END, Ordering::Relaxed);
    }
}

/// An answer's body that keeps its request in flight until hyper drops it.
#[derive(Debug)]
pub(super) struct Tracked<B> {
    body: B,
    _request: InFlight,
}

impl<B> Tracked<B> {
    pub(super) fn new(body: B, request: InFlight) -> Self {
        Self { body, _request: request }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A watched connection: its activity, the counter value and time of the look since which it has
/// not changed, and the handle that closes it.
struct Watched {
    activity: Arc<Activity>,
    seen: u64,
    since: Instant,
    close: Closer,
}

thread_local! {
    /// This worker's connections served by hyper.
    static CONNECTIONS: RefCell<Vec<Watched>> = const { RefCell::new(Vec::new()) };
}

/// Puts a connection under this worker's idle check.
pub(super) fn watch(activity: &Arc<Activity>, close: &Closer) {
    let w = Watched {
        activity: Arc::clone(activity),
        seen: activity.load(),
        since: Instant::now(),
        close: Arc::clone(close),
    };
    CONNECTIONS.with(|c| c.borrow_mut().push(w));
}

/// Whether a connection whose counter reads `now_seen` at `now` has been idle for `timeout`;
/// updates what `w` saw.
fn idle_for(w: &mut Watched, now_seen: u64, now: Instant, timeout: Duration) -> bool {
    if now_seen != w.seen || busy(now_seen) {
        w.seen = now_seen;
        w.since = now;
        return false;
    }
    now.saturating_duration_since(w.since) >= timeout
}

/// One worker's look at its connections: forgets those that ended, closes those idle for
/// `timeout` (see the module docs). Returns how many it closed.
pub(super) fn sweep(timeout: Duration) -> usize {
    let now = Instant::now();
    let mut closed = 0;
    CONNECTIONS.with(|c| {
        c.borrow_mut().retain_mut(|w| {
            if Arc::strong_count(&w.activity) == 1 {
                return false;
            }
            let seen = w.activity.load();
            if !idle_for(w, seen, now, timeout) {
                return true;
            }
            if let Some(task) = w.close.get() {
                task.abort();
            }
            closed += 1;
            false
        });
    });
    closed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_only_with_nothing_in_flight_and_no_change_for_the_timeout() {
        let a = Activity::new();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Watched {
            activity: Arc::clone(&a),
            seen: a.load(),
            since: t0,
            close: Closer::default(),
        };
        let mut look = |at: Duration| idle_for(&mut w, a.load(), t0 + at, s(10));
        assert!(!look(s(9)));
        assert!(look(s(10)), "idle from the start");
        let request = a.begin();
        assert!(!look(s(20)), "a request began: not idle, and looked at anew");
        assert!(!look(s(100)), "a request in flight is never idle");
        let body = Tracked::new(axum::body::Body::empty(), request);
        assert!(!look(s(200)), "nor while its answer is being written");
        drop(body);
        assert!(!look(s(201)), "it ended: idle from this look on");
        assert!(!look(s(210)));
        assert!(look(s(211)));
        // Requests that begin and end between two looks still count as activity.
        drop(a.begin());
        assert!(!look(s(300)));
        assert!(look(s(310)));
    }
}
