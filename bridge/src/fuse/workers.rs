//! Worker threads for reads that must wait for entropy.
//!
//! fuser dispatches every request on one thread; a read that blocks there would stall every other
//! reader, `poll` and even `open`. Reads that cannot be answered at once are handed to this pool and
//! answered from a worker (FUSE replies may come from any thread, in any order). The pool grows on
//! demand up to a limit, so one slow device cannot starve readers of another until that limit, and
//! shrinks back when idle.
//!
//! A reader blocked in a FUSE read cannot be killed: once the request reached user space the
//! kernel waits for the answer uninterruptibly, and fuser 0.18 does not deliver `FUSE_INTERRUPT`.
//! So a waiting worker looks at the caller's pending signals in `/proc/<tid>/status` between short
//! waits and answers `EINTR` when one is pending, which lets Ctrl-C and `kill` work.
//!
//! Reads beyond the pool's limit wait in a queue without a worker. A watcher thread, running while
//! that queue is not empty, looks at the pending signals of every queued caller each
//! [`SIGNAL_CHECK`] and answers those interrupted at once, so every waiting reader is killable
//! within that period, however many there are.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// How a queued job ends: run by a worker, or withdrawn because its caller has a signal pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// A worker runs the job.
    Work,
    /// The caller was interrupted while the job was queued; answer `EINTR` without waiting.
    Interrupted,
}

/// How often waiting reads and the queue watcher look for a pending signal of their callers:
/// the bound on how long a signal takes to interrupt a waiting reader.
pub const SIGNAL_CHECK: Duration = Duration::from_millis(100);

struct Job {
    /// Caller's thread id (0: none to watch).
    tid: u32,
    run: Box<dyn FnOnce(Run) + Send + 'static>,
}

/// How long an idle worker above the minimum lingers before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    idle: usize,
    total: usize,
    shutdown: bool,
    /// Whether the queue watcher runs.
    watching: bool,
}

struct Inner {
    state: Mutex<State>,
    cv: Condvar,
    min: usize,
    max: usize,
}

/// An elastic thread pool for blocking reads.
#[derive(Clone)]
pub struct Pool(Arc<Inner>);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Pool")
            .field("total", &s.total)
            .field("idle", &s.idle)
            .field("queued", &s.jobs.len())
            .finish()
    }
}

impl Pool {
    /// A pool that keeps `min` threads and grows to `max` (at least 1).
    pub fn new(min: usize, max: usize) -> Pool {
        let max = max.max(1);
        let pool = Pool(Arc::new(Inner {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            min: min.min(max),
            max,
        }));
        for _ in 0..pool.0.min {
            let mut s = pool.lock();
            s.total += 1;
            drop(s);
            pool.spawn_worker();
        }
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a job for caller thread `tid`; it runs on an idle worker, a new one, or the first
    /// to become free (`Run::Work`), unless `tid` has a signal pending while it is still queued
    /// (`Run::Interrupted`, from the queue watcher).
    pub fn submit(&self, tid: u32, job: impl FnOnce(Run) + Send + 'static) {
        let mut s = self.lock();
        s.jobs.push_back(Job { tid, run: Box::new(job) });
        // Idle workers that were notified but have not woken yet still count as idle, so compare
        // the whole queue with them: grow whenever some queued job has no idle worker to take it.
        let short = s.jobs.len() > s.idle;
        let grow = short && s.total < self.0.max && !s.shutdown;
        if grow {
            s.total += 1;
        }
        let watch = short && !grow && !s.watching;
        if watch {
            s.watching = true;
        }
        drop(s);
        if grow {
            self.spawn_worker();
        } else {
            self.0.cv.notify_one();
        }
        if watch {
            self.spawn_watcher();
        }
    }

    fn spawn_watcher(&self) {
        let inner = Arc::clone(&self.0);
        let spawned = std::thread::Builder::new()
            .name("qrng-fuse-queue".into())
            .spawn(move || watch_queue(&inner));
        if let Err(e) = spawned {
            // The next submit that finds the queue short tries again.
            tracing::warn!(error = %e, "failed to start the FUSE queue watcher");
            self.lock().watching = false;
        }
    }

    fn spawn_worker(&self) {
        let inner = Arc::clone(&self.0);
        let spawned =
            std::thread::Builder::new().name("qrng-fuse-read".into()).spawn(move || worker(&inner));
        if let Err(e) = spawned {
            // The job stays queued for a running worker; the pool always keeps `min` of them.
            tracing::warn!(error = %e, "failed to start a FUSE read worker");
            self.lock().total -= 1;
            self.0.cv.notify_one();
        }
    }

    /// Lets workers exit once the queue is empty.
    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.0.cv.notify_all();
    }

    /// Threads currently in the pool.
    #[cfg(test)]
    pub fn threads(&self) -> usize {
        self.lock().total
    }

    /// Threads running a job, and jobs queued for a thread.
    #[cfg(test)]
    pub fn load(&self) -> (usize, usize) {
        let s = self.lock();
        (s.total - s.idle, s.jobs.len())
    }
}

fn worker(inner: &Inner) {
    let mut s = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if let Some(job) = s.jobs.pop_front() {
            drop(s);
            (job.run)(Run::Work);
            s = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        if s.shutdown {
            s.total -= 1;
            return;
        }
        s.idle += 1;
        let (guard, timeout) =
            inner.cv.wait_timeout(s, IDLE_EXIT).unwrap_or_else(PoisonError::into_inner);
        s = guard;
        s.idle -= 1;
        if timeout.timed_out() && s.jobs.is_empty() && s.total > inner.min {
            s.total -= 1;
            return;
        }
    }
}

/// The queue watcher: while jobs are queued, answers those whose caller has a signal pending.
fn watch_queue(inner: &Inner) {
    loop {
        std::thread::sleep(SIGNAL_CHECK);
        let tids: Vec<u32> = {
            let mut s = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            if s.jobs.is_empty() || s.shutdown {
                s.watching = false;
                return;
            }
            s.jobs.iter().map(|j| j.tid).collect()
        };
        // Read /proc without the lock; a thread id has one job at most (its read waits for it).
        let hit: Vec<u32> = tids.into_iter().filter(|&t| signal_pending(t)).collect();
        if hit.is_empty() {
            continue;
        }
        let withdrawn: VecDeque<Job> = {
            let mut s = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            let (out, keep) = std::mem::take(&mut s.jobs)
                .into_iter()
                .partition(|j| j.tid != 0 && hit.contains(&j.tid));
            s.jobs = keep;
            out
        };
        for job in withdrawn {
            (job.run)(Run::Interrupted);
        }
    }
}

/// Whether thread `tid` has a signal pending that it neither blocks nor ignores: the moment a
/// blocked FUSE reader should get `EINTR`. `tid` 0 (a caller outside our pid namespace) or an
/// unreadable `/proc` entry count as "no signal"; a vanished thread counts as interrupted.
pub fn signal_pending(tid: u32) -> bool {
    if tid == 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{tid}/status")) {
        Ok(text) => pending_in_status(&text),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Parses the signal masks of a `/proc/<pid>/status` text (proc(5): SigPnd, ShdPnd, SigBlk,
/// SigIgn are hexadecimal masks).
fn pending_in_status(text: &str) -> bool {
    let mask = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = mask("SigPnd:") | mask("ShdPnd:");
    // SIGKILL (bit 8) can be neither blocked nor ignored.
    const SIGKILL_BIT: u64 = 1 << (9 - 1);
    pending & !(mask("SigBlk:") | mask("SigIgn:")) != 0 || pending & SIGKILL_BIT != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_run_concurrently_beyond_the_minimum() {
        let pool = Pool::new(1, 4);
        // Three jobs that each wait for the others: only completes if they run in parallel.
        let barrier = Arc::new(std::sync::Barrier::new(3));
        let (tx, rx) = mpsc::channel();
        for i in 0..3 {
            let (b, tx) = (Arc::clone(&barrier), tx.clone());
            pool.submit(0, move |_| {
                b.wait();
                tx.send(i).expect("send");
            });
        }
        let mut got: Vec<i32> = (0..3).map(|_| rx.recv().expect("job ran")).collect();
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2]);
        assert!(pool.threads() >= 3);
    }

    #[test]
    fn jobs_beyond_the_limit_wait_their_turn() {
        let pool = Pool::new(0, 1);
        let (tx, rx) = mpsc::channel();
        for i in 0..5 {
            let tx = tx.clone();
            pool.submit(0, move |_| tx.send(i).expect("send"));
        }
        let got: Vec<i32> = (0..5).map(|_| rx.recv().expect("job ran")).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4], "one worker runs the queue in order");
        assert_eq!(pool.threads(), 1);
    }

    fn status(pnd: &str, shd: &str, blk: &str, ign: &str) -> String {
        format!(
            "Name:\tdd\nSigQ:\t0/1\nSigPnd:\t{pnd}\nShdPnd:\t{shd}\nSigBlk:\t{blk}\nSigIgn:\t{ign}\nSigCgt:\t0\n"
        )
    }

    #[test]
    fn pending_signals_are_read_from_proc_status() {
        assert!(!pending_in_status(&status("0000000000000000", "0000000000000000", "0", "0")));
        // SIGINT (2) pending for the process.
        assert!(pending_in_status(&status("0", "0000000000000002", "0", "0")));
        // ... but blocked or ignored: keep waiting.
        assert!(!pending_in_status(&status("0", "0000000000000002", "0000000000000002", "0")));
        assert!(!pending_in_status(&status("0000000000000002", "0", "0", "0000000000000002")));
        // SIGKILL always counts.
        assert!(pending_in_status(&status("0", "0000000000000100", "0000000000000100", "0")));
    }

    #[test]
    fn own_thread_has_no_pending_signal_and_a_dead_one_counts_as_interrupted() {
        let tid = nix::unistd::gettid().as_raw() as u32;
        assert!(!signal_pending(tid));
        assert!(!signal_pending(0));
        // pid_max is at most 2^22 on Linux: this id cannot exist.
        assert!(signal_pending((1 << 22) + 7));
    }
}
