//! The ring as a trust boundary (docs/ring-abi.md, "Trust model"): who may own it, a file
//! truncated under the mapping, headers that move after attach, a heartbeat from the future,
//! bytes published after FAILED, and sparse or oversized rings.

use super::layout::*;
use super::*;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, PermissionsExt};

fn opts(capacity: u64) -> RingOptions {
    RingOptions { capacity, ..RingOptions::default() }
}

fn ring_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("qrng0.ring")
}

fn poke(path: &Path, off: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A producer with `n` pattern bytes published and health OK.
fn published(path: &Path, capacity: u64, n: usize) -> Producer {
    let mut p = Producer::open(path, &opts(capacity)).unwrap();
    assert_eq!(p.write(&pattern::bytes(0, n)).unwrap(), n);
    p.set_health(Health::Ok, Reason::None);
    p.heartbeat();
    p
}

/// A user this process is not, and a trust that refuses it: as root, files are given to
/// `nobody` and the current user is trusted; otherwise our own files are untrusted by a
/// root-only trust.
fn foreign_owner(path: &Path) -> Trust {
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        Trust::current_user()
    } else {
        Trust::root_only()
    }
}

#[test]
fn ring_owned_by_an_untrusted_user_is_refused_naming_path_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    drop(published(&path, 4096, 100));
    let trust = foreign_owner(&path);
    let err = Consumer::open_trusted(&path, &trust).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Untrusted { what: "ring file", .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()) && msg.contains("chown "), "{msg}");
    assert_eq!(err.code(), "ring-untrusted");
}

#[test]
fn ring_writable_by_group_or_others_is_refused_and_group_read_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    drop(published(&path, 4096, 100));
    for mode in [0o666, 0o620, 0o602] {
        set_mode(&path, mode);
        let err = Consumer::open(&path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Untrusted { what: "ring file", .. }), "{mode:o}: {msg}");
        assert!(msg.contains(&format!("chmod go-w {}", path.display())), "{msg}");
    }
    set_mode(&path, 0o640);
    let mut c = Consumer::open(&path).unwrap();
    let mut buf = [0u8; 100];
    assert_eq!(c.read(&mut buf).unwrap(), 100);
}

#[test]
fn ring_in_a_directory_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    drop(published(&path, 4096, 100));
    set_mode(dir.path(), 0o777);
    let err = Consumer::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Untrusted { what: "ring directory", .. }), "{msg}");
    assert!(msg.contains(&format!("chmod go-w {}", dir.path().display())), "{msg}");
    set_mode(dir.path(), 0o755);
    Consumer::open(&path).unwrap();
}

#[test]
fn ring_in_a_directory_of_an_untrusted_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    drop(published(&path, 4096, 100));
    let trust = foreign_owner(dir.path());
    let err = Consumer::open_trusted(&path, &trust).unwrap_err();
    assert!(matches!(err, Error::Untrusted { what: "ring directory", .. }), "{err}");
}

#[test]
fn ring_symlink_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    drop(published(&path, 4096, 100));
    let link = dir.path().join("link.ring");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(matches!(Consumer::open(&link), Err(Error::Io { op: "open", .. })));
}

/// Truncates the ring file behind every mapping of it.
fn truncate(path: &Path) {
    OpenOptions::new().write(true).open(path).unwrap().set_len(0).unwrap();
}

#[test]
fn ring_truncated_under_the_consumer_reads_nothing_and_the_process_survives() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let _p = published(&path, 1 << 16, 8192);
    let mut c = Consumer::open(&path).unwrap();
    let mut buf = vec![0u8; 100];
    assert_eq!(c.read(&mut buf).unwrap(), 100);
    truncate(&path);
    // The copy touches pages beyond the end of the file: SIGBUS, survived, discarded.
    let err = c.read(&mut buf).unwrap_err();
    assert!(matches!(err, Error::Broken { .. }), "{err}");
    assert_eq!(c.position(), 100, "nothing was consumed");
    let mut out = Vec::new();
    assert!(matches!(c.read_append(&mut out, 100), Err(Error::Broken { .. })));
    assert!(out.is_empty(), "nothing read from a broken mapping is kept");
    assert!(matches!(c.lend(100, 1 << 16), Err(Error::Broken { .. })));
    assert!(matches!(c.status(), Err(Error::Broken { .. })));
}

#[test]
fn ring_truncated_under_the_producer_publishes_nothing_and_the_process_survives() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let mut p = published(&path, 1 << 16, 100);
    truncate(&path);
    let err = p.write(&[7u8; 4096]).unwrap_err();
    assert!(matches!(err, Error::Broken { .. }), "{err}");
    assert!(matches!(p.status(), Err(Error::Broken { .. })));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "nothing reached the file");
}

#[test]
fn ring_header_rewritten_after_attach_fails_the_health_poll() {
    for (field, off, value) in [
        ("magic", OFF_MAGIC, 0x4141_4141_4141_4141u64),
        ("capacity", OFF_CAPACITY, 1 << 20),
        ("data_offset", OFF_DATA_OFFSET, 8192),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = ring_path(&dir);
        let _p = published(&path, 4096, 100);
        let c = Consumer::open(&path).unwrap();
        c.status().unwrap();
        poke(&path, off, &value.to_le_bytes());
        let err = c.status().unwrap_err();
        assert!(
            matches!(&err, Error::HeaderChanged { field: f, now, .. } if *f == field && *now == value),
            "{field}: {err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let _p = published(&path, 4096, 100);
    let c = Consumer::open(&path).unwrap();
    poke(&path, OFF_VERSION, &7u32.to_le_bytes());
    assert!(matches!(c.status(), Err(Error::HeaderChanged { field: "version", now: 7, .. })));
}

#[test]
fn ring_replaced_or_unlinked_after_attach_fails_the_health_poll() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let p = published(&path, 4096, 100);
    let c = Consumer::open(&path).unwrap();
    // Another valid ring renamed over the path.
    let other = dir.path().join("other.ring");
    drop(published(&other, 4096, 100));
    std::fs::rename(&other, &path).unwrap();
    let err = c.status().unwrap_err();
    assert!(matches!(err, Error::Replaced { how: "replaced by another file", .. }), "{err}");
    assert_eq!(err.code(), "ring-replaced");
    drop((c, p));

    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let _p = published(&path, 4096, 100);
    let c = Consumer::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(c.status(), Err(Error::Replaced { how: "unlinked", .. })));
}

#[test]
fn ring_heartbeat_ahead_of_the_clock_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let p = published(&path, 4096, 100);
    let limit = std::time::Duration::from_secs(3);
    assert!(!p.status().unwrap().heartbeat_stale(limit));
    let ahead = boottime_ns() + 3600 * 1_000_000_000;
    poke(&path, OFF_HEARTBEAT, &ahead.to_le_bytes());
    let s = Consumer::open(&path).unwrap().status().unwrap();
    assert!(s.heartbeat_stale(limit), "a beat an hour ahead is not fresh");
    // Within the tolerance it still counts (a clock read on another CPU).
    let s = StatusSnapshot { heartbeat_ns: boottime_ns() + 1_000_000, ..s };
    assert!(!s.heartbeat_stale(limit));
    let s = StatusSnapshot { heartbeat_ns: 0, ..s };
    assert!(s.heartbeat_stale(limit), "never beat");
}

#[test]
fn ring_bytes_published_after_failed_are_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let mut p = published(&path, 1 << 16, 100);
    let mut c = Consumer::open(&path).unwrap();
    p.set_health(Health::Failed, Reason::RepetitionCount);
    // A broken producer keeps publishing.
    assert_eq!(p.write(&pattern::bytes(100, 100)).unwrap(), 100);
    let mut buf = vec![0u8; 200];
    let err = c.read(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotServing { health: Health::Failed, reason: Reason::RepetitionCount, .. }
        ),
        "{err}"
    );
    let mut out = Vec::new();
    assert!(matches!(c.read_append(&mut out, 10), Err(Error::NotServing { .. })));
    assert!(matches!(c.lend(10, 1 << 16), Err(Error::NotServing { .. })));
    p.set_health(Health::Stopped, Reason::Shutdown);
    assert!(matches!(c.read(&mut buf), Err(Error::NotServing { health: Health::Stopped, .. })));
    assert_eq!((c.position(), out.len()), (0, 0), "nothing was taken");
    // Back to OK: what is in the ring is served, in order (the dispenser's rule).
    p.set_health(Health::Ok, Reason::None);
    assert_eq!(c.read(&mut buf[..100]).unwrap(), 100);
    assert_eq!(buf[..100], pattern::bytes(0, 100));
    // An inspecting consumer turns the gate off and reads while FAILED.
    p.set_health(Health::Failed, Reason::RepetitionCount);
    c.set_health_gate(false);
    assert_eq!(c.read(&mut buf[..100]).unwrap(), 100);
    assert_eq!(buf[..100], pattern::bytes(100, 100));
}

#[test]
fn ring_capacity_beyond_what_the_driver_creates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    drop(published(&path, 4096, 0));
    for cap in [MAX_CAPACITY * 2, 1 << 40] {
        // A sparse file claiming the size costs nothing to make.
        poke(&path, OFF_CAPACITY, &cap.to_le_bytes());
        OpenOptions::new().write(true).open(&path).unwrap().set_len(DATA_OFFSET + cap).unwrap();
        let err = Consumer::open(&path).unwrap_err();
        assert!(matches!(err, Error::CapacityNotPowerOfTwo { capacity, .. } if capacity == cap));
    }
    let bad = RingOptions { capacity: MAX_CAPACITY * 2, ..RingOptions::default() };
    assert!(matches!(
        Producer::open(&dir.path().join("b.ring"), &bad),
        Err(Error::BadOptions { .. })
    ));
}

/// Whether the file system under `dir` reports holes (ext4, tmpfs, xfs, btrfs do).
fn reports_holes(dir: &Path) -> bool {
    let f = dir.join("probe");
    let file = std::fs::File::create(&f).unwrap();
    file.set_len(1 << 20).unwrap();
    let hole = nix::unistd::lseek(&file, 0, nix::unistd::Whence::SeekHole).unwrap_or(1 << 20);
    std::fs::remove_file(&f).unwrap();
    hole == 0
}

#[test]
fn ring_publishing_bytes_never_written_is_refused_as_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    if !reports_holes(dir.path()) {
        eprintln!("skipping: the file system of {} reports no holes", dir.path().display());
        return;
    }
    let path = ring_path(&dir);
    // A header-only producer: the tail claims 8 KiB the data area never received.
    drop(published(&path, 1 << 16, 0));
    poke(&path, OFF_TAIL, &8192u64.to_le_bytes());
    let err = Consumer::open(&path).unwrap_err();
    assert!(matches!(err, Error::Hole { from: 0, .. }), "{err}");
    // Bytes actually written are fine, and a later unwritten publish is caught at the poll.
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    let _p = published(&path, 1 << 16, 8192);
    let c = Consumer::open(&path).unwrap();
    c.status().unwrap();
    poke(&path, OFF_TAIL, &(3u64 << 14).to_le_bytes());
    assert!(matches!(c.status(), Err(Error::Hole { .. })));
}
