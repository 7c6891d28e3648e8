//! Tests that really mount (they need root and /dev/fuse) with the in-memory fake source.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use qrng_e2e::idq;

use super::fake::{stream_byte, FakeSource};
use super::ioctl::{self, CardFacts};
use super::{mountpoint, FuseConfig, FuseMount};

/// Generous bound on operations that must complete; only reached if the file system hangs.
pub(super) const HANG: Duration = Duration::from_secs(60);

pub(super) struct Fixture {
    pub(super) mount: FuseMount,
    pub(super) src: Arc<FakeSource>,
    _dir: tempfile::TempDir,
    _abort: AbortOnDrop,
}

/// Test safety net: a read of our own mount still waiting when a test fails would hang the test
/// process in the kernel for ever once the serving threads are gone. Aborting the FUSE connection
/// (fusectl, when mounted) fails such requests instead.
struct AbortOnDrop(Option<PathBuf>);

impl AbortOnDrop {
    fn new(mountpoint: &Path) -> AbortOnDrop {
        use std::os::unix::fs::MetadataExt;
        let minor = std::fs::metadata(mountpoint).ok().map(|m| nix::sys::stat::minor(m.dev()));
        AbortOnDrop(minor.map(|n| PathBuf::from(format!("/sys/fs/fuse/connections/{n}/abort"))))
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(p) = &self.0 {
                let _ = std::fs::write(p, b"1");
            }
        }
    }
}

pub(super) fn facts(serial: &str) -> CardFacts {
    CardFacts {
        modules_mask: 0b11,
        modules_status: 0b01,
        board_version: 7,
        serial: serial.into(),
        ..CardFacts::default()
    }
}

pub(super) fn fixture(devices: &[(&str, u64)]) -> Option<Fixture> {
    fixture_with(devices, |_| {})
}

/// Whether this machine can mount (root and /dev/fuse); prints why not (a failure under
/// `QRNG_REQUIRE_TOOLS=1`).
pub(super) fn can_mount() -> bool {
    qrng_e2e::fuse_available(std::thread::current().name().unwrap_or("fuse test"))
}

pub(super) fn fixture_with(
    devices: &[(&str, u64)],
    tweak: impl FnOnce(&mut FuseConfig),
) -> Option<Fixture> {
    if !can_mount() {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Arc::new(FakeSource::default());
    let mut cfg = FuseConfig { mountpoint: dir.path().join("dev"), ..FuseConfig::default() };
    tweak(&mut cfg);
    let mount = FuseMount::mount(&cfg, src.clone()).expect("mount (needs root and /dev/fuse)");
    for (name, avail) in devices {
        src.add(name, *avail, facts(&format!("SN-{name}")));
        mount.add_device(name).expect("add device");
    }
    let _abort = AbortOnDrop::new(mount.mountpoint());
    Some(Fixture { mount, src, _dir: dir, _abort })
}

impl Fixture {
    pub(super) fn open(&self, name: &str) -> File {
        File::open(self.mount.file_path(name)).expect("open device file")
    }

    fn open_nonblock(&self, name: &str) -> File {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.mount.file_path(name))
            .expect("open device file O_NONBLOCK")
    }
}

/// Runs `f` on a thread and fails the test instead of hanging if it never returns.
pub(super) fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG).unwrap_or_else(|_| panic!("{what}: did not complete"))
}

pub(super) fn expected(range: std::ops::Range<u64>) -> Vec<u8> {
    range.map(stream_byte).collect()
}

use qrng_e2e::read_once;

#[test]
fn a_single_read_returns_exactly_the_bytes_asked_for() {
    let Some(fx) = fixture(&[("qrng0", 64 << 20)]) else { return };
    let mut f = fx.open("qrng0");
    let mut pos = 0u64;
    // 3 MiB + 5 spans several kernel requests (at most MAX_IO each).
    for n in [1usize, 7, 4096, 65_537, 1 << 20, (3 << 20) + 5] {
        let got = read_once(&mut f, n).expect("read");
        assert_eq!(got.len(), n, "read of {n} bytes returned {}", got.len());
        assert_eq!(got, expected(pos..pos + n as u64), "bytes of the read of {n}");
        pos += n as u64;
    }
    assert_eq!(fx.src.consumed("qrng0"), pos, "nothing taken beyond what was read");
    let meta = std::fs::metadata(fx.mount.file_path("qrng0")).expect("stat");
    assert_eq!(meta.len(), super::fs::APPARENT_SIZE, "no length, but splice must ask us");
    assert!(meta.is_file());
}

#[test]
fn the_file_is_not_seekable() {
    let Some(fx) = fixture(&[("qrng0", 1024)]) else { return };
    let f = fx.open("qrng0");
    let mut buf = [0u8; 4];
    let err = nix::sys::uio::pread(&f, &mut buf, 0).expect_err("pread on a stream");
    assert_eq!(err, nix::errno::Errno::ESPIPE);
}

/// splice(2) (and sendfile, copy_file_range) read through the page cache: they get a clear
/// `EINVAL` and take nothing; with `O_DIRECT` the kernel splices through read(2) and they get the
/// stream. (Fails before the files had a size: splice returned 0, end of file.)
#[test]
fn splice_fails_clearly_or_with_o_direct_returns_the_stream() {
    use nix::fcntl::{splice, SpliceFFlags};
    let Some(fx) = fixture(&[("qrng0", 1 << 20)]) else { return };
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let f = fx.open("qrng0");
    let err = splice(&f, None, &w, None, 64, SpliceFFlags::empty()).expect_err("splice");
    assert_eq!(err, nix::errno::Errno::EINVAL, "not end of file, not bytes via the page cache");
    assert_eq!(fx.src.consumed("qrng0"), 0, "the refused splice took nothing");

    let direct = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(fx.mount.file_path("qrng0"))
        .expect("open O_DIRECT");
    assert_eq!(splice(&direct, None, &w, None, 64, SpliceFFlags::empty()), Ok(64));
    let mut got = vec![0u8; 64];
    assert_eq!(nix::unistd::read(&r, &mut got), Ok(64));
    assert_eq!(got, expected(0..64));
    assert_eq!(read_once(&mut { f }, 8).expect("read(2) still works"), expected(64..72));
}

#[test]
fn a_read_waits_for_the_ring_to_refill_without_blocking_other_readers() {
    let Some(fx) = fixture(&[("slow", 100), ("fast", 1 << 20)]) else { return };
    let mut slow = fx.open("slow");
    let (started_tx, started_rx) = mpsc::channel();
    let waiting = std::thread::spawn(move || {
        started_tx.send(()).expect("signal");
        read_once(&mut slow, 1000)
    });
    started_rx.recv().expect("reader started");
    // While that read waits, another device's file reads, lists and polls normally.
    let mut fast = fx.open("fast");
    let got = bounded("read of another device", move || read_once(&mut fast, 4096).expect("read"));
    assert_eq!(got, expected(0..4096));
    let names = std::fs::read_dir(fx.mount.mountpoint()).expect("readdir").count();
    assert_eq!(names, 2);
    fx.src.supply("slow", 900);
    let got = bounded("waiting read", move || waiting.join().expect("join").expect("read"));
    assert_eq!(got, expected(0..1000), "the waiting read got the first 100 and the refilled 900");
}

#[test]
fn nonblocking_reads_get_eagain_when_empty_and_short_reads_otherwise() {
    let Some(fx) = fixture(&[("qrng0", 0)]) else { return };
    let mut f = fx.open_nonblock("qrng0");
    let err = read_once(&mut f, 16).expect_err("empty");
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
    fx.src.supply("qrng0", 10);
    assert_eq!(read_once(&mut f, 16).expect("partial"), expected(0..10));
    assert_eq!(read_once(&mut f, 16).expect_err("empty again").raw_os_error(), Some(libc::EAGAIN));
}

#[test]
fn reads_fail_with_eio_while_failed_and_recover() {
    let Some(fx) = fixture(&[("qrng0", 1 << 20)]) else { return };
    let mut f = fx.open("qrng0");
    assert_eq!(read_once(&mut f, 8).expect("healthy").len(), 8);
    fx.src.set_failed("qrng0", true);
    assert_eq!(read_once(&mut f, 8).expect_err("failed").raw_os_error(), Some(libc::EIO));
    let mut nb = fx.open_nonblock("qrng0");
    assert_eq!(read_once(&mut nb, 8).expect_err("failed").raw_os_error(), Some(libc::EIO));
    fx.src.set_failed("qrng0", false);
    assert_eq!(read_once(&mut f, 8).expect("recovered"), expected(8..16));
}

#[test]
fn a_waiting_read_fails_with_eio_when_the_card_fails() {
    let Some(fx) = fixture(&[("qrng0", 0)]) else { return };
    let mut f = fx.open("qrng0");
    let waiting = std::thread::spawn(move || read_once(&mut f, 64));
    // Fails whether the read is already waiting or arrives after the failure.
    fx.src.set_failed("qrng0", true);
    let err = bounded("waiting read", move || waiting.join().expect("join")).expect_err("failed");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
}

#[test]
fn writes_and_changes_are_refused() {
    let Some(fx) = fixture(&[("qrng0", 1024)]) else { return };
    let path = fx.mount.file_path("qrng0");
    // Root passes the 0444 mode check; the file system itself refuses the write.
    let mut w = OpenOptions::new().write(true).open(&path).expect("root may open for writing");
    let err = w.write(b"seed").expect_err("write");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    let err = OpenOptions::new().write(true).truncate(true).open(&path).expect_err("truncate");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    let err = File::create(fx.mount.mountpoint().join("new")).expect_err("create");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    let err = std::fs::remove_file(&path).expect_err("unlink");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&path).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o777, 0o444);
    assert_eq!(fx.src.consumed("qrng0"), 0);
}

#[test]
fn idq_ioctls_answer_like_the_kernel_driver() {
    let Some(fx) = fixture(&[("qrng0", 0), ("qrng1", 0)]) else { return };
    let f = fx.open("qrng0");
    assert_eq!(idq::ioctl_u32(&f, ioctl::GET_DRIVER_VERSION).expect("version"), 202);
    assert_eq!(idq::ioctl_u32(&f, ioctl::GET_CARD_COUNT).expect("count"), 2);
    let want = facts("SN-qrng0");
    assert_eq!(idq::ioctl_u32(&f, ioctl::GET_MODULES_MASK).expect("mask"), want.modules_mask);
    assert_eq!(idq::ioctl_u32(&f, ioctl::GET_MODULES_STATUS).expect("status"), want.modules_status);
    assert_eq!(idq::ioctl_u32(&f, ioctl::GET_BOARD_VERSION).expect("board"), want.board_version);
    let mut serial = [0xffu8; 256];
    idq::ioctl_buf(&f, ioctl::GET_SERIAL, &mut serial).expect("serial");
    let end = serial.iter().position(|&b| b == 0).expect("NUL-terminated");
    assert_eq!(&serial[..end], b"SN-qrng0");

    let err = idq::ioctl_none(&f, ioctl::RESET_BOARD).expect_err("reset refused");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    let err = idq::ioctl_buf(&f, ioctl::ENABLE_MODULE, &mut 1u32.to_ne_bytes())
        .expect_err("enable refused");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    let err = idq::ioctl_u32(&f, 0x8004_71ff).expect_err("unknown");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
}

#[test]
fn chip_card_ioctls_answer_like_idqs_chip_driver() {
    let Some(fx) = fixture(&[]) else { return };
    let chip = CardFacts {
        family: Some(qrng_ring::CardFamily::Chip),
        chip_mode: Some(qrng_ring::ChipMode::Sample),
        ..facts("2024SIM240M")
    };
    fx.src.add("qrng0", 0, chip);
    fx.mount.add_device("qrng0").expect("add device");
    let f = fx.open("qrng0");
    assert_eq!(idq::ioctl_u32(&f, ioctl::GET_QRNG_MODE).expect("mode"), ioctl::QRNG_MODE_SAMPLE);
    assert_eq!(
        idq::ioctl_u32(&f, ioctl::GET_CURRENT_QRNG_MODE).expect("current mode"),
        ioctl::QRNG_MODE_SAMPLE
    );
    let err =
        idq::ioctl_buf(&f, ioctl::SET_QRNG_MODE, &mut 0u32.to_ne_bytes()).expect_err("set refused");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    for cmd in
        [0x8004_71ff, ioctl::GET_PCI_BUS_DEVICE_ID, ioctl::GET_AIS31_STARTUP_TESTS_REQUEST_FLAG]
    {
        let err = idq::ioctl_u32(&f, cmd).expect_err("not a chip-card ioctl");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{cmd:#x}");
    }
    let err = idq::ioctl_buf(&f, ioctl::ENABLE_MODULE, &mut 1u32.to_ne_bytes())
        .expect_err("IDQ's chip driver has no ENABLE_MODULE");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
}

#[test]
fn module_cards_know_no_qrng_mode_ioctls() {
    let Some(fx) = fixture(&[("qrng0", 0)]) else { return };
    let f = fx.open("qrng0");
    for cmd in [ioctl::GET_QRNG_MODE, ioctl::GET_PCI_BUS_DEVICE_ID] {
        let err = idq::ioctl_u32(&f, cmd).expect_err("unknown to the module driver");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY), "{cmd:#x}");
    }
}

#[test]
fn control_ioctls_are_accepted_without_effect_when_allowed() {
    let Some(fx) = fixture_with(&[("qrng0", 0)], |c| c.allow_control = true) else { return };
    let f = fx.open("qrng0");
    idq::ioctl_none(&f, ioctl::RESET_BOARD).expect("reset allowed");
    idq::ioctl_buf(&f, ioctl::DISABLE_MODULE, &mut 0b10u32.to_ne_bytes()).expect("disable allowed");
    let err = idq::ioctl_buf(&f, ioctl::ENABLE_MODULE, &mut 0b100u32.to_ne_bytes())
        .expect_err("bad mask");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
}

fn poll_in(f: &File, timeout: PollTimeout) -> PollFlags {
    let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, timeout).expect("poll");
    fds[0].revents().unwrap_or(PollFlags::empty())
}

#[test]
fn poll_reports_readiness_and_wakes_when_bytes_arrive() {
    let Some(fx) = fixture(&[("qrng0", 0)]) else { return };
    let f = fx.open_nonblock("qrng0");
    assert!(!poll_in(&f, PollTimeout::ZERO).contains(PollFlags::POLLIN), "empty: not readable");
    let (src, f2) = (fx.src.clone(), f.try_clone().expect("dup"));
    let waiter = std::thread::spawn(move || poll_in(&f2, PollTimeout::NONE));
    std::thread::sleep(Duration::from_millis(50));
    src.supply("qrng0", 32);
    let ev = bounded("poll wake-up", move || waiter.join().expect("join"));
    assert!(ev.contains(PollFlags::POLLIN), "{ev:?}");
    let mut f = f;
    assert_eq!(read_once(&mut f, 64).expect("readable"), expected(0..32));
    fx.src.set_failed("qrng0", true);
    let ev = poll_in(&f, PollTimeout::ZERO);
    assert!(ev.contains(PollFlags::POLLERR), "failed devices poll as errors: {ev:?}");
}

#[test]
fn hot_plugged_files_appear_and_disappear() {
    let Some(fx) = fixture(&[("qrng0", 1024)]) else { return };
    let path1 = fx.mount.file_path("qrng1");
    assert!(!path1.exists());
    fx.src.add("qrng1", 1024, facts("SN-1"));
    fx.mount.add_device("qrng1").expect("add");
    assert_eq!(
        read_once(&mut File::open(&path1).expect("new file"), 4).expect("read"),
        expected(0..4)
    );

    let mut open = fx.open("qrng0");
    assert!(fx.mount.remove_device("qrng0"));
    fx.src.remove("qrng0");
    assert!(!fx.mount.file_path("qrng0").exists(), "file gone at once");
    assert_eq!(read_once(&mut open, 4).expect_err("unplugged").raw_os_error(), Some(libc::EIO));
    assert_eq!(fx.mount.devices(), vec!["qrng1".to_owned()]);
    assert!(fx.mount.add_device("../x").is_err());
}

#[test]
fn dev_links_point_at_the_device_file_and_go_with_the_mount() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("qrandom0");
    let Some(fx) = fixture_with(&[("qrng0", 16)], |c| {
        c.dev_links = vec![format!("{}=qrng0", link.display()).parse().expect("link")];
    }) else {
        return;
    };
    let mut f = File::open(&link).expect("open through the link");
    assert_eq!(read_once(&mut f, 16).expect("read"), expected(0..16));
    drop(f);
    fx.mount.unmount().expect("unmount");
    assert!(std::fs::symlink_metadata(&link).is_err(), "link removed at unmount");
}

#[test]
fn unmount_leaves_an_ordinary_directory() {
    let Some(fx) = fixture(&[("qrng0", 16)]) else { return };
    let mp = fx.mount.mountpoint().to_path_buf();
    assert!(mountpoint::mounted_at(&mp).expect("mountinfo").is_some_and(|m| m.is_qrng()));
    let err = FuseMount::mount(
        &FuseConfig { mountpoint: mp.clone(), ..FuseConfig::default() },
        fx.src.clone(),
    )
    .expect_err("a second bridge on a live mount");
    assert!(matches!(err, super::Error::AlreadyMounted(_)), "{err}");
    fx.mount.unmount().expect("unmount");
    assert_eq!(mountpoint::mounted_at(&mp).expect("mountinfo"), None);
    assert!(!mp.join("qrng0").exists());
}

/// Environment variable that turns [`crash_child`] into a bridge that mounts and waits to be
/// killed.
const CRASH_CHILD: &str = "QRNG_FUSE_CRASH_CHILD";

/// Helper process for [`a_dead_mount_left_by_a_crash_is_cleaned_up`]: mounts, reports, waits.
#[test]
#[ignore = "helper process started by a_dead_mount_left_by_a_crash_is_cleaned_up"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_CHILD) else { return };
    let cfg = FuseConfig { mountpoint: Path::new(&dir).join("dev"), ..FuseConfig::default() };
    let mount = FuseMount::mount(&cfg, Arc::new(FakeSource::default())).expect("child mount");
    std::fs::write(Path::new(&dir).join("ready"), b"").expect("ready file");
    std::thread::sleep(HANG);
    drop(mount);
}

#[test]
fn a_dead_mount_left_by_a_crash_is_cleaned_up() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "fuse::tests::crash_child", "--ignored", "--nocapture"])
        .env(CRASH_CHILD, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start child");
    let ready = dir.path().join("ready");
    bounded("child mount", move || {
        while !ready.exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap");
    let mp = dir.path().join("dev");
    let err = std::fs::metadata(&mp).expect_err("dead mount");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "the crash left a dead mount: {err}");

    let src = Arc::new(FakeSource::default());
    let mount = FuseMount::mount(
        &FuseConfig { mountpoint: mp.clone(), ..FuseConfig::default() },
        src.clone(),
    )
    .expect("mount over the dead one");
    src.add("qrng0", 8, facts("x"));
    mount.add_device("qrng0").expect("add");
    assert_eq!(
        read_once(&mut File::open(mp.join("qrng0")).expect("open"), 8).expect("read"),
        expected(0..8)
    );
}

#[test]
fn a_reader_waiting_on_an_empty_device_can_be_killed() {
    let Some(fx) = fixture(&[("qrng0", 0)]) else { return };
    let mut child = std::process::Command::new("head")
        .args(["-c", "100"])
        .arg(fx.mount.file_path("qrng0"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start head");
    // Give it time to block inside read(); the outcome does not depend on this delay.
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = bounded("killed reader exits", move || child.wait().expect("wait"));
    assert!(!status.success(), "head was killed, not satisfied: {status:?}");
    assert_eq!(fx.src.consumed("qrng0"), 0);
}

mod with_dispenser {
    //! The same file system over the bridge's real dispenser (in-memory ring): FUSE readers and
    //! other dispenser clients share one stream, each byte once.

    use super::*;
    use crate::dispenser::memory::MemoryRing;
    use crate::dispenser::{Dispenser, DispenserConfig};
    use qrng_ring::{Health, Reason};

    const CHUNK: usize = 4096;

    fn start_of(chunk: &[u8]) -> u64 {
        let word = u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
        word * 8
    }

    /// Retries `f` until it returns Some, failing the test if that never happens.
    fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let end = std::time::Instant::now() + HANG;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(std::time::Instant::now() < end, "{what}: never happened");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn fuse_and_dispenser_clients_share_one_stream_exactly_once() {
        if !can_mount() {
            return;
        }
        let disp = Dispenser::new(DispenserConfig::default());
        let ring = MemoryRing::new("SN-1", true, 1 << 24);
        disp.attach_source("qrng0", None, ring.source()).expect("attach");
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = FuseConfig { mountpoint: dir.path().join("dev"), ..FuseConfig::default() };
        let mount = FuseMount::mount(&cfg, Arc::new(disp.clone())).expect("mount");
        let _abort = AbortOnDrop::new(mount.mountpoint());
        mount.add_device("qrng0").expect("add");

        let per_client = 300;
        let total = 2 * per_client * CHUNK as u64;
        let mut f = File::open(mount.file_path("qrng0")).expect("open");
        let fuse = std::thread::spawn(move || {
            (0..per_client)
                .map(|_| read_once(&mut f, CHUNK).expect("fuse read"))
                .collect::<Vec<_>>()
        });
        let d2 = disp.clone();
        let other = std::thread::spawn(move || {
            (0..per_client)
                .map(|_| d2.take_blocking("qrng0", CHUNK, None).expect("take").bytes)
                .collect::<Vec<_>>()
        });
        // Publish in small steps so both clients wait for the ring to refill.
        for start in (0..total).step_by(64 * 1024) {
            ring.push(&expected(start..(start + 64 * 1024).min(total)));
        }
        let mut chunks = bounded("fuse client", move || fuse.join().expect("join"));
        chunks.extend(bounded("dispenser client", move || other.join().expect("join")));
        let mut starts: Vec<u64> = chunks.iter().map(|c| start_of(c)).collect();
        for c in &chunks {
            assert_eq!(c.len(), CHUNK);
            let s = start_of(c);
            assert_eq!(
                *c,
                expected(s..s + CHUNK as u64),
                "chunks are contiguous runs of the stream"
            );
        }
        starts.sort_unstable();
        let want: Vec<u64> = (0..2 * per_client).map(|i| i * CHUNK as u64).collect();
        assert_eq!(starts, want, "every chunk served once, none twice, none lost");

        // A failed ring turns reads into EIO; poll reports it; recovery serves again. Bytes
        // published before the failure was noticed are served after recovery.
        let mut f = File::open(mount.file_path("qrng0")).expect("open");
        ring.set_health(Health::Failed, Reason::RepetitionCount);
        eventually("dispenser sees FAILED", || {
            (disp.health("qrng0").ok()? == crate::dispenser::DeviceState::Failed).then_some(())
        });
        ring.push(&expected(total..total + 16));
        assert_eq!(read_once(&mut f, 8).expect_err("EIO").raw_os_error(), Some(libc::EIO));
        assert!(poll_in(&f, PollTimeout::ZERO).contains(PollFlags::POLLERR));
        ring.set_health(Health::Ok, Reason::None);
        eventually("dispenser sees OK", || {
            (disp.health("qrng0").ok()? == crate::dispenser::DeviceState::Ok).then_some(())
        });
        assert_eq!(read_once(&mut f, 16).expect("after recovery"), expected(total..total + 16));

        // Poll wakes when the dispenser sees new bytes.
        let rest = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(mount.file_path("qrng0"))
            .expect("open");
        assert!(!poll_in(&rest, PollTimeout::ZERO).contains(PollFlags::POLLIN), "empty");
        let waiter = std::thread::spawn(move || poll_in(&rest, PollTimeout::NONE));
        std::thread::sleep(Duration::from_millis(50));
        ring.push(&[1, 2, 3]);
        let ev = bounded("poll wake-up", move || waiter.join().expect("join"));
        assert!(ev.contains(PollFlags::POLLIN), "{ev:?}");
        mount.unmount().expect("unmount");
        disp.shutdown();
    }
}
