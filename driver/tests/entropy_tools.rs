//! Runs Debian's rngtest, ent and dieharder (through `scripts/entropy-tools.sh`, which holds the
//! pass criteria) on simulator-like output: a seeded noise source with bias 0.05 (P(1) = 0.55
//! per bit) through the real health-test gate and the Toeplitz extractor. A negative control
//! checks that the same tools reject the raw, unconditioned stream. Skips with a message when the
//! tools are not installed (apt: rng-tools5 ent dieharder).
//!
//! Until the simulator and CLI exist the stream comes from a seeded PRNG here; the script can be
//! pointed at real `quantis-driver` output as well.

use quantis_driver::entropy::{EntropyConfig, ExtractorSpec, Gate, Shape};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::Command;

const OUT_BYTES: usize = 8_000_000;

/// Bytes whose 8 bits are independently 1 with probability `p1`, one 16-bit draw per byte
/// through the inverse CDF of the byte distribution (probabilities quantised to 2^-16).
fn biased_source(seed: u64, p1: f64) -> impl FnMut(&mut [u8]) {
    let mut cdf = [0u32; 256];
    let mut acc = 0.0;
    for (v, c) in cdf.iter_mut().enumerate() {
        let ones = (v as u32).count_ones() as i32;
        acc += p1.powi(ones) * (1.0 - p1).powi(8 - ones);
        *c = (acc * 65536.0).round() as u32;
    }
    let mut table = vec![0u8; 65536];
    let mut v = 0usize;
    for (i, t) in table.iter_mut().enumerate() {
        while v < 255 && i as u32 >= cdf[v] {
            v += 1;
        }
        *t = v as u8;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    move |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            *b = table[(rng.next_u32() & 0xFFFF) as usize];
        }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/entropy-tools.sh")
}

fn run_script(file: &Path) -> (i32, String) {
    let out = Command::new("bash").arg(script()).arg(file).output().expect("run entropy-tools.sh");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn external_tools_pass_conditioned_output_and_reject_raw() {
    let dir = tempfile::tempdir().unwrap();
    let seed_path = dir.path().join("toeplitz-seed.bin");
    let mut seed = vec![0u8; Shape::S1024_768.seed_bytes()];
    ChaCha8Rng::seed_from_u64(1).fill_bytes(&mut seed);
    std::fs::write(&seed_path, &seed).unwrap();

    let cfg = EntropyConfig {
        extractor: ExtractorSpec::Toeplitz(Some(seed_path)),
        ..EntropyConfig::default()
    };
    let mut gate = Gate::new(&cfg).unwrap();
    let mut source = biased_source(2, 0.55);
    let mut raw = vec![0u8; 65536];
    let mut raw_copy = Vec::with_capacity(OUT_BYTES);
    let mut out = Vec::with_capacity(OUT_BYTES + 65536);
    while out.len() < OUT_BYTES {
        source(&mut raw);
        if raw_copy.len() < OUT_BYTES {
            raw_copy.extend_from_slice(&raw);
        }
        gate.process(&raw, &mut out).expect("healthy biased source raised a health alarm");
    }
    raw_copy.truncate(OUT_BYTES);
    let good = dir.path().join("conditioned.bin");
    let bad = dir.path().join("raw.bin");
    std::fs::write(&good, &out).unwrap();
    std::fs::write(&bad, &raw_copy).unwrap();

    let (code, text) = run_script(&good);
    if code == 77 {
        println!("SKIPPED: {}", text.trim());
        return;
    }
    println!("{text}");
    assert_eq!(code, 0, "conditioned output failed the external tools:\n{text}");
    let (code, text) = run_script(&bad);
    assert_eq!(code, 1, "the raw biased stream must fail:\n{text}");
    assert!(text.contains("rngtest: FAIL") && text.contains("ent: FAIL"), "{text}");
}
