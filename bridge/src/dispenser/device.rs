//! One attached device: its state machine (health derived from the ring's status line, the
//! queue of waiting requests, the carry) and its counters. Everything here runs under the
//! device's lock; completions are sent after it is released.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{JoinHandle, Thread};
use std::time::Instant;

use qrng_ring as ring;
use tokio::sync::oneshot;

use super::consumer::RATE_WINDOW;
use super::{DeviceState, DispenseError, DispenserConfig, Entropy, RingSource};

pub(super) type Outcome = Result<Vec<u8>, DispenseError>;

pub(super) enum Completion {
    Async(oneshot::Sender<Outcome>),
    Blocking(mpsc::SyncSender<Outcome>),
}

impl Completion {
    pub(super) fn send(self, outcome: Outcome) {
        // A receiver that went away dropped its request: the bytes are discarded, never re-served.
        match self {
            Self::Async(tx) => drop(tx.send(outcome)),
            Self::Blocking(tx) => drop(tx.try_send(outcome)),
        }
    }
}

pub(super) struct Waiter {
    pub(super) ticket: u64,
    pub(super) need: usize,
    pub(super) got: Vec<u8>,
    pub(super) done: Completion,
}

pub(super) type ReadyCallback = Box<dyn FnOnce() + Send>;

pub(super) struct DevState {
    pub(super) source: Box<dyn RingSource>,
    pub(super) status: Option<ring::StatusSnapshot>,
    /// When `status` was read.
    pub(super) status_read: Instant,
    pub(super) health: DeviceState,
    /// Why it is not `ok` ("none" when it is).
    pub(super) reason: String,
    /// The producer's heartbeat is older than the limit (or it never beat).
    pub(super) stale: bool,
    /// Set when the source itself errored: the device stays failed until re-attached.
    pub(super) broken: bool,
    pub(super) carry: VecDeque<u8>,
    pub(super) waiters: VecDeque<Waiter>,
    pub(super) ready_callbacks: Vec<ReadyCallback>,
    pub(super) rate_mark: Option<(Instant, u64)>,
    pub(super) rate: f64,
    pub(super) consumer: Option<Thread>,
}

pub(super) struct Device {
    pub(super) name: String,
    pub(super) path: Option<PathBuf>,
    pub(super) state: Mutex<DevState>,
    pub(super) stop: AtomicBool,
    pub(super) thread: Mutex<Option<JoinHandle<()>>>,
    pub(super) metrics: DeviceMetrics,
}

/// A device's counters: each is one field here, read in one place (`Dispenser::devices`).
#[derive(Debug, Default)]
pub(super) struct DeviceMetrics {
    pub(super) bytes_served: AtomicU64,
    pub(super) requests_served: AtomicU64,
    pub(super) requests_timed_out: AtomicU64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data here (every mutation is a complete step).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many bytes may be lent out and unreleased at once: half the ring, so readers that are slow
/// to send cannot take the producer's space ([`super::Dispenser::serve`], [`super::Dispenser::lend_pressure`]).
pub(super) fn lend_limit(status: &ring::StatusSnapshot) -> u64 {
    status.capacity / 2
}

pub(super) fn source_label(status: Option<&ring::StatusSnapshot>) -> String {
    match status.map(|s| &s.identity) {
        Some(id) if id.simulated => "simulated".to_owned(),
        Some(id) if !id.serial.is_empty() => id.serial.clone(),
        _ => "unknown".to_owned(),
    }
}

impl DevState {
    pub(super) fn new(source: Box<dyn RingSource>) -> Self {
        Self {
            source,
            status: None,
            status_read: Instant::now(),
            health: DeviceState::Starting,
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
    pub(super) fn check_servable(&self, name: &str) -> Result<(), DispenseError> {
        match self.health {
            DeviceState::Failed => {
                Err(DispenseError::Failed { device: name.to_owned(), reason: self.reason.clone() })
            }
            DeviceState::Stopped => {
                Err(DispenseError::Stopped { device: name.to_owned(), reason: self.reason.clone() })
            }
            DeviceState::Ok | DeviceState::Degraded | DeviceState::Starting => Ok(()),
        }
    }

    /// After a ring error: the device turns failed and its queued requests fail. The reason
    /// starts with the error's code (`ring-replaced: ...`). A health word that says FAILED or
    /// STOPPED when bytes were about to leave ([`ring::Error::NotServing`]) is the producer's
    /// own state, read before the next status poll: the device takes it (and the next poll may
    /// return it to service); any other error leaves the ring untrusted until re-attached.
    pub(super) fn mark_broken(
        &mut self,
        err: &ring::Error,
        name: &str,
        done: &mut Vec<(Completion, Outcome)>,
    ) {
        if let ring::Error::NotServing { health, reason, .. } = err {
            let to = match health {
                ring::Health::Stopped => DeviceState::Stopped,
                _ => DeviceState::Failed,
            };
            tracing::warn!(device = name, from = %self.health, to = %to, reason = reason.code(), "producer's health word changed before bytes left: nothing served");
            self.health = to;
            self.reason = reason.code().to_owned();
        } else {
            tracing::error!(device = name, error = %err, "ring unreadable; device marked failed");
            self.broken = true;
            self.health = DeviceState::Failed;
            self.reason = format!("{}: {err}", err.code());
        }
        self.fail_waiters(name, done);
    }

    pub(super) fn fail_waiters(&mut self, name: &str, done: &mut Vec<(Completion, Outcome)>) {
        for w in self.waiters.drain(..) {
            let err = match self.health {
                DeviceState::Stopped => {
                    DispenseError::Stopped { device: name.to_owned(), reason: self.reason.clone() }
                }
                _ => DispenseError::Failed { device: name.to_owned(), reason: self.reason.clone() },
            };
            done.push((w.done, Err(err)));
        }
    }

    /// Appends up to `need - out.len()` bytes to `out`: the carry first, then the ring.
    pub(super) fn fill(&mut self, out: &mut Vec<u8>, need: usize) -> ring::Result<()> {
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
    pub(super) fn fill_slice(&mut self, out: &mut [u8]) -> ring::Result<usize> {
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

    /// Marks the device broken after a ring error, fails every queued request, and returns the
    /// error for the caller in hand.
    pub(super) fn fail_broken(&mut self, err: &ring::Error, name: &str) -> DispenseError {
        let mut done = Vec::new();
        self.mark_broken(err, name, &mut done);
        // Senders never take a device lock, so completing under this one is fine.
        complete(done);
        self.check_servable(name).err().unwrap_or_else(|| DispenseError::Failed {
            device: name.to_owned(),
            reason: self.reason.clone(),
        })
    }

    /// [`Self::fill`] for a caller that is not queued: a ring error fails the device (and every queued
    /// request); the bytes already copied go to the carry, though nothing will serve them.
    pub(super) fn fill_checked(
        &mut self,
        name: &str,
        out: &mut Vec<u8>,
        need: usize,
    ) -> Result<(), DispenseError> {
        self.fill(out, need).map_err(|e| {
            self.carry.extend(out.iter());
            self.fail_broken(&e, name)
        })
    }

    pub(super) fn has_bytes(&mut self) -> ring::Result<bool> {
        Ok(!self.carry.is_empty() || self.source.available()? > 0)
    }

    /// Serves queued requests in order while bytes are available.
    pub(super) fn dispatch(&mut self, dev: &Device, done: &mut Vec<(Completion, Outcome)>) {
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
    pub(super) fn refresh(
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
        let stale = status.heartbeat_stale(cfg.heartbeat_timeout);
        let (health, reason) = match status.health {
            ring::Health::Failed => (DeviceState::Failed, status.reason.code().to_owned()),
            ring::Health::Stopped => (DeviceState::Stopped, status.reason.code().to_owned()),
            ring::Health::Ok | ring::Health::Starting if stale => {
                (DeviceState::Degraded, "producer heartbeat stale".to_owned())
            }
            ring::Health::Starting => (DeviceState::Starting, "start-up tests running".to_owned()),
            ring::Health::Ok => (DeviceState::Ok, "none".to_owned()),
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
        if matches!(health, DeviceState::Failed | DeviceState::Stopped) {
            self.fail_waiters(&dev.name, done);
        }
    }

    pub(super) fn remove_waiter(&mut self, ticket: u64) -> Option<Waiter> {
        let pos = self.waiters.iter().position(|w| w.ticket == ticket)?;
        self.waiters.remove(pos)
    }
}

impl Device {
    pub(super) fn note_served(&self, n: usize) {
        self.metrics.bytes_served.fetch_add(n as u64, Ordering::Relaxed);
        self.metrics.requests_served.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn entropy(&self, st: &DevState, bytes: Vec<u8>) -> Entropy {
        Entropy { bytes, source: source_label(st.status.as_ref()), device: self.name.clone() }
    }

    /// Removes a queued request (timeout or cancellation). Its partial bytes were never handed out, so
    /// they go to the carry and are served to the next request. Returns false if it already completed.
    pub(super) fn cancel(&self, ticket: u64) -> bool {
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

    pub(super) fn wake(&self, st: &DevState) {
        if let Some(t) = &st.consumer {
            t.unpark();
        }
    }

    pub(super) fn timeout_error(&self) -> DispenseError {
        self.metrics.requests_timed_out.fetch_add(1, Ordering::Relaxed);
        let st = lock(&self.state);
        match st.check_servable(&self.name) {
            Err(e) => e,
            Ok(()) if st.health == DeviceState::Degraded => {
                DispenseError::Stale { device: self.name.clone() }
            }
            Ok(()) => DispenseError::Timeout,
        }
    }
}

pub(super) fn complete(done: Vec<(Completion, Outcome)>) {
    for (c, outcome) in done {
        c.send(outcome);
    }
}

/// Removes a queued async request if its future is dropped (client went away) before completion.
pub(super) struct CancelGuard {
    pub(super) dev: Arc<Device>,
    pub(super) ticket: u64,
    pub(super) armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.dev.cancel(self.ticket);
        }
    }
}
