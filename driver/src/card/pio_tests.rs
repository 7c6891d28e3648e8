//! Module-card tests for the status wait after enable, FIFO overflow handling and test mode:
//! exact register sequences on a scripted or recorded device, and the simulator's options.

use super::testutil::{sim, writes, Ev, FakeClock, Log, Recorder};
use super::*;
use crate::hw::sim::SimDevice;
use crate::hw::{DeviceInfo, DmaBuffer};
use crate::regs::{ids, pio as p, FifoStatus, ModuleBits, ModuleStatus};
use std::collections::VecDeque;
use std::sync::Mutex;

/// Opens `dev` recorded, with a virtual clock logging into the same log.
fn recorded_dev(dev: Box<dyn Device>, opts: CardOptions) -> (Box<dyn Card>, Log) {
    let (rec, log) = Recorder::new(dev);
    let opts = CardOptions { clock: Some(FakeClock::new(log.clone())), ..opts };
    (open(Box::new(rec), &opts).expect("card opens"), log)
}

fn poll_sleep(log: &Log) -> Duration {
    log.lock()
        .unwrap()
        .iter()
        .map(|e| if let Ev::Sleep(d, Wait::Poll) = e { *d } else { Duration::ZERO })
        .sum()
}

// ---------- module status after enable

#[test]
fn card_pio_start_waits_for_a_lagging_module_status() {
    // HST shows 30 ms after the enable; IDQ-style "read MX_SR once" would call every module dead.
    for spec in ["pcie-4m?rate=0&seed=1&status-lag=30ms", "pcie-16m?rate=0&seed=1&status-lag=30ms"]
    {
        let mut card = open(sim(spec), &CardOptions::default()).unwrap();
        card.start().unwrap_or_else(|e| panic!("{spec}: {e}"));
        let all = if spec.starts_with("pcie-4m") { 0x1 } else { 0xF };
        assert_eq!(card.info().modules_healthy, all, "{spec}");
        let mut buf = [0u8; 5000];
        let mut got = 0;
        while got < buf.len() {
            got += card.read(&mut buf[got..]).unwrap();
        }
    }
}

#[test]
fn card_pio_start_declares_a_dead_module_after_the_status_wait() {
    // Module 0 never shows HST. A single-module card fails after exactly STATUS_WAIT of polls.
    let (mut card, log) =
        recorded_dev(sim("pcie-4m?rate=0&seed=1&fault=module-fail"), CardOptions::default());
    log.lock().unwrap().clear();
    let e = card.start().unwrap_err();
    assert!(matches!(e, Error::ModuleFailure { enabled: 1, working: 0, .. }), "{e}");
    assert_eq!(poll_sleep(&log), pio::STATUS_WAIT);
    let mx_sr =
        log.lock().unwrap().iter().filter(|e| matches!(e, Ev::Read(1, p::MX_SR, _))).count();
    // One read after the reset, one after the enable, one after each poll step, one after the
    // disable.
    assert_eq!(mx_sr, 2 + STATUS_WAIT_POLLS + 1);

    // On a 4-module card the dead module is left out once the wait is over; the FIFO is flushed
    // after the wait (data from before the status was good is not served), then the module is
    // disabled (with its flush).
    let (mut card, log) =
        recorded_dev(sim("pcie-16m?rate=0&seed=1&fault=module-fail"), CardOptions::default());
    card.start().unwrap();
    assert_eq!(card.info().modules_healthy, 0xE);
    assert_eq!(poll_sleep(&log), pio::STATUS_WAIT);
    assert_eq!(
        writes(&log),
        vec![
            Ev::Write(1, p::CC_ER, 1),
            Ev::Write(1, p::CC_DR, 1),
            Ev::Write(1, p::MX_ER, 0x0202_0202),
            Ev::Write(1, p::FS_CA, 0),
            Ev::Write(1, p::FS_CA, 0),
            Ev::Write(1, p::MX_DR, 0x0000_0002),
            Ev::Write(1, p::FS_CA, 0),
        ]
    );
}

const STATUS_WAIT_POLLS: usize =
    (pio::STATUS_WAIT.as_micros() / pio::STATUS_POLL.as_micros()) as usize;

// ---------- FIFO overflow: keep what was read before it (IDQ), drop only the last word

/// A module card with one healthy module whose FS_RR reads follow a script (then: empty) and
/// whose FD_RR gives the words 1, 2, 3, …
struct Scripted {
    info: DeviceInfo,
    fs_rr: VecDeque<u32>,
    word: u32,
}

impl Scripted {
    fn new(fs_rr: &[FifoStatus]) -> Box<Scripted> {
        let mut bars = [None; 6];
        bars[usize::from(p::BAR)] = Some(p::WINDOW);
        Box::new(Scripted {
            info: DeviceInfo {
                name: "scripted".into(),
                id: ids::MODULE_CARD,
                bars,
                simulated: true,
                dma: false,
            },
            fs_rr: fs_rr.iter().map(|s| s.0).collect(),
            word: 0,
        })
    }
}

impl Device for Scripted {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }
    fn read32(&mut self, _bar: u8, offset: u64) -> hw::Result<u32> {
        Ok(match offset {
            p::MX_SR => u32::from(ModuleBits::HEN | ModuleBits::SEN | ModuleBits::HST),
            p::FS_RR => self.fs_rr.pop_front().unwrap_or(FifoStatus::EMPTY),
            p::FD_RR => {
                self.word += 1;
                self.word
            }
            _ => 0,
        })
    }
    fn write32(&mut self, _bar: u8, _offset: u64, _value: u32) -> hw::Result<()> {
        Ok(())
    }
    fn dma_alloc(&mut self, _len: usize) -> hw::Result<DmaBuffer> {
        unreachable!("module cards do no DMA")
    }
    fn dma_free(&mut self, _buf: DmaBuffer) -> hw::Result<()> {
        unreachable!("module cards do no DMA")
    }
    fn reset(&mut self) -> hw::Result<()> {
        Ok(())
    }
}

fn words(range: std::ops::RangeInclusive<u32>) -> Vec<u8> {
    range.flat_map(u32::to_ne_bytes).collect()
}

#[test]
fn card_pio_overflow_keeps_the_words_read_before_it_and_drops_the_last() {
    let three_q = FifoStatus::for_level(3072, false);
    let three_q_err = FifoStatus::for_level(3072, true);
    let (mut card, log) =
        recorded_dev(Scripted::new(&[three_q, three_q_err]), CardOptions::default());
    card.start().unwrap();
    log.lock().unwrap().clear();
    let mut buf = vec![0u8; 8192];
    let n = card.read(&mut buf).unwrap();
    // FS_RR shows 3072 bytes: 768 words read; the FS_RR after them shows the error: IDQ flushes
    // and drops the word just read (the 768th), keeping the 767 before it.
    assert_eq!(n, 767 * 4);
    assert!(buf[..n] == words(1..=767), "the words before the overflow, in order");
    let ev = log.lock().unwrap().clone();
    let mut want = vec![Ev::Read(1, p::MX_SR, 0xC2), Ev::Read(1, p::FS_RR, three_q.0)];
    want.extend((1..=768).map(|w| Ev::Read(1, p::FD_RR, w)));
    want.extend([
        Ev::Read(1, p::FS_RR, three_q_err.0),
        Ev::Write(1, p::FS_CA, 0),
        Ev::Read(1, p::FS_RR, FifoStatus::EMPTY),
    ]);
    assert_eq!(ev[..want.len()], want[..]);
    assert!(matches!(ev[want.len()], Ev::Sleep(_, Wait::Poll)), "then waits for data");
    let c = card.counters();
    assert_eq!((c.overflows, c.bytes_dropped, c.bytes_read), (1, 4, 767 * 4));
}

#[test]
fn card_pio_overflow_keeps_the_words_when_the_run_goes_to_the_spill() {
    // The caller asks for less than the run: the run is read whole into the spill, and the
    // overflow shortens the spill by the last word only.
    let three_q = FifoStatus::for_level(3072, false);
    let (mut card, _) = recorded_dev(
        Scripted::new(&[three_q, FifoStatus::for_level(3072, true)]),
        CardOptions::default(),
    );
    card.start().unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let mut buf = vec![0u8; 1000];
        let n = card.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == words(1..=767));
    assert_eq!(card.counters().bytes_dropped, 4);
}

#[test]
fn card_pio_overflow_seen_before_reading_flushes_without_reading() {
    let full_err = FifoStatus::for_level(4096, true);
    let (mut card, log) = recorded_dev(Scripted::new(&[full_err]), CardOptions::default());
    card.start().unwrap();
    log.lock().unwrap().clear();
    assert_eq!(card.read(&mut [0u8; 64]).unwrap(), 0);
    let ev = log.lock().unwrap().clone();
    assert_eq!(
        ev[..4],
        [
            Ev::Read(1, p::MX_SR, 0xC2),
            Ev::Read(1, p::FS_RR, full_err.0),
            Ev::Write(1, p::FS_CA, 0),
            Ev::Read(1, p::FS_RR, FifoStatus::EMPTY),
        ]
    );
    assert!(!ev.iter().any(|e| matches!(e, Ev::Read(1, p::FD_RR, _))));
    let c = card.counters();
    assert_eq!((c.overflows, c.bytes_dropped), (1, 0));
}

#[test]
fn card_pio_reads_a_run_per_status_read() {
    // Levels 3/4, 1/2, 1/4, then 1/2: three runs, each followed by exactly one FS_RR, which
    // gives the next run's level; the level read after the last run serves the next read().
    let (q1, q2, q3) = (
        FifoStatus::for_level(1024, false),
        FifoStatus::for_level(2048, false),
        FifoStatus::for_level(3072, false),
    );
    let (mut card, log) = recorded_dev(Scripted::new(&[q3, q2, q1, q2]), CardOptions::default());
    card.start().unwrap();
    log.lock().unwrap().clear();
    let mut buf = vec![0u8; 6144];
    assert_eq!(card.read(&mut buf).unwrap(), 6144);
    assert!(buf == words(1..=1536));
    let reads = |log: &Log| {
        log.lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Ev::Read(1, off, _) if *off != p::FD_RR => Some(*off),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(reads(&log), [p::MX_SR, p::FS_RR, p::FS_RR, p::FS_RR, p::FS_RR]);
    log.lock().unwrap().clear();
    // The 1/2 level read after the last run: the next read() needs no FS_RR before its run.
    let mut buf = vec![0u8; 2048];
    assert_eq!(card.read(&mut buf).unwrap(), 2048);
    assert!(buf == words(1537..=2048));
    let ev = log.lock().unwrap().clone();
    assert_eq!(ev[..2], [Ev::Read(1, p::MX_SR, 0xC2), Ev::Read(1, p::FD_RR, 1537)]);
    assert_eq!(reads(&log), [p::MX_SR, p::FS_RR]);
}

// ---------- test mode

#[test]
fn card_pio_leaves_modules_in_test_mode_out() {
    // IDQ ignores module status while any module is in test mode; this driver serves only
    // modules that are not (fail-closed), and refuses a card with no other module.
    let (mut card, log) =
        recorded_dev(sim("pcie-16m?rate=0&seed=1&test-mode=0x1"), CardOptions::default());
    card.start().unwrap();
    assert_eq!(card.info().modules_healthy, 0xE);
    assert!(writes(&log).contains(&Ev::Write(1, p::MX_DR, 0x0000_0002)));
    assert_eq!(card.read(&mut [0u8; 4096]).unwrap(), 4096);

    let mut one =
        open(sim("pcie-4m?rate=0&seed=1&test-mode=0x1"), &CardOptions::default()).unwrap();
    let e = one.start().unwrap_err();
    assert!(matches!(e, Error::TestMode { modules: 1, .. }), "{e}");
    assert_eq!(e.reason(), Reason::ModuleFailure);
}

/// A simulator the test can reach while the card owns it.
struct Shared(Arc<Mutex<SimDevice>>, DeviceInfo);

impl Device for Shared {
    fn info(&self) -> &DeviceInfo {
        &self.1
    }
    fn read32(&mut self, bar: u8, offset: u64) -> hw::Result<u32> {
        self.0.lock().unwrap().read32(bar, offset)
    }
    fn write32(&mut self, bar: u8, offset: u64, value: u32) -> hw::Result<()> {
        self.0.lock().unwrap().write32(bar, offset, value)
    }
    fn dma_alloc(&mut self, len: usize) -> hw::Result<DmaBuffer> {
        self.0.lock().unwrap().dma_alloc(len)
    }
    fn dma_free(&mut self, buf: DmaBuffer) -> hw::Result<()> {
        self.0.lock().unwrap().dma_free(buf)
    }
    fn reset(&mut self) -> hw::Result<()> {
        self.0.lock().unwrap().reset()
    }
}

#[test]
fn card_pio_module_entering_test_mode_stops_reads() {
    let sim =
        Arc::new(Mutex::new(SimDevice::new("pcie-16m?rate=0&seed=1".parse().unwrap()).unwrap()));
    let info = sim.lock().unwrap().info().clone();
    let mut card = open(Box::new(Shared(sim.clone(), info)), &CardOptions::default()).unwrap();
    card.start().unwrap();
    assert_eq!(card.read(&mut [0u8; 4096]).unwrap(), 4096);
    // Module 2 switches to test mode behind the driver's back.
    let tm = ModuleStatus::write_value(0b0100, ModuleBits::TM);
    sim.lock().unwrap().write32(p::BAR, p::MX_ER, tm).unwrap();
    let e = card.read(&mut [0u8; 4096]).unwrap_err();
    assert!(matches!(e, Error::TestMode { modules: 0b0100, .. }), "{e}");
    assert_eq!(e.reason(), Reason::ModuleFailure);
}

// ---------- counters

#[test]
fn card_pio_counters_account_for_every_word_read() {
    // bytes_read + bytes_dropped + bytes_discarded = 4 × FD_RR reads, whatever ends the reads: a
    // module failure (spill left when the error comes), overflows (stuck error bit), test mode,
    // a restart (spill held at a stop is discarded).
    for spec in [
        "pcie-16m?rate=0&seed=1&fault=module-fail&fault-after=50000",
        "pcie-4m?rate=0&seed=1&fault=fifo-overflow&fault-after=8192",
        "pcie-16m?rate=0&seed=1",
    ] {
        let (mut card, log) = recorded_dev(sim(spec), CardOptions::default());
        card.start().unwrap();
        for round in 0..2 {
            let mut buf = vec![0u8; 1000];
            for _ in 0..300 {
                if card.read(&mut buf).is_err() {
                    break;
                }
            }
            if round == 0 {
                card.stop().unwrap();
                card.start().unwrap();
            }
        }
        card.stop().unwrap();
        let words =
            log.lock().unwrap().iter().filter(|e| matches!(e, Ev::Read(1, p::FD_RR, _))).count();
        let c = card.counters();
        assert!(words > 0, "{spec}");
        let accounted = c.bytes_read + c.bytes_dropped + c.bytes_discarded;
        assert_eq!(accounted, 4 * words as u64, "{spec}: {c:?}");
    }
    // The scripted overflow: 768 words read, 100 bytes returned, the rest held and discarded at
    // the stop.
    let (mut card, _) = recorded_dev(
        Scripted::new(&[FifoStatus::for_level(3072, false), FifoStatus::for_level(3072, true)]),
        CardOptions::default(),
    );
    card.start().unwrap();
    card.read(&mut [0u8; 100]).unwrap();
    card.stop().unwrap();
    let c = card.counters();
    assert_eq!((c.bytes_read, c.bytes_dropped + c.bytes_discarded), (100, 768 * 4 - 100));
}
