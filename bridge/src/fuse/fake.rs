//! An in-memory [`Source`] for tests: each device yields a counting stream (byte `i` of the
//! stream is byte `i % 8` of the little-endian u64 `i / 8`), so a test can tell exactly which
//! bytes it got and that no byte came twice. Tests supply bytes, fail and remove devices at will.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::ioctl::CardFacts;
use super::source::{Readiness, Source, SourceError};

#[derive(Debug)]
struct Dev {
    next: u64,
    available: u64,
    failed: bool,
    facts: CardFacts,
}

/// The fake source.
#[derive(Debug, Default)]
pub struct FakeSource {
    devs: Mutex<HashMap<String, Dev>>,
    cv: Condvar,
}

/// Byte `i` of the counting stream.
pub fn stream_byte(i: u64) -> u8 {
    (i / 8).to_le_bytes()[(i % 8) as usize]
}

impl FakeSource {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Dev>) -> R) -> R {
        let r = f(&mut self.devs.lock().unwrap_or_else(PoisonError::into_inner));
        self.cv.notify_all();
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

fn check<'a>(d: &'a mut HashMap<String, Dev>, name: &str) -> Result<&'a mut Dev, SourceError> {
    let dev = d.get_mut(name).ok_or_else(|| SourceError::Gone(name.into()))?;
    if dev.failed {
        return Err(SourceError::Unhealthy { device: name.into(), reason: "failed".into() });
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
    fn try_take(&self, device: &str, max: usize) -> Result<Vec<u8>, SourceError> {
        let mut d = self.devs.lock().unwrap_or_else(PoisonError::into_inner);
        let dev = check(&mut d, device)?;
        if dev.available == 0 {
            return Err(SourceError::Empty);
        }
        let n = dev.available.min(max as u64);
        Ok(take(dev, n))
    }

    fn take_blocking(
        &self,
        device: &str,
        n: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, SourceError> {
        let mut d = self.devs.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let dev = check(&mut d, device)?;
            if dev.available >= n as u64 {
                return Ok(take(dev, n as u64));
            }
            let wait = match deadline {
                Some(t) => t.checked_duration_since(Instant::now()).ok_or(SourceError::Timeout)?,
                None => Duration::from_secs(3600),
            };
            d = self.cv.wait_timeout(d, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn wait_readable(&self, device: &str, timeout: Duration) -> Readiness {
        let end = Instant::now() + timeout;
        let mut d = self.devs.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match check(&mut d, device) {
                Err(_) => return Readiness::Failed,
                Ok(dev) if dev.available > 0 => return Readiness::Readable,
                Ok(_) => {}
            }
            let Some(wait) = end.checked_duration_since(Instant::now()).filter(|w| !w.is_zero())
            else {
                return Readiness::Empty;
            };
            d = self.cv.wait_timeout(d, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn card_facts(&self, device: &str) -> Option<CardFacts> {
        self.with(|d| d.get(device).map(|dev| dev.facts.clone()))
    }

    fn device_count(&self) -> usize {
        self.with(|d| d.len())
    }
}
