//! Register-level simulator of Quantis module cards and chip cards. (Placeholder until the
//! simulator lands: every call reports that it is not there yet.)

use super::{Device, DeviceInfo, DmaBuffer, Error, Result};
use std::str::FromStr;
use std::time::Duration;

/// A parsed `sim:<model>[?key=value&…]` specification.
#[derive(Clone, Debug)]
pub struct SimSpec {
    pub model: String,
}

impl FromStr for SimSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(SimSpec { model: s.split('?').next().unwrap_or_default().to_owned() })
    }
}

/// The simulated device.
#[derive(Debug)]
pub struct SimDevice {
    info: DeviceInfo,
}

fn missing() -> Error {
    Error::Unsupported { backend: "sim", what: "the simulator", why: "not built yet".into() }
}

impl SimDevice {
    pub fn new(_spec: SimSpec) -> Result<SimDevice> {
        Err(missing())
    }
}

impl Device for SimDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }
    fn read32(&mut self, _bar: u8, _offset: u64) -> Result<u32> {
        Err(missing())
    }
    fn write32(&mut self, _bar: u8, _offset: u64, _value: u32) -> Result<()> {
        Err(missing())
    }
    fn dma_alloc(&mut self, _len: usize) -> Result<DmaBuffer> {
        Err(missing())
    }
    fn dma_free(&mut self, _buf: DmaBuffer) -> Result<()> {
        Err(missing())
    }
    fn reset(&mut self) -> Result<()> {
        Err(missing())
    }
    fn wait_interrupt(&mut self, _timeout: Duration) -> Result<bool> {
        Err(missing())
    }
}
