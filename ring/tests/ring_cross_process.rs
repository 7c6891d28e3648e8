//! Cross-process ring tests: the test binary re-executes itself as the consumer process.
//!
//! - `ring_cross_process_moves_1gib`: 1 GiB of a position-encoding pattern from this process to a
//!   child consumer, checked byte for byte (nothing lost, duplicated or reordered).
//! - `ring_consumer_killed_midstream_resumes_without_duplicates`: a consumer is SIGKILLed while
//!   reading; a new one resumes exactly at the recorded head.
//!
//! `harness = false` (see driver/Cargo.toml) so that `main` can dispatch to the child roles.

use qrng_ring::{pattern, Consumer, Producer, RingOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

const CHILD_ENV: &str = "QRNG_RING_TEST_CHILD";
const GIB: u64 = 1 << 30;

fn main() {
    if let Ok(role) = std::env::var(CHILD_ENV) {
        let path = PathBuf::from(std::env::var("QRNG_RING_PATH").expect("path"));
        let total: u64 = std::env::var("QRNG_RING_TOTAL").expect("total").parse().expect("total");
        assert_eq!(role, "consumer");
        std::process::exit(match consume(&path, total) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("consumer: {e}");
                1
            }
        });
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    type Test = fn() -> Result<(), String>;
    let tests: [(&str, Test); 2] = [
        ("ring_cross_process_moves_1gib", moves_1gib),
        ("ring_consumer_killed_midstream_resumes_without_duplicates", killed_consumer_resumes),
    ];
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let mut failed = 0;
    let mut ran = 0;
    for (name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        let t = Instant::now();
        match test() {
            Ok(()) => println!("test {name} ... ok ({:.1?})", t.elapsed()),
            Err(e) => {
                println!("test {name} ... FAILED: {e}");
                failed += 1;
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        ran - failed
    );
    if failed > 0 {
        std::process::exit(101);
    }
}

/// Child role: reads `total` bytes (u64::MAX: until killed) in varying sizes, checks the pattern
/// from the position it resumed at, and prints `start S` then `pos P` lines as it goes.
fn consume(path: &Path, total: u64) -> Result<(), String> {
    let mut c = Consumer::open(path).map_err(|e| e.to_string())?;
    let start = c.position();
    println!("start {start}");
    let sizes = [1usize, 4093, 65536, 100_000, 7, 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let (mut got, mut k, mut next_report) = (0u64, 0usize, 1u64 << 20);
    while got < total {
        let want = sizes[k % sizes.len()].min((total - got).min(buf.len() as u64) as usize);
        k += 1;
        let n = c.read(&mut buf[..want]).map_err(|e| e.to_string())?;
        if n == 0 {
            std::thread::yield_now();
            continue;
        }
        pattern::check(start + got, &buf[..n])
            .map_err(|p| format!("pattern mismatch at stream position {p}"))?;
        got += n as u64;
        if got >= next_report {
            println!("pos {}", start + got);
            next_report += 1 << 20;
        }
    }
    println!("end {}", start + got);
    Ok(())
}

fn spawn_consumer(path: &Path, total: u64) -> Result<Child, String> {
    Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(CHILD_ENV, "consumer")
        .env("QRNG_RING_PATH", path)
        .env("QRNG_RING_TOTAL", total.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn consumer: {e}"))
}

/// Writes the pattern into the ring until `stop` is set or `total` bytes are published.
fn produce(p: &mut Producer, total: u64, stop: &AtomicBool) -> Result<u64, String> {
    let mut chunk = vec![0u8; 64 << 10];
    let mut pos = 0u64;
    let mut pending = 0..0;
    while pos < total && !stop.load(Ordering::Relaxed) {
        if pending.is_empty() {
            let n = chunk.len().min((total - pos) as usize);
            pattern::fill(pos, &mut chunk[..n]);
            pending = 0..n;
        }
        let n = p.write(&chunk[pending.clone()]).map_err(|e| e.to_string())?;
        if n == 0 {
            std::thread::yield_now();
        }
        pending.start += n;
        pos += n as u64;
    }
    Ok(pos)
}

fn moves_1gib() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("xproc.ring");
    let mut p = Producer::open(&path, &RingOptions::default()).map_err(|e| e.to_string())?;
    let mut child = spawn_consumer(&path, GIB)?;
    let stop = AtomicBool::new(false);
    let sent = produce(&mut p, GIB, &stop)?;
    let status = child.wait().map_err(|e| e.to_string())?;
    let out =
        std::io::read_to_string(child.stdout.take().expect("piped")).map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("consumer failed ({status}); output tail: {}", tail(&out)));
    }
    if sent != GIB || !out.contains(&format!("end {GIB}")) || !out.starts_with("start 0\n") {
        return Err(format!("sent {sent}, consumer said: {}", tail(&out)));
    }
    let s = p.status().map_err(|e| e.to_string())?;
    if (s.head, s.tail) != (GIB, GIB) {
        return Err(format!("indices after the run: head {} tail {}", s.head, s.tail));
    }
    Ok(())
}

fn killed_consumer_resumes() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("kill.ring");
    let mut p = Producer::open(&path, &RingOptions { capacity: 1 << 20, ..RingOptions::default() })
        .map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || produce(&mut p, u64::MAX, &stop))
    };
    let result = (|| {
        let mut a = spawn_consumer(&path, u64::MAX)?;
        let mut last = 0u64;
        for line in BufReader::new(a.stdout.take().expect("piped")).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if let Some(pos) = line.strip_prefix("pos ") {
                last = pos.parse().map_err(|_| format!("bad line {line:?}"))?;
                if last >= 8 << 20 {
                    break;
                }
            }
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(a.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| e.to_string())?;
        a.wait().map_err(|e| e.to_string())?;
        if last < 8 << 20 {
            return Err(format!("first consumer stopped early at {last}"));
        }
        // The lock died with the process: a new consumer can attach and must resume at the head
        // the killed one recorded, which is at or after what it reported.
        let head = Consumer::open(&path).map_err(|e| e.to_string())?.position();
        if head < last {
            return Err(format!(
                "recorded head {head} is behind the killed consumer's progress {last}"
            ));
        }
        let mut b = spawn_consumer(&path, 4 << 20)?;
        let status = b.wait().map_err(|e| e.to_string())?;
        let out =
            std::io::read_to_string(b.stdout.take().expect("piped")).map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("second consumer failed: {}", tail(&out)));
        }
        let want = format!("start {head}\n");
        if !out.starts_with(&want) || !out.contains(&format!("end {}", head + (4 << 20))) {
            return Err(format!("second consumer did not resume at {head}: {}", tail(&out)));
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    feeder.join().map_err(|_| "feeder panicked".to_string())??;
    result
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}
