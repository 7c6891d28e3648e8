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

/// The prefixes of each length and their followers.
pub(crate) struct Dictionary {
    prefixes: Vec<Map<u128, u32>>,
    /// Per prefix id: the count and symbol of its current prediction.
    best: Vec<(u64, u8)>,
    followers: Map<u64, u64>,
}

impl Dictionary {
    pub(crate) fn new(lengths: usize) -> Self {
        Dictionary { prefixes: (0..lengths).map(|_| Map::default()).collect(), best: Vec::new(), followers: Map::default() }
    }

    /// The id of the prefix `key` of length index `len`, if present.
    #[inline]
    pub(crate) fn find(&self, len: usize, key: u128) -> Option<u32> {
        self.prefixes[len].get(&key).copied()
    }

    /// The id of the prefix, created (with no followers yet) if absent.
    pub(crate) fn find_or_insert(&mut self, len: usize, key: u128) -> u32 {
        let next = self.best.len() as u32;
        let id = *self.prefixes[len].entry(key).or_insert(next);
        if id == next {
            self.best.push((0, 0));
        }
        id
    }

    /// The predicted follower and its count.
    #[inline]
    pub(crate) fn predict(&self, id: u32) -> (u8, u64) {
        let (c, y) = self.best[id as usize];
        (y, c)
    }

    /// Counts `y` after prefix `id`; a follower not yet seen is added only when `make_new`.
    /// Returns whether it was added.
    pub(crate) fn increment(&mut self, id: u32, y: u8, make_new: bool) -> bool {
        let key = (u64::from(id) << 8) | u64::from(y);
        let (count, added) = match self.followers.get_mut(&key) {
            Some(c) => {
                *c += 1;
                (*c, false)
            }
            None if make_new => {
                self.followers.insert(key, 1);
                (1, true)
            }
            None => return false,
        };
        let best = &mut self.best[id as usize];
        if count > best.0 || (count == best.0 && y > best.1) {
            *best = (count, y);
        }
        added
    }
}
