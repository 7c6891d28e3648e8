//! The `quantis-driver` binary end to end on simulated cards: bytes flow into the ring with the
//! status line kept current, faults fail closed, an unplugged card stops the daemon cleanly,
//! SIGTERM marks the ring STOPPED, a second producer is refused and a restart keeps unread bytes.

use qrng_e2e::Proc;
use qrng_ring::{Consumer, Health, Reason, StatusSnapshot};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_quantis-driver");

/// Starts the driver binary on `device` and `ring` (log next to the ring; killed if dropped running).
fn start(device: &str, ring: &Path, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["--device", device, "--ring"]).arg(ring).args(["--heartbeat-ms", "50"]).args(extra);
    Proc::spawn("quantis-driver", cmd, ring.with_extension("driver.log"))
}

/// Opens the ring as soon as the driver has created it.
fn attach(ring: &Path) -> Consumer {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Consumer::open(ring) {
            Ok(mut c) => {
                // These tests inspect what the driver published, also while it reports FAILED.
                c.set_health_gate(false);
                return c;
            }
            Err(e) if Instant::now() > deadline => panic!("ring never appeared: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Polls the status until `pred` holds (30 s limit: a hang is a failure, not a timing assertion).
fn wait_status(c: &Consumer, what: &str, pred: impl Fn(&StatusSnapshot) -> bool) -> StatusSnapshot {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = c.status().expect("status");
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last status {s:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_exact(c: &mut Consumer, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < n {
        got += c.read(&mut buf[got..]).expect("read");
        assert!(Instant::now() < deadline, "only {got} of {n} bytes arrived");
    }
    buf
}

fn ring_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("qrng0.ring")
}

/// The longest run of equal bytes: a stuck source shows up as a long run.
fn longest_run(b: &[u8]) -> usize {
    let (mut best, mut run) = (0, 0);
    for w in b.windows(2) {
        run = if w[0] == w[1] { run + 1 } else { 0 };
        best = best.max(run + 1);
    }
    best
}

#[test]
fn daemon_every_model_publishes_tested_bytes_and_stops_cleanly() {
    for (model, seed) in [("pcie-4m", 1), ("pcie-16m", 2), ("pcie-40m", 3), ("pcie-240m", 4)] {
        let dir = tempfile::tempdir().unwrap();
        let ring = ring_in(&dir);
        let d = start(&format!("sim:{model}?rate=0&seed={seed}"), &ring, &["--ring-size", "1M"]);
        let mut c = attach(&ring);
        let s = wait_status(&c, "health OK", |s| s.health == Health::Ok);
        assert_eq!(s.identity.model, model);
        assert!(s.identity.simulated, "{model}: simulated flag must be set");
        assert_eq!(s.identity.extractor, "none");
        assert!(s.params.rct_cutoff > 1 && s.params.apt_cutoff > 1, "{model}: cutoffs published");
        let units = if model.ends_with("240m") {
            0xfff
        } else if model.ends_with("40m") {
            0x3
        } else if model.ends_with("16m") {
            0xf
        } else {
            0x1
        };
        assert_eq!(s.identity.modules, units, "{model}: healthy modules/chips after start-up");
        let bytes = read_exact(&mut c, 1 << 20);
        let mut seen = [false; 256];
        bytes.iter().for_each(|&b| seen[b as usize] = true);
        assert!(seen.iter().all(|&s| s), "{model}: a MiB of random bytes holds every byte value");
        assert!(longest_run(&bytes) < 8, "{model}: no stuck run");
        let s = c.status().unwrap();
        assert!(
            s.raw_bytes_read >= s.bytes_published,
            "{model}: raw {} < published {}",
            s.raw_bytes_read,
            s.bytes_published
        );
        assert_eq!(s.health_alarms, 0, "{model}: a healthy source raised an alarm");
        let out = d.terminate_output();
        assert!(
            out.status.success(),
            "{model}: exit {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let s = c.status().unwrap();
        assert_eq!((s.health, s.reason), (Health::Stopped, Reason::Shutdown), "{model}");
    }
}

#[test]
fn daemon_stuck_source_fails_closed_and_gives_up_after_max_recoveries() {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring_in(&dir);
    let fault_after = 300_000u64;
    let d = start(
        &format!("sim:pcie-16m?rate=0&seed=5&fault=stuck0&fault-after={fault_after}"),
        &ring,
        &["--max-recoveries", "2", "--ring-size", "1M"],
    );
    let mut c = attach(&ring);
    let s = wait_status(&c, "recovery exhausted", |s| s.reason == Reason::RecoveryExhausted);
    assert_eq!(s.health, Health::Failed);
    assert!(s.health_alarms >= 3, "one alarm per failure: {}", s.health_alarms);
    // Nothing produced after the fault reached the ring: everything published predates it.
    assert!(
        s.bytes_published <= fault_after,
        "published {} > fault point {fault_after}",
        s.bytes_published
    );
    let avail = c.available().unwrap();
    let bytes = read_exact(&mut c, avail);
    assert!(longest_run(&bytes) < 8, "stuck bytes were published (run of {})", longest_run(&bytes));
    // Still alive and beating while FAILED, so clients can tell a failed source from a dead one.
    let beat = c.status().unwrap().heartbeat_ns;
    wait_status(&c, "a later heartbeat", |s| s.heartbeat_ns > beat);
    assert!(d.terminate_output().status.success());
}

#[test]
fn daemon_intermittent_fault_fails_then_recovers_to_ok() {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring_in(&dir);
    let d = start(
        "sim:pcie-16m?rate=0&seed=9&fault=stuck1&fault-after=400000&fault-for=20000",
        &ring,
        &["--ring-size", "64K"],
    );
    let mut c = attach(&ring);
    // Keep draining so the driver is never paused by a full ring; watch it fail, then come back.
    let mut buf = vec![0u8; 64 << 10];
    let mut failed_with = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let n = c.read(&mut buf).unwrap();
        assert!(longest_run(&buf[..n]) < 8, "stuck bytes reached the ring");
        let s = c.status().unwrap();
        if s.health == Health::Failed && failed_with.is_none() {
            failed_with = Some(s.reason);
        }
        if s.health == Health::Ok && failed_with.is_some() {
            break s;
        }
        assert!(Instant::now() < deadline, "never failed and recovered: {s:?}");
    };
    assert_eq!(failed_with, Some(Reason::RepetitionCount), "a stuck source trips the RCT first");
    assert_eq!(s.health_alarms, 1);
    assert_eq!(s.reason, Reason::None);
    assert!(d.terminate_output().status.success());
}

#[test]
fn daemon_chip_dma_error_once_fails_then_restarts_the_engine_and_serves_again() {
    chip_dma_error_once("");
}

#[test]
fn daemon_chip_recovers_with_idq_startup_and_shutdown_delays() {
    // The restart waits IDQ's 1.1 s shutdown and the card's 500 ms start-up.
    chip_dma_error_once("&startup-delay=500ms&shutdown-delay=1s");
}

fn chip_dma_error_once(extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring_in(&dir);
    let d = start(
        &format!(
            "sim:pcie-240m?rate=0&seed=10&fault=dma-error&fault-after=4194304&fault-for=1{extra}"
        ),
        &ring,
        &["--ring-size", "1M"],
    );
    let mut c = attach(&ring);
    // Keep draining; watch the alarm, then the restarted engine pass the start-up tests.
    let mut buf = vec![0u8; 256 << 10];
    let mut failed_with = None;
    let mut after_ok = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let n = c.read(&mut buf).unwrap();
        let s = c.status().unwrap();
        if s.health == Health::Failed && failed_with.is_none() {
            failed_with = Some(s.reason);
        }
        if failed_with.is_some() && s.health == Health::Ok {
            after_ok += n;
            if after_ok >= 2 << 20 {
                break s;
            }
        }
        assert!(Instant::now() < deadline, "never failed, recovered and served: {s:?}");
    };
    assert_eq!(failed_with, Some(Reason::DmaError), "{extra}");
    assert_eq!(s.health_alarms, 1, "{extra}: one error, one alarm");
    assert_eq!(s.reason, Reason::None);
    let out = d.terminate_output();
    assert!(out.status.success(), "{extra}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn daemon_unplugged_card_stops_with_device_gone() {
    for model in ["pcie-4m", "pcie-240m"] {
        let dir = tempfile::tempdir().unwrap();
        let ring = ring_in(&dir);
        let d = start(
            &format!("sim:{model}?rate=0&seed=6&fault=unplug&fault-after=2000000"),
            &ring,
            &[],
        );
        let c = attach(&ring);
        let out = d.wait_output();
        assert!(out.status.success(), "{model}: unplug is a clean exit: {:?}", out.status);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("gone"), "{model}: the log says the card is gone: {log}");
        let s = c.status().unwrap();
        assert_eq!((s.health, s.reason), (Health::Stopped, Reason::DeviceGone), "{model}");
    }
}

#[test]
fn daemon_second_producer_is_refused_and_restart_keeps_unread_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring_in(&dir);
    let first = start("sim:pcie-4m?rate=0&seed=7", &ring, &["--ring-size", "64K"]);
    let c = attach(&ring);
    let s = wait_status(&c, "a full ring", |s| s.health == Health::Ok && s.fill() == s.capacity);
    let epoch = s.epoch;
    let second = Command::new(BIN)
        .args(["--device", "sim:pcie-4m?rate=0", "--ring"])
        .arg(&ring)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("another producer is attached"), "clear refusal: {msg}");
    assert!(first.terminate_output().status.success());
    let before = c.status().unwrap();
    drop(c);
    let again = start("sim:pcie-4m?rate=0&seed=8", &ring, &[]);
    let c = attach(&ring);
    let s = wait_status(&c, "the restarted producer", |s| s.epoch == epoch + 1);
    assert_eq!(s.capacity, 64 << 10, "the file's capacity is kept");
    assert_eq!(s.head, before.head, "nothing was consumed or dropped by the restart");
    assert!(s.tail >= before.tail, "unread bytes kept");
    assert!(again.terminate_output().status.success());
}

#[test]
fn daemon_ring_truncated_under_it_exits_with_an_error_not_sigbus() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let ring = ring_in(&dir);
    let d = start("sim:pcie-4m?rate=0&seed=9", &ring, &["--ring-size", "64K"]);
    let c = attach(&ring);
    wait_status(&c, "publishing", |s| s.health == Health::Ok);
    drop(c);
    std::fs::OpenOptions::new().write(true).open(&ring).unwrap().set_len(0).unwrap();
    let out = d.wait_output();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "killed by a signal: {:?}\n{log}", out.status);
    assert!(!out.status.success(), "a broken ring is an error exit: {log}");
    assert!(log.contains("truncated under its mapping"), "the log says why: {log}");
    assert_eq!(std::fs::metadata(&ring).unwrap().len(), 0, "nothing was published to the file");
}

#[test]
fn daemon_bad_arguments_are_clear_errors_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring_in(&dir);
    for (args, want) in [
        (vec!["--device", "sim:pcie-99m"], "unknown simulator model"),
        (vec!["--device", "pci:00:01.0"], "unknown scheme"),
        (vec!["--device", "sim:pcie-4m", "--ring-size", "3M"], "power of two"),
        (vec!["--device", "sim:pcie-4m", "--ring-size", "2G"], "larger than the largest ring"),
        (vec!["--device", "sim:pcie-4m", "--ring-mode", "666"], "group or others write"),
        (
            vec!["--device", "sim:pcie-4m", "--extractor", "matrix:/nonexistent/m.bin"],
            "/nonexistent/m.bin",
        ),
        (vec!["--device", "vfio:0000:7f:1f.7"], "0000:7f:1f.7"),
    ] {
        let out = Command::new(BIN).args(&args).arg("--ring").arg(&ring).output().unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(msg.contains(want), "{args:?}: expected {want:?} in {msg}");
        assert!(!msg.contains("panicked"), "{args:?}: {msg}");
        assert!(!ring.exists(), "{args:?}: a refused start must not create the ring");
    }
}
