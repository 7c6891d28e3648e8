//! The IID track (§5): the permutation tests (§5.1), the chi-square tests and the LRS test
//! (§5.2), and the entropy estimate for IID data (the most common value estimate, §6.3.1, on the
//! literal data and on the bitstring), as the reference tool's `ea_iid` runs them.

mod cephes;
mod chi_square;
mod permutation;

pub use chi_square::{ChiSquare, LrsTest, P_CUTOFF};
pub use permutation::{Ranks, NAMES, PERMUTATIONS, SEED};

use crate::data::Dataset;
use crate::estimators::{longest_repeat, most_common_value};
use crate::Result;
use serde::Serialize;

/// The IID track's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IidReport {
    pub chi_square_independence: ChiSquare,
    pub chi_square_goodness_of_fit: ChiSquare,
    pub lrs: LrsTest,
    pub permutation: Vec<Ranks>,
    /// Shuffles made (at most [`PERMUTATIONS`]; fewer once every statistic has passed).
    pub permutations: usize,
    /// Every test passed: the data may be treated as IID.
    pub iid: bool,
    /// The IID estimates: the most common value estimate of the literal data, of the bitstring (per
    /// bit; None with two symbols), and min(H_original, bits_per_symbol × H_bitstring).
    pub h_original: f64,
    pub h_bitstring: Option<f64>,
    pub h_assessed: f64,
}

/// Mean of the raw values, and median of the (renumbered) symbols; 0.5 for binary data (§5.1).
fn mean_and_median(d: &Dataset) -> (f64, f64) {
    let mean = d.raw.iter().map(|&x| u64::from(x)).sum::<u64>() as f64 / d.raw.len() as f64;
    if d.alphabet_size == 2 {
        return (mean, 0.5);
    }
    let mut counts = [0usize; 256];
    for &s in &d.symbols {
        counts[s as usize] += 1;
    }
    // The k-th smallest symbol (0-based).
    let nth = |k: usize| {
        let mut acc = 0;
        for (v, &c) in counts.iter().enumerate() {
            acc += c;
            if acc > k {
                return v as f64;
            }
        }
        255.0
    };
    let n = d.symbols.len();
    let half = n / 2;
    let median = if n % 2 == 1 { nth(half) } else { (nth(half) + nth(half - 1)) / 2.0 };
    (mean, median)
}

fn context(d: &Dataset) -> permutation::Context {
    let (raw_mean, median) = mean_and_median(d);
    permutation::Context { binary: d.alphabet_size == 2, k: d.alphabet_size, raw_mean, median }
}

/// The 19 permutation-test statistics of the data itself, in the order of [`NAMES`].
pub fn statistics(d: &Dataset) -> [f64; 19] {
    let mut out = [0.0; 19];
    permutation::statistics(&d.symbols, &d.raw, &context(d), &[true; 19], &mut out);
    out
}

/// The chi-square tests (independence, goodness of fit) and the LRS test, without the shuffles.
pub fn chi_square_and_lrs(d: &Dataset) -> Result<(ChiSquare, ChiSquare, LrsTest)> {
    let k = d.alphabet_size;
    Ok((
        chi_square::independence(&d.symbols, k),
        chi_square::goodness_of_fit(&d.symbols, k),
        chi_square::lrs_test(&d.symbols, k, longest_repeat(&d.symbols)?),
    ))
}

/// Runs the IID track.
pub fn iid_tests(d: &Dataset) -> Result<IidReport> {
    let k = d.alphabet_size;
    let word = f64::from(d.bits_per_symbol);
    let h_original = most_common_value(&d.symbols, k);
    let h_bitstring = d.has_bitstring().then(|| most_common_value(&d.bits, 2));
    let h_assessed = h_original.min(word).min(h_bitstring.map_or(word, |h| h * word));
    let (independence, fit, lrs) = chi_square_and_lrs(d)?;
    let (ranks, permutations) = permutation::permutation_tests(&d.symbols, &d.raw, &context(d));
    let iid =
        independence.passed() && fit.passed() && lrs.passed && ranks.iter().all(Ranks::passed);
    Ok(IidReport {
        chi_square_independence: independence,
        chi_square_goodness_of_fit: fit,
        lrs,
        permutation: ranks,
        permutations,
        iid,
        h_original,
        h_bitstring,
        h_assessed,
    })
}

impl std::fmt::Display for IidReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pf = |p: bool| if p { "passed" } else { "FAILED" };
        writeln!(f, "SP 800-90B IID track")?;
        for (name, c) in [
            ("independence", &self.chi_square_independence),
            ("goodness of fit", &self.chi_square_goodness_of_fit),
        ] {
            writeln!(
                f,
                "chi-square {name:<16} T = {:.3}, df = {}, p = {:.6}: {}",
                c.statistic,
                c.df,
                c.p_value,
                pf(c.passed())
            )?;
        }
        writeln!(
            f,
            "longest repeated substring: {} (P_col = {:.6}): {}",
            self.lrs.w,
            self.lrs.p_col,
            pf(self.lrs.passed)
        )?;
        writeln!(
            f,
            "permutation tests ({} shuffles; xoshiro256** seed {:#x}, {:#x}, {:#x}, {:#x}):",
            self.permutations, SEED[0], SEED[1], SEED[2], SEED[3]
        )?;
        writeln!(
            f,
            "  {:<24} {:>16} {:>6} {:>6} {:>6}",
            "statistic", "value", "above", "equal", "below"
        )?;
        for r in &self.permutation {
            writeln!(
                f,
                "  {:<24} {:>16.4} {:>6} {:>6} {:>6}  {}",
                r.name,
                r.statistic,
                r.above,
                r.equal,
                r.below,
                pf(r.passed())
            )?;
        }
        writeln!(f, "IID: {}", if self.iid { "yes" } else { "NO (use the non-IID estimates)" })?;
        writeln!(
            f,
            "IID H_original = {:.6}, H_bitstring = {}, assessed = {:.6}",
            self.h_original,
            self.h_bitstring.map_or("-".to_owned(), |h| format!("{h:.6}")),
            self.h_assessed
        )
    }
}
