//! §6.3.1 Most common value estimate.

use crate::ZALPHA;

/// `symbols` are 0..k.
pub fn most_common_value(symbols: &[u8], k: usize) -> f64 {
    let mut counts = vec![0u64; k.max(256)];
    for &s in symbols {
        counts[s as usize] += 1;
    }
    let mode = counts.iter().copied().max().unwrap_or(0);
    let len = symbols.len() as f64;
    let pmax = mode as f64 / len;
    let ubound = (pmax + ZALPHA * (pmax * (1.0 - pmax) / (len - 1.0)).sqrt()).min(1.0);
    -ubound.log2()
}
