//! §5.1 permutation tests: 19 statistics (the 11 tests, periodicity and covariance at lags 1, 2,
//! 8, 16 and 32) of the data against up to 10,000 random shuffles of it. A statistic passes once
//! at least 6 shuffles ranked at or above it and at least 6 at or below; shuffling stops when every
//! statistic has passed. Follows the reference tool's `permutation_tests.h`: binary data is
//! packed 8 bits to a value for the directional, collision, periodicity and covariance statistics;
//! the excursion, covariance (non-binary) and compression statistics use the samples' raw values.
//!
//! The shuffles come from xoshiro256** with a fixed seed ([`SEED`]), Fisher–Yates with Lemire's
//! unbiased range reduction, as in the reference (which seeds from /dev/urandom): results are
//! reproducible, and equal to the reference's in distribution.

use std::io::Write;

/// Shuffles at most (§5.1).
pub const PERMUTATIONS: usize = 10_000;

/// The xoshiro256** state the shuffles start from.
pub const SEED: [u64; 4] =
    [0x9e37_79b9_7f4a_7c15, 0xbf58_476d_1ce4_e5b9, 0x94d0_49bb_1331_11eb, 0x2545_f491_4f6c_dd1d];

/// Names of the statistics, in the reference tool's order.
pub const NAMES: [&str; 19] = [
    "excursion",
    "num_directional_runs",
    "len_directional_runs",
    "num_increases_decreases",
    "num_runs_median",
    "len_runs_median",
    "avg_collision",
    "max_collision",
    "periodicity_1",
    "periodicity_2",
    "periodicity_8",
    "periodicity_16",
    "periodicity_32",
    "covariance_1",
    "covariance_2",
    "covariance_8",
    "covariance_16",
    "covariance_32",
    "compression",
];

const N: usize = NAMES.len();
const LAGS: [usize; 5] = [1, 2, 8, 16, 32];

pub(crate) struct Xoshiro([u64; 4]);

impl Xoshiro {
    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let result = (s[1].wrapping_mul(5)).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, s] (Lemire's method, as `randomRange64`).
    fn range(&mut self, s: u64) -> u64 {
        let x = self.next();
        if s == u64::MAX {
            return x;
        }
        let s = s + 1;
        let mut m = u128::from(x) * u128::from(s);
        let mut l = m as u64;
        if l < s {
            let t = s.wrapping_neg() % s;
            while l < t {
                m = u128::from(self.next()) * u128::from(s);
                l = m as u64;
            }
        }
        (m >> 64) as u64
    }
}

/// What the statistics need besides the data.
pub(crate) struct Context {
    pub binary: bool,
    pub k: usize,
    pub raw_mean: f64,
    pub median: f64,
}

/// Sums of 8 consecutive bits (the last group may be short): conversion I.
fn sums_of_8(d: &[u8]) -> Vec<u8> {
    d.chunks(8).map(|c| c.iter().sum()).collect()
}

/// 8 consecutive bits as one byte, first bit most significant: conversion II.
fn packed_8(d: &[u8]) -> Vec<u8> {
    d.chunks(8).map(|c| c.iter().enumerate().fold(0u8, |a, (i, &b)| a + (b << (7 - i)))).collect()
}

fn runs(signs: &[bool]) -> (f64, f64) {
    if signs.is_empty() {
        // The reference counts no run but a longest run of 1.
        return (0.0, 1.0);
    }
    let (mut count, mut longest, mut run) = (1u64, 0u64, 1u64);
    for w in signs.windows(2) {
        if w[0] == w[1] {
            run += 1;
        } else {
            count += 1;
            longest = longest.max(run);
            run = 1;
        }
    }
    (count as f64, longest.max(run) as f64)
}

fn collisions(d: &[u8], k: usize) -> Vec<u64> {
    let n = d.len();
    let mut out = Vec::new();
    let (mut i, mut j) = (0usize, 0usize);
    let mut seen = vec![false; k];
    while i + j < n {
        seen.iter_mut().for_each(|s| *s = false);
        while i + j < n {
            let s = d[i + j] as usize;
            if seen[s] {
                out.push((j + 1) as u64);
                i += j;
                j = 0;
                break;
            }
            seen[s] = true;
            j += 1;
        }
        i += 1;
    }
    out
}

fn compressed_len(raw: &[u8]) -> f64 {
    let mut text = Vec::with_capacity(raw.len() * 4);
    for (i, &s) in raw.iter().enumerate() {
        if i > 0 {
            text.push(b' ');
        }
        write!(text, "{s}").ok();
    }
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(5));
    if enc.write_all(&text).is_err() {
        return 0.0;
    }
    enc.finish().map_or(0.0, |v| v.len() as f64)
}

/// The statistics still `wanted` of symbols `d` and raw values `raw`.
pub(crate) fn statistics(
    d: &[u8],
    raw: &[u8],
    c: &Context,
    wanted: &[bool; N],
    out: &mut [f64; N],
) {
    if wanted[0] {
        let (mut sum, mut max) = (0.0f64, 0.0f64);
        for (i, &x) in raw.iter().enumerate() {
            sum += f64::from(x);
            max = max.max((sum - (i + 1) as f64 * c.raw_mean).abs());
        }
        out[0] = max;
    }
    let conv1 =
        (c.binary && wanted[1..4].iter().chain(&wanted[8..18]).any(|&w| w)).then(|| sums_of_8(d));
    let view: &[u8] = conv1.as_deref().unwrap_or(d);
    if wanted[1] || wanted[2] || wanted[3] {
        let up: Vec<bool> = view.windows(2).map(|w| w[0] <= w[1]).collect();
        let (count, longest) = runs(&up);
        out[1] = count;
        out[2] = longest;
        let pos = up.iter().filter(|&&u| u).count();
        out[3] = pos.max(up.len() - pos) as f64;
    }
    if wanted[4] || wanted[5] {
        let median = if c.binary { 0.5 } else { c.median };
        let above: Vec<bool> = d.iter().map(|&x| f64::from(x) >= median).collect();
        let (count, longest) = runs(&above);
        out[4] = count;
        out[5] = longest;
    }
    if wanted[6] || wanted[7] {
        let col = if c.binary { collisions(&packed_8(d), 256) } else { collisions(d, c.k) };
        out[6] = col.iter().sum::<u64>() as u32 as f64 / col.len() as f64;
        out[7] = col.iter().copied().max().unwrap_or(0) as f64;
    }
    for (j, &p) in LAGS.iter().enumerate() {
        if wanted[8 + j] {
            out[8 + j] =
                view.iter().zip(&view[p.min(view.len())..]).filter(|(a, b)| a == b).count() as f64;
        }
        if wanted[13 + j] {
            let v: &[u8] = if c.binary { view } else { raw };
            out[13 + j] = v
                .iter()
                .zip(&v[p.min(v.len())..])
                .map(|(&a, &b)| u64::from(a) * u64::from(b))
                .sum::<u64>() as f64;
        }
    }
    if wanted[18] {
        out[18] = compressed_len(raw);
    }
}

/// Counts per statistic: shuffles ranking above, equal to and below the data.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Ranks {
    pub name: &'static str,
    pub statistic: f64,
    pub above: u32,
    pub equal: u32,
    pub below: u32,
}

impl Ranks {
    /// At least 6 shuffles at or above the data and at least 6 at or below (§5.1).
    pub fn passed(&self) -> bool {
        self.above + self.equal > 5 && self.equal + self.below > 5
    }
}

/// Runs the permutation tests; returns the ranks and how many shuffles were made.
pub(crate) fn permutation_tests(symbols: &[u8], raw: &[u8], c: &Context) -> (Vec<Ranks>, usize) {
    let mut t = [0.0f64; N];
    statistics(symbols, raw, c, &[true; N], &mut t);
    let mut counts = [[0u32; 3]; N];
    let mut wanted = [true; N];
    let (mut d, mut r) = (symbols.to_vec(), raw.to_vec());
    let mut rng = Xoshiro(SEED);
    let mut tp = [0.0f64; N];
    let mut done = 0;
    while done < PERMUTATIONS && wanted.iter().any(|&w| w) {
        for i in (1..d.len()).rev() {
            let j = rng.range(i as u64) as usize;
            d.swap(i, j);
            r.swap(i, j);
        }
        statistics(&d, &r, c, &wanted, &mut tp);
        for s in 0..N {
            if wanted[s] {
                let slot = if tp[s] > t[s] {
                    0
                } else if tp[s] == t[s] {
                    1
                } else {
                    2
                };
                counts[s][slot] += 1;
                if counts[s][0] + counts[s][1] > 5 && counts[s][1] + counts[s][2] > 5 {
                    wanted[s] = false;
                }
            }
        }
        done += 1;
    }
    let ranks = (0..N)
        .map(|s| Ranks {
            name: NAMES[s],
            statistic: t[s],
            above: counts[s][0],
            equal: counts[s][1],
            below: counts[s][2],
        })
        .collect();
    (ranks, done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_matches_the_reference_sequence() {
        // xoshiro256** from state {1, 2, 3, 4}: first outputs as in the authors' C code.
        let mut x = Xoshiro([1, 2, 3, 4]);
        assert_eq!(x.next(), 11520);
        assert_eq!(x.next(), 0);
        assert_eq!(x.next(), 1_509_978_240);
        assert!((0..1000).all(|_| x.range(6) <= 6));
    }

    #[test]
    fn collisions_restart_after_each_repeat() {
        // 0 1 0 | 2 2 | 1 0 1 → collision lengths 3, 2, 3.
        assert_eq!(collisions(&[0, 1, 0, 2, 2, 1, 0, 1], 3), vec![3, 2, 3]);
    }
}
