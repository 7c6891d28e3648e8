//! Test doubles: a recording device that logs every register access of the device it wraps,
//! and a virtual clock that logs sleeps into the same log instead of sleeping.

use super::{Clock, Wait};
use crate::hw::{self, Device, DeviceInfo, DmaBuffer};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One logged event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ev {
    Read(u8, u64, u32),
    Write(u8, u64, u32),
    Sleep(Duration, Wait),
}

pub type Log = Arc<Mutex<Vec<Ev>>>;

/// Wraps a device and records every access.
pub struct Recorder {
    pub inner: Box<dyn Device>,
    pub log: Log,
}

impl Recorder {
    pub fn new(inner: Box<dyn Device>) -> (Recorder, Log) {
        let log = Log::default();
        (Recorder { inner, log: log.clone() }, log)
    }
}

impl Device for Recorder {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }
    fn read32(&mut self, bar: u8, offset: u64) -> hw::Result<u32> {
        let v = self.inner.read32(bar, offset)?;
        self.log.lock().unwrap().push(Ev::Read(bar, offset, v));
        Ok(v)
    }
    fn write32(&mut self, bar: u8, offset: u64, value: u32) -> hw::Result<()> {
        self.log.lock().unwrap().push(Ev::Write(bar, offset, value));
        self.inner.write32(bar, offset, value)
    }
    fn dma_alloc(&mut self, len: usize) -> hw::Result<DmaBuffer> {
        self.inner.dma_alloc(len)
    }
    fn dma_free(&mut self, buf: DmaBuffer) -> hw::Result<()> {
        self.inner.dma_free(buf)
    }
    fn reset(&mut self) -> hw::Result<()> {
        self.inner.reset()
    }
    fn sequence_waits(&self) -> bool {
        self.inner.sequence_waits()
    }
}

/// A clock whose time only moves when something sleeps; sleeps are logged.
#[derive(Debug)]
pub struct FakeClock {
    now: Mutex<Duration>,
    log: Log,
}

impl FakeClock {
    pub fn new(log: Log) -> Arc<FakeClock> {
        Arc::new(FakeClock { now: Mutex::new(Duration::ZERO), log })
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        *self.now.lock().unwrap()
    }
    fn sleep(&self, d: Duration, why: Wait) {
        *self.now.lock().unwrap() += d;
        self.log.lock().unwrap().push(Ev::Sleep(d, why));
    }
}

/// The writes and sequence sleeps of a log, in order (reads and polls left out).
pub fn writes_and_waits(log: &Log) -> Vec<Ev> {
    log.lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|e| matches!(e, Ev::Write(..) | Ev::Sleep(_, Wait::Sequence)))
        .collect()
}

pub fn writes(log: &Log) -> Vec<Ev> {
    log.lock().unwrap().iter().copied().filter(|e| matches!(e, Ev::Write(..))).collect()
}

/// Opens a simulated device.
pub fn sim(spec: &str) -> Box<dyn Device> {
    Box::new(hw::sim::SimDevice::new(spec.parse().expect("valid sim spec")).expect("sim opens"))
}
