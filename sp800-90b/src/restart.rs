//! Restart tests (§3.1.4): a 1000 × 1000 matrix whose row i holds the first 1000 samples after
//! restart i. The sanity check (§3.1.4.3) bounds the most frequent symbol's count in every row and
//! column; the validation test (§3.1.4.2) assesses the rows and the columns, each as one data set
//! of 1,000,000 samples, and passes when min(H_r, H_c) ≥ H_I / 2. Follows the reference tool's
//! `ea_restart` (non-IID track: the estimators on the literal data only, no bitstring).
//!
//! The sanity check's cutoff is the (1 − α) quantile of the largest symbol count in 1000 samples
//! from the "inverted near-uniform" distribution with most likely probability p = 2^−H_I
//! (⌈1/p⌉ symbols, ⌊1/p⌋ of them with probability p). The reference estimates that quantile from
//! 5,000,000 simulated rows seeded from /dev/urandom; here it is computed exactly from the
//! multinomial distribution, which is what the simulation approximates.

use crate::data::Dataset;
use crate::estimators as est;
use crate::{Error, Result};
use serde::Serialize;

pub const ROWS: usize = 1000;
pub const COLS: usize = 1000;

/// The outcome of the restart tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestartReport {
    /// The claimed min-entropy per sample, H_I.
    pub h_i: f64,
    /// The sanity check's bound on the most frequent symbol's count in a row or column.
    pub cutoff: u32,
    /// The largest such count found (rows and columns).
    pub max_count: u32,
    pub sanity_passed: bool,
    /// Min-entropy of the rows and of the columns (None when the sanity check failed first).
    pub h_r: Option<f64>,
    pub h_c: Option<f64>,
    /// Sanity check passed and min(H_r, H_c) ≥ H_I / 2.
    pub passed: bool,
}

/// The largest count of one symbol in each row and each column.
fn max_count(m: &[u8]) -> u32 {
    let mut best = 0u32;
    for row in m.chunks_exact(COLS) {
        let mut c = [0u32; 256];
        for &s in row {
            c[s as usize] += 1;
        }
        best = best.max(c.iter().copied().max().unwrap_or(0));
    }
    for j in 0..COLS {
        let mut c = [0u32; 256];
        for i in 0..ROWS {
            c[m[i * COLS + j] as usize] += 1;
        }
        best = best.max(c.iter().copied().max().unwrap_or(0));
    }
    best
}

/// P(every count ≤ x) for `n` draws from `probs`: n! [t^n] Π_i Σ_{j≤x} (p_i t)^j / j!, computed
/// with a running scale to stay in range.
fn prob_all_at_most(x: usize, n: usize, probs: &[f64]) -> f64 {
    // log j! table
    let mut lfact = vec![0.0f64; n + 1];
    for j in 1..=n {
        lfact[j] = lfact[j - 1] + (j as f64).ln();
    }
    // poly[m]: the probability that the symbols so far take m of the draws, each at most x times
    // (the multinomial weights m!/Π j_i! · Π p_i^j_i, summed).
    let mut poly = vec![0.0f64; n + 1];
    poly[0] = 1.0;
    for &p in probs {
        let mut next = vec![0.0f64; n + 1];
        for (m, &c) in poly.iter().enumerate() {
            if c == 0.0 {
                continue;
            }
            // choose j more draws of this symbol: C(m + j, j) p^j
            for j in 0..=x.min(n - m) {
                let lc = lfact[m + j] - lfact[m] - lfact[j] + j as f64 * p.ln();
                next[m + j] += c * lc.exp();
            }
        }
        poly = next;
    }
    poly[n]
}

/// The sanity check's cutoff for claim `h_i` (counts up to it pass).
pub fn cutoff(h_i: f64, alpha: f64) -> u32 {
    let p = 2f64.powf(-h_i);
    let k = (1.0 / p).ceil() as usize;
    let full = (1.0 / p).floor() as usize;
    let mut probs = vec![p; full.min(k)];
    if k > full {
        probs.push(1.0 - p * full as f64);
    }
    let target = 1.0 - alpha;
    let lowest = ROWS.div_ceil(k);
    (lowest..=COLS).find(|&x| prob_all_at_most(x, COLS, &probs) >= target).unwrap_or(COLS) as u32
}

/// The non-IID min-entropy of one data set, literal estimators only.
fn literal_min_entropy(d: &Dataset) -> Result<f64> {
    let (s, k) = (&d.symbols, d.alphabet_size);
    let mut h = f64::from(d.bits_per_symbol);
    let mut take = |v: Option<f64>| {
        if let Some(v) = v {
            h = h.min(v);
        }
    };
    take(Some(est::most_common_value(s, k)));
    if k == 2 {
        take(Some(est::collision(s)));
        take(Some(est::markov(s)));
        take(est::compression(s));
    }
    let t = est::t_tuple_and_lrs(s)?;
    take(t.t_tuple);
    take(t.lrs);
    take(est::multi_mcw(s, k).map(|p| p.estimate(k)));
    take(est::lag(s, k).map(|p| p.estimate(k)));
    take(est::multi_mmc(s, k).map(|p| p.estimate(k)));
    take(est::lz78y(s, k).map(|p| p.estimate(k)));
    Ok(h)
}

/// Runs the restart tests on `matrix` (row-major, ROWS × COLS samples) with claim `h_i`.
pub fn restart_tests(
    matrix: &[u8],
    bits_per_symbol: Option<u32>,
    h_i: f64,
) -> Result<RestartReport> {
    if matrix.len() != ROWS * COLS {
        return Err(Error::TooFew {
            what: "the restart tests",
            have: matrix.len(),
            need: ROWS * COLS,
        });
    }
    let rows = Dataset::new(matrix, bits_per_symbol)?;
    if !(0.0..=f64::from(rows.bits_per_symbol)).contains(&h_i) {
        return Err(Error::Claim(h_i, rows.bits_per_symbol));
    }
    // §3.1.4.3: α = 1 − 0.99^(1/(r+c)), so all 2000 counts pass together with probability 0.99.
    let alpha = 1.0 - (0.99f64.ln() / (ROWS + COLS) as f64).exp();
    let cutoff = cutoff(h_i, alpha);
    let max = max_count(&rows.symbols);
    let mut r = RestartReport {
        h_i,
        cutoff,
        max_count: max,
        sanity_passed: max <= cutoff,
        h_r: None,
        h_c: None,
        passed: false,
    };
    if !r.sanity_passed {
        return Ok(r);
    }
    let mut cols = rows.clone();
    for j in 0..COLS {
        for i in 0..ROWS {
            cols.symbols[j * ROWS + i] = rows.symbols[i * COLS + j];
        }
    }
    let h_r = literal_min_entropy(&rows)?;
    let h_c = literal_min_entropy(&cols)?;
    r.h_r = Some(h_r);
    r.h_c = Some(h_c);
    r.passed = h_r.min(h_c) >= h_i / 2.0;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_of_a_fair_bit_is_the_binomial_quantile() {
        // One fair bit: the larger of two counts exceeds x when Bin(1000, 1/2) leaves
        // [1000 − x, x]; with α ≈ 5e-6 that is about 500 + 4.6 standard deviations (15.8).
        let alpha = 1.0 - (0.99f64.ln() / 2000.0).exp();
        let c = cutoff(1.0, alpha);
        assert!((570..=580).contains(&c), "{c}");
        assert!(prob_all_at_most(c as usize, 1000, &[0.5, 0.5]) >= 1.0 - alpha);
        assert!(prob_all_at_most(c as usize - 1, 1000, &[0.5, 0.5]) < 1.0 - alpha);
    }

    #[test]
    fn a_stuck_start_fails_the_sanity_check() {
        // Every restart begins with the same 100 bytes: each column of the first 100 is constant.
        let mut x = 99u32;
        let mut m: Vec<u8> = (0..ROWS * COLS)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        for i in 0..ROWS {
            for j in 0..100 {
                m[i * COLS + j] = j as u8;
            }
        }
        let r = restart_tests(&m, Some(8), 7.0).unwrap();
        assert!(!r.sanity_passed && !r.passed);
        assert_eq!(r.max_count, 1000);
    }
}
