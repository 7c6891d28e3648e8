//! §5.2.1–5.2.2 chi-square tests of independence and goodness of fit, and §5.2.3 (the LRS
//! test), following the reference tool's `chi_square_tests.h` and `len_LRS_test`: its binning of
//! expected counts (bins of at least 5 in increasing order of expectation, the last merged into its
//! neighbour) and its binary variants.

use super::cephes::chi_square_pvalue;
use serde::Serialize;

/// A test fails when its p-value is below this (§5.2).
pub const P_CUTOFF: f64 = 0.001;

/// One chi-square test's result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChiSquare {
    pub statistic: f64,
    pub df: u32,
    pub p_value: f64,
}

impl ChiSquare {
    fn new(statistic: f64, df: u32) -> Self {
        ChiSquare { statistic, df, p_value: chi_square_pvalue(statistic, f64::from(df)) }
    }

    pub fn passed(&self) -> bool {
        self.p_value >= P_CUTOFF
    }
}

/// Proportions summed as the reference does (1/n added per sample), so that ties between
/// expectations sort the same way.
fn proportions(data: &[u8], k: usize) -> Vec<f64> {
    let mut p = vec![0.0f64; k];
    let step = 1.0 / data.len() as f64;
    for &s in data {
        p[s as usize] += step;
    }
    p
}

/// Sorts (tuple, expectation) by expectation then tuple and groups them into bins whose
/// expectations reach 5; returns each tuple's bin and the bins' expectations.
fn bins(expect: &[f64]) -> (Vec<usize>, Vec<f64>) {
    let mut order: Vec<usize> = (0..expect.len()).collect();
    order.sort_by(|&a, &b| {
        expect[a].partial_cmp(&expect[b]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
    });
    let mut bin_of = vec![0usize; expect.len()];
    let mut bin_exp = Vec::new();
    let mut current = 0usize;
    let mut acc = 0.0f64;
    for &t in &order {
        if acc >= 5.0 {
            bin_exp.push(acc);
            current += 1;
            acc = 0.0;
        }
        bin_of[t] = current;
        acc += expect[t];
    }
    if current != 0 && acc < 5.0 {
        for &t in order.iter().rev() {
            if bin_of[t] != current {
                break;
            }
            bin_of[t] = current - 1;
        }
        bin_exp[current - 1] += acc;
    } else {
        bin_exp.push(acc);
    }
    (bin_of, bin_exp)
}

fn statistic(bin_exp: &[f64], observed: &[u64]) -> f64 {
    bin_exp.iter().zip(observed).map(|(&e, &o)| (o as f64 - e).powi(2) / e).sum()
}

/// §5.2.1 independence; `data` are symbols 0..k.
pub fn independence(data: &[u8], k: usize) -> ChiSquare {
    if k == 2 {
        return binary_independence(data);
    }
    let n = data.len();
    let p = proportions(data, k);
    let half = (n as f64 * 0.5).floor();
    let expect: Vec<f64> = (0..k * k).map(|t| p[t / k] * p[t % k] * half).collect();
    let (bin_of, bin_exp) = bins(&expect);
    let mut observed = vec![0u64; bin_exp.len()];
    for pair in data.chunks_exact(2) {
        observed[bin_of[pair[0] as usize * k + pair[1] as usize]] += 1;
    }
    ChiSquare::new(statistic(&bin_exp, &observed), (bin_exp.len() - k) as u32)
}

fn binary_independence(data: &[u8]) -> ChiSquare {
    let n = data.len();
    let p1 = data.iter().map(|&b| f64::from(b)).sum::<f64>() / n as f64;
    let p0 = 1.0 - p1;
    let min_p = p0.min(p1);
    let mut m = 11usize;
    while m > 1 {
        if min_p.powi(m as i32) * ((n / m) as f64) >= 5.0 {
            break;
        }
        m -= 1;
    }
    if m < 2 {
        return ChiSquare { statistic: 0.0, df: 0, p_value: chi_square_pvalue(0.0, 0.0) };
    }
    let blocks = n / m;
    let mut occ = vec![0u64; 1 << m];
    for b in data.chunks_exact(m).take(blocks) {
        occ[b.iter().fold(0usize, |a, &x| (a << 1) | x as usize)] += 1;
    }
    let t: f64 = occ
        .iter()
        .enumerate()
        .map(|(i, &o)| {
            let w = i.count_ones() as i32;
            let e = p1.powi(w) * p0.powi(m as i32 - w) * blocks as f64;
            (o as f64 - e).powi(2) / e
        })
        .sum();
    ChiSquare::new(t, (1u32 << m) - 2)
}

/// §5.2.2 goodness of fit over ten equal parts; `data` are symbols 0..k.
pub fn goodness_of_fit(data: &[u8], k: usize) -> ChiSquare {
    let n = data.len();
    if k == 2 {
        let sub = n / 10;
        let ones: u64 = data.iter().map(|&b| u64::from(b)).sum();
        let p = ones as f64 / n as f64;
        let (e0, e1) = ((1.0 - p) * sub as f64, p * sub as f64);
        let t: f64 = (0..10)
            .map(|i| {
                let o1: u64 = data[i * sub..(i + 1) * sub].iter().map(|&b| u64::from(b)).sum();
                let o0 = sub as u64 - o1;
                (o0 as f64 - e0).powi(2) / e0 + (o1 as f64 - e1).powi(2) / e1
            })
            .sum();
        return ChiSquare::new(t, 9);
    }
    let p = proportions(data, k);
    let tenth = (n as f64 / 10.0).floor();
    let expect: Vec<f64> = p.iter().map(|&pj| pj * tenth).collect();
    let (bin_of, bin_exp) = bins(&expect);
    let block = n / 10;
    let mut t = 0.0;
    for j in 0..10 {
        let mut o = vec![0u64; bin_exp.len()];
        for &s in &data[j * block..(j + 1) * block] {
            o[bin_of[s as usize]] += 1;
        }
        t += statistic(&bin_exp, &o);
    }
    ChiSquare::new(t, 9 * (bin_exp.len() as u32 - 1))
}

/// §5.2.3 the length of the longest repeated substring: passes when at least one collision of
/// that length is likely enough (Pr(X ≥ 1) ≥ 1/1000) for IID data with this symbol distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LrsTest {
    /// Collision probability per symbol, Σ p_i².
    pub p_col: f64,
    /// Length of the longest repeated substring.
    pub w: usize,
    pub passed: bool,
}

pub fn lrs_test(data: &[u8], k: usize, w: usize) -> LrsTest {
    let p = proportions(data, k);
    let p_col: f64 = p.iter().map(|&x| x * x).sum();
    if p_col > 1.0 - f64::EPSILON {
        return LrsTest { p_col: 1.0, w, passed: true };
    }
    let n = data.len();
    let log_no_col = (-p_col.powi(w as i32)).ln_1p();
    let m = n - w + 1;
    let pairs = (m as f64) * (m as f64 - 1.0) / 2.0;
    LrsTest { p_col, w, passed: 0.999f64.ln() >= pairs * log_no_col }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_merge_the_last_small_bin() {
        let (bin_of, exp) = bins(&[3.0, 1.0, 4.0, 2.0, 1.0]);
        // Order by expectation: 1(1.0), 4(1.0), 3(2.0), 0(3.0), 2(4.0): bins {1,4,3,0}=7, {2}=4 → merged.
        assert_eq!(exp, vec![11.0]);
        assert!(bin_of.iter().all(|&b| b == 0));
        let (_, exp) = bins(&[5.0, 5.0, 1.0]);
        assert_eq!(exp, vec![6.0, 5.0]);
    }
}
