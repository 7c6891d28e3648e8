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
        if ((self.cached_tail - self.head) as usize) < buf.len() {
            self.refresh_tail()?;
        }
        let n = buf.len().min((self.cached_tail - self.head) as usize);
        if n == 0 {
            return Ok(0);
        }
        let cap = self.ring.capacity;
        let at = self.head & (cap - 1);
        let first = n.min((cap - at) as usize);
        self.ring.shm.read_data(at, &mut buf[..first]);
        self.ring.shm.read_data(0, &mut buf[first..n]);
        self.head += n as u64;
        self.ring.shm.store64(OFF_HEAD, self.head, Ordering::Release);
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
