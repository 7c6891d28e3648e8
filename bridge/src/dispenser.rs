//! The entropy dispenser: the only thing in the bridge that reads rings.
//!
//! One consumer thread per attached ring watches the ring's status line and serves queued requests;
//! front ends (HTTP, FUSE) only ever call [`Dispenser`]. Guarantees:
//!
//! - **Exactly once.** Every byte read from a ring goes to exactly one caller or is dropped; it is never
//!   handed out twice. Bytes are copied out of the ring straight into the caller's buffer (one copy),
//!   under the device's lock, so there is no read-ahead buffer: the only bytes ever held in process
//!   memory without belonging to a caller are the *carry* (bytes already copied into a request that
//!   then timed out or was cancelled; they are served first to the next request). If the bridge crashes,
//!   at most the carry plus the partial fills of queued requests are lost (never served twice); that is
//!   bounded by the largest request size. The ring's head is only advanced by the read, so a restarted
//!   bridge resumes where this one stopped.
//! - **FIFO.** Requests on one device are served in arrival order. A request that cannot be served at
//!   once joins the device's queue; bytes always go to the head of the queue first, so a later small
//!   request never overtakes an earlier large one. [`Dispenser::try_take`] (O_NONBLOCK) does not jump
//!   the queue either: with requests queued it reports [`DispenseError::Empty`].
//! - **Bounded waiting.** [`Dispenser::take`] waits at most `wait`, then fails with
//!   [`DispenseError::Timeout`] (or [`DispenseError::Stale`] if the producer's heartbeat is stale).
//!
//! Device states ([`DeviceHealth`], derived from the ring's status line and heartbeat):
//!
//! | ring status | heartbeat | state | serves |
//! |---|---|---|---|
//! | OK | fresh | `ok` | yes |
//! | OK or STARTING | stale (driver died) | `degraded` | what is already in the ring (it passed the health tests); then waits |
//! | STARTING | fresh | `starting` | what is already in the ring (published by the previous run, tested) |
//! | FAILED | any | `failed` | nothing: callers get [`DispenseError::Failed`] at once, queued requests fail |
//! | STOPPED | any | `stopped` | nothing: [`DispenseError::Stopped`] |
//! | (ring unreadable) | — | `failed` | nothing; the ring must be re-attached |
//!
//! Bytes left in the ring while it is FAILED are *not* discarded: the driver stops publishing the
//! moment a health test fails (SP 800-90B §4.3), so what was published before passed the tests; they
//! are served once the ring returns to OK.
//!
//! With `device = None` the dispenser picks a servable device, preferring `ok` over `degraded` and
//! `starting`, then the one with the shortest queue and the most bytes ready.
//!
//! API for front ends (HTTP here, FUSE in `fuse/`):
//!
//! | call | use | errors worth mapping |
//! |---|---|---|
//! | [`Dispenser::attach`] / [`Dispenser::detach`] | start / hot-plug | `Ring` (refused header), `AlreadyAttached` |
//! | [`Dispenser::take`] (async, bounded wait) | HTTP | `Timeout`/`Stale` → 503, `Failed`/`Stopped` → 503 |
//! | [`Dispenser::take_blocking`] (deadline or none) | FUSE read | `Failed`/`Stopped`/`Detached` → EIO |
//! | [`Dispenser::try_take`] (what is ready, ≤ max) | FUSE O_NONBLOCK read | `Empty` → EAGAIN |
//! | [`Dispenser::try_take_exact`] (all n or nothing) | FUSE blocking read, before handing off | `Empty` → use `take_blocking` |
//! | [`Dispenser::wait_readable`] (callback once) | FUSE poll | `Err` → POLLERR/EIO |
//! | [`Dispenser::devices`], [`Dispenser::device`], [`Dispenser::health`] | /health, ioctls | |
//!
//! Sources: [`Dispenser::attach`] opens a ring file (`qrng_ring::Consumer`);
//! [`Dispenser::attach_source`] takes any [`RingSource`] (tests and benchmarks use in-memory ones).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use qrng_ring as ring;

use serde::Serialize;
use tokio::sync::oneshot;

/// Shortest sleep of a consumer thread while requests are queued on an empty ring.
const MIN_BACKOFF: Duration = Duration::from_micros(50);
/// Longest sleep of a consumer thread while requests are queued on an empty ring: bounds the extra
/// latency a queued request sees after the producer publishes.
const MAX_BACKOFF: Duration = Duration::from_millis(2);
/// Window over which the publish rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Health as published by the producer on the ring's status line (mirror of `ring::Health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceHealth {
    Starting,
    Ok,
    Failed,
    Stopped,
}

/// What the dispenser needs from a ring's status line (mirror of `ring::StatusSnapshot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStatus {
    pub epoch: u64,
    /// Time since the producer's last heartbeat (None: it never beat). The ring measures it on
    /// CLOCK_BOOTTIME, which every process shares and which never jumps.
    pub heartbeat_age: Option<Duration>,
    pub health: SourceHealth,
    /// Lower-case reason (`ring::Reason`'s Display), "none" when healthy.
    pub reason: String,
    pub model: String,
    pub serial: String,
    pub modules: u32,
    /// The card's raw version register (IDQ's GET_BOARD_VERSION); 0 = unknown.
    pub board_version: u32,
    /// Modules/chips present, working or not (IDQ's GET_MODULES_MASK); 0 = unknown.
    pub modules_present: u32,
    /// Module or chip card; `None` = unknown.
    pub family: Option<ring::CardFamily>,
    /// Chip cards' output mode; `None` for module cards or unknown.
    pub chip_mode: Option<ring::ChipMode>,
    pub simulated: bool,
    pub extractor: String,
    pub raw_bytes_read: u64,
    pub bytes_published: u64,
    pub health_alarms: u64,
    pub bytes_dropped: u64,
    pub capacity: u64,
    pub head: u64,
    pub tail: u64,
}

/// An error reading a source; the device turns `failed` with this as its reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// A single-consumer byte source with a status line: a ring, or an in-memory fake in tests.
pub trait RingSource: Send + 'static {
    /// Bytes that can be read now.
    fn available(&mut self) -> Result<usize, SourceError>;
    /// Copies up to `buf.len()` available bytes into `buf`; they are consumed.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError>;
    /// A validated copy of the status line.
    fn status(&mut self) -> Result<SourceStatus, SourceError>;
    /// Appends up to `max` available bytes to `out`; they are consumed. Returns how many.
    /// Sources that can copy into uninitialised capacity (the ring) override this to skip the
    /// zero-fill of the default.
    fn read_append(&mut self, out: &mut Vec<u8>, max: usize) -> Result<usize, SourceError> {
        let old = out.len();
        out.resize(old + max, 0);
        let got = self.read(&mut out[old..]);
        let n = got.as_ref().map_or(0, |n| (*n).min(max));
        out.truncate(old + n);
        got.map(|_| n)
    }
    /// Lends exactly `n` bytes in place (see `ring::Consumer::lend`), keeping at most
    /// `max_pinned` bytes lent out; `Ok(None)` when it cannot, and nothing changed (the caller
    /// copies instead). Only the ring lends; other sources never do.
    fn lend(&mut self, _n: usize, _max_pinned: u64) -> Result<Option<ring::Lease>, SourceError> {
        Ok(None)
    }
    /// Bytes handed out but whose ring space is not free yet (lent, or copied after a lease
    /// still out).
    fn pinned(&self) -> u64 {
        0
    }
}

fn ring_err(e: ring::Error) -> SourceError {
    SourceError(e.to_string())
}

/// The real source: a quantis-driver ring.
impl RingSource for ring::Consumer {
    fn available(&mut self) -> Result<usize, SourceError> {
        ring::Consumer::available(self).map_err(ring_err)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        ring::Consumer::read(self, buf).map_err(ring_err)
    }

    fn read_append(&mut self, out: &mut Vec<u8>, max: usize) -> Result<usize, SourceError> {
        ring::Consumer::read_append(self, out, max).map_err(ring_err)
    }

    fn lend(&mut self, n: usize, max_pinned: u64) -> Result<Option<ring::Lease>, SourceError> {
        ring::Consumer::lend(self, n, max_pinned).map_err(ring_err)
    }

    fn pinned(&self) -> u64 {
        ring::Consumer::pinned(self)
    }

    fn status(&mut self) -> Result<SourceStatus, SourceError> {
        let s = ring::Consumer::status(self).map_err(ring_err)?;
        Ok(SourceStatus {
            epoch: s.epoch,
            heartbeat_age: s.heartbeat_age(),
            health: match s.health {
                ring::Health::Starting => SourceHealth::Starting,
                ring::Health::Ok => SourceHealth::Ok,
                ring::Health::Failed => SourceHealth::Failed,
                ring::Health::Stopped => SourceHealth::Stopped,
            },
            reason: s.reason.code().to_owned(),
            model: s.identity.model,
            serial: s.identity.serial,
            modules: s.identity.modules,
            board_version: s.identity.board_version,
            modules_present: s.identity.modules_present,
            family: s.identity.family,
            chip_mode: s.identity.chip_mode,
            simulated: s.identity.simulated,
            extractor: s.identity.extractor,
            raw_bytes_read: s.raw_bytes_read,
            bytes_published: s.bytes_published,
            health_alarms: s.health_alarms,
            bytes_dropped: s.bytes_dropped,
            capacity: s.capacity,
            head: s.head,
            tail: s.tail,
        })
    }
}

/// Dispenser settings.
#[derive(Debug, Clone)]
pub struct DispenserConfig {
    /// A producer heartbeat older than this marks the device `degraded`.
    pub heartbeat_timeout: Duration,
    /// How often each consumer thread re-reads the status line when idle (also bounds how quickly a
    /// FUSE poll waiter is woken and how quickly FAILED is noticed).
    pub status_interval: Duration,
    /// Largest single request (bounds the memory one request can pin).
    pub max_request: usize,
}

impl Default for DispenserConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(3),
            status_interval: Duration::from_millis(20),
            max_request: 16 << 20,
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

/// Bytes lent to one caller in place, still in the ring (see [`Dispenser::try_lend`]).
#[derive(Debug)]
pub struct Lent {
    pub lease: ring::Lease,
    /// The card serial, or "simulated" for a simulated card.
    pub source: String,
    /// The device (ring file stem) the bytes came from.
    pub device: String,
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
    #[error("request for {requested} bytes exceeds the limit of {limit}")]
    TooLarge { requested: usize, limit: usize },
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
    #[error("failed to start the consumer thread for {device}")]
    Spawn {
        device: String,
        #[source]
        source: std::io::Error,
    },
}

/// A device's state as the dispenser sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceHealth {
    Starting,
    Ok,
    Degraded,
    Failed,
    Stopped,
}

impl fmt::Display for DeviceHealth {
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
    pub health: DeviceHealth,
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

type Outcome = Result<Vec<u8>, DispenseError>;

enum Completion {
    Async(oneshot::Sender<Outcome>),
    Blocking(mpsc::SyncSender<Outcome>),
}

impl Completion {
    fn send(self, outcome: Outcome) {
        // A receiver that went away dropped its request: the bytes are discarded, never re-served.
        match self {
            Self::Async(tx) => drop(tx.send(outcome)),
            Self::Blocking(tx) => drop(tx.try_send(outcome)),
        }
    }
}

struct Waiter {
    ticket: u64,
    need: usize,
    got: Vec<u8>,
    done: Completion,
}

type ReadyCallback = Box<dyn FnOnce() + Send>;

struct DevState {
    source: Box<dyn RingSource>,
    status: Option<SourceStatus>,
    /// When `status` was read.
    status_read: Instant,
    health: DeviceHealth,
    reason: String,
    /// The producer's heartbeat is older than the limit (or it never beat).
    stale: bool,
    /// Set when the source itself errored: the device stays failed until re-attached.
    broken: bool,
    carry: VecDeque<u8>,
    waiters: VecDeque<Waiter>,
    ready_callbacks: Vec<ReadyCallback>,
    rate_mark: Option<(Instant, u64)>,
    rate: f64,
    consumer: Option<Thread>,
}

struct Device {
    name: String,
    path: Option<PathBuf>,
    state: Mutex<DevState>,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    bytes_served: AtomicU64,
    requests_served: AtomicU64,
    requests_timed_out: AtomicU64,
}

struct Inner {
    cfg: DispenserConfig,
    devices: RwLock<BTreeMap<String, Arc<Device>>>,
    next_ticket: AtomicU64,
    /// Bytes served by devices that have since been detached (keeps totals monotonic).
    detached_served: AtomicU64,
}

impl Inner {
    fn read_devices(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Device>>> {
        self.devices.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_devices(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Device>>> {
        self.devices.write().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot(&self) -> Vec<Arc<Device>> {
        self.read_devices().values().cloned().collect()
    }
}

/// The process-wide dispenser; cheap to clone.
#[derive(Clone)]
pub struct Dispenser(Arc<Inner>);

impl fmt::Debug for Dispenser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispenser").field("devices", &self.device_names()).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data here (every mutation is a complete step).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many bytes may be lent out and unreleased at once: half the ring, so readers that are slow
/// to send cannot take the producer's space ([`Dispenser::try_lend`], [`Dispenser::lend_pressure`]).
fn lend_limit(status: &SourceStatus) -> u64 {
    status.capacity / 2
}

fn source_label(status: Option<&SourceStatus>) -> String {
    match status {
        Some(s) if s.simulated => "simulated".to_owned(),
        Some(s) if !s.serial.is_empty() => s.serial.clone(),
        _ => "unknown".to_owned(),
    }
}

impl DevState {
    fn new(source: Box<dyn RingSource>) -> Self {
        Self {
            source,
            status: None,
            status_read: Instant::now(),
            health: DeviceHealth::Starting,
            reason: "no status read yet".to_owned(),
            stale: false,
            broken: false,
            carry: VecDeque::new(),
            waiters: VecDeque::new(),
            ready_callbacks: Vec::new(),
            rate_mark: None,
            rate: 0.0,
            consumer: None,
        }
    }

    /// Err if this device must not serve now.
    fn check_servable(&self, name: &str) -> Result<(), DispenseError> {
        match self.health {
            DeviceHealth::Failed => {
                Err(DispenseError::Failed { device: name.to_owned(), reason: self.reason.clone() })
            }
            DeviceHealth::Stopped => {
                Err(DispenseError::Stopped { device: name.to_owned(), reason: self.reason.clone() })
            }
            DeviceHealth::Ok | DeviceHealth::Degraded | DeviceHealth::Starting => Ok(()),
        }
    }

    fn mark_broken(
        &mut self,
        err: &SourceError,
        name: &str,
        done: &mut Vec<(Completion, Outcome)>,
    ) {
        tracing::error!(device = name, error = %err, "ring unreadable; device marked failed");
        self.broken = true;
        self.health = DeviceHealth::Failed;
        self.reason = format!("ring unreadable: {err}");
        self.fail_waiters(name, done);
    }

    fn fail_waiters(&mut self, name: &str, done: &mut Vec<(Completion, Outcome)>) {
        for w in self.waiters.drain(..) {
            let err = match self.health {
                DeviceHealth::Stopped => {
                    DispenseError::Stopped { device: name.to_owned(), reason: self.reason.clone() }
                }
                _ => DispenseError::Failed { device: name.to_owned(), reason: self.reason.clone() },
            };
            done.push((w.done, Err(err)));
        }
    }

    /// Appends up to `need - out.len()` bytes to `out`: the carry first, then the ring.
    fn fill(&mut self, out: &mut Vec<u8>, need: usize) -> Result<(), SourceError> {
        let want = need.saturating_sub(out.len()).min(self.carry.len());
        if want > 0 {
            let (a, b) = self.carry.as_slices();
            let from_a = want.min(a.len());
            out.extend_from_slice(&a[..from_a]);
            out.extend_from_slice(&b[..want - from_a]);
            self.carry.drain(..want);
        }
        let want = need.saturating_sub(out.len());
        if want == 0 {
            return Ok(());
        }
        let avail = self.source.available()?.min(want);
        if avail > 0 {
            self.source.read_append(out, avail)?;
        }
        Ok(())
    }

    /// Like [`Self::fill`], into a caller's slice (no allocation, no zeroing); returns the bytes
    /// written. On a ring error the carry bytes it had copied are put back (the carry was empty after
    /// them, so the order is kept).
    fn fill_slice(&mut self, out: &mut [u8]) -> Result<usize, SourceError> {
        let from_carry = out.len().min(self.carry.len());
        for (d, s) in out.iter_mut().zip(self.carry.drain(..from_carry)) {
            *d = s;
        }
        let rest = &mut out[from_carry..];
        let avail = match self.source.available() {
            Ok(n) => n.min(rest.len()),
            Err(e) => {
                self.carry.extend(&out[..from_carry]);
                return Err(e);
            }
        };
        if avail == 0 {
            return Ok(from_carry);
        }
        match self.source.read(&mut rest[..avail]) {
            Ok(got) => Ok(from_carry + got.min(avail)),
            Err(e) => {
                self.carry.extend(&out[..from_carry]);
                Err(e)
            }
        }
    }

    /// [`Self::fill`] for a caller that is not queued: a ring error fails the device (and every queued
    /// request); the bytes already copied go to the carry, though nothing will serve them.
    fn fill_checked(
        &mut self,
        name: &str,
        out: &mut Vec<u8>,
        need: usize,
    ) -> Result<(), DispenseError> {
        if let Err(e) = self.fill(out, need) {
            let mut done = Vec::new();
            self.carry.extend(out.iter());
            self.mark_broken(&e, name, &mut done);
            // Senders never take a device lock, so completing under this one is fine.
            complete(done);
            return Err(DispenseError::Failed {
                device: name.to_owned(),
                reason: self.reason.clone(),
            });
        }
        Ok(())
    }

    fn has_bytes(&mut self) -> Result<bool, SourceError> {
        Ok(!self.carry.is_empty() || self.source.available()? > 0)
    }

    /// Serves queued requests in order while bytes are available.
    fn dispatch(&mut self, dev: &Device, done: &mut Vec<(Completion, Outcome)>) {
        if self.check_servable(&dev.name).is_err() {
            return;
        }
        while let Some(mut w) = self.waiters.pop_front() {
            if let Err(e) = self.fill(&mut w.got, w.need) {
                self.waiters.push_front(w);
                self.mark_broken(&e, &dev.name, done);
                return;
            }
            if w.got.len() == w.need {
                dev.note_served(w.need);
                done.push((w.done, Ok(w.got)));
            } else {
                self.waiters.push_front(w);
                return;
            }
        }
    }

    /// Re-reads the status line and derives the device state.
    fn refresh(
        &mut self,
        dev: &Device,
        cfg: &DispenserConfig,
        done: &mut Vec<(Completion, Outcome)>,
    ) {
        if self.broken {
            return;
        }
        let status = match self.source.status() {
            Ok(s) => s,
            Err(e) => return self.mark_broken(&e, &dev.name, done),
        };
        let stale = status.heartbeat_age.is_none_or(|age| age > cfg.heartbeat_timeout);
        let (health, reason) = match status.health {
            SourceHealth::Failed => (DeviceHealth::Failed, status.reason.clone()),
            SourceHealth::Stopped => (DeviceHealth::Stopped, status.reason.clone()),
            SourceHealth::Ok | SourceHealth::Starting if stale => {
                (DeviceHealth::Degraded, "producer heartbeat stale".to_owned())
            }
            SourceHealth::Starting => (DeviceHealth::Starting, "start-up tests running".to_owned()),
            SourceHealth::Ok => (DeviceHealth::Ok, "none".to_owned()),
        };
        if health != self.health {
            tracing::info!(device = %dev.name, from = %self.health, to = %health, reason = %reason, "device state changed");
        }
        self.health = health;
        self.reason = reason;
        self.stale = stale;
        let mono = Instant::now();
        match self.rate_mark {
            Some((t0, p0)) if mono.duration_since(t0) >= RATE_WINDOW => {
                let dt = mono.duration_since(t0).as_secs_f64();
                self.rate = status.bytes_published.saturating_sub(p0) as f64 / dt;
                self.rate_mark = Some((mono, status.bytes_published));
            }
            Some(_) => {}
            None => self.rate_mark = Some((mono, status.bytes_published)),
        }
        self.status = Some(status);
        self.status_read = mono;
        if matches!(health, DeviceHealth::Failed | DeviceHealth::Stopped) {
            self.fail_waiters(&dev.name, done);
        }
    }

    fn remove_waiter(&mut self, ticket: u64) -> Option<Waiter> {
        let pos = self.waiters.iter().position(|w| w.ticket == ticket)?;
        self.waiters.remove(pos)
    }
}

impl Device {
    fn note_served(&self, n: usize) {
        self.bytes_served.fetch_add(n as u64, Ordering::Relaxed);
        self.requests_served.fetch_add(1, Ordering::Relaxed);
    }

    fn entropy(&self, st: &DevState, bytes: Vec<u8>) -> Entropy {
        Entropy { bytes, source: source_label(st.status.as_ref()), device: self.name.clone() }
    }

    /// Removes a queued request (timeout or cancellation). Its partial bytes were never handed out, so
    /// they go to the carry and are served to the next request. Returns false if it already completed.
    fn cancel(&self, ticket: u64) -> bool {
        let mut done = Vec::new();
        let found = {
            let mut st = lock(&self.state);
            match st.remove_waiter(ticket) {
                Some(w) => {
                    st.carry.extend(w.got.iter());
                    st.dispatch(self, &mut done);
                    true
                }
                None => false,
            }
        };
        complete(done);
        found
    }

    fn wake(&self, st: &DevState) {
        if let Some(t) = &st.consumer {
            t.unpark();
        }
    }

    fn timeout_error(&self) -> DispenseError {
        self.requests_timed_out.fetch_add(1, Ordering::Relaxed);
        let st = lock(&self.state);
        match st.check_servable(&self.name) {
            Err(e) => e,
            Ok(()) if st.health == DeviceHealth::Degraded => {
                DispenseError::Stale { device: self.name.clone() }
            }
            Ok(()) => DispenseError::Timeout,
        }
    }
}

fn complete(done: Vec<(Completion, Outcome)>) {
    for (c, outcome) in done {
        c.send(outcome);
    }
}

/// Device preference for `device = None`: health rank, queue length, bytes ready (more is better).
type SelectKey = (u8, usize, std::cmp::Reverse<usize>);

/// What `begin` decided: served at once, or queued.
enum Begin<R> {
    Ready(Entropy),
    Queued { dev: Arc<Device>, ticket: u64, rx: R },
}

/// Removes a queued async request if its future is dropped (client went away) before completion.
struct CancelGuard {
    dev: Arc<Device>,
    ticket: u64,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.dev.cancel(self.ticket);
        }
    }
}

fn consumer_loop(dev: Arc<Device>, cfg: DispenserConfig) {
    let mut backoff = MIN_BACKOFF;
    let mut last_status: Option<Instant> = None;
    while !dev.stop.load(Ordering::Acquire) {
        let mut done = Vec::new();
        let mut callbacks = Vec::new();
        let busy = {
            let mut st = lock(&dev.state);
            if last_status.is_none_or(|t| t.elapsed() >= cfg.status_interval) {
                st.refresh(&dev, &cfg, &mut done);
                last_status = Some(Instant::now());
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

impl Dispenser {
    pub fn new(cfg: DispenserConfig) -> Dispenser {
        Dispenser(Arc::new(Inner {
            cfg,
            devices: RwLock::new(BTreeMap::new()),
            next_ticket: AtomicU64::new(1),
            detached_served: AtomicU64::new(0),
        }))
    }

    pub fn config(&self) -> &DispenserConfig {
        &self.0.cfg
    }

    /// Attaches any [`RingSource`] under `name` and starts its consumer thread.
    pub fn attach_source(
        &self,
        name: &str,
        path: Option<PathBuf>,
        source: Box<dyn RingSource>,
    ) -> Result<(), DispenseError> {
        let mut devices = self.0.write_devices();
        if devices.contains_key(name) {
            return Err(DispenseError::AlreadyAttached(name.to_owned()));
        }
        let dev = Arc::new(Device {
            name: name.to_owned(),
            path,
            state: Mutex::new(DevState::new(source)),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
            bytes_served: AtomicU64::new(0),
            requests_served: AtomicU64::new(0),
            requests_timed_out: AtomicU64::new(0),
        });
        // Read the status once before anyone can take, so a FAILED ring never serves a byte.
        {
            let mut done = Vec::new();
            lock(&dev.state).refresh(&dev, &self.0.cfg, &mut done);
        }
        let cfg = self.0.cfg.clone();
        let d = Arc::clone(&dev);
        let handle = thread::Builder::new()
            .name(format!("ring-{name}"))
            .spawn(move || consumer_loop(d, cfg))
            .map_err(|source| DispenseError::Spawn { device: name.to_owned(), source })?;
        lock(&dev.state).consumer = Some(handle.thread().clone());
        *lock(&dev.thread) = Some(handle);
        devices.insert(name.to_owned(), dev);
        tracing::info!(device = name, "device attached");
        Ok(())
    }

    /// Opens the ring at `ring_path` (validating its header; a second consumer is refused) and
    /// starts its consumer thread. The device is named after the file stem; returns that name.
    pub fn attach(&self, ring_path: &Path) -> Result<String, DispenseError> {
        let name = Self::device_name(ring_path)?;
        if self.0.read_devices().contains_key(&name) {
            return Err(DispenseError::AlreadyAttached(name));
        }
        let consumer = ring::Consumer::open(ring_path).map_err(DispenseError::Ring)?;
        self.attach_source(&name, Some(ring_path.to_owned()), Box::new(consumer))?;
        Ok(name)
    }

    /// The device name for a ring path: its file stem (`/run/qrng/qrng0.ring` → `qrng0`).
    pub fn device_name(ring_path: &Path) -> Result<String, DispenseError> {
        ring_path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| DispenseError::BadPath { path: ring_path.to_owned() })
    }

    /// Stops and removes a device; its queued requests fail with [`DispenseError::Detached`].
    pub fn detach(&self, name: &str) {
        let dev = {
            let mut devices = self.0.write_devices();
            devices.remove(name)
        };
        let Some(dev) = dev else { return };
        dev.stop.store(true, Ordering::Release);
        let handle = lock(&dev.thread).take();
        if let Some(h) = handle {
            h.thread().unpark();
            if h.join().is_err() {
                tracing::error!(device = name, "consumer thread panicked");
            }
        }
        let (waiters, callbacks) = {
            let mut st = lock(&dev.state);
            st.carry.clear();
            (std::mem::take(&mut st.waiters), std::mem::take(&mut st.ready_callbacks))
        };
        for w in waiters {
            w.done.send(Err(DispenseError::Detached { device: name.to_owned() }));
        }
        for cb in callbacks {
            cb();
        }
        self.0
            .detached_served
            .fetch_add(dev.bytes_served.load(Ordering::Relaxed), Ordering::Relaxed);
        tracing::info!(device = name, "device detached");
    }

    /// Detaches every device (shutdown).
    pub fn shutdown(&self) {
        for name in self.device_names() {
            self.detach(&name);
        }
    }

    pub fn device_names(&self) -> Vec<String> {
        self.0.read_devices().keys().cloned().collect()
    }

    /// Total bytes handed out since start, over all devices ever attached.
    pub fn total_bytes_served(&self) -> u64 {
        let live: u64 = self
            .0
            .devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|d| d.bytes_served.load(Ordering::Relaxed))
            .sum();
        live + self.0.detached_served.load(Ordering::Relaxed)
    }

    /// A snapshot of every attached device.
    pub fn devices(&self) -> Vec<DeviceStatus> {
        let devices = self.0.snapshot();
        devices
            .iter()
            .map(|dev| {
                let mut st = lock(&dev.state);
                let s = st.status.clone();
                let (status_fill, cap) =
                    s.as_ref().map_or((0, 0), |s| (s.tail.saturating_sub(s.head), s.capacity));
                // The live fill when the ring can be read (the status copy may be a few ms old).
                let ring_fill = if st.broken {
                    status_fill
                } else {
                    st.source.available().map_or(status_fill, |n| n as u64)
                };
                // The copy is up to one status interval old: age it by the time since it was read.
                let hb_age =
                    s.as_ref().and_then(|s| s.heartbeat_age).map(|a| a + st.status_read.elapsed());
                DeviceStatus {
                    name: dev.name.clone(),
                    path: dev.path.clone(),
                    health: st.health,
                    reason: st.reason.clone(),
                    source: source_label(s.as_ref()),
                    model: s.as_ref().map(|s| s.model.clone()).unwrap_or_default(),
                    serial: s.as_ref().map(|s| s.serial.clone()).unwrap_or_default(),
                    modules: s.as_ref().map_or(0, |s| s.modules),
                    board_version: s.as_ref().map_or(0, |s| s.board_version),
                    modules_present: s.as_ref().map_or(0, |s| s.modules_present),
                    family: s.as_ref().and_then(|s| s.family),
                    chip_mode: s.as_ref().and_then(|s| s.chip_mode),
                    simulated: s.as_ref().is_some_and(|s| s.simulated),
                    extractor: s.as_ref().map(|s| s.extractor.clone()).unwrap_or_default(),
                    epoch: s.as_ref().map_or(0, |s| s.epoch),
                    heartbeat_age_ms: hb_age
                        .map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
                    heartbeat_stale: st.stale,
                    ring_capacity: cap,
                    ring_fill,
                    buffer_fill_ratio: if cap == 0 {
                        0.0
                    } else {
                        (ring_fill.min(cap) as f64) / cap as f64
                    },
                    publish_rate_bytes_per_second: st.rate,
                    raw_bytes_read: s.as_ref().map_or(0, |s| s.raw_bytes_read),
                    bytes_published: s.as_ref().map_or(0, |s| s.bytes_published),
                    health_alarms: s.as_ref().map_or(0, |s| s.health_alarms),
                    bytes_dropped: s.as_ref().map_or(0, |s| s.bytes_dropped),
                    bytes_served: dev.bytes_served.load(Ordering::Relaxed),
                    requests_served: dev.requests_served.load(Ordering::Relaxed),
                    requests_timed_out: dev.requests_timed_out.load(Ordering::Relaxed),
                    requests_waiting: st.waiters.len(),
                }
            })
            .collect()
    }

    fn get(&self, name: &str) -> Result<Arc<Device>, DispenseError> {
        self.0
            .devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| DispenseError::NoSuchDevice(name.to_owned()))
    }

    /// Err for a request larger than the configured maximum (it changes nothing).
    fn check_size(&self, n: usize) -> Result<(), DispenseError> {
        if n > self.0.cfg.max_request {
            return Err(DispenseError::TooLarge { requested: n, limit: self.0.cfg.max_request });
        }
        Ok(())
    }

    /// Picks a device for a request of `n` bytes (see the module docs).
    fn select(&self, device: Option<&str>, n: usize) -> Result<Arc<Device>, DispenseError> {
        if let Some(name) = device {
            return self.get(name);
        }
        // Device locks are taken under the map's read lock; no path takes them the other way round.
        let devices = self.0.read_devices();
        // One card (the common case): nothing to choose, and the caller checks it can serve, under
        // the one lock it takes anyway (same errors as below: its own reason).
        if devices.len() == 1 {
            if let Some(only) = devices.values().next() {
                return Ok(Arc::clone(only));
            }
        }
        let mut best: Option<(SelectKey, &Arc<Device>)> = None;
        for dev in devices.values() {
            let mut st = lock(&dev.state);
            if st.broken || st.check_servable(&dev.name).is_err() {
                continue;
            }
            let rank = match st.health {
                DeviceHealth::Ok => 0,
                _ => 1,
            };
            let ready = if st.waiters.is_empty() {
                st.carry.len() + st.source.available().unwrap_or(0)
            } else {
                0
            };
            let key = (rank, st.waiters.len(), std::cmp::Reverse(ready.min(n)));
            drop(st);
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, dev));
            }
        }
        if let Some((_, d)) = best {
            return Ok(Arc::clone(d));
        }
        // With a single card, its own reason says more than "no healthy device".
        match devices.values().next() {
            Some(only) if devices.len() == 1 => {
                let st = lock(&only.state);
                Err(st.check_servable(&only.name).err().unwrap_or(DispenseError::NoHealthyDevice))
            }
            _ => Err(DispenseError::NoHealthyDevice),
        }
    }

    /// Serves `n` bytes now if possible, else queues the request with `make` building its completion.
    fn begin<R>(
        &self,
        device: Option<&str>,
        n: usize,
        make: impl FnOnce() -> (Completion, R),
    ) -> Result<Begin<R>, DispenseError> {
        self.check_size(n)?;
        let dev = self.select(device, n)?;
        let mut st = lock(&dev.state);
        st.check_servable(&dev.name)?;
        let mut got = Vec::with_capacity(n);
        if st.waiters.is_empty() {
            st.fill_checked(&dev.name, &mut got, n)?;
            if got.len() == n {
                dev.note_served(n);
                return Ok(Begin::Ready(dev.entropy(&st, got)));
            }
        }
        let (done_tx, rx) = make();
        let ticket = self.0.next_ticket.fetch_add(1, Ordering::Relaxed);
        st.waiters.push_back(Waiter { ticket, need: n, got, done: done_tx });
        dev.wake(&st);
        drop(st);
        Ok(Begin::Queued { dev, ticket, rx })
    }

    /// Lends exactly `n` bytes in place, if that can be done at once and in order: the device has
    /// no queued request and no carried-over bytes, the bytes are in the ring in one piece, and at
    /// most half the ring would be lent out (so readers that are slow to send cannot take the
    /// producer's space). `Ok(None)`: nothing was taken, use [`Dispenser::take`]. The bytes are
    /// served (counted, and never handed out again, even across a restart); the ring space is freed
    /// when the [`Lent`] is dropped.
    pub fn try_lend(&self, device: Option<&str>, n: usize) -> Result<Option<Lent>, DispenseError> {
        self.check_size(n)?;
        let dev = self.select(device, n)?;
        let mut st = lock(&dev.state);
        st.check_servable(&dev.name)?;
        if st.broken || !st.waiters.is_empty() || !st.carry.is_empty() {
            return Ok(None);
        }
        let Some(max_pinned) = st.status.as_ref().map(lend_limit) else {
            return Ok(None);
        };
        match st.source.lend(n, max_pinned) {
            Ok(Some(lease)) => {
                dev.note_served(n);
                let source = source_label(st.status.as_ref());
                Ok(Some(Lent { lease, source, device: dev.name.clone() }))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                let mut done = Vec::new();
                st.mark_broken(&e, &dev.name, &mut done);
                complete(done);
                Err(DispenseError::Failed { device: dev.name.clone(), reason: st.reason.clone() })
            }
        }
    }

    /// True when more than half of `device`'s ring is held by lent bytes that have not been
    /// released (or by copies made after them): see `http::server::watch_lent`.
    pub fn lend_pressure(&self, device: &str) -> bool {
        let Ok(dev) = self.get(device) else { return false };
        let st = lock(&dev.state);
        st.status.as_ref().is_some_and(|s| st.source.pinned() > lend_limit(s))
    }

    /// Takes exactly `n` bytes for an async caller (HTTP), waiting at most `wait`; FIFO per device.
    /// `device = None` picks any servable device. Cancel-safe: dropping the future drops the request.
    pub async fn take(
        &self,
        device: Option<&str>,
        n: usize,
        wait: Duration,
    ) -> Result<Entropy, DispenseError> {
        let begun = self.begin(device, n, || {
            let (tx, rx) = oneshot::channel();
            (Completion::Async(tx), rx)
        })?;
        let (dev, ticket, mut rx) = match begun {
            Begin::Ready(e) => return Ok(e),
            Begin::Queued { dev, ticket, rx } => (dev, ticket, rx),
        };
        let mut guard = CancelGuard { dev: Arc::clone(&dev), ticket, armed: true };
        let outcome = match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(DispenseError::Detached { device: dev.name.clone() }),
            Err(_) => {
                if dev.cancel(ticket) {
                    guard.armed = false;
                    return Err(dev.timeout_error());
                }
                // Completed concurrently with the timeout: the result is already in the channel.
                rx.try_recv().unwrap_or(Err(DispenseError::Timeout))
            }
        };
        guard.armed = false;
        let bytes = outcome?;
        let st = lock(&dev.state);
        Ok(dev.entropy(&st, bytes))
    }

    /// Takes exactly `n` bytes from `device`, blocking the calling thread (FUSE workers) until they
    /// arrive or `deadline` passes (`None`: wait for ever, or until the device fails/stops/detaches).
    pub fn take_blocking(
        &self,
        device: &str,
        n: usize,
        deadline: Option<Instant>,
    ) -> Result<Entropy, DispenseError> {
        self.take_blocking_inner(device, n, deadline, None)
    }

    /// Like [`Dispenser::take_blocking`] without a deadline, for FUSE readers that must stay
    /// killable: the request keeps its place in the queue while `interrupted()` (asked every `check`)
    /// is false; once it is true the request is withdrawn with [`DispenseError::Timeout`] (bytes it had
    /// gathered go to the next caller, as for any timeout).
    pub fn take_blocking_interruptible(
        &self,
        device: &str,
        n: usize,
        check: Duration,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Entropy, DispenseError> {
        self.take_blocking_inner(device, n, None, Some((check, interrupted)))
    }

    fn take_blocking_inner(
        &self,
        device: &str,
        n: usize,
        deadline: Option<Instant>,
        check: Option<(Duration, &dyn Fn() -> bool)>,
    ) -> Result<Entropy, DispenseError> {
        let begun = self.begin(Some(device), n, || {
            let (tx, rx) = mpsc::sync_channel(1);
            (Completion::Blocking(tx), rx)
        })?;
        let (dev, ticket, rx) = match begun {
            Begin::Ready(e) => return Ok(e),
            Begin::Queued { dev, ticket, rx } => (dev, ticket, rx),
        };
        let received = loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let slice = match (left, check) {
                (Some(l), Some((c, _))) => Some(l.min(c)),
                (None, Some((c, _))) => Some(c),
                (l, None) => l,
            };
            let r = match slice {
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(s) => rx.recv_timeout(s),
            };
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            match r {
                Err(mpsc::RecvTimeoutError::Timeout)
                    if !expired && !check.is_some_and(|(_, interrupted)| interrupted()) => {}
                other => break other,
            }
        };
        let outcome = match received {
            Ok(outcome) => outcome,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(DispenseError::Detached { device: dev.name.clone() })
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if dev.cancel(ticket) {
                    return Err(dev.timeout_error());
                }
                rx.try_recv().unwrap_or(Err(DispenseError::Timeout))
            }
        };
        let bytes = outcome?;
        let st = lock(&dev.state);
        Ok(dev.entropy(&st, bytes))
    }

    /// Takes up to `max` bytes that are ready now (O_NONBLOCK); [`DispenseError::Empty`] if none are, or
    /// if earlier requests are queued on the device (they come first).
    pub fn try_take(&self, device: &str, max: usize) -> Result<Entropy, DispenseError> {
        let max = max.min(self.0.cfg.max_request);
        let dev = self.get(device)?;
        let mut st = lock(&dev.state);
        st.check_servable(&dev.name)?;
        if !st.waiters.is_empty() || max == 0 {
            return Err(DispenseError::Empty);
        }
        let mut out =
            Vec::with_capacity(max.min(st.carry.len() + st.source.available().unwrap_or(0)));
        st.fill_checked(&dev.name, &mut out, max)?;
        if out.is_empty() {
            return Err(DispenseError::Empty);
        }
        dev.note_served(out.len());
        Ok(dev.entropy(&st, out))
    }

    /// Takes exactly `n` bytes if they are ready now, else consumes nothing and reports
    /// [`DispenseError::Empty`] (also when earlier requests are queued). For a blocking reader that
    /// wants to answer from the FUSE session thread when it can and hand off to a worker calling
    /// [`Dispenser::take_blocking`] when it cannot: one request, so its bytes are one contiguous
    /// piece of the ring stream and its place in the FIFO order is kept (a partial `try_take`
    /// followed by a blocking take for the rest would let other callers in between).
    pub fn try_take_exact(&self, device: &str, n: usize) -> Result<Entropy, DispenseError> {
        self.check_size(n)?;
        let dev = self.get(device)?;
        let mut st = lock(&dev.state);
        st.check_servable(&dev.name)?;
        if !st.waiters.is_empty() || st.carry.len() + st.source.available().unwrap_or(0) < n {
            return Err(DispenseError::Empty);
        }
        let mut out = Vec::with_capacity(n);
        st.fill_checked(&dev.name, &mut out, n)?;
        if out.len() < n {
            // The ring reported more than it then gave: keep the bytes for the next caller.
            st.carry.extend(out.iter());
            return Err(DispenseError::Empty);
        }
        dev.note_served(n);
        Ok(dev.entropy(&st, out))
    }

    /// [`Dispenser::try_take`] into the caller's buffer: the FUSE fast path, which reuses one buffer
    /// so a 1 MiB read costs neither an allocation nor zeroing. Takes nothing unless at least `min`
    /// bytes are ready (`min = buf.len()`: exactly-or-nothing, as [`Dispenser::try_take_exact`]);
    /// returns the bytes written; [`DispenseError::Empty`] as for `try_take`.
    pub fn try_take_into(
        &self,
        device: &str,
        buf: &mut [u8],
        min: usize,
    ) -> Result<usize, DispenseError> {
        let max = buf.len().min(self.0.cfg.max_request);
        let dev = self.get(device)?;
        let mut st = lock(&dev.state);
        st.check_servable(&dev.name)?;
        if !st.waiters.is_empty()
            || max == 0
            || st.carry.len() + st.source.available().unwrap_or(0) < min.clamp(1, max)
        {
            return Err(DispenseError::Empty);
        }
        let n = match st.fill_slice(&mut buf[..max]) {
            Ok(n) => n,
            Err(e) => {
                let mut done = Vec::new();
                st.mark_broken(&e, &dev.name, &mut done);
                complete(done);
                return Err(DispenseError::Failed {
                    device: dev.name.clone(),
                    reason: st.reason.clone(),
                });
            }
        };
        if n == 0 {
            return Err(DispenseError::Empty);
        }
        dev.note_served(n);
        Ok(n)
    }

    /// Poll support. Ok(true): a read would return bytes now (`on_ready` is dropped). Ok(false): not
    /// yet; `on_ready` is called once, from the consumer thread, when bytes arrive or the device
    /// fails, stops or is detached. Err: the device cannot serve (a read would fail now).
    pub fn wait_readable(
        &self,
        device: &str,
        on_ready: Box<dyn FnOnce() + Send>,
    ) -> Result<bool, DispenseError> {
        let dev = self.get(device)?;
        let mut st = lock(&dev.state);
        st.check_servable(&dev.name)?;
        if st.waiters.is_empty() && st.has_bytes().unwrap_or(true) {
            return Ok(true);
        }
        st.ready_callbacks.push(on_ready);
        dev.wake(&st);
        Ok(false)
    }

    /// Whether a read of `device` would return bytes now (FUSE `poll` without a wake-up request);
    /// Err: the device cannot serve.
    pub fn readable(&self, device: &str) -> Result<bool, DispenseError> {
        let dev = self.get(device)?;
        let mut st = lock(&dev.state);
        st.check_servable(&dev.name)?;
        Ok(st.waiters.is_empty() && st.has_bytes().unwrap_or(true))
    }

    /// A snapshot of one device (for the FUSE ioctls: model, serial, modules…).
    pub fn device(&self, name: &str) -> Option<DeviceStatus> {
        // devices() is cheap for the handful of cards a host has.
        self.devices().into_iter().find(|d| d.name == name)
    }

    /// The health state of one device.
    pub fn health(&self, device: &str) -> Result<DeviceHealth, DispenseError> {
        let dev = self.get(device)?;
        let st = lock(&dev.state);
        Ok(st.health)
    }
}

pub mod memory;

#[cfg(test)]
mod tests;
