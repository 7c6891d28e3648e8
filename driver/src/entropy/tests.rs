//! Tests of the entropy pipeline. Expected values come from the standards' published tables and
//! worked examples, from hand-worked cases, or from straightforward reference implementations
//! written here independently of the optimised code.

use super::extract::{self, MatrixExtractor, Shape, ToeplitzExtractor, VonNeumann};
use super::health::{self, HealthTester, Params, SampleWidth, Test};
use super::sp800_22 as s22;
use super::*;
use bitvec::prelude::*;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng(seed).fill_bytes(&mut v);
    v
}

/// Raw bytes whose bits are independently 1 with probability `p1` (a biased noise source).
fn biased_bytes(seed: u64, n: usize, p1: f64) -> Vec<u8> {
    let mut r = rng(seed);
    let thr = (p1 * 4_294_967_296.0) as u64;
    (0..n)
        .map(|_| {
            let mut b = 0u8;
            for i in 0..8 {
                if u64::from(r.next_u32()) < thr {
                    b |= 1 << i;
                }
            }
            b
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Reference health tests: sample by sample, as written in SP 800-90B §4.4.1 and §4.4.2.

/// Returns the index of the sample at which the first test fires, and which one.
fn reference_health(samples: &[u8], c_rct: u32, w: u32, c_apt: u32) -> Option<(u64, Test)> {
    let (mut a, mut b) = (None::<u8>, 0u32); // RCT
    let (mut apt_a, mut apt_b, mut apt_i) = (0u8, 0u32, 0u32);
    for (idx, &x) in samples.iter().enumerate() {
        // RCT (§4.4.1)
        if Some(x) == a {
            b += 1;
            if b >= c_rct {
                return Some((idx as u64, Test::RepetitionCount));
            }
        } else {
            a = Some(x);
            b = 1;
        }
        // APT (§4.4.2)
        if apt_i == 0 {
            apt_a = x;
            apt_b = 1;
        } else if x == apt_a {
            apt_b += 1;
            if apt_b >= c_apt {
                return Some((idx as u64, Test::AdaptiveProportion));
            }
        }
        apt_i = (apt_i + 1) % w;
    }
    None
}

fn to_samples(raw: &[u8], width: SampleWidth) -> Vec<u8> {
    match width {
        SampleWidth::Byte => raw.to_vec(),
        SampleWidth::Bit => raw.view_bits::<Lsb0>().iter().by_vals().map(u8::from).collect(),
    }
}

/// Feeds `raw` to a tester in batches of the given sizes (cycled); returns the failure.
fn run_tester(p: Params, raw: &[u8], batches: &[usize]) -> Option<health::Failure> {
    let mut t = HealthTester::new(p);
    let mut off = 0;
    let mut i = 0;
    while off < raw.len() {
        let n = batches[i % batches.len()].min(raw.len() - off);
        i += 1;
        if let Err(f) = t.process(&raw[off..off + n]) {
            return Some(f);
        }
        off += n;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Cutoffs

#[test]
fn rct_cutoff_formula() {
    // SP 800-90B §4.4.1 example: α = 2^-20, H = 2 → C = 1 + ⌈20/2⌉ = 11.
    assert_eq!(health::rct_cutoff(2.0, 20), 11);
    assert_eq!(health::rct_cutoff(1.0, 30), 31);
    assert_eq!(health::rct_cutoff(0.8, 30), 1 + 38); // 30/0.8 = 37.5
    assert_eq!(health::rct_cutoff(6.4, 30), 1 + 5); // 30/6.4 = 4.6875
    assert_eq!(health::rct_cutoff(0.1, 30), 1 + 300); // exact quotient, no spurious round-up
    assert_eq!(health::rct_cutoff(8.0, 20), 1 + 3);
}

#[test]
fn apt_cutoff_matches_standard_table() {
    // SP 800-90B (Jan 2018) Table 2, α = 2^-20: binary W = 512, non-binary W = 1024.
    assert_eq!(health::apt_cutoff(512, 0.5, 20), 410);
    assert_eq!(health::apt_cutoff(512, 1.0, 20), 311);
    assert_eq!(health::apt_cutoff(1024, 1.0, 20), 589);
    // Further values from an independent 60-digit computation (mpmath, direct binomial sums of
    // P[Binomial(W, 2^-H) ≥ c]), including the defaults at α = 2^-30.
    let independent = [
        (1024, 0.5, 20, 793),
        (1024, 2.0, 20, 325),
        (1024, 4.0, 20, 105),
        (1024, 8.0, 20, 18),
        (512, 0.2, 20, 480),
        (512, 0.8, 30, 361),
        (512, 1.0, 30, 325),
        (1024, 1.0, 30, 609),
        (1024, 6.4, 30, 39),
        (1024, 8.0, 30, 22),
        (1024, 0.2, 30, 952),
    ];
    for (w, h, a, c) in independent {
        assert_eq!(health::apt_cutoff(w, h, a), c, "W={w} H={h} alpha=2^-{a}");
    }
}

#[test]
fn binomial_tails_match_direct_sum() {
    // Direct (linear-space) sums for a small n, where nothing underflows.
    let (n, p) = (30u32, 0.3f64);
    let tails = health::binomial_upper_tails_ln(n, p);
    for c in 0..=n {
        let mut direct = 0.0;
        for k in c..=n {
            let mut choose = 1.0f64;
            for i in 0..k {
                choose = choose * f64::from(n - i) / f64::from(i + 1);
            }
            direct += choose * p.powi(k as i32) * (1.0 - p).powi((n - k) as i32);
        }
        let got = tails[c as usize].exp();
        assert!((got - direct).abs() <= 1e-13 * direct.max(1e-300), "c={c}: {got} vs {direct}");
    }
    assert_eq!(tails[n as usize + 1], f64::NEG_INFINITY);
}

#[test]
fn params_reject_bad_config() {
    assert!(Params::new(SampleWidth::Bit, 1.5, 30).is_err());
    assert!(Params::new(SampleWidth::Byte, 0.0, 30).is_err());
    assert!(Params::new(SampleWidth::Byte, f64::NAN, 30).is_err());
    assert!(Params::new(SampleWidth::Byte, 6.4, 0).is_err());
    // H so low that even a full window cannot reach α: the test could never fire.
    assert!(Params::new(SampleWidth::Bit, 0.01, 64).is_err());
    let p = Params::new(SampleWidth::Bit, 0.8, 30).unwrap();
    assert_eq!((p.rct_cutoff, p.apt_window, p.apt_cutoff, p.startup_samples), (39, 512, 361, 1024));
    assert_eq!(p.startup_bytes(), 128);
    let p = Params::new(SampleWidth::Byte, 6.4, 30).unwrap();
    assert_eq!((p.rct_cutoff, p.apt_window, p.apt_cutoff, p.startup_samples), (6, 1024, 39, 1024));
}

// ---------------------------------------------------------------------------------------------
// Health tests against the reference and the formulas

#[test]
fn fast_health_tests_agree_with_reference() {
    // Structured inputs that make the tests fire at many different places, cut into batches
    // that straddle block and window boundaries.
    let batch_sets: [&[usize]; 4] = [&[1 << 20], &[1, 7, 63, 64, 65, 200], &[13], &[1000, 3]];
    for width in [SampleWidth::Byte, SampleWidth::Bit] {
        for (case, h) in [(0u64, 6.4f64), (1, 2.0), (2, 0.8), (3, 0.5)] {
            let h = if width == SampleWidth::Bit { h.min(1.0) } else { h };
            let p = Params::new(width, h, 20).unwrap();
            for seed in 0..12u64 {
                let mut raw = match (case + seed) % 4 {
                    0 => random_bytes(seed, 20_000),
                    1 => biased_bytes(seed, 6_000, 0.8),
                    2 => biased_bytes(seed, 6_000, 0.62),
                    _ => random_bytes(seed, 9_000).iter().map(|b| b & 0x3).collect(),
                };
                // Plant a stuck stretch somewhere in some inputs.
                if seed % 3 == 0 {
                    let at = (seed as usize * 997) % (raw.len() / 2);
                    let len = 3 + seed as usize;
                    raw[at..at + len].iter_mut().for_each(|b| *b = 0xA5);
                }
                let samples = to_samples(&raw, width);
                let want = reference_health(&samples, p.rct_cutoff, p.apt_window, p.apt_cutoff);
                for batches in batch_sets {
                    let got = run_tester(p, &raw, batches).map(|f| (f.at_sample, f.test));
                    assert_eq!(got, want, "{width} H={h} seed={seed} batches={batches:?}");
                }
            }
        }
    }
}

#[test]
fn stuck_source_fails_startup_at_rct_cutoff() {
    for width in [SampleWidth::Byte, SampleWidth::Bit] {
        let p = Params::new(width, EntropyConfig::default_min_entropy(width), 30).unwrap();
        let f = run_tester(p, &[0x00; 4096], &[4096]).expect("stuck source must fail");
        assert_eq!(f.test, Test::RepetitionCount);
        assert!(f.startup);
        // The C-th identical sample (index C − 1) completes the run: SP 800-90B §4.4.1.
        assert_eq!(f.at_sample, u64::from(p.rct_cutoff) - 1, "{width}");
    }
}

#[test]
fn source_sticking_after_startup_is_caught_within_c_samples() {
    let p = Params::new(SampleWidth::Byte, 6.4, 30).unwrap();
    let mut raw = random_bytes(7, 50_000);
    let onset = 30_001;
    let v = raw[onset - 1] ^ 0xFF; // differs from the last healthy sample
    raw[onset..].iter_mut().for_each(|b| *b = v);
    let f = run_tester(p, &raw, &[4096, 333]).expect("must fail");
    assert_eq!(f.test, Test::RepetitionCount);
    assert!(!f.startup);
    assert_eq!(f.at_sample, onset as u64 + u64::from(p.rct_cutoff) - 1);
    let a = Alarm::from(&f);
    assert_eq!(a.reason, Reason::RepetitionCount);
    assert!(a.detail.contains("repetition count"), "{a}");
}

#[test]
fn repeating_pattern_is_caught_by_apt_at_predicted_sample() {
    // A period-2 pattern ABAB… never repeats a sample (the RCT is blind to it), but the first
    // window that starts inside it sees its first value W/2 times: the APT fires at that window's
    // start + 2·(cutoff − 1).
    let p = Params::new(SampleWidth::Byte, 6.4, 30).unwrap();
    let mut raw = random_bytes(11, 40_000);
    let onset = 10_500;
    for (i, b) in raw[onset..].iter_mut().enumerate() {
        *b = if i % 2 == 0 { 0x3C } else { 0xC3 };
    }
    let f = run_tester(p, &raw, &[1500]).expect("must fail");
    assert_eq!(f.test, Test::AdaptiveProportion);
    let w = u64::from(p.apt_window);
    let first_window = (onset as u64).div_ceil(w) * w;
    let predicted = first_window + 2 * (u64::from(p.apt_cutoff) - 1);
    // It can fire earlier only if the window in progress at the onset happened to start with A
    // or B; with this seed it did not, so the prediction is exact.
    assert_eq!(f.at_sample, predicted);
}

#[test]
fn biased_bits_are_caught_within_predicted_windows() {
    // Bits with P(1) = 0.9 (H = 0.152) against the default claim H = 0.8.
    let p = Params::new(SampleWidth::Bit, 0.8, 30).unwrap();
    let w = p.apt_window;
    // Per-window detection probability ≥ P(first bit is 1) · P[1 + Bin(W−1, 0.9) ≥ cutoff].
    let tails = health::binomial_upper_tails_ln(w - 1, 0.9);
    let q = 0.9 * tails[p.apt_cutoff as usize - 1].exp();
    assert!(q > 0.89);
    // Windows after which a miss has probability < 2^-40.
    let k = (-40.0 * std::f64::consts::LN_2 / (1.0 - q).ln()).ceil() as u64;
    for seed in 0..20 {
        let raw = biased_bytes(seed, (k as usize + 1) * w as usize / 8, 0.9);
        let f = run_tester(p, &raw, &[100]).expect("biased source must fail");
        assert!(f.at_sample < k * u64::from(w), "seed {seed}: {f}");
    }
}

#[test]
fn healthy_sources_raise_no_alarm_over_a_long_run() {
    // False-alarm budget: with α = 2^-30 per APT window and per RCT sample, a source with exactly
    // the claimed entropy fails this 16 MiB byte-mode run with probability ≤ 2^24·2^-30 +
    // 2^14·2^-30 ≈ 1.6 %; this uniform source (H = 8 ≫ 6.4) fails the RCT with probability
    // ≤ 2^24·2^-40 and the APT (per window P[1 + Bin(1023, 2^-8) ≥ 39] < 2^-60) far less, so
    // < 2^-15 in all. The seeds are fixed, so the test is deterministic.
    let p = Params::new(SampleWidth::Byte, 6.4, 30).unwrap();
    let mut t = HealthTester::new(p);
    let mut r = rng(42);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..16 {
        r.fill_bytes(&mut buf);
        t.process(&buf).expect("healthy byte source raised an alarm");
    }
    // Bit mode on a biased but healthy source (P(1) = 0.55, H = 0.86 > 0.8): 1 MiB = 2^23 bits,
    // 2^14 windows. For this source the RCT fires with ≈ 0.55^38 + 0.45^38 ≈ 2^-32.8 per sample
    // (≈ 2^-9.8 over the run) and the APT with < 2^-40 per window.
    let p = Params::new(SampleWidth::Bit, 0.8, 30).unwrap();
    let mut t = HealthTester::new(p);
    let raw = biased_bytes(43, 1 << 20, 0.55);
    for chunk in raw.chunks(65536) {
        t.process(chunk).expect("healthy bit source raised an alarm");
    }
}

// ---------------------------------------------------------------------------------------------
// Gate

#[test]
fn gate_discards_startup_and_fails_closed() {
    let cfg = EntropyConfig::default();
    let mut g = Gate::new(&cfg).unwrap();
    assert_eq!(g.extractor_name(), "none");
    assert_eq!(
        g.params(),
        HealthParams { min_entropy_milli: 6400, rct_cutoff: 6, apt_window: 1024, apt_cutoff: 39 }
    );
    let raw = random_bytes(5, 10_000);
    let mut out = Vec::new();
    for chunk in raw.chunks(700) {
        g.process(chunk, &mut out).unwrap();
    }
    // The 1024 start-up samples are discarded; everything after passes through unchanged.
    assert!(g.started());
    assert!(out == raw[1024..]);
    // A failing batch appends nothing, and the gate stays closed until restart.
    let mut bad = random_bytes(6, 3000);
    bad[2000..2010].iter_mut().for_each(|b| *b = 7);
    let before = out.len();
    let a = g.process(&bad, &mut out).unwrap_err();
    assert_eq!(a.reason, Reason::RepetitionCount);
    assert_eq!(out.len(), before);
    let a2 = g.process(&random_bytes(8, 100), &mut out).unwrap_err();
    assert_eq!(a2, a);
    assert_eq!(out.len(), before);
    // After restart the start-up test runs again and its samples are discarded again.
    g.restart();
    assert!(!g.started());
    let fresh = random_bytes(9, 3000);
    g.process(&fresh, &mut out).unwrap();
    assert!(out[before..] == fresh[1024..]);
}

#[test]
fn gate_bit_mode_discards_two_windows_and_reports_params() {
    let cfg = EntropyConfig {
        min_entropy: EntropyConfig::default_min_entropy(SampleWidth::Bit),
        sample: SampleWidth::Bit,
        ..EntropyConfig::default()
    };
    let mut g = Gate::new(&cfg).unwrap();
    assert_eq!(
        g.params(),
        HealthParams { min_entropy_milli: 800, rct_cutoff: 39, apt_window: 512, apt_cutoff: 361 }
    );
    let raw = random_bytes(15, 1000);
    let mut out = Vec::new();
    g.process(&raw[..100], &mut out).unwrap();
    assert!(out.is_empty() && !g.started());
    g.process(&raw[100..], &mut out).unwrap();
    // 1024 bit samples = 128 bytes of start-up, discarded.
    assert!(g.started());
    assert!(out == raw[128..]);
    // 39 equal bits in a row close the gate: 1 + 16 zero bits end the first batch (0x5A ends
    // in a 0, LSB first), 24 more arrive in the second.
    let mut out2 = Vec::new();
    g.process(&[0x5A, 0x00, 0x00], &mut out2).unwrap();
    let a = g.process(&[0x00, 0x00, 0x00], &mut out2).unwrap_err();
    assert_eq!(a.reason, Reason::RepetitionCount);
    assert_eq!(out2.len(), 3);
}

#[test]
fn gate_startup_failure_is_reported_as_startup() {
    let mut g = Gate::new(&EntropyConfig::default()).unwrap();
    let mut out = Vec::new();
    let mut raw = random_bytes(3, 2000);
    raw[500..510].iter_mut().for_each(|b| *b = 1);
    let a = g.process(&raw, &mut out).unwrap_err();
    assert_eq!(a.reason, Reason::StartupTest);
    assert!(out.is_empty());
}

#[test]
fn gate_rejects_missing_and_short_files_at_new() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.bin");
    for spec in [
        ExtractorSpec::Matrix(Some(missing.clone())),
        ExtractorSpec::Toeplitz(Some(missing.clone())),
    ] {
        let cfg = EntropyConfig { extractor: spec, ..EntropyConfig::default() };
        let e = Gate::new(&cfg).unwrap_err();
        assert!(matches!(e, Error::Io { op: "open", .. }), "{e}");
        assert!(e.to_string().contains("nope.bin"), "{e}");
    }
    let short = dir.path().join("short.bin");
    std::fs::write(&short, vec![0u8; 98_303]).unwrap();
    let cfg = EntropyConfig {
        extractor: ExtractorSpec::Matrix(Some(short.clone())),
        ..Default::default()
    };
    let e = Gate::new(&cfg).unwrap_err();
    assert!(matches!(e, Error::BadFile { .. }), "{e}");
    assert!(e.to_string().contains("98303"), "{e}");
    let cfg =
        EntropyConfig { extractor: ExtractorSpec::Toeplitz(Some(short)), ..Default::default() };
    assert!(matches!(Gate::new(&cfg).unwrap_err(), Error::BadFile { .. }));
    let bad_h = EntropyConfig { min_entropy: 9.0, ..Default::default() };
    assert!(matches!(Gate::new(&bad_h).unwrap_err(), Error::Config(_)));
}

#[test]
fn extractor_spec_parses_and_prints() {
    let cases = [
        ("none", ExtractorSpec::None),
        ("von-neumann", ExtractorSpec::VonNeumann),
        ("matrix", ExtractorSpec::Matrix(None)),
        ("matrix:/tmp/m.bin", ExtractorSpec::Matrix(Some("/tmp/m.bin".into()))),
        ("toeplitz", ExtractorSpec::Toeplitz(None)),
        ("toeplitz:seed", ExtractorSpec::Toeplitz(Some("seed".into()))),
    ];
    for (s, want) in cases {
        let got: ExtractorSpec = s.parse().unwrap();
        assert_eq!(got, want);
        assert_eq!(got.to_string(), s);
    }
    for bad in ["", "matrix:", "vonneumann", "none:x", "sha256", "von-neumann:f"] {
        assert!(bad.parse::<ExtractorSpec>().is_err(), "{bad:?}");
    }
    assert_eq!(ExtractorSpec::Toeplitz(None).file().unwrap(), Path::new(DEFAULT_TOEPLITZ_SEED));
    assert_eq!(ExtractorSpec::Matrix(None).file().unwrap(), Path::new(DEFAULT_MATRIX_FILE));
}

// ---------------------------------------------------------------------------------------------
// Extractors

fn reference_von_neumann(input: &[u8]) -> Vec<u8> {
    let bits = input.view_bits::<Lsb0>();
    let mut out: BitVec<u8, Lsb0> = BitVec::new();
    for pair in bits.chunks_exact(2) {
        if pair[0] != pair[1] {
            out.push(pair[0]);
        }
    }
    let whole = out.len() / 8 * 8;
    out.truncate(whole);
    out.into_vec()
}

#[test]
fn von_neumann_hand_worked_and_reference() {
    // 0b1001_1100: pairs (LSB first) 00, 11, (1,0) → 1, (0,1) → 0. Four copies give 10101010.
    let mut v = VonNeumann::new();
    let mut out = Vec::new();
    v.feed(&[0b1001_1100; 4], &mut out);
    assert_eq!(out, [0b0101_0101]);
    v.reset();
    out.clear();
    v.feed(&[0xFF, 0x00, 0x55], &mut out); // 0x55: four (1,0) pairs → 1111, only 4 bits: held
    assert!(out.is_empty());
    v.feed(&[0xAA], &mut out); // 0xAA: four (0,1) pairs → 0000
    assert_eq!(out, [0x0F]);
    for seed in 0..5 {
        let input = biased_bytes(seed, 5000, 0.3);
        let mut v = VonNeumann::new();
        let mut out = Vec::new();
        for c in input.chunks(1 + seed as usize * 37) {
            v.feed(c, &mut out);
        }
        assert!(out == reference_von_neumann(&input));
    }
}

/// IDQ's definition, literally: output bit r = parity(row_r AND x) over 64-bit words.
fn reference_matrix(shape: Shape, m: &[u8], x: &[u8]) -> Vec<u8> {
    let words = |b: &[u8]| -> Vec<u64> {
        b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect()
    };
    let (mw, xw) = (words(m), words(x));
    let nw = shape.n / 64;
    let mut out = vec![0u64; shape.k / 64];
    for r in 0..shape.k {
        let mut acc = 0u64;
        for l in 0..nw {
            acc ^= mw[r * nw + l] & xw[l];
        }
        out[r / 64] |= u64::from(acc.count_ones() & 1) << (r % 64);
    }
    out.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[test]
fn matrix_extractor_hand_worked() {
    let shape = Shape { n: 128, k: 64 };
    // Row r has only column r set: y = the first 64 input bits.
    let mut m = vec![0u8; shape.matrix_bytes()];
    let bits = m.view_bits_mut::<Lsb0>();
    for r in 0..64 {
        bits.set(r * 128 + r, true);
    }
    let e = MatrixExtractor::from_idq_bytes(shape, &m).unwrap();
    let x: Vec<u8> = (0..16u8).map(|i| i.wrapping_mul(37) ^ 0x5A).collect();
    let mut y = [0u8; 8];
    e.extract_block(&x, &mut y);
    assert_eq!(y, x[..8]);
    // Every row all ones: every output bit is the parity of the whole input block.
    let e = MatrixExtractor::from_idq_bytes(shape, &vec![0xFF; shape.matrix_bytes()]).unwrap();
    let mut x = [0u8; 16];
    x[3] = 0b0000_0111; // three ones: odd
    e.extract_block(&x, &mut y);
    assert_eq!(y, [0xFF; 8]);
    x[15] = 0x80; // four ones: even
    e.extract_block(&x, &mut y);
    assert_eq!(y, [0; 8]);
    assert!(MatrixExtractor::from_idq_bytes(shape, &m[1..]).is_err());
    assert!(MatrixExtractor::from_idq_bytes(Shape { n: 100, k: 64 }, &m).is_err());
}

#[test]
fn matrix_extractor_matches_reference() {
    for (i, shape) in
        [Shape::S1024_768, Shape::S2048_1792, Shape { n: 192, k: 128 }].into_iter().enumerate()
    {
        let m = random_bytes(100 + i as u64, shape.matrix_bytes());
        let e = MatrixExtractor::from_idq_bytes(shape, &m).unwrap();
        for j in 0..4 {
            let x = random_bytes(200 + j, shape.n / 8);
            let mut y = vec![0u8; shape.k / 8];
            e.extract_block(&x, &mut y);
            assert_eq!(y, reference_matrix(shape, &m, &x), "{shape:?} block {j}");
        }
    }
}

/// The definition: y_i = XOR_j s[i − j + n − 1] · x_j.
fn reference_toeplitz(shape: Shape, seed: &[u8], x: &[u8]) -> Vec<u8> {
    let s = seed.view_bits::<Lsb0>();
    let xb = x.view_bits::<Lsb0>();
    let mut y: BitVec<u8, Lsb0> = BitVec::repeat(false, shape.k);
    for i in 0..shape.k {
        let mut bit = false;
        for j in 0..shape.n {
            bit ^= s[i + shape.n - 1 - j] & xb[j];
        }
        y.set(i, bit);
    }
    y.into_vec()
}

#[test]
fn toeplitz_hand_worked() {
    let shape = Shape { n: 128, k: 64 };
    let x: Vec<u8> = (0..16u8).map(|i| i.wrapping_mul(91) ^ 0xC3).collect();
    // Only seed bit n − 1: the identity's diagonal, y = first 64 bits of x.
    let mut seed = vec![0u8; shape.seed_bytes()];
    seed.view_bits_mut::<Lsb0>().set(127, true);
    let e = ToeplitzExtractor::from_seed(shape, &seed).unwrap();
    let mut y = [0u8; 8];
    e.extract_block(&x, &mut y);
    assert_eq!(y, x[..8]);
    // Only seed bit n − 1 − 8: T[i][j] = 1 iff j = i + 8, so y = input bits 8..72 (one byte on).
    let mut seed = vec![0u8; shape.seed_bytes()];
    seed.view_bits_mut::<Lsb0>().set(119, true);
    let e = ToeplitzExtractor::from_seed(shape, &seed).unwrap();
    e.extract_block(&x, &mut y);
    assert_eq!(y, x[1..9]);
    // Only seed bit n − 1 + 3: y_i = x_{i−3}, i.e. x shifted up by three bit positions.
    let mut seed = vec![0u8; shape.seed_bytes()];
    seed.view_bits_mut::<Lsb0>().set(130, true);
    let e = ToeplitzExtractor::from_seed(shape, &seed).unwrap();
    e.extract_block(&x, &mut y);
    let xw = u64::from_le_bytes(x[..8].try_into().unwrap());
    assert_eq!(u64::from_le_bytes(y), xw << 3);
}

#[test]
fn toeplitz_matches_reference_and_matrix_form() {
    for (i, shape) in
        [Shape::S1024_768, Shape::S2048_1792, Shape { n: 192, k: 128 }].into_iter().enumerate()
    {
        let seed = random_bytes(300 + i as u64, shape.seed_bytes());
        let e = ToeplitzExtractor::from_seed(shape, &seed).unwrap();
        // The same matrix written out in IDQ's layout must give the same output through the
        // (independently implemented) matrix extractor.
        let mut m = vec![0u8; shape.matrix_bytes()];
        let (mb, sb) = (m.view_bits_mut::<Lsb0>(), seed.view_bits::<Lsb0>());
        for r in 0..shape.k {
            for c in 0..shape.n {
                mb.set(r * shape.n + c, sb[r + shape.n - 1 - c]);
            }
        }
        let me = MatrixExtractor::from_idq_bytes(shape, &m).unwrap();
        for j in 0..2 {
            let x = random_bytes(400 + j, shape.n / 8);
            let (mut y, mut y2) = (vec![0u8; shape.k / 8], vec![0u8; shape.k / 8]);
            e.extract_block(&x, &mut y);
            me.extract_block(&x, &mut y2);
            assert_eq!(y, reference_toeplitz(shape, &seed, &x), "{shape:?} block {j}");
            assert_eq!(y, y2);
        }
    }
}

#[test]
fn gate_with_extractors_splits_blocks_like_whole_input() {
    let dir = tempfile::tempdir().unwrap();
    let mpath = dir.path().join("m.bin");
    let spath = dir.path().join("s.bin");
    let m = random_bytes(1, Shape::S1024_768.matrix_bytes());
    let s = random_bytes(2, Shape::S2048_1792.seed_bytes());
    std::fs::write(&mpath, &m).unwrap();
    std::fs::write(&spath, &s).unwrap();
    let raw = random_bytes(3, 1024 + 128 * 40 + 77);
    let body = &raw[1024..];
    let me = MatrixExtractor::from_idq_bytes(Shape::S1024_768, &m).unwrap();
    let te = ToeplitzExtractor::from_seed(Shape::S2048_1792, &s).unwrap();
    let whole = |f: &dyn Fn(&[u8], &mut [u8]), ib: usize, ob: usize| -> Vec<u8> {
        let mut out = Vec::new();
        for c in body.chunks_exact(ib) {
            let mut o = vec![0u8; ob];
            f(c, &mut o);
            out.extend(o);
        }
        out
    };
    let cases: [(ExtractorSpec, &str, Vec<u8>); 3] = [
        (
            ExtractorSpec::Matrix(Some(mpath)),
            "matrix-1024x768",
            whole(&|i, o| me.extract_block(i, o), 128, 96),
        ),
        (
            ExtractorSpec::Toeplitz(Some(spath)),
            "toeplitz-2048x1792",
            whole(&|i, o| te.extract_block(i, o), 256, 224),
        ),
        (ExtractorSpec::VonNeumann, "von-neumann", reference_von_neumann(body)),
    ];
    for (spec, name, want) in cases {
        let cfg = EntropyConfig { extractor: spec, ..Default::default() };
        let mut g = Gate::new(&cfg).unwrap();
        assert_eq!(g.extractor_name(), name);
        let mut out = Vec::new();
        for c in raw.chunks(301) {
            g.process(c, &mut out).unwrap();
        }
        assert!(out == want, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// make-matrix and seeds

/// IDQ's procedure written out plainly: per 32 KiB chunk, low bits of bytes 0, N, 2N, …, then
/// von Neumann over consecutive pairs within the chunk; layers XORed.
fn reference_make(
    len: usize,
    layers: usize,
    nth: usize,
    src: &mut dyn FnMut(&mut [u8]),
) -> Vec<u8> {
    let mut acc = vec![0u8; len];
    for _ in 0..layers {
        let mut bits: Vec<bool> = Vec::new();
        while bits.len() < len * 8 {
            let mut chunk = vec![0u8; 32768];
            src(&mut chunk);
            let kept: Vec<bool> = chunk.iter().step_by(nth).map(|b| b & 1 == 1).collect();
            for p in kept.chunks_exact(2) {
                if p[0] != p[1] && bits.len() < len * 8 {
                    bits.push(p[0]);
                }
            }
        }
        for (i, b) in bits.iter().enumerate() {
            acc[i / 8] ^= u8::from(*b) << (i % 8);
        }
    }
    acc
}

/// A fast deterministic byte source (SplitMix64) for the make-matrix tests, which read tens of
/// megabytes through the undersampler.
fn splitmix_source(seed: u64) -> impl FnMut(&mut [u8]) {
    let mut x = seed;
    move |b: &mut [u8]| {
        for c in b.chunks_mut(8) {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            c.copy_from_slice(&z.to_le_bytes()[..c.len()]);
        }
    }
}

#[test]
fn make_matrix_follows_idq_procedure() {
    let small = Shape { n: 128, k: 64 };
    for (layers, nth) in [(2, 13), (3, 20)] {
        let want = reference_make(small.matrix_bytes(), layers, nth, &mut splitmix_source(9));
        let mut src = splitmix_source(9);
        let got = extract::make_matrix(small, layers, nth, &mut |b| {
            src(b);
            Ok(())
        })
        .unwrap();
        assert!(got == want, "layers={layers} N={nth}");
    }
}

#[test]
fn make_matrix_file_writes_0600_and_refuses_bad_input() {
    use std::os::unix::fs::PermissionsExt;
    let shape = Shape::S1024_768;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub/matrix.bin");
    let mut src = splitmix_source(77);
    make_matrix_file(&out, shape, 2, 13, |b| {
        src(b);
        Ok(())
    })
    .unwrap();
    let m = std::fs::read(&out).unwrap();
    assert_eq!(m.len(), shape.matrix_bytes());
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    // Debiased and XORed: close to half ones (±6 σ over 786,432 bits).
    let ones: u64 = m.iter().map(|b| u64::from(b.count_ones())).sum();
    assert!((ones as f64 - 393_216.0).abs() < 6.0 * 443.4, "{ones}");
    MatrixExtractor::load(&out).unwrap();
    // Bad parameters are refused before reading anything.
    let mut calls = 0;
    let mut counting = |_: &mut [u8]| {
        calls += 1;
        Ok(())
    };
    assert!(make_matrix_file(&out, shape, 1, 13, &mut counting).is_err());
    assert!(make_matrix_file(&out, shape, 2, 12, &mut counting).is_err());
    assert!(make_matrix_file(&out, Shape { n: 128, k: 64 }, 2, 13, &mut counting).is_err());
    assert_eq!(calls, 0);
    assert!(std::fs::read(&out).unwrap() == m, "a refused run must not touch the file");
    // A stuck source ends with an error instead of spinning forever.
    let e = make_matrix_file(&dir.path().join("x"), Shape { n: 128, k: 64 }, 2, 13, |b| {
        b.fill(0xFF);
        Ok(())
    });
    assert!(e.is_err());
    let e = extract::make_matrix(Shape { n: 128, k: 64 }, 2, 13, &mut |b| {
        b.fill(0xFF);
        Ok(())
    })
    .unwrap_err();
    assert!(e.to_string().contains("stuck"), "{e}");
    // A failing source is reported.
    let e = make_matrix_file(&dir.path().join("y"), shape, 2, 13, |_| {
        Err(std::io::Error::other("card gone"))
    })
    .unwrap_err();
    assert!(matches!(e, Error::Source { .. }), "{e}");
    assert!(!dir.path().join("y").exists());
}

#[test]
fn ensure_toeplitz_seed_creates_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qrng/toeplitz-seed.bin");
    let mut r = rng(5);
    let got = ensure_toeplitz_seed(&path, |b| {
        r.fill_bytes(b);
        Ok(())
    })
    .unwrap();
    assert_eq!(got, path);
    let seed = std::fs::read(&path).unwrap();
    assert_eq!(seed.len(), Shape::S1024_768.seed_bytes());
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let mut r = rng(5);
    let want = reference_make(seed.len(), DEFAULT_ELEMENTARY, DEFAULT_UNDERSAMPLING, &mut |b| {
        r.fill_bytes(b)
    });
    assert!(seed == want);
    // Second use: the file is kept, the card is not read.
    ensure_toeplitz_seed(&path, |_| panic!("must not read the card again")).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), seed);
    let cfg = EntropyConfig {
        extractor: ExtractorSpec::Toeplitz(Some(path.clone())),
        ..Default::default()
    };
    assert_eq!(Gate::new(&cfg).unwrap().extractor_name(), "toeplitz-1024x768");
    // A wrong-sized existing file is an error and stays as it was.
    std::fs::write(&path, [1u8; 10]).unwrap();
    assert!(ensure_toeplitz_seed(&path, |_| Ok(())).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), [1u8; 10]);
}

// ---------------------------------------------------------------------------------------------
// SP 800-22

/// The 100-bit ε of SP 800-22's worked examples (§2.1.8, 2.2.8, 2.3.8, 2.12.8, 2.13.8): the first
/// 100 bits of π's binary expansion.
const EPS100: &str = "1100100100001111110110101010001000100001011010001100001000110100110001001100011001100010100010111000";

fn close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
}

#[test]
fn special_functions() {
    close(s22::erfc(0.0), 1.0);
    assert!((s22::erfc(1.0) - 0.157_299_207_050_285_13).abs() < 1e-14);
    assert!((s22::erfc(2.0) - 0.004_677_734_981_047_266).abs() < 1e-15);
    assert!((s22::erfc(-1.0) - 1.842_700_792_949_715).abs() < 1e-14);
    assert!((s22::erfc(5.0) / 1.537_459_794_428_034_8e-12 - 1.0).abs() < 1e-10);
    for x in [0.1, 1.0, 3.7, 25.0] {
        assert!((s22::igamc(1.0, x) / (-x).exp() - 1.0).abs() < 1e-12);
    }
    assert!((s22::ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-14);
    assert!((s22::ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-12);
    close(s22::normal_cdf(0.0), 0.5);
}

#[test]
fn sp800_22_worked_examples() {
    let e100 = s22::parse_bits(EPS100);
    assert_eq!(e100.len(), 100);
    // §2.1.4 and §2.1.8
    close(s22::frequency(&s22::parse_bits("1011010101")), 0.527089);
    close(s22::frequency(&e100), 0.109599);
    // §2.2.4 (M = 3) and §2.2.8 (M = 10)
    close(s22::block_frequency(&s22::parse_bits("0110011010"), 3), 0.801252);
    close(s22::block_frequency(&e100, 10), 0.706438);
    // §2.3.4 and §2.3.8
    close(s22::runs(&s22::parse_bits("1001101011")), 0.147232);
    close(s22::runs(&e100), 0.500798);
    // §2.4.8: n = 128, M = 8
    let e128 = s22::parse_bits(
        "11001100000101010110110001001100111000000000001001001101010100010001001111010110100000001101011111001100111001101101100010110010",
    );
    assert_eq!(e128.len(), 128);
    close(s22::longest_run(&e128).unwrap(), 0.180609);
    // §2.11.4: ε = 0011011101, m = 3
    let (p1, p2) = s22::serial(&s22::parse_bits("0011011101"), 3);
    close(p1, 0.808792);
    close(p2, 0.670320);
    // §2.12.4 (m = 3) and §2.12.8 (m = 2)
    close(s22::approximate_entropy(&s22::parse_bits("0100110101"), 3), 0.261961);
    close(s22::approximate_entropy(&e100, 2), 0.235301);
    // §2.13.4 (forward) and §2.13.8 (forward, backward)
    close(s22::cumulative_sums(&s22::parse_bits("1011010111"), true), 0.4116588);
    close(s22::cumulative_sums(&e100, true), 0.219194);
    close(s22::cumulative_sums(&e100, false), 0.114866);
}

/// Extracts `raw` (after no start-up) with a matrix or Toeplitz extractor built from a PRNG.
fn extract_all(raw: &[u8], toeplitz: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if toeplitz {
        let s = random_bytes(900, Shape::S1024_768.seed_bytes());
        let mut b =
            extract::Blocked::new(ToeplitzExtractor::from_seed(Shape::S1024_768, &s).unwrap());
        b.feed(raw, &mut out);
    } else {
        let m = random_bytes(901, Shape::S1024_768.matrix_bytes());
        let mut b =
            extract::Blocked::new(MatrixExtractor::from_idq_bytes(Shape::S1024_768, &m).unwrap());
        b.feed(raw, &mut out);
    }
    out
}

#[test]
fn bias_005_fails_frequency_raw_and_passes_after_extraction() {
    // Raw bits with P(1) = 0.55. Pass criterion: SP 800-22 α = 0.01 for every p-value of
    // `assess` (fixed seeds: deterministic; a perfect source would fail some p-value of the
    // ~10 with probability ≈ 10 %, which is why the seeds are fixed rather than random).
    let raw = biased_bytes(1234, 200_000, 0.55);
    let r = s22::assess(&raw);
    assert!(s22::frequency(&s22::unpack_msb(&raw)) < 1e-10);
    assert!(!r.passed);
    assert!((r.ones_fraction - 0.55).abs() < 0.005);
    for toeplitz in [false, true] {
        let out = extract_all(&raw, toeplitz);
        assert_eq!(out.len(), raw.len() / 128 * 96);
        let r = s22::assess(&out);
        assert!(r.passed, "toeplitz={toeplitz}:\n{r}");
        assert!(r.min_entropy_per_byte > 7.5, "{r}");
    }
}

#[test]
fn assess_report_on_prng_and_short_input() {
    let r = s22::assess(&random_bytes(31, 125_000));
    assert_eq!(r.bits_tested, 1_000_000);
    assert!(r.passed, "{r}");
    assert_eq!(r.tests.len(), 7);
    let text = r.to_string();
    assert!(text.contains("longest run of ones") && text.contains("PASS"), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["bits_tested"], 1_000_000);
    // Too short for anything: reported, not a panic.
    let r = s22::assess(&[0x55; 3]);
    assert!(!r.passed);
    assert!(!r.skipped.is_empty());
    let r = s22::assess(&[]);
    assert!(!r.passed);
    // A stuck stream fails.
    assert!(!s22::assess(&[0u8; 10_000]).passed);
}

#[test]
fn mcv_min_entropy_estimate() {
    // Uniform bytes, 2^18 samples: the largest of 256 counts sits ~3 σ above 1024, plus the 99 %
    // bound: about 7.75 bits, never 8.
    let r = s22::assess(&random_bytes(9, 1 << 18));
    assert!(r.min_entropy_per_byte > 7.6 && r.min_entropy_per_byte < 7.9, "{r}");
    // P(1) = 0.55: −log2(0.55) = 0.862 per bit, minus the confidence margin.
    let r = s22::assess(&biased_bytes(10, 1 << 18, 0.55));
    assert!((r.min_entropy_per_bit - 0.8625).abs() < 0.01, "{r}");
}

#[test]
fn random_bytes_helper_is_not_constant() {
    // Guard for the helpers the tests above rely on.
    let a = random_bytes(1, 64);
    assert_ne!(a, random_bytes(2, 64));
    assert_ne!(a, vec![a[0]; 64]);
    let mut r = rng(1);
    let x: f64 = r.random();
    assert!((0.0..1.0).contains(&x));
}
