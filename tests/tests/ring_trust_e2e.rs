//! End-to-end: the ring is a trust boundary (docs/ring-abi.md, "Trust model"). The real
//! qrng-bridge binary (without FUSE, so no root needed) against rings this test produces: an
//! untrusted ring is refused at start and by hot-plug, and a ring truncated while the bridge
//! serves it fails the device without killing the bridge.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use qrng_e2e::{binaries, free_addr, wait_until, Bridge};
use qrng_ring::{Health, Identity, Producer, Reason, RingOptions};

/// One bridge at a time keeps a 2-core machine responsive.
static SERIAL: Mutex<()> = Mutex::new(());

struct Dirs {
    _tmp: tempfile::TempDir,
    rings: PathBuf,
    mount: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rings = tmp.path().join("rings");
    std::fs::create_dir(&rings).expect("ring dir");
    std::fs::set_permissions(&rings, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mount = tmp.path().join("dev");
    Dirs { rings, mount, _tmp: tmp }
}

/// A ring with `n` pattern bytes, health OK, beating.
fn producer(path: &Path, n: usize) -> Producer {
    let mut p = Producer::open(path, &RingOptions { capacity: 1 << 20, mode: 0o640, group: None })
        .expect("producer");
    p.set_identity(&Identity { serial: "171234A410".into(), ..Identity::default() });
    p.set_health(Health::Ok, Reason::None);
    p.heartbeat();
    assert_eq!(p.write(&qrng_ring::pattern::bytes(0, n)).expect("write"), n);
    p
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn health(b: &Bridge, name: &str) -> Option<(String, String)> {
    let d = b.device(name)?;
    Some((d["health"].as_str()?.to_owned(), d["reason"].as_str()?.to_owned()))
}

/// Runs `qrng-bridge --ring RING` (HTTP only) to its exit; its status and stderr.
fn bridge_on(ring: &std::path::Path) -> (std::process::Output, String) {
    let out = Command::new(&binaries().bridge)
        .args(["--no-fuse", "--no-watch", "--listen", &free_addr().to_string()])
        .arg("--ring")
        .arg(ring)
        .stdin(Stdio::null())
        .output()
        .expect("run qrng-bridge");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

#[test]
fn e2e_bridge_given_a_ring_others_can_write_exits_naming_the_path_and_the_fix() {
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = dirs();
    let ring = d.rings.join("qrng0.ring");
    let _p = producer(&ring, 4096);
    chmod(&ring, 0o666);
    let (out, err) = bridge_on(&ring);
    assert!(!out.status.success(), "the bridge must not serve an untrusted ring:\n{err}");
    assert!(err.contains(&format!("chmod go-w {}", ring.display())), "{err}");

    // The same ring in a directory others can write, once the file itself is fixed.
    chmod(&ring, 0o640);
    chmod(&d.rings, 0o777);
    let (out, err) = bridge_on(&ring);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("chmod go-w {}", d.rings.display())), "{err}");
}

#[test]
fn e2e_hot_plug_attaches_nothing_from_an_untrusted_ring_and_logs_why() {
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = dirs();
    let ring = d.rings.join("qrng0.ring");
    let _p = producer(&ring, 4096);
    chmod(&ring, 0o646);
    let bridge = Bridge::start(&d.rings, &d.mount, &["--no-fuse"]);
    wait_until("the refusal is logged", || {
        let log = bridge.proc.log();
        (log.contains("ring not attached") && log.contains("chmod go-w")).then_some(())
    });
    assert!(bridge.device("qrng0").is_none(), "nothing attached");
    assert!(bridge.http_bytes("qrng0", 32).is_err(), "nothing served");
    // Fixed: the next rescan attaches it.
    chmod(&ring, 0o640);
    wait_until("attached once fixed", || bridge.device("qrng0"));
    assert_eq!(bridge.http_bytes("qrng0", 32).expect("served"), qrng_ring::pattern::bytes(0, 32));
}

#[test]
fn e2e_a_ring_truncated_while_serving_fails_the_device_and_the_bridge_carries_on() {
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = dirs();
    let ring = d.rings.join("qrng0.ring");
    let other = d.rings.join("qrng1.ring");
    let _p = producer(&ring, 1 << 20);
    let _q = producer(&other, 4096);
    let ring_arg = ring.to_string_lossy().into_owned();
    let other_arg = other.to_string_lossy().into_owned();
    let mut bridge = Bridge::start(
        &d.rings,
        &d.mount,
        // The test's producers beat once: keep them fresh for the whole test.
        &[
            "--no-fuse",
            "--no-watch",
            "--heartbeat-timeout-ms",
            "3600000",
            "--ring",
            &ring_arg,
            "--ring",
            &other_arg,
        ],
    );
    wait_until("ok", || (health(&bridge, "qrng0")?.0 == "ok").then_some(()));
    {
        // Clients keep reading while the file is cut to nothing under the bridge's mapping.
        let stop = Arc::new(AtomicBool::new(false));
        let addr = bridge.addr;
        let reader = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut ok = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let path = "/api/v1/random/bytes?length=4096&format=binary&device=qrng0";
                    match qrng_e2e::get(addr, path) {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                ok
            })
        };
        wait_until("bytes flow", || bridge.http_bytes("qrng0", 32).ok());
        std::fs::OpenOptions::new().write(true).open(&ring).expect("open").set_len(0).expect("cut");
        wait_until("failed", || (health(&bridge, "qrng0")?.0 == "failed").then_some(()));
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("reader");
        assert!(!bridge.proc.exited(), "the bridge survived; log:\n{}", bridge.proc.log());
    }
    let (_, reason) = health(&bridge, "qrng0").expect("listed");
    assert!(reason.starts_with("ring-truncated"), "{reason}");
    eprintln!("device reason: {reason}");
    // Nothing more from the cut ring; the other device still serves.
    for _ in 0..20 {
        assert_eq!(bridge.http_bytes("qrng0", 32), Err(503));
    }
    assert_eq!(bridge.http_bytes("qrng1", 32).expect("other"), qrng_ring::pattern::bytes(0, 32));
    assert!(bridge.terminate(), "clean exit; log:\n{}", bridge.proc.log());
}
