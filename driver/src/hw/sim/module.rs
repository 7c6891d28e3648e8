//! Model of a module card (179a:0001, PCIe-4M / PCIe-16M): BAR 1's 64-byte register window, a
//! 4 KiB FIFO filled by the enabled, healthy modules at their bit rate, and the module bytes.

use super::noise::{Noise, Pace};
use super::{Fault, SimSpec};
use crate::regs::{pio, FifoStatus, ModuleBits};
use std::time::{Duration, Instant};

const FIFO_WORDS: usize = pio::FIFO_BYTES / 4;

/// CC_SR as the simulator defines it (real bit meanings unknown): bit 0 = core held in reset
/// (CC_ER written, CC_DR not yet), bits 8..11 = modules currently feeding the FIFO.
pub const CC_SR_IN_RESET: u32 = 1 << 0;
pub const CC_SR_FEEDING_SHIFT: u32 = 8;

/// CV_SR as the simulator reports it (layout unknown): an arbitrary fixed, recognisable value.
pub const SIM_CORE_VERSION: u32 = 0x0005_0203;

#[derive(Debug)]
pub struct ModuleCard {
    present: u32,
    /// SEN bits.
    enabled: u32,
    /// TM bits.
    test_mode: u32,
    /// Modules whose HST bit is clear.
    failed: u32,
    /// `test-mode=`: TM bits that are set from power-on and stay set.
    stuck_test_mode: u32,
    /// `status-lag=`: how long HST stays clear after a module is enabled.
    status_lag: Duration,
    /// Per module: when its HST bit shows after the last enable (None: not lagging).
    hst_at: [Option<Instant>; pio::MAX_MODULES as usize],
    in_reset: bool,
    gone: bool,
    fifo: Box<[u32; FIFO_WORDS]>,
    head: usize,
    len: usize,
    overflow: bool,
    noise: Noise,
    pace: Pace,
    unit_bytes_per_s: f64,
    /// Sub-word bytes owed by the pace.
    owed: u64,
    scratch: Vec<u8>,
}

impl ModuleCard {
    pub fn new(spec: &SimSpec, seed: [u8; 32]) -> ModuleCard {
        let all = (1u32 << spec.model.units()) - 1;
        ModuleCard {
            present: spec.modules.unwrap_or(all) & all,
            enabled: 0,
            test_mode: 0,
            failed: 0,
            stuck_test_mode: spec.test_mode & spec.modules.unwrap_or(all) & all,
            status_lag: spec.status_lag,
            hst_at: [None; pio::MAX_MODULES as usize],
            in_reset: false,
            gone: false,
            fifo: Box::new([0; FIFO_WORDS]),
            head: 0,
            len: 0,
            overflow: false,
            noise: Noise::for_spec(spec, seed),
            pace: Pace::new(spec.unit_bytes_per_s()),
            unit_bytes_per_s: spec.unit_bytes_per_s(),
            owed: 0,
            scratch: vec![0; pio::FIFO_BYTES],
        }
    }

    pub fn noise_produced(&self) -> u64 {
        self.noise.produced()
    }

    /// Power-on state (also what a function-level reset gives): modules disabled, FIFO empty.
    pub fn power_on_reset(&mut self) {
        if self.gone {
            return;
        }
        self.enabled = 0;
        self.test_mode = 0;
        self.hst_at = Default::default();
        self.in_reset = false;
        self.flush();
        self.restart_pace();
    }

    fn feeding(&self) -> u32 {
        if self.in_reset {
            0
        } else {
            self.enabled & self.present & !self.failed
        }
    }

    fn restart_pace(&mut self) {
        self.pace.restart(self.unit_bytes_per_s * f64::from(self.feeding().count_ones()));
        self.owed = 0;
    }

    fn flush(&mut self) {
        self.head = 0;
        self.len = 0;
        self.overflow = false;
    }

    /// Applies device-level faults once the noise has produced `fault-after` bytes.
    fn check_faults(&mut self) {
        if self.noise.fault_active(Fault::Unplug) {
            self.gone = true;
        }
        if self.noise.fault_active(Fault::ModuleFail) {
            let first = self.present & self.present.wrapping_neg();
            if self.failed & first == 0 {
                // Account for what was produced with the old set of modules first.
                self.refill_inner();
                self.failed |= first;
                self.restart_pace();
            }
        }
    }

    fn refill(&mut self) {
        self.refill_inner();
        self.check_faults();
    }

    /// Moves the bytes the modules produced since the last call into the FIFO; bytes that do
    /// not fit are lost and latch the error bit, as a real FIFO overflow would.
    fn refill_inner(&mut self) {
        if self.feeding() == 0 {
            self.pace.due();
            return;
        }
        let space = FIFO_WORDS - self.len;
        let words = if self.pace.unlimited() {
            usize::try_from(self.noise.deliverable(space as u64 * 4) / 4).unwrap_or(space)
        } else {
            let due = self.noise.deliverable(self.pace.due()).saturating_add(self.owed);
            self.owed = due % 4;
            let w = usize::try_from(due / 4).unwrap_or(usize::MAX);
            if w > space {
                self.overflow = true;
            }
            w.min(space)
        };
        if words == 0 {
            return;
        }
        // The fault shows from the first fill that starts after `fault-after` bytes.
        let overflow_fault = self.noise.fault_active(Fault::FifoOverflow);
        let bytes = &mut self.scratch[..words * 4];
        self.noise.fill(bytes);
        for (i, c) in bytes.chunks_exact(4).enumerate() {
            let w = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            self.fifo[(self.head + self.len + i) % FIFO_WORDS] = w;
        }
        self.len += words;
        if overflow_fault {
            self.overflow = true;
        }
    }

    fn pop(&mut self) -> u32 {
        if self.len == 0 && self.pace.unlimited() {
            self.refill();
        }
        if self.len == 0 || self.gone {
            // Reading an empty FIFO: the real value is unknown; the simulator returns 0.
            return 0;
        }
        let w = self.fifo[self.head];
        self.head = (self.head + 1) % FIFO_WORDS;
        self.len -= 1;
        w
    }

    /// `out.len()` reads of `offset`, as many [`ModuleCard::read`] calls would give; FIFO data
    /// is copied out in runs rather than popped word by word.
    pub fn read_repeat(&mut self, offset: u64, out: &mut [u32]) {
        if offset != pio::FD_RR {
            out.iter_mut().for_each(|w| *w = self.read(offset));
            return;
        }
        let mut i = 0;
        while i < out.len() && !self.gone {
            if self.len == 0 && self.pace.unlimited() {
                self.refill();
            }
            if self.len == 0 || self.gone {
                break;
            }
            let n = (out.len() - i).min(self.len).min(FIFO_WORDS - self.head);
            out[i..i + n].copy_from_slice(&self.fifo[self.head..self.head + n]);
            self.head = (self.head + n) % FIFO_WORDS;
            self.len -= n;
            i += n;
        }
        // The rest reads an empty FIFO (0, see `pop`), or a card that is gone (all-ones).
        out[i..].fill(if self.gone { u32::MAX } else { 0 });
    }

    fn module_status(&self) -> u32 {
        (0..pio::MAX_MODULES).fold(0, |v, i| {
            let bit = 1 << i;
            if self.present & bit == 0 {
                return v;
            }
            let mut b = ModuleBits::HEN;
            if self.enabled & bit != 0 {
                b |= ModuleBits::SEN;
            }
            if (self.test_mode | self.stuck_test_mode) & bit != 0 {
                b |= ModuleBits::TM;
            }
            let settled = self.hst_at[i as usize].is_none_or(|t| Instant::now() >= t);
            if self.failed & bit == 0 && settled {
                b |= ModuleBits::HST;
            }
            v | u32::from(b) << (8 * i)
        })
    }

    pub fn read(&mut self, offset: u64) -> u32 {
        if self.gone {
            return u32::MAX;
        }
        let v = match offset {
            pio::FD_RR => self.pop(),
            pio::FS_RR => {
                self.refill();
                FifoStatus::for_level(self.len * 4, self.overflow).0
            }
            pio::MX_SR => {
                self.check_faults();
                self.module_status()
            }
            pio::CC_SR => {
                (u32::from(self.in_reset) * CC_SR_IN_RESET)
                    | (self.feeding() << CC_SR_FEEDING_SHIFT)
            }
            pio::CV_SR => SIM_CORE_VERSION,
            // Write-only and unassigned offsets read as 0.
            _ => 0,
        };
        if self.gone {
            u32::MAX
        } else {
            v
        }
    }

    /// Modules in `mask` were just enabled: their HST bit shows `status-lag` from now. They
    /// feed the FIFO from the enable on **(choice)**: only the status report lags.
    fn start_status_lag(&mut self, mask: u32) {
        if self.status_lag.is_zero() {
            return;
        }
        let at = Instant::now() + self.status_lag;
        for i in (0..pio::MAX_MODULES).filter(|i| mask >> i & 1 != 0) {
            self.hst_at[i as usize] = Some(at);
        }
    }

    /// Per-module bits of a MX_ER/MX_DR value, as a module mask.
    fn modules_with(&self, v: u32, bit: u8) -> u32 {
        (0..pio::MAX_MODULES).filter(|i| (v >> (8 * i)) as u8 & bit != 0).fold(0, |m, i| m | 1 << i)
            & self.present
    }

    pub fn write(&mut self, offset: u64, v: u32) {
        if self.gone {
            return;
        }
        match offset {
            pio::CC_ER if v & 1 != 0 => {
                // Core held in reset: modules drop out, FIFO cleared (the simulator's choice
                // for the unknown reset state: modules come out of reset disabled).
                self.refill_inner();
                self.in_reset = true;
                self.enabled = 0;
                self.test_mode = 0;
                self.hst_at = Default::default();
                self.flush();
                self.restart_pace();
            }
            pio::CC_DR if v & 1 != 0 => {
                self.in_reset = false;
                self.restart_pace();
            }
            pio::FS_CA => self.flush(),
            pio::MX_ER | pio::MX_DR => {
                self.refill_inner();
                let sen = self.modules_with(v, ModuleBits::SEN);
                let tm = self.modules_with(v, ModuleBits::TM);
                if offset == pio::MX_ER {
                    self.start_status_lag(sen & !self.enabled);
                    self.enabled |= sen;
                    self.test_mode |= tm;
                } else {
                    (0..pio::MAX_MODULES).filter(|i| sen >> i & 1 != 0).for_each(|i| {
                        self.hst_at[i as usize] = None;
                    });
                    self.enabled &= !sen;
                    self.test_mode &= !tm;
                }
                self.restart_pace();
            }
            _ => {}
        }
    }
}
