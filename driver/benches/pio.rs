//! PIO cost: the CPU the reading thread spends on a module card at the card's real rate when
//! every register read costs what an uncached PCIe read does (`pio-latency=800ns`), against the
//! floor that the reads themselves impose, and the same for a model of IDQ's busy-poll loop.
//!
//! `cargo bench -p quantis-driver --bench pio [-- <label filter>]` (seconds per run:
//! `PIO_BENCH_SECS`, default 5).
//!
//! CPU is the reading thread's own (CLOCK_THREAD_CPUTIME_ID), over wall time. The floor is
//! (FD_RR words + one FS_RR per 1024 words) × latency: a driver cannot read more than a FIFO
//! (1024 words) per status read, and every read stalls the CPU for the latency. The pcie-40m
//! row (DMA, no data reads) shows the register-read cost of the chip-card path under the same
//! model, without a floor.

use quantis_driver::card::{self, CardOptions};
use quantis_driver::hw::{self, Device, DeviceInfo, DmaBuffer};
use quantis_driver::regs::{pio, FifoStatus, ModuleBits, ModuleStatus};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LATENCY: Duration = Duration::from_nanos(800);

#[derive(Default)]
struct Counts {
    data: AtomicU64,
    status: AtomicU64,
    /// MX_SR reads (module cards): the driver reads it once per `read()` call and per wake-up.
    modules: AtomicU64,
}

/// Counts register reads: FD_RR words and every other read.
struct Counting {
    inner: Box<dyn Device>,
    counts: Arc<Counts>,
    module: bool,
}

impl Counting {
    fn count(&self, offset: u64, n: usize, bar: u8) {
        let data = self.module && bar == pio::BAR && offset == pio::FD_RR;
        let c = if data { &self.counts.data } else { &self.counts.status };
        c.fetch_add(n as u64, Relaxed);
        if self.module && bar == pio::BAR && offset == pio::MX_SR {
            self.counts.modules.fetch_add(n as u64, Relaxed);
        }
    }
}

impl Device for Counting {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }
    fn read32(&mut self, bar: u8, offset: u64) -> hw::Result<u32> {
        self.count(offset, 1, bar);
        self.inner.read32(bar, offset)
    }
    fn read32_repeat(&mut self, bar: u8, offset: u64, out: &mut [u32]) -> hw::Result<()> {
        self.count(offset, out.len(), bar);
        self.inner.read32_repeat(bar, offset, out)
    }
    fn write32(&mut self, bar: u8, offset: u64, value: u32) -> hw::Result<()> {
        self.inner.write32(bar, offset, value)
    }
    fn dma_alloc(&mut self, len: usize) -> hw::Result<DmaBuffer> {
        self.inner.dma_alloc(len)
    }
    fn dma_free(&mut self, buf: DmaBuffer) -> hw::Result<()> {
        self.inner.dma_free(buf)
    }
    fn reset(&mut self) -> hw::Result<()> {
        self.inner.reset()
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `ts`, which outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn open(spec: &str) -> (Box<dyn Device>, Arc<Counts>) {
    let dev = hw::open(&format!("sim:{spec}").parse().expect("uri")).expect("sim opens");
    let counts = Arc::new(Counts::default());
    let module = card::family_of(dev.info().id).is_some_and(|(f, _)| f == card::Family::Module);
    (Box::new(Counting { inner: dev, counts: counts.clone(), module }), counts)
}

/// What one run measured.
#[derive(Default)]
struct Run {
    wall: Duration,
    cpu: Duration,
    data_reads: u64,
    status_reads: u64,
    /// Driver only: sleeps between runs (MX_SR reads less one per `read()` call).
    wakeups: u64,
    bytes: u64,
    overflows: u64,
    /// IDQ model only: read() calls that failed (poll timeout or module error) and lost their bytes.
    failed_calls: u64,
}

impl Run {
    fn floor(&self) -> Duration {
        LATENCY * u32::try_from(self.data_reads + self.data_reads.div_ceil(1024)).expect("fits")
    }
    fn report(&self, what: &str) {
        let w = self.wall.as_secs_f64();
        let pct = |d: Duration| 100.0 * d.as_secs_f64() / w;
        let ratio = if self.data_reads > 0 {
            format!("{:.3}", self.cpu.as_secs_f64() / self.floor().as_secs_f64())
        } else {
            "-".into()
        };
        println!(
            "{what:<30} {:>6.1} kB/s  cpu {:>5.1} %  floor {:>5.1} %  ratio {ratio:>5}  data {:>6.0}/s  status {:>7.0}/s  wake-ups {:>4.0}/s  overflows {}{}",
            self.bytes as f64 / w / 1e3,
            pct(self.cpu),
            pct(self.floor()),
            self.data_reads as f64 / w,
            self.status_reads as f64 / w,
            self.wakeups as f64 / w,
            self.overflows,
            if self.failed_calls > 0 { format!("  failed reads {}", self.failed_calls) } else { String::new() },
        );
    }
}

/// The driver: `Card::read` in 256 KiB calls (the daemon's batch), on its own thread.
fn driver(spec: &str, secs: Duration) -> Run {
    let spec = spec.to_owned();
    std::thread::spawn(move || {
        let (dev, counts) = open(&spec);
        let mut card = card::open(dev, &CardOptions::default()).expect("card opens");
        card.start().expect("card starts");
        let mut buf = vec![0u8; 256 << 10];
        let (c0, r0) = (thread_cpu(), card.counters());
        let (d0, s0) = (counts.data.load(Relaxed), counts.status.load(Relaxed));
        let m0 = counts.modules.load(Relaxed);
        let t0 = Instant::now();
        let mut calls = 0;
        while t0.elapsed() < secs {
            card.read(&mut buf).expect("read");
            calls += 1;
        }
        let (cpu, wall) = (thread_cpu() - c0, t0.elapsed());
        let r = card.counters();
        Run {
            wall,
            cpu,
            data_reads: counts.data.load(Relaxed) - d0,
            status_reads: counts.status.load(Relaxed) - s0,
            wakeups: (counts.modules.load(Relaxed) - m0).saturating_sub(calls),
            bytes: r.bytes_read - r0.bytes_read,
            overflows: r.overflows - r0.overflows,
            failed_calls: 0,
        }
    })
    .join()
    .expect("bench thread")
}

/// A model of IDQ's module-card read (quantis-hardware.md, leifj/quantispci
/// `common/quantis_pci_common.h`, `quantis_rng_read`), in 64 KiB calls as its Linux read()
/// makes them: check the modules once, then until the call is filled: poll FS_RR up to 10,000
/// times for a level, read that many words (clamped to what is wanted) with an FS_RR read after
/// every word; on the error bit flush and drop the word just read. A poll timeout or module
/// error fails the call and loses its bytes (Linux `quantis_read` returns EIO).
fn idq(spec: &str, secs: Duration) -> Run {
    let spec = spec.to_owned();
    std::thread::spawn(move || {
        let (mut dev, counts) = open(&spec);
        let d = dev.as_mut();
        let rd = |d: &mut dyn Device, off| d.read32(pio::BAR, off).expect("read");
        let wr = |d: &mut dyn Device, off, v| d.write32(pio::BAR, off, v).expect("write");
        wr(d, pio::CC_ER, 1);
        wr(d, pio::CC_DR, 1);
        let present = ModuleStatus(rd(d, pio::MX_SR)).present();
        wr(d, pio::MX_ER, ModuleStatus::write_value(present, ModuleBits::SEN));
        wr(d, pio::FS_CA, 0);
        let mut run = Run::default();
        let (c0, d0, s0) = (thread_cpu(), counts.data.load(Relaxed), counts.status.load(Relaxed));
        let t0 = Instant::now();
        const CALL: usize = 64 << 10;
        'calls: while t0.elapsed() < secs {
            let st = ModuleStatus(rd(d, pio::MX_SR));
            if st.test_mode() == 0 && st.working() == 0 {
                run.failed_calls += 1;
                continue;
            }
            let mut got = 0;
            while got < CALL {
                let mut avail = 0;
                for _ in 0..10_000 {
                    avail = FifoStatus(rd(d, pio::FS_RR)).available_bytes();
                    if avail > 0 {
                        break;
                    }
                }
                if avail == 0 {
                    run.failed_calls += 1;
                    continue 'calls;
                }
                for _ in 0..avail.min(CALL - got).div_ceil(4) {
                    std::hint::black_box(rd(d, pio::FD_RR));
                    if FifoStatus(rd(d, pio::FS_RR)).overflow() {
                        wr(d, pio::FS_CA, 0);
                        run.overflows += 1;
                        break;
                    }
                    got += 4;
                }
            }
            run.bytes += got as u64;
        }
        run.cpu = thread_cpu() - c0;
        run.wall = t0.elapsed();
        run.data_reads = counts.data.load(Relaxed) - d0;
        run.status_reads = counts.status.load(Relaxed) - s0;
        run
    })
    .join()
    .expect("bench thread")
}

fn main() {
    // Rows whose label contains every non-flag argument (`-- driver` runs the driver's only).
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |label: &str| filter.iter().all(|f| label.contains(f.as_str()));
    let secs = Duration::from_secs_f64(
        std::env::var("PIO_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0),
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "PIO cost at the real rate, pio-latency={}ns, {:.0} s per run (load average {})",
        LATENCY.as_nanos(),
        secs.as_secs_f64(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    for model in ["pcie-4m", "pcie-16m", "pcie-40m"] {
        let spec = format!("{model}?pio-latency={}ns", LATENCY.as_nanos());
        let label = format!("driver {model}");
        if wanted(&label) {
            driver(&spec, secs).report(&label);
        }
        let label = format!("IDQ busy-poll model {model}");
        if model != "pcie-40m" && wanted(&label) {
            idq(&spec, secs).report(&label);
        }
    }
}
