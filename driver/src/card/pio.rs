//! Module cards (179a:0001: Quantis PCI, PCIe-4M, PCIe-16M): programmed I/O from a 4 KiB FIFO.
//!
//! Sequences follow IDQ's GPL module-card driver (leifj/quantispci, `common/quantis_pci_common.h`)
//! as summarised in quantis-hardware.md ("Module cards (PIO)"); see `docs/hardware-protocols.md`.
//! Deliberate differences, each with its reason there:
//! - the overflow bit is checked by one FS_RR read after each run of FD_RR reads instead of after
//!   every word; that read also gives the fill level for the next run, so a run costs one status
//!   read. On overflow the words of the run are kept except the last one, as IDQ keeps the words
//!   before the check that saw the error and drops the word just read;
//! - after enabling modules MX_SR is polled for up to [`STATUS_WAIT`] (IDQ does not read it);
//! - a module in test mode is never served (IDQ ignores module status while any module is in
//!   test mode);
//! - instead of spinning on FS_RR up to 10,000 times the driver sleeps for the time the modules
//!   need to put 5/8 of a FIFO in it, or less where a wake-up 1 ms late would then find it full
//!   (PCIe-16M), adapting that time to what it finds on waking.

use super::{
    rd, rd_live, wr, Card, CardCounters, CardInfo, CardOptions, Clock, Error, Family, Result, Wait,
};
use crate::hw::Device;
use crate::regs::{pio, FifoStatus, ModuleBits, ModuleStatus};
use std::sync::Arc;
use std::time::Duration;

/// After this many overflows in a row read() fails instead of going on: the error bit is
/// stuck, or the host cannot keep up at all. (Single overflows happen on a busy host and only
/// cost the bytes lost in the FIFO.)
pub const MAX_OVERFLOW_RUN: u32 = 64;
/// Bounds of the adaptive wait between FIFO reads.
const MIN_WAIT: Duration = Duration::from_micros(100);
const MAX_WAIT: Duration = Duration::from_millis(20);
/// How late a wake-up may come without the FIFO overflowing (see `start`): the scheduling
/// delays of a loaded host or a virtual CPU, measured up to about 0.8 ms on the test VM.
const WAKE_MARGIN: Duration = Duration::from_millis(1);
/// How long `start()` polls MX_SR for the enabled modules' HST bit before declaring a module
/// dead: the hardware status may lag the enable (quantis-hardware.md). No source gives the
/// module cards' lag; this is the bound IDQ's chip-card driver gives its sensors to report
/// ready (1000 polls 1 ms apart, `Q400WaitForReady` in IDQ's `idq-rng.c`).
pub const STATUS_WAIT: Duration = Duration::from_secs(1);
/// The step of that poll (as `Q400WaitForReady`).
pub const STATUS_POLL: Duration = Duration::from_millis(1);

/// IDQ's reset: write 1 to CC_ER, then 1 to CC_DR; CC_SR is read back to flush the posted writes.
pub fn reset(dev: &mut dyn Device) -> Result<()> {
    wr(dev, pio::BAR, pio::CC_ER, 1, "reset the core (CC_ER)")?;
    wr(dev, pio::BAR, pio::CC_DR, 1, "release the core reset (CC_DR)")?;
    let sr = rd(dev, pio::BAR, pio::CC_SR, "read core status (CC_SR)")?;
    tracing::debug!(device = %dev.info().name, cc_sr = format_args!("{sr:#010x}"), "core reset");
    Ok(())
}

/// Sets SEN of each module in `mask` through MX_ER, then flushes the FIFO (IDQ's order).
/// Returns MX_SR read back afterwards.
pub fn enable_modules(dev: &mut dyn Device, mask: u32) -> Result<ModuleStatus> {
    let v = ModuleStatus::write_value(mask, ModuleBits::SEN);
    wr(dev, pio::BAR, pio::MX_ER, v, "enable modules (MX_ER)")?;
    flush(dev)?;
    module_status(dev)
}

/// Clears SEN of each module in `mask` through MX_DR, then flushes the FIFO.
pub fn disable_modules(dev: &mut dyn Device, mask: u32) -> Result<ModuleStatus> {
    let v = ModuleStatus::write_value(mask, ModuleBits::SEN);
    wr(dev, pio::BAR, pio::MX_DR, v, "disable modules (MX_DR)")?;
    flush(dev)?;
    module_status(dev)
}

/// Empties the FIFO and clears its error bit: write 0 to FS_CA.
pub fn flush(dev: &mut dyn Device) -> Result<()> {
    wr(dev, pio::BAR, pio::FS_CA, 0, "flush the FIFO (FS_CA)")
}

pub fn module_status(dev: &mut dyn Device) -> Result<ModuleStatus> {
    rd_live(dev, pio::BAR, pio::MX_SR, "read module status (MX_SR)").map(ModuleStatus)
}

pub fn fifo_status(dev: &mut dyn Device) -> Result<FifoStatus> {
    rd_live(dev, pio::BAR, pio::FS_RR, "read FIFO status (FS_RR)").map(FifoStatus)
}

pub fn core_version(dev: &mut dyn Device) -> Result<u32> {
    rd(dev, pio::BAR, pio::CV_SR, "read core version (CV_SR)")
}

/// The model name by number of modules present (the PCI id is shared by the whole family).
fn model_name(present: u32) -> String {
    match present.count_ones() {
        1 => "pcie-4m".into(),
        4 => "pcie-16m".into(),
        n => format!("module-card-{}m", 4 * n),
    }
}

fn nominal_rate(modules: u32) -> u64 {
    u64::from(modules.count_ones()) * pio::MODULE_BYTES_PER_S
}

/// Reads CV_SR and MX_SR only (FS_RR and FD_RR are not touched: reading FD_RR pops data).
pub fn probe(dev: &mut dyn Device) -> Result<CardInfo> {
    if dev.info().bars[usize::from(pio::BAR)].is_none() {
        let missing =
            crate::hw::Error::NoSuchBar { device: dev.info().name.clone(), bar: pio::BAR };
        return Err(super::hw_error(dev, "find the register BAR", missing));
    }
    let version = core_version(dev)?;
    let st = module_status(dev)?;
    let present = st.present();
    let healthy = present & st.hardware_ok();
    let info = dev.info();
    Ok(CardInfo {
        device: info.name.clone(),
        model: model_name(present),
        family: Family::Module,
        pci_id: info.id,
        serial: None,
        version: format!("{version:#010x}"),
        version_raw: version,
        modules_present: present,
        modules_healthy: healthy,
        bars: info.bars,
        simulated: info.simulated,
        rate_bytes_per_s: nominal_rate(healthy),
        chip_mode: None,
    })
}

/// A module card driven by PIO.
pub struct PioCard {
    dev: Box<dyn Device>,
    info: CardInfo,
    clock: Arc<dyn Clock>,
    want: Option<u32>,
    read_timeout: Duration,
    enabled: u32,
    started: bool,
    counters: CardCounters,
    overflow_run: u32,
    /// The last FS_RR read, when its level is still a lower bound of the FIFO's content (only
    /// this driver pops the FIFO): saves the status read at the start of the next run. None
    /// after a flush, start or stop.
    level: Option<FifoStatus>,
    /// Checked bytes read from the FIFO but not yet returned.
    spill: Vec<u8>,
    spill_pos: usize,
    /// The current wait between FIFO reads, adapted to the fill rate.
    wait: Duration,
    /// The wait the nominal rate gives (see `start`), set at start.
    nominal_wait: Duration,
    /// How far waking to less than half a FIFO may grow the wait: [`MAX_WAIT`] where the
    /// nominal wait brings at least half a FIFO (less means a slower card than nominal), else
    /// the nominal wait (waking to a quarter is then what the nominal rate gives).
    grow_cap: Duration,
}

impl std::fmt::Debug for PioCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PioCard")
            .field("info", &self.info)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl PioCard {
    pub fn open(mut dev: Box<dyn Device>, opts: &CardOptions) -> Result<PioCard> {
        let info = probe(dev.as_mut())?;
        if info.modules_present == 0 {
            return Err(Error::NoModules { device: info.device.clone(), status: 0 });
        }
        let clock = opts.clock_for(dev.as_ref());
        Ok(PioCard {
            dev,
            info,
            clock,
            want: opts.modules,
            read_timeout: opts.read_timeout,
            enabled: 0,
            started: false,
            counters: CardCounters::default(),
            overflow_run: 0,
            level: None,
            spill: Vec::with_capacity(pio::FIFO_BYTES),
            spill_pos: 0,
            wait: MAX_WAIT,
            nominal_wait: MAX_WAIT,
            grow_cap: MAX_WAIT,
        })
    }

    fn device(&self) -> String {
        self.info.device.clone()
    }

    /// The failure check before every read and after every wait: every enabled module must be
    /// working (SEN and HST; IDQ's older, stricter rule; the newer one fails only when no
    /// enabled module works, and a failed module is left out at the next start instead), and
    /// none may be in test mode. IDQ skips the whole check while any module is in test mode;
    /// this driver refuses instead, fail-closed: a module in test mode is not known to deliver
    /// random data.
    fn check_health(&mut self) -> Result<()> {
        let st = module_status(self.dev.as_mut())?;
        let testing = self.enabled & st.test_mode();
        if testing != 0 {
            return Err(Error::TestMode { device: self.device(), modules: testing, status: st.0 });
        }
        let bad = self.enabled & !st.working();
        if bad != 0 {
            return Err(Error::ModuleFailure {
                device: self.device(),
                enabled: self.enabled,
                working: st.working(),
                status: st.0,
            });
        }
        Ok(())
    }

    /// After FS_RR showed the error bit: flush (which clears it), count the overflow and the
    /// `dropped` bytes already read that are thrown away, and shorten the wait.
    fn overflowed(&mut self, dropped: usize) -> Result<()> {
        flush(self.dev.as_mut())?;
        self.level = None;
        self.counters.overflows += 1;
        self.counters.bytes_dropped += dropped as u64;
        self.overflow_run += 1;
        // Overflow means the wait was too long for this card's rate.
        self.wait = (self.wait * 3 / 4).max(MIN_WAIT);
        tracing::debug!(device = %self.info.device, dropped, "FIFO overflow: flushed");
        if self.overflow_run >= MAX_OVERFLOW_RUN {
            return Err(Error::FifoOverflow { device: self.device(), batches: self.overflow_run });
        }
        Ok(())
    }

    fn take_spill(&mut self, out: &mut [u8]) -> usize {
        let n = (self.spill.len() - self.spill_pos).min(out.len());
        out[..n].copy_from_slice(&self.spill[self.spill_pos..self.spill_pos + n]);
        self.spill_pos += n;
        if self.spill_pos == self.spill.len() {
            self.spill.clear();
            self.spill_pos = 0;
        }
        n
    }

    /// Reads `out.len()` bytes (at most a FIFO) from FD_RR into `out`: whole words, host byte
    /// order as IDQ's driver. One [`Device::read32_repeat`] call, not a call per word.
    fn read_words(dev: &mut dyn Device, out: &mut [u8]) -> Result<()> {
        let mut words = [0u32; pio::FIFO_BYTES / 4];
        let words = &mut words[..out.len() / 4];
        dev.read32_repeat(pio::BAR, pio::FD_RR, words)
            .map_err(|source| super::hw_error(dev, "read the FIFO (FD_RR)", source))?;
        for (chunk, w) in out.chunks_exact_mut(4).zip(words.iter()) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        Ok(())
    }

    /// One run: reads the `avail` bytes FS_RR showed, then FS_RR once more, which both checks
    /// the run for overflow and gives the level for the next run. On overflow the run's words
    /// are kept except the last one (IDQ: the words before the check that saw the error stay,
    /// the word just read is dropped) and the FIFO is flushed. Returns the bytes placed in
    /// `out`; the rest of the run goes to the spill.
    fn run(&mut self, out: &mut [u8], avail: usize) -> Result<usize> {
        let direct = out.len() >= avail;
        if direct {
            Self::read_words(self.dev.as_mut(), &mut out[..avail])?;
        } else {
            self.spill.resize(avail, 0);
            Self::read_words(self.dev.as_mut(), &mut self.spill)?;
        }
        let after = fifo_status(self.dev.as_mut())?;
        let kept = if after.overflow() {
            let kept = avail - 4;
            self.spill.truncate(if direct { 0 } else { kept });
            if let Err(e) = self.overflowed(4) {
                // Giving up: the kept words go unreturned too.
                self.counters.bytes_dropped += kept as u64;
                self.spill.clear();
                return Err(e);
            }
            kept
        } else {
            self.overflow_run = 0;
            self.level = Some(after);
            avail
        };
        Ok(if direct { kept } else { self.take_spill(out) })
    }

    /// The body of `read()`: fills `buf` from `*n` on; `*n` counts the bytes placed so far,
    /// also when it fails.
    fn fill(&mut self, buf: &mut [u8], n: &mut usize) -> Result<()> {
        self.check_health()?;
        let deadline = self.clock.now() + self.read_timeout;
        let mut slept = false;
        while *n < buf.len() {
            let st = match self.level.take() {
                Some(st) => st,
                None => fifo_status(self.dev.as_mut())?,
            };
            if st.overflow() {
                // Seen before reading: nothing read is thrown away (IDQ would read one word
                // and drop it); the FIFO's content goes with the flush.
                self.overflowed(0)?;
                continue;
            }
            let avail = st.available_bytes();
            if avail == 0 {
                let now = self.clock.now();
                if now >= deadline {
                    break;
                }
                self.clock.sleep(self.wait.min(deadline - now), Wait::Poll);
                slept = true;
                self.check_health()?;
                continue;
            }
            if slept {
                self.adapt(avail);
                slept = false;
            }
            *n += self.run(&mut buf[*n..], avail)?;
        }
        Ok(())
    }

    /// Throws away checked bytes not yet returned (at a start or stop), counting them.
    fn discard_spill(&mut self) {
        // Checked bytes read but not returned belong to the run being reset.
        self.counters.bytes_discarded += (self.spill.len() - self.spill_pos) as u64;
        self.spill.clear();
        self.spill_pos = 0;
    }

    /// Polls MX_SR after enabling `want` until every module in it shows SEN and HST, for at
    /// most [`STATUS_WAIT`]: the hardware status may lag the enable. If it had to wait, the FIFO
    /// is flushed again, so nothing produced before the status was good is served. Returns the
    /// last MX_SR read.
    fn settle(&mut self, want: u32, mut st: ModuleStatus) -> Result<ModuleStatus> {
        let deadline = self.clock.now() + STATUS_WAIT;
        let mut waited = false;
        while want & !st.working() != 0 {
            let now = self.clock.now();
            if now >= deadline {
                break;
            }
            self.clock.sleep(STATUS_POLL.min(deadline - now), Wait::Poll);
            waited = true;
            st = module_status(self.dev.as_mut())?;
        }
        if waited {
            flush(self.dev.as_mut())?;
        }
        Ok(st)
    }

    /// Adapts the wait after sleeping: waking to a full FIFO is close to losing data, so the
    /// wait shrinks quickly; waking to less than half a FIFO wastes wake-ups, so it grows
    /// slowly. Waking to exactly half grows it back towards the nominal wait only: without
    /// that, every late wake-up of a busy host (a full FIFO) would shorten the wait for good,
    /// since at the nominal wait the FIFO is found half or three-quarters full, never less.
    fn adapt(&mut self, found: usize) {
        if found >= pio::FIFO_BYTES {
            self.wait = (self.wait * 9 / 10).max(MIN_WAIT);
        } else if found < pio::FIFO_BYTES / 2 {
            self.wait = (self.wait * 21 / 20).min(self.grow_cap);
        } else if found == pio::FIFO_BYTES / 2 && self.wait < self.nominal_wait {
            self.wait = (self.wait * 21 / 20).min(self.nominal_wait);
        }
    }
}

impl Card for PioCard {
    fn info(&self) -> &CardInfo {
        &self.info
    }

    fn start(&mut self) -> Result<()> {
        self.started = false;
        self.discard_spill();
        let dev = self.dev.as_mut();
        reset(dev)?;
        let st = module_status(dev)?;
        let present = st.present();
        if present == 0 {
            return Err(Error::NoModules { device: self.device(), status: st.0 });
        }
        let want = self.want.unwrap_or(present) & present;
        if want == 0 {
            return Err(Error::BadOption {
                device: self.device(),
                reason: format!(
                    "modules {:#x} requested, but only {present:#x} are present",
                    self.want.unwrap_or(0)
                ),
            });
        }
        let st = enable_modules(self.dev.as_mut(), want)?;
        let st = self.settle(want, st)?;
        let testing = want & st.test_mode();
        let working = st.working() & want & !testing;
        let failed = want & !working;
        if working == 0 {
            disable_modules(self.dev.as_mut(), want)?;
            if testing != 0 {
                return Err(Error::TestMode {
                    device: self.device(),
                    modules: testing,
                    status: st.0,
                });
            }
            return Err(Error::ModuleFailure {
                device: self.device(),
                enabled: want,
                working,
                status: st.0,
            });
        }
        if failed != 0 {
            tracing::warn!(device = %self.info.device, failed = format_args!("{failed:#x}"), test_mode = format_args!("{testing:#x}"), "modules not working or in test mode after enable; leaving them off");
            disable_modules(self.dev.as_mut(), failed)?;
        }
        self.enabled = want & !failed;
        self.info.modules_present = present;
        self.info.modules_healthy = working;
        self.info.model = model_name(present);
        self.info.rate_bytes_per_s = nominal_rate(working);
        // Up to 1023 bytes may be left after a run (the flags count in quarters). Sleep for the
        // time the working modules need to fill 5/8 of the FIFO (waking between 5/8 and 7/8
        // full), but never so long that a wake-up WAKE_MARGIN late finds it full from the worst
        // case left: at the PCIe-16M rate that is the shorter wait (0.54 ms instead of 1.28).
        let rate = self.info.rate_bytes_per_s.max(1);
        let fill = |bytes: u64| Duration::from_micros(bytes * 1_000_000 / rate);
        let fifo = pio::FIFO_BYTES as u64;
        self.wait = fill(fifo * 5 / 8)
            .min(fill(fifo - 1023).saturating_sub(WAKE_MARGIN))
            .clamp(MIN_WAIT, MAX_WAIT);
        self.nominal_wait = self.wait;
        self.grow_cap = if fill(fifo / 2) <= self.wait { MAX_WAIT } else { self.wait };
        self.overflow_run = 0;
        self.level = None;
        self.started = true;
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if !self.started {
            return Err(Error::NotStarted { device: self.device() });
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = self.take_spill(buf);
        match self.fill(buf, &mut n) {
            Ok(()) => {
                self.counters.bytes_read += n as u64;
                Ok(n)
            }
            Err(e) => {
                // The call's bytes are not returned (as IDQ's read() fails with EIO).
                self.counters.bytes_dropped += n as u64;
                Err(e)
            }
        }
    }

    fn stop(&mut self) -> Result<()> {
        self.started = false;
        self.level = None;
        self.discard_spill();
        if self.enabled != 0 {
            disable_modules(self.dev.as_mut(), self.enabled)?;
            self.enabled = 0;
        }
        Ok(())
    }

    fn counters(&self) -> CardCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pio_wait_recovers_from_late_wakeups_up_to_the_nominal_wait_only() {
        let dev = crate::hw::open(&"sim:pcie-16m?seed=1".parse().expect("uri")).expect("sim");
        let mut card = PioCard::open(dev, &CardOptions::default()).unwrap();
        card.start().unwrap();
        let nominal = card.wait;
        // 4 KiB less the 1023 bytes a run may leave, at 4 modules x 500 kB/s, less the 1 ms
        // margin for late wake-ups (shorter than 5/8 of a FIFO, 1280 us, at this rate).
        assert_eq!(nominal, Duration::from_micros(1536) - WAKE_MARGIN);
        for _ in 0..5 {
            card.adapt(pio::FIFO_BYTES);
        }
        assert!(card.wait < nominal * 2 / 3, "full FIFOs shorten the wait: {:?}", card.wait);
        for _ in 0..50 {
            card.adapt(pio::FIFO_BYTES / 2);
        }
        assert_eq!(
            card.wait, nominal,
            "half-full FIFOs bring the wait back to nominal, no further"
        );
        card.adapt(pio::FIFO_BYTES * 3 / 4);
        assert_eq!(card.wait, nominal, "three-quarters full: the wait stays");
        for _ in 0..200 {
            card.adapt(pio::FIFO_BYTES / 4);
        }
        assert_eq!(card.wait, nominal, "at this rate a quarter-full FIFO is what the wait gives");
        // One module (500 kB/s): the nominal wait brings 5/8 of a FIFO, so waking to a quarter
        // means a slower card than nominal, and the wait may grow to the cap.
        let dev = crate::hw::open(&"sim:pcie-4m?seed=1".parse().expect("uri")).expect("sim");
        let mut card = PioCard::open(dev, &CardOptions::default()).unwrap();
        card.start().unwrap();
        assert_eq!(card.wait, Duration::from_micros(5120));
        for _ in 0..200 {
            card.adapt(pio::FIFO_BYTES / 4);
        }
        assert_eq!(card.wait, MAX_WAIT, "a slower card than nominal lets the wait grow to the cap");
    }
}
