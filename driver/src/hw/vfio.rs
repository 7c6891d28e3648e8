//! The vfio backend. (Placeholder until the vfio work lands.)

use super::{Device, DeviceInfo, DmaBuffer, Error, PciAddress, Result};

#[derive(Debug)]
pub struct VfioDevice {
    info: DeviceInfo,
}

fn missing() -> Error {
    Error::Unsupported { backend: "vfio", what: "the vfio backend", why: "not built yet".into() }
}

impl VfioDevice {
    pub fn open(_addr: PciAddress) -> Result<VfioDevice> {
        Err(missing())
    }
}

impl Device for VfioDevice {
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
}
