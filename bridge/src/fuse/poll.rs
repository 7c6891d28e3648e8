//! `poll()` support: when a file is not readable and the kernel asks to be told
//! (`FUSE_POLL_SCHEDULE_NOTIFY`), register one wake-up with the source per kernel poll handle and
//! send the kernel a poll notification when it fires; the kernel then polls again.
//!
//! A program that polls an empty device in a loop sends the same handle many times; keeping one
//! registration per handle bounds what an idle device holds.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use fuser::PollNotifier;

use super::source::{Readiness, Source};

/// Kernel poll handles with a wake-up registered.
#[derive(Debug, Default, Clone)]
pub struct Pollers(Arc<Mutex<HashSet<u64>>>);

impl Pollers {
    fn forget(&self, kh: u64) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&kh);
    }

    /// The device's readiness; when `Empty`, `ph` is notified once it changes.
    pub fn poll(&self, source: &dyn Source, device: &str, ph: PollNotifier) -> Readiness {
        let kh = ph.handle().0;
        let fresh = self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(kh);
        if !fresh {
            // A wake-up for this handle is already pending.
            return source.readiness(device);
        }
        let me = self.clone();
        let r = source.on_ready(
            device,
            Box::new(move || {
                me.forget(kh);
                // ENOENT: the file was closed meanwhile; nothing to wake.
                if let Err(e) = ph.notify() {
                    tracing::debug!(error = %e, "poll notification not delivered");
                }
            }),
        );
        if r != Readiness::Empty {
            // Not registered (the callback was dropped): the handle is free again.
            self.forget(kh);
        }
        r
    }
}
