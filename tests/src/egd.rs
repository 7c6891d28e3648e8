//! A small blocking EGD client (the wire format of `qrng_bridge::egd::proto`, written out again
//! from the protocol so the tests check the server against the protocol, not against itself).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// One connection to an EGD server.
#[derive(Debug)]
pub struct EgdClient(UnixStream);

impl EgdClient {
    pub fn connect(path: &Path) -> io::Result<EgdClient> {
        UnixStream::connect(path).map(EgdClient)
    }

    /// 0x00: bits the server says it has.
    pub fn level(&mut self) -> io::Result<u32> {
        self.0.write_all(&[0x00])?;
        let mut b = [0; 4];
        self.0.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    /// 0x01: up to `n` bytes that are ready.
    pub fn read_nonblocking(&mut self, n: u8) -> io::Result<Vec<u8>> {
        self.0.write_all(&[0x01, n])?;
        let mut k = [0; 1];
        self.0.read_exact(&mut k)?;
        let mut b = vec![0; usize::from(k[0])];
        self.0.read_exact(&mut b)?;
        Ok(b)
    }

    /// 0x02: exactly `n` bytes (waits for them).
    pub fn read_blocking(&mut self, n: u8) -> io::Result<Vec<u8>> {
        self.0.write_all(&[0x02, n])?;
        let mut b = vec![0; usize::from(n)];
        self.0.read_exact(&mut b)?;
        Ok(b)
    }

    /// `count` blocking reads of `n` bytes sent at once (as QEMU does), then their answers.
    pub fn read_blocking_pipelined(&mut self, n: u8, count: usize) -> io::Result<Vec<u8>> {
        let req: Vec<u8> = std::iter::repeat_n([0x02, n], count).flatten().collect();
        self.0.write_all(&req)?;
        let mut b = vec![0; usize::from(n) * count];
        self.0.read_exact(&mut b)?;
        Ok(b)
    }

    /// 0x04: the server's process id.
    pub fn pid(&mut self) -> io::Result<u32> {
        self.0.write_all(&[0x04])?;
        let mut k = [0; 1];
        self.0.read_exact(&mut k)?;
        let mut b = vec![0; usize::from(k[0])];
        self.0.read_exact(&mut b)?;
        String::from_utf8_lossy(&b)
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("pid answer: {e}")))
    }
}
