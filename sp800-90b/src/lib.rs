//! NIST SP 800-90B entropy assessment.
//!
//! * [`Dataset`] reads samples the way NIST's reference tool (usnistgov/SP800-90B_EntropyAssessment,
//!   `cpp/shared/utils.h` `read_file_subset`) does: one sample per byte, the low `bits_per_symbol`
//!   bits; the symbols that occur are renumbered 0.. in increasing order, and the bitstring is every
//!   sample's bits, most significant first.
//! * [`non_iid`] runs the ten estimators of §6.3 and combines them into H_original, H_bitstring and the
//!   assessed min-entropy as §3.1.3 does.
//! * [`iid`] runs the permutation tests (§5.1) and the chi-square and LRS tests (§5.2).
//! * [`restart`] runs the restart tests of §3.1.4 on a 1000 × 1000 matrix.
//!
//! The reference tool is the oracle: every estimator follows its conventions (which estimators run on
//! which data, the bounds of its binary searches, when an estimate is "not applicable"), and
//! `tests/reference.rs` compares with figures it printed. Where the specification and the tool differ,
//! this crate follows the tool and says so next to the code.

pub mod data;
pub mod estimators;
pub mod iid;
pub mod non_iid;
pub mod restart;
mod search;

pub use data::Dataset;
pub use non_iid::{non_iid, Estimate, NonIidReport};

/// The smallest sample count §3.1.1 asks for (the reference tool warns below it).
pub const MIN_SAMPLES: usize = 1_000_000;

/// The upper 99.5 % point of the standard normal distribution (Z_{1-α/2} for α = 0.01, §6.3).
pub const ZALPHA: f64 = 2.575_829_303_548_901;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no samples to assess")]
    Empty,
    #[error("bits per symbol must be 1 to 8, not {0}")]
    BitsPerSymbol(u32),
    #[error("samples use {used} bits, more than the {given} bits per symbol given")]
    TooWide { used: u32, given: u32 },
    #[error("every sample is the same symbol: no entropy")]
    OneSymbol,
    #[error("too few samples for {what}: {have}, need at least {need}")]
    TooFew { what: &'static str, have: usize, need: usize },
    #[error("claimed min-entropy {0} is outside 0..={1} bits per symbol")]
    Claim(f64, u32),
    #[error("failed to build a suffix array: {0}")]
    SuffixArray(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
