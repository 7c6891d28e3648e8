//! §6.3.8 Lag prediction estimate: 128 predictors, predictor d saying "the sample d back", and a
//! scoreboard choosing which to follow (ties go to the larger lag, as in the reference tool).

use super::{Predictions, Tally};

const LAGS: usize = 128;

/// `symbols` are 0..k; None with fewer than 3 samples.
pub fn lag(symbols: &[u8]) -> Option<Predictions> {
    let len = symbols.len();
    if len < 3 {
        return None;
    }
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
    Some(tally.finish((len - 1) as u64))
}
