//! Throughput of `Card::read` on the simulator at rate=0 (as fast as the sim can produce),
//! next to a plain memcpy of the same size in the same run as the baseline.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quantis_driver::card::{self, CardOptions};
use quantis_driver::hw;
use std::hint::black_box;

fn open(spec: &str) -> Box<dyn card::Card> {
    let dev = hw::open(&format!("sim:{spec}").parse().expect("uri")).expect("sim opens");
    let mut c = card::open(dev, &CardOptions::default()).expect("card opens");
    c.start().expect("card starts");
    c
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("card");
    for (name, spec, chunk) in [
        ("pcie-240m rate=0", "pcie-240m?rate=0&seed=1", 1 << 20),
        ("pcie-16m rate=0", "pcie-16m?rate=0&seed=1", 64 << 10),
    ] {
        g.throughput(Throughput::Bytes(chunk as u64));
        let src = vec![0x5Au8; chunk];
        let mut dst = vec![0u8; chunk];
        g.bench_function(format!("memcpy {} KiB (baseline)", chunk >> 10), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            })
        });
        let mut card = open(spec);
        g.bench_function(format!("read {name}"), |b| {
            b.iter(|| {
                let mut got = 0;
                while got < chunk {
                    got += card.read(&mut dst[got..]).expect("read");
                }
                black_box(&mut dst);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
