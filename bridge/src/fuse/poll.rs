//! `poll()` support: remember the kernel's poll handles of files that were not readable and
//! notify the kernel when their device becomes readable or fails.
//!
//! FUSE poll is edge-style: the file system answers the current readiness and, when asked to
//! (`FUSE_POLL_SCHEDULE_NOTIFY`), later sends a poll notification for that handle; the kernel then
//! polls again. One watcher thread waits on the source for the devices that have waiting pollers.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use fuser::PollNotifier;

use super::source::{Readiness, Source};

/// How long the watcher waits on one device before looking at the others and at new handles.
const SLICE: Duration = Duration::from_millis(50);

#[derive(Default)]
struct State {
    /// Device name → waiting poll handles (deduplicated by handle value).
    waiting: HashMap<String, Vec<PollNotifier>>,
    shutdown: bool,
}

struct Inner {
    state: Mutex<State>,
    cv: Condvar,
}

/// The registry of waiting pollers and its watcher thread.
#[derive(Clone)]
pub struct Pollers(Arc<Inner>);

impl std::fmt::Debug for Pollers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: usize = self.lock().waiting.values().map(Vec::len).sum();
        f.debug_struct("Pollers").field("waiting", &n).finish()
    }
}

impl Pollers {
    /// Starts the watcher thread over `source`.
    pub fn start(source: Arc<dyn Source>) -> std::io::Result<Pollers> {
        let p =
            Pollers(Arc::new(Inner { state: Mutex::new(State::default()), cv: Condvar::new() }));
        let inner = Arc::clone(&p.0);
        std::thread::Builder::new()
            .name("qrng-fuse-poll".into())
            .spawn(move || watch(&inner, source.as_ref()))?;
        Ok(p)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers a poll handle of a file on `device` that was not readable.
    pub fn register(&self, device: &str, ph: PollNotifier) {
        let mut s = self.lock();
        let list = s.waiting.entry(device.to_owned()).or_default();
        if !list.iter().any(|p| p.handle().0 == ph.handle().0) {
            list.push(ph);
        }
        drop(s);
        self.0.cv.notify_all();
    }

    /// Wakes every poller of `device` (it was removed: their next poll reports an error).
    pub fn wake_all(&self, device: &str) {
        let list = self.lock().waiting.remove(device).unwrap_or_default();
        notify(list);
    }

    /// Stops the watcher thread.
    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.0.cv.notify_all();
    }
}

fn notify(list: Vec<PollNotifier>) {
    for ph in list {
        // ENOENT: the file was closed meanwhile; nothing to wake.
        if let Err(e) = ph.notify() {
            tracing::debug!(error = %e, "poll notification not delivered");
        }
    }
}

fn watch(inner: &Inner, source: &dyn Source) {
    loop {
        let devices: Vec<String> = {
            let mut s = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            while s.waiting.is_empty() && !s.shutdown {
                s = inner.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
            if s.shutdown {
                return;
            }
            s.waiting.keys().cloned().collect()
        };
        let slice = SLICE / u32::try_from(devices.len()).unwrap_or(u32::MAX).max(1);
        for device in devices {
            if source.wait_readable(&device, slice) != Readiness::Empty {
                let list = inner
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .waiting
                    .remove(&device)
                    .unwrap_or_default();
                notify(list);
            }
        }
    }
}
