//! What the FUSE file system needs from the entropy dispenser, as a trait.
//!
//! The file system never touches a ring: it asks a [`Source`] for bytes, exactly as the HTTP front
//! end does. The trait keeps the FUSE code testable with an in-memory source (mount, read, fail,
//! unplug) without a driver, and the bridge implements it for its dispenser.

use std::time::Duration;

use super::ioctl::CardFacts;

/// Why a source gave no bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Nothing available right now (non-blocking take only).
    #[error("no entropy available now")]
    Empty,
    /// The caller was interrupted (a signal) before the request was complete.
    #[error("interrupted while waiting for entropy")]
    Interrupted,
    /// The card failed its health tests or its producer stopped: serves nothing.
    #[error("device {device} serves nothing: {reason}")]
    Unhealthy {
        /// Device name.
        device: String,
        /// Human-readable reason (health state and reason code).
        reason: String,
    },
    /// The device is not (or no longer) attached.
    #[error("no such device {0}")]
    Gone(String),
}

impl ReadError {
    /// The errno a reader sees: empty → EAGAIN, interrupted → EINTR, unhealthy or gone → EIO
    /// (the architecture's failure table).
    pub fn errno(&self) -> i32 {
        match self {
            ReadError::Empty => libc::EAGAIN,
            ReadError::Interrupted => libc::EINTR,
            ReadError::Unhealthy { .. } | ReadError::Gone(_) => libc::EIO,
        }
    }
}

/// Whether a read would return data now; what `poll` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// At least one byte can be taken now.
    Readable,
    /// Healthy but empty.
    Empty,
    /// A read would fail with EIO (health failure, producer stopped, device gone).
    Failed,
}

/// A callback run once when a device becomes readable or fails.
pub type OnReady = Box<dyn FnOnce() + Send + 'static>;

/// A supplier of conditioned random bytes, keyed by device name (the ring file's stem).
///
/// Every byte returned by `try_take` or `take_blocking` is handed to this caller only.
pub trait Source: Send + Sync + 'static {
    /// Takes up to `buf.len()` bytes that are ready now into `buf`, without waiting, and nothing
    /// unless at least `min` (≥ 1) are ready; returns how many were written. `Err(Empty)` when
    /// fewer than `min` are ready or earlier callers are queued.
    fn try_take_into(&self, device: &str, buf: &mut [u8], min: usize) -> Result<usize, ReadError>;

    /// Takes exactly `n` bytes, waiting as long as it takes, in arrival order with other callers.
    /// `interrupted` is asked every `check`; once it says true the request is withdrawn with
    /// `Err(Interrupted)` (bytes it had gathered are kept for the next caller, never lost twice).
    fn take_blocking(
        &self,
        device: &str,
        n: usize,
        check: Duration,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Vec<u8>, ReadError>;

    /// The device's readiness now.
    fn readiness(&self, device: &str) -> Readiness;

    /// Like [`Source::readiness`], but when the answer is `Empty`, `on_ready` is kept and run once
    /// when the device becomes readable, fails or goes away (otherwise it is dropped unrun).
    fn on_ready(&self, device: &str, on_ready: OnReady) -> Readiness;

    /// What the IDQ ioctls report for this device; `None` if it is not attached.
    fn card_facts(&self, device: &str) -> Option<CardFacts>;

    /// Number of attached devices (IDQ's `GET_CARD_COUNT`).
    fn device_count(&self) -> usize;
}

/// The bridge's dispenser serves the files: FUSE readers queue in the same FIFO as HTTP clients.
impl Source for crate::dispenser::Dispenser {
    fn try_take_into(&self, device: &str, buf: &mut [u8], min: usize) -> Result<usize, ReadError> {
        crate::dispenser::Dispenser::try_take_into(self, device, buf, min).map_err(from_dispense)
    }

    fn take_blocking(
        &self,
        device: &str,
        n: usize,
        check: Duration,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Vec<u8>, ReadError> {
        self.take_blocking_interruptible(device, n, check, interrupted)
            .map(|e| e.bytes)
            .map_err(from_dispense)
    }

    fn readiness(&self, device: &str) -> Readiness {
        readiness(self.readable(device))
    }

    fn on_ready(&self, device: &str, on_ready: OnReady) -> Readiness {
        readiness(self.wait_readable(device, on_ready))
    }

    fn card_facts(&self, device: &str) -> Option<CardFacts> {
        use crate::dispenser::DeviceState;
        let d = self.device(device)?;
        // IDQ's "modules status" are the modules that work; a card that failed, stopped or has not
        // passed its start-up tests yet has none.
        let working = matches!(d.health, DeviceState::Ok | DeviceState::Degraded);
        Some(CardFacts {
            // IDQ: the modules present (HEN); a producer that does not publish them (0) gives
            // the working ones, the best it knows.
            modules_mask: if d.modules_present != 0 { d.modules_present } else { d.modules },
            modules_status: if working { d.modules } else { 0 },
            board_version: d.board_version,
            // "simulated" for the simulator (the card's own serial otherwise).
            serial: d.source,
            family: d.family,
            chip_mode: d.chip_mode,
        })
    }

    fn device_count(&self) -> usize {
        self.device_names().len()
    }
}

fn readiness(r: Result<bool, crate::dispenser::DispenseError>) -> Readiness {
    match r {
        Ok(true) => Readiness::Readable,
        Ok(false) => Readiness::Empty,
        Err(_) => Readiness::Failed,
    }
}

fn from_dispense(e: crate::dispenser::DispenseError) -> ReadError {
    use crate::dispenser::DispenseError as D;
    match e {
        D::Empty => ReadError::Empty,
        // Only reached once the caller was interrupted (the FUSE take has no deadline).
        D::Timeout | D::Stale { .. } => ReadError::Interrupted,
        D::NoSuchDevice(device) | D::Detached { device } => ReadError::Gone(device),
        D::Failed { device, reason } | D::Stopped { device, reason } => {
            ReadError::Unhealthy { device, reason }
        }
        other => ReadError::Unhealthy { device: String::new(), reason: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispenser::memory::MemoryRing;
    use crate::dispenser::{Dispenser, DispenserConfig};

    fn dispenser(ring: &MemoryRing) -> Dispenser {
        let d = Dispenser::new(DispenserConfig {
            heartbeat_timeout: Duration::from_secs(3600),
            status_interval: Duration::from_millis(2),
        });
        d.attach_source("qrng0", None, ring.source()).expect("attach");
        d
    }

    /// Waits (bounded: a hang, not a timing assertion) until the dispenser has read `pred`.
    fn facts_when(d: &Dispenser, pred: impl Fn(&CardFacts) -> bool) -> CardFacts {
        let guard = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(f) = d.card_facts("qrng0").filter(|f| pred(f)) {
                return f;
            }
            assert!(std::time::Instant::now() < guard, "facts never matched");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn facts_give_modules_present_as_the_mask_and_working_ones_as_the_status() {
        let ring = MemoryRing::new("2024SIM240M", true, 4096);
        ring.edit_status(|s| {
            s.identity.modules_present = 0b1111;
            s.identity.modules = 0b0101;
            s.identity.family = Some(qrng_ring::CardFamily::Chip);
            s.identity.chip_mode = Some(qrng_ring::ChipMode::Sample);
        });
        let d = dispenser(&ring);
        let f = facts_when(&d, |f| f.modules_status != 0);
        assert_eq!((f.modules_mask, f.modules_status), (0b1111, 0b0101));
        assert_eq!(f.serial, "simulated", "GET_SERIAL of a simulated card says so");
        assert_eq!(f.family, Some(qrng_ring::CardFamily::Chip));
        assert_eq!(f.chip_mode, Some(qrng_ring::ChipMode::Sample));
        ring.set_health(qrng_ring::Health::Failed, qrng_ring::Reason::NoData);
        let f = facts_when(&d, |f| f.modules_status == 0);
        assert_eq!(f.modules_mask, 0b1111, "a failed card still has its modules present");
        // A producer that does not publish modules_present: the mask falls back to the working.
        ring.edit_status(|s| s.identity.modules_present = 0);
        ring.set_health(qrng_ring::Health::Ok, qrng_ring::Reason::None);
        let f = facts_when(&d, |f| f.modules_status != 0);
        assert_eq!(f.modules_mask, 0b0101);
        d.shutdown();
    }
}
