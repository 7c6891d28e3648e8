//! §6.3.4 Compression estimate (binary data only): Maurer's universal statistic on 6-bit blocks
//! with a 1000-block dictionary, then a search for the p whose expected statistic matches.
//!
//! G follows the reference tool's `compression_test.h` (the running sums of UL's method, Kahan
//! summation, and its stop once a term underflows), with the logarithms tabled once per call
//! instead of per evaluation, and in f64 where it uses long double (the difference is below 1e-12
//! bit).

use crate::search::bisect;
use crate::ZALPHA;

const BLOCK_BITS: usize = 6;
const DICT_BLOCKS: usize = 1000;
const ALPH: usize = 1 << BLOCK_BITS;

#[derive(Default, Clone, Copy)]
struct Kahan {
    sum: f64,
    comp: f64,
}

impl Kahan {
    #[inline]
    fn add(&mut self, x: f64) {
        let y = x - self.comp;
        let t = self.sum + y;
        self.comp = (t - self.sum) - y;
        self.sum = t;
    }
}

/// log2(i) for i in 0..=num_blocks.
struct Logs(Vec<f64>);

fn g(z: f64, d: usize, num_blocks: usize, logs: &Logs) -> f64 {
    let v = (num_blocks - d) as f64;
    let bterm = 1.0 - z;
    let mut bi = bterm;
    let mut ai = Kahan::default();
    for i in 2..=d {
        ai.add(logs.0[i] * bi);
        bi *= bterm;
    }
    let ad1 = ai.sum;
    let mut first = Kahan::default();
    let mut truncated = false;
    for i in d + 1..num_blocks {
        let a = logs.0[i] * bi;
        ai.add(a);
        let scaled = (num_blocks - i) as f64 * a;
        // The reference stops once the term underflows to 0 as a double. In f64 the power B_i
        // would instead stick at the smallest subnormal (0.98 × 2^-1074 rounds back up), so stop
        // at the normal range's end: smaller terms cannot change sums of order one.
        if scaled >= f64::MIN_POSITIVE {
            first.add(scaled);
        } else {
            truncated = true;
            break;
        }
        bi *= bterm;
    }
    first.add((num_blocks - d) as f64 * ad1);
    if !truncated {
        ai.add(logs.0[num_blocks] * bi);
    }
    1.0 / v * z * (z * first.sum + (ai.sum - ad1))
}

fn expected(p: f64, d: usize, num_blocks: usize, logs: &Logs) -> f64 {
    let q = (1.0 - p) / (ALPH as f64 - 1.0);
    g(p, d, num_blocks, logs) + (ALPH as f64 - 1.0) * g(q, d, num_blocks, logs)
}

/// `bits` are 0/1. None when there are no more blocks than the dictionary holds.
pub fn compression(bits: &[u8]) -> Option<f64> {
    let d = DICT_BLOCKS;
    let num_blocks = bits.len() / BLOCK_BITS;
    if num_blocks <= d {
        return None;
    }
    let block = |i: usize| {
        bits[i * BLOCK_BITS..(i + 1) * BLOCK_BITS]
            .iter()
            .fold(0usize, |a, &b| (a << 1) | (b & 1) as usize)
    };
    let mut dict = [0usize; ALPH];
    for i in 0..d {
        dict[block(i)] = i + 1;
    }
    let logs = Logs((0..=num_blocks).map(|i| (i as f64).log2()).collect());
    let (mut x, mut sigma) = (Kahan::default(), Kahan::default());
    for i in d..num_blocks {
        let b = block(i);
        let l = logs.0[i + 1 - dict[b]];
        x.add(l);
        sigma.add(l * l);
        dict[b] = i + 1;
    }
    let v = (num_blocks - d) as f64;
    let mean = x.sum / v;
    let sd = 0.5907 * (sigma.sum / (v - 1.0) - mean * mean).sqrt();
    let target = mean - ZALPHA * sd / v.sqrt();
    let lowest = 1.0 / ALPH as f64;
    let p = if expected(lowest, d, num_blocks, &logs) > target {
        bisect(|p| expected(p, d, num_blocks, &logs), target, lowest, 1.0, lowest)
    } else {
        -1.0
    };
    Some(if p > lowest { -p.log2() / BLOCK_BITS as f64 } else { 1.0 })
}
