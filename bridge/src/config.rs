//! Command-line and environment configuration of `qrng-bridge` (clap derive; every flag also has an
//! environment variable).
//!
//! This file is compiled twice: into the library, and by `build.rs`, which renders the man page
//! qrng-bridge(8) and the bash, zsh and fish completions from [`Config`] so that they never drift
//! from `--help`. Outside `lib_only!` it may name only std, clap and `crate::fuse::DevLink` (for
//! which build.rs has a stand-in); what needs the rest of the crate goes inside `lib_only!`, which
//! the build script drops.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

lib_only! {
use std::time::Duration;
use crate::dispenser::DispenserConfig;
use crate::http::{HttpConfig, HttpError, RateLimit};
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Placement of the HTTP workers on CPUs (see `http::server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CpuAffinity {
    /// Pin when there is one worker per allowed CPU, and steer connections to their CPU's worker.
    Auto,
    /// Never pin; connections go to the least loaded worker.
    Off,
}

/// qrng-bridge: serves Quantis QRNG rings as a FUSE device file and an HTTP API.
#[derive(Debug, Clone, Parser)]
#[command(name = "qrng-bridge", version, about)]
pub struct Config {
    /// A ring published by quantis-driver (repeatable; the device is named after the file stem).
    #[arg(long = "ring", value_name = "PATH", env = "QRNG_RINGS", value_delimiter = ',')]
    pub rings: Vec<PathBuf>,

    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8080", env = "QRNG_LISTEN")]
    pub listen: SocketAddr,

    /// Do not serve HTTP.
    #[arg(long, env = "QRNG_NO_HTTP")]
    pub no_http: bool,

    /// Directory for the FUSE device files (one per ring).
    #[arg(long, default_value = "/run/qrng/dev", env = "QRNG_MOUNT")]
    pub mount: PathBuf,

    /// Symlink to a device file: PATH (the device named after the link, e.g. /dev/qrng0) or
    /// PATH=DEVICE (e.g. /dev/qrandom0=qrng0 for IDQ software); repeatable.
    #[arg(long, value_name = "PATH[=DEVICE]", env = "QRNG_DEV_LINK", value_delimiter = ',')]
    pub dev_link: Vec<crate::fuse::DevLink>,

    /// Permission bits of the FUSE device files (octal).
    #[arg(long, default_value = "444", value_parser = parse_mode, env = "QRNG_FUSE_MODE")]
    pub fuse_mode: u16,

    /// Accept IDQ's reset/enable/disable ioctls on the device files as no-ops (the bridge has no
    /// device access; the driver owns the card) instead of refusing them with EPERM.
    #[arg(long, env = "QRNG_ALLOW_CONTROL_IOCTLS")]
    pub allow_control_ioctls: bool,

    /// Directory watched for rings (hot-plug): every `*.ring` file there is attached while it exists.
    #[arg(long, default_value = "/run/qrng", env = "QRNG_RING_DIR")]
    pub ring_dir: PathBuf,

    /// Do not watch the ring directory: serve only the `--ring` paths.
    #[arg(long, env = "QRNG_NO_WATCH")]
    pub no_watch: bool,

    /// Do not mount the FUSE device files.
    #[arg(long, env = "QRNG_NO_FUSE")]
    pub no_fuse: bool,

    /// Largest `length` for /api/v1/random/bytes (413 above).
    #[arg(long, default_value_t = 1 << 20, env = "QRNG_MAX_BYTES")]
    pub max_bytes: usize,

    /// Largest `count` for integers, floats and UUIDs (413 above).
    #[arg(long, default_value_t = 10_000, env = "QRNG_MAX_COUNT")]
    pub max_count: usize,

    /// How long an HTTP request waits for entropy before 503, in milliseconds.
    #[arg(long, default_value_t = 2000, env = "QRNG_WAIT_MS")]
    pub wait_ms: u64,

    /// Retry-After seconds sent with 503.
    #[arg(long, default_value_t = 1, env = "QRNG_RETRY_AFTER")]
    pub retry_after: u64,

    /// Per-client (IP) rate limit on the random endpoints, requests per second; 0 = off.
    #[arg(long, default_value_t = 0.0, env = "QRNG_RATE_LIMIT")]
    pub rate_limit: f64,

    /// Burst allowed above the rate limit.
    #[arg(long, default_value_t = 20, env = "QRNG_RATE_BURST")]
    pub rate_burst: u32,

    /// File of accepted bearer tokens, one per line; without it the API is open.
    #[arg(long, value_name = "PATH", env = "QRNG_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// A producer heartbeat older than this (ms) marks the device degraded.
    #[arg(long, default_value_t = 3000, env = "QRNG_HEARTBEAT_TIMEOUT_MS")]
    pub heartbeat_timeout_ms: u64,

    /// HTTP worker threads, each serving its connections on its own; 0 = one per CPU.
    #[arg(long, default_value_t = 0, env = "QRNG_HTTP_THREADS")]
    pub http_threads: usize,

    /// auto: with one HTTP worker per allowed CPU, pin each worker to its CPU and give each
    /// connection to the worker on the CPU its packets arrive on; off: let the scheduler place
    /// the workers (hosts shared with CPU-heavy jobs).
    #[arg(long, value_enum, default_value = "auto", env = "QRNG_HTTP_CPU_AFFINITY")]
    pub http_cpu_affinity: CpuAffinity,

    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "QRNG_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// Parses octal permission bits (at most 0o777).
fn parse_mode(s: &str) -> Result<u16, String> {
    u16::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?}: expected octal permission bits such as 444 or 440"))
}

lib_only! {
impl Config {
    pub fn dispenser(&self) -> DispenserConfig {
        DispenserConfig {
            heartbeat_timeout: Duration::from_millis(self.heartbeat_timeout_ms),
            ..DispenserConfig::default()
        }
    }

    /// The HTTP settings; reads the token file.
    pub fn http(&self) -> Result<HttpConfig, HttpError> {
        let tokens = self.tokens_file.as_deref().map(crate::http::read_tokens).transpose()?;
        Ok(HttpConfig {
            max_bytes: self.max_bytes,
            max_count: self.max_count,
            wait: Duration::from_millis(self.wait_ms),
            retry_after: self.retry_after,
            rate_limit: (self.rate_limit > 0.0)
                .then_some(RateLimit { per_second: self.rate_limit, burst: self.rate_burst }),
            tokens,
            threads: self.http_threads,
            pin: self.http_cpu_affinity == CpuAffinity::Auto,
            drain: crate::http::server::DRAIN_LIMIT,
        })
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_repeatable_rings() {
        let c = Config::try_parse_from([
            "qrng-bridge",
            "--ring",
            "/run/qrng/a.ring",
            "--ring",
            "/b.ring",
        ])
        .expect("parse");
        assert_eq!(c.rings, vec![PathBuf::from("/run/qrng/a.ring"), PathBuf::from("/b.ring")]);
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.mount, PathBuf::from("/run/qrng/dev"));
        assert!(!c.no_fuse);
        assert_eq!(c.ring_dir, PathBuf::from("/run/qrng"));
        assert_eq!(c.fuse_mode, 0o444);
        assert!(c.dev_link.is_empty() && !c.allow_control_ioctls && !c.no_watch);
        let h = c.http().expect("http");
        assert_eq!(h.max_bytes, 1 << 20);
        assert!(h.rate_limit.is_none());
        assert!(h.tokens.is_none());
        assert!(h.pin, "CPU placement is on by default");
        assert_eq!(h.threads, 0);
    }

    #[test]
    fn cpu_affinity_can_be_turned_off() {
        let c =
            Config::try_parse_from(["qrng-bridge", "--http-cpu-affinity", "off"]).expect("parse");
        assert!(!c.http().expect("http").pin);
        let c =
            Config::try_parse_from(["qrng-bridge", "--http-cpu-affinity", "auto"]).expect("parse");
        assert!(c.http().expect("http").pin);
        assert!(Config::try_parse_from(["qrng-bridge", "--http-cpu-affinity", "3"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::try_parse_from(["qrng-bridge", "--listen", "nowhere"]).is_err());
        assert!(Config::try_parse_from(["qrng-bridge", "--log-format", "xml"]).is_err());
        assert!(Config::try_parse_from(["qrng-bridge", "--fuse-mode", "999"]).is_err());
        assert!(Config::try_parse_from(["qrng-bridge", "--fuse-mode", "1777"]).is_err());
        assert!(Config::try_parse_from(["qrng-bridge", "--dev-link", "/dev/x=a/b"]).is_err());
        let c =
            Config::try_parse_from(["qrng-bridge", "--rate-limit", "5", "--log-format", "json"])
                .expect("parse");
        assert_eq!(
            c.http().expect("http").rate_limit,
            Some(RateLimit { per_second: 5.0, burst: 20 })
        );
        assert_eq!(c.log_format, LogFormat::Json);
    }
}
