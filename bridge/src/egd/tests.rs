//! EGD server tests over real Unix sockets against [`MemoryRing`]: every command, pipelined
//! blocking reads (QEMU's pattern), fail-closed behaviour, the client cap, garbage and truncated
//! input, and a client that hangs up while waiting. No timing assertions: timeouts only guard
//! against hangs, and waits poll observable counters.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use qrng_ring::{Health, Reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::*;
use crate::dispenser::memory::MemoryRing;
use crate::dispenser::{Dispenser, DispenserConfig};

/// Hang guard for one client operation (not a timing assertion).
const GUARD: Duration = Duration::from_secs(30);

fn pattern(start: usize, len: usize) -> Vec<u8> {
    qrng_ring::pattern::bytes(start as u64, len)
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    ring: MemoryRing,
    dispenser: Dispenser,
    metrics: Arc<EgdMetrics>,
    _server: EgdServer,
}

fn start(max_clients: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("egd.sock");
    let ring = MemoryRing::new("1234A5678", false, 1 << 16);
    let dispenser = Dispenser::new(DispenserConfig {
        heartbeat_timeout: Duration::from_secs(3600),
        status_interval: Duration::from_millis(2),
    });
    dispenser.attach_source("qrng0", None, ring.source()).expect("attach");
    let cfg =
        EgdConfig { listen: vec![EgdListen::Unix(path.clone())], max_clients, socket_mode: 0o600 };
    let listeners = bind(&cfg).expect("bind");
    let metrics = Arc::new(EgdMetrics::default());
    let server =
        EgdServer::start(listeners, dispenser.clone(), Arc::clone(&metrics), cfg.max_clients);
    Fixture { _dir: dir, path, ring, dispenser, metrics, _server: server }
}

async fn connect(f: &Fixture) -> UnixStream {
    UnixStream::connect(&f.path).await.expect("connect")
}

async fn read_n(c: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(GUARD, c.read_exact(&mut buf)).await.expect("hang guard").expect("read");
    buf
}

/// Reads until the server closes; returns what came before.
async fn read_to_close(c: &mut UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(GUARD, c.read_to_end(&mut out)).await.expect("hang guard").expect("read");
    out
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(GUARD, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("hang guard: {what}"));
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

#[tokio::test]
async fn every_command_is_answered_in_the_wire_format() {
    let f = start(4);
    f.ring.push(&pattern(0, 1000));
    let mut c = connect(&f).await;
    // 0x00: bits in the ring, big-endian.
    c.write_all(&[0x00]).await.expect("write");
    assert_eq!(read_n(&mut c, 4).await, 8000u32.to_be_bytes());
    // 0x01: count byte, then the bytes.
    c.write_all(&[0x01, 10]).await.expect("write");
    assert_eq!(read_n(&mut c, 1).await, [10]);
    assert_eq!(read_n(&mut c, 10).await, pattern(0, 10));
    // 0x02: exactly n bytes, no count byte.
    c.write_all(&[0x02, 255]).await.expect("write");
    assert_eq!(read_n(&mut c, 255).await, pattern(10, 255));
    // 0x03: discarded, no answer; the connection goes on (the next answer is the PID's).
    c.write_all(&[0x03, 0x00, 0x20, 4, 0xde, 0xad, 0xbe, 0xef]).await.expect("write");
    // 0x04: length byte and ASCII pid.
    c.write_all(&[0x04]).await.expect("write");
    let len = read_n(&mut c, 1).await[0];
    let pid = read_n(&mut c, usize::from(len)).await;
    assert_eq!(pid, std::process::id().to_string().into_bytes());
    // Zero-length reads: an empty count, and nothing.
    c.write_all(&[0x01, 0, 0x02, 0, 0x01, 1]).await.expect("write");
    assert_eq!(read_n(&mut c, 3).await, [0, 1, pattern(265, 1)[0]]);
    // The client's bytes were never served: the ring's stream continues where it was.
    let next = f.dispenser.take_blocking("qrng0", 4, None).expect("take");
    assert_eq!(next.bytes, pattern(266, 4));
    assert_eq!(load(&f.metrics.served_bytes), 266);
    assert_eq!(load(&f.metrics.ignored_bytes), 4);
    let counts: Vec<u64> = f.metrics.requests.iter().map(load).collect();
    assert_eq!(counts, vec![1, 3, 2, 1, 1]);
    assert_eq!(f.dispenser.total_bytes_served(), 270);
}

#[tokio::test]
async fn pipelined_blocking_reads_are_answered_in_order_as_bytes_arrive() {
    let f = start(4);
    let mut c = connect(&f).await;
    // QEMU's rng-egd writes all its request headers at once, then reads.
    c.write_all(&[0x02, 255, 0x02, 255, 0x02, 255, 0x02, 45]).await.expect("write");
    wait_for("the first read waits", || load(&f.metrics.requests[2]) >= 1).await;
    for i in 0..10 {
        f.ring.push(&pattern(i * 100, 100));
    }
    assert_eq!(read_n(&mut c, 810).await, pattern(0, 810));
    assert_eq!(load(&f.metrics.served_bytes), 810);
}

#[tokio::test]
async fn a_failed_card_answers_nothing_and_a_blocking_read_waits_for_it_to_recover() {
    let f = start(4);
    f.ring.push(&pattern(0, 300));
    f.ring.set_health(Health::Failed, Reason::RepetitionCount);
    wait_for("device failed", || {
        f.dispenser.health("qrng0").is_ok_and(|h| h == crate::dispenser::DeviceState::Failed)
    })
    .await;
    let mut c = connect(&f).await;
    c.write_all(&[0x00, 0x01, 50]).await.expect("write");
    assert_eq!(read_n(&mut c, 5).await, [0, 0, 0, 0, 0], "no bits, and a count of 0");
    c.write_all(&[0x02, 64]).await.expect("write");
    wait_for("the blocking read is refused twice", || load(&f.metrics.unserved) >= 3).await;
    let mut probe = [0u8; 1];
    assert!(
        matches!(c.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a blocking read on a failed card gets no bytes"
    );
    assert_eq!(load(&f.metrics.served_bytes), 0);
    // The bytes published before the failure passed the health tests: served once it recovers.
    f.ring.set_health(Health::Ok, Reason::None);
    assert_eq!(read_n(&mut c, 64).await, pattern(0, 64));
}

#[tokio::test]
async fn unknown_commands_and_truncated_requests_close_the_connection_cleanly() {
    let f = start(4);
    f.ring.push(&pattern(0, 100));
    let mut c = connect(&f).await;
    c.write_all(&[0x01, 2, 0x7f, 0x02, 5]).await.expect("write");
    // The valid request before the garbage is answered; the request after it is not.
    assert_eq!(read_to_close(&mut c).await, [2, pattern(0, 2)[0], pattern(0, 2)[1]]);
    assert_eq!(load(&f.metrics.protocol_errors), 1);
    for partial in [&[0x02][..], &[0x03, 0, 8, 200, 1, 2, 3]] {
        let mut c = connect(&f).await;
        c.write_all(partial).await.expect("write");
        c.shutdown().await.expect("shutdown");
        assert!(read_to_close(&mut c).await.is_empty(), "{partial:?}");
    }
    wait_for("every connection closed", || f.metrics.open.load(Ordering::Relaxed) == 0).await;
    // Nothing was taken for the truncated requests.
    assert_eq!(f.dispenser.take_blocking("qrng0", 98, None).expect("take").bytes, pattern(2, 98));
}

#[tokio::test]
async fn clients_beyond_the_cap_are_closed_as_they_connect() {
    let f = start(1);
    let mut first = connect(&f).await;
    first.write_all(&[0x00]).await.expect("write");
    read_n(&mut first, 4).await;
    let mut second = connect(&f).await;
    assert!(read_to_close(&mut second).await.is_empty());
    assert_eq!(load(&f.metrics.refused), 1);
    drop(first);
    wait_for("the first client is gone", || f.metrics.open.load(Ordering::Relaxed) == 0).await;
    let mut third = connect(&f).await;
    third.write_all(&[0x00]).await.expect("write");
    read_n(&mut third, 4).await;
}

#[tokio::test]
async fn a_client_that_hangs_up_while_waiting_takes_nothing() {
    let f = start(4);
    let mut c = connect(&f).await;
    c.write_all(&[0x02, 200]).await.expect("write");
    wait_for("the read waits", || f.dispenser.devices()[0].requests_waiting == 1).await;
    drop(c);
    wait_for("the request is withdrawn", || {
        f.metrics.open.load(Ordering::Relaxed) == 0
            && f.dispenser.devices()[0].requests_waiting == 0
    })
    .await;
    f.ring.push(&pattern(0, 200));
    // Every byte goes to the next caller: none went to the client that left.
    assert_eq!(f.dispenser.take_blocking("qrng0", 200, None).expect("take").bytes, pattern(0, 200));
    assert_eq!(load(&f.metrics.served_bytes), 0);
}

#[tokio::test]
async fn a_live_socket_is_not_replaced_and_a_stale_one_is() {
    let f = start(4);
    let cfg = EgdConfig {
        listen: vec![EgdListen::Unix(f.path.clone())],
        max_clients: 1,
        socket_mode: 0o600,
    };
    let err = bind(&cfg).expect_err("in use");
    assert!(matches!(err, EgdError::InUse { .. }), "{err}");
    let stale = f._dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let cfg = EgdConfig { listen: vec![EgdListen::Unix(stale.clone())], ..cfg };
    assert_eq!(bind(&cfg).expect("replaces a stale socket").len(), 1);
    let file = f._dir.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    let cfg = EgdConfig { listen: vec![EgdListen::Unix(file)], ..cfg };
    assert!(matches!(bind(&cfg), Err(EgdError::NotSocket { .. })));
}
