//! The consumer side: attaches to an existing ring and takes bytes out of it, exactly once.
//!
//! Bytes leave the ring in one of two ways. **Copied** ([`Consumer::read`]): the head moves at once.
//! **Lent** ([`Consumer::lend`]): the caller gets a [`Lease`] on the bytes where they lie, to hand
//! to the kernel (an HTTP body written with `writev`) without copying them first; the head moves
//! past them only when the lease is dropped, so the producer cannot overwrite bytes still being
//! sent. Leases end in any order; the head follows the oldest one still out. The **cursor** (the
//! next byte to hand out) is recorded in the file too: a consumer that restarts resumes there, not
//! at the head, so bytes lent by a consumer that died are never handed out again.

use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use super::layout::*;
use super::shm;
use super::{trust, Attached, Error, Result, Role, StatusSnapshot, Trust};

/// The one reader of a ring. Holds the consumer lock until dropped (and until its last [`Lease`]
/// is dropped); a restarted consumer resumes at the cursor recorded in the file, so no byte is
/// ever handed out twice.
#[derive(Debug)]
pub struct Consumer {
    ring: Attached,
    /// The next byte to hand out; the shared copy is only ever written from here.
    cursor: u64,
    /// Private copy of the producer's tail, refreshed only when it says the ring is empty.
    cached_tail: u64,
    releases: Arc<Releases>,
    /// Take bytes only while the producer's health word says OK or STARTING (the default).
    health_gate: bool,
    /// Published bytes up to here were checked for holes (at attach, then by each poll).
    holes_checked: std::sync::atomic::AtomicU64,
}

/// The head and the ranges still lent out, shared by a consumer and its leases.
#[derive(Debug)]
struct Releases {
    shm: Arc<shm::Shared>,
    /// A second descriptor of the ring file: the consumer lock (an OFD lock) lasts while any
    /// descriptor of it is open, so no other consumer can attach, and see lent bytes as free,
    /// until the last lease is gone.
    _lock: File,
    state: Mutex<ReleaseState>,
}

#[derive(Debug)]
struct ReleaseState {
    /// The published head: everything before it is free for the producer.
    head: u64,
    /// Ranges handed out past the head, in order: (end, released). Empty, or its front is a lease
    /// still out.
    pending: VecDeque<(u64, bool)>,
}

impl Releases {
    fn lock(&self) -> MutexGuard<'_, ReleaseState> {
        // Every mutation below is a complete step, so a poisoned lock holds consistent data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the range ending at `end` released and moves the head past every released range at
    /// the front.
    fn release(&self, end: u64) {
        let mut st = self.lock();
        if let Some(entry) = st.pending.iter_mut().find(|(e, _)| *e == end) {
            entry.1 = true;
        }
        let mut head = st.head;
        while let Some(&(e, true)) = st.pending.front() {
            head = e;
            st.pending.pop_front();
        }
        if head != st.head {
            st.head = head;
            self.shm.store64(OFF_HEAD, head, Ordering::Release);
        }
    }
}

/// Bytes lent out of a ring in place (see [`Consumer::lend`]). They stay in the ring, and the
/// producer cannot overwrite them, until the lease is dropped. `as_ref` gives them as a slice of
/// the shared mapping, to be handed to the kernel (for example as an HTTP body that hyper writes
/// with `writev`, through `bytes::Bytes::from_owner`).
#[derive(Debug)]
pub struct Lease {
    releases: Arc<Releases>,
    ptr: *const u8,
    len: usize,
    end: u64,
}

// SAFETY: `ptr` points into the mapping that `releases.shm` keeps alive; a lease only reads
// through it, and releasing goes through the mutex in `Releases`.
unsafe impl Send for Lease {}
// SAFETY: as above; `&Lease` offers only reads.
unsafe impl Sync for Lease {}

impl Lease {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes handed out but not yet released (this lease's and any others'), against the ring's
    /// capacity: what slow readers of leases keep from the producer.
    pub fn pinned(&self) -> u64 {
        let st = self.releases.lock();
        st.pending.back().map_or(0, |(end, _)| end - st.head)
    }
}

impl AsRef<[u8]> for Lease {
    /// The one Rust reference ever made into the shared mapping (docs/ring-abi.md, "Lending").
    /// The ring protocol forbids the producer to write these bytes until the head passes them,
    /// which it does only when this lease is dropped. A producer that broke the protocol could
    /// change them while they are being sent, which is no worse than publishing other bytes; they
    /// are meant to be handed to the kernel, not inspected.
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` lies inside the mapping (checked by `Shared::data_ptr` when the
        // lease was made), which lives as long as `releases.shm`; the bytes are not written by the
        // consumer and, per the protocol, not by the producer until this lease is dropped.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.releases.release(self.end);
    }
}

impl Consumer {
    /// [`Consumer::open_trusted`] trusting rings owned by root or by the calling process's
    /// effective user ([`Trust::current_user`]).
    pub fn open(path: &Path) -> Result<Consumer> {
        Consumer::open_trusted(path, &Trust::current_user())
    }

    /// Attaches to the ring at `path`, validating its owner and mode and its directory's
    /// ([`Trust`]; refused with [`Error::Untrusted`]), its header, its indices, and that the bytes
    /// published are not holes of the file ([`Error::Hole`]). A second live consumer is refused
    /// with [`Error::AlreadyAttached`].
    pub fn open_trusted(path: &Path, trust: &Trust) -> Result<Consumer> {
        let file = trust::open_checked(path, trust)?;
        shm::lock_role(&file, Role::Consumer, path)?;
        let lock = file.try_clone().map_err(|e| Error::io("dup", path, e))?;
        let ring = Attached::validate(file, path)?;
        let (mut head, tail) = ring.indices()?;
        // Bytes up to a recorded cursor past the head were handed out by a consumer that is gone
        // (lent, and it died before the leases ended): skip them, and free them for the producer.
        // A cursor outside head..=tail is stale (written before an older consumer moved the head)
        // or corrupt, and is ignored.
        let cursor = ring.shm.load64(OFF_CURSOR, Ordering::Acquire);
        if cursor > head && cursor <= tail {
            head = cursor;
            ring.shm.store64(OFF_HEAD, head, Ordering::Release);
        }
        ring.shm.store64(OFF_CURSOR, head, Ordering::Release);
        ring.check_holes(head, tail)?;
        let releases = Arc::new(Releases {
            shm: Arc::clone(&ring.shm),
            _lock: lock,
            state: Mutex::new(ReleaseState { head, pending: VecDeque::new() }),
        });
        Ok(Consumer {
            ring,
            cursor: head,
            cached_tail: tail,
            releases,
            health_gate: true,
            holes_checked: std::sync::atomic::AtomicU64::new(tail),
        })
    }

    /// Whether bytes are taken only while the producer's health word says OK or STARTING
    /// ([`Error::NotServing`] otherwise). On by default, and a consumer that serves clients
    /// keeps it on; tools and tests that inspect what a producer published, also while it
    /// reports FAILED, turn it off.
    pub fn set_health_gate(&mut self, on: bool) {
        self.health_gate = on;
    }

    /// The health gate: one Acquire load of the health word, after the tail was read.
    fn gate(&self) -> Result<()> {
        if self.health_gate {
            self.ring.serving()?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.ring.path
    }

    pub fn capacity(&self) -> u64 {
        self.ring.capacity
    }

    /// Total bytes handed out from this file so far (the cursor).
    pub fn position(&self) -> u64 {
        self.cursor
    }

    /// Bytes handed out but not yet released (lent and still out, and any copied after them).
    pub fn pinned(&self) -> u64 {
        self.cursor - self.releases.lock().head
    }

    fn refresh_tail(&mut self) -> Result<()> {
        let tail = self.ring.shm.load64(OFF_TAIL, Ordering::Acquire);
        self.ring.intact()?;
        if tail < self.cached_tail {
            return Err(Error::IndexWentBack {
                path: self.ring.path.clone(),
                index: "tail",
                was: self.cached_tail,
                now: tail,
            });
        }
        // Against the released head: that is what the producer fills up to.
        let head = self.releases.lock().head;
        self.ring.check(head, tail)?;
        if tail < self.cursor {
            return Err(Error::HeadBeyondTail {
                path: self.ring.path.clone(),
                head: self.cursor,
                tail,
            });
        }
        self.cached_tail = tail;
        Ok(())
    }

    /// Bytes published and not yet consumed (reads the producer's tail).
    pub fn available(&mut self) -> Result<usize> {
        self.refresh_tail()?;
        Ok((self.cached_tail - self.cursor) as usize)
    }

    /// Copies up to `buf.len()` bytes out and consumes them; returns how many (0: ring empty).
    /// Nothing is consumed, and the copy must be discarded, when the producer's health word says
    /// FAILED or STOPPED ([`Error::NotServing`], checked after the tail is read, so bytes
    /// published after FAILED are never taken) or the file was truncated under the mapping
    /// ([`Error::Broken`], checked after the copy).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let (at, first, n) = self.span(buf.len())?;
        if n == 0 {
            return Ok(0);
        }
        self.gate()?;
        self.ring.shm.read_data(at, &mut buf[..first]);
        self.ring.shm.read_data(0, &mut buf[first..n]);
        self.ring.intact()?;
        self.consume(n);
        Ok(n)
    }

    /// Where the next `min(max, available)` bytes are: (data offset, bytes before the wrap, total).
    fn span(&mut self, max: usize) -> Result<(u64, usize, usize)> {
        if ((self.cached_tail - self.cursor) as usize) < max {
            self.refresh_tail()?;
        }
        let n = max.min((self.cached_tail - self.cursor) as usize);
        let cap = self.ring.capacity;
        let at = self.cursor & (cap - 1);
        Ok((at, n.min((cap - at) as usize), n))
    }

    /// Hands out the next `n` bytes: moves the cursor and records it in the file.
    fn advance(&mut self, n: usize) -> u64 {
        self.cursor += n as u64;
        self.ring.shm.store64(OFF_CURSOR, self.cursor, Ordering::Release);
        self.cursor
    }

    /// After `n` bytes were copied out: the head moves with the cursor, unless a lease before
    /// them is still out, in which case they are released when it is.
    fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let end = self.advance(n);
        let mut st = self.releases.lock();
        if st.pending.is_empty() {
            st.head = end;
            self.ring.shm.store64(OFF_HEAD, end, Ordering::Release);
        } else {
            st.pending.push_back((end, true));
        }
    }

    /// Lends the next `n` bytes in place if they are all available, lie in one piece (not across
    /// the end of the data area), and lending them keeps at most `max_pinned` bytes handed out
    /// but unreleased; otherwise `Ok(None)` and nothing changes (copy them with
    /// [`Consumer::read_append`] instead). The bytes count as consumed now (the cursor moves, a
    /// restarted consumer does not see them again); the producer may reuse their space only when
    /// the [`Lease`] is dropped.
    pub fn lend(&mut self, n: usize, max_pinned: u64) -> Result<Option<Lease>> {
        if n == 0 {
            return Ok(None);
        }
        let (at, first, got) = self.span(n)?;
        if got < n || first < n {
            return Ok(None);
        }
        self.gate()?;
        self.ring.intact()?;
        // One lock for the limit check and the record of the new range.
        let releases = Arc::clone(&self.releases);
        let mut st = releases.lock();
        if self.cursor - st.head + n as u64 > max_pinned {
            return Ok(None);
        }
        let ptr = self.ring.shm.data_ptr(at, n);
        let end = self.advance(n);
        st.pending.push_back((end, false));
        drop(st);
        Ok(Some(Lease { releases, ptr, len: n, end }))
    }

    /// Like [`Consumer::read`], but appends up to `max` bytes to `out` without zero-filling them
    /// first; returns how many (0: ring empty). Same exactly-once contract.
    /// On an error nothing is consumed and `out` is left as it was.
    pub fn read_append(&mut self, out: &mut Vec<u8>, max: usize) -> Result<usize> {
        let (at, first, n) = self.span(max)?;
        if n == 0 {
            return Ok(0);
        }
        self.gate()?;
        let old = out.len();
        self.ring.shm.read_data_append(at, first, out);
        self.ring.shm.read_data_append(0, n - first, out);
        if let Err(e) = self.ring.intact() {
            out.truncate(old);
            return Err(e);
        }
        self.consume(n);
        Ok(n)
    }

    /// A validated copy of the status line: the health poll. Also checks what must not change
    /// after attach, so a file truncated, unlinked or replaced under us, or a header rewritten,
    /// is reported here ([`Error::Truncated`], [`Error::Replaced`], [`Error::HeaderChanged`])
    /// rather than served from; and that the bytes published since the last poll are not holes of
    /// the file ([`Error::Hole`]; sampled, see `Attached::sample_holes`).
    pub fn status(&self) -> Result<StatusSnapshot> {
        self.ring.verify()?;
        let mut s = self.ring.status()?;
        let checked = self.holes_checked.load(std::sync::atomic::Ordering::Relaxed);
        self.ring.sample_holes(checked.max(self.cursor), s.tail)?;
        self.holes_checked.store(s.tail, std::sync::atomic::Ordering::Relaxed);
        // Report our own cursor as the head (what was handed out): the shared copies are ours, and
        // a corrupt one must not mislead.
        s.head = self.cursor;
        Ok(s)
    }
}
