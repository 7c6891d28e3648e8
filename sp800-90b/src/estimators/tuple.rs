//! §6.3.5 t-tuple and §6.3.6 longest repeated substring (LRS) estimates.
//!
//! Both need, for every length t, the largest number of times one t-tuple occurs (Q[t]) and the
//! number of pairs of equal t-tuples (Σ C(count, 2)). The reference tool gets them from a suffix
//! array and its LCP array with Kaufer's algorithm; here one bottom-up walk over the LCP intervals
//! gives the same numbers: an interval of depth h whose parent has depth h' is one tuple of every
//! length in (h', h], occurring (interval width) times.

use crate::{Error, Result, ZALPHA};
use libsais::SuffixArrayConstruction;

/// A tuple is "common" when it occurs at least this often (§6.3.5 step 1).
const COMMON: u64 = 35;

/// The two estimates; None where the reference tool finds one not applicable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TupleEstimates {
    pub t_tuple: Option<f64>,
    pub lrs: Option<f64>,
}

/// LCP array in suffix-array order: lcp[0] = 0, lcp[i] = LCP(SA[i-1], SA[i]).
fn lcp_array(text: &[u8]) -> Result<Vec<i32>> {
    let sa = SuffixArrayConstruction::for_text(text)
        .in_owned_buffer32()
        .single_threaded()
        .run()
        .map_err(|e| Error::SuffixArray(format!("{e:?}")))?;
    let plcp = sa
        .plcp_construction()
        .single_threaded()
        .run()
        .map_err(|e| Error::SuffixArray(format!("{e:?}")))?;
    let lcp = plcp
        .lcp_construction()
        .single_threaded()
        .run()
        .map_err(|e| Error::SuffixArray(format!("{e:?}")))?;
    let (_, lcp, _, _) = lcp.into_parts();
    Ok(lcp)
}

/// The length of the longest substring that occurs at least twice (0 when none does).
pub fn longest_repeat(text: &[u8]) -> Result<usize> {
    if text.len() < 2 {
        return Ok(0);
    }
    Ok(lcp_array(text)?.iter().copied().max().unwrap_or(0) as usize)
}

pub fn t_tuple_and_lrs(text: &[u8]) -> Result<TupleEstimates> {
    let n = text.len();
    if n < 2 {
        return Err(Error::TooFew { what: "the t-tuple estimate", have: n, need: 2 });
    }
    let lcp = lcp_array(text)?;
    let v = lcp.iter().copied().max().unwrap_or(0) as usize;
    if v == 0 {
        return Ok(TupleEstimates { t_tuple: None, lrs: None });
    }
    // deepest[h]: the most occurrences of any interval of depth exactly h.
    let mut deepest = vec![0u64; v + 2];
    // pairs_diff: difference array of Σ C(count, 2) over lengths.
    let mut pairs_diff = vec![0u64; v + 2];
    let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
    // lcp[n] would be the sentinel 0 that closes every open interval.
    for (i, &l) in lcp.iter().skip(1).chain(std::iter::once(&0)).enumerate() {
        let (i, l) = (i + 1, l as usize);
        let mut lb = i - 1;
        while l < stack.last().map_or(0, |t| t.0) {
            let (h, left) = stack.pop().unwrap_or((0, 0));
            lb = left;
            let count = (i - left) as u64;
            let parent = l.max(stack.last().map_or(0, |t| t.0));
            if count > deepest[h] {
                deepest[h] = count;
            }
            let pairs = count * (count - 1) / 2;
            pairs_diff[parent + 1] = pairs_diff[parent + 1].wrapping_add(pairs);
            pairs_diff[h + 1] = pairs_diff[h + 1].wrapping_sub(pairs);
        }
        if l > stack.last().map_or(0, |t| t.0) {
            stack.push((l, lb));
        }
    }
    // Q[t] = max over intervals of depth >= t; every tuple occurs at least once.
    let mut q = vec![1u64; v + 2];
    let mut run = 1u64;
    for t in (1..=v).rev() {
        run = run.max(deepest[t]);
        q[t] = run;
    }
    let mut u = 1;
    while u <= v && q[u] >= COMMON {
        u += 1;
    }
    let nf = n as f64;
    let bound = |p: f64| {
        let pu = (p + ZALPHA * (p * (1.0 - p) / (nf - 1.0)).sqrt()).min(1.0);
        -pu.log2()
    };
    let mut pmax = -1.0f64;
    for (t, &qt) in q.iter().enumerate().take(u).skip(1) {
        let p = (qt as f64 / (n - t + 1) as f64).powf(1.0 / t as f64);
        pmax = pmax.max(p);
    }
    let t_tuple = (pmax > 0.0).then(|| bound(pmax));
    let lrs = (v >= u).then(|| {
        let mut pairs = 0u64;
        let mut pmax = 0.0f64;
        for (t, &diff) in pairs_diff.iter().enumerate().take(v + 1).skip(1) {
            pairs = pairs.wrapping_add(diff);
            if t >= u {
                let choices = ((n - t) as u128 * (n - t + 1) as u128 / 2) as f64;
                let p = (pairs as f64 / choices).powf(1.0 / t as f64);
                pmax = pmax.max(p);
            }
        }
        bound(pmax)
    });
    Ok(TupleEstimates { t_tuple, lrs })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q[t] and the pair counts by brute force, for checking the interval walk.
    fn brute(text: &[u8], t: usize) -> (u64, u64) {
        let mut counts = std::collections::HashMap::new();
        for w in text.windows(t) {
            *counts.entry(w.to_vec()).or_insert(0u64) += 1;
        }
        let q = counts.values().copied().max().unwrap_or(0);
        let pairs = counts.values().map(|c| c * (c - 1) / 2).sum();
        (q, pairs)
    }

    #[test]
    fn interval_walk_matches_brute_force_counts() {
        // A periodic text with noise repeats tuples of many lengths.
        let mut x = 7u32;
        let text: Vec<u8> = (0..3000)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                if (x >> 16).is_multiple_of(7) {
                    (x >> 20) as u8 & 1
                } else {
                    (i % 5 == 0) as u8
                }
            })
            .collect();
        let est = t_tuple_and_lrs(&text).unwrap();
        // Recompute both estimates by brute force.
        let n = text.len();
        let v = (1..n).take_while(|&t| brute(&text, t).0 >= 2).last().unwrap();
        let u = (1..=v).find(|&t| brute(&text, t).0 < COMMON).unwrap_or(v + 1);
        let nf = n as f64;
        let bound = |p: f64| -((p + ZALPHA * (p * (1.0 - p) / (nf - 1.0)).sqrt()).min(1.0)).log2();
        let pt = (1..u)
            .map(|t| (brute(&text, t).0 as f64 / (n - t + 1) as f64).powf(1.0 / t as f64))
            .fold(-1.0, f64::max);
        let pl = (u..=v)
            .map(|t| {
                let c = ((n - t) * (n - t + 1) / 2) as f64;
                (brute(&text, t).1 as f64 / c).powf(1.0 / t as f64)
            })
            .fold(0.0, f64::max);
        assert!((est.t_tuple.unwrap() - bound(pt)).abs() < 1e-12);
        assert!((est.lrs.unwrap() - bound(pl)).abs() < 1e-12);
    }
}
