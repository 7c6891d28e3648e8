//! The consumer side: attaches to an existing ring and takes bytes out of it, exactly once.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::layout::*;
use super::shm;
use super::{Attached, Error, Result, Role, StatusSnapshot};

/// The one reader of a ring. Holds the consumer lock until dropped; a restarted consumer resumes
/// at the head recorded in the file, so no byte is ever read twice.
#[derive(Debug)]
pub struct Consumer {
    ring: Attached,
    /// Our own index; the shared copy is only ever written from here.
    head: u64,
    /// Private copy of the producer's tail, refreshed only when it says the ring is empty.
    cached_tail: u64,
}

impl Consumer {
    /// Attaches to the ring at `path`, validating its header and indices. A second live consumer
    /// is refused with [`Error::AlreadyAttached`].
    pub fn open(path: &Path) -> Result<Consumer> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        shm::lock_role(&file, Role::Consumer, path)?;
        let ring = Attached::validate(file, path)?;
        let (head, tail) = ring.indices()?;
        Ok(Consumer { ring, head, cached_tail: tail })
    }

    pub fn path(&self) -> &Path {
        &self.ring.path
    }

    pub fn capacity(&self) -> u64 {
        self.ring.capacity
    }

    /// Total bytes consumed from this file so far (the head index).
    pub fn position(&self) -> u64 {
        self.head
    }

    fn refresh_tail(&mut self) -> Result<()> {
        let tail = self.ring.shm.load64(OFF_TAIL, Ordering::Acquire);
        if tail < self.cached_tail {
            return Err(Error::IndexWentBack {
                path: self.ring.path.clone(),
                index: "tail",
                was: self.cached_tail,
                now: tail,
            });
        }
        self.ring.check(self.head, tail)?;
        self.cached_tail = tail;
        Ok(())
    }

    /// Bytes published and not yet consumed (reads the producer's tail).
    pub fn available(&mut self) -> Result<usize> {
        self.refresh_tail()?;
        Ok((self.cached_tail - self.head) as usize)
    }

    /// Copies up to `buf.len()` bytes out and consumes them; returns how many (0: ring empty).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let (at, first, n) = self.span(buf.len())?;
        self.ring.shm.read_data(at, &mut buf[..first]);
        self.ring.shm.read_data(0, &mut buf[first..n]);
        self.consume(n);
        Ok(n)
    }

    /// Where the next `min(max, available)` bytes are: (data offset, bytes before the wrap, total).
    fn span(&mut self, max: usize) -> Result<(u64, usize, usize)> {
        if ((self.cached_tail - self.head) as usize) < max {
            self.refresh_tail()?;
        }
        let n = max.min((self.cached_tail - self.head) as usize);
        let cap = self.ring.capacity;
        let at = self.head & (cap - 1);
        Ok((at, n.min((cap - at) as usize), n))
    }

    /// Publishes the new head after `n` bytes were copied out.
    fn consume(&mut self, n: usize) {
        if n > 0 {
            self.head += n as u64;
            self.ring.shm.store64(OFF_HEAD, self.head, Ordering::Release);
        }
    }

    /// Like [`Consumer::read`], but appends up to `max` bytes to `out` without zero-filling them
    /// first; returns how many (0: ring empty). Same exactly-once contract.
    pub fn read_append(&mut self, out: &mut Vec<u8>, max: usize) -> Result<usize> {
        let (at, first, n) = self.span(max)?;
        self.ring.shm.read_data_append(at, first, out);
        self.ring.shm.read_data_append(0, n - first, out);
        self.consume(n);
        Ok(n)
    }

    /// A validated copy of the status line. Also re-checks the file length, so a file truncated
    /// under us is reported here rather than discovered by touching unmapped pages.
    pub fn status(&self) -> Result<StatusSnapshot> {
        let len =
            self.ring.file.metadata().map_err(|e| Error::io("stat", &self.ring.path, e))?.len();
        if len < DATA_OFFSET + self.ring.capacity {
            return Err(Error::Truncated { path: self.ring.path.clone(), len });
        }
        let mut s = self.ring.status()?;
        // Report our own head: the shared copy is ours, and a corrupt one must not mislead.
        s.head = self.head;
        Ok(s)
    }
}
