//! An in-memory [`Source`] for tests: each device yields a counting stream (byte `i` of the
//! stream is byte `i % 8` of the little-endian u64 `i / 8`), so a test can tell exactly which
//! bytes it got and that no byte came twice. Tests supply bytes, fail and remove devices at will.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::ioctl::CardFacts;
use super::source::{OnReady, ReadError, Readiness, Source};

#[derive(Debug)]
struct Dev {
    next: u64,
    available: u64,
    failed: bool,
    facts: CardFacts,
}

/// The fake source.
#[derive(Default)]
pub struct FakeSource {
    devs: Mutex<HashMap<String, Dev>>,
    cv: Condvar,
    callbacks: Mutex<HashMap<String, Vec<OnReady>>>,
}

impl std::fmt::Debug for FakeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSource").field("devs", &self.devs).finish_non_exhaustive()
    }
}

/// Byte `i` of the fake devices' stream: the workspace's test pattern.
pub use qrng_ring::pattern::byte as stream_byte;

impl FakeSource {
    /// Runs `f` on the devices, then wakes waiters and runs the wake-ups of every device whose
    /// state is no longer "healthy and empty".
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Dev>) -> R) -> R {
        let r = f(&mut self.devs.lock().unwrap_or_else(PoisonError::into_inner));
        self.cv.notify_all();
        let names: Vec<String> =
            self.callbacks.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        for name in names {
            if self.readiness(&name) != Readiness::Empty {
                let cbs =
                    self.callbacks.lock().unwrap_or_else(PoisonError::into_inner).remove(&name);
                cbs.into_iter().flatten().for_each(|cb| cb());
            }
        }
        r
    }

    /// Attaches a device with `available` bytes ready.
    pub fn add(&self, name: &str, available: u64, facts: CardFacts) {
        self.with(|d| d.insert(name.into(), Dev { next: 0, available, failed: false, facts }));
    }

    /// Makes `n` more bytes available.
    pub fn supply(&self, name: &str, n: u64) {
        self.with(|d| d.get_mut(name).map(|dev| dev.available += n));
    }

    /// Marks the device failed (or healthy again).
    pub fn set_failed(&self, name: &str, failed: bool) {
        self.with(|d| d.get_mut(name).map(|dev| dev.failed = failed));
    }

    /// Detaches the device.
    pub fn remove(&self, name: &str) {
        self.with(|d| d.remove(name));
    }

    /// Bytes handed out so far.
    pub fn consumed(&self, name: &str) -> u64 {
        self.with(|d| d.get(name).map_or(0, |dev| dev.next))
    }
}

fn check_dev<'a>(d: &'a mut HashMap<String, Dev>, name: &str) -> Result<&'a mut Dev, ReadError> {
    let dev = d.get_mut(name).ok_or_else(|| ReadError::Gone(name.into()))?;
    if dev.failed {
        return Err(ReadError::Unhealthy { device: name.into(), reason: "failed".into() });
    }
    Ok(dev)
}

fn take(dev: &mut Dev, n: u64) -> Vec<u8> {
    let out = (dev.next..dev.next + n).map(stream_byte).collect();
    dev.next += n;
    dev.available -= n;
    out
}

impl Source for FakeSource {
    fn try_take_into(&self, device: &str, buf: &mut [u8], min: usize) -> Result<usize, ReadError> {
        let mut d = self.devs.lock().unwrap_or_else(PoisonError::into_inner);
        let dev = check_dev(&mut d, device)?;
        if dev.available == 0 || dev.available < min as u64 {
            return Err(ReadError::Empty);
        }
        let n = dev.available.min(buf.len() as u64);
        let bytes = take(dev, n);
        buf[..bytes.len()].copy_from_slice(&bytes);
        Ok(bytes.len())
    }

    fn take_blocking(
        &self,
        device: &str,
        n: usize,
        check: Duration,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Vec<u8>, ReadError> {
        let mut d = self.devs.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let dev = check_dev(&mut d, device)?;
            if dev.available >= n as u64 {
                return Ok(take(dev, n as u64));
            }
            let (guard, t) = self.cv.wait_timeout(d, check).unwrap_or_else(PoisonError::into_inner);
            d = guard;
            if t.timed_out() && interrupted() {
                return Err(ReadError::Interrupted);
            }
        }
    }

    fn readiness(&self, device: &str) -> Readiness {
        let mut d = self.devs.lock().unwrap_or_else(PoisonError::into_inner);
        match check_dev(&mut d, device) {
            Err(_) => Readiness::Failed,
            Ok(dev) if dev.available > 0 => Readiness::Readable,
            Ok(_) => Readiness::Empty,
        }
    }

    fn on_ready(&self, device: &str, on_ready: OnReady) -> Readiness {
        // Registered under the callbacks lock, so a concurrent change either sees the callback or
        // happened before the readiness check.
        let mut cbs = self.callbacks.lock().unwrap_or_else(PoisonError::into_inner);
        let r = self.readiness(device);
        if r == Readiness::Empty {
            cbs.entry(device.to_owned()).or_default().push(on_ready);
        }
        r
    }

    fn card_facts(&self, device: &str) -> Option<CardFacts> {
        let d = self.devs.lock().unwrap_or_else(PoisonError::into_inner);
        d.get(device).map(|dev| dev.facts.clone())
    }

    fn device_count(&self) -> usize {
        self.devs.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}
