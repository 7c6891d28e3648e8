//! The fuser [`Filesystem`]: one directory with one read-only, stream-like file per device.
//!
//! Reads are answered on fuser's dispatch thread when the bytes are there already (the fast path
//! that makes `dd bs=1M` fast) and otherwise handed to a worker that waits for the ring to refill,
//! so one waiting reader never stalls the others.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, PollEvents, PollFlags, PollNotifier, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyPoll, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

use super::ioctl;
use super::poll::Pollers;
use super::source::{ReadError, Readiness, Source};
use super::workers::{self, Pool, Run, SIGNAL_CHECK};

/// Largest read (and write) request the kernel sends: 256 pages, the kernel's default
/// `fs.fuse.max_pages_limit`; `dd bs=1M` then costs one request per block.
pub const MAX_IO: u32 = 1 << 20;

/// How long lookups and attributes stay cached; hot-plug also invalidates entries explicitly.
const TTL: Duration = Duration::from_secs(1);

/// `st_size` of the device files. Not 0, although the stream has no length: the kernel answers a
/// `splice`/`sendfile`/`copy_file_range` from a file of size 0 with 0 bytes (end of file) without
/// asking us, since it reads those through the page cache (`filemap_splice_read`) even for
/// `FOPEN_DIRECT_IO` files. At size 1 it asks, and [`QrngFs::read`] refuses page-cache reads with
/// `EINVAL`, splice's "file does not support splicing", on which Go, Python and coreutils fall
/// back to `read(2)`.
pub const APPARENT_SIZE: u64 = 1;

/// What page-cache reads (splice, sendfile, copy_file_range, mmap) get: they would keep random
/// bytes in the page cache, where the next splice of any reader finds them again.
const PAGE_CACHE_READ: Errno = Errno::EINVAL;

/// `st_blksize` of the device files: what stdio buffers. /dev/urandom reports one page too; a
/// larger value would make `fread` of 16 bytes swallow that much entropy.
const BLKSIZE: u32 = 4096;

thread_local! {
    /// The fast path's read buffer, one per dispatch thread, grown to the largest request once.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Inode numbers are never reused, so a file handle of a removed device can never reach a new one.
#[derive(Debug)]
pub struct Table {
    by_name: BTreeMap<String, u64>,
    by_ino: HashMap<u64, String>,
    next_ino: u64,
}

impl Default for Table {
    fn default() -> Self {
        Table { by_name: BTreeMap::new(), by_ino: HashMap::new(), next_ino: INodeNo::ROOT.0 + 1 }
    }
}

impl Table {
    /// Adds `name`; returns its inode and whether it is new.
    pub fn add(&mut self, name: &str) -> (u64, bool) {
        if let Some(&ino) = self.by_name.get(name) {
            return (ino, false);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_name.insert(name.to_owned(), ino);
        self.by_ino.insert(ino, name.to_owned());
        (ino, true)
    }

    /// Removes `name`; returns its inode if it was there.
    pub fn remove(&mut self, name: &str) -> Option<u64> {
        let ino = self.by_name.remove(name)?;
        self.by_ino.remove(&ino);
        Some(ino)
    }

    /// Device names in order.
    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }
}

/// Ownership and permissions of the files, and whether control ioctls are accepted.
#[derive(Debug, Clone, Copy)]
pub struct FsOptions {
    /// Permission bits of the device files (default 0444).
    pub file_mode: u16,
    /// Owner of the files.
    pub uid: u32,
    /// Group of the files.
    pub gid: u32,
    /// Accept IDQ's reset/enable/disable ioctls (as no-ops) instead of refusing them.
    pub allow_control: bool,
}

/// State shared by the file system, its workers and the mount handle.
pub struct Shared {
    /// The device files.
    pub table: RwLock<Table>,
    /// Where the bytes come from.
    pub source: Arc<dyn Source>,
    /// File attributes and policy.
    pub opts: FsOptions,
    /// Workers for reads that wait.
    pub workers: Pool,
    /// Waiting pollers.
    pub pollers: Pollers,
    /// Timestamps of every file (the mount time).
    pub born: SystemTime,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("opts", &self.opts).field("workers", &self.workers).finish()
    }
}

impl Shared {
    fn device(&self, ino: INodeNo) -> Option<String> {
        self.table.read().unwrap_or_else(PoisonError::into_inner).by_ino.get(&ino.0).cloned()
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, nlink) = if ino == INodeNo::ROOT {
            (FileType::Directory, 0o555, 2)
        } else {
            self.device(ino)?;
            (FileType::RegularFile, self.opts.file_mode, 1)
        };
        Some(FileAttr {
            ino,
            // A directory has no size; a device file the smallest that makes splice ask us.
            size: if kind == FileType::Directory { 0 } else { APPARENT_SIZE },
            blocks: 0,
            atime: self.born,
            mtime: self.born,
            ctime: self.born,
            crtime: self.born,
            kind,
            perm,
            nlink,
            uid: self.opts.uid,
            gid: self.opts.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        })
    }
}

/// The file system fuser drives.
#[derive(Debug)]
pub struct QrngFs(pub Arc<Shared>);

fn errno(e: &ReadError) -> Errno {
    Errno::from_i32(e.errno())
}

/// Answers a read on a worker: waits for its `need` bytes, answering EINTR as soon as the caller
/// has a signal pending.
fn finish_read(shared: &Shared, device: &str, need: usize, tid: u32, reply: ReplyData) {
    let interrupted = || workers::signal_pending(tid);
    match shared.source.take_blocking(device, need, SIGNAL_CHECK, &interrupted) {
        Ok(bytes) => reply.data(&bytes),
        Err(e) => reply.error(errno(&e)),
    }
}

impl Filesystem for QrngFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Large requests: with max_pages this lets the kernel send 1 MiB reads.
        if let Err(nearest) = config.set_max_write(MAX_IO) {
            let _ = config.set_max_write(nearest);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = (parent == INodeNo::ROOT)
            .then(|| {
                let t = self.0.table.read().unwrap_or_else(PoisonError::into_inner);
                name.to_str().and_then(|n| t.by_name.get(n).copied())
            })
            .flatten();
        match ino.and_then(|i| self.0.attr(INodeNo(i))) {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Includes O_TRUNC on open: the files cannot be changed.
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.0.device(ino).is_none() {
            return reply.error(if ino == INodeNo::ROOT { Errno::EISDIR } else { Errno::ENOENT });
        }
        // direct_io: no page cache, every read reaches us; nonseekable + stream: no offsets, like
        // a character device, and concurrent reads on one descriptor are not serialised.
        let flags =
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE | FopenFlags::FOPEN_STREAM;
        reply.opened(FileHandle(ino.0), flags);
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        size: u32,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if lock_owner.is_none() {
            // Every direct read(2) (`fuse_direct_io`) names the caller's file table as lock
            // owner; page-cache reads (`fuse_read_folio`, `fuse_readahead`) do not.
            return reply.error(PAGE_CACHE_READ);
        }
        let Some(device) = self.0.device(ino) else {
            // The card was unplugged while the file was open.
            return reply.error(Errno::EIO);
        };
        let need = size as usize;
        if need == 0 {
            return reply.data(&[]);
        }
        let nonblock = flags.0 & libc::O_NONBLOCK != 0;
        let source = &self.0.source;
        // Fast path: bytes that are ready go straight from the ring into a buffer this thread
        // reuses, and from there into the reply: no allocation, no zeroing per request.
        let slow = READ_BUF.with(move |buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < need {
                buf.resize(need, 0);
            }
            // A blocking read takes all of its bytes at once or none, so that it stays one request
            // in the FIFO order (and one contiguous piece of the stream).
            let min = if nonblock { 1 } else { need };
            match source.try_take_into(&device, &mut buf[..need], min) {
                Ok(n) => {
                    reply.data(&buf[..n]);
                    None
                }
                Err(ReadError::Empty) if !nonblock => Some((device, reply)),
                Err(e) => {
                    reply.error(errno(&e));
                    None
                }
            }
        });
        if let Some((device, reply)) = slow {
            let shared = Arc::clone(&self.0);
            let tid = req.pid();
            self.0.workers.submit(tid, move |run| match run {
                Run::Work => finish_read(&shared, &device, need, tid, reply),
                Run::Interrupted => reply.error(Errno::EINTR),
            });
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EPERM);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let names = self.0.table.read().unwrap_or_else(PoisonError::into_inner).by_name.clone();
        let mut entries = vec![
            (INodeNo::ROOT, FileType::Directory, ".".to_owned()),
            (INodeNo::ROOT, FileType::Directory, "..".to_owned()),
        ];
        entries.extend(names.into_iter().map(|(n, i)| (INodeNo(i), FileType::RegularFile, n)));
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(skip) {
            if reply.add(ino, i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel has checked the mode bits already.
        reply.ok();
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let facts = self.0.device(ino).and_then(|d| self.0.source.card_facts(&d));
        let ctx = ioctl::Context {
            card: facts.as_ref(),
            card_count: u32::try_from(self.0.source.device_count()).unwrap_or(u32::MAX),
            allow_control: self.0.opts.allow_control,
        };
        match ioctl::answer(cmd, in_data, out_size, ctx) {
            Ok(out) => {
                if let ioctl::Request::Control(c) = ioctl::decode(
                    cmd,
                    facts.as_ref().is_some_and(|f| f.family == Some(qrng_ring::CardFamily::Chip)),
                )
                .unwrap_or(ioctl::Request::DriverVersion)
                {
                    tracing::info!(ioctl = ?c, "control ioctl accepted without effect (the driver owns the card)");
                }
                reply.ioctl(0, &out);
            }
            Err(e) => {
                tracing::debug!(error = %e, "ioctl refused");
                reply.error(Errno::from_i32(e.errno()));
            }
        }
    }

    fn poll(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        ph: PollNotifier,
        _events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        let readiness = match self.0.device(ino) {
            Some(d) if flags.contains(PollFlags::FUSE_POLL_SCHEDULE_NOTIFY) => {
                self.0.pollers.poll(self.0.source.as_ref(), &d, ph)
            }
            Some(d) => self.0.source.readiness(&d),
            None => Readiness::Failed,
        };
        reply.poll(match readiness {
            Readiness::Readable => PollEvents::POLLIN | PollEvents::POLLRDNORM,
            Readiness::Empty => PollEvents::empty(),
            // Wake the reader so its read reports EIO instead of waiting forever.
            Readiness::Failed => PollEvents::POLLIN | PollEvents::POLLERR,
        });
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::ENODATA);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _r: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn mkdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    fn unlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn rmdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _np: INodeNo,
        _nn: &OsStr,
        _f: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EPERM);
    }

    fn create(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _f: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(Errno::EPERM);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_are_never_reused() {
        let mut t = Table::default();
        let (a, new_a) = t.add("qrng0");
        assert!(new_a);
        assert_eq!(t.add("qrng0"), (a, false));
        assert_eq!(t.remove("qrng0"), Some(a));
        assert_eq!(t.remove("qrng0"), None);
        let (b, _) = t.add("qrng0");
        assert_ne!(a, b, "a re-plugged card gets a fresh inode");
        assert!(a > INodeNo::ROOT.0 && b > a);
        t.add("qrng1");
        assert_eq!(t.names(), vec!["qrng0", "qrng1"]);
    }
}
