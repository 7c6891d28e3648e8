//! Card-layer tests: exact register sequences against the hardware facts (recording device),
//! end-to-end data through both protocols on the simulator, probe, open errors and faults.

use crate::regs::{chip, pio as p, xdma as x};
use super::testutil::{sim, writes, writes_and_waits, Ev, FakeClock, Log, Recorder};
use super::*;
use crate::hw::sim::noise::Noise;
use crate::hw::sim::{SimDevice, SimSpec};
use crate::hw::{DeviceInfo, DmaBuffer};

const SEQ: Wait = Wait::Sequence;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Opens a card on a recorded simulator with a virtual clock.
fn recorded(spec: &str, opts: CardOptions) -> (Box<dyn Card>, Log) {
    let (rec, log) = Recorder::new(sim(spec));
    let opts = CardOptions { clock: Some(FakeClock::new(log.clone())), ..opts };
    (open(Box::new(rec), &opts).expect("card opens"), log)
}

/// The bytes the simulator's noise source produces for `spec` (no faults), `skip` bytes in.
fn expected_stream(spec: &str, bias: f64, len: usize) -> Vec<u8> {
    let spec: SimSpec = spec.parse().unwrap();
    let mut n = Noise::new(spec.noise_seed().unwrap(), bias, None, 0);
    let mut v = vec![0u8; len];
    n.fill(&mut v);
    v
}

/// Reads exactly `len` bytes through the card with a rotating set of buffer sizes.
fn read_exact(card: &mut dyn Card, len: usize) -> Vec<u8> {
    let sizes = [1000, 4096, 7, 65_536, 3, 12_345];
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    let mut empty = 0;
    while out.len() < len {
        let want = sizes[i % sizes.len()].min(len - out.len());
        i += 1;
        let mut buf = vec![0u8; want];
        let n = card.read(&mut buf).expect("read");
        assert!(n <= want);
        out.extend_from_slice(&buf[..n]);
        empty = if n == 0 { empty + 1 } else { 0 };
        assert!(empty < 100, "no data for 100 reads in a row");
    }
    out
}

fn ones_fraction(v: &[u8]) -> f64 {
    v.iter().map(|b| f64::from(b.count_ones())).sum::<f64>() / (8.0 * v.len() as f64)
}

// ---------- module cards: register sequences (quantis-hardware.md "Sequences in IDQ's driver")

#[test]
fn card_pio_reset_writes_cc_er_then_cc_dr() {
    let (mut rec, log) = Recorder::new(sim("pcie-16m?rate=0&seed=1"));
    pio::reset(&mut rec).unwrap();
    assert_eq!(writes(&log), vec![Ev::Write(1, 0x00, 1), Ev::Write(1, 0x04, 1)]);
}

#[test]
fn card_pio_enable_and_disable_write_module_bytes_then_flush() {
    let (mut rec, log) = Recorder::new(sim("pcie-16m?rate=0&seed=1"));
    let st = pio::enable_modules(&mut rec, 0b1010).unwrap();
    assert_eq!(st.enabled(), 0b1010);
    // SEN is bit 1 of module i's byte: modules 1 and 3 -> bits 9 and 25.
    assert_eq!(writes(&log), vec![Ev::Write(1, 0x30, 0x0200_0200), Ev::Write(1, 0x20, 0)]);
    log.lock().unwrap().clear();
    let st = pio::disable_modules(&mut rec, 0b0010).unwrap();
    assert_eq!(st.enabled(), 0b1000);
    assert_eq!(writes(&log), vec![Ev::Write(1, 0x34, 0x0000_0200), Ev::Write(1, 0x20, 0)]);
}

#[test]
fn card_pio_start_and_stop_sequences() {
    let (mut card, log) = recorded("pcie-16m?rate=0&seed=1", CardOptions::default());
    assert!(writes(&log).is_empty(), "open must not write");
    card.start().unwrap();
    assert_eq!(
        writes(&log),
        vec![
            Ev::Write(1, p::CC_ER, 1),
            Ev::Write(1, p::CC_DR, 1),
            Ev::Write(1, p::MX_ER, 0x0202_0202),
            Ev::Write(1, p::FS_CA, 0),
        ]
    );
    assert_eq!(card.info().modules_healthy, 0xF);
    assert_eq!(card.info().rate_bytes_per_s, 2_000_000);
    log.lock().unwrap().clear();
    card.stop().unwrap();
    assert_eq!(writes(&log), vec![Ev::Write(1, p::MX_DR, 0x0202_0202), Ev::Write(1, p::FS_CA, 0)]);
}

#[test]
fn card_pio_enables_only_requested_present_modules() {
    let opts = CardOptions { modules: Some(0b0101), ..CardOptions::default() };
    let (mut card, log) = recorded("pcie-16m?rate=0&seed=1&modules=0x7", opts);
    card.start().unwrap();
    assert!(writes(&log).contains(&Ev::Write(1, p::MX_ER, 0x0002_0002)));
    assert_eq!(card.info().modules_present, 0b0111);
    assert_eq!(card.info().modules_healthy, 0b0101);
    assert_eq!(card.info().model, "module-card-12m");
    let opts = CardOptions { modules: Some(0b1000), ..CardOptions::default() };
    let (mut card, _) = recorded("pcie-16m?rate=0&seed=1&modules=0x7", opts);
    let e = card.start().unwrap_err();
    assert!(matches!(e, Error::BadOption { .. }), "{e}");
}

#[test]
fn card_pio_read_checks_health_then_fifo_and_never_writes() {
    let (mut card, log) = recorded("pcie-4m?rate=0&seed=1", CardOptions::default());
    card.start().unwrap();
    log.lock().unwrap().clear();
    let mut buf = [0u8; 4096];
    assert_eq!(card.read(&mut buf).unwrap(), 4096);
    let ev = log.lock().unwrap().clone();
    assert_eq!(ev[0], Ev::Read(1, p::MX_SR, 0x0000_00C2));
    assert!(matches!(ev[1], Ev::Read(1, p::FS_RR, s) if s & crate::regs::FifoStatus::FULL != 0));
    assert_eq!(ev.iter().filter(|e| matches!(e, Ev::Read(1, p::FD_RR, _))).count(), 1024);
    assert!(!ev.iter().any(|e| matches!(e, Ev::Write(..))));
}

// ---------- module cards: data end to end

#[test]
fn card_pio_delivers_the_noise_stream_exactly() {
    for spec in ["pcie-4m?rate=0&seed=9", "pcie-16m?rate=0&seed=10"] {
        let mut card = open(sim(spec), &CardOptions::default()).unwrap();
        card.start().unwrap();
        let got = read_exact(card.as_mut(), 200_000);
        assert!(got == expected_stream(spec, 0.0, 200_000), "{spec}: stream differs");
        assert_eq!(card.counters().bytes_read, 200_000);
        assert_eq!(card.counters().bytes_dropped, 0);
    }
}

#[test]
fn card_pio_read_before_start_is_an_error() {
    let mut card = open(sim("pcie-4m?rate=0&seed=1"), &CardOptions::default()).unwrap();
    assert!(matches!(card.read(&mut [0u8; 16]), Err(Error::NotStarted { .. })));
}

#[test]
fn card_pio_times_out_with_zero_when_no_data() {
    // 8 bit/s: a quarter FIFO takes over 17 minutes, so a read must give up with Ok(0).
    let log = Log::default();
    let opts = CardOptions { clock: Some(FakeClock::new(log.clone())), ..CardOptions::default() };
    let mut card = open(sim("pcie-4m?rate=8&seed=1"), &opts).unwrap();
    card.start().unwrap();
    assert_eq!(card.read(&mut [0u8; 64]).unwrap(), 0);
    let slept: Duration = log
        .lock()
        .unwrap()
        .iter()
        .map(|e| if let Ev::Sleep(d, Wait::Poll) = e { *d } else { Duration::ZERO })
        .sum();
    assert_eq!(slept, ms(50), "waits exactly the read timeout, in sleeps");
}

#[test]
fn sim_pio_fifo_overflow_at_real_rate_drops_the_batch_and_goes_on() {
    // 4 modules at 4 Mbit/s fill the 4 KiB FIFO in ~2 ms; after 30 ms it has certainly overflowed.
    let mut card = open(sim("pcie-16m?seed=2"), &CardOptions::default()).unwrap();
    card.start().unwrap();
    std::thread::sleep(ms(30));
    let mut buf = vec![0u8; 8192];
    let mut total = 0;
    while total < 8192 {
        total += card.read(&mut buf[total..]).unwrap();
    }
    let c = card.counters();
    assert!(c.overflows >= 1, "{c:?}");
    assert!(c.bytes_dropped >= 1024, "{c:?}");
    assert!((0.45..0.55).contains(&ones_fraction(&buf)));
}

// ---------- chip cards: register sequences (quantis-hardware.md "Start-up", "Shutdown")

fn startup_expected(reject: u32, sel: u32, q400: u32) -> Vec<Ev> {
    vec![
        Ev::Write(0, chip::SW_RST, 0x10),
        Ev::Write(0, chip::SW_RST, 0),
        Ev::Write(0, chip::SW_RST, 0x10),
        Ev::Sleep(ms(100), SEQ),
        Ev::Write(0, chip::SPI_MODULE_CTRL, 0),
        Ev::Write(0, chip::Q400_NUM, q400),
        Ev::Write(0, chip::TESTMODE_HWREJECT, reject),
        Ev::Write(0, chip::MODE_SEL, sel),
        Ev::Sleep(ms(100), SEQ),
        Ev::Write(0, chip::SPI_MODULE_CTRL, 0x40),
        Ev::Sleep(ms(300), SEQ),
        Ev::Write(0, chip::MODULE_ENABLE, 0x11),
        Ev::Write(0, chip::SPI_MODULE_CTRL, 0x81),
    ]
}

#[test]
fn xdma_startup_sequence_rng_and_sample() {
    for (mode, reject, sel) in [(ChipMode::Rng, 0x0A, 0xA0000), (ChipMode::Sample, 0x0C, 0xA0001)] {
        let (mut rec, log) = Recorder::new(sim("pcie-240m?rate=0&seed=1"));
        let clock = FakeClock::new(log.clone());
        xdma::startup(&mut rec, 0, chip::Q400_TWELVE, mode, clock.as_ref()).unwrap();
        assert_eq!(writes_and_waits(&log), startup_expected(reject, sel, 0x20), "{mode:?}");
        let st = xdma::wait_ready(&mut rec, 0, clock.as_ref()).unwrap();
        assert_eq!(st.chips_present(), 0xFFF);
    }
}

#[test]
fn xdma_shutdown_sequence() {
    let (mut rec, log) = Recorder::new(sim("pcie-40m?rate=0&seed=1"));
    let clock = FakeClock::new(log.clone());
    xdma::shutdown(&mut rec, 0, clock.as_ref()).unwrap();
    assert_eq!(
        writes_and_waits(&log),
        vec![
            Ev::Write(0, chip::SPI_MODULE_CTRL, 0xA1),
            Ev::Sleep(ms(1000), SEQ),
            Ev::Write(0, chip::SPI_MODULE_CTRL, 0x40),
            Ev::Write(0, chip::SPI_MODULE_CTRL, 0),
        ]
    );
}

#[test]
fn xdma_wait_ready_polls_1000_times_1ms_apart_then_fails() {
    // Without the start-up the ready bit never sets.
    let (mut rec, log) = Recorder::new(sim("pcie-40m?rate=0&seed=1"));
    let clock = FakeClock::new(log.clone());
    let e = xdma::wait_ready(&mut rec, 0, clock.as_ref()).unwrap_err();
    assert!(matches!(e, Error::NotReady { waited_ms: 1000, .. }), "{e}");
    assert_eq!(e.reason(), Reason::ChipError);
    let ev = log.lock().unwrap().clone();
    assert_eq!(ev.iter().filter(|e| matches!(e, Ev::Read(0, chip::INIT_STATUS, _))).count(), 1000);
    assert_eq!(ev.iter().filter(|e| **e == Ev::Sleep(ms(1), Wait::Poll)).count(), 999);
}

#[test]
fn xdma_card_start_programs_the_c2h_channel_in_credit_mode() {
    let (mut card, log) = recorded("pcie-240m?rate=0&seed=1", CardOptions::default());
    assert!(writes(&log).is_empty(), "open must not write");
    card.start().unwrap();
    let w = writes(&log);
    assert_eq!(
        w[..10],
        startup_expected(0x0A, 0xA0000, 0x20)
            .into_iter()
            .filter(|e| matches!(e, Ev::Write(..)))
            .collect::<Vec<_>>()[..]
    );
    // The descriptor ring is the first DMA buffer the card allocates.
    let desc = crate::hw::sim::DmaTable::FIRST_IOVA;
    assert_eq!(
        w[10..],
        [
            Ev::Write(1, 0x1004, 0),
            Ev::Write(1, 0x6024, 1 << 16),
            Ev::Write(1, 0x5080, desc as u32),
            Ev::Write(1, 0x5084, (desc >> 32) as u32),
            Ev::Write(1, 0x5088, 0),
            Ev::Write(
                1,
                0x1040,
                x::ST_ERRORS | x::ST_DESC_STOPPED | x::ST_DESC_COMPLETED | x::ST_IDLE_STOPPED
            ),
            Ev::Write(1, 0x1004, x::CTRL_RUN),
            Ev::Write(1, 0x508C, 256),
        ]
    );
    log.lock().unwrap().clear();
    card.stop().unwrap();
    let w = writes_and_waits(&log);
    assert_eq!(w[0], Ev::Write(1, 0x1004, 0), "engine stopped before the shutdown");
    assert_eq!(w[1], Ev::Write(0, chip::SPI_MODULE_CTRL, 0xA1));
}

// ---------- chip cards: data end to end

#[test]
fn xdma_delivers_the_noise_stream_after_the_rng_discard() {
    for spec in ["pcie-40m?rate=0&seed=3", "pcie-240m?rate=0&seed=4"] {
        let mut card = open(sim(spec), &CardOptions::default()).unwrap();
        card.start().unwrap();
        let got = read_exact(card.as_mut(), 1_500_000);
        assert!(got == expected_stream(spec, 0.0, 1_500_000), "{spec}: stream differs");
        let c = card.counters();
        assert_eq!(c.bytes_discarded, 65_536);
        assert_eq!(c.bytes_read, 1_500_000);
        // A restart discards again and the stream continues.
        card.start().unwrap();
        read_exact(card.as_mut(), 10);
        assert_eq!(card.counters().bytes_discarded, 2 * 65_536);
    }
}

#[test]
fn xdma_sample_mode_discards_16809984_bytes_and_is_raw() {
    let spec = "pcie-40m?rate=0&seed=5";
    let opts = CardOptions { chip_mode: ChipMode::Sample, ..CardOptions::default() };
    let mut card = open(sim(spec), &opts).unwrap();
    card.start().unwrap();
    let got = read_exact(card.as_mut(), 100_000);
    assert_eq!(card.counters().bytes_discarded, 16_809_984);
    assert!(
        got == expected_stream(spec, crate::hw::sim::SAMPLE_MODE_BIAS, 100_000),
        "stream differs"
    );
}

#[test]
fn xdma_read_at_real_rate_returns_data() {
    // The real 40M rate (5 MB/s): a read waits for descriptors to complete, without errors.
    let mut card = open(sim("pcie-40m?seed=6"), &CardOptions::default()).unwrap();
    card.start().unwrap();
    let got = read_exact(card.as_mut(), 20_000);
    assert!((0.45..0.55).contains(&ones_fraction(&got)));
}

// ---------- open, probe

/// A device that claims another identity.
struct Disguise {
    inner: Box<dyn Device>,
    info: DeviceInfo,
}

impl Device for Disguise {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }
    fn read32(&mut self, bar: u8, offset: u64) -> crate::hw::Result<u32> {
        self.inner.read32(bar, offset)
    }
    fn write32(&mut self, bar: u8, offset: u64, value: u32) -> crate::hw::Result<()> {
        self.inner.write32(bar, offset, value)
    }
    fn dma_alloc(&mut self, len: usize) -> crate::hw::Result<DmaBuffer> {
        self.inner.dma_alloc(len)
    }
    fn dma_free(&mut self, buf: DmaBuffer) -> crate::hw::Result<()> {
        self.inner.dma_free(buf)
    }
    fn reset(&mut self) -> crate::hw::Result<()> {
        self.inner.reset()
    }
}

fn disguised(spec: &str, name: &str, id: Option<PciId>) -> Box<dyn Device> {
    let inner = sim(spec);
    let mut info = inner.info().clone();
    info.name = name.into();
    info.simulated = false;
    info.dma = !name.starts_with("uio:");
    if let Some(id) = id {
        info.id = id;
    }
    Box::new(Disguise { inner, info })
}

#[test]
fn card_open_names_a_foreign_pci_id() {
    let dev = disguised(
        "pcie-4m?seed=1",
        "vfio:0000:03:00.0",
        Some(PciId { vendor: 0x8086, device: 0x1234 }),
    );
    let e = open(dev, &CardOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::NotQuantis { .. }));
    assert!(
        msg.contains("8086:1234")
            && msg.contains("not a Quantis card")
            && msg.contains("vfio:0000:03:00.0"),
        "{msg}"
    );
}

#[test]
fn card_open_refuses_chip_cards_over_uio_and_says_why() {
    for spec in ["pcie-40m?seed=1", "pcie-240m?seed=1"] {
        let (rec, log) = Recorder::new(disguised(spec, "uio:0000:03:00.0", None));
        let e = open(Box::new(rec), &CardOptions::default()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("IOMMU") && msg.contains("vfio-pci") && msg.contains("uio"), "{msg}");
        assert!(log.lock().unwrap().is_empty(), "nothing touched");
    }
    // Module cards are fine over uio.
    let dev = disguised("pcie-4m?rate=0&seed=1", "uio:0000:03:00.0", None);
    let mut card = open(dev, &CardOptions::default()).unwrap();
    card.start().unwrap();
    assert!(card.read(&mut [0u8; 64]).unwrap() > 0);
}

#[test]
fn card_probe_reports_and_writes_nothing() {
    let cases = [
        ("pcie-4m?seed=1", "pcie-4m", 0x1, None),
        ("pcie-16m?seed=1", "pcie-16m", 0xF, None),
        ("pcie-40m?seed=1", "pcie-40m", 0, Some("2024SIM040M")),
        ("pcie-240m?seed=1", "pcie-240m", 0, Some("2024SIM240M")),
    ];
    for (spec, model, present, serial) in cases {
        let (mut rec, log) = Recorder::new(sim(spec));
        let info = probe(&mut rec).unwrap();
        assert_eq!(info.model, model);
        assert_eq!(info.serial.as_deref(), serial);
        assert_eq!(info.modules_present, present, "{spec}: chips show up only after the start-up");
        assert!(info.rate_bytes_per_s >= 500_000, "{spec}: nominal rate");
        assert!(info.simulated);
        assert!(writes(&log).is_empty(), "{spec}: probe wrote {:?}", writes(&log));
        assert!(
            !log.lock().unwrap().iter().any(|e| matches!(e, Ev::Read(_, p::FD_RR, _))),
            "probe popped the FIFO"
        );
    }
}

#[test]
fn card_probe_of_a_running_card_changes_nothing() {
    // Module card: enabled, FIFO full; probe must not pop the FIFO or touch the modules.
    let (mut rec, log) = Recorder::new(sim("pcie-16m?rate=0&seed=11"));
    pio::reset(&mut rec).unwrap();
    pio::enable_modules(&mut rec, 0xF).unwrap();
    let state =
        |d: &mut dyn Device| [p::MX_SR, p::FS_RR, p::CC_SR].map(|o| d.read32(p::BAR, o).unwrap());
    let before = state(&mut rec);
    log.lock().unwrap().clear();
    let info = probe(&mut rec).unwrap();
    assert_eq!(info.modules_healthy, 0xF);
    assert!(writes(&log).is_empty());
    assert_eq!(state(&mut rec), before);
    // Chip card: started; probe must not disturb the run state or the engine.
    let (mut rec, log) = Recorder::new(sim("pcie-40m?rate=0&seed=11"));
    let clock = FakeClock::new(log.clone());
    xdma::startup(&mut rec, 0, chip::Q400_TWO, ChipMode::Sample, clock.as_ref()).unwrap();
    let state = |d: &mut dyn Device| {
        [chip::INIT_STATUS, chip::SPI_MODULE_CTRL, chip::MODE_SEL].map(|o| d.read32(0, o).unwrap())
    };
    let before = state(&mut rec);
    log.lock().unwrap().clear();
    let info = probe(&mut rec).unwrap();
    assert_eq!(info.modules_present, 0b11);
    assert_eq!(info.chip_mode, Some(ChipMode::Sample));
    assert!(writes(&log).is_empty());
    assert_eq!(state(&mut rec), before);
}

#[test]
fn xdma_finds_the_dma_bar_by_identifiers() {
    let mut dev = sim("pcie-240m?seed=1");
    assert_eq!(xdma::find_bars(dev.as_mut()).unwrap(), xdma::Bars { idq: 0, dma: 1 });
    let mut module = sim("pcie-4m?seed=1");
    assert!(matches!(xdma::find_bars(module.as_mut()), Err(Error::NoXdmaBar { .. })));
}

// ---------- faults, through the card path

fn started(spec: &str) -> Box<dyn Card> {
    let mut card = open(sim(spec), &CardOptions::default()).unwrap();
    card.start().unwrap();
    card
}

/// Reads until an error; returns it and the bytes read before.
fn read_until_error(card: &mut dyn Card, limit: usize) -> (Vec<u8>, Error) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        match card.read(&mut buf) {
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, e),
        }
        assert!(out.len() < limit, "no error after {} bytes", out.len());
    }
}

#[test]
fn sim_fault_stuck_and_repeat_show_in_the_data() {
    for model in ["pcie-16m", "pcie-240m"] {
        for (fault, check) in [
            ("stuck0", (|v: &[u8]| v.iter().all(|&b| b == 0)) as fn(&[u8]) -> bool),
            ("stuck1", |v: &[u8]| v.iter().all(|&b| b == 0xFF)),
            ("repeat", |v: &[u8]| v.chunks_exact(4).all(|w| w == &v[..4])),
        ] {
            let spec = format!("{model}?rate=0&seed=7&fault={fault}&fault-after=20000");
            let mut card = started(&spec);
            let got = read_exact(card.as_mut(), 60_000);
            assert_eq!(
                got[..20_000],
                expected_stream(&spec, 0.0, 20_000)[..],
                "{spec}: healthy before"
            );
            assert!(check(&got[20_000..]), "{spec}: fault visible after");
        }
    }
}

#[test]
fn sim_fault_bias_raises_the_ones_fraction() {
    for model in ["pcie-4m", "pcie-40m"] {
        let spec = format!("{model}?rate=0&seed=8&fault=bias&fault-after=100000");
        let mut card = started(&spec);
        let got = read_exact(card.as_mut(), 400_000);
        // 800 kbit before, 2.4 Mbit after: sigma <= 6e-4, so +-0.01 is > 15 sigma.
        assert!((ones_fraction(&got[..100_000]) - 0.5).abs() < 0.01);
        assert!((ones_fraction(&got[100_000..]) - 0.75).abs() < 0.01);
    }
}

#[test]
fn sim_fault_fifo_overflow_sets_the_error_bit_and_read_gives_up() {
    let mut card = started("pcie-4m?rate=0&seed=1&fault=fifo-overflow&fault-after=8192");
    let (before, e) = read_until_error(card.as_mut(), 1 << 20);
    assert!(matches!(e, Error::FifoOverflow { batches: pio::MAX_OVERFLOW_RUN, .. }), "{e}");
    assert_eq!(e.reason(), Reason::Other);
    assert!(before.len() <= 8192);
    let c = card.counters();
    assert_eq!(c.overflows, u64::from(pio::MAX_OVERFLOW_RUN));
    assert!(c.bytes_dropped >= 4096 * u64::from(pio::MAX_OVERFLOW_RUN) - 4096);
}

#[test]
fn sim_fault_module_fail_pio_stops_reads_and_restart_drops_the_module() {
    let mut card = started("pcie-16m?rate=0&seed=1&fault=module-fail&fault-after=50000");
    let (before, e) = read_until_error(card.as_mut(), 1 << 20);
    assert!(before.len() >= 50_000 - 4096, "{}", before.len());
    assert!(matches!(e, Error::ModuleFailure { enabled: 0xF, working: 0xE, .. }), "{e}");
    assert_eq!(e.reason(), Reason::ModuleFailure);
    card.start().unwrap();
    assert_eq!(card.info().modules_healthy, 0xE);
    assert_eq!(card.info().rate_bytes_per_s, 1_500_000);
    assert!(!read_exact(card.as_mut(), 20_000).is_empty());
    // A single-module card cannot go on.
    let mut one = started("pcie-4m?rate=0&seed=1&fault=module-fail&fault-after=1000");
    let (_, e) = read_until_error(one.as_mut(), 1 << 20);
    assert_eq!(e.reason(), Reason::ModuleFailure);
    let e = one.start().unwrap_err();
    assert!(matches!(e, Error::ModuleFailure { working: 0, .. }), "{e}");
}

#[test]
fn sim_fault_module_fail_xdma_is_a_chip_error() {
    let mut card = started("pcie-240m?rate=0&seed=1&fault=module-fail&fault-after=100000");
    let (_, e) = read_until_error(card.as_mut(), 4 << 20);
    assert!(matches!(e, Error::ChipError { errors: 1, present: 0xFFF, .. }), "{e}");
    assert_eq!(e.reason(), Reason::ChipError);
}

#[test]
fn sim_fault_dma_error_shows_in_the_channel_status() {
    // The engine runs up to a ring (1 MiB) ahead of the reader, so the reader sees the error
    // up to 1 MiB before the fault point.
    let mut card = started("pcie-40m?rate=0&seed=1&fault=dma-error&fault-after=3000000");
    let (before, e) = read_until_error(card.as_mut(), 4 << 20);
    assert!(
        (3_000_000 - (1 << 20) - 65_536..=3_000_000).contains(&before.len()),
        "{}",
        before.len()
    );
    match &e {
        Error::Dma { status, detail, .. } => {
            assert_ne!(status & x::ST_DESC_UR, 0, "{e}");
            assert_eq!(status & x::ST_BUSY, 0, "{e}");
            assert!(detail.contains("unsupported request"), "{e}");
        }
        _ => panic!("expected a DMA error, got {e}"),
    }
    assert_eq!(e.reason(), Reason::DmaError);
}

#[test]
fn sim_fault_unplug_is_device_gone_on_both_families() {
    for spec in [
        "pcie-16m?rate=0&seed=1&fault=unplug&fault-after=30000",
        "pcie-240m?rate=0&seed=1&fault=unplug&fault-after=30000",
    ] {
        let mut card = started(spec);
        let (_, e) = read_until_error(card.as_mut(), 4 << 20);
        assert!(e.is_device_gone(), "{spec}: {e}");
        assert_eq!(e.reason(), Reason::DeviceGone);
        assert!(card.start().unwrap_err().is_device_gone() || card.read(&mut [0; 8]).is_err());
    }
}

#[test]
fn card_error_reasons_map() {
    let d = || "sim:x".to_string();
    assert_eq!(Error::NoModules { device: d(), status: 0 }.reason(), Reason::ModuleFailure);
    assert_eq!(Error::NoXdmaBar { device: d() }.reason(), Reason::DmaError);
    let gone = Error::Hw {
        op: "x",
        device: d(),
        source: Box::new(crate::hw::Error::DeviceGone { device: d() }),
    };
    assert!(gone.is_device_gone());
    assert_eq!(gone.reason(), Reason::DeviceGone);
    assert_eq!(Error::NotStarted { device: d() }.reason(), Reason::Other);
    let _ = SimDevice::new("pcie-4m".parse().unwrap()).unwrap();
}

// ---------- into the ring

#[test]
fn card_pio_and_xdma_end_to_end_into_a_ring() {
    use qrng_ring::{Consumer, Producer, RingOptions};
    let dir = tempfile::tempdir().unwrap();
    for spec in ["pcie-16m?rate=0&seed=21", "pcie-240m?rate=0&seed=22"] {
        let path = dir.path().join(format!("{}.ring", &spec[..spec.find('?').unwrap()]));
        let opts = RingOptions { capacity: 1 << 16, ..RingOptions::default() };
        let mut producer = Producer::open(&path, &opts).unwrap();
        let mut consumer = Consumer::open(&path).unwrap();
        let mut card = started(spec);
        let total = 600_000;
        let (mut raw, mut out) = (vec![0u8; 20_000], Vec::with_capacity(total));
        let (mut pending, mut at) = (0, 0);
        let mut chunk = vec![0u8; 7_777];
        while out.len() < total {
            if at == pending {
                pending = card.read(&mut raw).unwrap();
                at = 0;
            }
            at += producer.write(&raw[at..pending]).unwrap();
            let n = consumer.read(&mut chunk).unwrap();
            out.extend_from_slice(&chunk[..n]);
        }
        out.truncate(total);
        assert!(out == expected_stream(spec, 0.0, total), "{spec}: bytes through the ring differ");
    }
}

/// Moves the simulator's XDMA BAR from 1 to 3 (BARs 1 and 2 absent, as with 64-bit BARs): the
/// driver must find it by its identifiers, not by its index.
struct MovedBars {
    inner: Box<dyn Device>,
    info: DeviceInfo,
}

impl MovedBars {
    fn bar(bar: u8) -> u8 {
        if bar == 3 {
            1
        } else if bar == 1 {
            7 // not a BAR of the inner device: an access there is an error
        } else {
            bar
        }
    }
}

impl Device for MovedBars {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }
    fn read32(&mut self, bar: u8, offset: u64) -> crate::hw::Result<u32> {
        self.inner.read32(Self::bar(bar), offset)
    }
    fn write32(&mut self, bar: u8, offset: u64, value: u32) -> crate::hw::Result<()> {
        self.inner.write32(Self::bar(bar), offset, value)
    }
    fn dma_alloc(&mut self, len: usize) -> crate::hw::Result<DmaBuffer> {
        self.inner.dma_alloc(len)
    }
    fn dma_free(&mut self, buf: DmaBuffer) -> crate::hw::Result<()> {
        self.inner.dma_free(buf)
    }
    fn reset(&mut self) -> crate::hw::Result<()> {
        self.inner.reset()
    }
}

#[test]
fn xdma_works_with_the_dma_bar_elsewhere() {
    let spec = "pcie-40m?rate=0&seed=30";
    let inner = sim(spec);
    let mut info = inner.info().clone();
    info.bars = [Some(0x1000), None, None, Some(0x1_0000), None, None];
    let mut dev = MovedBars { inner, info };
    assert_eq!(xdma::find_bars(&mut dev).unwrap(), xdma::Bars { idq: 0, dma: 3 });
    let mut card = open(Box::new(dev), &CardOptions::default()).unwrap();
    card.start().unwrap();
    assert!(read_exact(card.as_mut(), 50_000) == expected_stream(spec, 0.0, 50_000));
}
