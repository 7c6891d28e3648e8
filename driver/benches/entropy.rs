//! Throughput of the entropy pipeline on one core, each next to a memcpy baseline of the same
//! buffer from the same run: SP 800-90B health tests (byte and bit samples), von Neumann, IDQ
//! matrix extraction (1024→768, 2048→1792) and Toeplitz extraction. Extractor throughput is
//! counted in output bytes (the card-rate targets are stated that way).
//!
//! Times are the benchmark thread's CPU time (CLOCK_THREAD_CPUTIME_ID), not wall time: the build
//! machines are shared and heavily loaded, and wall time would mostly measure the scheduler.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use quantis_driver::entropy::extract::{
    Blocked, MatrixExtractor, Shape, ToeplitzExtractor, VonNeumann,
};
use quantis_driver::entropy::health::{HealthTester, Params, SampleWidth};
use rand::{RngCore, SeedableRng};
use std::hint::black_box;
use std::time::Duration;

const LEN: usize = 1 << 20;

/// CPU time consumed by this thread so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is always supported
    // on Linux, and clock_gettime writes nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` `iters` times and returns the CPU time it took.
fn cpu_timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let t0 = thread_cpu_time();
    for _ in 0..iters {
        f();
    }
    thread_cpu_time() - t0
}

fn random(seed: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn bench(c: &mut Criterion) {
    let input = random(1, LEN);
    let mut g = c.benchmark_group("entropy");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(20);

    g.throughput(Throughput::Bytes(LEN as u64));
    let mut dst = vec![0u8; LEN];
    g.bench_function("memcpy baseline (1 MiB)", |b| {
        b.iter_custom(|iters| {
            cpu_timed(iters, || {
                dst.copy_from_slice(black_box(&input));
                black_box(&dst);
            })
        })
    });
    for (name, width, h) in [
        ("health bytes (H=6.4)", SampleWidth::Byte, 6.4),
        ("health bits (H=0.8)", SampleWidth::Bit, 0.8),
    ] {
        let mut t = HealthTester::new(Params::new(width, h, 30).expect("valid params"));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                cpu_timed(iters, || {
                    if t.process(black_box(&input)).is_err() {
                        t.restart();
                    }
                })
            })
        });
    }
    let mut out = Vec::with_capacity(LEN);
    let mut vn = VonNeumann::new();
    bench_feed(&mut g, "von neumann (input bytes)", &input, &mut out, |i, o| vn.feed(i, o));

    for shape in Shape::OFFERED {
        let blocks = LEN / (shape.n / 8);
        let out_len = blocks * shape.k / 8;
        g.throughput(Throughput::Bytes(out_len as u64));
        let m = MatrixExtractor::from_idq_bytes(shape, &random(2, shape.matrix_bytes()))
            .expect("valid matrix");
        let mut bm = Blocked::new(m);
        let name = format!("matrix {}x{} (output bytes)", shape.n, shape.k);
        bench_feed(&mut g, &name, &input, &mut out, |i, o| bm.feed(i, o));
        let t = ToeplitzExtractor::from_seed(shape, &random(3, shape.seed_bytes()))
            .expect("valid seed");
        let mut bt = Blocked::new(t);
        let name = format!("toeplitz {}x{} (output bytes)", shape.n, shape.k);
        bench_feed(&mut g, &name, &input, &mut out, |i, o| bt.feed(i, o));
        g.bench_function(format!("memcpy baseline ({out_len} B)"), |b| {
            b.iter_custom(|iters| {
                cpu_timed(iters, || {
                    dst[..out_len].copy_from_slice(black_box(&input[..out_len]));
                    black_box(&dst);
                })
            })
        });
    }
    g.finish();
}

/// Benchmarks one conditioning stage fed the whole input buffer per iteration.
fn bench_feed(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    input: &[u8],
    out: &mut Vec<u8>,
    mut feed: impl FnMut(&[u8], &mut Vec<u8>),
) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            cpu_timed(iters, || {
                out.clear();
                feed(black_box(input), out);
                black_box(&out);
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
