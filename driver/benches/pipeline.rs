//! The whole driver, as a process: bytes per second published into the ring from
//! `sim:pcie-240m?rate=0` (health tests on, extraction off), next to a memcpy baseline from the
//! same run; and the driver's CPU use at the simulated cards' real rates.
//!
//! `cargo bench -p quantis-driver --bench pipeline` (set `QRNG_BENCH_SECS` to change the 5 s
//! measuring window). This bench process is the ring's consumer and drains it as fast as it can.

use quantis_driver::ring::{Consumer, Health};
use std::path::Path;
use std::process::{Child, Command, Stdio};
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
    for model in ["pcie-240m", "pcie-16m"] {
        let (gbps, cpu) = run(&format!("sim:{model}?rate=0"), window);
        println!(
            "pipeline/{model}?rate=0 published into the ring: {gbps:>6.2} GB/s  ({:.2} x memcpy; driver CPU {cpu:.0} % of a core)",
            gbps / memcpy
        );
    }
    for model in ["pcie-4m", "pcie-16m", "pcie-40m", "pcie-240m"] {
        let (gbps, cpu) = run(&format!("sim:{model}"), window);
        println!(
            "pipeline/{model} at its real rate: {:>8.3} MB/s published, driver CPU {cpu:>5.2} % of a core",
            gbps * 1000.0
        );
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

/// CPU seconds (user + system) the process has used so far.
fn cpu_secs(child: &Child) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Starts the driver on `device`, waits for OK, drains the ring for `window`; returns the
/// published rate in GB/s and the driver's CPU use in % of one core over the window.
fn run(device: &str, window: Duration) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ring = dir.path().join("bench.ring");
    let mut child = Command::new(BIN)
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
    let (t, cpu0, pub0) = (Instant::now(), cpu_secs(&child), c.status().unwrap().bytes_published);
    while t.elapsed() < window {
        if c.read(&mut buf).expect("read") == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let published = c.status().unwrap().bytes_published - pub0;
    let cpu = (cpu_secs(&child) - cpu0) / elapsed * 100.0;
    let _ = child.kill();
    let _ = child.wait();
    (published as f64 / elapsed / 1e9, cpu)
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
