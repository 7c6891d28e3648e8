//! CPU cost of reading a card at its real rate: reads `sim:pcie-16m` (or the uri given) for a
//! few seconds and prints CPU time (getrusage, user + system) as a share of wall time.
//!
//! `cargo run --release -p quantis-driver --example card_cpu -- [sim:pcie-16m] [seconds]`

use quantis_driver::card::{self, CardOptions};
use quantis_driver::hw;
use std::time::{Duration, Instant};

fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the pointer, which points at enough memory.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage failed");
    // SAFETY: zero-initialised and filled by the successful call above.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let uri = args.next().unwrap_or_else(|| "sim:pcie-16m".into());
    let secs: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5.0);
    let mut card = card::open(hw::open(&uri.parse()?)?, &CardOptions::default())?;
    card.start()?;
    let mut buf = vec![0u8; 64 << 10];
    let (t0, c0) = (Instant::now(), cpu_time());
    let mut bytes = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        bytes += card.read(&mut buf)? as u64;
    }
    let (wall, cpu) = (t0.elapsed(), cpu_time() - c0);
    card.stop()?;
    let c = card.counters();
    println!(
        "{uri}: {:.3} MB/s over {:.1} s, CPU {:.3} s = {:.2} % of one core; overflows {}, bytes dropped {}",
        bytes as f64 / wall.as_secs_f64() / 1e6,
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        c.overflows,
        c.bytes_dropped
    );
    Ok(())
}
