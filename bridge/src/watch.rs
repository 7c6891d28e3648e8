//! Hot-plug: watch the ring directory (`--ring-dir`, default `/run/qrng`) and attach or detach
//! rings as `*.ring` files appear and disappear, without restarting the bridge.
//!
//! inotify gives promptness; a rescan of the directory on every event and at least once a second
//! gives correctness (a ring whose header is still being written when it appears is retried, a
//! lost event or an inotify queue overflow is healed, a file replaced under the same name — a new
//! inode — is re-attached). A driver that exits leaves its ring in place, marked STOPPED: the
//! device stays listed and reports the card gone until its file is removed or a new driver
//! re-attaches to it.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// How often the directory is rescanned without events (also how soon a refused ring is retried).
const RESCAN: Duration = Duration::from_millis(500);

/// Errors of starting the watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The ring directory could not be created or watched.
    #[error("failed to {op} ring directory {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What the watcher drives: attach a ring file (dispenser, FUSE file, API device) or detach one.
pub trait RingSink: Send + Sync + 'static {
    /// Attaches the ring at `path`; returns the device name. An error is retried on the next
    /// rescan (the driver may still be writing the header).
    fn attach(&self, path: &Path) -> Result<String, String>;
    /// Detaches device `name` (its ring file is gone or was replaced).
    fn detach(&self, name: &str);
}

/// The running watcher; dropping it stops the thread.
#[derive(Debug)]
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Creates `dir` if missing, attaches the rings already there, and keeps following it.
    /// Rings in `skip` (already attached explicitly with `--ring`) are left alone.
    pub fn start(
        dir: &Path,
        skip: HashSet<PathBuf>,
        sink: Arc<dyn RingSink>,
    ) -> Result<Watcher, WatchError> {
        let err = |op| {
            let path = dir.to_path_buf();
            move |source| WatchError::Io { op, path, source }
        };
        std::fs::create_dir_all(dir).map_err(err("create"))?;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| err("watch")(e.into()))?;
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_ATTRIB;
        inotify.add_watch(dir, mask).map_err(|e| err("watch")(e.into()))?;
        let mut state = State {
            dir: dir.to_path_buf(),
            skip,
            attached: HashMap::new(),
            refused: HashMap::new(),
        };
        // The rings present at start are attached before `start` returns.
        state.reconcile(sink.as_ref());
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("qrng-ring-watch".into())
            .spawn(move || run(&inotify, &mut state, sink.as_ref(), &stop2))
            .map_err(err("start the watcher thread for"))?;
        Ok(Watcher { stop, thread: Some(thread) })
    }

    /// Stops watching (attached rings stay attached).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A ring file's identity: a new file under the same name is a new ring.
type FileId = (u64, u64);

struct State {
    dir: PathBuf,
    skip: HashSet<PathBuf>,
    /// Device name → (path, file identity).
    attached: HashMap<String, (PathBuf, FileId)>,
    /// Rings that could not be attached, with the error last logged, so it is logged once.
    refused: HashMap<PathBuf, (FileId, String)>,
}

impl State {
    /// The `*.ring` files in the directory now.
    fn scan(&self) -> HashMap<PathBuf, FileId> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return HashMap::new();
        };
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ring") && !self.skip.contains(p))
            .filter_map(|p| {
                let m = std::fs::metadata(&p).ok().filter(std::fs::Metadata::is_file)?;
                Some((p, (m.dev(), m.ino())))
            })
            .collect()
    }

    fn reconcile(&mut self, sink: &dyn RingSink) {
        let present = self.scan();
        let gone: Vec<String> = self
            .attached
            .iter()
            .filter(|(_, (path, id))| present.get(path) != Some(id))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            tracing::info!(device = %name, "ring file gone or replaced: detaching");
            sink.detach(&name);
            self.attached.remove(&name);
        }
        self.refused.retain(|p, _| present.contains_key(p));
        let known: HashSet<&PathBuf> = self.attached.values().map(|(p, _)| p).collect();
        let new: Vec<(PathBuf, FileId)> =
            present.into_iter().filter(|(p, _)| !known.contains(p)).collect();
        for (path, id) in new {
            match sink.attach(&path) {
                Ok(name) => {
                    tracing::info!(device = %name, ring = %path.display(), "ring attached");
                    self.refused.remove(&path);
                    self.attached.insert(name, (path, id));
                }
                Err(e) => {
                    let seen = self.refused.get(&path).is_some_and(|(i, m)| *i == id && *m == e);
                    if !seen {
                        tracing::warn!(ring = %path.display(), error = %e, "ring not attached (retrying)");
                        self.refused.insert(path, (id, e));
                    }
                }
            }
        }
    }
}

fn run(inotify: &Inotify, state: &mut State, sink: &dyn RingSink, stop: &AtomicBool) {
    let timeout = PollTimeout::try_from(RESCAN).unwrap_or(PollTimeout::MAX);
    while !stop.load(Ordering::Acquire) {
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::error!(error = %e, "ring directory watch failed; rescanning only");
                std::thread::sleep(RESCAN);
            }
        }
        // Drain the queue; which files changed does not matter, the rescan looks at them all.
        while let Ok(events) = inotify.read_events() {
            if events.is_empty() {
                break;
            }
        }
        state.reconcile(sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records calls; refuses files whose content starts with "bad".
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl RingSink for Recorder {
        fn attach(&self, path: &Path) -> Result<String, String> {
            let body = std::fs::read(path).map_err(|e| e.to_string())?;
            if body.starts_with(b"bad") {
                return Err("bad header".into());
            }
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            self.0.lock().expect("lock").push(format!("+{name}"));
            Ok(name)
        }

        fn detach(&self, name: &str) {
            self.0.lock().expect("lock").push(format!("-{name}"));
        }
    }

    impl Recorder {
        fn log(&self) -> Vec<String> {
            self.0.lock().expect("lock").clone()
        }

        /// Waits until the log has `n` entries (fails the test if that never happens).
        fn wait_for(&self, n: usize) -> Vec<String> {
            let end = std::time::Instant::now() + Duration::from_secs(30);
            while self.log().len() < n {
                assert!(std::time::Instant::now() < end, "watcher did not react: {:?}", self.log());
                std::thread::sleep(Duration::from_millis(10));
            }
            self.log()
        }
    }

    #[test]
    fn rings_present_at_start_are_attached_before_start_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("qrng0.ring"), b"ok").expect("ring");
        std::fs::write(dir.path().join("qrng1.ring"), b"ok").expect("ring");
        std::fs::write(dir.path().join("notes.txt"), b"ok").expect("other file");
        let explicit = dir.path().join("qrng1.ring");
        let rec = Arc::new(Recorder::default());
        let w = Watcher::start(dir.path(), HashSet::from([explicit]), rec.clone()).expect("start");
        assert_eq!(rec.log(), vec!["+qrng0"], "explicit rings and other files are left alone");
        w.stop();
    }

    #[test]
    fn rings_that_appear_and_go_are_attached_and_detached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = Arc::new(Recorder::default());
        let _w =
            Watcher::start(&dir.path().join("sub"), HashSet::new(), rec.clone()).expect("start");
        let ring = dir.path().join("sub/qrng3.ring");
        std::fs::write(&ring, b"ok").expect("ring");
        assert_eq!(rec.wait_for(1), vec!["+qrng3"]);
        std::fs::remove_file(&ring).expect("rm");
        assert_eq!(rec.wait_for(2), vec!["+qrng3", "-qrng3"]);
    }

    #[test]
    fn a_refused_ring_is_retried_and_a_replaced_one_reattached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = Arc::new(Recorder::default());
        let _w = Watcher::start(dir.path(), HashSet::new(), rec.clone()).expect("start");
        let ring = dir.path().join("qrng0.ring");
        std::fs::write(&ring, b"bad, header not written yet").expect("ring");
        // Fixed in place, as a driver finishing its header would.
        std::fs::write(&ring, b"ok").expect("header written");
        assert_eq!(rec.wait_for(1), vec!["+qrng0"]);
        // A new file under the same name (new inode) is a new ring.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, b"ok").expect("new ring");
        std::fs::rename(&tmp, &ring).expect("replace");
        assert_eq!(rec.wait_for(3), vec!["+qrng0", "-qrng0", "+qrng0"]);
    }
}
