//! An in-memory [`RingSource`] for tests (unit, router and FUSE tests). It is never attached by the
//! `qrng-bridge` binary: the product only serves rings published by quantis-driver.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use qrng_ring::{self as ring, Health, HealthParams, Identity, Reason, StatusSnapshot};

use super::{lock, RingSource};

#[derive(Debug)]
struct Mem {
    data: VecDeque<u8>,
    status: StatusSnapshot,
    /// Last heartbeat; None = never (stale).
    beat: Option<Instant>,
    broken: bool,
}

/// A test ring: push bytes and change the status line from the test; attach [`MemoryRing::source`].
#[derive(Debug, Clone)]
pub struct MemoryRing(Arc<Mutex<Mem>>);

impl MemoryRing {
    /// A healthy ring with a fresh heartbeat. `serial` names the card; `simulated` labels it.
    pub fn new(serial: &str, simulated: bool, capacity: u64) -> Self {
        Self(Arc::new(Mutex::new(Mem {
            data: VecDeque::new(),
            status: StatusSnapshot {
                epoch: 1,
                heartbeat_ns: 0,
                health: Health::Ok,
                reason: Reason::None,
                identity: Identity {
                    model: "pcie-16m".to_owned(),
                    serial: serial.to_owned(),
                    modules: 0b1111,
                    simulated,
                    extractor: "none".to_owned(),
                    board_version: 0x0005_0203,
                    modules_present: 0b1111,
                    family: Some(ring::CardFamily::Module),
                    chip_mode: None,
                },
                params: HealthParams::default(),
                raw_bytes_read: 0,
                bytes_published: 0,
                health_alarms: 0,
                bytes_dropped: 0,
                capacity,
                head: 0,
                tail: 0,
            },
            beat: Some(Instant::now()),
            broken: false,
        })))
    }

    /// Publishes bytes (beyond the capacity is allowed here: tests decide).
    pub fn push(&self, bytes: &[u8]) {
        let mut m = lock(&self.0);
        m.data.extend(bytes.iter());
        m.status.tail += bytes.len() as u64;
        m.status.bytes_published += bytes.len() as u64;
        m.status.raw_bytes_read += bytes.len() as u64;
    }

    /// Bytes not yet consumed.
    pub fn len(&self) -> usize {
        lock(&self.0).data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets the health and reason on the status line.
    pub fn set_health(&self, health: Health, reason: Reason) {
        let mut m = lock(&self.0);
        m.status.health = health;
        m.status.reason = reason;
    }

    /// Changes the status line (identity fields, counters) as a producer would.
    pub fn edit_status(&self, f: impl FnOnce(&mut StatusSnapshot)) {
        f(&mut lock(&self.0).status);
    }

    /// The producer beats now.
    pub fn beat(&self) {
        lock(&self.0).beat = Some(Instant::now());
    }

    /// The producer has not beaten since `at` (None: never) — a dead driver.
    pub fn set_last_beat(&self, at: Option<Instant>) {
        lock(&self.0).beat = at;
    }

    /// Makes every later access fail as a corrupt ring would: the producer's tail jumped more
    /// than the capacity ahead of the head.
    pub fn break_ring(&self) {
        lock(&self.0).broken = true;
    }

    /// A consumer handle on this ring.
    pub fn source(&self) -> Box<dyn RingSource> {
        Box::new(self.clone())
    }

    fn check(m: &Mem) -> ring::Result<()> {
        if !m.broken {
            return Ok(());
        }
        let (head, capacity) = (m.status.head, m.status.capacity);
        Err(ring::Error::TailTooFarAhead {
            path: "memory".into(),
            head,
            tail: head + 2 * capacity,
            capacity,
        })
    }
}

impl RingSource for MemoryRing {
    fn available(&mut self) -> ring::Result<usize> {
        let m = lock(&self.0);
        Self::check(&m)?;
        Ok(m.data.len())
    }

    fn read(&mut self, buf: &mut [u8]) -> ring::Result<usize> {
        let mut m = lock(&self.0);
        Self::check(&m)?;
        let n = buf.len().min(m.data.len());
        for (dst, src) in buf.iter_mut().zip(m.data.drain(..n)) {
            *dst = src;
        }
        m.status.head += n as u64;
        Ok(n)
    }

    fn status(&mut self) -> ring::Result<StatusSnapshot> {
        let m = lock(&self.0);
        Self::check(&m)?;
        let mut s = m.status.clone();
        // The ring's clock: a beat `elapsed` ago is that much before now on CLOCK_BOOTTIME.
        s.heartbeat_ns = m.beat.map_or(0, |b| {
            let age = u64::try_from(b.elapsed().as_nanos()).unwrap_or(u64::MAX);
            ring::boottime_ns().saturating_sub(age).max(1)
        });
        Ok(s)
    }
}
