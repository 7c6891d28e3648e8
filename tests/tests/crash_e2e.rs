//! A bridge killed (SIGKILL) in the middle of everything it can be doing: lent HTTP answers in
//! flight, FUSE readers waiting for entropy (more than its read workers), and restarted at once.
//! Needs root and /dev/fuse (see `fuse_available`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qrng_e2e::{
    fuse_available, read_once, start_driver_sized, start_driver_with, wait_until, Bridge,
};

/// Bound on the time from SIGKILL to the bridge's reaping: generous (the measured figures are in
/// `docs/fuse.md`, "Crash"); a bridge thread stuck in an uninterruptible wait exceeds it.
const REAP_BOUND: Duration = Duration::from_secs(10);

/// The states of the bridge's threads (`/proc/<pid>/task/*/stat`, field 3).
fn thread_states(pid: i32) -> Vec<char> {
    let dir = format!("/proc/{pid}/task");
    std::fs::read_dir(&dir)
        .expect("task dir")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .filter_map(|s| s.rsplit_once(") ")?.1.chars().next())
        .collect()
}

/// A client that asks for `n` binary bytes and reads only the response head: the body stays lent
/// from the ring, most of it never leaving the bridge.
fn slow_client(b: &Bridge, n: usize) -> TcpStream {
    let mut s = TcpStream::connect(b.addr).expect("connect");
    write!(s, "GET /api/v1/random/bytes?length={n}&format=binary&device=qrng0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut c = [0u8; 1];
        assert_eq!(s.read(&mut c).expect("response head"), 1, "connection closed early");
        head.push(c[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    s
}

#[test]
fn e2e_a_killed_bridge_is_reaped_promptly_and_a_restart_at_once_serves() {
    if !fuse_available("e2e_a_killed_bridge_is_reaped_promptly_and_a_restart_at_once_serves") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let rings = tmp.path().join("rings");
    std::fs::create_dir(&rings).expect("ring dir");
    let mount = tmp.path().join("dev");
    // qrng0 runs flat out (lent answers); qrng1 trickles, so its FUSE readers wait.
    let _fast = start_driver_sized("sim:pcie-16m?rate=0&seed=5", &rings.join("qrng0.ring"), "32M");
    // A card 4,000 times slower than its model's rate is a stalled card to the data watchdog,
    // which would fail it (and its readers) before the kill: off for this one.
    let _slow = start_driver_with(
        "sim:pcie-16m?rate=1k&seed=6",
        &rings.join("qrng1.ring"),
        "4M",
        &["--no-data-intervals", "0"],
    );
    let args = ["--max-bytes", "16777216"];
    let mut first = Bridge::start(&rings, &mount, &args);
    wait_until("a well-filled qrng0", || {
        let fill = first.device("qrng0")?["ring_fill"].as_u64()?;
        (fill >= 24 << 20).then_some(())
    });
    wait_until("qrng1 attached", || first.file("qrng1").exists().then_some(()));

    let lent: Vec<TcpStream> = (0..8).map(|_| slow_client(&first, 2 << 20)).collect();
    let mut readers: Vec<Child> = (0..100)
        .map(|_| {
            Command::new("head")
                .args(["-c", "1048576"])
                .arg(first.file("qrng1"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start head")
        })
        .collect();
    let pid = first.proc.pid().as_raw();
    // 64 read workers busy, the rest of the readers queued.
    wait_until("the read workers are all busy", || (thread_states(pid).len() > 64).then_some(()));

    // Every thread killable: none stays in an uninterruptible wait ('D'; a page fault may pass
    // through one briefly, so one sample without any is enough).
    let mut states = thread_states(pid);
    for _ in 0..20 {
        if !states.contains(&'D') {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        states = thread_states(pid);
    }
    assert!(!states.contains(&'D'), "a bridge thread stays in an uninterruptible wait: {states:?}");
    let start = Instant::now();
    first.kill();
    let reaped = start.elapsed();
    eprintln!(
        "SIGKILL to reap: {reaped:?} ({} threads, {} lent answers, {} FUSE readers)",
        states.len(),
        lent.len(),
        readers.len()
    );
    assert!(reaped < REAP_BOUND, "a killed bridge took {reaped:?} to exit");
    for r in &mut readers {
        let status = r.wait().expect("reader exits once the bridge is gone");
        assert!(!status.success(), "a reader of the dead bridge got its bytes: {status:?}");
    }
    drop(lent);

    // A restart right after the kill mounts over the dead mount and serves.
    let second = Bridge::start(&rings, &mount, &args);
    wait_until("qrng0 attached again", || second.file("qrng0").exists().then_some(()));
    let mut f = std::fs::File::open(second.file("qrng0")).expect("open after restart");
    assert_eq!(read_once(&mut f, 4096).expect("read after restart").len(), 4096);
}
