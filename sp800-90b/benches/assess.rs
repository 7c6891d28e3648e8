//! The SP 800-90B non-IID assessment of 1,000,000 samples on one thread: 8-bit samples (the
//! literal data and its 8,000,000-bit bitstring) and 1-bit samples. `benches/vs_reference.sh`
//! compares with NIST's ea_non_iid on the same machine; docs/benchmarks.md has the figures.

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{RngCore, SeedableRng};
use sp800_90b::{non_iid, Dataset};
use std::hint::black_box;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(90);
    let mut bytes = vec![0u8; 1_000_000];
    rng.fill_bytes(&mut bytes);
    let bits: Vec<u8> = bytes.iter().map(|b| b & 1).collect();
    let mut g = c.benchmark_group("sp800_90b_non_iid");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    let d8 = Dataset::new(&bytes, Some(8)).expect("dataset");
    g.bench_function("1M x 8-bit", |b| b.iter(|| non_iid(black_box(&d8)).expect("assess")));
    let d1 = Dataset::new(&bits, Some(1)).expect("dataset");
    g.bench_function("1M x 1-bit", |b| b.iter(|| non_iid(black_box(&d1)).expect("assess")));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
