//! Cross-process ring throughput in 64 KiB chunks, next to a single-thread memcpy baseline
//! measured in the same run. Run with `cargo bench -p qrng-ring --bench ring`.
//!
//! The memcpy baseline copies 64 KiB chunks into a 16 MiB buffer cyclically, which is what the
//! producer does minus the synchronisation; the ring figure is end to end: this process writes,
//! a child process (this binary re-executed) reads, until the child has consumed everything.
//!
//! `ring/read-32B` is the cost of one 32-byte copy out of a full ring in one process (the HTTP
//! 32-byte hex case): the per-read checks (the producer's health word, loaded once with acquire
//! before bytes leave, and the truncation flag after the copy) weigh most there.

use qrng_ring::{Consumer, Producer, RingOptions};
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

const CHUNK: usize = 64 << 10;
const RING: u64 = 16 << 20;
const TOTAL: u64 = 8 << 30;
const CHILD_ENV: &str = "QRNG_RING_BENCH_CHILD";

fn main() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        consume(Path::new(&path));
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| "ring".contains(f.as_str())) {
        return;
    }
    let memcpy = memcpy_baseline();
    let small = small_reads();
    let ring = cross_process();
    println!("ring/read-32B          one 32-byte read: {:>7.1} ns", small);
    println!("ring/memcpy-baseline   64 KiB chunks: {:>7.2} GB/s (single thread)", memcpy);
    println!("ring/cross-process     64 KiB chunks: {:>7.2} GB/s", ring);
    println!("ring/ratio             ring / memcpy:  {:>7.2}  (target >= 0.33)", ring / memcpy);
}

fn gbps(bytes: u64, t: Instant) -> f64 {
    bytes as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn memcpy_baseline() -> f64 {
    let src = vec![0x5au8; CHUNK];
    let mut dst = vec![0u8; RING as usize];
    let slots = dst.len() / CHUNK;
    // Warm up, then measure.
    for i in 0..slots {
        dst[i * CHUNK..][..CHUNK].copy_from_slice(&src);
    }
    let t = Instant::now();
    let mut i = 0;
    let mut done = 0u64;
    while done < TOTAL {
        dst[(i % slots) * CHUNK..][..CHUNK].copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        i += 1;
        done += CHUNK as u64;
    }
    gbps(done, t)
}

/// Nanoseconds per 32-byte `Consumer::read`, refilling the ring whenever it runs dry.
fn small_reads() -> f64 {
    const READS: u64 = 20_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("small.ring");
    let cap = 1u64 << 20;
    let mut p = Producer::open(&path, &RingOptions { capacity: cap, ..RingOptions::default() })
        .expect("producer");
    let mut c = Consumer::open(&path).expect("consumer");
    let fill = vec![0x5au8; cap as usize];
    let mut buf = [0u8; 32];
    let mut spent = std::time::Duration::ZERO;
    let mut done = 0;
    while done < READS {
        p.write(&fill).expect("fill");
        let t = Instant::now();
        loop {
            let n = c.read(std::hint::black_box(&mut buf)).expect("read");
            if n == 0 {
                break;
            }
            done += 1;
        }
        spent += t.elapsed();
    }
    spent.as_nanos() as f64 / done as f64
}

fn cross_process() -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.ring");
    let mut p = Producer::open(&path, &RingOptions { capacity: RING, ..RingOptions::default() })
        .expect("producer");
    let chunk = vec![0xa5u8; CHUNK];
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn consumer");
    // Wait until the consumer says it is attached, so its start-up is not timed. (Not by probing
    // with `Consumer::open` here: a probe holding the consumer lock at the child's attach would
    // make the child fail with AlreadyAttached.)
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("child stdout"))
        .read_line(&mut line)
        .expect("read child");
    assert_eq!(line.trim(), "attached", "consumer did not attach");
    let t = Instant::now();
    let mut sent = 0u64;
    let mut off = 0;
    while sent < TOTAL {
        let n = p.write(&chunk[off..]).expect("write");
        if n == 0 {
            std::hint::spin_loop();
            continue;
        }
        off = (off + n) % CHUNK;
        sent += n as u64;
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "consumer failed");
    gbps(sent, t)
}

fn consume(path: &Path) {
    let mut c = Consumer::open(path).expect("consumer");
    println!("attached");
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < TOTAL {
        let n = c.read(&mut buf).expect("read");
        if n == 0 {
            std::hint::spin_loop();
        }
        std::hint::black_box(&buf);
        got += n as u64;
    }
}
