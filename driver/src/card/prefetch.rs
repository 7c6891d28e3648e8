//! Read-ahead for the daemon: a thread owns the card and reads the next batch while the caller
//! health-tests and publishes the one before, so card reads (PIO register reads, DMA copies,
//! the simulator's noise) overlap the health tests instead of taking turns with them.
//!
//! The byte stream is exactly the card's, in order, and errors arrive in the order the card
//! raised them. Up to [`DEPTH`] batches are read ahead, so the reader goes straight on to the
//! next read instead of waiting for the caller to be scheduled (a module card's FIFO holds only
//! 2 ms of data). [`Prefetch::start`] and [`Prefetch::stop`] first wait for the reads ahead and
//! throw them away untested (they belong to the run being reset), counting them in
//! [`CardCounters::bytes_discarded`], so nothing read before a reset is ever returned after.
//!
//! [`Prefetch::empty_for`] is what the daemon's data watchdog measures: the time the card spent
//! in reads that found nothing, back to back. Time the reader waits for the caller (a full ring)
//! is not counted, so only the card's own silence can raise the `no-data` alarm.

use super::{Card, CardCounters, CardInfo, Result};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Reads queued ahead of the batch the caller holds.
pub const DEPTH: usize = 2;

enum Cmd {
    Read(Vec<u8>),
    Start,
    Stop,
}

enum Reply {
    /// The buffer, the result, the counters after it, and how long the read took.
    Read(Vec<u8>, Result<usize>, CardCounters, Duration),
    Done(Result<()>, CardCounters, Box<CardInfo>),
}

/// A card driven by its own reader thread, reading `batch` bytes ahead.
pub struct Prefetch {
    info: CardInfo,
    counters: CardCounters,
    /// Read-ahead bytes thrown away at a start or stop.
    discarded: u64,
    cmd: Option<SyncSender<Cmd>>,
    reply: Receiver<Reply>,
    worker: Option<JoinHandle<()>>,
    /// Reads sent whose replies are not yet received.
    in_flight: usize,
    /// The buffer the last batch was returned from.
    current: Vec<u8>,
    /// Buffers free for the next reads.
    spare: Vec<Vec<u8>>,
    /// Time spent in the reads that returned nothing since the last one that returned bytes,
    /// failed, or since the last start or stop.
    empty_for: Duration,
}

impl std::fmt::Debug for Prefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetch")
            .field("info", &self.info)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Prefetch {
    /// Moves `card` to a new reader thread that reads batches of `batch` bytes.
    pub fn new(mut card: Box<dyn Card>, batch: usize) -> std::io::Result<Prefetch> {
        let info = card.info().clone();
        let counters = card.counters();
        // Room for every read in flight plus a start or stop: neither side ever blocks on a send.
        let (cmd_tx, cmd_rx) = sync_channel::<Cmd>(DEPTH + 1);
        let (reply_tx, reply_rx) = sync_channel::<Reply>(DEPTH + 1);
        let worker = std::thread::Builder::new().name("card-reader".into()).spawn(move || {
            for cmd in cmd_rx {
                let reply = match cmd {
                    Cmd::Read(mut buf) => {
                        let t = Instant::now();
                        let r = card.read(&mut buf);
                        Reply::Read(buf, r, card.counters(), t.elapsed())
                    }
                    Cmd::Start => {
                        let r = card.start();
                        Reply::Done(r, card.counters(), Box::new(card.info().clone()))
                    }
                    Cmd::Stop => {
                        let r = card.stop();
                        Reply::Done(r, card.counters(), Box::new(card.info().clone()))
                    }
                };
                if reply_tx.send(reply).is_err() {
                    break;
                }
            }
            // Dropping the card here stops its engine (chip cards) before the thread ends.
        })?;
        Ok(Prefetch {
            info,
            counters,
            discarded: 0,
            cmd: Some(cmd_tx),
            reply: reply_rx,
            worker: Some(worker),
            in_flight: 0,
            current: vec![0; batch],
            spare: (0..DEPTH).map(|_| vec![0; batch]).collect(),
            empty_for: Duration::ZERO,
        })
    }

    pub fn info(&self) -> &CardInfo {
        &self.info
    }

    /// The card's counters as of its last reply, plus the read-ahead thrown away.
    pub fn counters(&self) -> CardCounters {
        let mut c = self.counters;
        c.bytes_discarded += self.discarded;
        c
    }

    /// How long the card has delivered nothing: the summed duration of the reads returned since
    /// the last batch with bytes (or error, start or stop), all of which came back empty without
    /// the card layer taking any bytes (a warm-up discard or an overflow is delivery).
    pub fn empty_for(&self) -> Duration {
        self.empty_for
    }

    /// The next batch of raw bytes (as [`Card::read`]: empty when the read timed out). The
    /// buffer of the batch returned before goes back to the reader for a read ahead.
    pub fn read(&mut self) -> Result<&[u8]> {
        while let Some(buf) = self.spare.pop() {
            self.send(Cmd::Read(buf));
            self.in_flight += 1;
        }
        let (buf, r) = self.wait_read();
        self.spare.push(std::mem::replace(&mut self.current, buf));
        let n = r?;
        Ok(&self.current[..n])
    }

    /// Throws away the read-ahead, then runs the card's start-up.
    pub fn start(&mut self) -> Result<()> {
        self.control(Cmd::Start)
    }

    /// Throws away the read-ahead, then stops the card.
    pub fn stop(&mut self) -> Result<()> {
        self.control(Cmd::Stop)
    }

    fn control(&mut self, cmd: Cmd) -> Result<()> {
        self.empty_for = Duration::ZERO;
        while self.in_flight > 0 {
            let (buf, r) = self.wait_read();
            // An error of an abandoned read is the card's state before the reset; the reset
            // itself reports whatever is still wrong.
            self.discarded += r.map_or(0, |n| n as u64);
            self.spare.push(buf);
        }
        self.send(cmd);
        match self.recv() {
            Reply::Done(r, counters, info) => {
                self.counters = counters;
                self.info = *info;
                r
            }
            Reply::Read(..) => unreachable!("no read is in flight"),
        }
    }

    fn wait_read(&mut self) -> (Vec<u8>, Result<usize>) {
        self.in_flight -= 1;
        match self.recv() {
            Reply::Read(buf, r, counters, took) => {
                // Bytes the card layer took and threw away (chip cards' warm-up, a FIFO emptied
                // after an overflow) show a card that delivers: only a read that found nothing at
                // all counts as silence.
                let lost = |c: &CardCounters| c.bytes_discarded + c.bytes_dropped;
                let silent = matches!(r, Ok(0)) && lost(&counters) == lost(&self.counters);
                self.counters = counters;
                self.empty_for = if silent { self.empty_for + took } else { Duration::ZERO };
                (buf, r)
            }
            Reply::Done(..) => unreachable!("a read is in flight"),
        }
    }

    fn send(&mut self, cmd: Cmd) {
        let sent = self.cmd.as_ref().is_some_and(|tx| tx.send(cmd).is_ok());
        if !sent {
            self.worker_died();
        }
    }

    fn recv(&mut self) -> Reply {
        match self.reply.recv() {
            Ok(r) => r,
            Err(_) => self.worker_died(),
        }
    }

    /// The reader thread only ends early by panicking: pass that panic on.
    fn worker_died(&mut self) -> ! {
        self.cmd = None;
        match self.worker.take().map(JoinHandle::join) {
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            _ => panic!("card reader thread ended without a reply"),
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Closing the command channel ends the thread's loop once the queued reads are done
        // (their replies fit in the reply channel, so the thread never blocks on them).
        self.cmd = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::{self, CardOptions};
    use crate::hw;

    fn sim(spec: &str) -> Box<dyn Card> {
        let dev = hw::open(&format!("sim:{spec}").parse().expect("uri")).expect("sim opens");
        card::open(dev, &CardOptions::default()).expect("card opens")
    }

    /// `total` bytes straight from the card, in reads of `batch`.
    fn direct(spec: &str, batch: usize, total: usize) -> Vec<u8> {
        let mut c = sim(spec);
        c.start().unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0; batch];
        while out.len() < total {
            let n = c.read(&mut buf).unwrap();
            out.extend_from_slice(&buf[..n]);
        }
        out.truncate(total);
        out
    }

    #[test]
    fn prefetch_returns_the_cards_stream_unchanged() {
        for spec in ["pcie-16m?rate=0&seed=11", "pcie-240m?rate=0&seed=12"] {
            let batch = 64 << 10;
            let total = 5 * batch + 1000;
            let want = direct(spec, batch, total);
            let mut p = Prefetch::new(sim(spec), batch).unwrap();
            p.start().unwrap();
            let mut got = Vec::new();
            while got.len() < total {
                got.extend_from_slice(p.read().unwrap());
            }
            // The counters are those of the batches returned, not of the one read ahead.
            assert_eq!(p.counters().bytes_read, got.len() as u64, "{spec}");
            got.truncate(total);
            assert!(got == want, "{spec}: prefetched bytes differ from direct reads");
        }
    }

    #[test]
    fn prefetch_throws_the_read_ahead_away_at_a_reset() {
        let batch = 4096;
        let mut p = Prefetch::new(sim("pcie-16m?rate=0&seed=13"), batch).unwrap();
        p.start().unwrap();
        let first = p.read().unwrap().to_vec();
        assert_eq!(first.len(), batch);
        assert_eq!(p.counters().bytes_discarded, 0);
        // The next batches are being read ahead; the restart must drop them, not return them.
        p.stop().unwrap();
        p.start().unwrap();
        assert_eq!(p.counters().bytes_discarded, (DEPTH - 1) as u64 * batch as u64);
        let after = p.read().unwrap().to_vec();
        let stream = direct("pcie-16m?rate=0&seed=13", batch, 3 * batch);
        assert_eq!(first, stream[..batch]);
        assert!(
            after != stream[batch..2 * batch],
            "the read-ahead batch came back after the reset"
        );
    }

    #[test]
    fn prefetch_passes_card_errors_on_in_order() {
        let batch = 64 << 10;
        let mut p =
            Prefetch::new(sim("pcie-240m?rate=0&seed=14&fault=unplug&fault-after=3000000"), batch)
                .unwrap();
        p.start().unwrap();
        let mut good = 0;
        let err = loop {
            match p.read() {
                Ok(b) => good += b.len(),
                Err(e) => break e,
            }
            assert!(good < 10 << 20, "the unplug never showed");
        };
        assert!(err.is_device_gone(), "{err}");
        assert!(good > 0 && good <= 3_000_000, "{good} bytes before the unplug");
    }
}
