//! §6.3.8 Lag prediction estimate: 128 predictors, predictor d saying "the sample d back", and a
//! scoreboard choosing which to follow (ties go to the larger lag, as in the reference tool).

use super::{Predictions, Tally};

const LAGS: usize = 128;

/// `symbols` are 0..k; None with fewer than 3 samples.
pub fn lag(symbols: &[u8], k: usize) -> Option<Predictions> {
    let len = symbols.len();
    if len < 3 {
        return None;
    }
    if k == 2 {
        return Some(binary(symbols));
    }
    Some(general(symbols))
}

fn general(symbols: &[u8]) -> Predictions {
    let len = symbols.len();
    let mut score = [0u64; LAGS];
    let mut winner = 0usize;
    let mut high = 0u64;
    let mut tally = Tally::default();
    for i in 1..len {
        let s = symbols[i];
        if s == symbols[i - winner - 1] {
            tally.hit();
        } else {
            tally.miss();
        }
        // Every lag d+1 whose sample equals this one scores, in increasing order of lag.
        for d in 0..LAGS.min(i) {
            if symbols[i - d - 1] == s {
                score[d] += 1;
                if score[d] >= high {
                    winner = d;
                    high = score[d];
                }
            }
        }
    }
    tally.finish((len - 1) as u64)
}

/// The same for 0/1 data, bit-parallel. The lags that score at a step are the set bits of one
/// 128-bit word, and the scores are bit-sliced counters (plane k holds bit k of every lag's score).
/// Processing the scoring lags in increasing order with ">= high" (as the reference does) makes the
/// winner the largest scoring lag whose new score is the largest among them, provided that score
/// reaches the old high score, so the step needs only that maximum, found plane by plane.
fn binary(s: &[u8]) -> Predictions {
    let len = s.len();
    let planes = (u64::BITS - (len as u64).leading_zeros()) as usize;
    let mut plane = vec![0u128; planes];
    // history bit d = s[i-d-1]
    let mut history: u128 = u128::from(s[0] & 1);
    let mut valid: u128 = 1;
    let mut winner = 0usize;
    let mut high = 0u64;
    let mut top = 0usize; // planes above this are all zero
    let mut tally = Tally::default();
    for &x in &s[1..] {
        let bit = x & 1;
        tally.record(bit == ((history >> winner) & 1) as u8);
        let scoring = if bit == 1 { history } else { !history } & valid;
        if scoring != 0 {
            // Increment every scoring lag's counter.
            let mut carry = scoring;
            let mut k = 0;
            while carry != 0 {
                let p = plane[k];
                plane[k] = p ^ carry;
                carry &= p;
                k += 1;
            }
            top = top.max(k);
            // The scoring lags with the largest new score, and that score.
            let mut best = scoring;
            let mut value = 0u64;
            for k in (0..top).rev() {
                let t = best & plane[k];
                let nonzero = t != 0;
                // Branch-free: which way this goes is a coin flip on random data.
                best = if nonzero { t } else { best };
                value |= u64::from(nonzero) << k;
            }
            if value >= high {
                high = value;
                winner = 127 - best.leading_zeros() as usize;
            }
        }
        history = (history << 1) | u128::from(bit);
        valid = (valid << 1) | 1;
    }
    tally.finish((len - 1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_parallel_lag_matches_the_plain_one() {
        let mut x = 0x2545_f491_u32;
        for bias in [2u32, 3, 7] {
            let bits: Vec<u8> = (0..20_000)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    // Mostly random with a period-37 pattern mixed in.
                    if x.is_multiple_of(bias) {
                        ((i / 37) % 2) as u8
                    } else {
                        (x >> 9) as u8 & 1
                    }
                })
                .collect();
            assert_eq!(binary(&bits), general(&bits), "bias {bias}");
        }
    }
}
