//! The estimate every predictor ends with (§6.3.7 steps 4–5): the larger of the global
//! prediction rate's upper bound and the local rate implied by the longest run of correct
//! predictions. Follows `predictionEstimate` and `calc_p_local` of the reference tool's
//! `cpp/shared/utils.h`, which use 80-bit long doubles here; f64 moves the result by far less than
//! 0.001 bit.

use crate::search::bisect;
use crate::ZALPHA;

/// log of the probability that N predictions with success rate p have no run longer than r-1
/// (the series of §6.3.7 step 5, solved by fixed-point iteration).
fn log_no_run(p: f64, r: u64, n: u64) -> f64 {
    let q = 1.0 - p;
    let r = r as f64;
    let mut x = 1.0f64;
    let mut last = 0.0f64;
    let mut i = 0;
    while i <= 65 && (x - last) > f64::EPSILON * x {
        last = x;
        x = 1.0 + q * p.powf(r) * x.powf(r + 1.0);
        i += 1;
    }
    (1.0 - p * x).ln() - ((r + 1.0 - r * x) * q).ln() - (n as f64 + 1.0) * x.ln()
}

/// Min-entropy from C correct predictions out of N, the longest run of correct predictions and
/// the alphabet size k.
pub fn prediction_estimate(c: u64, n: u64, longest_run: u64, k: usize) -> f64 {
    let nf = n as f64;
    let p_global = c as f64 / nf;
    let p_global_prime = if p_global > 0.0 {
        (p_global + ZALPHA * ((p_global * (1.0 - p_global)) / (nf - 1.0)).sqrt()).min(1.0)
    } else {
        1.0 - 0.01f64.powf(1.0 / nf)
    };
    let mut cur = (1.0 / k as f64).max(p_global_prime);
    let log_alpha = 0.99f64.ln();
    let r = longest_run + 1;
    if cur < 1.0 && log_no_run(cur, r, n) > log_alpha {
        let p_local = bisect(|p| log_no_run(p, r, n), log_alpha, cur, 1.0, 1.0);
        cur = cur.max(p_local);
    }
    -cur.log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_runs_lower_the_estimate() {
        // 8,000,000 bit predictions, half right: the global bound alone gives ~0.9984 bits.
        let base = prediction_estimate(4_000_000, 8_000_000, 20, 2);
        assert!((base - 0.99837).abs() < 1e-3, "{base}");
        assert!(prediction_estimate(4_000_000, 8_000_000, 200, 2) < base - 0.1);
    }
}
