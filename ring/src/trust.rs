//! Who may write a ring a consumer serves from (sshd's StrictModes, applied to the ring).
//!
//! Whoever can write the ring file can publish chosen "random" bytes to every client of the
//! consumer, so a consumer attaches only to a ring that root or the trusted driver user owns and
//! that neither its group nor others can write, in a directory that meets the same rule (else
//! anyone who can write the directory could put their own file under the ring's name). The group
//! may read. Both are checked with `fstat` on the descriptors actually used: the directory is
//! opened first and the ring is opened relative to it (`openat`, `O_NOFOLLOW`), so no rename or
//! symlink between the check and the use can substitute another file. Ancestors of the directory
//! need no check: whichever directory the path resolves to is the one checked.

use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use super::{Error, Result};

/// The owners a consumer accepts for a ring file and its directory: root, and one other user
/// (the driver's; the packaged one is `qrng`, see `systemd/quantis-qrng.sysusers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trust {
    owner: Option<u32>,
}

impl Trust {
    /// Only root-owned rings.
    pub const fn root_only() -> Trust {
        Trust { owner: None }
    }

    /// Rings owned by root or by `uid`.
    pub const fn owner(uid: u32) -> Trust {
        Trust { owner: Some(uid) }
    }

    /// Root and the calling process's effective user: rings this process could write anyway.
    pub fn current_user() -> Trust {
        Trust::owner(nix::unistd::geteuid().as_raw())
    }

    /// The trusted user besides root, if any.
    pub fn trusted_uid(&self) -> Option<u32> {
        self.owner.filter(|&u| u != 0)
    }

    pub fn trusts(&self, uid: u32) -> bool {
        uid == 0 || self.owner == Some(uid)
    }

    /// The user to name in a `chown` fix.
    fn fix_owner(&self) -> String {
        match self.trusted_uid() {
            Some(uid) => user_name(uid),
            None => "root".to_owned(),
        }
    }

    fn describe(&self) -> String {
        match self.trusted_uid() {
            Some(uid) => format!("root or {}", user_name(uid)),
            None => "root".to_owned(),
        }
    }
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// Mode bits that let the group or others write.
const GROUP_OTHER_WRITE: u32 = 0o022;

/// Checks an open file's (or directory's) owner and mode against `trust`.
fn check(meta: &Metadata, path: &Path, what: &'static str, trust: &Trust) -> Result<()> {
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    if !trust.trusts(meta.uid()) {
        problems.push(format!(
            "is owned by {} (uid {}), not {}",
            user_name(meta.uid()),
            meta.uid(),
            trust.describe()
        ));
        fixes.push(format!("chown {} {}", trust.fix_owner(), path.display()));
    }
    if meta.mode() & GROUP_OTHER_WRITE != 0 {
        problems.push(format!(
            "is writable by its group or others (mode {:04o})",
            meta.mode() & 0o7777
        ));
        fixes.push(format!("chmod go-w {}", path.display()));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Untrusted {
        path: path.into(),
        what,
        problem: problems.join(" and "),
        fix: fixes.join("; "),
    })
}

/// Opens the ring at `path` read-write after checking its directory, then checks the file
/// itself, both through the descriptors used (no check-then-open race).
pub(crate) fn open_checked(path: &Path, trust: &Trust) -> Result<File> {
    let name = path.file_name().ok_or_else(|| {
        Error::io("open", path, std::io::Error::other("the path does not name a file"))
    })?;
    let dir_path = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir_path)
        .map_err(|e| Error::io("open the directory of", path, e))?;
    let dir_meta = dir.metadata().map_err(|e| Error::io("stat", dir_path, e))?;
    check(&dir_meta, dir_path, "ring directory", trust)?;
    let fd = openat(
        &dir,
        name,
        OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open", path, e.into()))?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !meta.file_type().is_file() {
        return Err(Error::Untrusted {
            path: path.into(),
            what: "ring file",
            problem: "is not a regular file".to_owned(),
            fix: format!("remove {} and restart quantis-driver", path.display()),
        });
    }
    check(&meta, path, "ring file", trust)?;
    Ok(file)
}
