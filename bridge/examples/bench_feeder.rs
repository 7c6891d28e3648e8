//! BENCHMARK FEEDER — NOT AN ENTROPY SOURCE.
//!
//! Keeps a ring full of a seeded pseudo-random stream so `bridge/bench/http.sh` can measure the HTTP
//! path of qrng-bridge without a card. The ring is labelled `simulated` (serial "BENCH-FEEDER"), so
//! every response says so. It is an example, never built into or started by the product.
//!
//! `cargo run --release -p qrng-bridge --example bench_feeder -- --ring /dev/shm/b/qrng0.ring
//! [--capacity BYTES] [--seed S] [--replay]` (`--replay`: see [`replay`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use qrng_ring::{Health, HealthParams, Identity, Producer, Reason, RingOptions};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// xorshift64*: fast, seeded, and plainly not a cryptographic or physical source.
fn fill(seed: u64, buf: &mut [u8]) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let ring = PathBuf::from(
        arg(&args, "--ring").ok_or("usage: bench_feeder --ring PATH [--capacity N] [--seed S]")?,
    );
    let capacity: u64 = arg(&args, "--capacity").map_or(Ok(64 << 20), |v| v.parse())?;
    let seed: u64 = arg(&args, "--seed").map_or(Ok(1), |v| v.parse())?;

    // A 16 MiB pre-generated block written round and round: the feeder must outrun the bridge.
    let mut block = vec![0u8; 16 << 20];
    fill(seed, &mut block);

    let mut p = Producer::open(&ring, &RingOptions { capacity, mode: 0o600, group: None })?;
    p.set_identity(&Identity {
        model: "bench-feeder".into(),
        serial: "BENCH-FEEDER".into(),
        modules: 1,
        simulated: true,
        extractor: "none".into(),
        board_version: 0,
        ..Identity::default()
    });
    p.set_health_params(&HealthParams {
        min_entropy_milli: 0,
        rct_cutoff: 0,
        apt_window: 0,
        apt_cutoff: 0,
    });
    p.heartbeat();
    p.set_health(Health::Ok, Reason::None);
    // Refill in bulk below a low-water mark of half the ring, then sleep: a feeder that topped up
    // every few hundred microseconds would cost the benchmark CPU (wake-ups and small copies) that
    // a card's driver publishing at its own pace, and the nginx baseline, do not pay. Half a
    // 64 MiB ring lasts ~20 ms at 1.5 GB/s, so a 1 ms check never lets the bridge run dry.
    let low_water = usize::try_from(capacity / 2).unwrap_or(usize::MAX);
    if args.iter().any(|a| a == "--replay") {
        // Re-publish once a quarter is drained: 12 MiB of a 16 MiB ring last ~4 ms at 3 GB/s,
        // well past the 1 ms check, which wakes the feeder 1000 times a second and no more.
        return replay(&mut p, &ring, &block, low_water / 2);
    }
    let mut pos = 0usize;
    let mut last_beat = Instant::now();
    loop {
        let mut free = p.free()?;
        if free >= low_water {
            while free > 0 {
                let end = (pos + free).min(block.len());
                let n = p.write(&block[pos..end])?;
                pos = (pos + n) % block.len();
                free -= n.min(free);
                if n == 0 {
                    break;
                }
            }
        }
        if last_beat.elapsed() >= Duration::from_millis(100) {
            p.heartbeat();
            last_beat = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `--replay`: fills the ring once, then re-publishes the bytes already in its data area by moving
/// the tail index forward over them (head + capacity), without rewriting a byte. The feeder then
/// costs next to no CPU, so a benchmark measures the bridge alone, like nginx serving one static
/// file over and over; the content repeats every ring capacity, which a throughput benchmark of
/// the HTTP path does not care about (and which no product path could ever do: only this example
/// touches the tail directly).
fn replay(
    p: &mut Producer,
    ring: &std::path::Path,
    block: &[u8],
    low_water: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use qrng_ring::layout::{OFF_HEAD, OFF_TAIL};
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut pos = 0usize;
    loop {
        let n = p.write(&block[pos..])?;
        if n == 0 {
            break;
        }
        pos = (pos + n) % block.len();
    }
    let file = std::fs::OpenOptions::new().read(true).write(true).open(ring)?;
    let map = memmap2::MmapOptions::new().len(4096).map_raw(&file)?;
    let base = map.as_mut_ptr();
    // SAFETY: both offsets are 8-aligned u64 fields inside the 4 KiB header mapped above, which
    // lives as long as `map`; the ring protocol accesses them only atomically.
    let (head, tail) = unsafe {
        (
            AtomicU64::from_ptr(base.add(OFF_HEAD as usize).cast()),
            AtomicU64::from_ptr(base.add(OFF_TAIL as usize).cast()),
        )
    };
    let capacity = p.capacity();
    let mut last_beat = Instant::now();
    loop {
        let h = head.load(Ordering::Acquire);
        let t = tail.load(Ordering::Relaxed);
        if (capacity - (t - h)) as usize >= low_water {
            tail.store(h + capacity, Ordering::Release);
        }
        if last_beat.elapsed() >= Duration::from_millis(100) {
            p.heartbeat();
            last_beat = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
