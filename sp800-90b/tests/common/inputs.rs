//! Deterministic test inputs for comparing with NIST's reference tool. They are made at test time
//! from fixed ChaCha8 seeds (rand_chacha's output is stable across versions), so only the reference
//! figures are committed (tests/fixtures/reference.json); `cargo run --release -p sp800-90b
//! --example write_inputs -- DIR` writes them as files for the reference tool.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One input: a name, the bits per symbol to declare, and the samples (one per byte).
pub struct Input {
    pub name: &'static str,
    pub bits: u32,
    pub samples: Vec<u8>,
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Every input, in a fixed order.
pub fn all() -> Vec<Input> {
    let mut v = Vec::new();

    // Ideal bits.
    let mut r = rng(1);
    v.push(Input {
        name: "bits_uniform",
        bits: 1,
        samples: (0..1_000_000).map(|_| r.random::<u8>() & 1).collect(),
    });

    // Biased, correlated bits: P(1) = 0.55, and each bit repeats the previous one 10 % of the time.
    let mut r = rng(2);
    let mut prev = 0u8;
    let samples = (0..1_000_000)
        .map(|_| {
            prev = if r.random_bool(0.1) { prev } else { u8::from(r.random_bool(0.55)) };
            prev
        })
        .collect();
    v.push(Input { name: "bits_biased_markov", bits: 1, samples });

    // 4-bit symbols from a Markov chain: the next symbol is the previous plus a small step, mod 16.
    let mut r = rng(3);
    let mut s = 0u8;
    let samples = (0..1_000_000)
        .map(|_| {
            s = (s + [0u8, 1, 1, 2, 15, 15, 3, 7][r.random_range(0..8)]) & 15;
            s
        })
        .collect();
    v.push(Input { name: "nibbles_markov", bits: 4, samples });

    // Ideal bytes.
    let mut r = rng(4);
    v.push(Input {
        name: "bytes_uniform",
        bits: 8,
        samples: (0..1_000_000).map(|_| r.random::<u8>()).collect(),
    });

    // Bytes from a rounded normal distribution (mean 128, sd 20): about 140 distinct values, so
    // the symbols get renumbered.
    let mut r = rng(5);
    let samples = (0..300_000)
        .map(|_| {
            let n: f64 = (0..12).map(|_| r.random::<f64>()).sum::<f64>() - 6.0;
            (128.0 + 20.0 * n).round().clamp(0.0, 255.0) as u8
        })
        .collect();
    v.push(Input { name: "bytes_normal", bits: 8, samples });

    // A faulty source: bit 0 stuck at 1, and one byte in eight repeats the byte 5 back.
    let mut r = rng(6);
    let mut out: Vec<u8> = Vec::with_capacity(200_000);
    for i in 0..200_000usize {
        let b = if i >= 5 && r.random_ratio(1, 8) { out[i - 5] } else { r.random::<u8>() | 1 };
        out.push(b);
    }
    v.push(Input { name: "bytes_stuck_bit_repeats", bits: 8, samples: out });

    // Two symbols declared as 8-bit: assessed as binary data, with no bitstring.
    let mut r = rng(7);
    v.push(Input {
        name: "bytes_two_values",
        bits: 8,
        samples: (0..100_000).map(|_| if r.random_bool(0.7) { 0x10 } else { 0x81 }).collect(),
    });

    // Too short for MultiMCW on the literal data (under 4096 samples), and 3-bit symbols.
    let mut r = rng(8);
    v.push(Input {
        name: "short_3bit",
        bits: 3,
        samples: (0..3000).map(|_| r.random_range(0..8u8)).collect(),
    });

    v
}
