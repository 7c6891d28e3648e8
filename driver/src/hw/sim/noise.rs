//! The simulated noise source: independent bits with a chosen P(1), at a chosen rate, with
//! injectable data faults (stuck-at, repeated word, bias jump).
//!
//! Bits come from ChaCha8 (rand_chacha): fast enough for ≥ 1 GB/s and, seeded from the OS by
//! default, not predictable from earlier output, so a demo never serves predictable bytes.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

use super::Fault;

/// P(1) is quantised to this many binary digits when biased.
const BIAS_DIGITS: u32 = 16;

/// The P(1) offset that `fault=bias` switches to (P(1) = 0.75).
pub const FAULT_BIAS: f64 = 0.25;

/// A bit source with P(1) = 0.5 + bias and data faults.
#[derive(Debug)]
pub struct Noise {
    rng: ChaCha8Rng,
    /// P(1) × 2^16, in 0..=65536; 32768 is unbiased.
    p16: u32,
    produced: u64,
    fault: Option<Fault>,
    fault_after: u64,
    repeat_word: Option<[u8; 4]>,
}

/// Converts a bias offset into P(1) × 2^16 (clamped to [0, 1]).
fn p16_of(bias: f64) -> u32 {
    let p = (0.5 + bias).clamp(0.0, 1.0);
    (p * f64::from(1u32 << BIAS_DIGITS)).round() as u32
}

impl Noise {
    pub fn new(seed: [u8; 32], bias: f64, fault: Option<Fault>, fault_after: u64) -> Noise {
        Noise {
            rng: ChaCha8Rng::from_seed(seed),
            p16: p16_of(bias),
            produced: 0,
            fault,
            fault_after,
            repeat_word: None,
        }
    }

    /// Changes P(1) (chip cards switch between RNG and SAMPLE mode).
    pub fn set_bias(&mut self, bias: f64) {
        self.p16 = p16_of(bias);
    }

    /// Bytes produced so far (what `fault-after` counts).
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// True once the configured fault has started.
    pub fn fault_active(&self, which: Fault) -> bool {
        self.fault == Some(which) && self.produced >= self.fault_after
    }

    /// Fills `out` with the next bytes of the source.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let healthy_left = self.fault_after.saturating_sub(self.produced);
            let data_fault = match self.fault {
                Some(f @ (Fault::Stuck0 | Fault::Stuck1 | Fault::Repeat | Fault::Bias))
                    if healthy_left == 0 =>
                {
                    Some(f)
                }
                _ => None,
            };
            let n = match data_fault {
                None if self.fault.is_some() && healthy_left > 0 => {
                    (out.len() - done).min(usize::try_from(healthy_left).unwrap_or(usize::MAX))
                }
                _ => out.len() - done,
            };
            let chunk = &mut out[done..done + n];
            match data_fault {
                None => self.fill_biased(chunk, self.p16),
                Some(Fault::Stuck0) => chunk.fill(0),
                Some(Fault::Stuck1) => chunk.fill(0xFF),
                Some(Fault::Repeat) => {
                    let w = match self.repeat_word {
                        Some(w) => w,
                        None => {
                            let mut w = [0u8; 4];
                            self.rng.fill_bytes(&mut w);
                            self.repeat_word = Some(w);
                            w
                        }
                    };
                    // Phase follows the absolute byte count so a repeated word stays aligned
                    // with the 32-bit words of the FIFO or DMA stream.
                    for (i, b) in chunk.iter_mut().enumerate() {
                        *b = w[((self.produced as usize) + i) % 4];
                    }
                }
                Some(_) => self.fill_biased(chunk, p16_of(FAULT_BIAS)),
            }
            self.produced += n as u64;
            done += n;
        }
    }

    fn fill_biased(&mut self, out: &mut [u8], p16: u32) {
        if p16 == 1 << (BIAS_DIGITS - 1) {
            self.rng.fill_bytes(out);
            return;
        }
        if p16 == 0 || p16 >= 1 << BIAS_DIGITS {
            out.fill(if p16 == 0 { 0 } else { 0xFF });
            return;
        }
        // Each output bit is [U < p] for a uniform 16-bit U, computed for 64 bits in parallel:
        // walking p's binary digits from the least significant set one upwards, a digit 1 gives
        // res = !u | res and a digit 0 gives res = !u & res (u: the next random word).
        let low = p16.trailing_zeros();
        for chunk in out.chunks_mut(8) {
            let mut res = 0u64;
            for d in low..BIAS_DIGITS {
                let u = self.rng.next_u64();
                res = if p16 & (1 << d) != 0 { !u | res } else { !u & res };
            }
            chunk.copy_from_slice(&res.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Paces a source at a byte rate in wall-clock time; rate 0 means unlimited.
#[derive(Debug)]
pub struct Pace {
    bytes_per_s: f64,
    last: Instant,
    frac: f64,
}

impl Pace {
    pub fn new(bytes_per_s: f64) -> Pace {
        Pace { bytes_per_s, last: Instant::now(), frac: 0.0 }
    }

    pub fn unlimited(&self) -> bool {
        self.bytes_per_s <= 0.0
    }

    /// Restarts the clock (a source was just switched on or its rate changed).
    pub fn restart(&mut self, bytes_per_s: f64) {
        self.bytes_per_s = bytes_per_s;
        self.last = Instant::now();
        self.frac = 0.0;
    }

    /// Whole bytes produced since the previous call (u64::MAX when unlimited).
    pub fn due(&mut self) -> u64 {
        if self.unlimited() {
            return u64::MAX;
        }
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let b = dt * self.bytes_per_s + self.frac;
        let whole = b.floor();
        self.frac = b - whole;
        whole as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ones_fraction(n: &mut Noise, bytes: usize) -> f64 {
        let mut v = vec![0u8; bytes];
        n.fill(&mut v);
        v.iter().map(|b| f64::from(b.count_ones())).sum::<f64>() / (8.0 * bytes as f64)
    }

    #[test]
    fn sim_noise_is_reproducible_with_a_seed_and_splits_freely() {
        let mut a = Noise::new([7; 32], 0.0, None, 0);
        let mut b = Noise::new([7; 32], 0.0, None, 0);
        let mut x = vec![0u8; 10_000];
        let mut y = vec![0u8; 10_000];
        a.fill(&mut x);
        b.fill(&mut y[..3]);
        b.fill(&mut y[3..]);
        assert_eq!(x, y);
        assert_ne!(
            Noise::new([8; 32], 0.0, None, 0).rng.next_u64(),
            Noise::new([7; 32], 0.0, None, 0).rng.next_u64()
        );
    }

    #[test]
    fn sim_noise_bias_moves_the_ones_fraction() {
        // 8 Mbit per estimate: the standard deviation is 1.8e-4, so ±0.005 is > 25 sigma.
        let f0 = ones_fraction(&mut Noise::new([1; 32], 0.0, None, 0), 1 << 20);
        assert!((f0 - 0.5).abs() < 0.005, "{f0}");
        let f1 = ones_fraction(&mut Noise::new([1; 32], 0.1, None, 0), 1 << 20);
        assert!((f1 - 0.6).abs() < 0.005, "{f1}");
        let f2 = ones_fraction(&mut Noise::new([1; 32], -0.3, None, 0), 1 << 20);
        assert!((f2 - 0.2).abs() < 0.005, "{f2}");
    }

    #[test]
    fn sim_noise_faults_start_exactly_after_the_byte_count() {
        let mut n = Noise::new([2; 32], 0.0, Some(Fault::Stuck1), 1000);
        let mut v = vec![0u8; 3000];
        n.fill(&mut v[..600]);
        n.fill(&mut v[600..]);
        assert!(v[1000..].iter().all(|&b| b == 0xFF));
        assert!(v[..1000].iter().filter(|&&b| b == 0xFF).count() < 20);
        let mut r = Noise::new([2; 32], 0.0, Some(Fault::Repeat), 6);
        let mut w = vec![0u8; 30];
        r.fill(&mut w);
        assert_eq!(w[8..12], w[12..16]);
        assert_eq!(w[8..12], w[24..28]);
        assert_ne!(w[8..12], [0; 4]);
    }
}
