//! Entropy pipeline: SP 800-90B start-up and continuous health tests on raw samples, then
//! optional conditioning (von Neumann, IDQ-style matrix, Toeplitz), behind one fail-closed
//! [`Gate`] that the daemon feeds raw card bytes and that returns only publishable bytes.
//!
//! See `docs/entropy.md` for which bytes can reach a client around an alarm and why.

pub mod extract;
pub mod health;
mod kernels;
pub mod sp800_22;
pub mod sp800_90b;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use extract::Shape;
pub use health::SampleWidth;
use qrng_ring::{HealthParams, Reason};
pub use sp800_22::{assess, AssessReport};

/// Errors of the entropy module (configuration and extractor files).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid entropy configuration: {0}")]
    Config(String),
    #[error("invalid extractor spec {spec:?}: {why}")]
    BadSpec { spec: String, why: String },
    #[error("failed to {op} {what} file {path}: {source}")]
    Io {
        op: &'static str,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} file {path} {why}")]
    BadFile { what: &'static str, path: PathBuf, why: String },
    #[error("failed to {op}: {source}")]
    Source {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where extractor matrices and seeds live by default (architecture.md: state in /var/lib/qrng).
pub const STATE_DIR: &str = "/var/lib/qrng";
/// Default matrix file for `--extractor matrix`.
pub const DEFAULT_MATRIX_FILE: &str = "/var/lib/qrng/extractor-matrix.bin";
/// Default seed file for `--extractor toeplitz`.
pub const DEFAULT_TOEPLITZ_SEED: &str = "/var/lib/qrng/toeplitz-seed.bin";
/// Elementary matrices XORed together by make-matrix / seed creation (IDQ requires ≥ 2).
pub const DEFAULT_ELEMENTARY: usize = 4;
/// Undersampling period for make-matrix / seed creation (IDQ: N ≥ 13).
pub const DEFAULT_UNDERSAMPLING: usize = 16;

/// `none | von-neumann | matrix[:FILE] | toeplitz[:FILE]`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ExtractorSpec {
    #[default]
    None,
    VonNeumann,
    /// IDQ matrix; `None` means [`DEFAULT_MATRIX_FILE`].
    Matrix(Option<PathBuf>),
    /// Toeplitz; `None` means [`DEFAULT_TOEPLITZ_SEED`] (created from the card on first use by
    /// [`ensure_toeplitz_seed`]).
    Toeplitz(Option<PathBuf>),
}

impl ExtractorSpec {
    /// The file this extractor reads, with defaults applied (None for file-less extractors).
    pub fn file(&self) -> Option<PathBuf> {
        match self {
            ExtractorSpec::None | ExtractorSpec::VonNeumann => None,
            ExtractorSpec::Matrix(p) => {
                Some(p.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_MATRIX_FILE)))
            }
            ExtractorSpec::Toeplitz(p) => {
                Some(p.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_TOEPLITZ_SEED)))
            }
        }
    }

    /// Short name: "none", "von-neumann", "matrix", "toeplitz".
    pub fn kind(&self) -> &'static str {
        match self {
            ExtractorSpec::None => "none",
            ExtractorSpec::VonNeumann => "von-neumann",
            ExtractorSpec::Matrix(_) => "matrix",
            ExtractorSpec::Toeplitz(_) => "toeplitz",
        }
    }
}

impl FromStr for ExtractorSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::BadSpec { spec: s.to_owned(), why: why.to_owned() };
        let (kind, file) = match s.split_once(':') {
            Some((k, f)) => {
                if f.is_empty() {
                    return Err(bad("empty file name after ':'"));
                }
                (k, Some(PathBuf::from(f)))
            }
            None => (s, None),
        };
        match (kind, file) {
            ("none", None) => Ok(ExtractorSpec::None),
            ("von-neumann", None) => Ok(ExtractorSpec::VonNeumann),
            ("none" | "von-neumann", Some(_)) => Err(bad("this extractor takes no file")),
            ("matrix", f) => Ok(ExtractorSpec::Matrix(f)),
            ("toeplitz", f) => Ok(ExtractorSpec::Toeplitz(f)),
            _ => Err(bad("expected none, von-neumann, matrix[:FILE] or toeplitz[:FILE]")),
        }
    }
}

impl fmt::Display for ExtractorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtractorSpec::Matrix(Some(p)) | ExtractorSpec::Toeplitz(Some(p)) => {
                write!(f, "{}:{}", self.kind(), p.display())
            }
            _ => f.write_str(self.kind()),
        }
    }
}

/// Health-test and conditioning configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct EntropyConfig {
    /// Claimed min-entropy H in bits per sample (per bit in `Bit` mode, per byte in `Byte` mode).
    pub min_entropy: f64,
    /// α = 2^−alpha_log2, the false-alarm probability per test window.
    pub alpha_log2: u32,
    pub sample: SampleWidth,
    pub extractor: ExtractorSpec,
}

impl EntropyConfig {
    /// Default claimed min-entropy for a sample width: 0.8 bit per bit, 6.4 bits per byte.
    ///
    /// No public SP 800-90B estimate exists for Quantis (quantis-hardware.md). 0.8 bit/bit is a
    /// deliberately modest claim: it tolerates a bias up to P(1) = 2^−0.8 ≈ 0.574 (the simulator's
    /// `bias=0.05` source, P = 0.55, has 0.86), and it is what IDQ's 1024 → 768 matrix needs
    /// (819 bits in, 768 out). 6.4 = 8 × 0.8 for byte samples.
    pub fn default_min_entropy(sample: SampleWidth) -> f64 {
        match sample {
            SampleWidth::Bit => 0.8,
            SampleWidth::Byte => 6.4,
        }
    }

    fn health_params(&self) -> Result<health::Params> {
        health::Params::new(self.sample, self.min_entropy, self.alpha_log2).map_err(Error::Config)
    }
}

impl Default for EntropyConfig {
    fn default() -> Self {
        EntropyConfig {
            min_entropy: EntropyConfig::default_min_entropy(SampleWidth::Byte),
            alpha_log2: 30,
            sample: SampleWidth::Byte,
            extractor: ExtractorSpec::None,
        }
    }
}

/// A health alarm: the batch that raised it published nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alarm {
    pub reason: Reason,
    /// Which test, where and what count; never sample values.
    pub detail: String,
}

impl fmt::Display for Alarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for Alarm {}

impl From<&health::Failure> for Alarm {
    fn from(f: &health::Failure) -> Alarm {
        let reason = match (f.startup, f.test) {
            (true, _) => Reason::StartupTest,
            (false, health::Test::RepetitionCount) => Reason::RepetitionCount,
            (false, health::Test::AdaptiveProportion) => Reason::AdaptiveProportion,
        };
        Alarm { reason, detail: f.to_string() }
    }
}

#[derive(Debug)]
enum Conditioner {
    None,
    VonNeumann(extract::VonNeumann),
    Matrix(extract::Blocked<extract::MatrixExtractor>),
    Toeplitz(extract::Blocked<extract::ToeplitzExtractor>),
}

impl Conditioner {
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        match self {
            Conditioner::None => out.extend_from_slice(input),
            Conditioner::VonNeumann(v) => v.feed(input, out),
            Conditioner::Matrix(m) => m.feed(input, out),
            Conditioner::Toeplitz(t) => t.feed(input, out),
        }
    }
    fn reset(&mut self) {
        match self {
            Conditioner::None => {}
            Conditioner::VonNeumann(v) => v.reset(),
            Conditioner::Matrix(m) => m.reset(),
            Conditioner::Toeplitz(t) => t.reset(),
        }
    }
}

/// The fail-closed gate between the card and the ring: health tests, start-up discard,
/// conditioning.
#[derive(Debug)]
pub struct Gate {
    tester: health::HealthTester,
    cond: Conditioner,
    name: String,
    /// Raw bytes that passed the tests as start-up samples and were withheld (never published).
    withheld: u64,
}

impl Gate {
    /// Validates the configuration and loads the matrix or seed file now (a missing or short
    /// file is an error here, not at first use).
    pub fn new(cfg: &EntropyConfig) -> Result<Gate> {
        let params = cfg.health_params()?;
        let (cond, name) = match &cfg.extractor {
            ExtractorSpec::None => (Conditioner::None, "none".to_owned()),
            ExtractorSpec::VonNeumann => {
                (Conditioner::VonNeumann(extract::VonNeumann::new()), "von-neumann".to_owned())
            }
            spec @ ExtractorSpec::Matrix(_) => {
                let path = spec.file().expect("matrix has a file");
                let m = extract::MatrixExtractor::load(&path)?;
                let s = m.shape();
                (Conditioner::Matrix(extract::Blocked::new(m)), format!("matrix-{}x{}", s.n, s.k))
            }
            spec @ ExtractorSpec::Toeplitz(_) => {
                let path = spec.file().expect("toeplitz has a file");
                let t = extract::ToeplitzExtractor::load(&path)?;
                let s = t.shape();
                let name = format!("toeplitz-{}x{}", s.n, s.k);
                (Conditioner::Toeplitz(extract::Blocked::new(t)), name)
            }
        };
        Ok(Gate { tester: health::HealthTester::new(params), cond, name, withheld: 0 })
    }

    /// Call after every card start or reset: the start-up test must pass again, and any
    /// partial extractor block from before is dropped.
    pub fn restart(&mut self) {
        self.tester.restart();
        self.cond.reset();
    }

    /// Health-tests `raw` and appends to `out` only conditioned bytes that may be published.
    /// On `Err` nothing from this batch was appended, and every later call fails too until
    /// [`Gate::restart`]. Start-up samples are discarded, not published.
    pub fn process(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), Alarm> {
        let before = self.tester.samples();
        if let Err(f) = self.tester.process(raw) {
            // Partial extractor blocks may hold bytes of this source just before the failure.
            self.cond.reset();
            return Err(Alarm::from(&f));
        }
        let p = self.tester.params();
        let startup_bytes = p.startup_bytes();
        let seen_bytes = before * u64::from(p.width.bits()) / 8;
        let skip = startup_bytes.saturating_sub(seen_bytes).min(raw.len() as u64) as usize;
        self.withheld += skip as u64;
        self.cond.feed(&raw[skip..], out);
        Ok(())
    }

    /// Raw bytes withheld as start-up samples since the gate was made (they passed the tests and
    /// are never published).
    pub fn startup_withheld(&self) -> u64 {
        self.withheld
    }

    /// True once the start-up test has passed since the last restart.
    pub fn started(&self) -> bool {
        self.tester.startup_done()
    }

    /// The cutoffs in force, for the ring status line and `probe`.
    pub fn params(&self) -> HealthParams {
        let p = self.tester.params();
        HealthParams {
            min_entropy_milli: (p.min_entropy * 1000.0).round() as u32,
            rct_cutoff: p.rct_cutoff,
            apt_window: p.apt_window,
            apt_cutoff: p.apt_cutoff,
        }
    }

    /// Full health parameters (sample width, α, start-up length).
    pub fn health_params(&self) -> &health::Params {
        self.tester.params()
    }

    /// "none", "von-neumann", "matrix-1024x768", "toeplitz-1024x768", …
    pub fn extractor_name(&self) -> &str {
        &self.name
    }
}

/// Makes sure a Toeplitz seed exists at `path`, creating it (mode 0600, default 1024 → 768 shape)
/// from `source` (card bytes) if it does not. Returns the path. An existing file of the wrong
/// size is an error and is left alone. The seed bytes are never logged.
pub fn ensure_toeplitz_seed(
    path: &Path,
    mut source: impl FnMut(&mut [u8]) -> io::Result<()>,
) -> Result<PathBuf> {
    if path.exists() {
        extract::ToeplitzExtractor::load(path)?;
        return Ok(path.to_owned());
    }
    let shape = Shape::S1024_768;
    let seed = extract::xor_layers(
        shape.seed_bytes(),
        DEFAULT_ELEMENTARY,
        DEFAULT_UNDERSAMPLING,
        &mut source,
    )?;
    extract::write_secret_file(path, "toeplitz seed", &seed)?;
    tracing::info!(path = %path.display(), n = shape.n, k = shape.k, "created toeplitz seed");
    Ok(path.to_owned())
}

/// `make-matrix`: builds an IDQ-layout matrix from `source` (card bytes) and writes it to `out`
/// with mode 0600. `elementary` ≥ 2 layers, undersampling `every_nth` ≥ 13.
pub fn make_matrix_file(
    out: &Path,
    shape: Shape,
    elementary: usize,
    every_nth: usize,
    mut source: impl FnMut(&mut [u8]) -> io::Result<()>,
) -> Result<()> {
    if !Shape::OFFERED.contains(&shape) {
        return Err(Error::Config(format!(
            "matrix shape {}x{} is not one of 1024x768, 2048x1792",
            shape.n, shape.k
        )));
    }
    let m = extract::make_matrix(shape, elementary, every_nth, &mut source)?;
    extract::write_secret_file(out, "matrix", &m)?;
    tracing::info!(path = %out.display(), n = shape.n, k = shape.k, "wrote extractor matrix");
    Ok(())
}

#[cfg(test)]
mod tests;
