//! Model of a chip card (1e89:0002 PCIe-40M, 1e89:0003 PCIe-240M): the IDQ register block in
//! BAR 0 with its reset/start-up state machine, and a Xilinx XDMA (PG195) card-to-host
//! AXI4-Stream channel in BAR 1 that walks descriptors in host memory.

use super::noise::{Noise, Pace};
use super::{DmaTable, Fault, SimSpec};
use crate::regs::{chip, xdma, InitStatus};
use std::time::{Duration, Instant};

/// BAR 0 (IDQ block) length chosen by the simulator: one page covers every known register.
pub const IDQ_BAR_LEN: u64 = 0x1000;

/// Serial registers (4 + 3 + 4 ASCII bytes): batch "2024", incremental "SIM", model "040M" or
/// "240M": "2024SIM240M".
const SERIAL_BATCH: u32 = u32::from_le_bytes(*b"2024");
const SERIAL_INCREMENTAL: u32 = u32::from_le_bytes(*b"SIM\0");
/// Version chosen by the simulator: board revision 2, firmware 1.4.3.
pub const SIM_VERSION: u32 = 0x0201_0403;
const SIM_BUILD_DATE: u32 = 0x2020_0915;
/// C2H alignment register shown by default: byte alignment 1, granularity 1, 64 address bits, as
/// fpga_sio's readmes show for real XDMA boards (e.g. U200).
pub const SIM_ALIGNMENTS: u32 =
    xdma::Alignments { addr: 1, granularity: 1, address_bits: 64 }.encode();
/// XDMA IP version in the identifiers (PG195: 6 = 2017.1 or later).
const XDMA_VERSION: u32 = 6;
/// P(1) offset the simulator adds in SAMPLE (raw) mode; real raw bias is unknown.
pub const SAMPLE_MODE_BIAS: f64 = 0.01;
/// Bytes the card buffers when no descriptor is ready before data is lost (choice).
const CARD_BUFFER_BYTES: u64 = 1 << 20;
/// Largest piece generated at once.
const CHUNK: usize = 64 * 1024;
/// SGDMA descriptor control: H2C halt bits 3:0, C2H halt bits 19:16.
const HALT_BITS: u32 = 0x000F_000F;

/// The data path: noise paced by the running chips, preceded by the post-reset warm-up bytes
/// (zeros, the simulator's stand-in for the pipeline garbage the driver must discard).
#[derive(Debug)]
struct Stream {
    running: bool,
    warmup_left: u64,
    backlog: u64,
    noise: Noise,
    pace: Pace,
    unit_bytes_per_s: f64,
    bias: f64,
    /// The card is ready (and delivers) from this instant on (`startup-delay=`).
    ready_at: Instant,
}

impl Stream {
    /// True once the start-up delay after the reset release has passed.
    fn warm(&self) -> bool {
        Instant::now() >= self.ready_at
    }

    fn available(&mut self) -> u64 {
        if !self.running {
            return 0;
        }
        if !self.warm() {
            // Not ready yet: what the chips sample now is not delivered.
            self.pace.due();
            return 0;
        }
        if self.pace.unlimited() {
            return if self.noise.deliverable(CHUNK as u64) > 0 { u64::MAX } else { 0 };
        }
        let due = self.noise.deliverable(self.pace.due());
        self.backlog = self.backlog.saturating_add(due).min(CARD_BUFFER_BYTES);
        self.backlog
    }

    fn produce(&mut self, out: &mut [u8]) {
        let warm = usize::try_from(self.warmup_left).unwrap_or(usize::MAX).min(out.len());
        out[..warm].fill(0);
        self.warmup_left -= warm as u64;
        self.noise.fill(&mut out[warm..]);
        if !self.pace.unlimited() {
            self.backlog = self.backlog.saturating_sub(out.len() as u64);
        }
    }
}

/// The C2H channel 0 of the XDMA engine, with its SGDMA registers.
#[derive(Debug, Default)]
struct Engine {
    control: u32,
    status: u32,
    completed: u32,
    desc_addr: u64,
    adjacent: u32,
    credits: u32,
    credit_mode: u32,
    /// SGDMA common descriptor control: the C2H halt bits (19:16).
    desc_control: u32,
    /// The channel's alignment register (0x4C).
    alignments: u32,
    poll_wb: u64,
    irq_mask: u32,
    /// Address of the descriptor being worked on.
    current: u64,
    /// Bytes already written into the current descriptor's buffer.
    filled: u32,
    /// Run was cleared while a descriptor was half filled: finish it, then go idle (PG195
    /// "if the engine is busy it completes the current descriptor").
    draining: bool,
    /// An error whose enable bit was clear: not logged, and the engine makes no further
    /// progress until run is cleared (PG195 leaves this case open; see docs/simulator.md).
    wedged: bool,
    scratch: Vec<u8>,
}

/// `fault=dma-error`: once `after` bytes of noise were produced, descriptor fetches complete with
/// Unsupported Request. The chips go on sampling while the engine stands, so each failed fetch
/// loses [`LOST_PER_DMA_ERROR`] bytes of noise; `left` (from `fault-for=`) is how many more bytes
/// may be lost before the fault clears, so `fault-for=1` gives exactly one error.
#[derive(Debug)]
struct DmaFault {
    after: u64,
    left: Option<u64>,
}

/// Bytes of noise one failed descriptor fetch loses: a 4 KiB page, what IDQ's descriptors hold.
const LOST_PER_DMA_ERROR: usize = 4096;

impl DmaFault {
    fn active(&self, stream: &Stream) -> bool {
        stream.noise.produced() >= self.after && self.left != Some(0)
    }

    fn hit(&mut self, stream: &mut Stream, scratch: &mut Vec<u8>) {
        if scratch.len() < LOST_PER_DMA_ERROR {
            scratch.resize(LOST_PER_DMA_ERROR, 0);
        }
        stream.produce(&mut scratch[..LOST_PER_DMA_ERROR]);
        self.left = self.left.map(|l| l.saturating_sub(LOST_PER_DMA_ERROR as u64));
    }
}

/// What happened to a descriptor fetch or transfer, by the status bit it would log.
enum Outcome {
    /// Stop with these status bits if their enable is set; wedge silently otherwise.
    Error(u32),
    /// Stopped by a descriptor's STOP bit.
    Stopped,
    /// Nothing more to do now (no credits, no data, halted).
    Wait,
}

/// The control enable that lets status bit(s) `st` be logged: each ie_* bit sits at the position
/// of its status bit, fields 13:9 and 23:19 included (PG195 "C2H Channel Control (0x04)").
fn enabled(control: u32, st: u32) -> bool {
    control & st == st
}

impl Engine {
    fn busy(&self) -> bool {
        self.status & xdma::ST_BUSY != 0
    }

    fn running(&self) -> bool {
        self.control & xdma::CTRL_RUN != 0
    }

    fn set_control(&mut self, v: u32) {
        let was = self.running();
        self.control = v;
        let run = self.running();
        if run && !was {
            // PG195: setting run starts at the descriptor address; the completed count and the
            // status fields restart.
            self.completed = 0;
            self.status = xdma::ST_BUSY;
            self.current = self.desc_addr;
            self.filled = 0;
            self.draining = false;
            self.wedged = false;
        } else if !run && was {
            // PG195 "SGDMA Descriptor Credits": credits are cleared on run's falling edge.
            self.credits = 0;
            self.wedged = false;
            if self.busy() && self.filled > 0 {
                self.draining = true;
            } else {
                self.go_idle();
            }
        }
    }

    /// Busy drops after run was cleared; idle_stopped is logged if enabled.
    fn go_idle(&mut self) {
        self.draining = false;
        if self.busy() && enabled(self.control, xdma::ST_IDLE_STOPPED) {
            self.status |= xdma::ST_IDLE_STOPPED;
        }
        self.status &= !xdma::ST_BUSY;
    }

    /// An error: logged, and the engine stopped, only if the matching enable is set.
    fn fail(&mut self, bits: u32) {
        if enabled(self.control, bits) {
            self.status = (self.status | bits) & !xdma::ST_BUSY;
        } else {
            self.wedged = true;
        }
    }

    fn credit_mode(&self) -> bool {
        self.credit_mode & xdma::credit_mode_c2h(0) != 0
    }

    fn halted(&self) -> bool {
        self.desc_control & xdma::desc_halt_c2h(0) != 0
    }

    /// Walks descriptors while there are credits and data.
    fn advance(&mut self, stream: &mut Stream, dma: &DmaTable, fault: &mut Option<DmaFault>) {
        if !self.busy() || self.wedged || !(self.running() || self.draining) {
            return;
        }
        if self.draining && !stream.running {
            // The chips stopped: nothing will finish the descriptor.
            self.go_idle();
            return;
        }
        match self.walk(stream, dma, fault) {
            Outcome::Error(bits) => self.fail(bits),
            Outcome::Stopped => {
                if enabled(self.control, xdma::ST_DESC_STOPPED) {
                    self.status |= xdma::ST_DESC_STOPPED;
                }
                self.status &= !xdma::ST_BUSY;
            }
            Outcome::Wait => {}
        }
    }

    fn walk(
        &mut self,
        stream: &mut Stream,
        dma: &DmaTable,
        fault: &mut Option<DmaFault>,
    ) -> Outcome {
        // What the chips produced up to now; bytes arriving while this runs wait for the next
        // register access (re-reading the clock here would never let a busy engine return).
        let mut avail = stream.available();
        let align = xdma::Alignments::decode(self.alignments);
        loop {
            let fresh = self.filled == 0;
            if fresh && self.draining {
                self.go_idle();
                return Outcome::Wait;
            }
            if fresh && (self.halted() || self.credit_mode() && self.credits == 0) {
                return Outcome::Wait;
            }
            if avail == 0 {
                return Outcome::Wait;
            }
            if let Some(f) = fault.as_mut().filter(|f| fresh && f.active(stream)) {
                f.hit(stream, &mut self.scratch);
                return Outcome::Error(xdma::ST_DESC_UR);
            }
            if !self.current.is_multiple_of(xdma::DESC_BYTES as u64) {
                return Outcome::Error(xdma::ST_ALIGN_MISMATCH);
            }
            let mut raw = [0u8; xdma::DESC_BYTES];
            if dma.read(self.current, &mut raw).is_err() || !align.reaches(self.current, 32) {
                // A descriptor read the IOMMU refuses completes with Unsupported Request.
                return Outcome::Error(xdma::ST_DESC_UR);
            }
            let Some(d) = xdma::Descriptor::from_bytes(&raw) else {
                return Outcome::Error(xdma::ST_MAGIC_STOPPED);
            };
            if !d.dst.is_multiple_of(u64::from(align.addr))
                || !d.len.is_multiple_of(align.granularity)
                || !align.reaches(d.dst, u64::from(d.len.max(1)))
            {
                return Outcome::Error(xdma::ST_ALIGN_MISMATCH);
            }
            let want = d.len.saturating_sub(self.filled);
            let n = (want as usize).min(CHUNK).min(usize::try_from(avail).unwrap_or(usize::MAX));
            if n > 0 {
                if self.scratch.len() < n {
                    self.scratch.resize(n, 0);
                }
                stream.produce(&mut self.scratch[..n]);
                avail -= n as u64;
                if dma
                    .write(d.dst.wrapping_add(u64::from(self.filled)), &self.scratch[..n])
                    .is_err()
                {
                    // The simulator's stand-in for a refused host write (see docs/simulator.md).
                    return Outcome::Error(xdma::ST_READ_DECERR);
                }
                self.filled += n as u32;
            }
            if self.filled < d.len {
                continue;
            }
            if d.src != 0 {
                let mut wb = [0u8; xdma::WB_BYTES];
                wb[..4].copy_from_slice(&(xdma::WB_MAGIC << 16).to_le_bytes());
                wb[4..].copy_from_slice(&d.len.to_le_bytes());
                if dma.write(d.src, &wb).is_err() {
                    return Outcome::Error(xdma::ST_READ_DECERR);
                }
            }
            self.completed = self.completed.wrapping_add(1);
            let control = u32::from(d.control);
            if control & xdma::DESC_COMPLETED != 0 && enabled(self.control, xdma::ST_DESC_COMPLETED)
            {
                self.status |= xdma::ST_DESC_COMPLETED;
            }
            self.filled = 0;
            if self.credit_mode() && !self.draining {
                self.credits -= 1;
            }
            if control & xdma::DESC_STOP != 0 {
                return Outcome::Stopped;
            }
            self.current = d.next;
        }
    }

    fn read(&mut self, offset: u64) -> u32 {
        let id = |t, s| xdma::identifier(t, s, 0, XDMA_VERSION);
        let c2h = xdma::C2H_CHANNEL;
        let sg = xdma::C2H_SGDMA;
        let common = xdma::SGDMA_COMMON;
        match offset {
            o if o == c2h => id(xdma::TARGET_C2H, true),
            o if o == xdma::IRQ_BLOCK => id(xdma::TARGET_IRQ, false),
            o if o == xdma::CONFIG_BLOCK => id(xdma::TARGET_CONFIG, false),
            o if o == sg => id(xdma::TARGET_C2H_SGDMA, true),
            o if o == common => id(xdma::TARGET_SGDMA_COMMON, false),
            o if o == c2h + xdma::CH_CONTROL => self.control,
            o if o == c2h + xdma::CH_STATUS => self.status,
            o if o == c2h + xdma::CH_STATUS_RC => {
                let s = self.status;
                self.status &= xdma::ST_BUSY;
                s
            }
            o if o == c2h + xdma::CH_COMPLETED => self.completed,
            o if o == c2h + xdma::CH_ALIGNMENTS => self.alignments,
            o if o == c2h + xdma::CH_POLL_WB_LO => self.poll_wb as u32,
            o if o == c2h + xdma::CH_POLL_WB_HI => (self.poll_wb >> 32) as u32,
            o if o == c2h + xdma::CH_IRQ_MASK => self.irq_mask,
            o if o == sg + xdma::SG_DESC_LO => self.desc_addr as u32,
            o if o == sg + xdma::SG_DESC_HI => (self.desc_addr >> 32) as u32,
            o if o == sg + xdma::SG_DESC_ADJACENT => self.adjacent,
            o if o == sg + xdma::SG_DESC_CREDITS => self.credits,
            o if o == common + xdma::COMMON_CREDIT_MODE => self.credit_mode,
            o if o == common + xdma::COMMON_DESC_CONTROL => self.desc_control,
            // No H2C channel, no other C2H channel: their space reads 0.
            _ => 0,
        }
    }

    fn write(&mut self, offset: u64, v: u32) {
        let c2h = xdma::C2H_CHANNEL;
        let sg = xdma::C2H_SGDMA;
        let common = xdma::SGDMA_COMMON;
        match offset {
            o if o == c2h + xdma::CH_CONTROL => self.set_control(v),
            o if o == c2h + xdma::CH_CONTROL_W1S => self.set_control(self.control | v),
            o if o == c2h + xdma::CH_CONTROL_W1C => self.set_control(self.control & !v),
            o if o == c2h + xdma::CH_STATUS => self.status &= !(v & !xdma::ST_BUSY),
            o if o == c2h + xdma::CH_POLL_WB_LO => {
                self.poll_wb = (self.poll_wb & !0xFFFF_FFFF) | u64::from(v)
            }
            o if o == c2h + xdma::CH_POLL_WB_HI => {
                self.poll_wb = (self.poll_wb & 0xFFFF_FFFF) | u64::from(v) << 32
            }
            o if o == c2h + xdma::CH_IRQ_MASK => self.irq_mask = v,
            o if o == sg + xdma::SG_DESC_LO => {
                self.desc_addr = (self.desc_addr & !0xFFFF_FFFF) | u64::from(v)
            }
            o if o == sg + xdma::SG_DESC_HI => {
                self.desc_addr = (self.desc_addr & 0xFFFF_FFFF) | u64::from(v) << 32
            }
            o if o == sg + xdma::SG_DESC_ADJACENT => self.adjacent = v & 0x3F,
            // Credits only count in credit mode (PG195); outstanding credits saturate at 1023.
            o if o == sg + xdma::SG_DESC_CREDITS && self.credit_mode() => {
                self.credits = (self.credits + (v & xdma::MAX_CREDITS_PER_WRITE))
                    .min(xdma::MAX_CREDITS_PER_WRITE);
            }
            o if o == common + xdma::COMMON_CREDIT_MODE => self.credit_mode = v,
            o if o == common + xdma::COMMON_CREDIT_MODE_W1S => self.credit_mode |= v,
            o if o == common + xdma::COMMON_CREDIT_MODE_W1C => {
                self.credit_mode &= !v;
                // Disabling credit mode clears the credits (fpga_sio test_dma_descriptor_credits).
                if !self.credit_mode() {
                    self.credits = 0;
                }
            }
            o if o == common + xdma::COMMON_DESC_CONTROL => self.desc_control = v & HALT_BITS,
            o if o == common + xdma::COMMON_DESC_CONTROL_W1S => self.desc_control |= v & HALT_BITS,
            o if o == common + xdma::COMMON_DESC_CONTROL_W1C => self.desc_control &= !v,
            _ => {}
        }
    }
}

#[derive(Debug)]
pub struct ChipCard {
    chips: u32,
    /// Plain read/write storage for the IDQ block (registers without behaviour read back).
    regs: Vec<u32>,
    reset_released: bool,
    status_reset_seen: bool,
    chip_errors: u32,
    gone: bool,
    stream: Stream,
    engine: Engine,
    dma_fault: Option<DmaFault>,
    /// The C2H alignment register the card shows (`dma-alignments=`).
    alignments: u32,
    /// `startup-delay=`: after the reset is released the card is not ready, and delivers
    /// nothing, until this much time has passed.
    startup_delay: Duration,
    /// `shutdown-delay=`: after the shutdown value (0xA1) the card ignores every write to its
    /// register block for this long.
    shutdown_delay: Duration,
    /// When the card accepts writes again after a shutdown.
    shut_until: Option<Instant>,
}

impl ChipCard {
    pub fn new(spec: &SimSpec, seed: [u8; 32]) -> ChipCard {
        let mut c = ChipCard {
            chips: spec.model.units(),
            regs: vec![0; IDQ_BAR_LEN as usize / 4],
            reset_released: false,
            status_reset_seen: false,
            chip_errors: 0,
            gone: false,
            stream: Stream {
                running: false,
                warmup_left: 0,
                backlog: 0,
                noise: Noise::for_spec(spec, seed),
                pace: Pace::new(spec.unit_bytes_per_s()),
                unit_bytes_per_s: spec.unit_bytes_per_s(),
                bias: spec.bias,
                ready_at: Instant::now(),
            },
            engine: Engine::default(),
            dma_fault: match spec.fault {
                Some(Fault::DmaError) => {
                    Some(DmaFault { after: spec.fault_after, left: spec.fault_for })
                }
                _ => None,
            },
            alignments: spec.dma_alignments.unwrap_or(SIM_ALIGNMENTS),
            startup_delay: spec.startup_delay.unwrap_or_default(),
            shutdown_delay: spec.shutdown_delay.unwrap_or_default(),
            shut_until: None,
        };
        c.power_on_reset();
        c
    }

    pub fn noise_produced(&self) -> u64 {
        self.stream.noise.produced()
    }

    /// Power-on state: held in reset, chips idle, engine stopped.
    pub fn power_on_reset(&mut self) {
        if self.gone {
            return;
        }
        self.regs.fill(0);
        self.reg_set(chip::BATCH_NUMBER, SERIAL_BATCH);
        self.reg_set(chip::INCREMENTAL_NUMBER, SERIAL_INCREMENTAL);
        let model = if self.chips == chip::CHIPS_40M { *b"040M" } else { *b"240M" };
        self.reg_set(chip::PRODUCT_MODEL, u32::from_le_bytes(model));
        self.reg_set(chip::VERSION, SIM_VERSION);
        self.reg_set(chip::FIRMWARE_BUILD_DATE, SIM_BUILD_DATE);
        self.hold_reset();
        self.shut_until = None;
        self.engine = Engine { alignments: self.alignments, ..Engine::default() };
    }

    fn reg(&self, off: u64) -> u32 {
        self.regs[(off / 4) as usize]
    }

    fn reg_set(&mut self, off: u64, v: u32) {
        self.regs[(off / 4) as usize] = v;
    }

    fn hold_reset(&mut self) {
        self.reset_released = false;
        self.status_reset_seen = false;
        self.chip_errors = 0;
        self.stream.running = false;
        self.stream.backlog = 0;
        for r in [chip::MODULE_ENABLE, chip::SPI_MODULE_CTRL] {
            self.reg_set(r, 0);
        }
    }

    /// Chips the configuration selects: q400_num 0 = all, 0x10 = 2, 0x20 = 12.
    fn active_chips(&self) -> u32 {
        let n = match self.reg(chip::Q400_NUM) {
            chip::Q400_TWO => 2,
            chip::Q400_TWELVE => 12,
            _ => self.chips,
        }
        .min(self.chips);
        (1 << n) - 1
    }

    fn sample_mode(&self) -> bool {
        self.reg(chip::MODE_SEL) == chip::MODE_SAMPLE
    }

    fn check_faults(&mut self) {
        if self.stream.noise.fault_active(Fault::Unplug) {
            self.gone = true;
        }
        if self.stream.noise.fault_active(Fault::ModuleFail) && self.stream.running {
            self.chip_errors |= 1;
        }
    }

    fn init_status(&self) -> u32 {
        if !self.reset_released {
            return 0;
        }
        let mut v = self.active_chips();
        if self.stream.running && self.stream.warm() {
            v |= InitStatus::READY;
        }
        v | (self.chip_errors & self.active_chips()) << InitStatus::ERROR_SHIFT
    }

    fn write_idq(&mut self, off: u64, v: u32) {
        if off == chip::INIT_STATUS {
            return;
        }
        if self.shut_until.is_some_and(|t| Instant::now() < t) {
            // Still shutting down: the write is lost.
            return;
        }
        self.reg_set(off, v);
        match off {
            chip::SW_RST if v & chip::SW_RST_RELEASE == 0 => self.hold_reset(),
            chip::SW_RST => {
                if !self.reset_released {
                    self.stream.ready_at = Instant::now() + self.startup_delay;
                }
                self.reset_released = true;
            }
            chip::SPI_MODULE_CTRL => {
                if v & chip::SPI_STATUS_RESET != 0 {
                    self.status_reset_seen = true;
                    self.chip_errors = 0;
                }
                let start = v == chip::SPI_RUN
                    && self.reset_released
                    && self.status_reset_seen
                    && self.reg(chip::MODULE_ENABLE) == chip::MODULE_ENABLE_ON;
                if start && !self.stream.running {
                    let sample = self.sample_mode();
                    let chips = self.active_chips().count_ones();
                    let s = &mut self.stream;
                    s.running = true;
                    s.backlog = 0;
                    s.warmup_left = if sample { chip::DISCARD_SAMPLE } else { chip::DISCARD_RNG };
                    s.noise.set_bias(s.bias + if sample { SAMPLE_MODE_BIAS } else { 0.0 });
                    s.pace.restart(s.unit_bytes_per_s * f64::from(chips));
                } else if !start {
                    // Anything but the run value (0xA1 first in the shutdown) stops the chips.
                    self.stream.running = false;
                }
                if v == chip::SPI_SHUTDOWN && !self.shutdown_delay.is_zero() {
                    self.shut_until = Some(Instant::now() + self.shutdown_delay);
                }
            }
            _ => {}
        }
    }

    fn advance(&mut self, dma: &DmaTable) {
        self.engine.advance(&mut self.stream, dma, &mut self.dma_fault);
        self.check_faults();
    }

    pub fn read(&mut self, bar: u8, off: u64, dma: &DmaTable) -> u32 {
        if self.gone {
            return u32::MAX;
        }
        let v = if bar == 0 {
            match off {
                chip::INIT_STATUS => {
                    self.advance(dma);
                    self.init_status()
                }
                _ => self.reg(off),
            }
        } else {
            self.advance(dma);
            self.engine.read(off)
        };
        if self.gone {
            u32::MAX
        } else {
            v
        }
    }

    pub fn write(&mut self, bar: u8, off: u64, v: u32, dma: &DmaTable) {
        if self.gone {
            return;
        }
        if bar == 0 {
            self.write_idq(off, v);
        } else {
            self.engine.write(off, v);
            self.advance(dma);
        }
    }
}
