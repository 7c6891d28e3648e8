//! End-to-end tests of quantis-driver (simulated cards) + qrng-bridge (HTTP and FUSE): the real
//! binaries, started as processes. They need root and /dev/fuse (see `fuse_available`).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use qrng_e2e::{
    assert_no_repeated_windows, fuse_available, reference_stream, start_driver, start_driver_sized,
    wait_until, Bridge, Placement,
};

/// The tests start drivers that run flat out; one at a time keeps a 2-core machine responsive.
static SERIAL: Mutex<()> = Mutex::new(());

const CHUNK: usize = 4096;

struct Dirs {
    _tmp: tempfile::TempDir,
    rings: std::path::PathBuf,
    mount: std::path::PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rings = tmp.path().join("rings");
    std::fs::create_dir(&rings).expect("ring dir");
    let mount = tmp.path().join("dev");
    Dirs { rings, mount, _tmp: tmp }
}

use qrng_e2e::read_once;

fn read_exact_chunk(path: &Path) -> std::io::Result<Vec<u8>> {
    let c = read_once(&mut File::open(path)?, CHUNK)?;
    assert_eq!(c.len(), CHUNK, "a FUSE read returns exactly the bytes asked for");
    Ok(c)
}

fn health(b: &Bridge, name: &str) -> Option<(String, String)> {
    let d = b.device(name)?;
    Some((d["health"].as_str()?.to_owned(), d["reason"].as_str()?.to_owned()))
}

fn wait_health(b: &Bridge, name: &str, want: &str) {
    wait_until(&format!("{name} becomes {want}"), || (health(b, name)?.0 == want).then_some(()));
}

#[test]
fn e2e_concurrent_http_and_fuse_clients_never_receive_the_same_bytes() {
    if !fuse_available("e2e_concurrent_http_and_fuse_clients_never_receive_the_same_bytes") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = dirs();
    let spec = "sim:pcie-16m?rate=0&seed=1";
    let placement = Placement::new(reference_stream(spec, 6 << 20, d._tmp.path()));
    let _driver = start_driver(spec, &d.rings.join("qrng0.ring"));
    let bridge = Arc::new(Bridge::start(&d.rings, &d.mount, &[]));
    wait_health(&bridge, "qrng0", "ok");

    let per_client = 64;
    let mut clients = Vec::new();
    for i in 0..4 {
        let b = Arc::clone(&bridge);
        clients.push(std::thread::spawn(move || {
            let mut f = File::open(b.file("qrng0")).expect("open device file");
            (0..per_client)
                .map(|_| {
                    if i % 2 == 0 {
                        b.http_bytes("qrng0", CHUNK).expect("HTTP bytes")
                    } else {
                        let c = read_once(&mut f, CHUNK).expect("FUSE read");
                        assert_eq!(c.len(), CHUNK);
                        c
                    }
                })
                .collect::<Vec<_>>()
        }));
    }
    let chunks: Vec<Vec<u8>> =
        clients.into_iter().flat_map(|c| c.join().expect("client")).collect();
    assert_eq!(chunks.len(), 4 * per_client);
    assert_no_repeated_windows(&chunks);
    // The fixed-seed simulator publishes the same stream every run: every chunk is a piece of it
    // and no two pieces overlap.
    placement.assert_disjoint_pieces(&chunks);
}

#[test]
fn e2e_a_bridge_restarted_mid_stream_serves_nothing_twice() {
    if !fuse_available("e2e_a_bridge_restarted_mid_stream_serves_nothing_twice") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = dirs();
    let spec = "sim:pcie-16m?rate=0&seed=2";
    let placement = Placement::new(reference_stream(spec, 16 << 20, d._tmp.path()));
    let _driver = start_driver(spec, &d.rings.join("qrng0.ring"));

    let mut first = Bridge::start(&d.rings, &d.mount, &[]);
    wait_health(&first, "qrng0", "ok");
    let mut chunks = Vec::new();
    // Readers running while the bridge is killed: their bytes up to the crash count too.
    let path = first.file("qrng0");
    let fuse_reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let Ok(mut f) = File::open(&path) else { return got };
        // Bounded, and paced so that it is still reading when the bridge is killed.
        while let Ok(c) = read_once(&mut f, CHUNK) {
            if c.len() != CHUNK || got.len() == 2048 {
                break;
            }
            got.push(c);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        got
    });
    for _ in 0..32 {
        chunks.push(first.http_bytes("qrng0", CHUNK).expect("HTTP before the crash"));
        chunks.push(read_exact_chunk(&first.file("qrng0")).expect("FUSE before the crash"));
    }
    first.kill();
    chunks.extend(fuse_reader.join().expect("reader"));
    let dead = std::fs::metadata(d.mount.join("qrng0")).expect_err("the crash left a dead mount");
    assert_eq!(dead.raw_os_error(), Some(libc::ENOTCONN), "{dead}");

    // The new bridge cleans up the dead mount and resumes at the ring's recorded head.
    let second = Bridge::start(&d.rings, &d.mount, &[]);
    wait_health(&second, "qrng0", "ok");
    for _ in 0..32 {
        chunks.push(second.http_bytes("qrng0", CHUNK).expect("HTTP after the restart"));
        chunks.push(read_exact_chunk(&second.file("qrng0")).expect("FUSE after the restart"));
    }
    assert_no_repeated_windows(&chunks);
    placement.assert_disjoint_pieces(&chunks);
}

/// A bridge killed while it is sending a lent answer (16 MiB straight from the ring to a client
/// that reads slowly) does not hand those bytes out again after a restart: the ring recorded how
/// far bytes were handed out (its cursor), and the new bridge resumes there, not at the head.
#[test]
fn e2e_a_bridge_killed_while_lending_serves_nothing_twice() {
    use std::io::Write as _;
    if !fuse_available("e2e_a_bridge_killed_while_lending_serves_nothing_twice") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = dirs();
    let spec = "sim:pcie-16m?rate=0&seed=3";
    let placement = Placement::new(reference_stream(spec, 24 << 20, d._tmp.path()));
    // A 32 MiB ring: 16 MiB lent is far more than the kernel's socket buffers take.
    let _driver = start_driver_sized(spec, &d.rings.join("qrng0.ring"), "32M");
    let args = ["--no-fuse", "--max-bytes", "16777216"];
    let mut first = Bridge::start(&d.rings, &d.mount, &args);
    wait_health(&first, "qrng0", "ok");
    // A well-filled ring (the driver runs at rate=0) before the big request, so it is lent in
    // one piece: nothing has been taken yet, so the bytes start at the beginning of the data area.
    wait_until("a well-filled ring", || {
        let fill = first.device("qrng0")?["ring_fill"].as_u64()?;
        (fill >= 24 << 20).then_some(())
    });
    // The slow client: asks for 16 MiB and reads only the response head (the socket buffers hold
    // far less, so the rest stays lent in the ring).
    let mut slow = std::net::TcpStream::connect(first.addr).expect("connect");
    slow.write_all(
        b"GET /api/v1/random/bytes?length=16777216&format=binary HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .expect("request");
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(slow.read(&mut b).expect("response head"), 1, "connection closed early");
        got.push(b[0]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    let mut chunks = Vec::new();
    for _ in 0..4 {
        chunks.push(first.http_bytes("qrng0", 65536).expect("HTTP before the crash"));
    }
    first.kill();
    // What the slow client received before the crash (the kernel's buffers) is all it gets.
    let mut body = Vec::new();
    let _ = slow.read_to_end(&mut body);
    assert!(!body.is_empty() && body.len() < 16 << 20, "lent body cut at {} bytes", body.len());
    chunks.push(body);

    let second = Bridge::start(&d.rings, &d.mount, &args);
    wait_health(&second, "qrng0", "ok");
    for n in [65536, 1000, 65536, 300 << 10] {
        chunks.push(second.http_bytes("qrng0", n).expect("HTTP after the restart"));
    }
    placement.assert_disjoint_pieces(&chunks);
}

#[test]
fn e2e_a_driver_killed_and_restarted_is_picked_up_without_restarting_the_bridge() {
    if !fuse_available(
        "e2e_a_driver_killed_and_restarted_is_picked_up_without_restarting_the_bridge",
    ) {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = dirs();
    let ring = d.rings.join("qrng0.ring");
    let mut driver = start_driver("sim:pcie-16m?rate=0&seed=3", &ring);
    let mut bridge = Bridge::start(&d.rings, &d.mount, &["--heartbeat-timeout-ms", "500"]);
    wait_health(&bridge, "qrng0", "ok");
    let epoch = bridge.device("qrng0").expect("listed")["epoch"].as_u64().expect("epoch");
    read_exact_chunk(&bridge.file("qrng0")).expect("read before the crash");

    driver.kill();
    // The ring stays; its heartbeat goes stale: degraded, still serving what the ring holds.
    wait_health(&bridge, "qrng0", "degraded");
    read_exact_chunk(&bridge.file("qrng0")).expect("buffered bytes are still served");

    let _driver = start_driver("sim:pcie-16m?rate=0&seed=4", &ring);
    wait_until("new epoch, healthy", || {
        let dev = bridge.device("qrng0")?;
        (dev["epoch"].as_u64()? > epoch && dev["health"] == "ok").then_some(())
    });
    // More than the ring holds, so bytes of the new driver run are certainly among them.
    let mut f = File::open(bridge.file("qrng0")).expect("open");
    for _ in 0..5 {
        assert_eq!(
            read_once(&mut f, 1 << 20).expect("read after the driver restart").len(),
            1 << 20
        );
    }
    bridge.http_bytes("qrng0", 32).expect("HTTP after the driver restart");
    assert!(!bridge.proc.exited(), "the same bridge process served throughout");
}

#[test]
fn e2e_a_failed_card_gives_503_and_eio_and_recovers() {
    if !fuse_available("e2e_a_failed_card_gives_503_and_eio_and_recovers") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = dirs();
    let ring = d.rings.join("qrng0.ring");
    let mut faulty =
        start_driver("sim:pcie-16m?rate=0&seed=5&fault=stuck0&fault-after=1000000", &ring);
    let bridge = Bridge::start(&d.rings, &d.mount, &[]);
    // Stuck output fails the health tests; recoveries fail too, so the ring stays FAILED.
    wait_until("FAILED for good", || {
        let (h, reason) = health(&bridge, "qrng0")?;
        (h == "failed" && reason.contains("exhausted")).then_some(())
    });
    let r = bridge.get("/api/v1/random/bytes?length=16&format=hex&device=qrng0").expect("GET");
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(bridge.get("/health").expect("GET /health").status, 503);
    let err = read_exact_chunk(&bridge.file("qrng0")).expect_err("EIO while FAILED");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let mut nb = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bridge.file("qrng0"))
        .expect("open O_NONBLOCK");
    assert_eq!(read_once(&mut nb, 16).expect_err("EIO").raw_os_error(), Some(libc::EIO));

    assert!(faulty.terminate(), "the faulty driver exits cleanly");
    let _healthy = start_driver("sim:pcie-16m?rate=0&seed=6", &ring);
    wait_health(&bridge, "qrng0", "ok");
    bridge.http_bytes("qrng0", 16).expect("200 again");
    read_exact_chunk(&bridge.file("qrng0")).expect("reads again");
    wait_until("/health 200 again", || (bridge.get("/health").ok()?.status == 200).then_some(()));
}

#[test]
fn e2e_hot_plug_files_and_devices_follow_the_drivers() {
    if !fuse_available("e2e_hot_plug_files_and_devices_follow_the_drivers") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = dirs();
    let mut bridge = Bridge::start(&d.rings, &d.mount, &[]);
    assert_eq!(bridge.devices().as_array().map(Vec::len), Some(0));
    let files = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&d.mount)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert!(files().is_empty());

    // Plug in two cards.
    let ring0 = d.rings.join("qrng0.ring");
    let ring1 = d.rings.join("qrng1.ring");
    let mut card0 = start_driver("sim:pcie-16m?rate=0&seed=7", &ring0);
    wait_health(&bridge, "qrng0", "ok");
    assert_eq!(files(), vec!["qrng0"]);
    read_exact_chunk(&bridge.file("qrng0")).expect("new card readable");
    let mut card1 =
        start_driver("sim:pcie-16m?rate=0&seed=8&fault=unplug&fault-after=2000000", &ring1);
    wait_until("second card listed", || bridge.device("qrng1"));
    assert_eq!(files(), vec!["qrng0", "qrng1"]);

    // Card 1 is unplugged: its driver exits and the bridge reports the card gone.
    wait_until("driver of the unplugged card exits", || card1.exited().then_some(()));
    wait_until("card reported gone", || {
        let (h, reason) = health(&bridge, "qrng1")?;
        (h == "stopped" && reason.contains("gone")).then_some(())
    });
    let err = read_exact_chunk(&bridge.file("qrng1")).expect_err("EIO from a gone card");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(bridge.http_bytes("qrng1", 16), Err(503));
    bridge.http_bytes("qrng0", 16).expect("the other card still serves");

    // Its ring file is removed: file and API device go, without a restart.
    std::fs::remove_file(&ring1).expect("rm ring");
    wait_until("qrng1 detached", || bridge.device("qrng1").is_none().then_some(()));
    wait_until("qrng1 file gone", || (files() == vec!["qrng0"]).then_some(()));

    // Card 0's driver is stopped: reported stopped; then its ring goes too.
    assert!(card0.terminate(), "driver exits cleanly on SIGTERM");
    wait_health(&bridge, "qrng0", "stopped");
    std::fs::remove_file(&ring0).expect("rm ring");
    wait_until("all detached", || bridge.devices().as_array()?.is_empty().then_some(()));
    assert!(files().is_empty());

    // And plugged in again under the same name.
    let _again = start_driver("sim:pcie-16m?rate=0&seed=9", &ring0);
    wait_health(&bridge, "qrng0", "ok");
    read_exact_chunk(&bridge.file("qrng0")).expect("re-plugged card readable");
    assert!(bridge.terminate(), "bridge exits cleanly on SIGTERM");
    assert!(
        qrng_bridge_mount_gone(&d.mount),
        "the bridge unmounted its device directory on SIGTERM"
    );
}

fn qrng_bridge_mount_gone(mount: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let m = mount.to_string_lossy();
    !info.lines().any(|l| l.split(' ').nth(4) == Some(&*m))
}
