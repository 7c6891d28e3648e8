//! The whole driver, as a process: bytes per second published into the ring from
//! `sim:pcie-240m?rate=0` (health tests on, extraction off), next to a memcpy baseline from the
//! same run; and the driver's CPU use at the simulated cards' real rates.
//!
//! `cargo bench -p quantis-driver --bench pipeline` (set `QRNG_BENCH_SECS` to change the 5 s
//! measuring window). This bench process is the ring's consumer and drains it as fast as it can.
//! Set `QRNG_BENCH_BASELINE=<path of another quantis-driver binary>` to run every case on that
//! binary too, alternating with this one, and print the ratio: on a shared machine only figures
//! from the same run compare. "per CPU-second" (bytes published per second of driver CPU) is
//! the figure that depends least on how busy the machine is. `QRNG_BENCH_ONLY=<text>` runs only
//! the devices whose uri ends with the text (`rate=0`, `pcie-16m`, `240m?rate=0`).

use qrng_ring::{Consumer, Health};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_quantis-driver");

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| "pipeline".contains(f.as_str())) {
        return;
    }
    let secs: u64 = std::env::var("QRNG_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let window = Duration::from_secs(secs);
    let memcpy = memcpy_gbps();
    println!("pipeline/memcpy-baseline (1 MiB chunks, one core):  {memcpy:>6.2} GB/s");
    let baseline = std::env::var_os("QRNG_BENCH_BASELINE");
    let mut bins = vec![("", std::ffi::OsString::from(BIN))];
    if let Some(b) = baseline {
        bins.insert(0, ("baseline ", b));
    }
    for model in ["pcie-240m", "pcie-16m"] {
        let mut first = None;
        for (label, bin) in &bins {
            let Some(m) = run(bin.as_ref(), &format!("sim:{model}?rate=0"), window) else {
                continue;
            };
            println!(
                "pipeline/{label}{model}?rate=0 published into the ring: {:>6.2} GB/s  ({:.2} x memcpy){}\n    driver CPU {:.0} % of a core (busiest thread {:.0} %), runnable but waiting for a CPU {:.0} %; {:.2} GB per CPU-second; with a core for its busiest thread: {:.2} GB/s",
                m.gbps,
                m.gbps / memcpy,
                ratio(&mut first, m.gbps),
                m.cpu,
                m.busiest,
                m.waiting,
                m.gbps / (m.cpu / 100.0).max(1e-9),
                m.gbps / (m.busiest / 100.0).max(1e-9),
            );
        }
    }
    for model in ["pcie-4m", "pcie-16m", "pcie-40m", "pcie-240m"] {
        let mut first = None;
        for (label, bin) in &bins {
            let Some(m) = run(bin.as_ref(), &format!("sim:{model}"), window) else {
                continue;
            };
            println!(
                "pipeline/{label}{model} at its real rate: {:>8.3} MB/s published, driver CPU {:>5.2} % of a core{}, dropped {:.1} % of raw",
                m.gbps * 1000.0,
                m.cpu,
                ratio(&mut first, m.cpu),
                m.dropped,
            );
        }
    }
}

/// " (x.xx x baseline)" for the second binary of a pair.
fn ratio(first: &mut Option<f64>, v: f64) -> String {
    match first.replace(v) {
        Some(b) if b > 0.0 => format!("  ({:.2} x baseline)", v / b),
        _ => String::new(),
    }
}

fn memcpy_gbps() -> f64 {
    let src = vec![0x5au8; 1 << 20];
    let mut dst = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < Duration::from_secs(1) {
        for _ in 0..64 {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        n += 64 << 20;
    }
    n as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// Per thread of `pid`: (ns run on a CPU, ns runnable but waiting for one), from
/// /proc/<pid>/task/*/schedstat (clock ticks from /proc/<pid>/stat are 10 ms: too coarse for a
/// driver using 1 % of a core over a few seconds).
fn sched(pid: u32) -> HashMap<String, (u64, u64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
    tasks
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| {
            let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            Some((t.file_name().to_string_lossy().into_owned(), (f.next()??, f.next()??)))
        })
        .collect()
}

/// One run of the driver, over the measuring window.
struct Measure {
    /// Bytes published into the ring, GB/s.
    gbps: f64,
    /// Driver CPU, % of one core, all threads.
    cpu: f64,
    /// CPU of its busiest thread, % of one core.
    busiest: f64,
    /// Time its threads were runnable but waiting for a CPU (others had them), % of one core.
    waiting: f64,
    /// Bytes the card produced that were lost (FIFO overflow, ring full), % of raw bytes read.
    dropped: f64,
}

/// Starts the driver on `device`, waits for OK, drains the ring for `window`.
fn run(bin: &Path, device: &str, window: Duration) -> Option<Measure> {
    if std::env::var("QRNG_BENCH_ONLY").is_ok_and(|only| !device.ends_with(&only)) {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ring = dir.path().join("bench.ring");
    let mut child = Command::new(bin)
        .args(["--device", device, "--ring"])
        .arg(&ring)
        .args(["--ring-size", "64M"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("start quantis-driver");
    let mut c = attach(&ring);
    let start = Instant::now();
    while c.status().expect("status").health != Health::Ok {
        assert!(start.elapsed() < Duration::from_secs(30), "driver never became healthy");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut buf = vec![0u8; 1 << 20];
    let (t, s0, st0) = (Instant::now(), sched(child.id()), c.status().unwrap());
    while t.elapsed() < window {
        if c.read(&mut buf).expect("read") == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let (s1, st1) = (sched(child.id()), c.status().unwrap());
    let _ = child.kill();
    let _ = child.wait();
    let pct = |ns: u64| ns as f64 / 1e9 / elapsed * 100.0;
    let delta = |tid: &String, &(run, wait): &(u64, u64)| {
        let (r0, w0) = s0.get(tid).copied().unwrap_or((0, 0));
        (run.saturating_sub(r0), wait.saturating_sub(w0))
    };
    let per_thread: Vec<(u64, u64)> = s1.iter().map(|(tid, v)| delta(tid, v)).collect();
    let raw = (st1.raw_bytes_read - st0.raw_bytes_read) as f64;
    let dropped = (st1.bytes_dropped - st0.bytes_dropped) as f64;
    Some(Measure {
        gbps: (st1.bytes_published - st0.bytes_published) as f64 / elapsed / 1e9,
        cpu: pct(per_thread.iter().map(|t| t.0).sum()),
        busiest: pct(per_thread.iter().map(|t| t.0).max().unwrap_or(0)),
        waiting: pct(per_thread.iter().map(|t| t.1).sum()),
        dropped: 100.0 * dropped / (raw + dropped).max(1.0),
    })
}

fn attach(ring: &Path) -> Consumer {
    let start = Instant::now();
    loop {
        if let Ok(c) = Consumer::open(ring) {
            return c;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "ring never appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
}
