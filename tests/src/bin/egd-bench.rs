//! `egd-bench SOCKET CLIENTS SECONDS [DEPTH]`: EGD throughput. Each of CLIENTS connections keeps
//! DEPTH (default 16) blocking 255-byte reads in flight, as QEMU's rng-egd pipelines them, for
//! SECONDS; prints the bytes per second over all clients. docs/benchmarks.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use qrng_e2e::egd::EgdClient;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: egd-bench SOCKET CLIENTS SECONDS [DEPTH]";
    let sock = PathBuf::from(args.get(1).expect(usage));
    let clients: usize = args.get(2).and_then(|a| a.parse().ok()).expect(usage);
    let secs: f64 = args.get(3).and_then(|a| a.parse().ok()).expect(usage);
    let depth: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(16);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = EgdClient::connect(&sock).expect("connect");
                let mut n = 0u64;
                while Instant::now() < end {
                    n += c.read_blocking_pipelined(255, depth).expect("read").len() as u64;
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().expect("client")).sum();
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "egd-bench: clients={clients} depth={depth} bytes={total} seconds={elapsed:.2} MB/s={:.2}",
        total as f64 / elapsed / 1e6
    );
}
