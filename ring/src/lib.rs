//! The shared-memory ring between one `quantis-driver` (producer) and one `qrng-bridge` consumer.
//!
//! One file = a 4 KiB header page + a power-of-two data area. The producer publishes by advancing
//! `tail` (total bytes ever written), the consumer consumes by advancing `head` (total bytes ever
//! read); both are free-running u64s, reduced modulo the capacity only to address the data area.
//! As in io_uring, each side stores its own index with Release after touching the data and loads
//! the peer's with Acquire before touching the data, and each side keeps a private cached copy of
//! the peer's index so the shared line is read only when the cache says full (producer) or empty
//! (consumer).
//!
//! The peer is untrusted: everything read from the header is loaded once, validated, and only the
//! validated local copy is used. Validation failures are typed [`Error`]s. The normative
//! description of the format is `docs/ring-abi.md`.
//!
//! This crate is all that both processes share: the ring, the vocabulary of its status line
//! ([`Health`], [`Reason`], [`Identity`], [`HealthParams`], [`StatusSnapshot`]) and the test
//! pattern (feature `test-util`). Its `unsafe` code is confined to `shm` (the mapping: atomics and
//! volatile copies through raw pointers, and the OFD lock call), `sigbus` (the SIGBUS handler that
//! survives a file truncated under its mapping) and `consumer` (a [`Lease`]'s slice over lent
//! bytes, for the kernel to copy from); each block names its invariant. Who may own a ring a
//! consumer attaches to is [`Trust`] (docs/ring-abi.md, "Trust model").

mod consumer;
pub mod layout;
#[cfg(any(test, feature = "test-util"))]
pub mod pattern;
mod producer;
mod shm;
mod sigbus;
mod trust;

use std::fmt;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use consumer::{Consumer, Lease};
pub use producer::Producer;
pub use trust::Trust;

use layout::*;
use shm::Shared;

/// Which side of the ring a handle is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Producer,
    Consumer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        })
    }
}

/// Everything that can be wrong with a ring file or its peer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ring {path}: file is {len} bytes, too short for its header and data area")]
    Truncated { path: PathBuf, len: u64 },
    #[error("ring {path}: bad magic {found:#018x} (not a qrng ring file)")]
    BadMagic { path: PathBuf, found: u64 },
    #[error("ring {path}: ABI version {found} is not supported (this build speaks {ABI_VERSION})")]
    BadVersion { path: PathBuf, found: u32 },
    #[error("ring {path}: header length {header_len} / data offset {data_offset} do not match ABI {ABI_VERSION}")]
    BadLayout { path: PathBuf, header_len: u32, data_offset: u64 },
    #[error("ring {path}: capacity {capacity} is not a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}")]
    CapacityNotPowerOfTwo { path: PathBuf, capacity: u64 },
    #[error("ring {path}: head {head} is beyond tail {tail}")]
    HeadBeyondTail { path: PathBuf, head: u64, tail: u64 },
    #[error("ring {path}: tail {tail} is more than the capacity {capacity} ahead of head {head}")]
    TailTooFarAhead { path: PathBuf, head: u64, tail: u64, capacity: u64 },
    #[error("ring {path}: {index} went backwards from {was} to {now}")]
    IndexWentBack { path: PathBuf, index: &'static str, was: u64, now: u64 },
    #[error("ring {path}: unknown health code {health} / reason code {reason} in the status line")]
    BadStatus { path: PathBuf, health: u32, reason: u32 },
    #[error("ring {path}: another {role} is attached (only one at a time)")]
    AlreadyAttached { role: Role, path: PathBuf },
    #[error("ring {path}: invalid options: {reason}")]
    BadOptions { path: PathBuf, reason: String },
    #[error("ring {path}: refused: the {what} {problem}; whoever can write it could feed chosen bytes to every client. Fix: {fix}")]
    Untrusted { path: PathBuf, what: &'static str, problem: String, fix: String },
    #[error("ring {path}: the file was truncated under its mapping (SIGBUS); nothing read from it since is used, and nothing is published")]
    Broken { path: PathBuf },
    #[error("ring {path}: the producer reports {health} ({reason}): nothing is served")]
    NotServing { path: PathBuf, health: Health, reason: Reason },
    #[error("ring {path}: the file was {how} after attach")]
    Replaced { path: PathBuf, how: &'static str },
    #[error("ring {path}: header field {field} changed after attach from {was:#x} to {now:#x}")]
    HeaderChanged { path: PathBuf, field: &'static str, was: u64, now: u64 },
    #[error("ring {path}: published bytes {from}..{to} of the data area were never written (a hole in the file)")]
    Hole { path: PathBuf, from: u64, to: u64 },
    #[error("ring {path}: failed to {op}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Spacing of the health poll's hole samples ([`Attached::sample_holes`]).
const HOLE_SAMPLE: u64 = 1 << 20;

impl Error {
    /// A stable kebab-case name of the error kind, for device reasons, logs and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Truncated { .. } => "ring-truncated",
            Error::BadMagic { .. } | Error::BadVersion { .. } | Error::BadLayout { .. } => {
                "ring-bad-header"
            }
            Error::CapacityNotPowerOfTwo { .. } => "ring-bad-capacity",
            Error::HeadBeyondTail { .. }
            | Error::TailTooFarAhead { .. }
            | Error::IndexWentBack { .. } => "ring-bad-index",
            Error::BadStatus { .. } => "ring-bad-status",
            Error::AlreadyAttached { .. } => "ring-already-attached",
            Error::BadOptions { .. } => "ring-bad-options",
            Error::Untrusted { .. } => "ring-untrusted",
            Error::Broken { .. } => "ring-truncated-under-mapping",
            Error::NotServing { .. } => "ring-not-serving",
            Error::Replaced { .. } => "ring-replaced",
            Error::HeaderChanged { .. } => "ring-header-changed",
            Error::Hole { .. } => "ring-hole",
            Error::Io { .. } => "ring-io",
        }
    }

    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io { op, path: path.into(), source }
    }
}

/// How a producer creates a ring file that does not exist yet.
#[derive(Clone, Debug)]
pub struct RingOptions {
    /// Size of the data area in bytes: a power of two, at least 4 KiB.
    pub capacity: u64,
    /// Permission bits of a newly created file (umask does not apply).
    pub mode: u32,
    /// Group of a newly created file; `None` keeps the creator's.
    pub group: Option<u32>,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions { capacity: DEFAULT_CAPACITY, mode: 0o640, group: None }
    }
}

/// The source's health as published by the producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u32)]
pub enum Health {
    /// Attached, start-up tests not yet passed: nothing is being published.
    Starting = 1,
    /// Publishing bytes that passed the health tests.
    Ok = 2,
    /// A health test or the card failed: nothing new is published.
    Failed = 3,
    /// The producer shut down (or the card is gone).
    Stopped = 4,
}

/// Why the health is what it is. Wire values are fixed by the ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u32)]
pub enum Reason {
    None = 0,
    StartupTest = 1,
    RepetitionCount = 2,
    AdaptiveProportion = 3,
    ModuleFailure = 4,
    ChipError = 5,
    DmaError = 6,
    DeviceGone = 7,
    RecoveryExhausted = 8,
    Shutdown = 9,
    /// The card delivered no bytes for longer than its data watchdog allows, with no error
    /// reported (a stalled FIFO or an idle DMA engine).
    NoData = 10,
    Other = 255,
}

impl Health {
    /// Every health, in wire-value order.
    pub const ALL: [Health; 4] = [Health::Starting, Health::Ok, Health::Failed, Health::Stopped];

    /// The health with wire value `code`, if any.
    pub fn from_code(code: u32) -> Option<Health> {
        Health::ALL.into_iter().find(|h| *h as u32 == code)
    }
}

impl Reason {
    /// The stable kebab-case name of the reason (`repetition-count`), as in docs/ring-abi.md,
    /// /health and the metrics' labels.
    pub fn code(self) -> &'static str {
        match self {
            Reason::None => "none",
            Reason::StartupTest => "startup-test",
            Reason::RepetitionCount => "repetition-count",
            Reason::AdaptiveProportion => "adaptive-proportion",
            Reason::ModuleFailure => "module-failure",
            Reason::ChipError => "chip-error",
            Reason::DmaError => "dma-error",
            Reason::DeviceGone => "device-gone",
            Reason::RecoveryExhausted => "recovery-exhausted",
            Reason::Shutdown => "shutdown",
            Reason::NoData => "no-data",
            Reason::Other => "other",
        }
    }

    /// Every reason, in wire-value order.
    pub const ALL: [Reason; 12] = [
        Reason::None,
        Reason::StartupTest,
        Reason::RepetitionCount,
        Reason::AdaptiveProportion,
        Reason::ModuleFailure,
        Reason::ChipError,
        Reason::DmaError,
        Reason::DeviceGone,
        Reason::RecoveryExhausted,
        Reason::Shutdown,
        Reason::NoData,
        Reason::Other,
    ];

    /// The reason with wire value `code`, if any.
    pub fn from_code(code: u32) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| *r as u32 == code)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Starting => "starting",
            Health::Ok => "ok",
            Health::Failed => "failed",
            Health::Stopped => "stopped",
        })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::None => "none",
            Reason::StartupTest => "start-up test failed",
            Reason::RepetitionCount => "repetition count test failed",
            Reason::AdaptiveProportion => "adaptive proportion test failed",
            Reason::ModuleFailure => "module failure",
            Reason::ChipError => "chip error",
            Reason::DmaError => "dma error",
            Reason::DeviceGone => "device gone",
            Reason::RecoveryExhausted => "recovery attempts exhausted",
            Reason::Shutdown => "shut down",
            Reason::NoData => "no data from the card",
            Reason::Other => "other",
        })
    }
}

/// What the card is, as shown to clients. Strings are stored in at most 31 bytes (longer ones are
/// cut at a character boundary).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    pub model: String,
    pub serial: String,
    /// Bit i set: module (or chip) i is enabled and healthy.
    pub modules: u32,
    /// The source is the simulator: every byte served from it must be labelled "simulated".
    pub simulated: bool,
    pub extractor: String,
    /// The card's raw version register (module cards: CV_SR; chip cards: the version register),
    /// as IDQ's GET_BOARD_VERSION ioctl reports it; 0 = unknown.
    pub board_version: u32,
    /// Bit i set: module (or chip) i is present, working or not (IDQ's GET_MODULES_MASK: the
    /// HEN bits); 0 = unknown (a producer that predates the field).
    pub modules_present: u32,
    /// Module card or chip card; `None` = unknown.
    pub family: Option<CardFamily>,
    /// Chip cards: the output mode the card runs in; `None` for module cards or unknown.
    pub chip_mode: Option<ChipMode>,
}

/// The two Quantis card families (wire values in the identity block: 0 = unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u32)]
pub enum CardFamily {
    /// Module cards (PIO from a FIFO): Quantis PCI, PCIe-4M, PCIe-16M.
    Module = 1,
    /// Chip cards (XDMA): PCIe-40M, PCIe-240M.
    Chip = 2,
}

/// A chip card's output mode (wire values in the identity block: 0 = unknown or module card).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u32)]
pub enum ChipMode {
    /// Post-processed by the card (IDQ's QRNG mode 0).
    Rng = 1,
    /// Raw samples (IDQ's QRNG mode 1).
    Sample = 2,
}

impl CardFamily {
    pub fn from_code(code: u32) -> Option<CardFamily> {
        match code {
            1 => Some(CardFamily::Module),
            2 => Some(CardFamily::Chip),
            _ => None,
        }
    }
}

impl ChipMode {
    pub fn from_code(code: u32) -> Option<ChipMode> {
        match code {
            1 => Some(ChipMode::Rng),
            2 => Some(ChipMode::Sample),
            _ => None,
        }
    }
}

/// The health-test parameters in force.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HealthParams {
    /// Claimed min-entropy H per sample, in thousandths of a bit.
    pub min_entropy_milli: u32,
    pub rct_cutoff: u32,
    pub apt_window: u32,
    pub apt_cutoff: u32,
}

/// A validated copy of the status line plus the indices.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StatusSnapshot {
    pub epoch: u64,
    /// CLOCK_BOOTTIME nanoseconds of the producer's last heartbeat (0: never).
    pub heartbeat_ns: u64,
    pub health: Health,
    pub reason: Reason,
    pub identity: Identity,
    pub params: HealthParams,
    pub raw_bytes_read: u64,
    pub bytes_published: u64,
    pub health_alarms: u64,
    pub bytes_dropped: u64,
    pub capacity: u64,
    pub head: u64,
    pub tail: u64,
}

impl StatusSnapshot {
    /// How long ago the producer last beat; `None` if it never did.
    pub fn heartbeat_age(&self) -> Option<Duration> {
        if self.heartbeat_ns == 0 {
            return None;
        }
        Some(Duration::from_nanos(boottime_ns().saturating_sub(self.heartbeat_ns)))
    }

    /// Whether the producer's heartbeat is too old to call the producer alive: it never beat, it
    /// beat more than `limit` ago, or its beat lies more than [`HEARTBEAT_AHEAD_TOLERANCE`] ahead
    /// of this host's clock (a beat from the future would otherwise look fresh for ever).
    pub fn heartbeat_stale(&self, limit: Duration) -> bool {
        if self.heartbeat_ns == 0 {
            return true;
        }
        let now = boottime_ns();
        if self.heartbeat_ns > now.saturating_add(HEARTBEAT_AHEAD_TOLERANCE.as_nanos() as u64) {
            return true;
        }
        Duration::from_nanos(now.saturating_sub(self.heartbeat_ns)) > limit
    }

    /// Bytes published and not yet consumed.
    pub fn fill(&self) -> u64 {
        self.tail - self.head
    }
}

/// How far ahead of the reader's clock a heartbeat may lie and still count. Both sides read the
/// same system-wide CLOCK_BOOTTIME, and a reader loads the heartbeat before it reads its clock, so
/// an honest beat is never ahead; the tolerance only absorbs a clock read on another CPU. (Peers
/// in different time namespaces, whose boot-time offsets differ, are not supported.)
pub const HEARTBEAT_AHEAD_TOLERANCE: Duration = Duration::from_millis(100);

/// Nanoseconds on CLOCK_BOOTTIME: shared by every process on the host, never jumps, counts suspend.
pub fn boottime_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| {
            (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64)
        })
        .unwrap_or(0)
}

/// An opened, locked, mapped and validated ring file; shared by both roles.
#[derive(Debug)]
struct Attached {
    path: PathBuf,
    file: File,
    shm: std::sync::Arc<Shared>,
    capacity: u64,
    /// (st_dev, st_ino) of the file attached: the path must keep naming it.
    id: (u64, u64),
}

impl Attached {
    /// Validates the header of an open file and maps it. Every value is loaded once.
    fn validate(file: File, path: &Path) -> Result<Attached> {
        let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
        let (len, id) = (meta.len(), (meta.dev(), meta.ino()));
        if len < HEADER_LEN {
            return Err(Error::Truncated { path: path.into(), len });
        }
        let header = Shared::map(&file, HEADER_LEN, path)?;
        let magic = header.load64(OFF_MAGIC, Ordering::Acquire);
        if magic != MAGIC {
            return Err(Error::BadMagic { path: path.into(), found: magic });
        }
        let version = header.load32(OFF_VERSION, Ordering::Relaxed);
        if version != ABI_VERSION {
            return Err(Error::BadVersion { path: path.into(), found: version });
        }
        let header_len = header.load32(OFF_HEADER_LEN, Ordering::Relaxed);
        let data_offset = header.load64(OFF_DATA_OFFSET, Ordering::Relaxed);
        if u64::from(header_len) != HEADER_LEN || data_offset != DATA_OFFSET {
            return Err(Error::BadLayout { path: path.into(), header_len, data_offset });
        }
        let capacity = header.load64(OFF_CAPACITY, Ordering::Relaxed);
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(Error::CapacityNotPowerOfTwo { path: path.into(), capacity });
        }
        let total = DATA_OFFSET + capacity;
        if len < total {
            return Err(Error::Truncated { path: path.into(), len });
        }
        if header.broken() {
            return Err(Error::Broken { path: path.into() });
        }
        drop(header);
        let shm = Shared::map(&file, total, path)?;
        Ok(Attached { path: path.into(), file, shm: std::sync::Arc::new(shm), capacity, id })
    }

    /// Errs if a SIGBUS replaced the mapping (the file was truncated under it).
    fn intact(&self) -> Result<()> {
        if self.shm.broken() {
            return Err(Error::Broken { path: self.path.clone() });
        }
        Ok(())
    }

    /// Checks what must never change after attach: the file still has its full length and a
    /// link, the path still names this file (not unlinked, not replaced), and the identity line
    /// still holds the values validated at attach. Called at every health poll.
    fn verify(&self) -> Result<()> {
        self.intact()?;
        let meta = self.file.metadata().map_err(|e| Error::io("stat", &self.path, e))?;
        if meta.len() < DATA_OFFSET + self.capacity {
            return Err(Error::Truncated { path: self.path.clone(), len: meta.len() });
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.id => {}
            Ok(_) => {
                return Err(Error::Replaced {
                    path: self.path.clone(),
                    how: "replaced by another file",
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Replaced { path: self.path.clone(), how: "unlinked" })
            }
            Err(e) => return Err(Error::io("stat", &self.path, e)),
        }
        if meta.nlink() == 0 {
            return Err(Error::Replaced { path: self.path.clone(), how: "unlinked" });
        }
        let s = &self.shm;
        let fields = [
            ("magic", s.load64(OFF_MAGIC, Ordering::Acquire), MAGIC),
            ("version", u64::from(s.load32(OFF_VERSION, Ordering::Relaxed)), ABI_VERSION.into()),
            ("header_len", u64::from(s.load32(OFF_HEADER_LEN, Ordering::Relaxed)), HEADER_LEN),
            ("data_offset", s.load64(OFF_DATA_OFFSET, Ordering::Relaxed), DATA_OFFSET),
            ("capacity", s.load64(OFF_CAPACITY, Ordering::Relaxed), self.capacity),
        ];
        // A SIGBUS during the loads above leaves zeros: report the truncation, not the zeros.
        self.intact()?;
        for (field, now, was) in fields {
            if now != was {
                return Err(Error::HeaderChanged { path: self.path.clone(), field, was, now });
            }
        }
        Ok(())
    }

    /// Refuses published bytes `head..tail` that lie in a hole of the file (never written):
    /// one `SEEK_HOLE` from the first of them, which walks to the next hole (on tmpfs, page by
    /// page). Used at attach; the health poll uses [`Self::sample_holes`].
    fn check_holes(&self, head: u64, tail: u64) -> Result<()> {
        self.each_piece(head, tail, |start, len, from| {
            let Ok(start_off) = i64::try_from(start) else { return Ok(()) };
            if let Ok(hole) =
                nix::unistd::lseek(&self.file, start_off, nix::unistd::Whence::SeekHole)
            {
                let hole = hole as u64;
                if hole < start + len {
                    return Err(Error::Hole {
                        path: self.path.clone(),
                        from: hole - DATA_OFFSET,
                        to: from + len,
                    });
                }
            }
            Ok(())
        })
    }

    /// The health poll's hole check of newly published bytes `from..to`: one `SEEK_DATA` at the
    /// first and last byte and every [`HOLE_SAMPLE`] bytes between, each answered at once for a
    /// written block (a full `SEEK_HOLE` walk would cost milliseconds per poll on a large tmpfs
    /// ring, under the device's lock). It catches a producer that moves its tail over space it
    /// never wrote; one that writes zeros, or leaves holes between the samples, can publish
    /// chosen bytes anyway (docs/ring-abi.md, Trust model).
    fn sample_holes(&self, from: u64, to: u64) -> Result<()> {
        self.each_piece(from, to, |start, len, at| {
            let last = start + len - 1;
            let samples = (start..last).step_by(HOLE_SAMPLE as usize).chain([last]);
            for off in samples {
                let Ok(o) = i64::try_from(off) else { continue };
                match nix::unistd::lseek(&self.file, o, nix::unistd::Whence::SeekData) {
                    Ok(d) if d as u64 <= off => {}
                    // ENXIO: no data at or after `off`; EINVAL and others: no answer, no verdict.
                    Ok(_) | Err(nix::errno::Errno::ENXIO) => {
                        return Err(Error::Hole {
                            path: self.path.clone(),
                            from: off - DATA_OFFSET,
                            to: at + len,
                        })
                    }
                    Err(_) => {}
                }
            }
            Ok(())
        })
    }

    /// Calls `f(file offset, length, data-area offset)` for the one or two contiguous pieces of
    /// the data area that stream bytes `head..tail` occupy.
    fn each_piece(
        &self,
        head: u64,
        tail: u64,
        mut f: impl FnMut(u64, u64, u64) -> Result<()>,
    ) -> Result<()> {
        let cap = self.capacity;
        let n = tail.saturating_sub(head).min(cap);
        let at = head & (cap - 1);
        let first = n.min(cap - at);
        for (from, len) in [(at, first), (0, n - first)] {
            if len > 0 {
                f(DATA_OFFSET + from, len, from)?;
            }
        }
        Ok(())
    }

    /// Loads head and tail once each and checks `head <= tail <= head + capacity`.
    fn indices(&self) -> Result<(u64, u64)> {
        let head = self.shm.load64(OFF_HEAD, Ordering::Acquire);
        let tail = self.shm.load64(OFF_TAIL, Ordering::Acquire);
        self.intact()?;
        self.check(head, tail)?;
        Ok((head, tail))
    }

    fn check(&self, head: u64, tail: u64) -> Result<()> {
        if head > tail {
            return Err(Error::HeadBeyondTail { path: self.path.clone(), head, tail });
        }
        if tail - head > self.capacity {
            return Err(Error::TailTooFarAhead {
                path: self.path.clone(),
                head,
                tail,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    fn status(&self) -> Result<StatusSnapshot> {
        let s = &self.shm;
        let (head, tail) = self.indices()?;
        let word = s.load64(OFF_HEALTH, Ordering::Acquire);
        let (hc, rc) = ((word >> 32) as u32, word as u32);
        let (Some(health), Some(reason)) = (Health::from_code(hc), Reason::from_code(rc)) else {
            return Err(Error::BadStatus { path: self.path.clone(), health: hc, reason: rc });
        };
        let (identity, params) = self.identity();
        let snapshot = StatusSnapshot {
            epoch: s.load64(OFF_EPOCH, Ordering::Acquire),
            heartbeat_ns: s.load64(OFF_HEARTBEAT, Ordering::Relaxed),
            health,
            reason,
            identity,
            params,
            raw_bytes_read: s.load64(OFF_RAW_READ, Ordering::Relaxed),
            bytes_published: s.load64(OFF_PUBLISHED, Ordering::Relaxed),
            health_alarms: s.load64(OFF_ALARMS, Ordering::Relaxed),
            bytes_dropped: s.load64(OFF_DROPPED, Ordering::Relaxed),
            capacity: self.capacity,
            head,
            tail,
        };
        // Loads from a mapping a SIGBUS replaced read zeros, not the producer's status.
        self.intact()?;
        Ok(snapshot)
    }

    /// The health word, checked before bytes leave a consumer (one Acquire load): errs unless
    /// the producer says OK or STARTING.
    fn serving(&self) -> Result<()> {
        let word = self.shm.load64(OFF_HEALTH, Ordering::Acquire);
        let (hc, rc) = ((word >> 32) as u32, word as u32);
        match (Health::from_code(hc), Reason::from_code(rc)) {
            (Some(Health::Ok | Health::Starting), Some(_)) => Ok(()),
            // Zeros from a mapping a SIGBUS replaced: report that, not the zeros.
            _ if self.shm.broken() => Err(Error::Broken { path: self.path.clone() }),
            (Some(health), Some(reason)) => {
                Err(Error::NotServing { path: self.path.clone(), health, reason })
            }
            _ => Err(Error::BadStatus { path: self.path.clone(), health: hc, reason: rc }),
        }
    }

    /// Reads the identity block under its sequence counter. A producer that died mid-update leaves
    /// the counter odd; after a bounded number of tries the last read is returned as is (every
    /// string is still validated, so the worst case is a mixed-up but well-formed identity).
    fn identity(&self) -> (Identity, HealthParams) {
        let s = &self.shm;
        let mut last = None;
        for _ in 0..64 {
            let before = s.load64(OFF_IDENT_SEQ, Ordering::Acquire);
            let read = (
                Identity {
                    model: self.text(OFF_MODEL),
                    serial: self.text(OFF_SERIAL),
                    modules: s.load32(OFF_MODULES, Ordering::Relaxed),
                    simulated: s.load32(OFF_FLAGS, Ordering::Relaxed) & FLAG_SIMULATED != 0,
                    extractor: self.text(OFF_EXTRACTOR),
                    board_version: s.load32(OFF_BOARD_VERSION, Ordering::Relaxed),
                    modules_present: s.load32(OFF_MODULES_PRESENT, Ordering::Relaxed),
                    family: CardFamily::from_code(s.load32(OFF_FAMILY, Ordering::Relaxed)),
                    chip_mode: ChipMode::from_code(s.load32(OFF_CHIP_MODE, Ordering::Relaxed)),
                },
                HealthParams {
                    min_entropy_milli: s.load32(OFF_MIN_ENTROPY, Ordering::Relaxed),
                    rct_cutoff: s.load32(OFF_RCT_CUTOFF, Ordering::Relaxed),
                    apt_window: s.load32(OFF_APT_WINDOW, Ordering::Relaxed),
                    apt_cutoff: s.load32(OFF_APT_CUTOFF, Ordering::Relaxed),
                },
            );
            std::sync::atomic::fence(Ordering::Acquire);
            let after = s.load64(OFF_IDENT_SEQ, Ordering::Relaxed);
            if before == after && before.is_multiple_of(2) {
                return read;
            }
            last = Some(read);
            std::hint::spin_loop();
        }
        last.unwrap_or_default()
    }

    fn text(&self, off: u64) -> String {
        let mut raw = [0u8; TEXT_LEN];
        for (i, chunk) in raw.chunks_exact_mut(8).enumerate() {
            let w = self.shm.load64(off + 8 * i as u64, Ordering::Relaxed);
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        let end = raw.iter().position(|&b| b == 0).unwrap_or(TEXT_LEN);
        String::from_utf8_lossy(&raw[..end]).into_owned()
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_trust;
