//! The SIGBUS handler in a child process: a consumer whose ring is truncated while it reads
//! survives, and a SIGBUS outside any ring mapping still kills the process as it would without
//! the handler (the handler restores the default action and re-raises).

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use qrng_ring::{Consumer, Error, Health, Producer, Reason, RingOptions};

const ROLE: &str = "QRNG_SIGBUS_CHILD";

/// Runs this test binary again as the child `role`, running only `test`.
fn child(test: &str, role: &str, dir: &Path) -> std::process::Output {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env("QRNG_SIGBUS_DIR", dir)
        .output()
        .expect("run the child")
}

fn ring(dir: &Path) -> (Producer, Consumer) {
    let path = dir.join("qrng0.ring");
    let mut p = Producer::open(&path, &RingOptions { capacity: 1 << 16, ..RingOptions::default() })
        .expect("producer");
    p.write(&qrng_ring::pattern::bytes(0, 1 << 15)).expect("write");
    p.set_health(Health::Ok, Reason::None);
    let c = Consumer::open(&path).expect("consumer");
    (p, c)
}

fn truncate(path: &Path) {
    std::fs::OpenOptions::new().write(true).open(path).expect("open").set_len(0).expect("cut");
}

#[test]
fn sigbus_in_a_ring_is_survived_by_a_child_consumer() {
    match std::env::var(ROLE).as_deref() {
        Ok("ring") => {
            let dir = std::path::PathBuf::from(std::env::var("QRNG_SIGBUS_DIR").expect("dir"));
            let (_p, mut c) = ring(&dir);
            let mut buf = vec![0u8; 4096];
            assert_eq!(c.read(&mut buf).expect("read"), 4096);
            truncate(&dir.join("qrng0.ring"));
            let err = c.read(&mut buf).expect_err("broken");
            assert!(matches!(err, Error::Broken { .. }), "{err}");
            println!("child survived: {err}");
        }
        Ok(_) => {}
        Err(_) => {
            let dir = tempfile::tempdir().expect("tmp");
            let out = child("sigbus_in_a_ring_is_survived_by_a_child_consumer", "ring", dir.path());
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "child: {:?}\n{text}", out.status);
            assert!(text.contains("child survived"), "{text}");
        }
    }
}

#[test]
fn sigbus_outside_any_ring_still_kills() {
    match std::env::var(ROLE).as_deref() {
        Ok("foreign") => {
            let dir = std::path::PathBuf::from(std::env::var("QRNG_SIGBUS_DIR").expect("dir"));
            // The handler is installed (a ring is mapped) ...
            let _ring = ring(&dir);
            // ... and a mapping that is not a ring's is truncated and touched.
            let path = dir.join("plain");
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .expect("plain file");
            f.set_len(1 << 16).expect("size");
            let map = memmap2::MmapOptions::new().len(1 << 16).map_raw(&f).expect("map");
            f.set_len(0).expect("cut");
            // No core file from the expected death.
            let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: setrlimit reads a valid rlimit through the pointer.
            unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
            // SAFETY: the pointer lies inside the mapping; the read is meant to fault.
            let b = unsafe { map.as_ptr().add(8192).read_volatile() };
            println!("read {b} from a truncated mapping: the fault was swallowed");
        }
        Ok(_) => {}
        Err(_) => {
            let dir = tempfile::tempdir().expect("tmp");
            let out = child("sigbus_outside_any_ring_still_kills", "foreign", dir.path());
            assert_eq!(
                out.status.signal(),
                Some(libc::SIGBUS),
                "child: {:?}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}
