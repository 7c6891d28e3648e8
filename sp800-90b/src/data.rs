//! Samples as the assessment sees them: symbols renumbered by rank, and the bitstring.

use crate::{Error, Result};

/// A data set ready for assessment.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Bits per symbol (1..=8).
    pub bits_per_symbol: u32,
    /// How many distinct symbols occur.
    pub alphabet_size: usize,
    /// The samples with only their low `bits_per_symbol` bits, as read.
    pub raw: Vec<u8>,
    /// The samples renumbered 0..alphabet_size in increasing order of their value (the reference
    /// tool's "translation"; the identity when every value up to the largest occurs).
    pub symbols: Vec<u8>,
    /// Every raw sample's `bits_per_symbol` bits, most significant first, one bit per byte.
    pub bits: Vec<u8>,
    /// The samples use fewer bits than `bits_per_symbol` says (the reference tool warns).
    pub narrower_than_declared: bool,
}

impl Dataset {
    /// Takes one sample per byte. `bits_per_symbol` None infers it from the highest bit set in any
    /// sample, as the reference tool does; given, samples wider than it are an error.
    pub fn new(samples: &[u8], bits_per_symbol: Option<u32>) -> Result<Self> {
        if samples.is_empty() {
            return Err(Error::Empty);
        }
        let used = used_bits(samples);
        let (bits_per_symbol, narrower) = match bits_per_symbol {
            None => (used, false),
            Some(b) if !(1..=8).contains(&b) => return Err(Error::BitsPerSymbol(b)),
            Some(b) if used > b => return Err(Error::TooWide { used, given: b }),
            Some(b) => (b, used < b),
        };
        // All-zero data uses no bit; the reference tool then calls it 0 bits wide and finds one symbol.
        let width = bits_per_symbol.max(1);
        let mask = ((1u32 << width) - 1) as u8;
        let raw: Vec<u8> = samples.iter().map(|&s| s & mask).collect();
        let mut present = [false; 256];
        for &s in &raw {
            present[s as usize] = true;
        }
        let mut rank = [0u8; 256];
        let mut alphabet_size = 0usize;
        for (v, &p) in present.iter().enumerate() {
            if p {
                rank[v] = alphabet_size as u8;
                alphabet_size += 1;
            }
        }
        if alphabet_size <= 1 {
            return Err(Error::OneSymbol);
        }
        let symbols = raw.iter().map(|&s| rank[s as usize]).collect();
        let bits = to_bits(&raw, width);
        Ok(Dataset {
            bits_per_symbol: width,
            alphabet_size,
            raw,
            symbols,
            bits,
            narrower_than_declared: narrower,
        })
    }

    /// Whether H_bitstring is part of the assessment: the reference tool assesses the bitstring of
    /// initial-entropy data only when more than two symbols occur.
    pub fn has_bitstring(&self) -> bool {
        self.alphabet_size > 2
    }
}

/// The number of low bits the samples use (the highest set bit of any sample, 0 for all-zero data).
fn used_bits(samples: &[u8]) -> u32 {
    let or = samples.iter().fold(0u8, |a, &b| a | b);
    8 - or.leading_zeros()
}

/// Every sample's `width` low bits, most significant first, one bit per byte.
pub fn to_bits(raw: &[u8], width: u32) -> Vec<u8> {
    let w = width as usize;
    let mut bits = vec![0u8; raw.len() * w];
    for (chunk, &s) in bits.chunks_exact_mut(w).zip(raw) {
        for (j, b) in chunk.iter_mut().enumerate() {
            *b = (s >> (w - 1 - j)) & 1;
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_ranked_and_bits_come_from_raw_values() {
        let d = Dataset::new(&[2, 7, 2, 5], Some(3)).unwrap();
        assert_eq!(d.alphabet_size, 3);
        assert_eq!(d.symbols, vec![0, 2, 0, 1]);
        assert_eq!(d.bits, vec![0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1]);
        assert!(!d.narrower_than_declared);
    }

    #[test]
    fn width_is_inferred_and_checked() {
        assert_eq!(Dataset::new(&[0, 1, 3], None).unwrap().bits_per_symbol, 2);
        assert!(matches!(
            Dataset::new(&[0, 9], Some(2)),
            Err(Error::TooWide { used: 4, given: 2 })
        ));
        assert!(Dataset::new(&[0, 1], Some(4)).unwrap().narrower_than_declared);
        assert!(matches!(Dataset::new(&[5, 5, 5], None), Err(Error::OneSymbol)));
    }
}
