//! The consumer thread of one device: re-reads the ring's status line every status interval,
//! serves queued requests as bytes arrive, and wakes FUSE poll waiters. It backs off
//! exponentially while requests wait on an empty ring, and parks between status reads when idle.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::device::{complete, lock, Device};
use super::DispenserConfig;

/// Shortest sleep of a consumer thread while requests are queued on an empty ring.
const MIN_BACKOFF: Duration = Duration::from_micros(50);
/// Longest sleep of a consumer thread while requests are queued on an empty ring: bounds the extra
/// latency a queued request sees after the producer publishes.
const MAX_BACKOFF: Duration = Duration::from_millis(2);
/// Window over which the publish rate is measured.
pub(super) const RATE_WINDOW: Duration = Duration::from_secs(1);

pub(super) fn consumer_loop(dev: Arc<Device>, cfg: DispenserConfig) {
    let mut backoff = MIN_BACKOFF;
    // `attach` read the status just before starting this thread.
    let mut last_status = Instant::now();
    while !dev.stop.load(Ordering::Acquire) {
        let mut done = Vec::new();
        let mut callbacks = Vec::new();
        let busy = {
            let mut st = lock(&dev.state);
            if last_status.elapsed() >= cfg.status_interval {
                st.refresh(&dev, &cfg, &mut done);
                last_status = Instant::now();
            }
            st.dispatch(&dev, &mut done);
            if !st.ready_callbacks.is_empty() {
                let ready = match st.check_servable(&dev.name) {
                    Err(_) => true,
                    Ok(()) if st.broken => true,
                    Ok(()) => st.waiters.is_empty() && st.has_bytes().unwrap_or(true),
                };
                if ready {
                    callbacks = std::mem::take(&mut st.ready_callbacks);
                }
            }
            !st.waiters.is_empty() || !st.ready_callbacks.is_empty()
        };
        let progressed = !done.is_empty() || !callbacks.is_empty();
        complete(done);
        for cb in callbacks {
            cb();
        }
        if busy {
            if progressed {
                backoff = MIN_BACKOFF;
            } else {
                thread::park_timeout(backoff.min(cfg.status_interval));
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        } else {
            backoff = MIN_BACKOFF;
            thread::park_timeout(cfg.status_interval);
        }
    }
}
