//! Command line of `qrng-feeder`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Where the bytes come from (`--source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `file:PATH`: the bridge's device file (/dev/qrng0) or a plain file.
    File(PathBuf),
    /// `ring:PATH`: a ring published by quantis-driver, read as its one consumer.
    Ring(PathBuf),
    /// `https://HOST[:PORT]`: a remote bridge's /api/v1/random/bytes.
    Remote(String),
}

fn parse_source(s: &str) -> Result<SourceSpec, String> {
    if let Some(p) = s.strip_prefix("file:") {
        (!p.is_empty())
            .then(|| SourceSpec::File(p.into()))
            .ok_or_else(|| "file: needs a path".into())
    } else if let Some(p) = s.strip_prefix("ring:") {
        (!p.is_empty())
            .then(|| SourceSpec::Ring(p.into()))
            .ok_or_else(|| "ring: needs a path".into())
    } else if s.starts_with("https://") {
        Ok(SourceSpec::Remote(s.trim_end_matches('/').to_owned()))
    } else {
        Err(format!("{s:?}: expected file:PATH, ring:PATH or https://HOST[:PORT]"))
    }
}

fn parse_bits_per_byte(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| (0.0..=8.0).contains(v))
        .ok_or_else(|| format!("{s:?}: expected a number of bits from 0 to 8"))
}

/// qrng-feeder: credits the Linux kernel's random pool with bytes from a Quantis card.
#[derive(Debug, Clone, Parser)]
#[command(name = "qrng-feeder", version, about)]
pub struct Config {
    /// Where to read: file:PATH (the bridge's device file, e.g. file:/dev/qrng0, or a file of
    /// bytes), ring:PATH (a quantis-driver ring no bridge serves) or https://HOST[:PORT] (a
    /// remote bridge).
    #[arg(long, value_name = "SOURCE", value_parser = parse_source,
          default_value = "file:/dev/qrng0", env = "QRNG_FEEDER_SOURCE")]
    pub source: SourceSpec,

    /// Entropy credited per byte, in bits (0-8). The card's bytes passed SP 800-90B health
    /// tests; the default credits half, a margin for a card whose bytes are not full entropy.
    #[arg(long, default_value_t = 4.0, value_parser = parse_bits_per_byte,
          env = "QRNG_FEEDER_BITS_PER_BYTE")]
    pub bits_per_byte: f64,

    /// Bytes per addition (one RNDADDENTROPY call).
    #[arg(long, default_value_t = 64, env = "QRNG_FEEDER_CHUNK",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096))]
    pub chunk: usize,

    /// Seconds between additions once the kernel's CRNG is ready (the kernel reseeds it from
    /// the input pool every 60 s).
    #[arg(long, default_value_t = 60, env = "QRNG_FEEDER_INTERVAL_SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub interval_secs: u64,

    /// Most bytes added at start while the CRNG is not ready; then the feeder goes on at its
    /// interval whatever the kernel says.
    #[arg(long, default_value_t = 4096, env = "QRNG_FEEDER_BOOT_MAX_BYTES")]
    pub boot_max_bytes: usize,

    /// Feed until the CRNG is ready (or one chunk when it already is), print the counters and
    /// exit: 0 when every addition was accepted and the CRNG is ready.
    #[arg(long)]
    pub once: bool,

    /// Print whether the kernel's CRNG is ready (crng_ready=0|1) and exit.
    #[arg(long)]
    pub status: bool,

    /// The user besides root who may own a ring:PATH ring (quantis-driver's), as a uid.
    #[arg(long, value_name = "UID", env = "QRNG_FEEDER_RING_OWNER")]
    pub ring_owner: Option<u32>,

    /// Milliseconds one read may wait for the source before it counts as a source error.
    #[arg(long, default_value_t = 10_000, env = "QRNG_FEEDER_READ_TIMEOUT_MS")]
    pub read_timeout_ms: u64,

    /// Client certificate (PEM) for a remote bridge that requires mutual TLS.
    #[arg(long, value_name = "PATH", env = "QRNG_FEEDER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PATH", env = "QRNG_FEEDER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA certificates (PEM) to verify the remote bridge with, instead of Mozilla's roots.
    #[arg(long, value_name = "PATH", env = "QRNG_FEEDER_CA")]
    pub ca: Option<PathBuf>,

    /// File holding the bearer token for a remote bridge (one line).
    #[arg(long, value_name = "PATH", env = "QRNG_FEEDER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// The random device the ioctl goes to.
    #[arg(long, default_value = "/dev/random", env = "QRNG_FEEDER_RANDOM_DEVICE")]
    pub random_device: PathBuf,
}

impl Config {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_sources() {
        let c = Config::try_parse_from(["qrng-feeder"]).expect("parse");
        assert_eq!(c.source, SourceSpec::File("/dev/qrng0".into()));
        assert_eq!((c.bits_per_byte, c.chunk, c.interval_secs), (4.0, 64, 60));
        let c = Config::try_parse_from(["qrng-feeder", "--source", "ring:/run/qrng/qrng0.ring"])
            .expect("parse");
        assert_eq!(c.source, SourceSpec::Ring("/run/qrng/qrng0.ring".into()));
        let c = Config::try_parse_from(["qrng-feeder", "--source", "https://qrng.example:8443/"])
            .expect("parse");
        assert_eq!(c.source, SourceSpec::Remote("https://qrng.example:8443".into()));
        for bad in [
            &["--source", "http://plain"][..],
            &["--source", "file:"],
            &["--bits-per-byte", "9"],
            &["--bits-per-byte", "-1"],
            &["--chunk", "0"],
            &["--chunk", "4097"],
            &["--interval-secs", "0"],
            &["--tls-cert", "/c.pem"],
        ] {
            let args = std::iter::once("qrng-feeder").chain(bad.iter().copied());
            assert!(Config::try_parse_from(args).is_err(), "{bad:?}");
        }
    }
}
