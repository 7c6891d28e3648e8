//! Card protocols: module cards (PIO from a FIFO) and chip cards (XDMA card-to-host DMA),
//! written against [`crate::hw::Device`] only, so the same code drives a card and the simulator.
//!
//! [`open`] identifies the family by PCI id and returns a [`Card`]; [`probe`] reads what a card
//! is without changing it. The sequences performed are in `docs/hardware-protocols.md`.

pub mod pio;
pub mod prefetch;
pub mod xdma;

use crate::hw::{self, Device, PciId};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Errors of the card layer. Messages name the operation and the device.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{device} ({id}) is not a Quantis card: expected PCI id 179a:0001 (module card), 1e89:0002 (PCIe-40M) or 1e89:0003 (PCIe-240M)")]
    NotQuantis { device: String, id: PciId },
    #[error("failed to {op} on {device}")]
    Hw {
        op: &'static str,
        device: String,
        #[source]
        source: Box<hw::Error>,
    },
    #[error("{device} is gone: registers read all-ones while trying to {op}")]
    DeviceGone { device: String, op: &'static str },
    #[error("no Quantis module present on {device} (MX_SR {status:#010x}: no HEN bit set)")]
    NoModules { device: String, status: u32 },
    #[error("module failure on {device}: enabled modules {enabled:#x}, working {working:#x} (MX_SR {status:#010x})")]
    ModuleFailure { device: String, enabled: u32, working: u32, status: u32 },
    #[error("modules {modules:#x} on {device} are in test mode (MX_SR {status:#010x}): their data is not known to be random, so the card is not served")]
    TestMode { device: String, modules: u32, status: u32 },
    #[error("FIFO on {device} overflowed on {batches} reads in a row; data is lost faster than it is read")]
    FifoOverflow { device: String, batches: u32 },
    #[error("chip error on {device}: chips present {present:#05x}, packet errors {errors:#05x} (init status {status:#010x})")]
    ChipError { device: String, present: u32, errors: u32, status: u32 },
    #[error("chip card {device} did not become ready within {waited_ms} ms (init status {status:#010x})")]
    NotReady { device: String, waited_ms: u64, status: u32 },
    #[error("DMA engine error on {device}: {detail} (C2H status {status:#010x})")]
    Dma { device: String, status: u32, detail: String },
    #[error("descriptor credits on {device} read {credits} with the C2H channel stopped, expected 0 (PG195: clearing run clears them); no credits granted")]
    StaleCredits { device: String, credits: u32 },
    #[error("the XDMA engine on {device} cannot do this driver's DMA layout: {detail} (C2H alignments register {register:#010x})")]
    DmaLayout { device: String, register: u32, detail: String },
    #[error("no XDMA register BAR on {device}: no BAR shows the XDMA identifiers at +0x2000 (IRQ block) and +0x3000 (config block)")]
    NoXdmaBar { device: String },
    #[error("{device} is a chip card ({model}), which delivers data by DMA; the uio backend has no IOMMU, so DMA would let the card write anywhere in memory: bind the card to vfio-pci and open it as vfio:<pci-address>")]
    DmaNeedsIommu { device: String, model: &'static str },
    #[error("card {device} was read before start()")]
    NotStarted { device: String },
    #[error("invalid card option for {device}: {reason}")]
    BadOption { device: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the card stopped delivering, for the ring's status line.
pub use qrng_ring::Reason;

impl Error {
    /// The reason to publish in the ring's status line when this error stops the card.
    pub fn reason(&self) -> Reason {
        if self.is_device_gone() {
            return Reason::DeviceGone;
        }
        match self {
            Error::NoModules { .. } | Error::ModuleFailure { .. } | Error::TestMode { .. } => {
                Reason::ModuleFailure
            }
            Error::ChipError { .. } | Error::NotReady { .. } => Reason::ChipError,
            Error::Dma { .. }
            | Error::NoXdmaBar { .. }
            | Error::StaleCredits { .. }
            | Error::DmaLayout { .. } => Reason::DmaError,
            Error::Hw { source, .. } if matches!(**source, hw::Error::Dma { .. }) => {
                Reason::DmaError
            }
            _ => Reason::Other,
        }
    }

    /// True if the card disappeared (surprise removal): the daemon exits instead of retrying.
    pub fn is_device_gone(&self) -> bool {
        match self {
            Error::DeviceGone { .. } => true,
            Error::Hw { source, .. } => matches!(**source, hw::Error::DeviceGone { .. }),
            _ => false,
        }
    }
}

pub use crate::regs::ids::{family_of, Family};

/// Chip cards' two output modes (quantis-hardware.md: mode_sel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChipMode {
    /// Post-processed by the card (mode_sel 0xA0000).
    #[default]
    Rng,
    /// Raw samples (mode_sel 0xA0001).
    Sample,
}

/// What a card is.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CardInfo {
    /// The device uri (`vfio:0000:01:00.0`, `sim:pcie-16m`).
    pub device: String,
    /// `pcie-4m`, `pcie-16m`, `pcie-40m`, `pcie-240m`; a module card with another number of
    /// modules is `module-card-<n>m`.
    pub model: String,
    pub family: Family,
    pub pci_id: PciId,
    /// Chip cards' 11-character serial; module cards have no serial register.
    pub serial: Option<String>,
    /// Module cards: CV_SR in hex; chip cards: firmware and board revision.
    pub version: String,
    /// The raw version register (CV_SR or the chip cards' version register).
    pub version_raw: u32,
    /// Module cards: modules with HEN; chip cards: chips present.
    pub modules_present: u32,
    /// Module cards: modules working (SEN and HST; before start, HST only); chip cards:
    /// chips present without a packet error.
    pub modules_healthy: u32,
    /// BAR lengths by index.
    pub bars: [Option<u64>; 6],
    pub simulated: bool,
    /// The nominal data rate of the healthy units.
    pub rate_bytes_per_s: u64,
    /// Chip cards: the mode the card runs in.
    pub chip_mode: Option<ChipMode>,
}

/// Counters a card keeps; the daemon publishes their deltas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CardCounters {
    /// Bytes returned by read().
    pub bytes_read: u64,
    /// Module cards: bytes read from the FIFO and thrown away unreturned: the word read just
    /// before an overflow was seen, the bytes of a read() that ends in an error. With
    /// `bytes_read` and `bytes_discarded` they add up to every byte read from FD_RR; bytes lost
    /// inside the FIFO, or flushed unread with it, are never read and not counted.
    pub bytes_dropped: u64,
    /// FIFO overflows seen (each one flushes the FIFO).
    pub overflows: u64,
    /// Bytes discarded around a reset: chip cards' post-reset warm-up, module cards' checked
    /// bytes read but not yet returned at a start or stop, and the batches read ahead that
    /// [`prefetch::Prefetch`] throws away at a start or stop.
    pub bytes_discarded: u64,
}

/// An opened, identified card.
pub trait Card: Send + fmt::Debug {
    fn info(&self) -> &CardInfo;
    /// Reset, start-up sequence and enable (chip cards also arm the DMA ring and the discard).
    fn start(&mut self) -> Result<()>;
    /// Raw random bytes. Fills `buf`, sleeping (never spinning) while the card produces; returns
    /// early with what it has when the read timeout (default 50 ms) passes, `Ok(0)` if nothing
    /// came. Health, chip, DMA and unplug failures are errors.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize>;
    /// Disables modules / runs the shutdown sequence: the card is left quiet.
    fn stop(&mut self) -> Result<()>;
    fn counters(&self) -> CardCounters;
}

/// Why a wait happens, so a clock can treat hardware sequencing and data polling differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// A delay the start-up or shutdown sequence requires of the hardware.
    Sequence,
    /// Waiting for data or a status bit.
    Poll,
}

/// Time source and sleeper, injectable so tests and the simulator need not really wait.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Monotonic time since an arbitrary origin.
    fn now(&self) -> Duration;
    fn sleep(&self, d: Duration, why: Wait);
}

/// The real clock. With `skip_sequence_waits` the hardware sequencing delays are skipped
/// (used for a simulator that does not model them, see [`Device::sequence_waits`]).
#[derive(Debug, Default)]
pub struct SystemClock {
    pub skip_sequence_waits: bool,
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        origin().elapsed()
    }
    fn sleep(&self, d: Duration, why: Wait) {
        if !(self.skip_sequence_waits && why == Wait::Sequence) {
            std::thread::sleep(d);
        }
    }
}

/// Options for [`open`].
#[derive(Clone, Debug)]
pub struct CardOptions {
    /// Module cards: modules to enable (default: all present).
    pub modules: Option<u32>,
    /// Chip cards: RNG (default) or SAMPLE mode.
    pub chip_mode: ChipMode,
    /// How long read() waits for data before returning Ok(0).
    pub read_timeout: Duration,
    /// Clock; default: the system clock, which honours the hardware's sequence waits (IDQ's
    /// start-up and shutdown delays) where the device needs them ([`Device::sequence_waits`]:
    /// real cards, and simulators given `startup-delay=`/`shutdown-delay=`) and skips them on
    /// a simulator without modelled delays, so tests stay fast.
    pub clock: Option<Arc<dyn Clock>>,
}

impl Default for CardOptions {
    fn default() -> Self {
        CardOptions {
            modules: None,
            chip_mode: ChipMode::Rng,
            read_timeout: Duration::from_millis(50),
            clock: None,
        }
    }
}

impl CardOptions {
    fn clock_for(&self, dev: &dyn Device) -> Arc<dyn Clock> {
        self.clock
            .clone()
            .unwrap_or_else(|| Arc::new(SystemClock { skip_sequence_waits: !dev.sequence_waits() }))
    }
}

/// Register access with the card layer's error context.
pub(crate) fn rd(dev: &mut dyn Device, bar: u8, off: u64, op: &'static str) -> Result<u32> {
    dev.read32(bar, off).map_err(|source| hw_error(dev, op, source))
}

/// Like [`rd`], and an all-ones value means the card is gone (a PCIe read to a removed device
/// completes with all-ones). Only for registers that can never legitimately read all-ones.
pub(crate) fn rd_live(dev: &mut dyn Device, bar: u8, off: u64, op: &'static str) -> Result<u32> {
    let v = rd(dev, bar, off, op)?;
    if v == u32::MAX {
        return Err(Error::DeviceGone { device: dev.info().name.clone(), op });
    }
    Ok(v)
}

pub(crate) fn wr(dev: &mut dyn Device, bar: u8, off: u64, v: u32, op: &'static str) -> Result<()> {
    dev.write32(bar, off, v).map_err(|source| hw_error(dev, op, source))
}

/// Wraps an access-layer error with the operation and the device.
pub(crate) fn hw_error(dev: &dyn Device, op: &'static str, source: hw::Error) -> Error {
    Error::Hw { op, device: dev.info().name.clone(), source: Box::new(source) }
}

/// Opens the card on `dev`: identifies the family by PCI id. Does not touch the card's state;
/// call [`Card::start`].
pub fn open(dev: Box<dyn Device>, opts: &CardOptions) -> Result<Box<dyn Card>> {
    let info = dev.info();
    match family_of(info.id) {
        None => Err(Error::NotQuantis { device: info.name.clone(), id: info.id }),
        Some((Family::Module, _)) => Ok(Box::new(pio::PioCard::open(dev, opts)?)),
        Some((Family::Chip, model)) => {
            let model = model.unwrap_or("chip card");
            if !info.dma {
                return Err(Error::DmaNeedsIommu { device: info.name.clone(), model });
            }
            Ok(Box::new(xdma::XdmaCard::open(dev, opts, model)?))
        }
    }
}

/// Reads what the card on `dev` is (model, serial, versions, modules). Only reads registers that
/// have no side effects, so the card is left exactly as found.
pub fn probe(dev: &mut dyn Device) -> Result<CardInfo> {
    let info = dev.info();
    match family_of(info.id) {
        None => Err(Error::NotQuantis { device: info.name.clone(), id: info.id }),
        Some((Family::Module, _)) => pio::probe(dev),
        Some((Family::Chip, model)) => xdma::probe(dev, model.unwrap_or("chip card")),
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod pio_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod xdma_tests;
