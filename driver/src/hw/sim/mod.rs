//! Register-level simulator of Quantis module cards (PCIe-4M, PCIe-16M) and chip cards
//! (PCIe-40M, PCIe-240M), behind the same [`Device`] trait as the VFIO and UIO backends.
//!
//! The card protocols in [`crate::card`] cannot tell it from hardware: module cards show FIFO
//! flags, overflow and module status bits in BAR 1; chip cards show the IDQ register block in
//! BAR 0 and a Xilinx XDMA engine (PG195) in BAR 1 whose C2H channel walks descriptors in host
//! memory and writes through this device's DMA-map table. Everything it produces is labelled
//! simulated ([`DeviceInfo::simulated`]). Behaviour and chosen values: `docs/simulator.md`.
//!
//! Spec syntax: `<model>[?key=value&…]`, models `pcie-4m`, `pcie-16m`, `pcie-40m`, `pcie-240m`;
//! keys `rate`, `bias`, `seed`, `fault`, `fault-after`, `fault-for`, `modules`, `pio-latency`;
//! module cards also `status-lag`, `test-mode`; chip cards also `startup-delay`,
//! `shutdown-delay`, `dma-alignments`.

mod chip;
mod module;
pub mod noise;

pub use chip::SAMPLE_MODE_BIAS;

use super::{Device, DeviceInfo, DmaBuffer, Error, PciId, Result};
use crate::regs::ids;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The modelled cards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    Pcie4m,
    Pcie16m,
    Pcie40m,
    Pcie240m,
}

impl Model {
    pub const ALL: [Model; 4] = [Model::Pcie4m, Model::Pcie16m, Model::Pcie40m, Model::Pcie240m];

    pub fn name(self) -> &'static str {
        match self {
            Model::Pcie4m => "pcie-4m",
            Model::Pcie16m => "pcie-16m",
            Model::Pcie40m => "pcie-40m",
            Model::Pcie240m => "pcie-240m",
        }
    }

    /// PCI ids from quantis-hardware.md ("Two hardware generations").
    pub fn pci_id(self) -> PciId {
        match self {
            Model::Pcie4m | Model::Pcie16m => ids::MODULE_CARD,
            Model::Pcie40m => ids::CHIP_CARD_40M,
            Model::Pcie240m => ids::CHIP_CARD_240M,
        }
    }

    /// Noise units: modules (module cards) or chips (chip cards).
    pub fn units(self) -> u32 {
        match self {
            Model::Pcie4m => 1,
            Model::Pcie16m => 4,
            Model::Pcie40m => 2,
            Model::Pcie240m => 12,
        }
    }

    pub fn is_module_card(self) -> bool {
        matches!(self, Model::Pcie4m | Model::Pcie16m)
    }

    /// The real per-unit bit rate: 4 Mbit/s per module, about 20 Mbit/s per chip.
    pub fn default_rate_bits(self) -> u64 {
        if self.is_module_card() {
            4_000_000
        } else {
            20_000_000
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Injectable faults (`fault=`), each shown the way a real one would be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every data bit reads 0.
    Stuck0,
    /// Every data bit reads 1.
    Stuck1,
    /// The same 32-bit word repeats forever.
    Repeat,
    /// P(1) jumps to 0.5 + [`noise::FAULT_BIAS`].
    Bias,
    /// One module (chip) of several goes stuck at 0 while its status bit stays good: the words
    /// it contributes (the stream is dealt out round-robin, one 32-bit word per unit) read 0.
    ModuleStuck,
    /// One bit lane stuck at 1: bit 0 of every 32-bit word (bit 0 of bytes 0, 4, 8, …).
    StuckBit,
    /// P(1) drifts up linearly from 0.5 + bias by [`noise::FAULT_BIAS`] over
    /// [`noise::DRIFT_SPAN`] bytes, then stays there.
    Drift,
    /// Module cards: the FIFO overflows on every fill (error bit in FS_RR).
    FifoOverflow,
    /// Module 0's HST bit clears and it stops producing (module cards); chip 0's packet-error
    /// bit sets in reg_init_status_chk (chip cards).
    ModuleFail,
    /// Chip cards: the C2H engine's descriptor fetches complete with Unsupported Request (with
    /// `fault-for=`, until that many bytes of noise were lost to the stopped engine).
    DmaError,
    /// Surprise removal: every register reads all-ones, writes vanish, DMA stops.
    Unplug,
    /// The source stops producing and nothing reports it: module cards' FIFO stays empty with
    /// every status bit good; chip cards' engine stays busy with no descriptor completing and
    /// no error bit. Bytes already buffered on the card are still delivered.
    Stall,
}

impl Fault {
    fn parse(s: &str) -> Option<Fault> {
        Some(match s {
            "stuck0" => Fault::Stuck0,
            "stuck1" => Fault::Stuck1,
            "repeat" => Fault::Repeat,
            "bias" => Fault::Bias,
            "module-stuck" => Fault::ModuleStuck,
            "stuck-bit" => Fault::StuckBit,
            "drift" => Fault::Drift,
            "fifo-overflow" => Fault::FifoOverflow,
            "module-fail" => Fault::ModuleFail,
            "dma-error" => Fault::DmaError,
            "unplug" => Fault::Unplug,
            "stall" => Fault::Stall,
            _ => return None,
        })
    }
}

/// A parsed `sim:<model>[?key=value&…]` specification.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSpec {
    /// The text it was parsed from (without `sim:`).
    pub text: String,
    pub model: Model,
    /// Bits per second per module or chip; `None` = the model's real rate; `Some(0)` = unlimited.
    pub rate_bits: Option<u64>,
    /// Offset of P(bit = 1) from 0.5, in [-0.5, 0.5].
    pub bias: f64,
    /// Fixed seed (tests); `None` = 32 bytes from the OS.
    pub seed: Option<u64>,
    pub fault: Option<Fault>,
    /// Bytes of noise produced before the fault starts.
    pub fault_after: u64,
    /// Data faults and `stall` only: bytes of noise the fault lasts before the source is healthy
    /// again (an intermittent fault; a stall lasts as long as the source would have taken to
    /// produce that many bytes); `None` = it never clears.
    pub fault_for: Option<u64>,
    /// Module cards: mask of modules present (default: all of the model's).
    pub modules: Option<u32>,
    // Chip-card timing and XDMA configuration (`startup-delay`, `shutdown-delay`,
    // `dma-alignments`).
    /// Chip cards: time from the reset release until the card is ready and delivers.
    pub startup_delay: Option<Duration>,
    /// Chip cards: time after the shutdown value during which the card ignores writes.
    pub shutdown_delay: Option<Duration>,
    /// Chip cards: the C2H alignment register (0x4C) value.
    pub dma_alignments: Option<u32>,
    /// Module cards: how long a module's HST bit stays clear after MX_ER enables it.
    pub status_lag: Duration,
    /// Module cards: modules whose TM (test mode) bit is set from power-on and stays set.
    pub test_mode: u32,
    /// Every register read busy-waits this long, as an uncached PCIe read stalls the CPU.
    pub pio_latency: Duration,
}

impl SimSpec {
    /// Bytes per second for one module/chip (0 = unlimited).
    pub fn unit_bytes_per_s(&self) -> f64 {
        self.rate_bits.unwrap_or(self.model.default_rate_bits()) as f64 / 8.0
    }

    /// The 32-byte noise seed: from `seed=` (with the model mixed in) or from the OS.
    pub(crate) fn noise_seed(&self) -> Result<[u8; 32]> {
        let mut s = [0u8; 32];
        match self.seed {
            Some(v) => {
                s[..8].copy_from_slice(&v.to_le_bytes());
                s[8..16].copy_from_slice(b"quantis-");
                s[16] = self.model as u8;
            }
            None => getrandom::fill(&mut s).map_err(|e| Error::Io {
                op: "seed the simulator from the OS".into(),
                device: format!("sim:{}", self.text),
                source: std::io::Error::from(e),
            })?,
        }
        Ok(s)
    }
}

/// Parses a rate with an optional k/M/G suffix (decimal).
fn parse_rate(v: &str) -> Option<u64> {
    let (num, mult) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1_000),
        b'M' => (&v[..v.len() - 1], 1_000_000),
        b'G' => (&v[..v.len() - 1], 1_000_000_000),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Parses a duration: a decimal number and a unit, `ns`, `us` (or `µs`), `ms` or `s`.
pub(crate) fn parse_duration(v: &str) -> Option<Duration> {
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = v.split_at(split);
    let ns_per = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    let x: f64 = num.parse().ok()?;
    let ns = x * ns_per;
    (0.0..1e18).contains(&ns).then(|| Duration::from_nanos(ns.round() as u64))
}

/// The keys of the module cards' status and PIO timing model (`status-lag`, `test-mode`,
/// `pio-latency`).
fn parse_pio_key(
    spec: &mut SimSpec,
    k: &str,
    v: &str,
    bad: &dyn Fn(String) -> Error,
) -> Result<()> {
    let badv = |what: &str| bad(format!("bad value {v:?} for {k}: expected {what}"));
    let duration = || parse_duration(v).ok_or_else(|| badv("a duration, e.g. 800ns, 50ms or 1.5s"));
    if k != "pio-latency" && !spec.model.is_module_card() {
        return Err(bad(format!("{k}= applies to module cards only, not {}", spec.model)));
    }
    match k {
        "status-lag" => spec.status_lag = duration()?,
        "pio-latency" => spec.pio_latency = duration()?,
        _ => {
            let all = (1u64 << spec.model.units()) - 1;
            let m = parse_int(v).ok_or_else(|| badv("a module mask, e.g. 0x1"))?;
            if m == 0 || m & !all != 0 {
                return Err(badv(&format!("a non-empty mask within {all:#x}")));
            }
            spec.test_mode = m as u32;
        }
    }
    Ok(())
}

/// Parses `dma-alignments=`: `0` (a register reading 0) or `a/g/b`, each field 1-255.
fn parse_alignments(v: &str) -> Option<u32> {
    if v == "0" {
        return Some(0);
    }
    let f: Vec<u32> = v
        .split('/')
        .map(|x| x.parse().ok().filter(|n| (1..=255).contains(n)))
        .collect::<Option<_>>()?;
    let [addr, granularity, address_bits] = f[..] else { return None };
    Some(crate::regs::xdma::Alignments { addr, granularity, address_bits }.encode())
}

fn parse_int(v: &str) -> Option<u64> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

impl FromStr for SimSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadUri { uri: format!("sim:{s}"), reason };
        let (model, query) = s.split_once('?').unwrap_or((s, ""));
        let model = Model::ALL.into_iter().find(|m| m.name() == model).ok_or_else(|| {
            bad(format!("unknown simulator model {model:?} (expected pcie-4m, pcie-16m, pcie-40m or pcie-240m)"))
        })?;
        let mut spec = SimSpec {
            text: s.to_owned(),
            model,
            rate_bits: None,
            bias: 0.0,
            seed: None,
            fault: None,
            fault_after: 0,
            fault_for: None,
            modules: None,
            startup_delay: None,
            shutdown_delay: None,
            dma_alignments: None,
            status_lag: Duration::ZERO,
            test_mode: 0,
            pio_latency: Duration::ZERO,
        };
        let mut seen = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) =
                pair.split_once('=').ok_or_else(|| bad(format!("{pair:?} is not key=value")))?;
            if seen.contains(&k) {
                return Err(bad(format!("key {k:?} given twice")));
            }
            seen.push(k);
            let badv = |what: &str| bad(format!("bad value {v:?} for {k}: expected {what}"));
            match k {
                "rate" => {
                    spec.rate_bits = Some(parse_rate(v).ok_or_else(|| badv("bits/s, e.g. 4000000, 4M or 0 (unlimited)"))?)
                }
                "bias" => {
                    let b: f64 = v.parse().map_err(|_| badv("a number in [-0.5, 0.5]"))?;
                    if !(-0.5..=0.5).contains(&b) {
                        return Err(badv("a number in [-0.5, 0.5]"));
                    }
                    spec.bias = b;
                }
                "seed" => spec.seed = Some(parse_int(v).ok_or_else(|| badv("an unsigned 64-bit integer"))?),
                "fault" => {
                    spec.fault = Some(Fault::parse(v).ok_or_else(|| {
                        badv("stuck0, stuck1, repeat, bias, module-stuck, stuck-bit, drift, fifo-overflow, module-fail, dma-error, unplug or stall")
                    })?)
                }
                "fault-after" => spec.fault_after = parse_int(v).ok_or_else(|| badv("a byte count"))?,
                "fault-for" => {
                    spec.fault_for = Some(parse_int(v).filter(|&n| n > 0).ok_or_else(|| badv("a non-zero byte count"))?)
                }
                "modules" => {
                    let m = parse_int(v).ok_or_else(|| badv("a module mask, e.g. 0xf"))?;
                    let all = (1u64 << model.units()) - 1;
                    if !model.is_module_card() {
                        return Err(bad(format!("modules= applies to module cards only, not {model}")));
                    }
                    if m == 0 || m & !all != 0 {
                        return Err(badv(&format!("a non-empty mask within {all:#x}")));
                    }
                    spec.modules = Some(m as u32);
                }
                "startup-delay" | "shutdown-delay" | "dma-alignments" if model.is_module_card() => {
                    return Err(bad(format!("{k}= applies to chip cards only, not {model}")));
                }
                "startup-delay" => spec.startup_delay = Some(parse_duration(v).ok_or_else(|| badv("a duration, e.g. 500ms or 1s"))?),
                "shutdown-delay" => spec.shutdown_delay = Some(parse_duration(v).ok_or_else(|| badv("a duration, e.g. 500ms or 1s"))?),
                "dma-alignments" => {
                    spec.dma_alignments = Some(parse_alignments(v).ok_or_else(|| {
                        badv("0 or <address alignment>/<length granularity>/<address bits>, each 1-255, e.g. 64/1/32")
                    })?)
                }
                "status-lag" | "test-mode" | "pio-latency" => parse_pio_key(&mut spec, k, v, &bad)?,
                _ => {
                    return Err(bad(format!(
                        "unknown key {k:?} (expected rate, bias, seed, fault, fault-after, fault-for, modules, pio-latency, status-lag, test-mode, startup-delay, shutdown-delay or dma-alignments)"
                    )))
                }
            }
        }
        match spec.fault {
            Some(Fault::FifoOverflow) if !model.is_module_card() => {
                return Err(bad(format!(
                    "fault=fifo-overflow applies to module cards only, not {model}"
                )))
            }
            Some(Fault::DmaError) if model.is_module_card() => {
                return Err(bad(format!("fault=dma-error applies to chip cards only, not {model}")))
            }
            Some(Fault::ModuleStuck) if noise::units_of(&spec) < 2 => {
                return Err(bad(format!(
                    "fault=module-stuck needs two or more modules; sim:{s} has one"
                )))
            }
            _ => {}
        }
        if spec.fault.is_none() && seen.contains(&"fault-after") {
            return Err(bad("fault-after= needs a fault=".into()));
        }
        if spec.fault_for.is_some()
            && !matches!(
                spec.fault,
                Some(Fault::Stuck0 | Fault::Stuck1 | Fault::Repeat | Fault::Bias | Fault::Stall)
                    | Some(Fault::ModuleStuck | Fault::StuckBit | Fault::Drift | Fault::DmaError)
            )
        {
            return Err(bad(
                "fault-for= applies to the data faults (stuck0, stuck1, repeat, bias, module-stuck, stuck-bit, drift), to stall and to dma-error only".into(),
            ));
        }
        Ok(spec)
    }
}

/// The DMA-map table: what the simulated card can reach, by IOVA. Holds shared handles, so a
/// mapped buffer stays allocated until it is unmapped.
#[derive(Debug)]
pub(crate) struct DmaTable {
    next_iova: u64,
    maps: Vec<DmaBuffer>,
}

/// An access to an IOVA that is not mapped (what an IOMMU would fault on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unmapped;

impl DmaTable {
    /// IOVAs start above 4 GiB so the high halves of address registers are exercised.
    pub(crate) const FIRST_IOVA: u64 = 0x1_0000_0000;

    fn new() -> DmaTable {
        DmaTable { next_iova: Self::FIRST_IOVA, maps: Vec::new() }
    }

    fn find(&self, iova: u64, len: usize) -> Result<(&DmaBuffer, usize), Unmapped> {
        let end = iova.checked_add(len as u64).ok_or(Unmapped)?;
        self.maps
            .iter()
            .find(|b| iova >= b.iova() && end <= b.iova() + b.len() as u64)
            .map(|b| (b, (iova - b.iova()) as usize))
            .ok_or(Unmapped)
    }

    pub(crate) fn read(&self, iova: u64, out: &mut [u8]) -> Result<(), Unmapped> {
        let (b, off) = self.find(iova, out.len())?;
        b.read(off, out);
        Ok(())
    }

    pub(crate) fn write(&self, iova: u64, data: &[u8]) -> Result<(), Unmapped> {
        let (b, off) = self.find(iova, data.len())?;
        b.write(off, data);
        Ok(())
    }
}

#[derive(Debug)]
enum Card {
    Module(Box<module::ModuleCard>),
    Chip(Box<chip::ChipCard>),
}

/// The simulated device.
#[derive(Debug)]
pub struct SimDevice {
    info: DeviceInfo,
    spec: SimSpec,
    card: Card,
    dma: DmaTable,
}

impl SimDevice {
    pub fn new(spec: SimSpec) -> Result<SimDevice> {
        let seed = spec.noise_seed()?;
        let mut bars = [None; 6];
        let card = if spec.model.is_module_card() {
            bars[1] = Some(crate::regs::pio::WINDOW);
            Card::Module(Box::new(module::ModuleCard::new(&spec, seed)))
        } else {
            bars[0] = Some(chip::IDQ_BAR_LEN);
            bars[1] = Some(crate::regs::xdma::BAR_LEN);
            Card::Chip(Box::new(chip::ChipCard::new(&spec, seed)))
        };
        let info = DeviceInfo {
            name: format!("sim:{}", spec.text),
            id: spec.model.pci_id(),
            bars,
            simulated: true,
            dma: true,
        };
        Ok(SimDevice { info, spec, card, dma: DmaTable::new() })
    }

    pub fn spec(&self) -> &SimSpec {
        &self.spec
    }

    /// Bytes of noise produced so far (what `fault-after` counts), for tests.
    pub fn noise_produced(&self) -> u64 {
        match &self.card {
            Card::Module(m) => m.noise_produced(),
            Card::Chip(c) => c.noise_produced(),
        }
    }

    /// The start of a register read, when reads cost time (`pio-latency`).
    fn read_started(&self) -> Option<Instant> {
        (!self.spec.pio_latency.is_zero()).then(Instant::now)
    }

    /// Busy-waits until `reads` register reads begun at `start` have cost `pio-latency` each:
    /// the CPU is stalled for the round trip of each non-posted read, whatever the simulator's
    /// own work took of it.
    fn pay_reads(&self, start: Option<Instant>, reads: usize) {
        let Some(start) = start else { return };
        let until = start + self.spec.pio_latency * u32::try_from(reads).unwrap_or(u32::MAX);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }

    fn check(&self, bar: u8, offset: u64) -> Result<()> {
        let len = self
            .info
            .bars
            .get(usize::from(bar))
            .copied()
            .flatten()
            .ok_or_else(|| Error::NoSuchBar { device: self.info.name.clone(), bar })?;
        if !offset.is_multiple_of(4) {
            return Err(Error::Unaligned { bar, offset });
        }
        if offset.checked_add(4).is_none_or(|e| e > len) {
            return Err(Error::OutOfBounds { device: self.info.name.clone(), bar, offset, len });
        }
        Ok(())
    }
}

impl Device for SimDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn read32(&mut self, bar: u8, offset: u64) -> Result<u32> {
        self.check(bar, offset)?;
        let start = self.read_started();
        let v = match &mut self.card {
            Card::Module(m) => m.read(offset),
            Card::Chip(c) => c.read(bar, offset, &self.dma),
        };
        self.pay_reads(start, 1);
        Ok(v)
    }

    fn read32_repeat(&mut self, bar: u8, offset: u64, out: &mut [u32]) -> Result<()> {
        // One bounds check and dispatch for the whole run instead of one per word.
        self.check(bar, offset)?;
        let start = self.read_started();
        match &mut self.card {
            Card::Module(m) => m.read_repeat(offset, out),
            Card::Chip(c) => out.iter_mut().for_each(|w| *w = c.read(bar, offset, &self.dma)),
        }
        self.pay_reads(start, out.len());
        Ok(())
    }

    fn write32(&mut self, bar: u8, offset: u64, value: u32) -> Result<()> {
        self.check(bar, offset)?;
        match &mut self.card {
            Card::Module(m) => m.write(offset, value),
            Card::Chip(c) => c.write(bar, offset, value, &self.dma),
        }
        Ok(())
    }

    fn sequence_waits(&self) -> bool {
        self.spec.startup_delay.is_some() || self.spec.shutdown_delay.is_some()
    }

    fn dma_alloc(&mut self, len: usize) -> Result<DmaBuffer> {
        let buf = DmaBuffer::allocate(len, self.dma.next_iova).map_err(|source| Error::Io {
            op: format!("allocate {len} bytes of DMA memory"),
            device: self.info.name.clone(),
            source,
        })?;
        // One unmapped guard page after each buffer, so an overrun is an IOMMU-style fault.
        self.dma.next_iova += buf.len() as u64 + super::dma::page_size() as u64;
        self.dma.maps.push(buf.share());
        Ok(buf)
    }

    fn dma_free(&mut self, buf: DmaBuffer) -> Result<()> {
        let i =
            self.dma.maps.iter().position(|b| b.same_memory(&buf)).ok_or_else(|| Error::Dma {
                device: self.info.name.clone(),
                reason: format!("unmap of IOVA {:#x}, which is not mapped", buf.iova()),
            })?;
        self.dma.maps.swap_remove(i);
        Ok(())
    }

    fn reset(&mut self) -> Result<()> {
        match &mut self.card {
            Card::Module(m) => m.power_on_reset(),
            Card::Chip(c) => c.power_on_reset(),
        }
        Ok(())
    }
}

#[cfg(test)]
mod module_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod xdma_tests;
