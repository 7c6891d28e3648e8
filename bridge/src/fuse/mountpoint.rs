//! The mount point's lifecycle outside fuser: clean up a dead mount left by a crash, refuse to
//! mount over a live one, unmount lazily, and manage the optional `--dev-link` symlinks.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MntFlags;

use super::{Error, Result};

/// Source name our mounts carry in `/proc/self/mountinfo` (fuser mounts with type `fuse` and
/// this `fsname` when it calls mount(2) itself).
pub const FS_NAME: &str = "qrng";

/// What is mounted at a mount point: file-system type and source, as mountinfo shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    /// File-system type, e.g. `fuse` or `tmpfs`.
    pub fs_type: String,
    /// Mount source, e.g. `qrng` or `/dev/vda`.
    pub source: String,
}

impl Mounted {
    /// Whether this is a qrng-bridge FUSE mount.
    pub fn is_qrng(&self) -> bool {
        (self.fs_type == "fuse" || self.fs_type.starts_with("fuse.")) && self.source == FS_NAME
    }
}

/// Makes `dir` ready to mount on: creates it if missing and lazily unmounts a dead FUSE mount. A
/// live qrng mount there is an error: another bridge is serving it.
///
/// A dead mount answers with one of two errors (see [`is_dead_mount`]): `ENOTCONN` once its
/// connection is gone, or `ECONNABORTED` when the request was already waiting for the server as
/// the connection went down (a restart racing the previous bridge's exit). A qrng mount that
/// answers `stat` is asked once more with `statfs`, which the kernel never answers from its
/// cache: only a live server makes it "already mounted".
pub fn prepare(dir: &Path) -> Result<()> {
    // A crash loop can stack several dead mounts; each detach uncovers the next.
    for _ in 0..8 {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => match mounted_at(dir)? {
                Some(m) if m.is_qrng() => match nix::sys::statfs::statfs(dir) {
                    // The kernel answers `stat` of a dead mount from its attribute cache for
                    // up to a second after the last lookup; `statfs` always asks the server.
                    Err(e) if is_dead_mount(&io::Error::from(e)) => {
                        tracing::warn!(mountpoint = %dir.display(), "cleaning up a dead FUSE mount");
                        detach(dir)?;
                    }
                    _ => return Err(Error::AlreadyMounted(dir.to_path_buf())),
                },
                _ => return Ok(()),
            },
            Ok(_) => return Err(Error::NotADirectory(dir.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                    op: "create mount point",
                    path: dir.to_path_buf(),
                    source,
                });
            }
            Err(e) if is_dead_mount(&e) => {
                tracing::warn!(mountpoint = %dir.display(), "cleaning up a dead FUSE mount");
                detach(dir)?;
            }
            Err(source) => {
                return Err(Error::Io {
                    op: "inspect mount point",
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
    Err(Error::Io {
        op: "clean up dead mounts on",
        path: dir.to_path_buf(),
        source: io::Error::from_raw_os_error(libc::ENOTCONN),
    })
}

/// Whether an error of a file-system call under a FUSE mount says that its server is gone:
/// `ENOTCONN` ("Transport endpoint is not connected") for requests made after the connection went
/// down, `ECONNABORTED` ("Software caused connection abort") for requests that were in flight
/// when it did (the kernel's `fuse_abort_conn` ends them with that error).
pub fn is_dead_mount(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED))
}

/// Lazily unmounts `dir`: the name disappears now, files still open keep working until closed.
pub fn detach(dir: &Path) -> Result<()> {
    nix::mount::umount2(dir, MntFlags::MNT_DETACH).map_err(|e| Error::Io {
        op: "unmount",
        path: dir.to_path_buf(),
        source: io::Error::from(e),
    })
}

/// What is mounted exactly at `dir`, if `dir` is a mount point.
pub fn mounted_at(dir: &Path) -> Result<Option<Mounted>> {
    // Resolve the parent only: resolving `dir` itself would ask the file system mounted there,
    // which may be dead.
    let resolved = match (dir.parent(), dir.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            std::fs::canonicalize(parent).map(|p| p.join(name))
        }
        _ => std::fs::canonicalize(dir),
    };
    let abs = resolved.map_err(|source| Error::Io {
        op: "resolve mount point",
        path: dir.to_path_buf(),
        source,
    })?;
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| Error::Io {
        op: "read",
        path: PathBuf::from("/proc/self/mountinfo"),
        source,
    })?;
    Ok(mount_at(&text, &abs))
}

/// Finds the last (topmost) mount at `path` in a mountinfo text (proc(5): field 5 is the mount
/// point, octal-escaped; the file-system type follows the " - " separator).
fn mount_at(mountinfo: &str, path: &Path) -> Option<Mounted> {
    let want = path.as_os_str().as_encoded_bytes();
    mountinfo.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split(' ').nth(4)?;
        let mut r = right.split(' ');
        let fs_type = r.next().unwrap_or("").to_owned();
        let source = r.next().unwrap_or("").to_owned();
        (unescape(point) == want).then_some(Mounted { fs_type, source })
    })
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// A `--dev-link` request: a symlink at `link` to the file of device `device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevLink {
    /// Where the symlink goes, e.g. `/dev/qrng0`.
    pub link: PathBuf,
    /// The device file it points to, e.g. `qrng0`.
    pub device: String,
}

impl std::str::FromStr for DevLink {
    type Err = String;

    /// `PATH` (device named after the link's file name) or `PATH=DEVICE`.
    fn from_str(s: &str) -> std::result::Result<DevLink, String> {
        let (link, device) = match s.rsplit_once('=') {
            Some((l, d)) => (PathBuf::from(l), d.to_owned()),
            None => {
                let link = PathBuf::from(s);
                let name = link
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| {
                        format!("--dev-link {s:?}: no file name to take the device name from")
                    })?
                    .to_owned();
                (link, name)
            }
        };
        if link.as_os_str().is_empty() || !super::valid_name(&device) {
            return Err(format!("--dev-link {s:?}: expected PATH or PATH=DEVICE"));
        }
        Ok(DevLink { link, device })
    }
}

/// Creates (or atomically replaces) the symlink `l.link` → `<mountpoint>/<device>`. Refuses to
/// replace anything that is not a symlink.
pub fn create_link(l: &DevLink, mountpoint: &Path) -> Result<()> {
    let err = |op, source| Error::Io { op, path: l.link.clone(), source };
    match std::fs::symlink_metadata(&l.link) {
        Ok(m) if !m.file_type().is_symlink() => return Err(Error::LinkOccupied(l.link.clone())),
        Ok(_) | Err(_) => {}
    }
    let target = mountpoint.join(&l.device);
    let tmp = l.link.with_file_name(format!(
        ".{}.qrng-tmp",
        l.link.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp).map_err(|e| err("create symlink", e))?;
    std::fs::rename(&tmp, &l.link).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err("install symlink", e)
    })
}

/// Removes the symlink if it still points where we made it point.
pub fn remove_link(l: &DevLink, mountpoint: &Path) {
    if std::fs::read_link(&l.link).is_ok_and(|t| t == mountpoint.join(&l.device)) {
        if let Err(e) = std::fs::remove_file(&l.link) {
            tracing::warn!(link = %l.link.display(), error = %e, "failed to remove device link");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:35 / /run/qrng/dev rw,nosuid,nodev,relatime shared:20 - fuse qrng rw,user_id=0
41 22 0:36 / /tmp/with\\040space rw shared:21 - tmpfs tmpfs rw
42 40 0:37 / /run/qrng/dev rw shared:22 - tmpfs tmpfs rw
";

    #[test]
    fn mountinfo_lookup_takes_the_topmost_mount_and_unescapes() {
        let ty = |text: &str, p: &str| mount_at(text, Path::new(p)).map(|m| m.fs_type);
        assert_eq!(ty(SAMPLE, "/tmp/with space").as_deref(), Some("tmpfs"));
        assert_eq!(ty(SAMPLE, "/run/qrng/dev").as_deref(), Some("tmpfs"));
        let without_top: String = SAMPLE.lines().take(3).map(|l| format!("{l}\n")).collect();
        let m = mount_at(&without_top, Path::new("/run/qrng/dev")).expect("fuse mount");
        assert!(m.is_qrng(), "{m:?}");
        assert!(!mount_at(SAMPLE, Path::new("/run/qrng/dev")).expect("tmpfs").is_qrng());
        assert_eq!(ty(SAMPLE, "/run"), None);
        assert_eq!(unescape("a\\134b\\011"), b"a\\b\t");
        assert_eq!(unescape("trailing\\"), b"trailing\\");
    }

    #[test]
    fn dev_link_syntax() {
        let l: DevLink = "/dev/qrng0".parse().expect("plain");
        assert_eq!(l, DevLink { link: "/dev/qrng0".into(), device: "qrng0".into() });
        let l: DevLink = "/dev/qrandom0=qrng0".parse().expect("with device");
        assert_eq!(l, DevLink { link: "/dev/qrandom0".into(), device: "qrng0".into() });
        assert!("/dev/x=".parse::<DevLink>().is_err());
        assert!("/dev/x=a/b".parse::<DevLink>().is_err());
        assert!("/".parse::<DevLink>().is_err());
    }

    #[test]
    fn links_are_replaced_atomically_but_never_over_a_real_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mp = dir.path().join("mnt");
        let l = DevLink { link: dir.path().join("qrng0"), device: "qrng0".into() };
        create_link(&l, &mp).expect("create");
        assert_eq!(std::fs::read_link(&l.link).expect("link"), mp.join("qrng0"));
        create_link(&l, &mp).expect("replace our own link");
        remove_link(&l, &mp);
        assert!(std::fs::symlink_metadata(&l.link).is_err(), "removed");

        std::fs::write(&l.link, b"keep me").expect("file");
        assert!(matches!(create_link(&l, &mp), Err(Error::LinkOccupied(_))));
        assert_eq!(std::fs::read(&l.link).expect("still there"), b"keep me");
        remove_link(&l, &mp);
        assert!(l.link.exists(), "a file that is not our link is left alone");
    }

    #[test]
    fn prepare_creates_a_missing_directory_and_rejects_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mp = dir.path().join("a/b");
        prepare(&mp).expect("created");
        assert!(mp.is_dir());
        prepare(&mp).expect("an existing empty directory is fine");
        let f = dir.path().join("file");
        std::fs::write(&f, b"").expect("file");
        assert!(matches!(prepare(&f), Err(Error::NotADirectory(_))));
    }
}
