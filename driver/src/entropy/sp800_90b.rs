//! SP 800-90B entropy assessment of a card's raw output (the `sp800-90b` crate does the
//! statistics): a fresh sample for `probe --assess` and the daemon's start-up check, and the
//! 1000 × 1000 restart matrix of §3.1.4. docs/entropy.md, "Assessing a card with SP 800-90B", says
//! how to use them.

use crate::card::Card;
use crate::entropy::SampleWidth;
use sp800_90b::{non_iid, Dataset, NonIidReport};

/// Samples assessed by `probe --assess` (§3.1.1 asks for at least 1,000,000).
pub const DEFAULT_ASSESS_SAMPLES: usize = sp800_90b::MIN_SAMPLES;

/// Rows and columns of the restart matrix (§3.1.4.1: 1000 restarts of 1000 samples).
pub const RESTARTS: usize = 1000;
pub const RESTART_SAMPLES: usize = 1000;

/// Errors of an assessment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read samples from the card")]
    Read(#[source] crate::card::Error),
    #[error("failed to restart the card (restart {restart} of {RESTARTS})")]
    Restart {
        restart: usize,
        #[source]
        source: crate::card::Error,
    },
    #[error(transparent)]
    Assess(#[from] sp800_90b::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads exactly `buf.len()` bytes from a started card.
pub fn read_samples(card: &mut dyn Card, buf: &mut [u8]) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        done += card.read(&mut buf[done..]).map_err(Error::Read)?;
    }
    Ok(())
}

/// The data set for raw card bytes: one 8-bit sample per byte, or 8 one-bit samples per byte (most
/// significant bit first) when the health tests count bits.
pub fn dataset(raw: &[u8], sample: SampleWidth) -> Result<Dataset> {
    Ok(match sample {
        SampleWidth::Byte => Dataset::new(raw, Some(8))?,
        SampleWidth::Bit => Dataset::new(&sp800_90b::data::to_bits(raw, 8), Some(1))?,
    })
}

/// Non-IID assessment of raw card bytes. The result's `h_assessed` is bits per sample of `sample`.
pub fn assess_raw(raw: &[u8], sample: SampleWidth) -> Result<NonIidReport> {
    Ok(non_iid(&dataset(raw, sample)?)?)
}

/// Whether a claimed min-entropy per sample is more than the samples support.
pub fn claim_exceeds(claim: f64, report: &NonIidReport) -> bool {
    claim > report.h_assessed
}

/// Collects the restart matrix: `RESTARTS` times, stops and starts the card (the daemon's reset
/// path) and keeps the first `RESTART_SAMPLES` bytes it delivers. Row i is restart i. The card is
/// left stopped.
pub fn restart_matrix(card: &mut dyn Card) -> Result<Vec<u8>> {
    let mut m = vec![0u8; RESTARTS * RESTART_SAMPLES];
    for (i, row) in m.chunks_exact_mut(RESTART_SAMPLES).enumerate() {
        card.stop()
            .and_then(|()| card.start())
            .map_err(|source| Error::Restart { restart: i, source })?;
        read_samples(card, row)?;
    }
    let _ = card.stop();
    Ok(m)
}

/// Samples (bytes) of the daemon's start-up assessment by default: enough for a meaningful bound
/// (the estimates' confidence bounds tighten with the count), assessed in well under a second.
pub const DEFAULT_STARTUP_SAMPLES: usize = 300_000;

/// What the start-up assessment found.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The claimed min-entropy per sample (`--min-entropy`).
    pub claim: f64,
    /// The assessed min-entropy per sample.
    pub assessed: f64,
    /// Bytes assessed.
    pub bytes: usize,
}

impl Verdict {
    pub fn claim_exceeds(&self) -> bool {
        self.claim > self.assessed
    }
}

/// The daemon's start-up assessment: keeps a copy of the first raw bytes the card delivers (the
/// ones the health tests see anyway, so start-up waits for nothing) and, once it has enough,
/// assesses them on a background thread and logs a warning when the claim exceeds the result.
#[derive(Debug)]
pub struct StartupCheck {
    want: usize,
    buf: Vec<u8>,
    claim: f64,
    sample: SampleWidth,
    worker: Option<std::thread::JoinHandle<Option<Verdict>>>,
}

impl StartupCheck {
    /// None when `bytes` is 0 (the check is off).
    pub fn new(bytes: usize, claim: f64, sample: SampleWidth) -> Option<Self> {
        (bytes > 0).then(|| StartupCheck {
            want: bytes,
            buf: Vec::with_capacity(bytes),
            claim,
            sample,
            worker: None,
        })
    }

    /// Takes raw bytes as read from the card; starts the assessment once enough have come.
    pub fn feed(&mut self, raw: &[u8]) {
        if self.worker.is_some() || self.buf.len() >= self.want {
            return;
        }
        let take = raw.len().min(self.want - self.buf.len());
        self.buf.extend_from_slice(&raw[..take]);
        if self.buf.len() < self.want {
            return;
        }
        let (buf, claim, sample) = (std::mem::take(&mut self.buf), self.claim, self.sample);
        let spawned = std::thread::Builder::new().name("sp800-90b".into()).spawn(move || {
            let verdict = match assess_raw(&buf, sample) {
                Ok(r) => Verdict { claim, assessed: r.h_assessed, bytes: buf.len() },
                Err(e) => {
                    tracing::warn!(error = %e, "start-up SP 800-90B assessment failed");
                    return None;
                }
            };
            if verdict.claim_exceeds() {
                tracing::warn!(
                    claim = verdict.claim,
                    assessed = verdict.assessed,
                    bytes = verdict.bytes,
                    "the claimed --min-entropy exceeds what the card's raw samples support \
                     (SP 800-90B non-IID assessment of the first raw bytes); lower --min-entropy \
                     or assess the card (docs/entropy.md, \"Assessing a card with SP 800-90B\")"
                );
            } else {
                tracing::info!(
                    claim = verdict.claim,
                    assessed = verdict.assessed,
                    bytes = verdict.bytes,
                    "start-up SP 800-90B assessment supports the claimed --min-entropy"
                );
            }
            Some(verdict)
        });
        match spawned {
            Ok(h) => self.worker = Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the SP 800-90B assessment thread")
            }
        }
    }

    /// Waits for the assessment (None if it never started or failed).
    pub fn wait(self) -> Option<Verdict> {
        self.worker.and_then(|h| h.join().ok().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::sim::noise::Noise;

    fn noise(seed: u8, bias: f64, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        Noise::new([seed; 32], bias, None, 0).fill(&mut v);
        v
    }

    #[test]
    fn startup_check_flags_a_claim_a_biased_source_does_not_support() {
        // P(1) = 0.65 per bit: about 8 × 0.62 = 5 bits per byte, well under a 6.4 claim.
        let mut check = StartupCheck::new(200_000, 6.4, SampleWidth::Byte).expect("on");
        for chunk in noise(1, 0.15, 250_000).chunks(65_536) {
            check.feed(chunk);
        }
        let v = check.wait().expect("assessed");
        assert_eq!(v.bytes, 200_000);
        assert!(v.claim_exceeds(), "{v:?}");
    }

    #[test]
    fn startup_check_accepts_the_claim_of_an_ideal_source() {
        let mut check = StartupCheck::new(200_000, 6.4, SampleWidth::Byte).expect("on");
        check.feed(&noise(2, 0.0, 200_000));
        let v = check.wait().expect("assessed");
        assert!(!v.claim_exceeds(), "{v:?}");
        assert!(StartupCheck::new(0, 6.4, SampleWidth::Byte).is_none());
    }

    #[test]
    fn bit_samples_are_assessed_per_bit() {
        let r = assess_raw(&noise(3, 0.0, 50_000), SampleWidth::Bit).expect("assessed");
        assert_eq!(r.bits_per_symbol, 1);
        assert_eq!(r.samples, 400_000);
        // The compression estimate is the lowest on ideal bits (about 0.8 at this length).
        assert!(r.h_assessed > 0.75 && r.h_assessed <= 1.0, "{r:?}");
    }
}
