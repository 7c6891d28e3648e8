//! The dictionaries of the MultiMMC and LZ78Y predictors for non-binary data: prefixes (up to 16
//! symbols, one table per length) mapping to the counts of the symbols that followed them. Follows
//! the reference tool's `PostfixDictionary` (`cpp/shared/utils.h`): the prediction for a prefix is
//! its most frequent follower, ties going to the larger symbol.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A multiply-fold hasher for integer keys (the keys are packed symbols, not attacker input).
#[derive(Default, Clone, Copy)]
pub(crate) struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        let m = u128::from(self.0 ^ x) * 0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }

    #[inline]
    fn write_u128(&mut self, x: u128) {
        self.write_u64(x as u64);
        self.write_u64((x >> 64) as u64);
    }
}

type Map<K, V> = HashMap<K, V, BuildHasherDefault<FoldHasher>>;

/// Followers kept in the prefix's own record before spilling to the shared map: most prefixes of
/// two or more samples are followed by one or two symbols, so this saves a cache miss per step.
const INLINE: usize = 3;

/// One prefix: its prediction and its first followers.
#[derive(Clone, Copy, Default)]
struct Record {
    best_count: u32,
    best: u8,
    inline_len: u8,
    ys: [u8; INLINE],
    counts: [u32; INLINE],
}

/// Prefix → id, directly indexed where the packed prefixes fit 16 bits.
enum Index {
    Dense(Vec<u32>),
    Hashed(Map<u128, u32>),
}

const ABSENT: u32 = u32::MAX;

/// The prefixes of each length and their followers.
pub(crate) struct Dictionary {
    index: Vec<Index>,
    records: Vec<Record>,
    spilled: Map<u64, u32>,
}

impl Dictionary {
    /// `lengths` tables; prefix length index j holds prefixes of j+1 symbols of 8 bits.
    pub(crate) fn new(lengths: usize) -> Self {
        let index = (0..lengths)
            .map(|j| {
                if j < 2 {
                    Index::Dense(vec![ABSENT; 1 << (8 * (j + 1))])
                } else {
                    Index::Hashed(Map::default())
                }
            })
            .collect();
        Dictionary { index, records: Vec::new(), spilled: Map::default() }
    }

    /// The id of the prefix `key` of length index `len`, if present.
    #[inline]
    pub(crate) fn find(&self, len: usize, key: u128) -> Option<u32> {
        match &self.index[len] {
            Index::Dense(v) => Some(v[key as usize]).filter(|&id| id != ABSENT),
            Index::Hashed(m) => m.get(&key).copied(),
        }
    }

    /// The id of the prefix, created (with no followers yet) if absent.
    pub(crate) fn find_or_insert(&mut self, len: usize, key: u128) -> u32 {
        let next = self.records.len() as u32;
        let id = match &mut self.index[len] {
            Index::Dense(v) => {
                let slot = &mut v[key as usize];
                if *slot == ABSENT {
                    *slot = next;
                }
                *slot
            }
            Index::Hashed(m) => *m.entry(key).or_insert(next),
        };
        if id == next {
            self.records.push(Record::default());
        }
        id
    }

    /// The predicted follower and its count.
    #[inline]
    pub(crate) fn predict(&self, id: u32) -> (u8, u64) {
        let r = &self.records[id as usize];
        (r.best, u64::from(r.best_count))
    }

    /// Counts `y` after prefix `id`; a follower not yet seen is added only when `make_new`.
    /// Returns whether it was added.
    pub(crate) fn increment(&mut self, id: u32, y: u8, make_new: bool) -> bool {
        let r = &mut self.records[id as usize];
        let n = r.inline_len as usize;
        let mut added = false;
        let count = if let Some(j) = r.ys[..n].iter().position(|&x| x == y) {
            r.counts[j] += 1;
            r.counts[j]
        } else if n < INLINE {
            if !make_new {
                return false;
            }
            r.ys[n] = y;
            r.counts[n] = 1;
            r.inline_len += 1;
            added = true;
            1
        } else {
            let key = (u64::from(id) << 8) | u64::from(y);
            match self.spilled.get_mut(&key) {
                Some(c) => {
                    *c += 1;
                    *c
                }
                None if make_new => {
                    self.spilled.insert(key, 1);
                    added = true;
                    1
                }
                None => return false,
            }
        };
        let r = &mut self.records[id as usize];
        if count > r.best_count || (count == r.best_count && y > r.best) {
            r.best_count = count;
            r.best = y;
        }
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prediction_is_the_most_frequent_follower_ties_to_the_larger() {
        let mut d = Dictionary::new(3);
        let id = d.find_or_insert(2, 0x01_02_03);
        assert_eq!(d.find(2, 0x01_02_03), Some(id));
        assert_eq!(d.find(1, 0x02_03), None);
        let mut seen = Vec::new();
        for y in [5u8, 9, 7, 1, 5, 2] {
            assert_eq!(d.increment(id, y, true), !seen.contains(&y), "{y}");
            seen.push(y);
        }
        assert_eq!(d.predict(id), (5, 2));
        d.increment(id, 9, true);
        assert_eq!(d.predict(id), (9, 2));
        assert!(!d.increment(id, 200, false));
        d.increment(id, 2, true);
        d.increment(id, 2, true);
        assert_eq!(d.predict(id), (2, 3));
    }
}
