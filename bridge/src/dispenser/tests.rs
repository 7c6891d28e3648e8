//! Dispenser tests against [`MemoryRing`]: exactly-once under concurrency, FIFO order, timeouts,
//! FAILED / stale / STOPPED handling, non-blocking reads, poll readiness, device selection.
//! No timing assertions: waits poll observable state and only use timeouts as failure guards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::memory::MemoryRing;
use super::*;
use qrng_ring::{Health, Reason};

fn cfg() -> DispenserConfig {
    DispenserConfig {
        heartbeat_timeout: Duration::from_secs(3600),
        status_interval: Duration::from_millis(2),
    }
}

/// Polls `cond` until it holds (the shared helper; its patience is a hang guard, not a timing
/// assertion).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    qrng_e2e::wait_until(what, || cond().then_some(()));
}

fn status_of(d: &Dispenser, name: &str) -> DeviceStatus {
    d.devices().into_iter().find(|s| s.name == name).expect("device listed")
}

fn pattern(start: usize, len: usize) -> Vec<u8> {
    qrng_ring::pattern::bytes(start as u64, len)
}

fn one(ring: &MemoryRing) -> Dispenser {
    let d = Dispenser::new(cfg());
    d.attach_source("qrng0", None, ring.source()).expect("attach");
    d
}

#[test]
fn ready_bytes_are_served_in_ring_order_with_source_label() {
    let ring = MemoryRing::new("1234A5678", false, 4096);
    ring.push(&pattern(0, 100));
    let d = one(&ring);
    let a = d.take_blocking("qrng0", 30, None).expect("take");
    let b = d.take_blocking("qrng0", 70, None).expect("take");
    assert_eq!(a.bytes, pattern(0, 30));
    assert_eq!(b.bytes, pattern(30, 70));
    assert_eq!(a.source, "1234A5678");
    assert_eq!(a.device, "qrng0");
    assert_eq!(d.total_bytes_served(), 100);
    assert!(ring.is_empty());
    d.shutdown();
}

#[test]
fn simulated_cards_are_labelled_simulated() {
    let ring = MemoryRing::new("SIM0001", true, 4096);
    ring.push(&[1, 2, 3]);
    let d = one(&ring);
    assert_eq!(d.try_take("qrng0", 3).expect("take").source, "simulated");
    d.shutdown();
}

/// Many threads and tasks take concurrently while the producer publishes: every 4-byte counter word
/// of the stream is received exactly once, none lost, none duplicated.
#[test]
fn concurrent_takers_receive_every_byte_exactly_once() {
    const WORDS: u32 = 200_000;
    let ring = MemoryRing::new("S", false, 1 << 20);
    let d = one(&ring);
    let stream: Vec<u8> = (0..WORDS).flat_map(|w| w.to_le_bytes()).collect();
    // Demand sizes are multiples of 4 and sum to the stream length, so words stay aligned.
    let sizes: Vec<usize> = {
        let mut v = Vec::new();
        let mut left = stream.len();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        while left > 0 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (((x % 600) as usize + 1) * 4).min(left);
            v.push(n);
            left -= n;
        }
        v
    };
    let sizes = Arc::new(Mutex::new(sizes));
    let received = Arc::new(Mutex::new(Vec::<u8>::new()));
    let producer = {
        let ring = ring.clone();
        let stream = stream.clone();
        thread::spawn(move || {
            for chunk in stream.chunks(3001) {
                ring.push(chunk);
                thread::yield_now();
            }
        })
    };
    let next = |sizes: &Arc<Mutex<Vec<usize>>>| lock(sizes).pop();
    let mut threads = Vec::new();
    for _ in 0..6 {
        let (d, sizes, received) = (d.clone(), Arc::clone(&sizes), Arc::clone(&received));
        threads.push(thread::spawn(move || {
            while let Some(n) = next(&sizes) {
                let e = d.take_blocking("qrng0", n, None).expect("blocking take");
                assert_eq!(e.bytes.len(), n);
                lock(&received).extend_from_slice(&e.bytes);
            }
        }));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (d, sizes, received) = (d.clone(), Arc::clone(&sizes), Arc::clone(&received));
            tasks.push(tokio::spawn(async move {
                while let Some(n) = next(&sizes) {
                    let e = d.take(None, n, Duration::from_secs(60)).await.expect("async take");
                    assert_eq!(e.bytes.len(), n);
                    lock(&received).extend_from_slice(&e.bytes);
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
    for t in threads {
        t.join().expect("thread");
    }
    producer.join().expect("producer");
    let got = lock(&received);
    assert_eq!(got.len(), stream.len());
    let mut words: Vec<u32> =
        got.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    words.sort_unstable();
    assert!(words.iter().copied().eq(0..WORDS), "some word lost or served twice");
    assert_eq!(d.total_bytes_served(), stream.len() as u64);
    d.shutdown();
}

#[test]
fn queued_requests_are_served_in_arrival_order() {
    let ring = MemoryRing::new("S", false, 4096);
    let d = one(&ring);
    let big = {
        let d = d.clone();
        thread::spawn(move || d.take_blocking("qrng0", 100, None))
    };
    wait_until("first request queued", || status_of(&d, "qrng0").requests_waiting == 1);
    let small = {
        let d = d.clone();
        thread::spawn(move || d.take_blocking("qrng0", 10, None))
    };
    wait_until("second request queued", || status_of(&d, "qrng0").requests_waiting == 2);
    // A non-blocking read does not jump the queue.
    ring.push(&pattern(0, 5));
    assert!(matches!(d.try_take("qrng0", 5), Err(DispenseError::Empty)));
    ring.push(&pattern(5, 105));
    assert_eq!(big.join().expect("join").expect("big").bytes, pattern(0, 100));
    assert_eq!(small.join().expect("join").expect("small").bytes, pattern(100, 10));
    d.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_returns_partial_bytes_to_the_next_request() {
    let ring = MemoryRing::new("S", false, 4096);
    let d = one(&ring);
    ring.push(&pattern(0, 40));
    let r = d.take(None, 100, Duration::from_millis(30)).await;
    assert!(matches!(r, Err(DispenseError::Timeout)), "{r:?}");
    assert_eq!(status_of(&d, "qrng0").requests_waiting, 0);
    assert_eq!(status_of(&d, "qrng0").requests_timed_out, 1);
    // The 40 bytes copied into the timed-out request were never handed out: they come next.
    ring.push(&pattern(40, 10));
    let e = d.take(Some("qrng0"), 50, Duration::from_secs(30)).await.expect("take");
    assert_eq!(e.bytes, pattern(0, 50));
    assert_eq!(d.total_bytes_served(), 50);
    d.shutdown();
}

#[test]
fn blocking_deadline_times_out() {
    let ring = MemoryRing::new("S", false, 4096);
    let d = one(&ring);
    let r = d.take_blocking("qrng0", 1, Some(Instant::now() + Duration::from_millis(20)));
    assert!(matches!(r, Err(DispenseError::Timeout)), "{r:?}");
    d.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_request_is_removed_and_its_bytes_go_to_the_next() {
    let ring = MemoryRing::new("S", false, 4096);
    let d = one(&ring);
    ring.push(&pattern(0, 8));
    let d2 = d.clone();
    let task = tokio::spawn(async move { d2.take(None, 64, Duration::from_secs(3600)).await });
    let d3 = d.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("queued", || status_of(&d3, "qrng0").requests_waiting == 1)
    })
    .await
    .expect("wait");
    task.abort();
    assert!(task.await.is_err(), "aborted");
    assert_eq!(status_of(&d, "qrng0").requests_waiting, 0);
    let e = d.try_take("qrng0", 100).expect("carry served");
    assert_eq!(e.bytes, pattern(0, 8));
    d.shutdown();
}

#[test]
fn failed_ring_serves_nothing_and_fails_queued_requests_then_recovers() {
    let ring = MemoryRing::new("S", false, 4096);
    ring.set_health(Health::Failed, Reason::RepetitionCount);
    ring.push(&pattern(0, 64));
    let d = one(&ring);
    // The status is read at attach: not one byte of a FAILED ring is served.
    assert_eq!(d.health("qrng0").expect("health"), DeviceState::Failed);
    match d.try_take("qrng0", 10) {
        Err(DispenseError::Failed { device, reason }) => {
            assert_eq!(device, "qrng0");
            assert_eq!(reason, "repetition-count");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(matches!(d.take_blocking("qrng0", 1, None), Err(DispenseError::Failed { .. })));
    assert!(matches!(d.wait_readable("qrng0", Box::new(|| ())), Err(DispenseError::Failed { .. })));
    assert_eq!(ring.len(), 64, "nothing consumed while failed");

    // Recovery: the bytes published before the failure passed the tests and are served.
    ring.set_health(Health::Ok, Reason::None);
    wait_until("ok again", || d.health("qrng0").ok() == Some(DeviceState::Ok));
    assert_eq!(d.take_blocking("qrng0", 64, None).expect("take").bytes, pattern(0, 64));

    // A queued request fails when the ring turns FAILED.
    let waiter = {
        let d = d.clone();
        thread::spawn(move || d.take_blocking("qrng0", 10, None))
    };
    wait_until("queued", || status_of(&d, "qrng0").requests_waiting == 1);
    ring.set_health(Health::Failed, Reason::AdaptiveProportion);
    let r = waiter.join().expect("join");
    assert!(matches!(r, Err(DispenseError::Failed { .. })), "{r:?}");
    d.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_heartbeat_serves_what_is_in_the_ring_then_reports_stale() {
    let ring = MemoryRing::new("S", false, 4096);
    ring.set_last_beat(None); // the driver is gone
    ring.push(&pattern(0, 16));
    let d = Dispenser::new(DispenserConfig { heartbeat_timeout: Duration::from_secs(1), ..cfg() });
    d.attach_source("qrng0", None, ring.source()).expect("attach");
    assert_eq!(d.health("qrng0").expect("health"), DeviceState::Degraded);
    let st = status_of(&d, "qrng0");
    assert!(st.heartbeat_stale);
    assert_eq!(
        d.take(None, 16, Duration::from_secs(5)).await.expect("served").bytes,
        pattern(0, 16)
    );
    let r = d.take(None, 1, Duration::from_millis(20)).await;
    assert!(matches!(r, Err(DispenseError::Stale { .. })), "{r:?}");
    // The driver comes back.
    ring.beat();
    let d2 = d.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("ok", || d2.health("qrng0").ok() == Some(DeviceState::Ok))
    })
    .await
    .expect("wait");
    d.shutdown();
}

#[test]
fn stopped_ring_serves_nothing() {
    let ring = MemoryRing::new("S", false, 4096);
    ring.push(&pattern(0, 16));
    ring.set_health(Health::Stopped, Reason::DeviceGone);
    let d = one(&ring);
    match d.take_blocking("qrng0", 1, None) {
        Err(DispenseError::Stopped { reason, .. }) => assert_eq!(reason, "device-gone"),
        other => panic!("expected Stopped, got {other:?}"),
    }
    assert!(matches!(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt")
            .block_on(d.take(None, 1, Duration::from_millis(10))),
        Err(DispenseError::Stopped { .. })
    ));
    d.shutdown();
}

#[test]
fn unreadable_ring_turns_failed() {
    let ring = MemoryRing::new("S", false, 4096);
    let d = one(&ring);
    ring.break_ring();
    wait_until("failed", || d.health("qrng0").ok() == Some(DeviceState::Failed));
    assert!(status_of(&d, "qrng0").reason.contains("more than the capacity"));
    assert!(matches!(d.try_take("qrng0", 1), Err(DispenseError::Failed { .. })));
    d.shutdown();
}

#[test]
fn try_take_returns_what_is_ready() {
    let ring = MemoryRing::new("S", false, 4096);
    let d = one(&ring);
    assert!(matches!(d.try_take("qrng0", 10), Err(DispenseError::Empty)));
    ring.push(&pattern(0, 6));
    assert_eq!(d.try_take("qrng0", 10).expect("some").bytes, pattern(0, 6));
    assert!(matches!(d.try_take("qrng0", 0), Err(DispenseError::Empty)));
    d.shutdown();
}

#[test]
fn try_take_exact_is_all_or_nothing_and_keeps_fifo() {
    let ring = MemoryRing::new("S", false, 4096);
    let d = one(&ring);
    ring.push(&pattern(0, 6));
    assert!(matches!(d.try_take_exact("qrng0", 10), Err(DispenseError::Empty)));
    assert_eq!(ring.len(), 6, "nothing consumed by a refused exact take");
    ring.push(&pattern(6, 4));
    assert_eq!(d.try_take_exact("qrng0", 10).expect("exact").bytes, pattern(0, 10));
    // A queued request comes first even when enough arrives for the exact take.
    let waiter = {
        let d = d.clone();
        thread::spawn(move || d.take_blocking("qrng0", 8, None))
    };
    wait_until("queued", || status_of(&d, "qrng0").requests_waiting == 1);
    assert!(matches!(d.try_take_exact("qrng0", 1), Err(DispenseError::Empty)));
    ring.push(&pattern(10, 8));
    assert_eq!(waiter.join().expect("join").expect("take").bytes, pattern(10, 8));
    d.shutdown();
}

#[test]
fn wait_readable_calls_back_when_bytes_arrive() {
    let ring = MemoryRing::new("S", false, 4096);
    let d = one(&ring);
    let fired = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&fired);
    let ready =
        d.wait_readable("qrng0", Box::new(move || f.store(true, Ordering::SeqCst))).expect("poll");
    assert!(!ready);
    ring.push(&[9]);
    wait_until("callback", || fired.load(Ordering::SeqCst));
    assert!(d.wait_readable("qrng0", Box::new(|| ())).expect("poll"));
    d.shutdown();
}

#[test]
fn wait_readable_calls_back_when_the_device_fails() {
    let ring = MemoryRing::new("S", false, 4096);
    let d = one(&ring);
    let fired = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&fired);
    assert!(!d
        .wait_readable("qrng0", Box::new(move || f.store(true, Ordering::SeqCst)))
        .expect("poll"));
    ring.set_health(Health::Failed, Reason::ChipError);
    wait_until("callback", || fired.load(Ordering::SeqCst));
    d.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_device_skips_failed_ones_and_named_device_is_honoured() {
    let bad = MemoryRing::new("BAD", false, 4096);
    bad.set_health(Health::Failed, Reason::ModuleFailure);
    bad.push(&[1; 32]);
    let good = MemoryRing::new("GOOD", false, 4096);
    good.push(&[2; 32]);
    let d = Dispenser::new(cfg());
    d.attach_source("a", None, bad.source()).expect("attach");
    d.attach_source("b", None, good.source()).expect("attach");
    let e = d.take(None, 8, Duration::from_secs(5)).await.expect("take");
    assert_eq!((e.device.as_str(), e.source.as_str()), ("b", "GOOD"));
    assert!(matches!(
        d.take(Some("a"), 8, Duration::from_secs(5)).await,
        Err(DispenseError::Failed { .. })
    ));
    assert!(matches!(
        d.take(Some("zzz"), 8, Duration::from_secs(5)).await,
        Err(DispenseError::NoSuchDevice(_))
    ));
    assert!(matches!(
        d.attach_source("b", None, good.source()),
        Err(DispenseError::AlreadyAttached(_))
    ));
    // Two cards, none servable: no healthy device.
    let bad2 = MemoryRing::new("BAD2", false, 4096);
    bad2.set_health(Health::Stopped, Reason::DeviceGone);
    d.attach_source("c", None, bad2.source()).expect("attach");
    d.detach("b");
    assert!(matches!(
        d.take(None, 8, Duration::from_secs(5)).await,
        Err(DispenseError::NoHealthyDevice)
    ));
    // One card left: its own reason.
    d.detach("c");
    assert!(matches!(
        d.take(None, 8, Duration::from_secs(5)).await,
        Err(DispenseError::Failed { .. })
    ));
    d.shutdown();
    assert!(d.devices().is_empty());
}

#[test]
fn detach_fails_queued_requests() {
    let ring = MemoryRing::new("S", false, 4096);
    let d = one(&ring);
    let waiter = {
        let d = d.clone();
        thread::spawn(move || d.take_blocking("qrng0", 10, None))
    };
    wait_until("queued", || status_of(&d, "qrng0").requests_waiting == 1);
    d.detach("qrng0");
    assert!(matches!(waiter.join().expect("join"), Err(DispenseError::Detached { .. })));
    assert!(matches!(d.try_take("qrng0", 1), Err(DispenseError::NoSuchDevice(_))));
}

#[test]
fn device_name_is_the_ring_file_stem() {
    assert_eq!(Dispenser::device_name(Path::new("/run/qrng/qrng0.ring")).expect("name"), "qrng0");
    assert!(matches!(Dispenser::device_name(Path::new("/")), Err(DispenseError::BadPath { .. })));
}

/// The same dispenser over a real quantis-driver ring file (producer in this process).
mod real_ring {
    use qrng_ring::{Consumer, Health, Identity, Producer, Reason, RingOptions};

    use super::*;

    fn producer(path: &Path) -> Producer {
        let mut p =
            Producer::open(path, &RingOptions { capacity: 1 << 16, mode: 0o600, group: None })
                .expect("producer");
        p.set_identity(&Identity {
            model: "pcie-16m".into(),
            serial: "171234A410".into(),
            modules: 0b11,
            simulated: false,
            extractor: "none".into(),
            board_version: 0x0005_0203,
            ..Identity::default()
        });
        p.heartbeat();
        p.set_health(Health::Ok, Reason::None);
        p
    }

    #[test]
    fn attach_serves_the_ring_and_a_reattach_resumes_at_the_head() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("qrng0.ring");
        let mut p = producer(&path);
        assert_eq!(p.write(&pattern(0, 1000)).expect("write"), 1000);
        let d = Dispenser::new(cfg());
        assert_eq!(d.attach(&path).expect("attach"), "qrng0");
        let st = status_of(&d, "qrng0");
        assert_eq!(
            (st.serial.as_str(), st.source.as_str(), st.modules, st.board_version),
            ("171234A410", "171234A410", 3, 0x0005_0203)
        );
        assert_eq!(st.health, DeviceState::Ok);
        assert_eq!(st.ring_fill, 1000);
        assert_eq!(d.take_blocking("qrng0", 300, None).expect("take").bytes, pattern(0, 300));
        assert!(matches!(d.attach(&path), Err(DispenseError::AlreadyAttached(_))));
        // A bridge restart: nothing is served twice, nothing skipped.
        d.detach("qrng0");
        d.attach(&path).expect("re-attach");
        assert_eq!(d.take_blocking("qrng0", 700, None).expect("take").bytes, pattern(300, 700));
        p.set_health(Health::Failed, Reason::RepetitionCount);
        wait_until("failed", || d.health("qrng0").ok() == Some(DeviceState::Failed));
        match d.try_take("qrng0", 1) {
            Err(DispenseError::Failed { reason, .. }) => assert_eq!(reason, "repetition-count"),
            other => panic!("expected Failed, got {other:?}"),
        }
        d.shutdown();
    }

    #[test]
    fn refused_rings_give_clear_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = Dispenser::new(cfg());
        let junk = dir.path().join("junk.ring");
        std::fs::write(&junk, vec![0xA5u8; 8192]).expect("write");
        let e = d.attach(&junk).expect_err("junk refused");
        assert!(matches!(e, DispenseError::Ring(_)), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("junk.ring") && msg.contains("magic"), "{msg}");
        let missing = dir.path().join("nope.ring");
        assert!(matches!(d.attach(&missing), Err(DispenseError::Ring(_))));
        // Another consumer already holds the ring.
        let path = dir.path().join("qrng1.ring");
        let _p = producer(&path);
        let _other = Consumer::open(&path).expect("first consumer");
        assert!(matches!(d.attach(&path), Err(DispenseError::Ring(_))));
        assert!(d.devices().is_empty(), "nothing attached by a refused ring");
    }

    #[test]
    fn dead_producer_is_degraded_but_still_serves_its_ring() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("qrng0.ring");
        let mut p = producer(&path);
        p.write(&pattern(0, 64)).expect("write");
        drop(p); // the driver dies; its heartbeat ages
        let d = Dispenser::new(DispenserConfig {
            heartbeat_timeout: Duration::from_millis(50),
            ..cfg()
        });
        d.attach(&path).expect("attach");
        wait_until("degraded", || d.health("qrng0").ok() == Some(DeviceState::Degraded));
        assert_eq!(d.take_blocking("qrng0", 64, None).expect("take").bytes, pattern(0, 64));
        d.shutdown();
    }
}
