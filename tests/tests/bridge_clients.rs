//! Hostile HTTP clients against the real `qrng-bridge` binary, run with a low open-file limit as a
//! unit without `LimitNOFILE=` would be: idle and half-sent connections must not starve other
//! clients or the bridge's own descriptors, and must not cost much memory (docs/api.md
//! "Connections"). No FUSE; one simulated card at its real rate.
//!
//! Latencies are printed, not asserted: a normal request gets [`GUARD`] to be answered, a bound
//! reached only when it is starved.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use qrng_e2e::{free_addr, spawn_bridge, start_driver, wait_until, Bridge, Proc};

/// One test at a time: each opens thousands of sockets.
static SERIAL: Mutex<()> = Mutex::new(());

/// How long a normal request may take before the test calls it starved.
const GUARD: Duration = Duration::from_secs(10);

/// The open-file limit of a unit that does not set `LimitNOFILE=` (systemd's default soft limit).
const LOW: (u64, u64) = (1024, 1024);

/// Raises this test process's own soft open-file limit so it can hold `n` sockets.
fn allow_own_descriptors(n: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < n {
        assert!(hard >= n, "this test needs an open-file limit of {n} (hard limit {hard})");
        setrlimit(Resource::RLIMIT_NOFILE, n, hard).expect("raise own soft limit");
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    _driver: Proc,
    bridge: Bridge,
}

/// A simulated card and a bridge (no FUSE) with `args` under the open-file limit `nofile`, serving
/// random bytes.
fn setup(args: &[&str], nofile: (u64, u64)) -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rings = tmp.path().join("rings");
    std::fs::create_dir(&rings).expect("ring dir");
    let driver = start_driver("sim:pcie-4m?seed=1", &rings.join("qrng0.ring"));
    let mut all = vec!["--no-fuse"];
    all.extend_from_slice(args);
    let bridge = Bridge::start_with_nofile(&rings, &tmp.path().join("dev"), &all, Some(nofile));
    wait_until("the bridge serves random bytes", || bridge.http_bytes("qrng0", 16).ok());
    Setup { _tmp: tmp, _driver: driver, bridge }
}

/// Opens up to `n` connections from 127.0.0.1 that each send only a request line. Stops at the
/// first that cannot connect (a server that stopped accepting with a full backlog): returns those
/// made.
fn half_sent(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { break };
        // A connection the server refused may already be closed: that is its answer.
        let _ = s.write_all(b"GET / HTTP/1.1\r\n");
        out.push(s);
    }
    out
}

/// `GET path` from the loopback address `from` (another client than the half-sent connections'
/// 127.0.0.1): the status and how long the answer took, or what went wrong within [`GUARD`].
fn get_from(addr: SocketAddr, from: [u8; 4], path: &str) -> Result<(u16, Duration), String> {
    use socket2::{Domain, Socket, Type};
    let start = Instant::now();
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
    s.bind(&SocketAddr::from((from, 0)).into()).map_err(|e| e.to_string())?;
    s.connect_timeout(&addr.into(), GUARD).map_err(|e| format!("connect: {e}"))?;
    let mut s = TcpStream::from(s);
    s.set_read_timeout(Some(GUARD.saturating_sub(start.elapsed()).max(Duration::from_millis(1))))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .map_err(|e| format!("no answer after {:?}: {e}", start.elapsed()))?;
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&answer);
    let status = text.get(9..12).and_then(|c| c.parse().ok()).ok_or(format!("answer {text:?}"))?;
    Ok((status, took))
}

fn rss_anon_kib(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("RssAnon")
}

/// The soft open-file limit of process `pid`.
fn soft_nofile(pid: nix::unistd::Pid) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("nofile line");
    line.split_whitespace().nth(3).and_then(|v| v.parse().ok()).expect("soft limit")
}

const RANDOM: &str = "/api/v1/random/bytes?length=32";

/// The target of issue 14: 1,500 connections that send only a request line, from one client, at
/// a soft limit of 1024, with the default settings: another client's request is answered at
/// once, and the bridge never runs out of descriptors.
#[test]
fn e2e_half_sent_requests_from_one_client_do_not_starve_another() {
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    allow_own_descriptors(4096);
    let s = setup(&[], LOW);
    let held = half_sent(s.bridge.addr, 1500);
    let normal = get_from(s.bridge.addr, [127, 0, 0, 2], RANDOM);
    eprintln!("{} half-sent connections opened; another client's request: {normal:?}", held.len());
    assert!(matches!(normal, Ok((200, _))), "starved: {normal:?}");
    assert_eq!(held.len(), 1500, "every connection was answered (accepted or refused)");
    drop(held);
    let log = s.bridge.proc.log();
    assert!(!log.contains("Too many open files"), "{log}");
}

/// Without a per-client cap, the global cap holds instead: the bridge stops accepting at the cap
/// (no EMFILE), the header timeout frees the slots, and a waiting request is then served.
#[test]
fn e2e_at_the_connection_cap_the_bridge_waits_instead_of_running_out_of_descriptors() {
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    allow_own_descriptors(4096);
    let s =
        setup(&["--http-max-connections-per-client", "0", "--http-header-timeout-ms", "2000"], LOW);
    let t0 = Instant::now();
    let held = half_sent(s.bridge.addr, 1500);
    let opened = t0.elapsed();
    let normal = get_from(s.bridge.addr, [127, 0, 0, 2], RANDOM);
    eprintln!(
        "{} half-sent connections opened in {opened:?}; a request behind them: {normal:?}",
        held.len()
    );
    assert!(matches!(normal, Ok((200, _))), "starved: {normal:?}");
    drop(held);
    let log = s.bridge.proc.log();
    assert!(log.contains("HTTP connection cap reached"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
}

/// Memory under slowloris: connections that sent part of a request cost about a kilobyte each
/// (hyper's buffers are only allocated once a head is complete). Caps lifted so that one client's
/// connections all stay open.
#[test]
fn e2e_half_sent_requests_hold_little_memory() {
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    const N: usize = 5000;
    allow_own_descriptors(N as u64 + 512);
    let s = setup(
        &[
            "--http-max-connections-per-client",
            "0",
            "--http-max-connections",
            "6000",
            "--http-header-timeout-ms",
            "600000",
        ],
        (8192, 8192),
    );
    let pid = s.bridge.proc.pid();
    let before = rss_anon_kib(pid);
    let held = half_sent(s.bridge.addr, N);
    assert_eq!(held.len(), N);
    // Every connection is past its first read once the server has them all: a request answered
    // on a new connection, placed after all of them, says so.
    let normal = get_from(s.bridge.addr, [127, 0, 0, 2], RANDOM);
    assert!(matches!(normal, Ok((200, _))), "{normal:?}");
    let after = rss_anon_kib(pid);
    let per_connection = (after.saturating_sub(before) * 1024) / N as u64;
    eprintln!("RssAnon {before} KiB idle, {after} KiB with {N} half-sent requests: {per_connection} B each");
    // The bound: a few KiB; hyper's buffers for every connection took about 21 KiB each.
    assert!(per_connection < 8 * 1024, "{per_connection} B per half-sent connection");
    drop(held);
}

/// A cap the open-file limit cannot hold is refused at start-up with the arithmetic and the fix;
/// a soft limit below what the default cap needs is raised up to the hard limit.
#[test]
fn e2e_the_connection_cap_is_fitted_to_the_open_file_limit() {
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (rings, mount) = (tmp.path(), tmp.path().join("dev"));
    let args = ["--no-fuse", "--no-watch", "--http-max-connections", "5000"];
    let mut p = spawn_bridge(rings, &mount, free_addr(), &args, Some(LOW));
    assert!(!p.wait_exit().success());
    let log = p.log();
    for part in ["--http-max-connections", "5000", "LimitNOFILE=", "RLIMIT_NOFILE is 1024"] {
        assert!(log.contains(part), "{part:?} missing from: {log}");
    }

    // A hard limit above the default cap's need (the child cannot get more than this process has).
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    assert!(hard >= 8192, "this test needs a hard open-file limit of 8192 or more ({hard})");
    let none = ["--no-fuse", "--no-watch"];
    let b = Bridge::start_with_nofile(rings, &mount, &none, Some((1024, hard)));
    let soft = soft_nofile(b.proc.pid());
    assert!(soft >= 4096 + 256, "soft limit raised for the default cap: {soft}");
    assert!(soft < hard, "and no further than needed: {soft}");
}

/// The shipped unit's `LimitNOFILE=` holds the default connection cap with its reserve: a bridge
/// under that limit keeps the default cap instead of lowering it.
#[test]
fn e2e_the_units_open_file_limit_holds_the_default_cap() {
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let unit =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/qrng-bridge.service");
    let text = std::fs::read_to_string(&unit).expect("unit");
    let n: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .and_then(|v| v.trim().parse().ok())
        .expect("qrng-bridge.service sets LimitNOFILE= to a number");
    let tmp = tempfile::tempdir().expect("tempdir");
    let b = Bridge::start_with_nofile(
        tmp.path(),
        &tmp.path().join("dev"),
        &["--no-fuse", "--no-watch"],
        Some((n, n)),
    );
    let log = b.proc.log();
    assert!(log.contains("HTTP connection limits"), "{log}");
    assert!(
        !log.contains("cap lowered"),
        "LimitNOFILE={n} is too small for the default cap: {log}"
    );
}
