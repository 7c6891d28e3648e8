//! What the dispenser reads from: a quantis-driver ring, or (in tests) an in-memory one.

use qrng_ring as ring;

/// A single-consumer byte source with a status line: a ring, or an in-memory fake in tests.
/// Errors are the ring's own; any error means the source can no longer be trusted, and the device
/// turns `failed` until it is re-attached.
pub trait RingSource: Send + 'static {
    /// Bytes that can be read now.
    fn available(&mut self) -> ring::Result<usize>;
    /// Copies up to `buf.len()` available bytes into `buf`; they are consumed.
    fn read(&mut self, buf: &mut [u8]) -> ring::Result<usize>;
    /// A validated copy of the status line.
    fn status(&mut self) -> ring::Result<ring::StatusSnapshot>;
    /// Appends up to `max` available bytes to `out`; they are consumed. Returns how many.
    /// Sources that can copy into uninitialised capacity (the ring) override this to skip the
    /// zero-fill of the default.
    fn read_append(&mut self, out: &mut Vec<u8>, max: usize) -> ring::Result<usize> {
        let old = out.len();
        out.resize(old + max, 0);
        let got = self.read(&mut out[old..]);
        let n = got.as_ref().map_or(0, |n| (*n).min(max));
        out.truncate(old + n);
        got.map(|_| n)
    }
    /// Lends exactly `n` bytes in place (see `ring::Consumer::lend`), keeping at most
    /// `max_pinned` bytes lent out; `Ok(None)` when it cannot, and nothing changed (the caller
    /// copies instead). Only the ring lends; other sources never do.
    fn lend(&mut self, _n: usize, _max_pinned: u64) -> ring::Result<Option<ring::Lease>> {
        Ok(None)
    }
    /// Bytes handed out but whose ring space is not free yet (lent, or copied after a lease
    /// still out).
    fn pinned(&self) -> u64 {
        0
    }
}

/// The real source: a quantis-driver ring.
impl RingSource for ring::Consumer {
    fn available(&mut self) -> ring::Result<usize> {
        ring::Consumer::available(self)
    }

    fn read(&mut self, buf: &mut [u8]) -> ring::Result<usize> {
        ring::Consumer::read(self, buf)
    }

    fn read_append(&mut self, out: &mut Vec<u8>, max: usize) -> ring::Result<usize> {
        ring::Consumer::read_append(self, out, max)
    }

    fn lend(&mut self, n: usize, max_pinned: u64) -> ring::Result<Option<ring::Lease>> {
        ring::Consumer::lend(self, n, max_pinned)
    }

    fn pinned(&self) -> u64 {
        ring::Consumer::pinned(self)
    }

    fn status(&mut self) -> ring::Result<ring::StatusSnapshot> {
        ring::Consumer::status(self)
    }
}
