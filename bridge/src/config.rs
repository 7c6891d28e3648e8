//! Command-line and environment configuration of `qrng-bridge` (clap derive; every flag also has an
//! environment variable).
//!
//! This file is compiled twice: into the library, and by `build.rs`, which renders the man page
//! qrng-bridge(8) and the bash, zsh and fish completions from [`Config`] so that they never drift
//! from `--help`. Outside `lib_only!` it may name only std, clap, `crate::fuse::DevLink` (for
//! which build.rs has a stand-in) and the connection limits' defaults (`http/server/defaults.rs`,
//! which build.rs includes); what needs the rest of the crate goes inside `lib_only!`, which the
//! build script drops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, ValueEnum};

use crate::http::server::limits;

lib_only! {
use std::time::Duration;
use crate::dispenser::DispenserConfig;
use crate::http::server::limits::ConnLimits;
use crate::http::{CorsOrigins, FailureLimit, HttpConfig, HttpError, RateLimit};
use crate::beacon::BeaconConfig;
use crate::http::server::tls::{Tls, TlsError};
use crate::http::server::UnixAccess;
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

    /// Where to serve HTTP; repeatable, each listener with its own scheme: ADDR (HTTPS when
    /// --tls-cert is given, else plain HTTP), http://ADDR, https://ADDR (needs --tls-cert), or
    /// unix:PATH (plain HTTP on a Unix socket; see --unix-socket-mode). Example: --listen
    /// https://[::]:8443 --listen http://127.0.0.1:8080 (HTTPS on the network, plain HTTP for a
    /// local metrics scraper).
    #[arg(
        long,
        value_name = "LISTENER",
        default_value = "127.0.0.1:8080",
        env = "QRNG_LISTEN",
        value_delimiter = ','
    )]
    pub listen: Vec<Listen>,

    /// TLS certificate (PEM): the server's certificate first, then its chain (e.g. certbot's
    /// fullchain.pem). Reloaded on SIGHUP and when the file changes.
    #[arg(long, value_name = "FILE", env = "QRNG_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, or RSA/EC; RSA, ECDSA P-256/P-384 or Ed25519) of
    /// --tls-cert. Reloaded with it.
    #[arg(long, value_name = "FILE", env = "QRNG_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: CA certificates (PEM); HTTPS clients must present a certificate that chains
    /// to one of them, or the handshake fails. Bearer tokens (--tokens-file) still apply.
    #[arg(long, value_name = "FILE", env = "QRNG_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Milliseconds from accepting an HTTPS connection until its TLS handshake is complete;
    /// then the connection is closed.
    #[arg(long, default_value_t = limits::DEFAULT_TLS_HANDSHAKE_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..),
          env = "QRNG_TLS_HANDSHAKE_TIMEOUT_MS")]
    pub tls_handshake_timeout_ms: u64,

    /// Most concurrent streams (requests) per HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_HTTP2_MAX_STREAMS,
          value_parser = clap::value_parser!(u32).range(1..), env = "QRNG_HTTP2_MAX_STREAMS")]
    pub http2_max_streams: u32,

    /// Permission bits (octal) of unix: listeners' socket files; connecting needs write
    /// permission.
    #[arg(long, default_value = "660", value_parser = parse_mode, env = "QRNG_UNIX_SOCKET_MODE")]
    pub unix_socket_mode: u16,

    /// Group (name or gid) of unix: listeners' socket files; default: the process's.
    #[arg(long, value_name = "GROUP", env = "QRNG_UNIX_SOCKET_GROUP")]
    pub unix_socket_group: Option<String>,

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

    /// The user besides root who may own the rings and their directory (quantis-driver's; name
    /// or uid). Rings owned by anyone else, or that the group or others can write, are refused.
    /// Default: the packaged user `qrng`, or root alone where it does not exist.
    #[arg(long, value_name = "USER", env = "QRNG_RING_OWNER")]
    pub ring_owner: Option<String>,

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

    /// Failed token checks a client address may make per window before it gets 429 without a
    /// check until the window ends; 0 = no limit.
    #[arg(long, default_value_t = 10, env = "QRNG_AUTH_MAX_FAILURES")]
    pub auth_max_failures: u32,

    /// The window of --auth-max-failures, in seconds, from a client's first failure.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..),
          env = "QRNG_AUTH_FAILURE_WINDOW_SECS")]
    pub auth_failure_window_secs: u64,

    /// Most open HTTP connections; at the cap, new ones wait in the listen backlog. Without it:
    /// 4096, lowered to fit the open-file limit; with it, start-up fails if the limit cannot hold
    /// it (with --http-reserved-fds and the descriptors already open).
    #[arg(long, value_name = "N", env = "QRNG_HTTP_MAX_CONNECTIONS",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub http_max_connections: Option<usize>,

    /// Most open HTTP connections per client address (an IPv6 client's /64); more get 429 and
    /// are closed. 0 = no per-client cap.
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_PER_CLIENT,
          env = "QRNG_HTTP_MAX_CONNECTIONS_PER_CLIENT")]
    pub http_max_connections_per_client: usize,

    /// Milliseconds from connecting until the first request head is complete; then the
    /// connection is closed.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..),
          env = "QRNG_HTTP_HEADER_TIMEOUT_MS")]
    pub http_header_timeout_ms: u64,

    /// Milliseconds a kept-alive connection may take, after an answer, until its next request
    /// head is complete; then it is closed.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..),
          env = "QRNG_HTTP_IDLE_TIMEOUT_MS")]
    pub http_idle_timeout_ms: u64,

    /// Largest request head (request line and headers) in bytes; larger gets 431.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_HEADER_BYTES, env = "QRNG_HTTP_MAX_HEADER_BYTES",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(limits::MIN_HEADER_BYTES as u64..=(1 << 20)))]
    pub http_max_header_bytes: usize,

    /// Connections the kernel queues completed until they are accepted (listen backlog; capped by
    /// net.core.somaxconn). At the connection cap new clients wait here.
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_LISTEN_BACKLOG,
          env = "QRNG_HTTP_LISTEN_BACKLOG",
          value_parser = clap::value_parser!(u32).range(1..=(i32::MAX as i64)))]
    pub http_listen_backlog: u32,

    /// File descriptors kept free for everything but HTTP connections (rings, FUSE, files read
    /// briefly), beyond those open at start-up.
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_RESERVED_FDS,
          env = "QRNG_HTTP_RESERVED_FDS")]
    pub http_reserved_fds: usize,

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

    /// Host names (or host:port) whose `Host` header /mcp accepts, repeatable (protection of a
    /// local MCP endpoint against DNS rebinding); `*` accepts any. Default: localhost, 127.0.0.1
    /// and ::1 (name the bridge's public host names when agents reach it over the network).
    #[arg(
        long = "mcp-allowed-host",
        value_name = "HOST",
        default_value = "localhost,127.0.0.1,::1",
        env = "QRNG_MCP_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub mcp_allowed_hosts: Vec<String>,

    /// A mixed device: `[NAME=]DEV,DEV[,...]` serves the XOR of equal-length blocks taken once
    /// from each member card (repeatable; unnamed mixes are mix0, mix1, ... in order). Servable
    /// only while every member is (see --mix-degrade).
    #[arg(long = "mix", value_name = "[NAME=]DEV,DEV", value_parser = parse_mix)]
    pub mix: Vec<MixSpec>,

    /// A mixed device with some members failed, stopped or missing XORs the members that can
    /// serve (failed only when none can), instead of failing.
    #[arg(long, env = "QRNG_MIX_DEGRADE")]
    pub mix_degrade: bool,
    /// An origin (scheme://host[:port]) whose web pages may call the API from a browser (CORS);
    /// repeatable; `*` allows any origin. Without it no CORS header is sent.
    #[arg(
        long = "cors-origin",
        value_name = "ORIGIN",
        env = "QRNG_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Randomness beacon: the PEM RSA private key (PKCS#8, 2048 to 8192 bits, mode 0600) that
    /// signs the pulses. Given, the bridge publishes a pulse in NIST's beacon 2.0 format every
    /// --beacon-period under /beacon/2.0/ (docs/beacon.md); without it, no beacon.
    #[arg(long, value_name = "PATH", env = "QRNG_BEACON_KEY")]
    pub beacon_key: Option<PathBuf>,

    /// The X.509 certificate of --beacon-key (PEM or DER), served to verifiers. Default: a
    /// self-signed one, made once and kept as beacon-cert.pem next to --beacon-db.
    #[arg(long, value_name = "PATH", env = "QRNG_BEACON_CERT")]
    pub beacon_cert: Option<PathBuf>,

    /// Seconds between beacon pulses (pulses fall on multiples of it since the Unix epoch).
    #[arg(long, value_name = "SECONDS", default_value_t = 60, env = "QRNG_BEACON_PERIOD",
          value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub beacon_period: u32,

    /// The beacon's SQLite database of pulses, certificates and the committed next value (a
    /// restart continues the chain from it). Its directory must exist and be writable.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/var/lib/qrng/beacon.sqlite",
        env = "QRNG_BEACON_DB"
    )]
    pub beacon_db: PathBuf,

    /// Base URL in the pulses' `uri` fields, as clients reach the bridge (e.g.
    /// https://beacon.example.org). Default: http:// and the --listen address.
    #[arg(long, value_name = "URL", env = "QRNG_BEACON_URL")]
    pub beacon_url: Option<String>,

    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "QRNG_LOG_FORMAT")]
    pub log_format: LogFormat,

    // --- EGD server (virtio-rng for virtual machines; docs/egd.md) ---
    /// Serve the EGD protocol (QEMU rng-egd, libvirt <backend model='egd'>) on a Unix socket
    /// (unix:PATH) or a TCP address (tcp:ADDR, unauthenticated: bind it to a trusted network);
    /// repeatable.
    #[arg(long, value_name = "unix:PATH|tcp:ADDR", env = "QRNG_EGD_LISTEN",
          value_delimiter = ',', value_parser = parse_egd_listen)]
    pub egd_listen: Vec<EgdListen>,

    /// Most EGD clients connected at once over all --egd-listen sockets; more are closed as
    /// they connect.
    #[arg(long, value_name = "N", default_value_t = 64, env = "QRNG_EGD_MAX_CLIENTS",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub egd_max_clients: usize,

    /// Permission bits of the EGD Unix sockets (octal); a client needs write permission.
    #[arg(long, default_value = "660", value_parser = parse_mode, env = "QRNG_EGD_SOCKET_MODE")]
    pub egd_socket_mode: u16,
}

/// Where the EGD server listens (`--egd-listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgdListen {
    /// A Unix stream socket at this path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

/// Parses `unix:PATH` or `tcp:ADDR`.
fn parse_egd_listen(s: &str) -> Result<EgdListen, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a socket path, e.g. unix:/run/qrng/egd.sock".to_owned());
        }
        Ok(EgdListen::Unix(PathBuf::from(path)))
    } else if let Some(addr) = s.strip_prefix("tcp:") {
        addr.parse()
            .map(EgdListen::Tcp)
            .map_err(|e| format!("tcp:{addr}: {e} (expected e.g. tcp:127.0.0.1:7777)"))
    } else {
        Err(format!("{s:?}: expected unix:PATH or tcp:ADDR"))
    }
}

/// One `--mix`: an optional name and the member devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixSpec {
    pub name: Option<String>,
    pub members: Vec<String>,
}

/// Parses `[NAME=]DEV,DEV[,...]`.
fn parse_mix(s: &str) -> Result<MixSpec, String> {
    let (name, list) = match s.split_once('=') {
        Some((n, l)) => (Some(n.trim().to_owned()), l),
        None => (None, s),
    };
    let valid = |d: &str| {
        !d.is_empty() && d.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if let Some(n) = name.as_deref().filter(|n| !valid(n)) {
        return Err(format!("{n:?}: a device name is letters, digits, '-', '_' and '.'"));
    }
    let members: Vec<String> = list.split(',').map(|m| m.trim().to_owned()).collect();
    if let Some(bad) = members.iter().find(|m| !valid(m)) {
        return Err(format!("{bad:?} in {s:?}: expected [NAME=]DEV,DEV such as qrng0,qrng1"));
    }
    if members.len() < 2 {
        return Err(format!("{s:?}: a mix needs at least two devices, e.g. qrng0,qrng1"));
    }
    Ok(MixSpec { name, members })
}

/// Parses octal permission bits (at most 0o777).
fn parse_mode(s: &str) -> Result<u16, String> {
    u16::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?}: expected octal permission bits such as 444 or 440"))
}

/// Where the HTTP server listens (`--listen`; docs/api.md "Listeners, TLS and HTTP/2").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address; `tls`: `Some` when the scheme was given (`https://` or `http://`), `None`
    /// for a bare address (HTTPS exactly when --tls-cert is given).
    Tcp { addr: SocketAddr, tls: Option<bool> },
    /// A Unix socket (plain HTTP).
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let addr = |a: &str| {
            a.parse::<SocketAddr>().map_err(|_| {
                format!(
                    "{s:?}: expected ADDR:PORT (e.g. 127.0.0.1:8080, [::]:8443), \
                     http://ADDR:PORT, https://ADDR:PORT or unix:/PATH"
                )
            })
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{s:?}: a unix: listener needs an absolute path (unix:/run/qrng/http.sock)"
                ));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(a) = s.strip_prefix("https://") {
            return Ok(Self::Tcp { addr: addr(a.trim_end_matches('/'))?, tls: Some(true) });
        }
        if let Some(a) = s.strip_prefix("http://") {
            return Ok(Self::Tcp { addr: addr(a.trim_end_matches('/'))?, tls: Some(false) });
        }
        Ok(Self::Tcp { addr: addr(s)?, tls: None })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp { addr, tls: Some(true) } => write!(f, "https://{addr}"),
            Self::Tcp { addr, tls: Some(false) } => write!(f, "http://{addr}"),
            Self::Tcp { addr, tls: None } => write!(f, "{addr}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A listener as it is bound: the scheme decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Tcp { addr: SocketAddr, tls: bool },
    Unix(PathBuf),
}

/// The packaged driver user (systemd/quantis-qrng.sysusers).
pub const DEFAULT_RING_OWNER: &str = "qrng";

lib_only! {
impl Config {
    pub fn dispenser(&self) -> DispenserConfig {
        DispenserConfig {
            heartbeat_timeout: Duration::from_millis(self.heartbeat_timeout_ms),
            ..DispenserConfig::default()
        }
    }

    /// Who may own the rings: root and `--ring-owner` (a name, or a uid).
    pub fn ring_trust(&self) -> Result<qrng_ring::Trust, String> {
        let Some(owner) = self.ring_owner.as_deref() else {
            return Ok(match nix::unistd::User::from_name(DEFAULT_RING_OWNER) {
                Ok(Some(u)) => qrng_ring::Trust::owner(u.uid.as_raw()),
                _ => {
                    tracing::warn!(
                        user = DEFAULT_RING_OWNER,
                        "the driver user does not exist: only root-owned rings are served \
                         (create it with systemd-sysusers, or pass --ring-owner)"
                    );
                    qrng_ring::Trust::root_only()
                }
            });
        };
        if let Ok(uid) = owner.parse::<u32>() {
            return Ok(qrng_ring::Trust::owner(uid));
        }
        match nix::unistd::User::from_name(owner) {
            Ok(Some(u)) => Ok(qrng_ring::Trust::owner(u.uid.as_raw())),
            Ok(None) => Err(format!(
                "--ring-owner {owner}: no such user (give the user quantis-driver runs as, by name or uid)"
            )),
            Err(e) => Err(format!("--ring-owner {owner}: cannot look the user up: {e}")),
        }
    }

    /// The EGD server's settings.
    pub fn egd(&self) -> crate::egd::EgdConfig {
        crate::egd::EgdConfig {
            listen: self.egd_listen.clone(),
            max_clients: self.egd_max_clients,
            socket_mode: u32::from(self.egd_socket_mode),
        }
    }

    /// The pulses' base URL without --beacon-url: the first TCP listener, `https://` when it
    /// serves TLS.
    fn default_beacon_url(&self) -> String {
        let have_cert = self.tls_cert.is_some();
        self.listen
            .iter()
            .find_map(|l| match l {
                Listen::Tcp { addr, tls } => {
                    let scheme = if tls.unwrap_or(have_cert) { "https" } else { "http" };
                    Some(format!("{scheme}://{addr}"))
                }
                Listen::Unix(_) => None,
            })
            .unwrap_or_else(|| "http://localhost".to_owned())
    }

    /// The beacon settings, when --beacon-key is given.
    pub fn beacon(&self) -> Option<BeaconConfig> {
        let key = self.beacon_key.clone()?;
        Some(BeaconConfig {
            key,
            cert: self.beacon_cert.clone(),
            db: self.beacon_db.clone(),
            period_secs: self.beacon_period,
            base_url: self.beacon_url.clone().unwrap_or_else(|| self.default_beacon_url()),
        })
    }

    /// The listeners with their schemes decided (see [`Listen`]).
    pub fn binds(&self) -> Result<Vec<Bind>, String> {
        let have_cert = self.tls_cert.is_some();
        let binds: Vec<Bind> = self
            .listen
            .iter()
            .map(|l| match l {
                Listen::Tcp { addr, tls: Some(true) } if !have_cert => Err(format!(
                    "--listen {l}: HTTPS needs --tls-cert and --tls-key"
                )),
                Listen::Tcp { addr, tls } => Ok(Bind::Tcp { addr: *addr, tls: tls.unwrap_or(have_cert) }),
                Listen::Unix(p) => Ok(Bind::Unix(p.clone())),
            })
            .collect::<Result<_, _>>()?;
        if self.tls_client_ca.is_some() && !binds.iter().any(|b| matches!(b, Bind::Tcp { tls: true, .. })) {
            return Err("--tls-client-ca is given, but no --listen serves HTTPS".into());
        }
        Ok(binds)
    }

    /// The TLS settings, when --tls-cert is given: the files loaded and checked (an error names
    /// the file).
    pub fn tls(&self) -> Result<Option<Tls>, TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        Tls::load(cert, key, self.tls_client_ca.as_deref()).map(Some)
    }

    /// Who may connect to unix: listeners.
    pub fn unix_access(&self) -> UnixAccess {
        UnixAccess { mode: u32::from(self.unix_socket_mode), group: self.unix_socket_group.clone() }
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
            auth_failures: (self.auth_max_failures > 0).then(|| FailureLimit {
                max: self.auth_max_failures,
                window: Duration::from_secs(self.auth_failure_window_secs),
            }),
            conn: ConnLimits {
                max_connections: self.http_max_connections,
                per_client: self.http_max_connections_per_client,
                header_timeout: Duration::from_millis(self.http_header_timeout_ms),
                idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
                max_header_bytes: self.http_max_header_bytes,
                reserved_fds: self.http_reserved_fds,
                handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms),
                http2_max_streams: self.http2_max_streams,
            },
            threads: self.http_threads,
            pin: self.http_cpu_affinity == CpuAffinity::Auto,
            drain: crate::http::server::DRAIN_LIMIT,
            mcp_allowed_hosts: if self.mcp_allowed_hosts.iter().any(|h| h == "*") {
                Vec::new()
            } else {
                self.mcp_allowed_hosts.clone()
            },
            cors: CorsOrigins::from_args(&self.cors_origins).map_err(HttpError::Config)?,
            beacon: None,
        })
    }
}
}

#[cfg(test)]
#[path = "config/tests.rs"]
mod tests;
