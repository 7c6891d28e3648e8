//! The FUSE device files: `/run/qrng/dev/qrng0` and friends, one per attached ring.
//!
//! Each file behaves like a character device (see `docs/fuse.md`): no length, no page cache (splice
//! and mmap get `EINVAL`), no seeking; a read returns exactly the bytes asked for, waiting while the ring refills (EAGAIN with
//! O_NONBLOCK); poll reports readiness; EIO while the card has failed or is gone; writes EPERM;
//! IDQ's ioctls answer as IDQ's `/dev/qrandom0` does. Files come and go with [`FuseMount::add_device`]
//! and [`FuseMount::remove_device`] (hot-plug) without remounting.

mod fs;
pub mod ioctl;
pub mod mountpoint;
mod poll;
pub mod source;
mod workers;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod race_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use fuser::{BackgroundSession, INodeNo, MountOption, Notifier, SessionACL};

pub use fs::{FsOptions, MAX_IO};
pub use mountpoint::DevLink;
pub use source::{ReadError, Readiness, Source};

/// Errors of mounting and managing the device files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system call failed.
    #[error("failed to {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The mount point exists and is not a directory.
    #[error("mount point {0} is not a directory")]
    NotADirectory(PathBuf),
    /// Another live qrng file system is mounted there.
    #[error("{0} is already served by a running qrng-bridge (live fuse.qrng mount)")]
    AlreadyMounted(PathBuf),
    /// A `--dev-link` path exists and is not a symlink.
    #[error("refusing to replace {0}: it exists and is not a symlink")]
    LinkOccupied(PathBuf),
    /// A device name that cannot be a file name.
    #[error("invalid device name {0:?}")]
    BadName(String),
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether `name` can name a device file (a single, ordinary path component).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && name.len() <= 255
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct FuseConfig {
    /// Directory the files appear in (`--mount`, default `/run/qrng/dev`).
    pub mountpoint: PathBuf,
    /// Permission bits of the files (default 0444).
    pub file_mode: u16,
    /// Accept IDQ's reset/enable/disable ioctls as no-ops instead of refusing them with EPERM.
    pub allow_control: bool,
    /// Symlinks to create to device files (`--dev-link`).
    pub dev_links: Vec<DevLink>,
    /// Most worker threads waiting for entropy at once (further waiting reads queue).
    pub max_workers: usize,
}

impl Default for FuseConfig {
    fn default() -> Self {
        FuseConfig {
            mountpoint: PathBuf::from("/run/qrng/dev"),
            file_mode: 0o444,
            allow_control: false,
            dev_links: Vec::new(),
            max_workers: 64,
        }
    }
}

/// A mounted qrng file system. Dropping it unmounts (lazily: open files keep working until
/// closed or until the process exits).
#[derive(Debug)]
pub struct FuseMount {
    shared: Arc<fs::Shared>,
    session: Option<BackgroundSession>,
    notifier: Notifier,
    mountpoint: PathBuf,
    links: Vec<DevLink>,
}

impl FuseMount {
    /// Mounts at `cfg.mountpoint` (cleaning up a dead mount first) with no device files yet.
    pub fn mount(cfg: &FuseConfig, source: Arc<dyn Source>) -> Result<FuseMount> {
        let mp = &cfg.mountpoint;
        mountpoint::prepare(mp)?;
        let mp = std::fs::canonicalize(mp).map_err(|source| Error::Io {
            op: "resolve mount point",
            path: mp.clone(),
            source,
        })?;
        let io = |op: &'static str| {
            let path = mp.clone();
            move |source| Error::Io { op, path, source }
        };
        let shared = Arc::new(fs::Shared {
            table: RwLock::new(fs::Table::default()),
            pollers: poll::Pollers::default(),
            source,
            opts: FsOptions {
                file_mode: cfg.file_mode & 0o7777,
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
                allow_control: cfg.allow_control,
            },
            workers: workers::Pool::new(2, cfg.max_workers),
            born: SystemTime::now(),
        });
        let mut options = fuser::Config::default();
        options.mount_options = vec![
            MountOption::FSName("qrng".into()),
            MountOption::Subtype("qrng".into()),
            MountOption::NoSuid,
            MountOption::NoDev,
            MountOption::NoExec,
            MountOption::NoAtime,
            // The kernel enforces the files' mode bits for us.
            MountOption::DefaultPermissions,
        ];
        // allow_other: readers are other users; the mode bits decide who may open.
        options.acl = SessionACL::All;
        let session = fuser::Session::new(fs::QrngFs(Arc::clone(&shared)), &mp, &options)
            .map_err(io("mount FUSE file system on"))?;
        let notifier = session.notifier();
        let session = session.spawn().map_err(io("start FUSE session thread for"))?;
        tracing::info!(mountpoint = %mp.display(), "FUSE device directory mounted");
        let mut mount = FuseMount {
            shared,
            session: Some(session),
            notifier,
            mountpoint: mp,
            links: Vec::new(),
        };
        for l in &cfg.dev_links {
            // On error `mount` is dropped, which unmounts and removes links made so far.
            mountpoint::create_link(l, &mount.mountpoint)?;
            mount.links.push(l.clone());
        }
        Ok(mount)
    }

    /// The mount point (canonical path).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The path of a device's file.
    pub fn file_path(&self, name: &str) -> PathBuf {
        self.mountpoint.join(name)
    }

    /// Makes the file `name` appear (idempotent).
    pub fn add_device(&self, name: &str) -> Result<()> {
        if !valid_name(name) {
            return Err(Error::BadName(name.to_owned()));
        }
        let (_, new) = self.shared.table.write().unwrap_or_else(PoisonError::into_inner).add(name);
        if new {
            // Drop any negative entry the kernel may hold for this name.
            let _ = self.notifier.inval_entry(INodeNo::ROOT, name.as_ref());
            tracing::info!(device = name, "device file added");
        }
        Ok(())
    }

    /// Makes the file `name` disappear; open descriptors get EIO from then on. Returns whether it
    /// was there. The source wakes pollers of a device it detaches.
    pub fn remove_device(&self, name: &str) -> bool {
        let removed =
            self.shared.table.write().unwrap_or_else(PoisonError::into_inner).remove(name);
        if removed.is_some() {
            if let Err(e) = self.notifier.inval_entry(INodeNo::ROOT, name.as_ref()) {
                tracing::debug!(device = name, error = %e, "entry invalidation not delivered");
            }
            tracing::info!(device = name, "device file removed");
        }
        removed.is_some()
    }

    /// Names of the device files.
    pub fn devices(&self) -> Vec<String> {
        self.shared.table.read().unwrap_or_else(PoisonError::into_inner).names()
    }

    /// Unmounts now (lazily) and removes the device links.
    pub fn unmount(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        for l in &self.links {
            mountpoint::remove_link(l, &self.mountpoint);
        }
        self.shared.workers.shutdown();
        // fuser unmounts on drop; that fails (EBUSY) while a reader still has a file open. The
        // session thread is not joined: it lives on until those files are closed or the process
        // exits, and waiting for that would hang shutdown.
        drop(session);
        // Still mounted: detach lazily, so the name is free now and open files keep working.
        if mountpoint::mounted_at(&self.mountpoint)?.is_some_and(|m| m.is_qrng()) {
            mountpoint::detach(&self.mountpoint)?;
        }
        tracing::info!(mountpoint = %self.mountpoint.display(), "FUSE device directory unmounted");
        Ok(())
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!(error = %e, "unmount failed");
        }
    }
}
