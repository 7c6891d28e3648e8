//! §6.3.10 LZ78Y prediction estimate: a dictionary of up to 65,536 prefixes of 1..16 samples with
//! the counts of their followers; the prediction is the follower counted most often after any of
//! the current prefixes (the longest prefix winning ties). Follows the reference tool's
//! `lz78y_test.h`.

use super::dict::Dictionary;
use super::{Predictions, Tally};

const B: usize = 16;
const MAX_DICTIONARY: u64 = 65_536;

/// `symbols` are 0..k; None with fewer than 18 samples.
pub fn lz78y(symbols: &[u8], k: usize) -> Option<Predictions> {
    if symbols.len() < B + 2 {
        return None;
    }
    Some(if k == 2 { binary(symbols) } else { general(symbols) })
}

fn general(s: &[u8]) -> Predictions {
    let len = s.len();
    let mut dict = Dictionary::new(B);
    let mut size = 0u64;
    for j in 1..=B {
        let key = s[B - j..B].iter().fold(0u128, |a, &b| (a << 8) | u128::from(b));
        let id = dict.find_or_insert(j - 1, key);
        dict.increment(id, s[B], true);
        size += 1;
    }
    let mut tally = Tally::default();
    for i in B + 1..len {
        let y = s[i];
        let full = s[i - B..i].iter().fold(0u128, |a, &b| (a << 8) | u128::from(b));
        let mut prediction: Option<u8> = None;
        let mut max_count = 0u64;
        for j in (1..=B).rev() {
            let key = if j == B { full } else { full & ((1u128 << (8 * j)) - 1) };
            match dict.find(j - 1, key) {
                Some(id) => {
                    let (pred, count) = dict.predict(id);
                    if count > max_count {
                        max_count = count;
                        prediction = Some(pred);
                    }
                    dict.increment(id, y, true);
                }
                None if size < MAX_DICTIONARY => {
                    let id = dict.find_or_insert(j - 1, key);
                    dict.increment(id, y, true);
                    size += 1;
                }
                None => {}
            }
        }
        if prediction == Some(y) {
            tally.hit();
        } else {
            tally.miss();
        }
    }
    tally.finish((len - B - 1) as u64)
}

/// The same for 0/1 data, with the dictionary as arrays indexed by the prefix bits.
fn binary(s: &[u8]) -> Predictions {
    let len = s.len();
    // dict[j-1][2*pattern + y] for prefixes of j bits.
    let mut dict: Vec<Vec<u32>> = (0..B).map(|j| vec![0u32; 1 << (j + 2)]).collect();
    let mut size = 0u64;
    let mut pattern = 0usize;
    for j in 0..B {
        pattern |= ((s[B - j - 1] & 1) as usize) << j;
        dict[j][2 * pattern + (s[B] & 1) as usize] = 1;
        size += 1;
    }
    let mut tally = Tally::default();
    let mut window = s[1..=B].iter().fold(0usize, |a, &b| (a << 1) | (b & 1) as usize);
    for &x in &s[B + 1..len] {
        let y = (x & 1) as usize;
        // window holds the 16 bits before x, the latest in bit 0.
        let mut have = false;
        let mut pred = 0usize;
        let mut max_count = 0u32;
        for j in (1..=B).rev() {
            let at = 2 * (window & ((1 << j) - 1));
            let entry = &mut dict[j - 1][at..at + 2];
            let (p, c) = if entry[0] > entry[1] { (0, entry[0]) } else { (1, entry[1]) };
            if c != 0 {
                if c > max_count {
                    max_count = c;
                    have = true;
                    pred = p;
                }
                entry[y] += 1;
            } else if size < MAX_DICTIONARY {
                entry[y] = 1;
                size += 1;
            }
        }
        if have && pred == y {
            tally.hit();
        } else {
            tally.miss();
        }
        window = ((window << 1) | y) & ((1 << B) - 1);
    }
    tally.finish((len - B - 1) as u64)
}
