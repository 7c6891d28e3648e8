//! Where the feeder's bytes come from: a file (the bridge's FUSE device file, or a plain file),
//! a ring published by quantis-driver (the feeder is then that ring's one consumer), or a remote
//! bridge's HTTPS API (feature `remote`).

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// Errors reading from a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("failed to open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} ended after {got} of {want} bytes")]
    Ended { path: PathBuf, got: usize, want: usize },
    #[error("ring {path}: {source}")]
    Ring {
        path: PathBuf,
        #[source]
        source: qrng_ring::Error,
    },
    #[error("ring {path} had only {got} of {want} bytes after {waited:?}")]
    RingShort { path: PathBuf, got: usize, want: usize, waited: Duration },
    #[error("remote {url}: {message}")]
    Remote { url: String, message: String },
}

/// A source of random bytes.
pub trait Source {
    /// Fills `buf` completely, or fails (nothing is credited then).
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), SourceError>;
}

impl Source for Box<dyn Source> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), SourceError> {
        (**self).fill(buf)
    }
}

/// A file read sequentially: the bridge's device file (each read is answered with exactly the
/// bytes asked for, or EIO when the card cannot serve) or a plain file of bytes.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    file: File,
}

impl FileSource {
    pub fn open(path: PathBuf) -> Result<Self, SourceError> {
        let file =
            File::open(&path).map_err(|source| SourceError::Open { path: path.clone(), source })?;
        Ok(Self { path, file })
    }
}

impl Source for FileSource {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), SourceError> {
        let mut got = 0;
        while got < buf.len() {
            match self.file.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(SourceError::Ended {
                        path: self.path.clone(),
                        got,
                        want: buf.len(),
                    })
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(SourceError::Read { path: self.path.clone(), source }),
            }
        }
        Ok(())
    }
}

/// A ring published by quantis-driver, read as its one consumer (`qrng_ring::Consumer`: the ring
/// admits a single consumer and every byte leaves it once, so a ring the feeder reads is not
/// served by the bridge too). Bytes are taken only while the ring's health word says OK or
/// STARTING.
#[derive(Debug)]
pub struct RingSource {
    path: PathBuf,
    consumer: qrng_ring::Consumer,
    /// How long one fill waits for the ring to have the bytes.
    patience: Duration,
}

/// How often a ring source looks again when the ring has too few bytes.
const RING_POLL: Duration = Duration::from_millis(10);

impl RingSource {
    /// Opens `path` accepting rings owned by root or `owner` (the driver's user).
    pub fn open(
        path: PathBuf,
        owner: Option<u32>,
        patience: Duration,
    ) -> Result<Self, SourceError> {
        let trust = owner.map_or(qrng_ring::Trust::root_only(), qrng_ring::Trust::owner);
        let consumer = qrng_ring::Consumer::open_trusted(&path, &trust)
            .map_err(|source| SourceError::Ring { path: path.clone(), source })?;
        Ok(Self { path, consumer, patience })
    }
}

impl Source for RingSource {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), SourceError> {
        // Wait until the whole chunk is there, then take it in one read: a refused or short
        // attempt consumes nothing.
        let start = Instant::now();
        loop {
            let ready = self
                .consumer
                .available()
                .map_err(|source| SourceError::Ring { path: self.path.clone(), source })?;
            if ready >= buf.len() {
                let n = self
                    .consumer
                    .read(buf)
                    .map_err(|source| SourceError::Ring { path: self.path.clone(), source })?;
                if n == buf.len() {
                    return Ok(());
                }
                return Err(SourceError::RingShort {
                    path: self.path.clone(),
                    got: n,
                    want: buf.len(),
                    waited: start.elapsed(),
                });
            }
            if start.elapsed() >= self.patience {
                return Err(SourceError::RingShort {
                    path: self.path.clone(),
                    got: ready,
                    want: buf.len(),
                    waited: start.elapsed(),
                });
            }
            thread::sleep(RING_POLL);
        }
    }
}
