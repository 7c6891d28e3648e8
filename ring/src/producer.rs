//! The producer side: creates or re-attaches to a ring file and publishes bytes into it.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::layout::*;
use super::shm::{self, Shared};
use super::{
    boottime_ns, Attached, Error, Health, HealthParams, Identity, Reason, Result, RingOptions, Role,
};

/// The one writer of a ring. Holds the producer lock until dropped.
#[derive(Debug)]
pub struct Producer {
    ring: Attached,
    /// Our own index: the shared copy is only ever written from here.
    tail: u64,
    /// Private copy of the consumer's head, refreshed only when it says the ring is full.
    cached_head: u64,
    ident_seq: u64,
}

impl Producer {
    /// Creates the ring at `path`, or re-attaches to the valid ring already there. Re-attaching
    /// keeps the unread bytes, bumps the epoch and resets the health to STARTING. A second live
    /// producer is refused with [`Error::AlreadyAttached`]. An existing file's capacity wins over
    /// `opts.capacity` (resizing would drop unread bytes; remove the file to resize).
    pub fn open(path: &Path, opts: &RingOptions) -> Result<Producer> {
        if !opts.capacity.is_power_of_two()
            || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&opts.capacity)
        {
            return Err(Error::BadOptions {
                path: path.into(),
                reason: format!(
                    "ring size {} is not a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}",
                    opts.capacity
                ),
            });
        }
        if opts.mode & !0o7777 != 0 {
            return Err(Error::BadOptions {
                path: path.into(),
                reason: format!("mode {:o} is not a permission mode", opts.mode),
            });
        }
        let file = match open_rw(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => create(path, opts)?,
            Err(e) => return Err(Error::io("open", path, e)),
        };
        shm::lock_role(&file, Role::Producer, path)?;
        let ring = Attached::validate(file, path)?;
        let (head, tail) = ring.indices()?;
        let ident_seq = ring.shm.load64(OFF_IDENT_SEQ, Ordering::Relaxed) & !1;
        let p = Producer { ring, tail, cached_head: head, ident_seq };
        let s = &p.ring.shm;
        s.store64(OFF_IDENT_SEQ, ident_seq, Ordering::Release);
        s.store64(OFF_PUBLISHED, tail, Ordering::Relaxed);
        p.set_health(Health::Starting, Reason::None);
        let epoch = s.load64(OFF_EPOCH, Ordering::Relaxed).wrapping_add(1);
        s.store64(OFF_EPOCH, epoch, Ordering::Release);
        Ok(p)
    }

    pub fn path(&self) -> &Path {
        &self.ring.path
    }

    pub fn capacity(&self) -> u64 {
        self.ring.capacity
    }

    /// The epoch this producer runs under.
    pub fn epoch(&self) -> u64 {
        self.ring.shm.load64(OFF_EPOCH, Ordering::Relaxed)
    }

    /// Bytes that can be written now without overwriting unread data.
    /// Always reads the consumer's head: this is a query, not the hot path ([`Producer::write`]
    /// reads it only when its cached copy says the data does not fit).
    pub fn free(&mut self) -> Result<usize> {
        self.refresh_head()?;
        Ok((self.ring.capacity - (self.tail - self.cached_head)) as usize)
    }

    fn refresh_head(&mut self) -> Result<()> {
        let head = self.ring.shm.load64(OFF_HEAD, Ordering::Acquire);
        self.ring.intact()?;
        if head < self.cached_head {
            return Err(Error::IndexWentBack {
                path: self.ring.path.clone(),
                index: "head",
                was: self.cached_head,
                now: head,
            });
        }
        self.ring.check(head, self.tail)?;
        self.cached_head = head;
        Ok(())
    }

    /// Copies as much of `data` as fits and publishes it; returns how many bytes were taken.
    /// [`Error::Broken`] if the file was truncated under the mapping: nothing is published, and
    /// the ring cannot be used any more (the driver exits with that error).
    pub fn write(&mut self, data: &[u8]) -> Result<usize> {
        let cap = self.ring.capacity;
        let mut free = cap - (self.tail - self.cached_head);
        if (free as usize) < data.len() {
            self.refresh_head()?;
            free = cap - (self.tail - self.cached_head);
        }
        let n = data.len().min(free as usize);
        if n == 0 {
            return Ok(0);
        }
        let at = self.tail & (cap - 1);
        let first = n.min((cap - at) as usize);
        self.ring.shm.write_data(at, &data[..first]);
        self.ring.shm.write_data(0, &data[first..n]);
        // The file was truncated under the mapping (a SIGBUS replaced it): the bytes went to
        // anonymous memory, and the tail must not claim them.
        self.ring.intact()?;
        self.tail += n as u64;
        self.ring.shm.store64(OFF_TAIL, self.tail, Ordering::Release);
        self.ring.shm.store64(OFF_PUBLISHED, self.tail, Ordering::Relaxed);
        Ok(n)
    }

    /// Publishes the health state. Health and reason share one word, so readers never see a
    /// reason from one update paired with the health of another.
    pub fn set_health(&self, health: Health, reason: Reason) {
        let word = (health as u64) << 32 | reason as u64;
        self.ring.shm.store64(OFF_HEALTH, word, Ordering::Release);
    }

    pub fn heartbeat(&self) {
        self.ring.shm.store64(OFF_HEARTBEAT, boottime_ns().max(1), Ordering::Release);
    }

    /// Adds deltas to the counters (bytes published is counted by [`Producer::write`]).
    pub fn add_counters(&self, raw_bytes_read: u64, health_alarms: u64, bytes_dropped: u64) {
        let s = &self.ring.shm;
        for (off, delta) in [
            (OFF_RAW_READ, raw_bytes_read),
            (OFF_ALARMS, health_alarms),
            (OFF_DROPPED, bytes_dropped),
        ] {
            if delta != 0 {
                let v = s.load64(off, Ordering::Relaxed).wrapping_add(delta);
                s.store64(off, v, Ordering::Relaxed);
            }
        }
    }

    pub fn set_identity(&mut self, id: &Identity) {
        self.update_ident(|s| {
            write_text(s, OFF_MODEL, &id.model);
            write_text(s, OFF_SERIAL, &id.serial);
            write_text(s, OFF_EXTRACTOR, &id.extractor);
            s.store32(OFF_MODULES, id.modules, Ordering::Relaxed);
            s.store32(OFF_BOARD_VERSION, id.board_version, Ordering::Relaxed);
            s.store32(OFF_MODULES_PRESENT, id.modules_present, Ordering::Relaxed);
            s.store32(OFF_FAMILY, id.family.map_or(0, |f| f as u32), Ordering::Relaxed);
            s.store32(OFF_CHIP_MODE, id.chip_mode.map_or(0, |m| m as u32), Ordering::Relaxed);
            s.store32(OFF_FLAGS, if id.simulated { FLAG_SIMULATED } else { 0 }, Ordering::Relaxed);
        });
    }

    pub fn set_health_params(&mut self, p: &HealthParams) {
        self.update_ident(|s| {
            s.store32(OFF_MIN_ENTROPY, p.min_entropy_milli, Ordering::Relaxed);
            s.store32(OFF_RCT_CUTOFF, p.rct_cutoff, Ordering::Relaxed);
            s.store32(OFF_APT_WINDOW, p.apt_window, Ordering::Relaxed);
            s.store32(OFF_APT_CUTOFF, p.apt_cutoff, Ordering::Relaxed);
        });
    }

    /// Seqlock writer: odd while the block is inconsistent.
    fn update_ident(&mut self, f: impl FnOnce(&Shared)) {
        let s = &self.ring.shm;
        self.ident_seq += 1;
        s.store64(OFF_IDENT_SEQ, self.ident_seq, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        f(s);
        self.ident_seq += 1;
        s.store64(OFF_IDENT_SEQ, self.ident_seq, Ordering::Release);
    }

    /// The status as a consumer would see it.
    pub fn status(&self) -> Result<super::StatusSnapshot> {
        self.ring.status()
    }
}

/// Writes `text` NUL-padded into a 32-byte field, cut to 31 bytes at a character boundary.
fn write_text(s: &Shared, off: u64, text: &str) {
    let mut cut = text.len().min(TEXT_LEN - 1);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut raw = [0u8; TEXT_LEN];
    raw[..cut].copy_from_slice(&text.as_bytes()[..cut]);
    for (i, chunk) in raw.chunks_exact(8).enumerate() {
        let w = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        s.store64(off + 8 * i as u64, w, Ordering::Relaxed);
    }
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// Creates a fully initialised ring file under a temporary name and links it into place, so a
/// consumer never sees a half-written header. If another producer won the race, attach to its file.
fn create(path: &Path, opts: &RingOptions) -> Result<File> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp: PathBuf = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    let result = (|| {
        file.set_len(DATA_OFFSET + opts.capacity).map_err(|e| Error::io("size", &tmp, e))?;
        let shm = Shared::map(&file, HEADER_LEN, &tmp)?;
        shm.store32(OFF_VERSION, ABI_VERSION, Ordering::Relaxed);
        shm.store32(OFF_HEADER_LEN, HEADER_LEN as u32, Ordering::Relaxed);
        shm.store64(OFF_DATA_OFFSET, DATA_OFFSET, Ordering::Relaxed);
        shm.store64(OFF_CAPACITY, opts.capacity, Ordering::Relaxed);
        shm.store64(OFF_HEALTH, (Health::Starting as u64) << 32, Ordering::Relaxed);
        shm.store64(OFF_MAGIC, MAGIC, Ordering::Release);
        if let Some(gid) = opts.group {
            nix::unistd::fchown(&file, None, Some(nix::unistd::Gid::from_raw(gid)))
                .map_err(|e| Error::io("set the group of", &tmp, e.into()))?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(opts.mode))
            .map_err(|e| Error::io("set the mode of", &tmp, e))?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(file),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                open_rw(path).map_err(|e| Error::io("open", path, e))
            }
            Err(e) => Err(Error::io("link into place", path, e)),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}
