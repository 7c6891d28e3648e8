//! The dispenser's public types: its settings, what a caller gets, why it got nothing, and a
//! device's state as /health, /metrics and the FUSE ioctls see it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use qrng_ring as ring;
use serde::Serialize;

/// Dispenser settings.
#[derive(Debug, Clone)]
pub struct DispenserConfig {
    /// A producer heartbeat older than this marks the device `degraded`.
    pub heartbeat_timeout: Duration,
    /// How often each consumer thread re-reads the status line when idle (also bounds how quickly a
    /// FUSE poll waiter is woken and how quickly FAILED is noticed).
    pub status_interval: Duration,
}

impl Default for DispenserConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(3),
            status_interval: Duration::from_millis(20),
        }
    }
}

/// Bytes handed to one caller.
#[derive(Debug)]
pub struct Entropy {
    pub bytes: Vec<u8>,
    /// The card serial, or "simulated" for a simulated card.
    pub source: String,
    /// The device (ring file stem) the bytes came from.
    pub device: String,
}

/// Bytes lent to one caller in place, still in the ring (see [`super::Dispenser::serve`]).
#[derive(Debug)]
pub struct Lent {
    pub lease: ring::Lease,
    /// The card serial, or "simulated" for a simulated card.
    pub source: String,
    /// The device (ring file stem) the bytes came from.
    pub device: String,
}

/// Bytes served to one caller: copied out of the ring, or lent in place.
#[derive(Debug)]
pub enum Served {
    Copied(Entropy),
    Lent(Lent),
}

impl Served {
    /// The bytes of a request served with [`Delivery::Copy`], which never lends.
    pub(super) fn into_copied(self) -> Entropy {
        match self {
            Served::Copied(e) => e,
            Served::Lent(_) => unreachable!("Delivery::Copy never lends"),
        }
    }
}

/// How a request may be served ([`super::Dispenser::serve`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Copy the bytes out of the ring (always possible).
    Copy,
    /// Lend them in place when that can be done at once and in order (no queued request, no
    /// carried-over bytes, the bytes in one piece, at most half the ring lent out); else copy.
    LendOrCopy,
}

/// Why a request got no bytes.
#[derive(Debug, thiserror::Error)]
pub enum DispenseError {
    #[error("no device named {0:?} is attached")]
    NoSuchDevice(String),
    #[error("no healthy device is attached")]
    NoHealthyDevice,
    #[error("device {device} failed: {reason}")]
    Failed { device: String, reason: String },
    #[error("device {device}: producer heartbeat is stale and no bytes arrived in time")]
    Stale { device: String },
    #[error("device {device} is stopped: {reason}")]
    Stopped { device: String, reason: String },
    #[error("no bytes available right now")]
    Empty,
    #[error("timed out waiting for entropy")]
    Timeout,
    #[error("device {0:?} is already attached")]
    AlreadyAttached(String),
    #[error("device {device} was detached")]
    Detached { device: String },
    #[error("invalid ring path {path}: no file stem to name the device")]
    BadPath { path: PathBuf },
    /// The ring was refused: unreadable file, bad header, or another consumer attached (the ring
    /// error names the path).
    #[error(transparent)]
    Ring(ring::Error),
    /// `--mix` names fewer than two members, a member twice, itself, or another mixed device.
    #[error("invalid mixed device {name:?}: {why}")]
    BadMix { name: String, why: String },
    #[error("failed to start the consumer thread for {device}")]
    Spawn {
        device: String,
        #[source]
        source: std::io::Error,
    },
}

/// Whether a device serves, as the dispenser derives it from the ring's [`ring::Health`] and the
/// producer's heartbeat (the table in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    Starting,
    Ok,
    Degraded,
    Failed,
    Stopped,
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        })
    }
}

/// A snapshot of one device for /health, /api/v1/devices, /metrics and the FUSE ioctls.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    pub name: String,
    pub path: Option<PathBuf>,
    pub health: DeviceState,
    /// Why it is not `ok` ("none" when it is).
    pub reason: String,
    pub source: String,
    pub model: String,
    pub serial: String,
    pub modules: u32,
    /// The card's raw version register (IDQ's GET_BOARD_VERSION); 0 = unknown.
    pub board_version: u32,
    /// Modules/chips present, working or not; 0 = unknown.
    pub modules_present: u32,
    /// `module` or `chip`; null = unknown.
    pub family: Option<ring::CardFamily>,
    /// Chip cards' output mode (`rng`, `sample`); null for module cards or unknown.
    pub chip_mode: Option<ring::ChipMode>,
    pub simulated: bool,
    pub extractor: String,
    pub epoch: u64,
    /// Milliseconds since the producer's last heartbeat (None: never beat).
    pub heartbeat_age_ms: Option<u64>,
    pub heartbeat_stale: bool,
    pub ring_capacity: u64,
    /// Bytes waiting in the ring.
    pub ring_fill: u64,
    pub buffer_fill_ratio: f64,
    /// Bytes the producer published per second (over the last second or so).
    pub publish_rate_bytes_per_second: f64,
    pub raw_bytes_read: u64,
    pub bytes_published: u64,
    pub health_alarms: u64,
    pub bytes_dropped: u64,
    pub bytes_served: u64,
    pub requests_served: u64,
    pub requests_timed_out: u64,
    pub requests_waiting: usize,
}
