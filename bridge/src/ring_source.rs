//! Attaching ring files published by quantis-driver to the dispenser: the [`RingSource`] adapter
//! over `quantis_driver::ring::Consumer`.
//!
//! The ring's heartbeat is on CLOCK_BOOTTIME (it never jumps); the dispenser's status line counts
//! in CLOCK_REALTIME nanoseconds, so the adapter hands it "now minus the heartbeat's age".

use std::path::Path;

use quantis_driver::ring::{self, Consumer};

use crate::dispenser::{
    DispenseError, Dispenser, RingSource, SourceError, SourceHealth, SourceStatus,
};

/// A ring file as a dispenser source.
#[derive(Debug)]
pub struct RingFile(Consumer);

impl RingFile {
    /// Opens (and locks, as the ring's only consumer) the ring at `path`.
    pub fn open(path: &Path) -> Result<RingFile, ring::Error> {
        Consumer::open(path).map(RingFile)
    }
}

fn err(e: ring::Error) -> SourceError {
    SourceError(e.to_string())
}

fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl RingSource for RingFile {
    fn available(&mut self) -> Result<usize, SourceError> {
        self.0.available().map_err(err)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        self.0.read(buf).map_err(err)
    }

    fn status(&mut self) -> Result<SourceStatus, SourceError> {
        let s = self.0.status().map_err(err)?;
        let heartbeat_ns = s.heartbeat_age().map_or(0, |age| {
            realtime_ns().saturating_sub(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX))
        });
        let reason = serde_json::to_value(s.reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| s.reason.to_string());
        Ok(SourceStatus {
            epoch: s.epoch,
            heartbeat_ns,
            health: match s.health {
                ring::Health::Starting => SourceHealth::Starting,
                ring::Health::Ok => SourceHealth::Ok,
                ring::Health::Failed => SourceHealth::Failed,
                ring::Health::Stopped => SourceHealth::Stopped,
            },
            reason,
            model: s.identity.model,
            serial: s.identity.serial,
            modules: s.identity.modules,
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

/// Attaches the ring file at `path` to `dispenser` under its file stem; returns the device name.
pub fn attach(dispenser: &Dispenser, path: &Path) -> Result<String, DispenseError> {
    let name = Dispenser::device_name(path)?;
    let ring = RingFile::open(path)
        .map_err(|e| DispenseError::Open { path: path.to_path_buf(), source: err(e) })?;
    dispenser.attach_source(&name, Some(path.to_path_buf()), Box::new(ring))?;
    Ok(name)
}
