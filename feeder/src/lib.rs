//! qrng-feeder: credits the Linux kernel's random pool with bytes from a Quantis card
//! (docs/feeder.md).
//!
//! The kernel model it follows (Linux ≥ 5.18, where rng-tools 5's `rngd` waits for a POLLOUT on
//! /dev/random that never comes): at start, add and credit bytes until the kernel's CRNG is ready
//! (`getrandom(GRND_NONBLOCK)` stops failing with EAGAIN); then add a chunk every interval, so
//! the CRNG's periodic reseed from the input pool (every 60 s once ready) takes in quantum bytes.
//! Each addition is one `RNDADDENTROPY` ioctl crediting `bytes × bits_per_byte` bits.
//!
//! It runs as its own process, not inside the bridge: the ioctl needs CAP_SYS_ADMIN, which the
//! bridge must not have.
#![deny(unsafe_code)]

pub mod config;
pub mod kernel;
#[cfg(feature = "remote")]
pub mod remote;
pub mod source;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

pub use source::{FileSource, RingSource, Source, SourceError};

/// The kernel's random pool, as the feeder uses it (a fake in tests).
pub trait Pool {
    /// Mixes `bytes` in and credits `bits`.
    fn add(&mut self, bytes: &[u8], bits: u32) -> io::Result<()>;
    /// Whether the CRNG is ready.
    fn ready(&mut self) -> io::Result<bool>;
}

/// The running kernel's pool through /dev/random.
#[derive(Debug)]
pub struct KernelPool(File);

impl KernelPool {
    /// Opens `device` (/dev/random) for writing, as RNDADDENTROPY needs.
    pub fn open(device: &Path) -> io::Result<Self> {
        OpenOptions::new().write(true).open(device).map(KernelPool)
    }
}

impl Pool for KernelPool {
    fn add(&mut self, bytes: &[u8], bits: u32) -> io::Result<()> {
        kernel::add_entropy(&self.0, bytes, bits)
    }

    fn ready(&mut self) -> io::Result<bool> {
        kernel::crng_ready()
    }
}

/// What the feeder did since it started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes the kernel accepted.
    pub bytes_credited: u64,
    /// Bits credited with them.
    pub bits_credited: u64,
    /// Additions the kernel refused (the bytes are dropped; never retried).
    pub ioctl_errors: u64,
    /// Reads that failed (nothing was added for them).
    pub source_errors: u64,
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bytes_read={} bytes_credited={} bits_credited={} ioctl_errors={} source_errors={}",
            self.bytes_read,
            self.bytes_credited,
            self.bits_credited,
            self.ioctl_errors,
            self.source_errors
        )
    }
}

/// Bits credited for `bytes` bytes at `bits_per_byte` (rounded down: never more than promised).
pub fn credit_bits(bytes: usize, bits_per_byte: f64) -> u32 {
    let bits = (bytes as f64 * bits_per_byte.clamp(0.0, 8.0)).floor();
    bits.min(f64::from(u32::MAX)) as u32
}

/// One failed addition.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the kernel refused RNDADDENTROPY: {0} (the feeder needs CAP_SYS_ADMIN)")]
    Ioctl(#[source] io::Error),
}

/// Reads chunks from a source and credits them to a pool.
pub struct Feeder<S, P> {
    pub source: S,
    pub pool: P,
    pub chunk: usize,
    pub bits_per_byte: f64,
    pub counters: Counters,
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for Feeder<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feeder")
            .field("source", &self.source)
            .field("counters", &self.counters)
            .finish()
    }
}

impl<S: Source, P: Pool> Feeder<S, P> {
    /// Reads one chunk and adds it. The buffer is zeroed after use (the bytes seed the kernel;
    /// no copy of them stays in this process).
    pub fn feed_once(&mut self) -> Result<(), FeedError> {
        let mut buf = vec![0u8; self.chunk];
        let r = self.feed_buf(&mut buf);
        buf.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&buf);
        r
    }

    fn feed_buf(&mut self, buf: &mut [u8]) -> Result<(), FeedError> {
        if let Err(e) = self.source.fill(buf) {
            self.counters.source_errors += 1;
            return Err(e.into());
        }
        self.counters.bytes_read += buf.len() as u64;
        let bits = credit_bits(buf.len(), self.bits_per_byte);
        match self.pool.add(buf, bits) {
            Ok(()) => {
                self.counters.bytes_credited += buf.len() as u64;
                self.counters.bits_credited += u64::from(bits);
                Ok(())
            }
            Err(e) => {
                self.counters.ioctl_errors += 1;
                Err(FeedError::Ioctl(e))
            }
        }
    }

    /// Feeds until the pool's CRNG is ready, at most `max_bytes` (rounded up to a chunk);
    /// stops at the first failure. Returns whether the CRNG is ready.
    pub fn until_ready(&mut self, max_bytes: usize) -> Result<bool, FeedError> {
        let mut fed = 0;
        loop {
            if self.pool.ready().map_err(FeedError::Ioctl)? {
                return Ok(true);
            }
            if fed >= max_bytes {
                return Ok(false);
            }
            self.feed_once()?;
            fed += self.chunk;
        }
    }
}

#[cfg(test)]
mod tests;
