//! SP 800-90B health tests on raw noise-source samples: the start-up test (§4.3 items 7–8) and the
//! two continuous tests, the Repetition Count Test (§4.4.1) and the Adaptive Proportion Test
//! (§4.4.2).
//!
//! Samples are either bytes (8-bit samples) or single bits. In bit mode the samples of a byte are
//! taken least-significant bit first (bit 0 of byte 0 is sample 0), the same bit order IDQ's
//! extractor and our extractors use, so a "run" in the RCT is a run in that order.
//!
//! Speed: the tests see every raw byte, so they work on 64-sample blocks. The RCT turns a block into
//! a 64-bit "equal to the previous sample" mask and finds runs with shifts and bit counts (no per-
//! sample branch); the APT counts occurrences of the window's first value with a branch-free byte
//! compare that the compiler vectorises (byte mode) or with `count_ones` (bit mode). The exact
//! sample at which a test fires is found only on the (rare) slow path.

use std::fmt;

use super::kernels;

/// Width of one raw sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleWidth {
    /// Each bit is a sample (binary source); taken LSB first within each byte.
    Bit,
    /// Each byte is a sample.
    Byte,
}

impl SampleWidth {
    /// Bits per sample.
    pub fn bits(self) -> u32 {
        match self {
            SampleWidth::Bit => 1,
            SampleWidth::Byte => 8,
        }
    }

    /// APT window W: SP 800-90B §4.4.2 fixes 1024 for non-binary and 512 for binary samples.
    pub fn apt_window(self) -> u32 {
        match self {
            SampleWidth::Bit => 512,
            SampleWidth::Byte => 1024,
        }
    }
}

impl fmt::Display for SampleWidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SampleWidth::Bit => "bit",
            SampleWidth::Byte => "byte",
        })
    }
}

/// Minimum number of samples that must pass both continuous tests after every start or reset
/// before anything is published (SP 800-90B §4.3 item 8: "at least 1024 consecutive samples").
pub const STARTUP_MIN_SAMPLES: u64 = 1024;

/// RCT cutoff, SP 800-90B §4.4.1: C = 1 + ⌈−log2(α) / H⌉. An alarm is raised when C identical
/// samples in a row are seen.
pub fn rct_cutoff(min_entropy: f64, alpha_log2: u32) -> u32 {
    let q = f64::from(alpha_log2) / min_entropy;
    // The tiny slack keeps an exact quotient (30 / 0.1 = 300.000…04 in floating point) from being
    // rounded up past its true ceiling.
    let c = 1.0 + (q - 1e-9).ceil();
    if c.is_finite() && c < f64::from(u32::MAX) {
        (c as u32).max(2)
    } else {
        u32::MAX
    }
}

/// ln(k!) for k = 0..=n, by summing logarithms (relative error ~1e-15 per term, so the
/// accumulated error for n ≤ 1024 is far below anything that could move a cutoff).
fn ln_factorials(n: u32) -> Vec<f64> {
    let mut v = Vec::with_capacity(n as usize + 1);
    let mut acc = 0.0f64;
    v.push(0.0);
    for i in 1..=n {
        acc += f64::from(i).ln();
        v.push(acc);
    }
    v
}

/// ln(e^a + e^b) without overflow or loss of the smaller term.
fn ln_add_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// ln P[X ≥ c] for X ~ Binomial(n, p), for every c in 0..=n+1 (index c), computed in log space
/// from the top of the distribution down so that tiny tails keep full relative precision.
pub fn binomial_upper_tails_ln(n: u32, p: f64) -> Vec<f64> {
    let lf = ln_factorials(n);
    let (lp, lq) = (p.ln(), (-p).ln_1p());
    let mut tails = vec![f64::NEG_INFINITY; n as usize + 2];
    let mut acc = f64::NEG_INFINITY;
    for k in (0..=n).rev() {
        let (ku, nk) = (k as usize, (n - k) as usize);
        let ln_choose = lf[n as usize] - lf[ku] - lf[nk];
        // 0 · ln 0 is 0 here (p = 1 or p = 0 edge cases).
        let a = if k == 0 { 0.0 } else { f64::from(k) * lp };
        let b = if k == n { 0.0 } else { f64::from(n - k) * lq };
        acc = ln_add_exp(acc, ln_choose + a + b);
        tails[ku] = acc;
    }
    tails
}

/// APT cutoff, SP 800-90B §4.4.2: the smallest c with P[Binomial(W, 2^−H) ≥ c] ≤ α
/// (the standard's C = 1 + CRITBINOM(W, 2^−H, 1 − α)). Computed exactly in log space, not from a
/// table. Returns W + 1 when even c = W is too likely (the test could then never fire; the caller
/// rejects such a configuration).
pub fn apt_cutoff(window: u32, min_entropy: f64, alpha_log2: u32) -> u32 {
    let p = (-min_entropy).exp2();
    let ln_alpha = -f64::from(alpha_log2) * std::f64::consts::LN_2;
    let tails = binomial_upper_tails_ln(window, p);
    // tails is non-increasing in c; find the first c whose tail is ≤ α.
    (0..=window + 1).find(|&c| tails[c as usize] <= ln_alpha).unwrap_or(window + 1)
}

/// For the 8 bytes of `w` (little-endian), bit j of the result is set iff byte j equals byte
/// j − 1, byte −1 being `prev`. Branch-free SWAR: XOR with the word shifted by one byte, find the
/// zero bytes exactly (no borrow between bytes), then gather the eight flags with one multiply.
#[inline(always)]
fn eq_prev_bytes(w: u64, prev: u8) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    let x = w ^ ((w << 8) | u64::from(prev));
    // High bit of each byte set iff that byte of x is non-zero.
    let nonzero = ((x & LOW7) + LOW7) | x;
    let zero = (!nonzero >> 7) & 0x0101_0101_0101_0101;
    // Byte j's flag lands on bit 56 + j, with no carries (each product term has its own bit).
    zero.wrapping_mul(0x0102_0408_1020_4080) >> 56
}

/// Which continuous test fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Test {
    /// Repetition Count Test, SP 800-90B §4.4.1.
    RepetitionCount,
    /// Adaptive Proportion Test, SP 800-90B §4.4.2.
    AdaptiveProportion,
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Test::RepetitionCount => "repetition count test",
            Test::AdaptiveProportion => "adaptive proportion test",
        })
    }
}

/// A health-test failure. Carries counts and positions only, never sample values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub test: Test,
    /// True if the failure happened during the start-up test.
    pub startup: bool,
    /// Index (0-based, counted from the last restart) of the sample that completed the failure.
    pub at_sample: u64,
    /// The count that reached the cutoff (run length for the RCT, proportion count for the APT).
    pub count: u32,
    pub cutoff: u32,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} failed at sample {} since restart (count {} reached cutoff {})",
            if self.startup { "start-up test: " } else { "" },
            self.test,
            self.at_sample,
            self.count,
            self.cutoff
        )
    }
}

/// Health-test parameters in force.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    pub width: SampleWidth,
    pub min_entropy: f64,
    pub alpha_log2: u32,
    pub rct_cutoff: u32,
    pub apt_window: u32,
    pub apt_cutoff: u32,
    /// Samples that form the start-up test after every restart (a whole number of APT windows,
    /// at least [`STARTUP_MIN_SAMPLES`]).
    pub startup_samples: u64,
}

impl Params {
    /// Derives the cutoffs. Errors name the offending value.
    pub fn new(width: SampleWidth, min_entropy: f64, alpha_log2: u32) -> Result<Params, String> {
        let max_h = f64::from(width.bits());
        if !(min_entropy.is_finite() && min_entropy > 0.0 && min_entropy <= max_h) {
            return Err(format!(
                "claimed min-entropy {min_entropy} bits per {width} sample is outside (0, {max_h}]"
            ));
        }
        if !(1..=64).contains(&alpha_log2) {
            return Err(format!("alpha = 2^-{alpha_log2} is outside 2^-1 ..= 2^-64"));
        }
        let w = width.apt_window();
        let rct = rct_cutoff(min_entropy, alpha_log2);
        let apt = apt_cutoff(w, min_entropy, alpha_log2);
        if apt > w {
            return Err(format!(
                "adaptive proportion cutoff {apt} exceeds the window {w}: H = {min_entropy} is too \
                 low for alpha = 2^-{alpha_log2}"
            ));
        }
        if rct == u32::MAX {
            return Err(format!("repetition count cutoff overflows for H = {min_entropy}"));
        }
        let startup_samples = STARTUP_MIN_SAMPLES.div_ceil(u64::from(w)) * u64::from(w);
        Ok(Params {
            width,
            min_entropy,
            alpha_log2,
            rct_cutoff: rct,
            apt_window: w,
            apt_cutoff: apt,
            startup_samples,
        })
    }

    /// Start-up test length in bytes (the start-up samples are whole bytes in both modes).
    pub fn startup_bytes(&self) -> u64 {
        self.startup_samples * u64::from(self.width.bits()) / 8
    }
}

/// The running start-up + continuous tests. Feed raw bytes with [`HealthTester::process`].
#[derive(Clone, Debug)]
pub struct HealthTester {
    p: Params,
    /// Samples seen since the last restart.
    samples: u64,
    /// RCT: number of consecutive "equal to previous" flags ending at the last sample
    /// (run length − 1).
    rct_eq_run: u64,
    /// RCT: the last sample (byte value, or bit in bit 0) and whether there is one.
    rct_prev: u8,
    rct_have_prev: bool,
    /// APT: the window's first sample, the count B, samples still to come in this window.
    apt_ref: u8,
    apt_count: u32,
    apt_left: u32,
    /// Sticky failure: once failed, nothing passes until restart().
    failed: Option<Failure>,
    cpu: kernels::Cpu,
}

impl HealthTester {
    pub fn new(p: Params) -> HealthTester {
        HealthTester {
            p,
            samples: 0,
            rct_eq_run: 0,
            rct_prev: 0,
            rct_have_prev: false,
            apt_ref: 0,
            apt_count: 0,
            apt_left: 0,
            failed: None,
            cpu: kernels::Cpu::detect(),
        }
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    /// Forgets all state: the start-up test must pass again (SP 800-90B §4.3 item 8).
    pub fn restart(&mut self) {
        *self = HealthTester::new(self.p);
    }

    /// Samples seen since the last restart.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// True once the start-up samples have all passed.
    pub fn startup_done(&self) -> bool {
        self.failed.is_none() && self.samples >= self.p.startup_samples
    }

    /// Runs both tests over `raw`. On failure the tester stays failed until [`restart`].
    ///
    /// [`restart`]: HealthTester::restart
    pub fn process(&mut self, raw: &[u8]) -> Result<(), Failure> {
        if let Some(f) = &self.failed {
            return Err(f.clone());
        }
        let (rct, apt) = kernels::run(self.cpu, || match self.p.width {
            SampleWidth::Byte => (self.rct_bytes(raw), self.apt_bytes(raw)),
            SampleWidth::Bit => (self.rct_bits(raw), self.apt_bits(raw)),
        });
        // Both tests scan the whole batch; report whichever fired first in sample order.
        let r = match (rct, apt) {
            (Err(a), Err(b)) => Err(if b.1 < a.1 { b } else { a }),
            (Err(a), Ok(())) | (Ok(()), Err(a)) => Err(a),
            (Ok(()), Ok(())) => Ok(()),
        };
        let n = raw.len() as u64 * u64::from(8 / self.p.width.bits());
        match r {
            Ok(()) => {
                self.samples += n;
                Ok(())
            }
            Err((test, idx, count)) => {
                let at_sample = self.samples + idx;
                let f = Failure {
                    test,
                    startup: at_sample < self.p.startup_samples,
                    at_sample,
                    count,
                    cutoff: match test {
                        Test::RepetitionCount => self.p.rct_cutoff,
                        Test::AdaptiveProportion => self.p.apt_cutoff,
                    },
                };
                self.failed = Some(f.clone());
                Err(f)
            }
        }
    }

    /// RCT over one block of `nb ≤ 64` samples whose equal-to-previous flags are `m` (bit i set
    /// iff sample i equals sample i − 1; bits ≥ nb clear). Returns the index within the block of
    /// the sample that completes a run of C identical samples.
    #[inline(always)]
    fn rct_block(&mut self, m: u64, nb: u32) -> Result<(), u64> {
        let c1 = u64::from(self.p.rct_cutoff - 1); // flags in a row that make C equal samples
        if m == 0 {
            self.rct_eq_run = 0;
            return Ok(());
        }
        let full = if nb == 64 { u64::MAX } else { (1u64 << nb) - 1 };
        // The run carried in from earlier blocks continues through the block's leading ones.
        let lead = u64::from(m.trailing_ones());
        let mut first: Option<u64> = None;
        if self.rct_eq_run + lead >= c1 {
            first = Some(c1 - self.rct_eq_run - 1);
        }
        // Runs wholly inside the block: r bit i set iff flags i..i+c1 are all set (doubling).
        if c1 <= 64 {
            let mut r = m;
            let mut len = 1u64;
            while len < c1 {
                let step = len.min(c1 - len);
                r &= r >> step;
                len += step;
            }
            if r != 0 {
                let at = u64::from(r.trailing_zeros()) + c1 - 1;
                first = Some(first.map_or(at, |f| f.min(at)));
            }
        }
        if let Some(at) = first {
            return Err(at);
        }
        self.rct_eq_run = if m == full {
            self.rct_eq_run + u64::from(nb)
        } else {
            u64::from((m << (64 - nb)).leading_ones())
        };
        Ok(())
    }

    #[inline(always)]
    fn rct_bytes(&mut self, raw: &[u8]) -> Result<(), (Test, u64, u32)> {
        let c = self.p.rct_cutoff;
        let mut base = 0u64;
        for chunk in raw.chunks(64) {
            let mut m = 0u64;
            let mut prev = self.rct_prev;
            // Eight bytes at a time (SWAR): compare each byte with the one before it.
            let words = chunk.chunks_exact(8);
            let tail = words.remainder();
            for (k, w8) in words.enumerate() {
                let w = u64::from_le_bytes(w8.try_into().expect("8 bytes"));
                m |= eq_prev_bytes(w, prev) << (8 * k);
                prev = (w >> 56) as u8;
            }
            let done = chunk.len() - tail.len();
            for (j, &b) in tail.iter().enumerate() {
                m |= u64::from(b == prev) << (done + j);
                prev = b;
            }
            if !self.rct_have_prev {
                m &= !1;
            }
            self.rct_block(m, chunk.len() as u32)
                .map_err(|at| (Test::RepetitionCount, base + at, c))?;
            self.rct_prev = prev;
            self.rct_have_prev = true;
            base += chunk.len() as u64;
        }
        Ok(())
    }

    #[inline(always)]
    fn rct_bits(&mut self, raw: &[u8]) -> Result<(), (Test, u64, u32)> {
        let c = self.p.rct_cutoff;
        let mut base = 0u64;
        for chunk in raw.chunks(8) {
            let nb = chunk.len() as u32 * 8;
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            let w = u64::from_le_bytes(b);
            let full = if nb == 64 { u64::MAX } else { (1u64 << nb) - 1 };
            // Bit i of m: sample i equals sample i − 1 (sample −1 is the previous block's last).
            let mut m = !(w ^ ((w << 1) | u64::from(self.rct_prev & 1))) & full;
            if !self.rct_have_prev {
                m &= !1;
            }
            self.rct_block(m, nb).map_err(|at| (Test::RepetitionCount, base + at, c))?;
            self.rct_prev = ((w >> (nb - 1)) & 1) as u8;
            self.rct_have_prev = true;
            base += u64::from(nb);
        }
        Ok(())
    }

    #[inline(always)]
    fn apt_bytes(&mut self, raw: &[u8]) -> Result<(), (Test, u64, u32)> {
        let cutoff = self.p.apt_cutoff;
        let mut i = 0usize;
        while i < raw.len() {
            if self.apt_left == 0 {
                // §4.4.2: the first sample of a window is the reference, counted once.
                self.apt_ref = raw[i];
                self.apt_count = 1;
                self.apt_left = self.p.apt_window - 1;
                i += 1;
                continue;
            }
            let n = (self.apt_left as usize).min(raw.len() - i);
            let seg = &raw[i..i + n];
            let r = self.apt_ref;
            // u8 lane counters never overflow within 255 bytes; this form vectorises.
            let cnt: u32 = seg
                .chunks(255)
                .map(|c| u32::from(c.iter().fold(0u8, |a, &b| a + u8::from(b == r))))
                .sum();
            if self.apt_count + cnt >= cutoff {
                let need = (cutoff - self.apt_count) as usize;
                let j = seg
                    .iter()
                    .enumerate()
                    .filter(|&(_, &b)| b == r)
                    .nth(need - 1)
                    .map_or(n - 1, |(j, _)| j);
                return Err((Test::AdaptiveProportion, (i + j) as u64, cutoff));
            }
            self.apt_count += cnt;
            self.apt_left -= n as u32;
            i += n;
        }
        Ok(())
    }

    #[inline(always)]
    fn apt_bits(&mut self, raw: &[u8]) -> Result<(), (Test, u64, u32)> {
        let cutoff = self.p.apt_cutoff;
        // Windows are 512 samples = 64 bytes and start on byte boundaries (restarts do too).
        let mut i = 0usize;
        while i < raw.len() {
            if self.apt_left == 0 {
                self.apt_ref = raw[i] & 1;
                self.apt_count = 1;
                self.apt_left = self.p.apt_window - 1;
                // The rest of the first byte (samples 1..8).
                let rest = u32::from(raw[i] >> 1);
                let ones = rest.count_ones();
                let add = if self.apt_ref == 1 { ones } else { 7 - ones };
                if self.apt_count + add >= cutoff {
                    return Err(self.apt_bits_locate(raw, i, 1));
                }
                self.apt_count += add;
                self.apt_left -= 7;
                i += 1;
                continue;
            }
            let nbytes = (self.apt_left as usize / 8).min(raw.len() - i);
            let seg = &raw[i..i + nbytes];
            let words = seg.chunks_exact(8);
            let rest: u32 = words.remainder().iter().map(|b| b.count_ones()).sum();
            let ones = rest
                + words
                    .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")).count_ones())
                    .sum::<u32>();
            let add = if self.apt_ref == 1 { ones } else { nbytes as u32 * 8 - ones };
            if self.apt_count + add >= cutoff {
                return Err(self.apt_bits_locate(raw, i, 0));
            }
            self.apt_count += add;
            self.apt_left -= nbytes as u32 * 8;
            i += nbytes;
        }
        Ok(())
    }

    /// Slow path: walks the current window bit by bit from bit `skip` of byte `i` to find the
    /// sample at which the count reaches the cutoff (the caller knows it does).
    fn apt_bits_locate(&self, raw: &[u8], i: usize, skip: usize) -> (Test, u64, u32) {
        let cutoff = self.p.apt_cutoff;
        let mut count = self.apt_count;
        let mut idx = (i * 8 + skip) as u64;
        for bit in skip..(raw.len() - i) * 8 {
            idx = (i * 8 + bit) as u64;
            if (raw[i + bit / 8] >> (bit % 8)) & 1 == self.apt_ref {
                count += 1;
                if count >= cutoff {
                    break;
                }
            }
        }
        (Test::AdaptiveProportion, idx, cutoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The baseline and the fast (AVX2/POPCNT/BMI1/LZCNT) builds of the tests agree, sample for
    /// sample, on inputs that fire at many places (the detected build is the fast one wherever
    /// the CPU has it; elsewhere this compares the baseline with itself).
    #[test]
    fn baseline_and_fast_builds_agree() {
        let mut x = 0x0123_4567_89AB_CDEFu64;
        let mut fired = [0u32; 2];
        for width in [SampleWidth::Byte, SampleWidth::Bit] {
            let h = if width == SampleWidth::Byte { 2.0 } else { 0.5 };
            let p = Params::new(width, h, 20).unwrap();
            for round in 0..40 {
                let raw: Vec<u8> = (0..5000)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Low-entropy rounds, so that both tests fire: two byte values, or
                        // bits with P(1) = 1/8.
                        match (round % 2, width) {
                            (0, SampleWidth::Byte) => (x & 1) as u8,
                            (0, SampleWidth::Bit) => (x & (x >> 8) & (x >> 16)) as u8,
                            _ => x as u8,
                        }
                    })
                    .collect();
                let mut fast = HealthTester::new(p);
                let mut base =
                    HealthTester { cpu: kernels::Cpu::baseline(), ..HealthTester::new(p) };
                for chunk in raw.chunks(333) {
                    let (a, b) = (fast.process(chunk), base.process(chunk));
                    assert_eq!(a, b, "{width} round {round}");
                    if let Err(f) = a {
                        fired[usize::from(f.test == Test::AdaptiveProportion)] += 1;
                    }
                }
            }
        }
        assert!(fired[0] > 0 && fired[1] > 0, "both tests must have fired: {fired:?}");
    }

    #[test]
    fn eq_prev_bytes_matches_bytewise_compare() {
        let mut x = 0x1234_5678_9ABC_DEF0u64;
        for _ in 0..20_000 {
            // xorshift, with bytes forced equal now and then so every flag pattern shows up
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b = x.to_le_bytes();
            for j in 1..8 {
                if (x >> (j * 3)) & 3 == 0 {
                    b[j] = b[j - 1];
                }
            }
            let prev = if x & 0x100 == 0 { b[0] } else { (x >> 40) as u8 };
            let mut want = u64::from(b[0] == prev);
            for j in 1..8 {
                want |= u64::from(b[j] == b[j - 1]) << j;
            }
            assert_eq!(super::eq_prev_bytes(u64::from_le_bytes(b), prev), want, "{b:?} {prev}");
        }
    }
}
