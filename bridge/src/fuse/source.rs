//! What the FUSE file system needs from the entropy dispenser, as a trait.
//!
//! The file system never touches a ring: it asks a [`Source`] for bytes, exactly as the HTTP front
//! end does. The trait keeps the FUSE code testable with an in-memory source (mount, read, fail,
//! unplug) without a driver, and the bridge implements it for its dispenser.

use std::time::{Duration, Instant};

use super::ioctl::CardFacts;

/// Why a source gave no bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Nothing available right now (non-blocking take only).
    #[error("no entropy available now")]
    Empty,
    /// The deadline passed before the request was complete; nothing was consumed.
    #[error("timed out waiting for entropy")]
    Timeout,
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

impl SourceError {
    /// The errno a reader sees: empty → EAGAIN, timeout → EINTR (only reached when the caller was
    /// interrupted), unhealthy or gone → EIO (the architecture's failure table).
    pub fn errno(&self) -> i32 {
        match self {
            SourceError::Empty => libc::EAGAIN,
            SourceError::Timeout => libc::EINTR,
            SourceError::Unhealthy { .. } | SourceError::Gone(_) => libc::EIO,
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

/// A supplier of conditioned random bytes, keyed by device name (the ring file's stem).
///
/// Every byte returned by `try_take` or `take_blocking` is handed to this caller only.
pub trait Source: Send + Sync + 'static {
    /// Takes up to `max` bytes that are available now, without waiting. `Err(Empty)` when none.
    fn try_take(&self, device: &str, max: usize) -> Result<Vec<u8>, SourceError>;

    /// Takes exactly `n` bytes, waiting until `deadline` at most (forever if `None`). On
    /// `Err(Timeout)` nothing was consumed, so the caller may retry.
    fn take_blocking(
        &self,
        device: &str,
        n: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, SourceError>;

    /// Waits up to `timeout` for the device to become readable or to fail; returns the state
    /// then. Returns at once when the state is already `Readable` or `Failed`.
    fn wait_readable(&self, device: &str, timeout: Duration) -> Readiness;

    /// What the IDQ ioctls report for this device; `None` if it is not attached.
    fn card_facts(&self, device: &str) -> Option<CardFacts>;

    /// Number of attached devices (IDQ's `GET_CARD_COUNT`).
    fn device_count(&self) -> usize;
}
