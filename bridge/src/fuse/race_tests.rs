//! Crash and restart races of the FUSE side (they need root and /dev/fuse, like `tests.rs`):
//! a mount whose connection dies under a request in flight, and readers that must stay killable
//! however many of them wait.

use std::path::Path;
use std::sync::{mpsc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use fuser::{FileHandle, Filesystem, INodeNo, ReplyAttr, Request};

use super::mountpoint;
use super::tests::{bounded, can_mount, fixture_with, HANG};

/// The FUSE control file system (fusectl) mounted on a private directory, for `abort`.
struct Fusectl(tempfile::TempDir);

impl Fusectl {
    fn mount() -> Option<Fusectl> {
        let dir = tempfile::tempdir().expect("tempdir");
        match nix::mount::mount(
            Some("fusectl"),
            dir.path(),
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        ) {
            Ok(()) => Some(Fusectl(dir)),
            Err(e) => {
                eprintln!("skipping: cannot mount fusectl: {e}");
                None
            }
        }
    }

    /// Aborts FUSE connection `conn` (the minor device number of its mount): requests in flight
    /// end with `ECONNABORTED`, later ones get `ENOTCONN`.
    fn abort(&self, conn: u32) {
        let path = self.0.path().join(conn.to_string()).join("abort");
        std::fs::write(&path, b"1").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

impl Drop for Fusectl {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The FUSE connection of the topmost mount at `dir`, read from mountinfo (field 3,
/// `major:minor`) so that nothing has to `stat` a mount that may not answer.
fn connection_of(dir: &Path) -> u32 {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let want = dir.to_str().expect("utf-8 path");
    text.lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(4) == Some(&want)).then(|| f[2].split_once(':').expect("maj:min").1.to_owned())
        })
        .unwrap_or_else(|| panic!("{want} is not a mount point"))
        .parse()
        .expect("minor number")
}

/// A file system whose `getattr` never answers: it keeps the reply (dropping it would answer
/// `EIO`) and reports each arrival, so a `stat` of the mount point is provably in flight.
struct Stalling {
    kept: Mutex<Vec<ReplyAttr>>,
    arrived: Mutex<mpsc::Sender<()>>,
}

impl Filesystem for Stalling {
    fn getattr(&self, _req: &Request, _ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner).push(reply);
        let _ = self.arrived.lock().unwrap_or_else(PoisonError::into_inner).send(());
    }
}

/// A restart racing a killed bridge: the new bridge's `stat` of the mount point is queued on the
/// old connection when that connection goes down, and fails with `ECONNABORTED`, not `ENOTCONN`.
/// `prepare` must clean that mount up like any dead one. (Fails before `is_dead_mount` knew
/// `ECONNABORTED`: prepare returned "failed to inspect mount point".)
#[test]
fn a_mount_aborted_under_a_pending_stat_is_cleaned_up() {
    if !can_mount() {
        return;
    }
    let Some(ctl) = Fusectl::mount() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mp = std::fs::canonicalize(dir.path()).expect("canonical").join("dev");
    std::fs::create_dir(&mp).expect("mount point");
    let (tx, arrived) = mpsc::channel();
    let fs = Stalling { kept: Mutex::default(), arrived: Mutex::new(tx) };
    let mut options = fuser::Config::default();
    options.mount_options = vec![fuser::MountOption::FSName(mountpoint::FS_NAME.into())];
    let session = fuser::Session::new(fs, &mp, &options).expect("mount the stalling fs");
    let session = session.spawn().expect("session thread");
    let conn = connection_of(&mp);

    // A plain stat, to show which error the aborted request gets, and prepare(), both in flight.
    let p = mp.clone();
    let plain = std::thread::spawn(move || std::fs::metadata(&p).map(|_| ()));
    let p = mp.clone();
    let prepare = std::thread::spawn(move || mountpoint::prepare(&p));
    for _ in 0..2 {
        arrived.recv_timeout(HANG).expect("both stats reach the file system");
    }
    ctl.abort(conn);

    let err = bounded("plain stat", move || plain.join().expect("join")).expect_err("aborted");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED), "in-flight request: {err}");
    bounded("prepare", move || prepare.join().expect("join"))
        .expect("prepare detaches a mount whose connection was aborted under it");
    assert!(
        !mountpoint::mounted_at(&mp).expect("mountinfo").is_some_and(|m| m.is_qrng()),
        "the dead mount is gone"
    );
    assert!(mp.is_dir(), "the directory under it is usable");
    drop(session);
}

/// Starts `head -c 100` on `path`: a reader that blocks on an empty device.
fn blocked_reader(path: &Path) -> std::process::Child {
    std::process::Command::new("head")
        .args(["-c", "100"])
        .arg(path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start head")
}

/// Waits until `f` holds, failing the test if it never does.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + HANG;
    while !f() {
        assert!(std::time::Instant::now() < end, "{what}: never happened");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Readers queued beyond the pool's workers (all busy with readers that keep waiting) are
/// killable too. (Fails before the queue watcher: the queued readers wait for a worker that never
/// frees, SIGTERM or not, and the test gives up after `HANG`.)
#[test]
fn readers_queued_beyond_the_worker_limit_can_be_killed() {
    const WORKERS: usize = 4;
    const QUEUED: usize = 100;
    let Some(fx) = fixture_with(&[("qrng0", 0)], |c| c.max_workers = WORKERS) else { return };
    let path = fx.mount.file_path("qrng0");
    let pool = fx.mount.shared.workers.clone();
    let mut holders: Vec<_> = (0..WORKERS).map(|_| blocked_reader(&path)).collect();
    until("every worker waits for a holder", || pool.load() == (WORKERS, 0));
    let mut queued: Vec<_> = (0..QUEUED).map(|_| blocked_reader(&path)).collect();
    until("the other readers queue", || pool.load() == (WORKERS, QUEUED));

    for c in &queued {
        kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    }
    for c in &mut queued {
        bounded_wait(c);
        let status = c.wait().expect("wait");
        assert!(!status.success(), "head was killed, not satisfied: {status:?}");
    }
    assert_eq!(pool.load(), (WORKERS, 0), "the queue is empty, the holders still wait");
    for c in &mut holders {
        assert!(c.try_wait().expect("try_wait").is_none(), "a holder was not signalled");
    }

    for c in &holders {
        kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL).expect("SIGKILL");
    }
    for c in &mut holders {
        bounded_wait(c);
    }
    assert_eq!(fx.src.consumed("qrng0"), 0);
}

fn bounded_wait(c: &mut std::process::Child) {
    until("a killed reader exits", || c.try_wait().expect("try_wait").is_some());
}

/// A file system that answers `getattr` with a long attribute lifetime, so the kernel keeps
/// answering `stat` of its root from its cache, even after the connection died.
struct Cached;

impl Filesystem for Cached {
    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let t = std::time::UNIX_EPOCH;
        reply.attr(
            &Duration::from_secs(3600),
            &fuser::FileAttr {
                ino,
                size: 0,
                blocks: 0,
                atime: t,
                mtime: t,
                ctime: t,
                crtime: t,
                kind: fuser::FileType::Directory,
                perm: 0o755,
                nlink: 2,
                uid: 0,
                gid: 0,
                rdev: 0,
                blksize: 4096,
                flags: 0,
            },
        );
    }
}

/// A restart within the attribute lifetime of a killed bridge's mount: `stat` of the dead mount
/// succeeds from the kernel's cache, which made `prepare` take it for a live bridge ("already
/// served by a running qrng-bridge"). (Fails before `prepare` asked `statfs`.)
#[test]
fn a_dead_mount_whose_attributes_are_still_cached_is_cleaned_up() {
    if !can_mount() {
        return;
    }
    let Some(ctl) = Fusectl::mount() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mp = std::fs::canonicalize(dir.path()).expect("canonical").join("dev");
    std::fs::create_dir(&mp).expect("mount point");
    let mut options = fuser::Config::default();
    options.mount_options = vec![fuser::MountOption::FSName(mountpoint::FS_NAME.into())];
    let session = fuser::Session::new(Cached, &mp, &options).expect("mount").spawn().expect("run");
    std::fs::metadata(&mp).expect("stat: fills the attribute cache");
    ctl.abort(connection_of(&mp));
    std::fs::metadata(&mp).expect("a dead mount still answers stat from the cache");

    mountpoint::prepare(&mp).expect("prepare detaches the dead mount");
    assert!(
        !mountpoint::mounted_at(&mp).expect("mountinfo").is_some_and(|m| m.is_qrng()),
        "the dead mount is gone"
    );
    drop(session);
}
