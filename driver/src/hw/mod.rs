//! Access layer: how the driver reaches a card's registers and memory.
//!
//! One trait, [`Device`], gives 32-bit register access on a BAR, DMA-buffer mapping and (where a
//! backend has them) interrupts. Implementations:
//! - [`vfio`]: VFIO through the IOMMU (vfio-ioctls): BAR mmap, DMA map/unmap, eventfd interrupts;
//! - [`uio`]: uio_pci_generic plus sysfs resource mmap: register access only, so module cards only
//!   (without an IOMMU there is no safe DMA);
//! - [`sim`]: a register-level simulator of both card families.
//!
//! The card protocols in [`crate::card`] are written against [`Device`] only.

pub mod dma;
pub mod mmio;
pub mod pci;
pub mod sim;
pub mod uio;
pub mod vfio;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use dma::DmaBuffer;

/// Errors of the access layer. Messages are lower-case and name the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid device uri {uri:?}: {reason}")]
    BadUri { uri: String, reason: String },
    #[error("invalid PCI address {0:?} (expected [dddd:]bb:dd.f, hexadecimal)")]
    BadPciAddress(String),
    #[error("BAR {bar} is not mapped on {device}")]
    NoSuchBar { device: String, bar: u8 },
    #[error("register offset {offset:#x} is outside BAR {bar} ({len:#x} bytes) on {device}")]
    OutOfBounds { device: String, bar: u8, offset: u64, len: u64 },
    #[error("register offset {offset:#x} on BAR {bar} is not 4-byte aligned")]
    Unaligned { bar: u8, offset: u64 },
    #[error("{what} is not supported by the {backend} backend: {why}")]
    Unsupported { backend: &'static str, what: &'static str, why: String },
    #[error("device {device} is gone (surprise removal: registers read all-ones)")]
    DeviceGone { device: String },
    #[error("DMA error on {device}: {reason}")]
    Dma { device: String, reason: String },
    #[error("no PCI device {device}: {path} does not exist")]
    NoSuchDevice { device: String, path: String },
    #[error(
        "{device} is bound to {}, not {wanted}; to rebind it (as root): {}",
        .bound.as_deref().unwrap_or("no driver"),
        pci::bind_commands(*.device, .bound.as_deref(), .wanted).join(" && ")
    )]
    WrongDriver { device: PciAddress, bound: Option<String>, wanted: &'static str },
    #[error("{device} has no IOMMU group: the IOMMU is off or absent (boot with intel_iommu=on or amd_iommu=on){hint}")]
    NoIommuGroup { device: String, hint: String },
    #[error(
        "IOMMU group {group} of {device} is not viable: every device in the group must be bound to \
         vfio-pci (or to no driver); the others in group {group}: {others}"
    )]
    GroupNotViable { device: String, group: u32, others: String },
    #[error("permission denied opening {path} for {device}: run as root or give this user access to {path} (udev rule)")]
    PermissionDenied { device: String, path: String },
    #[error(
        "cannot pin {needed} bytes of DMA memory for {device}: RLIMIT_MEMLOCK is {limit}; raise it to \
         at least {needed} bytes (ulimit -l, or LimitMEMLOCK= in the systemd unit)"
    )]
    MemlockLimit { device: String, limit: String, needed: u64 },
    #[error("failed to {op} for {device}")]
    Io {
        op: String,
        device: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use crate::regs::ids::PciId;

/// A PCI function address `dddd:bb:dd.f`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

/// Serialized as its sysfs name (`0000:3b:00.0`), the form users type.
impl serde::Serialize for PciAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.device, self.function)
    }
}

impl FromStr for PciAddress {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::BadPciAddress(s.to_owned());
        let (domain, rest) = match s.matches(':').count() {
            2 => {
                let (d, r) = s.split_once(':').ok_or_else(bad)?;
                (u16::from_str_radix(d, 16).map_err(|_| bad())?, r)
            }
            1 => (0, s),
            _ => return Err(bad()),
        };
        let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
        let (dev, func) = rest.split_once('.').ok_or_else(bad)?;
        let bus = u8::from_str_radix(bus, 16).map_err(|_| bad())?;
        let device = u8::from_str_radix(dev, 16).map_err(|_| bad())?;
        let function = u8::from_str_radix(func, 16).map_err(|_| bad())?;
        if device > 0x1f || function > 7 {
            return Err(bad());
        }
        Ok(PciAddress { domain, bus, device, function })
    }
}

/// What `--device` names: `vfio:<pci-address>`, `uio:<pci-address>` or `sim:<model>[?k=v&…]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceUri {
    Vfio(PciAddress),
    Uio(PciAddress),
    /// The text after `sim:`, parsed by [`sim::SimSpec`].
    Sim(String),
}

impl FromStr for DeviceUri {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::BadUri { uri: s.to_owned(), reason: reason.to_owned() };
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected vfio:<pci>, uio:<pci> or sim:<model>"))?;
        match scheme {
            "vfio" => Ok(DeviceUri::Vfio(rest.parse()?)),
            "uio" => Ok(DeviceUri::Uio(rest.parse()?)),
            "sim" if !rest.is_empty() => Ok(DeviceUri::Sim(rest.to_owned())),
            "sim" => Err(bad("sim: needs a model, e.g. sim:pcie-16m")),
            _ => Err(bad("unknown scheme (expected vfio, uio or sim)")),
        }
    }
}

impl fmt::Display for DeviceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceUri::Vfio(a) => write!(f, "vfio:{a}"),
            DeviceUri::Uio(a) => write!(f, "uio:{a}"),
            DeviceUri::Sim(s) => write!(f, "sim:{s}"),
        }
    }
}

/// Static facts about an opened device.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceInfo {
    /// The uri it was opened with, for messages (`vfio:0000:01:00.0`, `sim:pcie-16m`).
    pub name: String,
    /// PCI vendor:device as read from config space (the simulator reports the modelled card's).
    pub id: PciId,
    /// Length in bytes of each BAR the backend mapped, by index (None: not present / not mapped).
    pub bars: [Option<u64>; 6],
    /// True for the simulator: everything it produces must be labelled "simulated".
    pub simulated: bool,
    /// The backend can give the card DMA access confined by an IOMMU (VFIO, or the simulator's
    /// map table). False for UIO: there, a bus-mastering card could write anywhere in memory.
    pub dma: bool,
}

/// 32-bit register access on a card's BARs, DMA buffers and interrupts.
///
/// Offsets are in bytes from the start of the BAR, must be 4-byte aligned and inside the BAR; each
/// access is exactly one 32-bit volatile load or store (for hardware backends).
pub trait Device: Send {
    fn info(&self) -> &DeviceInfo;

    fn read32(&mut self, bar: u8, offset: u64) -> Result<u32>;

    fn write32(&mut self, bar: u8, offset: u64, value: u32) -> Result<()>;

    /// Reads the register at `offset` `out.len()` times in a row, as that many [`Device::read32`]
    /// calls would (for a FIFO data port: each read pops a word). Backends may do it with less
    /// overhead per word; on an error the words before it have been read.
    fn read32_repeat(&mut self, bar: u8, offset: u64, out: &mut [u32]) -> Result<()> {
        for w in out {
            *w = self.read32(bar, offset)?;
        }
        Ok(())
    }

    /// Allocates `len` bytes (rounded up to whole pages) of pinned, page-aligned host memory and
    /// maps it for the device's DMA; the buffer carries its IOVA.
    fn dma_alloc(&mut self, len: usize) -> Result<DmaBuffer>;

    /// Unmaps a buffer from the device. After this the device can no longer reach it.
    fn dma_free(&mut self, buf: DmaBuffer) -> Result<()>;

    /// Function-level reset of the PCI device, where the backend can do one.
    fn reset(&mut self) -> Result<()>;

    /// True if the card needs the start-up and shutdown delays of its protocol really waited
    /// for: every real card; a simulator only where it models them (chip cards'
    /// `startup-delay=`/`shutdown-delay=`), so the default simulator stays fast.
    fn sequence_waits(&self) -> bool {
        !self.info().simulated
    }

    /// Waits up to `timeout` for an interrupt; `Ok(true)` if one arrived.
    fn wait_interrupt(&mut self, timeout: Duration) -> Result<bool> {
        let _ = timeout;
        Err(Error::Unsupported {
            backend: "this",
            what: "interrupts",
            why: "the backend does not deliver interrupts".into(),
        })
    }
}

/// Waits until `fd` is readable or `timeout` passes; `Ok(true)` if readable. Retries on EINTR.
pub(crate) fn poll_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    timeout: Duration,
) -> std::io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, ms) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Opens the device a uri names.
pub fn open(uri: &DeviceUri) -> Result<Box<dyn Device>> {
    match uri {
        DeviceUri::Vfio(addr) => Ok(Box::new(vfio::VfioDevice::open(*addr)?)),
        DeviceUri::Uio(addr) => Ok(Box::new(uio::UioDevice::open(*addr)?)),
        DeviceUri::Sim(spec) => Ok(Box::new(sim::SimDevice::new(spec.parse()?)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_address_round_trips() {
        let a: PciAddress = "0000:3b:00.1".parse().unwrap();
        assert_eq!(a, PciAddress { domain: 0, bus: 0x3b, device: 0, function: 1 });
        assert_eq!(a.to_string(), "0000:3b:00.1");
        let short: PciAddress = "3b:00.1".parse().unwrap();
        assert_eq!(short, a);
    }

    #[test]
    fn pci_address_rejects_garbage() {
        for s in ["", "3b", "3b:00", "zz:00.0", "00:20.0", "00:00.8", "1:2:3:4.0"] {
            assert!(s.parse::<PciAddress>().is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn device_uri_parses_each_scheme() {
        assert!(matches!("vfio:0000:01:00.0".parse(), Ok(DeviceUri::Vfio(_))));
        assert!(matches!("uio:01:00.0".parse(), Ok(DeviceUri::Uio(_))));
        assert_eq!(
            "sim:pcie-4m?rate=0".parse::<DeviceUri>().unwrap(),
            DeviceUri::Sim("pcie-4m?rate=0".into())
        );
        for s in ["pcie-4m", "sim:", "usb:1", "vfio:nope"] {
            assert!(s.parse::<DeviceUri>().is_err(), "{s:?} should be rejected");
        }
    }
}
