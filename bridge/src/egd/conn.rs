//! One EGD client: requests are answered one at a time, in order (QEMU sends many blocking reads
//! at once and matches the answers by order).
//!
//! Bytes are taken from the dispenser only after the socket reports room for more (Linux reports a
//! socket writable when a good part of its send buffer is free, far more than one ≤ 255-byte
//! answer), so a client that stops reading stops taking: it holds at most its small send buffer
//! ([`super::SEND_BUFFER`]) and, rarely, one answer being written. While a blocking read waits, the
//! socket is still read (into the bounded request buffer) so a client that hangs up is noticed and
//! its waiting request withdrawn.

use std::future::Future;
use std::io;

use tokio::net::{TcpStream, UnixStream};

use super::proto::{self, Parsed, Request, MAX_FRAME};
use super::{Ctx, EgdMetrics, RETRY_AFTER_REFUSAL, TAKE_SLICE};
use crate::dispenser::{DeviceState, DispenseError};

/// The request buffer: room for two of the longest requests, so one is always whole before it is
/// parsed and a pipelining client (QEMU) is read ahead a little, never more.
const INBUF: usize = 2 * MAX_FRAME;

/// The socket operations a connection needs (tokio's Unix and TCP streams both have them).
pub(super) trait Stream: Send + Sync {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

macro_rules! stream_impl {
    ($t:ty) => {
        impl Stream for $t {
            fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$t>::readable(self)
            }
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                <$t>::try_read(self, buf)
            }
            fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$t>::writable(self)
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$t>::try_write(self, buf)
            }
        }
    };
}
stream_impl!(UnixStream);
stream_impl!(TcpStream);

/// Reads what is there into `buf` (at least one byte, or 0 at end of stream). Cancel-safe.
async fn read_some<S: Stream>(s: &S, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

async fn write_all<S: Stream>(s: &S, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The request buffer of one connection.
struct Input {
    buf: [u8; INBUF],
    have: usize,
}

impl Input {
    /// Reads more requests if there is room; pending for ever when full (the client is then
    /// ahead by two whole requests and waits for answers anyway). `Ok(false)`: end of stream.
    async fn fill<S: Stream>(&mut self, s: &S) -> io::Result<bool> {
        if self.have == INBUF {
            return std::future::pending().await;
        }
        let n = read_some(s, &mut self.buf[self.have..]).await?;
        self.have += n;
        Ok(n > 0)
    }
}

/// Serves one client until it hangs up, breaks the protocol, or a socket error.
pub(super) async fn serve<S: Stream>(s: S, ctx: &Ctx) {
    match run(&s, ctx).await {
        Ok(()) => tracing::debug!("EGD client closed"),
        Err(e) => tracing::debug!(error = %e, "EGD client dropped"),
    }
}

async fn run<S: Stream>(s: &S, ctx: &Ctx) -> io::Result<()> {
    let m = &*ctx.metrics;
    let mut input = Input { buf: [0; INBUF], have: 0 };
    let mut warned_write = false;
    loop {
        let (req, used) = match proto::parse(&input.buf[..input.have]) {
            Parsed::Incomplete => {
                if !input.fill(s).await? {
                    return Ok(());
                }
                continue;
            }
            Parsed::Unknown(byte) => {
                EgdMetrics::count(&m.protocol_errors, 1);
                tracing::info!(command = byte, "EGD client sent an unknown command; closing");
                return Ok(());
            }
            Parsed::Request(req, used) => (req, used),
        };
        input.buf.copy_within(used..input.have, 0);
        input.have -= used;
        let kind = match req {
            Request::Level => 0,
            Request::ReadNonBlocking(_) => 1,
            Request::ReadBlocking(_) => 2,
            Request::Write { .. } => 3,
            Request::Pid => 4,
        };
        EgdMetrics::count(&m.requests[kind], 1);
        match req {
            Request::Level => write_all(s, &proto::level_answer(available_bits(ctx))).await?,
            Request::Pid => write_all(s, &proto::pid_answer(std::process::id())).await?,
            Request::Write { bits, len } => {
                EgdMetrics::count(&m.ignored_bytes, u64::from(len));
                if !warned_write {
                    warned_write = true;
                    tracing::info!(
                        bits,
                        bytes = len,
                        "EGD client offered entropy; discarded (the bridge serves only the card's bytes)"
                    );
                }
            }
            Request::ReadNonBlocking(n) => {
                s.writable().await?;
                let bytes = ready_bytes(ctx, usize::from(n));
                if bytes.is_empty() && n > 0 {
                    EgdMetrics::count(&m.unserved, 1);
                }
                write_all(s, &proto::nonblocking_answer(&bytes)).await?;
                EgdMetrics::count(&m.served_bytes, bytes.len() as u64);
            }
            Request::ReadBlocking(n) => {
                if !blocking_read(s, ctx, usize::from(n), &mut input).await? {
                    return Ok(());
                }
            }
        }
    }
}

/// Bits in the rings of the devices that can serve now (8 per byte: the driver publishes
/// full-entropy bytes, docs/entropy.md).
fn available_bits(ctx: &Ctx) -> u64 {
    ctx.dispenser
        .devices()
        .iter()
        .filter(|d| {
            matches!(d.health, DeviceState::Ok | DeviceState::Degraded | DeviceState::Starting)
        })
        .map(|d| d.ring_fill.saturating_mul(8))
        .sum()
}

/// Up to `n` bytes ready now, from the first device that has any (nothing from one that cannot
/// serve).
fn ready_bytes(ctx: &Ctx, n: usize) -> Vec<u8> {
    if n == 0 {
        return Vec::new();
    }
    for name in ctx.dispenser.device_names() {
        if let Ok(e) = ctx.dispenser.try_take(&name, n) {
            return e.bytes;
        }
    }
    Vec::new()
}

/// Answers a blocking read of `n` bytes: waits until a device serves them all at once (one
/// contiguous piece of a ring), for as long as it takes. `Ok(false)`: the client hung up.
async fn blocking_read<S: Stream>(
    s: &S,
    ctx: &Ctx,
    n: usize,
    input: &mut Input,
) -> io::Result<bool> {
    if n == 0 {
        return Ok(true);
    }
    let m = &*ctx.metrics;
    loop {
        s.writable().await?;
        let take = ctx.dispenser.take(None, n, TAKE_SLICE);
        tokio::pin!(take);
        let got = loop {
            tokio::select! {
                r = &mut take => break r,
                open = input.fill(s) => if !open? { return Ok(false) },
            }
        };
        match got {
            Ok(e) => {
                write_all(s, &e.bytes).await?;
                EgdMetrics::count(&m.served_bytes, e.bytes.len() as u64);
                return Ok(true);
            }
            Err(err) => {
                EgdMetrics::count(&m.unserved, 1);
                tracing::debug!(error = %err, "EGD blocking read waits");
                if refused_at_once(&err) {
                    let pause = tokio::time::sleep(RETRY_AFTER_REFUSAL);
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            () = &mut pause => break,
                            open = input.fill(s) => if !open? { return Ok(false) },
                        }
                    }
                }
            }
        }
    }
}

/// Errors the dispenser returns without waiting (no device can serve now).
fn refused_at_once(e: &DispenseError) -> bool {
    !matches!(e, DispenseError::Timeout | DispenseError::Stale { .. })
}
