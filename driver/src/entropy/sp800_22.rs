//! A subset of the NIST SP 800-22 rev. 1a statistical tests (frequency, block frequency, runs,
//! longest run of ones, serial, approximate entropy, cumulative sums) with p-values, the special
//! functions they need (erfc, the regularised upper incomplete gamma function igamc), an
//! SP 800-90B §6.3.1 most-common-value min-entropy estimate, and [`assess`], the report behind
//! `quantis-driver assess FILE|-`.
//!
//! Bits are taken most-significant first within each byte, as NIST's `assess` tool reads binary
//! files. A p-value below [`ALPHA`] counts as a failure; on perfect data each p-value fails with
//! probability 0.01, so a report of about ten p-values fails somewhere ~10 % of the time.

use serde::Serialize;
use std::fmt;

/// SP 800-22 §1.1.5 / §4.2.1: the significance level the suite uses.
pub const ALPHA: f64 = 0.01;
/// `assess` runs the SP 800-22 tests on at most this many bits (16 Mbit = 2 MiB); the byte
/// statistics use the whole input.
pub const MAX_TEST_BITS: usize = 1 << 24;

// ---------------------------------------------------------------------------------------------
// Special functions

/// ln Γ(x) for x > 0, Lanczos approximation (g = 7, 9 terms; relative error ~1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularised lower incomplete gamma P(a, x) by its series (converges fast for x < a + 1).
fn igam_series(a: f64, x: f64) -> f64 {
    let mut sum = 1.0 / a;
    let mut term = sum;
    let mut ap = a;
    for _ in 0..10_000 {
        ap += 1.0;
        term *= x / ap;
        sum += term;
        if term.abs() < sum.abs() * 1e-17 {
            break;
        }
    }
    (sum.ln() - x + a * x.ln() - ln_gamma(a)).exp()
}

/// Regularised upper incomplete gamma Q(a, x) by its continued fraction (modified Lentz; for
/// x ≥ a + 1).
fn igamc_cf(a: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..10_000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x + a * x.ln() - ln_gamma(a)).exp() * h
}

/// igamc(a, x) = Q(a, x) = Γ(a, x) / Γ(a), the regularised upper incomplete gamma function
/// (SP 800-22 §5.5.3 uses the Cephes function of that name).
pub fn igamc(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < a + 1.0 {
        (1.0 - igam_series(a, x)).clamp(0.0, 1.0)
    } else {
        igamc_cf(a, x).clamp(0.0, 1.0)
    }
}

/// The complementary error function: erfc(x) = Q(1/2, x²) for x ≥ 0, 2 − erfc(−x) otherwise.
pub fn erfc(x: f64) -> f64 {
    if x >= 0.0 {
        igamc(0.5, x * x)
    } else {
        2.0 - igamc(0.5, x * x)
    }
}

/// Standard normal CDF Φ(x).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

// ---------------------------------------------------------------------------------------------
// Tests. `bits` holds one 0/1 value per element.

/// Unpacks bytes into one 0/1 value per bit, most significant bit first.
pub fn unpack_msb(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().flat_map(|&b| (0..8).rev().map(move |i| (b >> i) & 1)).collect()
}

/// Parses a string of '0'/'1' characters (others ignored), for the standard's worked examples.
pub fn parse_bits(s: &str) -> Vec<u8> {
    s.bytes().filter_map(|c| matches!(c, b'0' | b'1').then_some(c - b'0')).collect()
}

/// §2.1 Frequency (monobit) test.
pub fn frequency(bits: &[u8]) -> f64 {
    let n = bits.len() as f64;
    let s: i64 = bits.iter().map(|&b| if b == 1 { 1i64 } else { -1 }).sum();
    erfc((s as f64).abs() / n.sqrt() / std::f64::consts::SQRT_2)
}

/// §2.2 Frequency test within blocks of `m` bits (the tail that does not fill a block is
/// discarded).
pub fn block_frequency(bits: &[u8], m: usize) -> f64 {
    let nblocks = bits.len() / m;
    let chi2: f64 = bits
        .chunks_exact(m)
        .map(|blk| {
            let pi = blk.iter().map(|&b| u64::from(b)).sum::<u64>() as f64 / m as f64;
            (pi - 0.5) * (pi - 0.5)
        })
        .sum::<f64>()
        * 4.0
        * m as f64;
    igamc(nblocks as f64 / 2.0, chi2 / 2.0)
}

/// §2.3 Runs test. Returns 0 when the frequency prerequisite |π − ½| < 2/√n fails.
pub fn runs(bits: &[u8]) -> f64 {
    let n = bits.len() as f64;
    let pi = bits.iter().map(|&b| u64::from(b)).sum::<u64>() as f64 / n;
    if (pi - 0.5).abs() >= 2.0 / n.sqrt() {
        return 0.0;
    }
    let v = 1 + bits.windows(2).filter(|w| w[0] != w[1]).count();
    let num = (v as f64 - 2.0 * n * pi * (1.0 - pi)).abs();
    erfc(num / (2.0 * (2.0 * n).sqrt() * pi * (1.0 - pi)))
}

/// §2.4 Test for the longest run of ones in a block. Parameters by n per §2.4.2 (M = 8, 128 or
/// 10⁴). None if n < 128.
pub fn longest_run(bits: &[u8]) -> Option<f64> {
    // Class probabilities π_i, SP 800-22 §3.4 (printed there to 4 digits). For M = 8 they are
    // exact multiples of 1/256 and for M = 128 NIST's reference code carries 10 digits; the
    // worked example's P-value (§2.4.8) is reproduced only with the exact values.
    const P8: [f64; 4] = [55.0 / 256.0, 94.0 / 256.0, 59.0 / 256.0, 48.0 / 256.0];
    const P128: [f64; 6] =
        [0.117_403_578_8, 0.242_955_959, 0.249_363_483, 0.175_177_06, 0.102_701_071, 0.112_398_847];
    const P10K: [f64; 7] = [0.0882, 0.2092, 0.2483, 0.1933, 0.1208, 0.0675, 0.0727];
    let n = bits.len();
    let (m, vmin, pis): (usize, usize, &[f64]) = if n < 128 {
        return None;
    } else if n < 6272 {
        (8, 1, &P8)
    } else if n < 750_000 {
        (128, 4, &P128)
    } else {
        (10_000, 10, &P10K)
    };
    let k = pis.len() - 1;
    let mut v = vec![0u64; pis.len()];
    let mut nblocks = 0u64;
    for blk in bits.chunks_exact(m) {
        let (mut run, mut best) = (0usize, 0usize);
        for &b in blk {
            run = if b == 1 { run + 1 } else { 0 };
            best = best.max(run);
        }
        v[best.clamp(vmin, vmin + k) - vmin] += 1;
        nblocks += 1;
    }
    let nb = nblocks as f64;
    let chi2: f64 =
        v.iter().zip(pis).map(|(&vi, &p)| (vi as f64 - nb * p).powi(2) / (nb * p)).sum();
    Some(igamc(k as f64 / 2.0, chi2 / 2.0))
}

/// Counts of the overlapping `m`-bit patterns of `bits` extended cyclically by its first m − 1
/// bits (§2.11.4 step 1 / §2.12.4 step 1).
fn pattern_counts(bits: &[u8], m: usize) -> Vec<u32> {
    let mut counts = vec![0u32; 1 << m];
    if m == 0 {
        counts[0] = bits.len() as u32;
        return counts;
    }
    let mask = (1usize << m) - 1;
    let mut w = 0usize;
    for &b in &bits[..m - 1] {
        w = (w << 1) | usize::from(b);
    }
    for i in 0..bits.len() {
        let b = bits[(i + m - 1) % bits.len()];
        w = ((w << 1) | usize::from(b)) & mask;
        counts[w] += 1;
    }
    counts
}

/// ψ²_m of §2.11.4 step 3 (ψ²_0 = ψ²_−1 = 0).
fn psi2(bits: &[u8], m: usize) -> f64 {
    if m == 0 {
        return 0.0;
    }
    let n = bits.len() as f64;
    let s: f64 = pattern_counts(bits, m).iter().map(|&c| f64::from(c) * f64::from(c)).sum();
    s * (1u64 << m) as f64 / n - n
}

/// §2.11 Serial test with block length `m` ≥ 2: (P-value1, P-value2).
pub fn serial(bits: &[u8], m: usize) -> (f64, f64) {
    let (p0, p1, p2) =
        (psi2(bits, m), psi2(bits, m - 1), if m >= 2 { psi2(bits, m - 2) } else { 0.0 });
    let d1 = p0 - p1;
    let d2 = p0 - 2.0 * p1 + p2;
    (igamc((1u64 << (m - 1)) as f64 / 2.0, d1 / 2.0), igamc((1u64 << m) as f64 / 8.0, d2 / 2.0))
}

/// φ^(m) of §2.12.4 step 4.
fn phi(bits: &[u8], m: usize) -> f64 {
    let n = bits.len() as f64;
    pattern_counts(bits, m)
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            p * p.ln()
        })
        .sum()
}

/// §2.12 Approximate entropy test with block length `m`.
pub fn approximate_entropy(bits: &[u8], m: usize) -> f64 {
    let n = bits.len() as f64;
    let apen = phi(bits, m) - phi(bits, m + 1);
    let chi2 = 2.0 * n * (std::f64::consts::LN_2 - apen);
    igamc((1u64 << m) as f64 / 2.0, chi2 / 2.0)
}

/// §2.13 Cumulative sums test; `forward` = mode 0, otherwise mode 1 (backward).
pub fn cumulative_sums(bits: &[u8], forward: bool) -> f64 {
    let n = bits.len() as i64;
    let step = |b: &u8| if *b == 1 { 1i64 } else { -1 };
    let mut s = 0i64;
    let mut z = 0i64;
    let mut visit = |b: &u8| {
        s += step(b);
        z = z.max(s.abs());
    };
    if forward {
        bits.iter().for_each(&mut visit);
    } else {
        bits.iter().rev().for_each(&mut visit);
    }
    if z == 0 {
        return 1.0;
    }
    let (nf, zf) = (n as f64, z as f64);
    let sq = nf.sqrt();
    // Summation bounds exactly as §2.13.4 step 4 / NIST's reference code (integer division).
    let mut sum1 = 0.0;
    let mut k = (-n / z + 1) / 4;
    while k <= (n / z - 1) / 4 {
        let kf = k as f64;
        sum1 += normal_cdf((4.0 * kf + 1.0) * zf / sq) - normal_cdf((4.0 * kf - 1.0) * zf / sq);
        k += 1;
    }
    let mut sum2 = 0.0;
    let mut k = (-n / z - 3) / 4;
    while k <= (n / z - 1) / 4 {
        let kf = k as f64;
        sum2 += normal_cdf((4.0 * kf + 3.0) * zf / sq) - normal_cdf((4.0 * kf + 1.0) * zf / sq);
        k += 1;
    }
    (1.0 - sum1 + sum2).clamp(0.0, 1.0)
}

// ---------------------------------------------------------------------------------------------
// Min-entropy estimate and the report

/// SP 800-90B §6.3.1 most-common-value estimate: −log2 of the 99 % upper confidence bound of the
/// most common value's probability. `counts` are value counts over `l` samples.
pub fn mcv_min_entropy(counts: &[u64], l: u64) -> f64 {
    if l < 2 {
        return 0.0;
    }
    let lf = l as f64;
    let p = counts.iter().copied().max().unwrap_or(0) as f64 / lf;
    let pu = (p + 2.576 * (p * (1.0 - p) / (lf - 1.0)).sqrt()).min(1.0);
    -pu.log2()
}

/// One test's outcome in an [`AssessReport`].
#[derive(Clone, Debug, Serialize)]
pub struct TestResult {
    pub name: String,
    pub p_values: Vec<f64>,
    pub passed: bool,
}

/// The result of [`assess`].
#[derive(Clone, Debug, Serialize)]
pub struct AssessReport {
    pub bytes: usize,
    pub bits_tested: usize,
    /// Shannon entropy of the byte histogram, bits per byte (8 = flat).
    pub shannon_bits_per_byte: f64,
    /// SP 800-90B §6.3.1 MCV min-entropy estimate, bits per byte sample.
    pub min_entropy_per_byte: f64,
    /// Same, for bit samples (bits per bit).
    pub min_entropy_per_bit: f64,
    pub ones_fraction: f64,
    pub alpha: f64,
    pub tests: Vec<TestResult>,
    /// Tests skipped because the input is too short for them.
    pub skipped: Vec<String>,
    /// True if every p-value ≥ alpha and no test was skipped.
    pub passed: bool,
}

impl fmt::Display for AssessReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bytes: {}  (SP 800-22 tests on the first {} bits)",
            self.bytes, self.bits_tested
        )?;
        writeln!(f, "ones fraction: {:.6}", self.ones_fraction)?;
        writeln!(f, "shannon entropy: {:.6} bits/byte", self.shannon_bits_per_byte)?;
        writeln!(
            f,
            "min-entropy (SP 800-90B MCV): {:.4} bits/byte, {:.4} bits/bit",
            self.min_entropy_per_byte, self.min_entropy_per_bit
        )?;
        for t in &self.tests {
            let ps: Vec<String> = t.p_values.iter().map(|p| format!("{p:.6}")).collect();
            writeln!(
                f,
                "{:<28} {:<6} p = {}",
                t.name,
                if t.passed { "pass" } else { "FAIL" },
                ps.join(", ")
            )?;
        }
        for s in &self.skipped {
            writeln!(f, "{s:<28} skipped (input too short)")?;
        }
        write!(f, "result: {} (alpha = {})", if self.passed { "PASS" } else { "FAIL" }, self.alpha)
    }
}

/// Runs the byte statistics and the SP 800-22 tests above on `bytes`.
pub fn assess(bytes: &[u8]) -> AssessReport {
    let mut hist = [0u64; 256];
    let mut ones = 0u64;
    for &b in bytes {
        hist[b as usize] += 1;
        ones += u64::from(b.count_ones());
    }
    let nbytes = bytes.len() as u64;
    let nbits = nbytes * 8;
    let shannon = if nbytes == 0 {
        0.0
    } else {
        -hist
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / nbytes as f64;
                p * p.log2()
            })
            .sum::<f64>()
    };
    let test_bytes = &bytes[..bytes.len().min(MAX_TEST_BITS / 8)];
    let bits = unpack_msb(test_bytes);
    let n = bits.len();
    let mut tests = Vec::new();
    let mut skipped = Vec::new();
    let mut add = |name: &str, ps: Vec<f64>| {
        let passed = ps.iter().all(|&p| p >= ALPHA);
        tests.push(TestResult { name: name.to_owned(), p_values: ps, passed });
    };
    let log2n = if n > 0 { n.ilog2() as usize } else { 0 };
    if n >= 100 {
        add("frequency", vec![frequency(&bits)]);
        // §2.2.7: M ≥ 20, M > 0.01 n, N < 100.
        let m = (n / 100 + 1).max(20);
        add(&format!("block frequency (M={m})"), vec![block_frequency(&bits, m)]);
        add("runs", vec![runs(&bits)]);
        add(
            "cumulative sums (fwd, rev)",
            vec![cumulative_sums(&bits, true), cumulative_sums(&bits, false)],
        );
    } else {
        skipped
            .extend(["frequency", "block frequency", "runs", "cumulative sums"].map(String::from));
    }
    match longest_run(&bits) {
        Some(p) => add("longest run of ones", vec![p]),
        None => skipped.push("longest run of ones".into()),
    }
    // §2.11.7: m < ⌊log2 n⌋ − 2; §2.12.7: m < ⌊log2 n⌋ − 5.
    if log2n >= 6 {
        let m = (log2n - 3).min(16);
        let (p1, p2) = serial(&bits, m);
        add(&format!("serial (m={m})"), vec![p1, p2]);
    } else {
        skipped.push("serial".into());
    }
    if log2n >= 8 {
        let m = (log2n - 6).min(10);
        add(&format!("approximate entropy (m={m})"), vec![approximate_entropy(&bits, m)]);
    } else {
        skipped.push("approximate entropy".into());
    }
    let bit_counts = [nbits - ones, ones];
    let passed = skipped.is_empty() && tests.iter().all(|t| t.passed);
    AssessReport {
        bytes: bytes.len(),
        bits_tested: n,
        shannon_bits_per_byte: shannon,
        min_entropy_per_byte: mcv_min_entropy(&hist, nbytes),
        min_entropy_per_bit: mcv_min_entropy(&bit_counts, nbits),
        ones_fraction: if nbits == 0 { 0.0 } else { ones as f64 / nbits as f64 },
        alpha: ALPHA,
        tests,
        skipped,
        passed,
    }
}
