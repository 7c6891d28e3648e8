//! The dispenser over a hostile or broken ring (docs/ring-abi.md, "Trust model"): untrusted
//! owners are not attached, and a ring truncated, replaced or rewritten under it, a heartbeat
//! from the future, or bytes published after FAILED never reach a caller.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use qrng_ring::layout::{OFF_CAPACITY, OFF_HEARTBEAT, OFF_MAGIC};
use qrng_ring::{Health, Identity, Producer, Reason, RingOptions, Trust};

use super::*;

/// Status polls far apart, so that what a test checks is caught where bytes leave, not by
/// the poll; or close together, for what the poll must catch.
fn cfg(status_interval: Duration) -> DispenserConfig {
    DispenserConfig { heartbeat_timeout: Duration::from_secs(3), status_interval }
}

const NO_POLL: Duration = Duration::from_secs(3600);
const POLL: Duration = Duration::from_millis(2);

fn pattern(start: u64, len: usize) -> Vec<u8> {
    qrng_ring::pattern::bytes(start, len)
}

fn producer(path: &Path, n: usize) -> Producer {
    let mut p = Producer::open(path, &RingOptions { capacity: 1 << 16, mode: 0o640, group: None })
        .expect("producer");
    p.set_identity(&Identity { serial: "171234A410".into(), ..Identity::default() });
    p.heartbeat();
    p.set_health(Health::Ok, Reason::None);
    assert_eq!(p.write(&pattern(0, n)).expect("write"), n);
    p
}

fn poke(path: &Path, off: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open")
        .write_all_at(bytes, off)
        .expect("poke");
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    qrng_e2e::wait_until(what, || cond().then_some(()));
}

fn reason(d: &Dispenser) -> String {
    d.device("qrng0").expect("device").reason
}

#[test]
fn ring_of_an_untrusted_owner_or_mode_is_not_attached() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("qrng0.ring");
    let _p = producer(&path, 100);
    // Our own ring, but the dispenser trusts root and another user only.
    let foreign = Trust::owner(nix::unistd::geteuid().as_raw().wrapping_add(1));
    let d = Dispenser::with_ring_trust(cfg(POLL), foreign);
    if !nix::unistd::geteuid().is_root() {
        let e = d.attach(&path).expect_err("refused");
        assert!(matches!(e, DispenseError::Ring(qrng_ring::Error::Untrusted { .. })), "{e}");
    }
    // Mode 0666: anyone may write it, whoever owns it.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .expect("chmod");
    let d = Dispenser::new(cfg(POLL));
    let e = d.attach(&path).expect_err("refused");
    let msg = e.to_string();
    assert!(msg.contains(&format!("chmod go-w {}", path.display())), "{msg}");
    assert!(d.devices().is_empty(), "nothing attached");
}

#[test]
fn ring_truncated_while_serving_fails_the_device_and_serves_nothing_more() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("qrng0.ring");
    let _p = producer(&path, 4096);
    let d = Dispenser::new(cfg(NO_POLL));
    d.attach(&path).expect("attach");
    assert_eq!(d.take_blocking("qrng0", 100, None).expect("take").bytes, pattern(0, 100));
    OpenOptions::new().write(true).open(&path).expect("open").set_len(0).expect("truncate");
    // The next copy touches the truncated pages: SIGBUS, survived; the copy is discarded.
    match d.take_blocking("qrng0", 100, None) {
        Err(DispenseError::Failed { reason, .. }) => {
            assert!(reason.starts_with("ring-truncated-under-mapping"), "{reason}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(d.health("qrng0").expect("health"), DeviceState::Failed);
    assert!(d.try_take("qrng0", 1).is_err());
    assert_eq!(d.total_bytes_served(), 100);
    d.shutdown();
}

#[test]
fn ring_header_rewritten_or_file_replaced_fails_the_device_at_the_poll() {
    for (what, code) in [
        ("capacity", "ring-header-changed"),
        ("magic", "ring-header-changed"),
        ("rename", "ring-replaced"),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("qrng0.ring");
        let _p = producer(&path, 100);
        let d = Dispenser::new(cfg(POLL));
        d.attach(&path).expect("attach");
        assert_eq!(d.health("qrng0").expect("health"), DeviceState::Ok);
        match what {
            "capacity" => poke(&path, OFF_CAPACITY, &(1u64 << 20).to_le_bytes()),
            "magic" => poke(&path, OFF_MAGIC, &0u64.to_le_bytes()),
            _ => {
                let other = dir.path().join("other.ring");
                drop(producer(&other, 100));
                std::fs::rename(&other, &path).expect("rename");
            }
        }
        wait_until("failed", || d.health("qrng0").ok() == Some(DeviceState::Failed));
        assert!(reason(&d).starts_with(code), "{what}: {}", reason(&d));
        assert!(matches!(d.try_take("qrng0", 1), Err(DispenseError::Failed { .. })));
        d.shutdown();
    }
}

#[test]
fn heartbeat_ahead_of_the_clock_is_stale() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("qrng0.ring");
    let _p = producer(&path, 100);
    let ahead = qrng_ring::boottime_ns() + 3600 * 1_000_000_000;
    poke(&path, OFF_HEARTBEAT, &ahead.to_le_bytes());
    let d = Dispenser::new(cfg(POLL));
    d.attach(&path).expect("attach");
    let st = d.device("qrng0").expect("device");
    assert_eq!((st.health, st.heartbeat_stale), (DeviceState::Degraded, true));
    d.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_published_after_failed_are_not_served_before_the_poll() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("qrng0.ring");
    let mut p = producer(&path, 0);
    let d = Dispenser::new(cfg(NO_POLL));
    d.attach(&path).expect("attach");
    assert_eq!(d.health("qrng0").expect("health"), DeviceState::Ok);
    // A broken producer: FAILED, then it publishes anyway; the poll has not run since.
    p.set_health(Health::Failed, Reason::AdaptiveProportion);
    p.write(&pattern(0, 4096)).expect("write");
    for delivery in [Delivery::LendOrCopy, Delivery::Copy] {
        match d.serve(Some("qrng0"), 64, Duration::from_millis(1), delivery).await {
            Err(DispenseError::Failed { reason, .. }) => assert_eq!(reason, "adaptive-proportion"),
            other => panic!("{delivery:?}: expected Failed, got {other:?}"),
        }
    }
    let mut buf = [0u8; 64];
    assert!(matches!(d.try_take_into("qrng0", &mut buf, 1), Err(DispenseError::Failed { .. })));
    assert_eq!(d.total_bytes_served(), 0);
    assert_eq!(d.health("qrng0").expect("health"), DeviceState::Failed);
    d.shutdown();
}
