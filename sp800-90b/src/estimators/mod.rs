//! The ten min-entropy estimators of SP 800-90B §6.3. Each returns bits per sample of the data it is
//! given (per bit for the bitstring); `None` where the reference tool finds the estimate not
//! applicable (too few samples, no tuple repeated 35 times, …), which leaves it out of the minimum.

mod collision;
mod compression;
mod dict;
mod lag;
mod lz78y;
mod markov;
mod mcv;
mod mcw;
mod mmc;
mod predict;
mod tuple;

pub use collision::collision;
pub use compression::compression;
pub use lag::lag;
pub use lz78y::lz78y;
pub use markov::markov;
pub use mcv::most_common_value;
pub use mcw::multi_mcw;
pub use mmc::multi_mmc;
pub use predict::prediction_estimate;
pub use tuple::{longest_repeat, t_tuple_and_lrs, TupleEstimates};

/// Tally of a predictor (§6.3.7–6.3.10): correct predictions C out of N, and the longest run of
/// correct predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Predictions {
    pub correct: u64,
    pub total: u64,
    pub longest_run: u64,
}

impl Predictions {
    /// The min-entropy estimate from this tally for an alphabet of `k` symbols (§6.3.7 step 4 ff.).
    pub fn estimate(&self, k: usize) -> f64 {
        prediction_estimate(self.correct, self.total, self.longest_run, k)
    }
}

/// A run counter over predictions.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    correct: u64,
    run: u64,
    longest: u64,
}

impl Tally {
    #[inline]
    pub(crate) fn hit(&mut self) {
        self.correct += 1;
        self.run += 1;
        if self.run > self.longest {
            self.longest = self.run;
        }
    }

    #[inline]
    pub(crate) fn miss(&mut self) {
        self.run = 0;
    }

    /// `hit()` or `miss()` without a branch.
    #[inline]
    pub(crate) fn record(&mut self, hit: bool) {
        let h = u64::from(hit);
        self.correct += h;
        self.run = (self.run + 1) * h;
        self.longest = self.longest.max(self.run);
    }

    pub(crate) fn finish(self, total: u64) -> Predictions {
        Predictions { correct: self.correct, total, longest_run: self.longest }
    }
}
