//! Chip cards (1e89:0002 PCIe-40M, 1e89:0003 PCIe-240M): the IDQ start-up/shutdown sequences
//! and card-to-host streaming through the Xilinx XDMA C2H channel 0 (PG195).
//!
//! BARs: the XDMA register BAR is found by its identifier registers (IRQ block at +0x2000,
//! config block at +0x3000, PG195); the IDQ register block is the nearest mapped BAR before it
//! (quantis-hardware.md: "in the BAR before the XDMA configuration BAR"). BARs are tried from the
//! highest index down, so on a card laid out as documented the IDQ BAR is never read at 0x2000.
//!
//! Streaming: a circular list of [`chip::DMA_BUFFERS`] descriptors of [`chip::DMA_BUFFER_BYTES`]
//! each (IDQ's driver uses 256 × 4 KiB), every descriptor pointing at its own slice of one data
//! buffer and at its own 8-byte stream writeback slot. The engine runs in descriptor-credit mode
//! (PG195 "SGDMA Descriptor Credits"), so it only fills buffers the driver has handed back: no
//! buffer is overwritten before it is read. read() compares the channel's completed-descriptor
//! count with what it has consumed, checks each writeback (magic 0x52B4, length), copies the
//! bytes out, clears the writeback and returns the descriptors as credits.

use crate::regs::{chip, xdma, ChipVersion, InitStatus};
use super::{
    rd, rd_live, wr, Card, CardCounters, CardInfo, CardOptions, ChipMode, Clock, Error, Family,
    Result, Wait,
};
use crate::hw::{Device, DmaBuffer};
use std::sync::Arc;
use std::time::Duration;

/// Sequence delays (quantis-hardware.md "Start-up" / "Shutdown").
pub const RESET_SETTLE: Duration = Duration::from_millis(100);
pub const MODE_SETTLE: Duration = Duration::from_millis(100);
pub const STATUS_RESET_SETTLE: Duration = Duration::from_millis(300);
pub const SHUTDOWN_SETTLE: Duration = Duration::from_secs(1);
pub const READY_POLL: Duration = Duration::from_millis(1);
/// How long stop() waits for the engine to finish its current descriptor.
const STOP_POLLS: u32 = 100;
/// Bounds of the wait for completed descriptors.
const MIN_WAIT: Duration = Duration::from_micros(50);
const MAX_WAIT: Duration = Duration::from_millis(10);

const C2H: u64 = xdma::C2H_CHANNEL;
const SG: u64 = xdma::C2H_SGDMA;

/// Where the two register blocks are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bars {
    /// The IDQ register block.
    pub idq: u8,
    /// The XDMA register space.
    pub dma: u8,
}

/// Finds the XDMA BAR by its identifiers and the IDQ BAR before it.
pub fn find_bars(dev: &mut dyn Device) -> Result<Bars> {
    let bars = dev.info().bars;
    let big_enough = |len: Option<u64>| len.is_some_and(|l| l >= xdma::CONFIG_BLOCK + 4);
    for dma in (1..6u8).rev() {
        if !big_enough(bars[usize::from(dma)]) {
            continue;
        }
        let cfg =
            rd(dev, dma, xdma::CONFIG_BLOCK + xdma::IDENTIFIER, "read XDMA config identifier")?;
        if !xdma::is_identifier(cfg, xdma::TARGET_CONFIG) {
            continue;
        }
        let irq = rd(dev, dma, xdma::IRQ_BLOCK + xdma::IDENTIFIER, "read XDMA IRQ identifier")?;
        if !xdma::is_identifier(irq, xdma::TARGET_IRQ) {
            continue;
        }
        if let Some(idq) = (0..dma).rev().find(|&b| bars[usize::from(b)].is_some()) {
            return Ok(Bars { idq, dma });
        }
    }
    Err(Error::NoXdmaBar { device: dev.info().name.clone() })
}

/// The q400_num value for a model (2 or 12 chips).
pub fn q400_for(model: &str) -> u32 {
    match model {
        "pcie-40m" => chip::Q400_TWO,
        "pcie-240m" => chip::Q400_TWELVE,
        _ => chip::Q400_AUTO,
    }
}

/// Chips on a model (quantis-hardware.md: 2 on the 40M, 12 on the 240M).
pub fn nominal_chips(model: &str) -> u32 {
    match model {
        "pcie-40m" => chip::CHIPS_40M,
        "pcie-240m" => chip::CHIPS_240M,
        _ => 0,
    }
}

/// IDQ's start-up: sw_rst = 0x10, 0, 0x10; wait 100 ms; spi_module_ctrl = 0; q400_num; mode
/// (testmode_hwreject, mode_sel); wait 100 ms; spi_module_ctrl = 0x40; wait 300 ms;
/// module_enable = 0x11; spi_module_ctrl = 0x81.
pub fn startup(
    dev: &mut dyn Device,
    idq: u8,
    q400: u32,
    mode: ChipMode,
    clock: &dyn Clock,
) -> Result<()> {
    let (reject, sel) = match mode {
        ChipMode::Rng => (chip::HWREJECT_RNG, chip::MODE_RNG),
        ChipMode::Sample => (chip::HWREJECT_SAMPLE, chip::MODE_SAMPLE),
    };
    wr(dev, idq, chip::SW_RST, chip::SW_RST_RELEASE, "write sw_rst")?;
    wr(dev, idq, chip::SW_RST, 0, "assert sw_rst")?;
    wr(dev, idq, chip::SW_RST, chip::SW_RST_RELEASE, "release sw_rst")?;
    rd(dev, idq, chip::SW_RST, "read back sw_rst")?;
    clock.sleep(RESET_SETTLE, Wait::Sequence);
    wr(dev, idq, chip::SPI_MODULE_CTRL, 0, "clear spi_module_ctrl")?;
    wr(dev, idq, chip::Q400_NUM, q400, "set q400_num")?;
    wr(dev, idq, chip::TESTMODE_HWREJECT, reject, "set testmode_hwreject")?;
    wr(dev, idq, chip::MODE_SEL, sel, "set mode_sel")?;
    rd(dev, idq, chip::MODE_SEL, "read back mode_sel")?;
    clock.sleep(MODE_SETTLE, Wait::Sequence);
    wr(dev, idq, chip::SPI_MODULE_CTRL, chip::SPI_STATUS_RESET, "reset chip status")?;
    rd(dev, idq, chip::SPI_MODULE_CTRL, "read back spi_module_ctrl")?;
    clock.sleep(STATUS_RESET_SETTLE, Wait::Sequence);
    wr(dev, idq, chip::MODULE_ENABLE, chip::MODULE_ENABLE_ON, "set module_enable")?;
    wr(dev, idq, chip::SPI_MODULE_CTRL, chip::SPI_RUN, "enable the RNG modules")?;
    rd(dev, idq, chip::SPI_MODULE_CTRL, "read back spi_module_ctrl")?;
    Ok(())
}

/// IDQ's shutdown: spi_module_ctrl = 0xA1, wait 1 s, 0x40, then 0.
pub fn shutdown(dev: &mut dyn Device, idq: u8, clock: &dyn Clock) -> Result<()> {
    wr(dev, idq, chip::SPI_MODULE_CTRL, chip::SPI_SHUTDOWN, "stop the RNG modules")?;
    rd(dev, idq, chip::SPI_MODULE_CTRL, "read back spi_module_ctrl")?;
    clock.sleep(SHUTDOWN_SETTLE, Wait::Sequence);
    wr(dev, idq, chip::SPI_MODULE_CTRL, chip::SPI_STATUS_RESET, "reset chip status")?;
    wr(dev, idq, chip::SPI_MODULE_CTRL, 0, "clear spi_module_ctrl")?;
    rd(dev, idq, chip::SPI_MODULE_CTRL, "read back spi_module_ctrl")?;
    Ok(())
}

/// Polls the ready bit up to 1000 times, 1 ms apart.
pub fn wait_ready(dev: &mut dyn Device, idq: u8, clock: &dyn Clock) -> Result<InitStatus> {
    let mut st = InitStatus(0);
    for i in 0..chip::READY_POLLS {
        st = InitStatus(rd_live(dev, idq, chip::INIT_STATUS, "read init status")?);
        if st.ready() {
            return Ok(st);
        }
        if i + 1 < chip::READY_POLLS {
            clock.sleep(READY_POLL, Wait::Poll);
        }
    }
    Err(Error::NotReady {
        device: dev.info().name.clone(),
        waited_ms: u64::from(chip::READY_POLLS),
        status: st.0,
    })
}

pub fn read_serial(dev: &mut dyn Device, idq: u8) -> Result<String> {
    let b = rd(dev, idq, chip::BATCH_NUMBER, "read batch_number")?;
    let i = rd(dev, idq, chip::INCREMENTAL_NUMBER, "read incremental_number")?;
    let m = rd(dev, idq, chip::PRODUCT_MODEL, "read product_model")?;
    Ok(crate::regs::chip_serial(b, i, m))
}

fn chip_error(dev: &dyn Device, st: InitStatus) -> Error {
    Error::ChipError {
        device: dev.info().name.clone(),
        present: st.chips_present(),
        errors: st.chip_errors(),
        status: st.0,
    }
}

/// Reads identifiers, serial, version, init status and mode_sel: registers without side effects.
pub fn probe(dev: &mut dyn Device, model: &str) -> Result<CardInfo> {
    let bars = find_bars(dev)?;
    let c2h = rd(dev, bars.dma, C2H + xdma::IDENTIFIER, "read XDMA C2H identifier")?;
    if !xdma::is_identifier(c2h, xdma::TARGET_C2H) || c2h & xdma::ID_STREAM == 0 {
        return Err(Error::Dma {
            device: dev.info().name.clone(),
            status: c2h,
            detail: "C2H channel 0 is missing or not an AXI4-Stream channel".into(),
        });
    }
    let serial = read_serial(dev, bars.idq)?;
    let version = rd_live(dev, bars.idq, chip::VERSION, "read version")?;
    let st = InitStatus(rd(dev, bars.idq, chip::INIT_STATUS, "read init status")?);
    let mode = rd(dev, bars.idq, chip::MODE_SEL, "read mode_sel")?;
    // Before the start-up (reset held) no chip shows as present: quote the model's nominal rate.
    let chips = match st.chips_present() {
        0 => nominal_chips(model),
        _ => st.chips_working().count_ones(),
    };
    let info = dev.info();
    Ok(CardInfo {
        device: info.name.clone(),
        model: model.to_owned(),
        family: Family::Chip,
        pci_id: info.id,
        serial: Some(serial),
        version: ChipVersion(version).to_string(),
        version_raw: version,
        modules_present: st.chips_present(),
        modules_healthy: st.chips_working(),
        bars: info.bars,
        simulated: info.simulated,
        rate_bytes_per_s: u64::from(chips) * chip::CHIP_BYTES_PER_S,
        chip_mode: Some(if mode == chip::MODE_SAMPLE { ChipMode::Sample } else { ChipMode::Rng }),
    })
}

/// Names the error bits of a C2H status value.
pub fn describe_status(s: u32) -> String {
    let mut parts = Vec::new();
    if s & xdma::ST_ALIGN_MISMATCH != 0 {
        parts.push("alignment mismatch");
    }
    if s & xdma::ST_MAGIC_STOPPED != 0 {
        parts.push("bad descriptor magic");
    }
    if s & xdma::ST_WRITE_ERROR_MASK != 0 {
        parts.push("write error (host memory refused the data)");
    }
    if s & xdma::ST_DESC_UR != 0 {
        parts.push("descriptor fetch: unsupported request");
    }
    if s & xdma::ST_DESC_ERROR_MASK & !xdma::ST_DESC_UR != 0 {
        parts.push("descriptor fetch error");
    }
    if parts.is_empty() {
        parts.push(if s & xdma::ST_BUSY == 0 { "engine stopped" } else { "no error" });
    }
    parts.join(", ")
}

/// The descriptor ring and its buffers, in DMA-mapped host memory.
#[derive(Debug)]
struct DmaRing {
    desc: DmaBuffer,
    data: DmaBuffer,
    wb: DmaBuffer,
    /// Descriptors consumed since the run bit was set (wrapping, like the hardware count).
    consumed: u32,
    /// Bytes already taken from the oldest completed descriptor.
    offset: usize,
}

const RING: usize = chip::DMA_BUFFERS;
const BUF: usize = chip::DMA_BUFFER_BYTES;
const _: () = assert!(RING as u32 <= xdma::MAX_CREDITS_PER_WRITE);

impl DmaRing {
    fn allocate(dev: &mut dyn Device) -> Result<DmaRing> {
        let op = "allocate DMA memory";
        let name = dev.info().name.clone();
        let map = |r: crate::hw::Result<DmaBuffer>| {
            r.map_err(|source| Error::Hw { op, device: name.clone(), source: Box::new(source) })
        };
        let desc = map(dev.dma_alloc(RING * xdma::DESC_BYTES))?;
        let data = map(dev.dma_alloc(RING * BUF))?;
        let wb = map(dev.dma_alloc(RING * xdma::WB_BYTES))?;
        Ok(DmaRing { desc, data, wb, consumed: 0, offset: 0 })
    }

    /// Writes the circular descriptor list and clears the writebacks.
    fn prepare(&mut self) {
        for i in 0..RING {
            let d = xdma::Descriptor {
                control: 0,
                nxt_adj: 0,
                len: BUF as u32,
                src: self.wb.iova() + (i * xdma::WB_BYTES) as u64,
                dst: self.data.iova() + (i * BUF) as u64,
                next: self.desc.iova() + (((i + 1) % RING) * xdma::DESC_BYTES) as u64,
            };
            self.desc.write(i * xdma::DESC_BYTES, &d.to_bytes());
        }
        self.wb.write(0, &[0u8; RING * xdma::WB_BYTES]);
        self.consumed = 0;
        self.offset = 0;
    }
}

/// Starts C2H channel 0 on the prepared ring: credit mode, descriptor address, run, credits.
pub fn start_engine(dev: &mut dyn Device, dma: u8, desc_iova: u64, credits: u32) -> Result<()> {
    wr(dev, dma, C2H + xdma::CH_CONTROL, 0, "stop the C2H channel")?;
    wr(
        dev,
        dma,
        xdma::SGDMA_COMMON + xdma::COMMON_CREDIT_MODE_W1S,
        xdma::credit_mode_c2h(0),
        "enable descriptor credits",
    )?;
    wr(dev, dma, SG + xdma::SG_DESC_LO, desc_iova as u32, "set descriptor address (low)")?;
    wr(dev, dma, SG + xdma::SG_DESC_HI, (desc_iova >> 32) as u32, "set descriptor address (high)")?;
    wr(dev, dma, SG + xdma::SG_DESC_ADJACENT, 0, "set adjacent descriptors")?;
    let clear =
        xdma::ST_ERRORS | xdma::ST_DESC_STOPPED | xdma::ST_DESC_COMPLETED | xdma::ST_IDLE_STOPPED;
    wr(dev, dma, C2H + xdma::CH_STATUS, clear, "clear C2H status")?;
    wr(dev, dma, C2H + xdma::CH_CONTROL, xdma::CTRL_RUN, "start the C2H channel")?;
    let ctl = rd_live(dev, dma, C2H + xdma::CH_CONTROL, "read back C2H control")?;
    if ctl & xdma::CTRL_RUN == 0 {
        return Err(Error::Dma {
            device: dev.info().name.clone(),
            status: ctl,
            detail: "run bit did not stick".into(),
        });
    }
    wr(dev, dma, SG + xdma::SG_DESC_CREDITS, credits, "give descriptor credits")
}

/// Clears the run bit and waits for the engine to go idle.
pub fn stop_engine(dev: &mut dyn Device, dma: u8, clock: &dyn Clock) -> Result<()> {
    wr(dev, dma, C2H + xdma::CH_CONTROL, 0, "stop the C2H channel")?;
    for _ in 0..STOP_POLLS {
        let st = rd_live(dev, dma, C2H + xdma::CH_STATUS, "read C2H status")?;
        if st & xdma::ST_BUSY == 0 {
            return Ok(());
        }
        clock.sleep(READY_POLL, Wait::Poll);
    }
    Err(Error::Dma {
        device: dev.info().name.clone(),
        status: xdma::ST_BUSY,
        detail: format!("engine still busy {STOP_POLLS} ms after clearing run"),
    })
}

/// A chip card streaming by XDMA.
pub struct XdmaCard {
    dev: Box<dyn Device>,
    info: CardInfo,
    clock: Arc<dyn Clock>,
    mode: ChipMode,
    bars: Bars,
    q400: u32,
    read_timeout: Duration,
    ring: Option<DmaRing>,
    running: bool,
    discard_left: u64,
    counters: CardCounters,
}

impl std::fmt::Debug for XdmaCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdmaCard")
            .field("info", &self.info)
            .field("bars", &self.bars)
            .finish_non_exhaustive()
    }
}

impl XdmaCard {
    pub fn open(mut dev: Box<dyn Device>, opts: &CardOptions, model: &str) -> Result<XdmaCard> {
        let mut info = probe(dev.as_mut(), model)?;
        let bars = find_bars(dev.as_mut())?;
        info.chip_mode = Some(opts.chip_mode);
        let clock = opts.clock_for(dev.as_ref());
        Ok(XdmaCard {
            dev,
            info,
            clock,
            mode: opts.chip_mode,
            bars,
            q400: q400_for(model),
            read_timeout: opts.read_timeout,
            ring: None,
            running: false,
            discard_left: 0,
            counters: CardCounters::default(),
        })
    }

    fn device(&self) -> String {
        self.info.device.clone()
    }

    fn dma_error(&self, status: u32) -> Error {
        Error::Dma { device: self.device(), status, detail: describe_status(status) }
    }

    /// Copies completed descriptors' bytes into `out` (after the post-reset discard) and hands
    /// consumed descriptors back as credits. Returns (bytes copied, descriptors consumed).
    fn drain(&mut self, out: &mut [u8], ready: u32) -> Result<(usize, u32)> {
        let Some(ring) = self.ring.as_mut() else { return Ok((0, 0)) };
        let mut n = 0;
        let mut done = 0u32;
        while done < ready && n < out.len() {
            let idx = ring.consumed as usize % RING;
            let mut wb = [0u8; xdma::WB_BYTES];
            ring.wb.read(idx * xdma::WB_BYTES, &mut wb);
            let magic = u32::from_le_bytes([wb[0], wb[1], wb[2], wb[3]]) >> 16;
            let len = u32::from_le_bytes([wb[4], wb[5], wb[6], wb[7]]) as usize;
            if magic != xdma::WB_MAGIC || len == 0 || len > BUF {
                let device = self.info.device.clone();
                return Err(Error::Dma {
                    device,
                    status: magic,
                    detail: format!(
                        "bad writeback for descriptor {idx}: magic {magic:#06x}, length {len}"
                    ),
                });
            }
            let mut pos = ring.offset.min(len);
            let skip = (len - pos).min(usize::try_from(self.discard_left).unwrap_or(usize::MAX));
            pos += skip;
            self.discard_left -= skip as u64;
            self.counters.bytes_discarded += skip as u64;
            let take = (len - pos).min(out.len() - n);
            ring.data.read(idx * BUF + pos, &mut out[n..n + take]);
            n += take;
            pos += take;
            if pos == len {
                ring.wb.write(idx * xdma::WB_BYTES, &[0u8; xdma::WB_BYTES]);
                ring.consumed = ring.consumed.wrapping_add(1);
                ring.offset = 0;
                done += 1;
            } else {
                ring.offset = pos;
            }
        }
        if done > 0 {
            wr(
                self.dev.as_mut(),
                self.bars.dma,
                SG + xdma::SG_DESC_CREDITS,
                done,
                "give descriptor credits",
            )?;
        }
        Ok((n, done))
    }

    /// Time for the card to deliver `need` more bytes (at most half the ring), bounded.
    fn wait_for(&self, need: usize) -> Duration {
        let rate = self.info.rate_bytes_per_s.max(1);
        let bytes = need.min(RING * BUF / 2) as u64;
        Duration::from_micros(bytes.saturating_mul(1_000_000) / rate).clamp(MIN_WAIT, MAX_WAIT)
    }
}

impl Card for XdmaCard {
    fn info(&self) -> &CardInfo {
        &self.info
    }

    fn start(&mut self) -> Result<()> {
        if self.running {
            stop_engine(self.dev.as_mut(), self.bars.dma, self.clock.as_ref())?;
            self.running = false;
        }
        let Bars { idq, dma } = self.bars;
        startup(self.dev.as_mut(), idq, self.q400, self.mode, self.clock.as_ref())?;
        let st = wait_ready(self.dev.as_mut(), idq, self.clock.as_ref())?;
        if st.chips_present() == 0 || st.chip_errors() & st.chips_present() != 0 {
            return Err(chip_error(self.dev.as_ref(), st));
        }
        if self.ring.is_none() {
            self.ring = Some(DmaRing::allocate(self.dev.as_mut())?);
        }
        let ring = self.ring.as_mut().expect("allocated above");
        ring.prepare();
        let desc = ring.desc.iova();
        start_engine(self.dev.as_mut(), dma, desc, RING as u32)?;
        self.running = true;
        self.discard_left = match self.mode {
            ChipMode::Rng => chip::DISCARD_RNG,
            ChipMode::Sample => chip::DISCARD_SAMPLE,
        };
        self.info.modules_present = st.chips_present();
        self.info.modules_healthy = st.chips_working();
        self.info.rate_bytes_per_s =
            u64::from(st.chips_working().count_ones()) * chip::CHIP_BYTES_PER_S;
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if !self.running {
            return Err(Error::NotStarted { device: self.device() });
        }
        let Bars { idq, dma } = self.bars;
        let deadline = self.clock.now() + self.read_timeout;
        let mut n = 0;
        while n < buf.len() {
            let st =
                InitStatus(rd_live(self.dev.as_mut(), idq, chip::INIT_STATUS, "read init status")?);
            if !st.ready() || st.chip_errors() & st.chips_present() != 0 {
                return Err(chip_error(self.dev.as_ref(), st));
            }
            let status = rd_live(self.dev.as_mut(), dma, C2H + xdma::CH_STATUS, "read C2H status")?;
            if status & xdma::ST_ERRORS != 0 || status & xdma::ST_BUSY == 0 {
                return Err(self.dma_error(status));
            }
            let completed = rd(
                self.dev.as_mut(),
                dma,
                C2H + xdma::CH_COMPLETED,
                "read completed descriptor count",
            )?;
            let consumed = self.ring.as_ref().map_or(0, |r| r.consumed);
            let ready = completed.wrapping_sub(consumed);
            if ready > RING as u32 {
                return Err(Error::Dma {
                    device: self.device(),
                    status,
                    detail: format!("completed count {completed} is more than a ring ahead of the {consumed} consumed"),
                });
            }
            let (got, done) = self.drain(&mut buf[n..], ready)?;
            n += got;
            if n == buf.len() {
                break;
            }
            if done > 0 {
                // Progress (data or discarded bytes): look again before sleeping.
                continue;
            }
            let now = self.clock.now();
            if now >= deadline {
                break;
            }
            self.clock.sleep(self.wait_for(buf.len() - n).min(deadline - now), Wait::Poll);
        }
        self.counters.bytes_read += n as u64;
        Ok(n)
    }

    fn stop(&mut self) -> Result<()> {
        let Bars { idq, dma } = self.bars;
        if self.running {
            self.running = false;
            stop_engine(self.dev.as_mut(), dma, self.clock.as_ref())?;
        }
        shutdown(self.dev.as_mut(), idq, self.clock.as_ref())
    }

    fn counters(&self) -> CardCounters {
        self.counters
    }
}

impl Drop for XdmaCard {
    fn drop(&mut self) {
        // The engine must not write into buffers after they are unmapped.
        let _ =
            wr(self.dev.as_mut(), self.bars.dma, C2H + xdma::CH_CONTROL, 0, "stop the C2H channel");
        if let Some(ring) = self.ring.take() {
            for b in [ring.desc, ring.data, ring.wb] {
                if let Err(e) = self.dev.dma_free(b) {
                    tracing::warn!(device = %self.info.device, error = %e, "failed to unmap a DMA buffer");
                }
            }
        }
    }
}
