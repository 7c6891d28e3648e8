//! §6.3.9 Multi Markov model with counting (MultiMMC) prediction estimate: predictors of order
//! 1..16, each predicting the most frequent follower of the last d samples, with at most 100,000
//! (prefix, follower) entries per order, and a scoreboard choosing which to follow. Follows the
//! reference tool's `multi_mmc_test.h`, including its interleaving of predictions and updates.

use super::dict::Dictionary;
use super::{Predictions, Tally};

const ORDERS: usize = 16;
const MAX_ENTRIES: u64 = 100_000;

/// `symbols` are 0..k; None with fewer than 3 samples.
pub fn multi_mmc(symbols: &[u8], k: usize) -> Option<Predictions> {
    if symbols.len() < 3 {
        return None;
    }
    if k == 2 {
        return Some(binary(symbols));
    }
    Some(general(symbols))
}

fn general(s: &[u8]) -> Predictions {
    let len = s.len();
    let n = len - 2;
    let mut dict = Dictionary::new(ORDERS);
    let mut entries = [0u64; ORDERS];
    let mut score = [0u64; ORDERS];
    let mut winner = 0usize;
    let mut tally = Tally::default();
    let mut key = 0u128;
    for d in 0..ORDERS.min(n) {
        key = (key << 8) | u128::from(s[d]);
        let id = dict.find_or_insert(d, key);
        dict.increment(id, s[d + 1], true);
        entries[d] = 1;
    }
    for i in 2..len {
        let y = s[i];
        let cur_winner = winner;
        let mut found: Option<u32> = None;
        let mut key = 0u128;
        for d in 0..ORDERS.min(i - 1) {
            key |= u128::from(s[i - d - 1]) << (8 * d);
            if d == 0 || found.is_some() {
                found = dict.find(d, key);
            }
            match found {
                Some(id) => {
                    let (pred, _) = dict.predict(id);
                    if pred == y {
                        score[d] += 1;
                        if score[d] >= score[winner] {
                            winner = d;
                        }
                        if d == cur_winner {
                            tally.hit();
                        }
                    } else if d == cur_winner {
                        tally.miss();
                    }
                    if dict.increment(id, y, entries[d] < MAX_ENTRIES) {
                        entries[d] += 1;
                    }
                }
                None if entries[d] < MAX_ENTRIES => {
                    let id = dict.find_or_insert(d, key);
                    dict.increment(id, y, true);
                    entries[d] += 1;
                }
                None => {}
            }
        }
    }
    tally.finish(n as u64)
}

/// The same for 0/1 data, with the dictionaries as one array indexed by order and prefix bits, and
/// the scoreboard updated without branches (whether a prediction is right is a coin flip on good
/// data).
fn binary(s: &[u8]) -> Predictions {
    let len = s.len();
    // Order d (prefixes of d+1 bits) starts at 4·2^d − 4; entry 2·pattern + y.
    let base = |d: usize| (4usize << d) - 4;
    let mut dict = vec![0u32; base(ORDERS)];
    let mut entries = [0u64; ORDERS];
    let mut score = [0u64; ORDERS];
    let mut winner = 0usize;
    let mut tally = Tally::default();
    let mut pattern = 0usize;
    for d in 0..ORDERS.min(len - 1) {
        pattern = ((pattern << 1) | (s[d] & 1) as usize) & ((1 << (d + 1)) - 1);
        dict[base(d) + 2 * pattern + (s[d + 1] & 1) as usize] = 1;
        entries[d] = 1;
    }
    for i in 2..len {
        let y = (s[i] & 1) as usize;
        let cur_winner = winner;
        let mut found = false;
        let mut winner_found = false;
        let mut winner_hit = false;
        let mut pattern = 0usize;
        for d in 0..ORDERS.min(i - 1) {
            pattern |= ((s[i - d - 1] & 1) as usize) << d;
            let at = base(d) + 2 * pattern;
            let (c0, c1) = (dict[at], dict[at + 1]);
            if d == 0 || found {
                found = (c0 | c1) != 0;
            }
            let pred = usize::from(c0 <= c1);
            let hit = found & (pred == y);
            score[d] += u64::from(hit);
            let take = hit & (score[d] >= score[winner]);
            winner = if take { d } else { winner };
            if d == cur_winner {
                winner_found = found;
                winner_hit = hit;
            }
            let cy = if y == 0 { c0 } else { c1 };
            if cy != 0 && found {
                dict[at + y] = cy + 1;
            } else if entries[d] < MAX_ENTRIES {
                dict[at + y] = 1;
                entries[d] += 1;
            }
        }
        if winner_found {
            tally.record(winner_hit);
        }
    }
    tally.finish((len - 2) as u64)
}
