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
//! Device states ([`DeviceState`], derived from the ring's status line and heartbeat):
//!
//! | ring status | heartbeat | state | serves |
//! |---|---|---|---|
//! | OK | fresh | `ok` | yes |
//! | OK or STARTING | stale (driver died) | `degraded` | what is already in the ring (it passed the health tests); then waits |
//! | STARTING | fresh | `starting` | what is already in the ring (published by the previous run, tested) |
//! | FAILED | any | `failed` | nothing: callers get [`DispenseError::Failed`] at once, queued requests fail |
//! | STOPPED | any | `stopped` | nothing: [`DispenseError::Stopped`] |
//! | OK or STARTING | ahead of the clock (beyond `ring::HEARTBEAT_AHEAD_TOLERANCE`) | `degraded` | as for stale |
//! | (ring unreadable, truncated, replaced, header changed, holes) | — | `failed` (reason: the `ring::Error` code) | nothing; the ring must be re-attached |
//!
//! Bytes left in the ring while it is FAILED are *not* discarded: the driver stops publishing the
//! moment a health test fails (SP 800-90B §4.3), so what was published before passed the tests; they
//! are served once the ring returns to OK. The status line is re-read every `status_interval`, but
//! the ring's health word is also re-checked (one Acquire load, in `ring::Consumer`) before any bytes
//! are copied or lent: bytes a broken producer publishes after FAILED are never served, and the
//! device turns FAILED (or STOPPED) at once.
//!
//! With `device = None` the dispenser picks a servable device, preferring `ok` over `degraded` and
//! `starting`, then the one with the shortest queue and the most bytes ready.
//!
//! API for front ends (HTTP here, FUSE in `fuse/`):
//!
//! | call | use | errors worth mapping |
//! |---|---|---|
//! | [`Dispenser::attach`] / [`Dispenser::detach`] | start / hot-plug | `Ring` (refused header), `AlreadyAttached` |
//! | [`Dispenser::serve`] (async, bounded wait; copies or lends) | HTTP | `Timeout`/`Stale` → 503, `Failed`/`Stopped` → 503 |
//! | [`Dispenser::take`] (`serve` that always copies) | HTTP JSON answers | as `serve` |
//! | [`Dispenser::take_blocking`] (deadline or none) | FUSE read | `Failed`/`Stopped`/`Detached` → EIO |
//! | [`Dispenser::try_take`] (what is ready, ≤ max) | FUSE O_NONBLOCK read | `Empty` → EAGAIN |
//! | [`Dispenser::try_take_exact`] (all n or nothing) | FUSE blocking read, before handing off | `Empty` → use `take_blocking` |
//! | [`Dispenser::wait_readable`] (callback once) | FUSE poll | `Err` → POLLERR/EIO |
//! | [`Dispenser::devices`], [`Dispenser::device`], [`Dispenser::health`] | /health, ioctls | |
//!
//! Sources: [`Dispenser::attach`] opens a ring file (`qrng_ring::Consumer`);
//! [`Dispenser::attach_source`] takes any [`RingSource`] (tests and benchmarks use in-memory ones).

mod consumer;
mod device;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
mod mix;
mod source;
mod types;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use qrng_ring as ring;
use tokio::sync::oneshot;

use consumer::consumer_loop;
use device::{
    lend_limit, lock, source_label, CancelGuard, Completion, DevState, Device, DeviceMetrics,
    Waiter,
};
pub use source::RingSource;
pub use types::{
    Delivery, DeviceState, DeviceStatus, DispenseError, DispenserConfig, Entropy, Lent, Served,
};

struct Inner {
    cfg: DispenserConfig,
    /// Who may own the rings attached by path, and their directory: root and the driver's user
    /// (docs/ring-abi.md, "Trust model").
    ring_trust: ring::Trust,
    devices: RwLock<BTreeMap<String, Arc<Device>>>,
    next_ticket: AtomicU64,
    /// Bytes served by devices that have since been detached (keeps totals monotonic).
    detached_served: AtomicU64,
    /// Names of the mixed devices (never members of another mix: see [`mix`]).
    mixes: Mutex<Vec<String>>,
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

/// Device preference for `device = None`: health rank, queue length, bytes ready (more is better).
type SelectKey = (u8, usize, std::cmp::Reverse<usize>);

/// What `begin` decided: served at once, or queued.
enum Begin<R> {
    Ready(Served),
    Queued { dev: Arc<Device>, ticket: u64, rx: R },
}

impl Dispenser {
    /// A dispenser that attaches rings owned by root or by the calling process's user.
    pub fn new(cfg: DispenserConfig) -> Dispenser {
        Dispenser::with_ring_trust(cfg, ring::Trust::current_user())
    }

    /// A dispenser that attaches only rings, in directories, that `ring_trust` accepts (owner
    /// root or the driver's user, not writable by group or others).
    pub fn with_ring_trust(cfg: DispenserConfig, ring_trust: ring::Trust) -> Dispenser {
        Dispenser(Arc::new(Inner {
            cfg,
            ring_trust,
            devices: RwLock::new(BTreeMap::new()),
            next_ticket: AtomicU64::new(1),
            detached_served: AtomicU64::new(0),
            mixes: Mutex::new(Vec::new()),
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
            metrics: DeviceMetrics::default(),
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

    /// Attaches the mixed device `name`: the XOR of equal-length blocks taken once from each of
    /// `members` (at least two distinct attached-or-later devices, none of them mixed; see
    /// [`mix`]). With `degrade` it XORs the members that can serve when some cannot.
    pub fn attach_mix(
        &self,
        name: &str,
        members: &[String],
        degrade: bool,
    ) -> Result<(), DispenseError> {
        let bad = |why: String| Err(DispenseError::BadMix { name: name.to_owned(), why });
        if members.len() < 2 {
            return bad("a mix needs at least two members".into());
        }
        let mut mixes = lock(&self.0.mixes);
        for (i, m) in members.iter().enumerate() {
            if m == name {
                return bad(format!("{m} cannot be a member of itself"));
            }
            if members[..i].contains(m) {
                return bad(format!("{m} is named twice"));
            }
            if mixes.contains(m) {
                return bad(format!("{m} is a mixed device; members must be cards"));
            }
        }
        if members.iter().any(|m| mixes.contains(m)) || mixes.iter().any(|x| x == name) {
            return Err(DispenseError::AlreadyAttached(name.to_owned()));
        }
        let source = mix::MixSource::new(Arc::downgrade(&self.0), members, degrade);
        self.attach_source(name, None, Box::new(source))?;
        mixes.push(name.to_owned());
        tracing::info!(device = name, members = %members.join(","), degrade, "mixed device attached");
        Ok(())
    }

    /// Opens the ring at `ring_path` (validating its owner and mode against
    /// the dispenser's [`ring::Trust`], and its header; a second consumer is refused) and starts
    /// its consumer thread. The device is named after the file stem; returns that name.
    pub fn attach(&self, ring_path: &Path) -> Result<String, DispenseError> {
        let name = Self::device_name(ring_path)?;
        if self.0.read_devices().contains_key(&name) {
            return Err(DispenseError::AlreadyAttached(name));
        }
        let consumer = ring::Consumer::open_trusted(ring_path, &self.0.ring_trust)
            .map_err(DispenseError::Ring)?;
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
        lock(&self.0.mixes).retain(|m| m != name);
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
            .fetch_add(dev.metrics.bytes_served.load(Ordering::Relaxed), Ordering::Relaxed);
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
            .map(|d| d.metrics.bytes_served.load(Ordering::Relaxed))
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
                let hb_age = s
                    .as_ref()
                    .and_then(|s| s.heartbeat_age())
                    .map(|a| a + st.status_read.elapsed());
                let id = s.as_ref().map(|s| &s.identity);
                DeviceStatus {
                    name: dev.name.clone(),
                    path: dev.path.clone(),
                    health: st.health,
                    reason: st.reason.clone(),
                    source: source_label(s.as_ref()),
                    model: id.map(|i| i.model.clone()).unwrap_or_default(),
                    serial: id.map(|i| i.serial.clone()).unwrap_or_default(),
                    modules: id.map_or(0, |i| i.modules),
                    board_version: id.map_or(0, |i| i.board_version),
                    modules_present: id.map_or(0, |i| i.modules_present),
                    family: id.and_then(|i| i.family),
                    chip_mode: id.and_then(|i| i.chip_mode),
                    simulated: id.is_some_and(|i| i.simulated),
                    extractor: id.map(|i| i.extractor.clone()).unwrap_or_default(),
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
                    bytes_served: dev.metrics.bytes_served.load(Ordering::Relaxed),
                    requests_served: dev.metrics.requests_served.load(Ordering::Relaxed),
                    requests_timed_out: dev.metrics.requests_timed_out.load(Ordering::Relaxed),
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
                DeviceState::Ok => 0,
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

    /// Serves `n` bytes now if possible (lent in place when `delivery` allows and the device can,
    /// else copied), else queues the request with `make` building its completion. The one way
    /// from a request to the ring: the device is selected once and checked under its lock.
    fn begin<R>(
        &self,
        device: Option<&str>,
        n: usize,
        delivery: Delivery,
        make: impl FnOnce() -> (Completion, R),
    ) -> Result<Begin<R>, DispenseError> {
        let dev = self.select(device, n)?;
        let (ticket, rx) = {
            let mut st = lock(&dev.state);
            st.check_servable(&dev.name)?;
            let mut got = Vec::new();
            if st.waiters.is_empty() {
                if delivery == Delivery::LendOrCopy && st.carry.is_empty() && !st.broken {
                    if let Some(lent) = Self::lend(&dev, &mut st, n)? {
                        return Ok(Begin::Ready(Served::Lent(lent)));
                    }
                }
                got.reserve_exact(n);
                st.fill_checked(&dev.name, &mut got, n)?;
                if got.len() == n {
                    dev.note_served(n);
                    return Ok(Begin::Ready(Served::Copied(dev.entropy(&st, got))));
                }
            }
            let (done_tx, rx) = make();
            let ticket = self.0.next_ticket.fetch_add(1, Ordering::Relaxed);
            st.waiters.push_back(Waiter { ticket, need: n, got, done: done_tx });
            dev.wake(&st);
            (ticket, rx)
        };
        Ok(Begin::Queued { dev, ticket, rx })
    }

    /// Lends exactly `n` bytes in place if the ring has them in one piece and at most half the
    /// ring would then be lent out (so readers that are slow to send cannot take the producer's
    /// space). `Ok(None)`: nothing was taken. Lent bytes are served (counted, and never handed out
    /// again, even across a restart); their ring space is freed when the [`Lent`] is dropped.
    fn lend(dev: &Device, st: &mut DevState, n: usize) -> Result<Option<Lent>, DispenseError> {
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
            Err(e) => Err(st.fail_broken(&e, &dev.name)),
        }
    }

    /// True when more than half of `device`'s ring is held by lent bytes that have not been
    /// released (or by copies made after them): see `http::lent::watch`.
    pub fn lend_pressure(&self, device: &str) -> bool {
        let Ok(dev) = self.get(device) else { return false };
        let st = lock(&dev.state);
        st.status.as_ref().is_some_and(|s| st.source.pinned() > lend_limit(s))
    }

    /// Serves exactly `n` bytes to an async caller (HTTP), waiting at most `wait`; FIFO per
    /// device. `device = None` picks any servable device. With [`Delivery::LendOrCopy`] the
    /// bytes are lent in place when that can be done at once and in order, else copied.
    /// Cancel-safe: dropping the future drops the request.
    pub async fn serve(
        &self,
        device: Option<&str>,
        n: usize,
        wait: Duration,
        delivery: Delivery,
    ) -> Result<Served, DispenseError> {
        let begun = self.begin(device, n, delivery, || {
            let (tx, rx) = oneshot::channel();
            (Completion::Async(tx), rx)
        })?;
        let (dev, ticket, mut rx) = match begun {
            Begin::Ready(served) => return Ok(served),
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
        Ok(Served::Copied(dev.entropy(&st, bytes)))
    }

    /// [`Dispenser::serve`] that always copies.
    pub async fn take(
        &self,
        device: Option<&str>,
        n: usize,
        wait: Duration,
    ) -> Result<Entropy, DispenseError> {
        Ok(self.serve(device, n, wait, Delivery::Copy).await?.into_copied())
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
        let begun = self.begin(Some(device), n, Delivery::Copy, || {
            let (tx, rx) = mpsc::sync_channel(1);
            (Completion::Blocking(tx), rx)
        })?;
        let (dev, ticket, rx) = match begun {
            Begin::Ready(served) => return Ok(served.into_copied()),
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

    /// Runs `f` on `device` under its lock if it can serve and no request is queued on it;
    /// [`DispenseError::Empty`] when one is (the queue comes first). The shared preamble of the
    /// non-blocking takes.
    fn with_idle<T>(
        &self,
        device: &str,
        f: impl FnOnce(&Device, &mut DevState) -> Result<T, DispenseError>,
    ) -> Result<T, DispenseError> {
        let dev = self.get(device)?;
        let mut st = lock(&dev.state);
        st.check_servable(&dev.name)?;
        if !st.waiters.is_empty() {
            return Err(DispenseError::Empty);
        }
        f(&dev, &mut st)
    }

    /// Takes up to `max` bytes that are ready now (O_NONBLOCK); [`DispenseError::Empty`] if none are, or
    /// if earlier requests are queued on the device (they come first).
    pub fn try_take(&self, device: &str, max: usize) -> Result<Entropy, DispenseError> {
        self.with_idle(device, |dev, st| {
            let ready = st.carry.len() + st.source.available().unwrap_or(0);
            let mut out = Vec::with_capacity(max.min(ready));
            st.fill_checked(&dev.name, &mut out, max)?;
            if out.is_empty() {
                return Err(DispenseError::Empty);
            }
            dev.note_served(out.len());
            Ok(dev.entropy(st, out))
        })
    }

    /// Takes exactly `n` bytes if they are ready now, else consumes nothing and reports
    /// [`DispenseError::Empty`] (also when earlier requests are queued). For a blocking reader that
    /// wants to answer from the FUSE session thread when it can and hand off to a worker calling
    /// [`Dispenser::take_blocking`] when it cannot: one request, so its bytes are one contiguous
    /// piece of the ring stream and its place in the FIFO order is kept (a partial `try_take`
    /// followed by a blocking take for the rest would let other callers in between).
    pub fn try_take_exact(&self, device: &str, n: usize) -> Result<Entropy, DispenseError> {
        self.with_idle(device, |dev, st| {
            if st.carry.len() + st.source.available().unwrap_or(0) < n {
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
            Ok(dev.entropy(st, out))
        })
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
        self.with_idle(device, |dev, st| {
            let max = buf.len();
            if max == 0 || st.carry.len() + st.source.available().unwrap_or(0) < min.clamp(1, max) {
                return Err(DispenseError::Empty);
            }
            let n = st.fill_slice(buf).map_err(|e| st.fail_broken(&e, &dev.name))?;
            if n == 0 {
                return Err(DispenseError::Empty);
            }
            dev.note_served(n);
            Ok(n)
        })
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
    pub fn health(&self, device: &str) -> Result<DeviceState, DispenseError> {
        let dev = self.get(device)?;
        let st = lock(&dev.state);
        Ok(st.health)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_mix;
#[cfg(test)]
mod tests_trust;
