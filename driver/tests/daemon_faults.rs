//! The daemon's publish loop against simulated faults, in process (`daemon::run` on a thread):
//! the data watchdog raises `no-data` for a card that stalls with every status bit good and not
//! for a full ring; a restart that fails is one alarm with its own reason (never "read before
//! start()"); and the ring's counters add up under every simulated fault:
//! `raw_bytes_read = bytes_dropped + bytes_published` once the daemon has stopped (extractor
//! `none`, a fresh ring; docs/ring-abi.md, "Counters").

use qrng_ring::{Consumer, Health, Reason, RingOptions, StatusSnapshot};
use quantis_driver::card::{self, CardOptions};
use quantis_driver::daemon::{self, Config, Exit, DEFAULT_NO_DATA_INTERVALS};
use quantis_driver::entropy::EntropyConfig;
use quantis_driver::hw;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn config(spec: &str, ring: &Path, max_recoveries: u32) -> Config {
    Config {
        device: format!("sim:{spec}").parse().expect("sim uri"),
        ring: ring.to_owned(),
        ring_options: RingOptions { capacity: 1 << 20, ..RingOptions::default() },
        card: CardOptions::default(),
        entropy: EntropyConfig::default(),
        max_recoveries,
        heartbeat: Duration::from_millis(20),
        no_data_intervals: DEFAULT_NO_DATA_INTERVALS,
        startup_assess_bytes: 0,
    }
}

/// Runs the daemon on `spec` until `done` says so (or it exits by itself), with a consumer that
/// keeps the ring drained when `drain` is set; `watch` sees every status polled. Returns how
/// the daemon ended and the final status.
fn run_daemon(
    spec: &str,
    max_recoveries: u32,
    drain: bool,
    mut watch: impl FnMut(&StatusSnapshot),
    mut done: impl FnMut(&StatusSnapshot) -> bool,
) -> (Exit, StatusSnapshot) {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("qrng0.ring");
    let cfg = config(spec, &ring, max_recoveries);
    let stop = AtomicBool::new(false);
    /// Stops the daemon however the scope ends (a failed assertion included), so the scope's
    /// join never waits for a daemon nobody stops.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|scope| {
        let daemon = scope.spawn(|| daemon::run(&cfg, &stop));
        let _stop = StopOnDrop(&stop);
        let hang = Instant::now() + Duration::from_secs(60);
        let mut c = loop {
            match Consumer::open(&ring) {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < hang && !daemon.is_finished(), "{spec}: no ring: {e}");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        let mut buf = vec![0u8; 256 << 10];
        loop {
            if drain {
                let _ = c.read(&mut buf);
            }
            let s = c.status().expect("status");
            watch(&s);
            if done(&s) || daemon.is_finished() {
                break;
            }
            assert!(Instant::now() < hang, "{spec}: hung; last status {s:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        let exit = daemon.join().expect("daemon thread").expect("daemon ran");
        (exit, c.status().expect("final status"))
    })
}

#[test]
fn the_no_data_limit_is_n_times_the_time_for_4_kib_at_the_nominal_rate() {
    // The figures of docs/entropy.md's table, at N = 40.
    for (rate, ms) in [(500_000u64, 327.68), (2_000_000, 81.92), (5_000_000, 32.768)] {
        let got = daemon::no_data_limit(DEFAULT_NO_DATA_INTERVALS, rate).expect("on");
        assert!((got.as_secs_f64() * 1e3 - ms).abs() < 1e-6, "{rate}: {got:?}");
    }
    assert_eq!(daemon::no_data_limit(0, 500_000), None, "0 turns the watchdog off");
    assert_eq!(daemon::no_data_limit(40, 0), None, "no nominal rate, no limit");
}

#[test]
fn a_stalled_card_reads_nothing_and_reports_no_error() {
    for spec in [
        "pcie-16m?rate=0&seed=1&fault=stall&fault-after=100000",
        "pcie-40m?rate=0&seed=1&fault=stall&fault-after=100000",
    ] {
        let dev = hw::open(&format!("sim:{spec}").parse().unwrap()).unwrap();
        let mut c = card::open(dev, &CardOptions::default()).unwrap();
        c.start().unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0;
        let mut empty = 0;
        while empty < 3 {
            let n = c.read(&mut buf).expect("a stall raises no error");
            total += n;
            empty = if n == 0 { empty + 1 } else { 0 };
            assert!(total < 10 << 20, "{spec}: the source never stalled");
        }
        // What was produced (and buffered on the card) before the onset still arrives.
        assert!(total >= 100_000 - 4096, "{spec}: {total}");
    }
}

#[test]
fn a_stall_raises_no_data_then_the_card_is_reset_and_recovers() {
    // Real rates: the watchdog's limit is 40 × the time for 4 KiB (PCIe-4M 328 ms, PCIe-40M
    // 33 ms). A stall lasts as long as the source takes for fault-for bytes while it is switched
    // on (2 s and 0.2 s); each failed start-up test after a reset adds at least 50 ms of it.
    for spec in [
        "pcie-4m?seed=2&fault=stall&fault-after=200000&fault-for=1000000",
        "pcie-40m?seed=3&fault=stall&fault-after=2000000&fault-for=1000000",
    ] {
        let mut reasons = HashSet::new();
        let (_, s) = run_daemon(
            spec,
            10,
            true,
            |s| {
                if s.health == Health::Failed {
                    reasons.insert(s.reason);
                }
            },
            |s| s.health_alarms > 0 && s.health == Health::Ok,
        );
        assert_eq!(reasons, HashSet::from([Reason::NoData]), "{spec}: {s:?}");
        assert!(s.health_alarms >= 1, "{spec}");
    }
}

#[test]
fn a_warm_up_discard_is_not_a_stall() {
    // SAMPLE mode: a chip card's first 16.8 MB after every start are discarded by the card
    // layer (3.4 s at PCIe-40M's real rate), so reads return nothing meanwhile. The card is
    // delivering: no alarm may follow.
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("qrng0.ring");
    let mut cfg = config("pcie-40m?seed=7", &ring, 5);
    cfg.card.chip_mode = card::ChipMode::Sample;
    let stop = AtomicBool::new(false);
    let s = std::thread::scope(|scope| {
        let daemon = scope.spawn(|| daemon::run(&cfg, &stop));
        let hang = Instant::now() + Duration::from_secs(60);
        let s = loop {
            if let Ok(c) = Consumer::open(&ring) {
                let s = c.status().expect("status");
                if s.health != Health::Starting || Instant::now() > hang {
                    break s;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        stop.store(true, Ordering::Relaxed);
        daemon.join().expect("daemon thread").expect("daemon ran");
        s
    });
    assert_eq!((s.health, s.health_alarms), (Health::Ok, 0), "{s:?}");
}

#[test]
fn a_full_ring_is_not_a_stall() {
    // No consumer: the ring fills and the daemon stops reading. The card is not silent, the
    // daemon is just not asking; no alarm may follow, however long that lasts.
    let mut full_since = None;
    let (_, s) = run_daemon(
        "pcie-16m?rate=0&seed=4",
        5,
        false,
        |_| {},
        |s| {
            if s.fill() < s.capacity {
                return false;
            }
            full_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(1)
        },
    );
    assert_eq!((s.health, s.health_alarms), (Health::Stopped, 0), "{s:?}");
}

#[test]
fn a_failed_restart_is_one_alarm_with_its_own_reason() {
    // A module/chip that stays broken: every restart fails at start-up. One alarm for the
    // failure, one per failed restart, and the reason is the card's, never "other".
    for (spec, reason) in [
        ("pcie-40m?rate=0&seed=5&fault=module-fail&fault-after=1000000", Reason::ChipError),
        ("pcie-4m?rate=0&seed=5&fault=module-fail&fault-after=1000000", Reason::ModuleFailure),
    ] {
        let attempts = 3;
        let mut reasons = HashSet::new();
        let (_, s) = run_daemon(
            spec,
            attempts,
            true,
            |s| {
                reasons.insert(s.reason);
            },
            |s| s.reason == Reason::RecoveryExhausted,
        );
        reasons.remove(&Reason::None);
        assert_eq!(reasons, HashSet::from([reason, Reason::RecoveryExhausted]), "{spec}");
        assert_eq!(s.health_alarms, 1 + u64::from(attempts), "{spec}");
    }
}

/// When a case has seen enough.
type Done = dyn Fn(&StatusSnapshot) -> bool;

#[test]
fn counters_add_up_under_every_fault() {
    let until_alarm = |s: &StatusSnapshot| s.health_alarms > 0 && s.health != Health::Starting;
    let until_published = |s: &StatusSnapshot| s.bytes_published > 4 << 20;
    let mut cases: Vec<(String, &Done)> = Vec::new();
    for fault in
        ["stuck0", "stuck1", "repeat", "bias", "module-stuck", "drift", "module-fail", "stall"]
    {
        for model in ["pcie-16m", "pcie-40m"] {
            cases.push((
                format!("{model}?rate=0&seed=6&fault={fault}&fault-after=3000000"),
                &until_alarm,
            ));
        }
    }
    cases.push((
        "pcie-16m?rate=0&seed=6&fault=fifo-overflow&fault-after=3000000".into(),
        &until_alarm,
    ));
    cases.push(("pcie-40m?rate=0&seed=6&fault=dma-error&fault-after=3000000".into(), &until_alarm));
    cases.push(("pcie-16m?rate=0&seed=6&fault=stuck-bit&fault-after=0".into(), &until_published));
    cases.push((
        "pcie-16m?rate=0&seed=6&fault=stuck0&fault-after=3000000&fault-for=4096".into(),
        &until_published,
    ));
    for model in ["pcie-16m", "pcie-40m"] {
        cases.push((
            format!("{model}?rate=0&seed=6&fault=unplug&fault-after=3000000"),
            &until_alarm,
        ));
    }
    for (spec, done) in cases {
        let (exit, s) = run_daemon(&spec, 1, true, |_| {}, done);
        assert_eq!(
            s.raw_bytes_read,
            s.bytes_dropped + s.bytes_published,
            "{spec} ({exit:?}): raw = dropped + published; {s:?}"
        );
        assert!(s.bytes_published > 0 && s.bytes_dropped > 0, "{spec}: {s:?}");
        println!(
            "{spec}: {exit:?}, raw {} = dropped {} + published {}, alarms {}",
            s.raw_bytes_read, s.bytes_dropped, s.bytes_published, s.health_alarms
        );
    }
}
