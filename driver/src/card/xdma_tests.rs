//! Chip-card tests against the stricter simulator: credits across a stop and start, the error
//! enables, the descriptor control bits, the descriptor-halt bits, the alignment register, a DMA
//! error that happens once, and IDQ's start-up and shutdown delays.

use super::testutil::{sim, Ev, Recorder};
use super::*;
use crate::hw::{DeviceInfo, DmaBuffer};
use crate::regs::xdma as x;
use std::sync::Mutex;

fn ones_fraction(v: &[u8]) -> f64 {
    v.iter().map(|b| f64::from(b.count_ones())).sum::<f64>() / (8.0 * v.len() as f64)
}

/// Reads `len` bytes; more than 200 empty reads in a row (10 s) is a failure.
fn read_bytes(card: &mut dyn Card, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let (mut n, mut empty) = (0, 0);
    while n < len {
        let got = card.read(&mut out[n..]).expect("read");
        n += got;
        empty = if got == 0 { empty + 1 } else { 0 };
        assert!(empty < 200, "no data for 200 reads in a row");
    }
    out
}

/// Reads until an error, with a bound on bytes and on empty reads.
fn read_until_error(card: &mut dyn Card, limit: usize) -> (usize, Error) {
    let mut buf = vec![0u8; 65_536];
    let (mut total, mut empty) = (0, 0);
    loop {
        match card.read(&mut buf) {
            Ok(n) => {
                total += n;
                empty = if n == 0 { empty + 1 } else { 0 };
            }
            Err(e) => return (total, e),
        }
        assert!(total < limit && empty < 200, "no error after {total} bytes");
    }
}

#[test]
fn xdma_stop_start_read_never_runs_more_than_a_ring_ahead() {
    // At the real 240M rate the engine has credits left when stopped early. Unless run's falling
    // edge clears them, the restart's 256 come on top and the engine laps the reader.
    let mut card = open(sim("pcie-240m?seed=11"), &CardOptions::default()).unwrap();
    card.start().unwrap();
    card.stop().unwrap();
    card.start().unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    for _ in 0..6 {
        let n = card.read(&mut buf).expect("read after stop and start");
        got.extend_from_slice(&buf[..n]);
        // Let the card fill its 1 MiB buffer (35 ms at 30 MB/s) while the reader lags.
        std::thread::sleep(std::time::Duration::from_millis(60));
    }
    assert!(got.len() >= 4096, "{} bytes", got.len());
    assert!((0.45..0.55).contains(&ones_fraction(&got)));
}

/// A card whose credit register does not read 0 after run is cleared.
struct StaleCredits(Box<dyn Device>);

impl Device for StaleCredits {
    fn info(&self) -> &DeviceInfo {
        self.0.info()
    }
    fn read32(&mut self, bar: u8, offset: u64) -> crate::hw::Result<u32> {
        match (bar, offset) {
            (1, o) if o == x::C2H_SGDMA + x::SG_DESC_CREDITS => Ok(7),
            _ => self.0.read32(bar, offset),
        }
    }
    fn write32(&mut self, bar: u8, offset: u64, value: u32) -> crate::hw::Result<()> {
        self.0.write32(bar, offset, value)
    }
    fn dma_alloc(&mut self, len: usize) -> crate::hw::Result<DmaBuffer> {
        self.0.dma_alloc(len)
    }
    fn dma_free(&mut self, buf: DmaBuffer) -> crate::hw::Result<()> {
        self.0.dma_free(buf)
    }
    fn reset(&mut self) -> crate::hw::Result<()> {
        self.0.reset()
    }
}

#[test]
fn xdma_start_checks_the_credits_read_zero_before_granting() {
    let (rec, log) = Recorder::new(Box::new(StaleCredits(sim("pcie-40m?rate=0&seed=1"))));
    let mut card = open(Box::new(rec), &CardOptions::default()).unwrap();
    let e = card.start().unwrap_err();
    assert!(matches!(e, Error::StaleCredits { credits: 7, .. }), "{e}");
    assert!(e.to_string().contains("expected 0"), "{e}");
    assert_eq!(e.reason(), Reason::DmaError);
    let log = log.lock().unwrap();
    let credits = x::C2H_SGDMA + x::SG_DESC_CREDITS;
    assert!(log.contains(&Ev::Read(1, credits, 7)));
    assert!(!log.iter().any(|e| matches!(e, Ev::Write(1, o, _) if *o == credits)), "none granted");
    assert!(!log.contains(&Ev::Write(1, 0x1004, x::CTRL_START)), "run never set");
}

#[test]
fn xdma_c2h_control_enables_make_engine_errors_visible() {
    // The simulator logs and stops on a descriptor error only with ie_desc_error set: without
    // the enables this read would see no error and no data, forever.
    let mut card = open(
        sim("pcie-40m?rate=0&seed=1&fault=dma-error&fault-after=200000"),
        &CardOptions::default(),
    )
    .unwrap();
    card.start().unwrap();
    let (_, e) = read_until_error(card.as_mut(), 4 << 20);
    match &e {
        Error::Dma { status, .. } => {
            assert_eq!(status & (x::ST_DESC_UR | x::ST_BUSY), x::ST_DESC_UR)
        }
        _ => panic!("expected a DMA error, got {e}"),
    }
}

/// Keeps a handle on every DMA buffer the card allocates (the descriptor ring is the first).
struct KeepBuffers(Box<dyn Device>, std::sync::Arc<Mutex<Vec<DmaBuffer>>>);

impl Device for KeepBuffers {
    fn info(&self) -> &DeviceInfo {
        self.0.info()
    }
    fn read32(&mut self, bar: u8, offset: u64) -> crate::hw::Result<u32> {
        self.0.read32(bar, offset)
    }
    fn write32(&mut self, bar: u8, offset: u64, value: u32) -> crate::hw::Result<()> {
        self.0.write32(bar, offset, value)
    }
    fn dma_alloc(&mut self, len: usize) -> crate::hw::Result<DmaBuffer> {
        let b = self.0.dma_alloc(len)?;
        self.1.lock().unwrap().push(b.share());
        Ok(b)
    }
    fn dma_free(&mut self, buf: DmaBuffer) -> crate::hw::Result<()> {
        self.0.dma_free(buf)
    }
    fn reset(&mut self) -> crate::hw::Result<()> {
        self.0.reset()
    }
}

#[test]
fn xdma_ring_descriptors_carry_eop_and_completed_and_no_stop() {
    let bufs = std::sync::Arc::default();
    let dev = KeepBuffers(sim("pcie-240m?rate=0&seed=1"), std::sync::Arc::clone(&bufs));
    let mut card = open(Box::new(dev), &CardOptions::default()).unwrap();
    card.start().unwrap();
    let bufs = bufs.lock().unwrap();
    let ring = &bufs[0];
    for i in 0..chip_ring() {
        let mut raw = [0u8; x::DESC_BYTES];
        ring.read(i * x::DESC_BYTES, &mut raw);
        let d = x::Descriptor::from_bytes(&raw).expect("magic 0xAD4B");
        assert_eq!(u32::from(d.control), x::DESC_EOP | x::DESC_COMPLETED, "descriptor {i}");
        assert_eq!(d.next, ring.iova() + (((i + 1) % chip_ring()) * x::DESC_BYTES) as u64);
    }
}

fn chip_ring() -> usize {
    crate::regs::chip::DMA_BUFFERS
}

#[test]
fn xdma_start_clears_a_stale_descriptor_halt() {
    // A halt bit left set (by firmware or a previous user): the channel would be busy with
    // nothing fetched.
    let mut dev = sim("pcie-40m?rate=0&seed=1");
    dev.write32(1, x::SGDMA_COMMON + x::COMMON_DESC_CONTROL_W1S, x::desc_halt_c2h(0)).unwrap();
    let mut card = open(dev, &CardOptions::default()).unwrap();
    card.start().unwrap();
    let got = read_bytes(card.as_mut(), 10_000);
    assert!((0.45..0.55).contains(&ones_fraction(&got)));
}

#[test]
fn xdma_checks_the_alignment_register() {
    // Layouts the engine cannot do are refused with the reason.
    for (align, want) in [
        ("1/1/32", "beyond the engine's 32-bit addresses"),
        ("3/1/64", "not 3-byte aligned"),
        ("1/48/64", "not a multiple of the 48-byte granularity"),
    ] {
        let spec = format!("pcie-40m?rate=0&seed=1&dma-alignments={align}");
        let mut card = open(sim(&spec), &CardOptions::default()).unwrap();
        let e = card.start().unwrap_err();
        assert!(matches!(e, Error::DmaLayout { .. }), "{align}: {e}");
        assert!(e.to_string().contains(want), "{align}: {e}");
        assert_eq!(e.reason(), Reason::DmaError);
    }
    // What the ring needs (4 KiB pages, 64-bit IOVAs), and a register reading 0 (IDQ: 1/1/64).
    for align in ["64/64/64", "128/1/48", "0"] {
        let spec = format!("pcie-40m?rate=0&seed=1&dma-alignments={align}");
        let mut card = open(sim(&spec), &CardOptions::default()).unwrap();
        card.start().unwrap_or_else(|e| panic!("{align}: {e}"));
        assert_eq!(read_bytes(card.as_mut(), 5000).len(), 5000, "{align}");
    }
}

#[test]
fn xdma_dma_error_once_then_stop_start_serves_again() {
    let spec = "pcie-240m?rate=0&seed=12&fault=dma-error&fault-after=4194304&fault-for=1";
    let mut card = open(sim(spec), &CardOptions::default()).unwrap();
    card.start().unwrap();
    let (before, e) = read_until_error(card.as_mut(), 8 << 20);
    assert!(before >= (4 << 20) - (1 << 20), "{before} bytes before the error");
    assert!(matches!(e, Error::Dma { .. }), "{e}");
    card.stop().unwrap();
    card.start().unwrap();
    let got = read_bytes(card.as_mut(), 2 << 20);
    assert!((0.49..0.51).contains(&ones_fraction(&got)));
    assert_eq!(card.counters().bytes_discarded, 2 * 65_536, "the restart discarded again");
}

#[test]
fn xdma_holds_with_idq_startup_and_shutdown_delays() {
    // The card is not ready for 500 ms after the reset release and ignores writes for 1 s after
    // the shutdown value: the driver's ready poll and IDQ's shutdown wait must cover both.
    let spec = "pcie-40m?rate=0&seed=13&startup-delay=500ms&shutdown-delay=1s";
    let mut card = open(sim(spec), &CardOptions::default()).unwrap();
    card.start().unwrap();
    assert_eq!(read_bytes(card.as_mut(), 100_000).len(), 100_000);
    card.stop().unwrap();
    card.start().unwrap();
    let got = read_bytes(card.as_mut(), 100_000);
    assert!((0.49..0.51).contains(&ones_fraction(&got)));
}

#[test]
fn xdma_skipping_idq_shutdown_wait_fails_against_the_delay() {
    // The same card with the sequence waits skipped: the start-up after the shutdown lands in
    // the shutdown delay, is ignored, and the card never becomes ready.
    let spec = "pcie-40m?rate=0&seed=13&shutdown-delay=60s";
    let clock = std::sync::Arc::new(SystemClock { skip_sequence_waits: true });
    let opts = CardOptions { clock: Some(clock), ..CardOptions::default() };
    let mut card = open(sim(spec), &opts).unwrap();
    card.start().unwrap();
    card.stop().unwrap();
    let e = card.start().unwrap_err();
    assert!(matches!(e, Error::NotReady { .. }), "{e}");
}
