//! Scale-out: two bridges, each on its own simulated card, behind the real HAProxy with the
//! shipped configuration (`deploy/haproxy/haproxy.cfg`: HTTPS front end, health checks on
//! `/health`, 503s retried on the other bridge). Under client load over HTTPS one card fails
//! (simulator fault `unplug`); the clients must see no answer but 200, the healthy bridge must
//! take all the traffic, and no byte may be served twice across the pair.
//!
//! Needs `haproxy`, `openssl` and `curl`; without them the test is skipped with the reason,
//! except in CI (`CI` set, or `QRNG_REQUIRE_TOOLS=1`), where that is a failure.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use qrng_e2e::{
    assert_no_repeated_windows, free_addr, start_driver_sized, wait_until, Bridge, Proc,
};

/// Bytes per request: large enough that the failing card's fault comes after a short load.
const LENGTH: usize = 512;
/// Requests per curl run (curl keeps one connection for all of them).
const BATCH: usize = 40;
/// Client threads; the first speaks HTTP/1.1 to HAProxy, the others HTTP/2.
const CLIENTS: usize = 3;
/// Answers the clients collect after the failure was seen, before the test stops them.
const AFTER_FAILURE: usize = 1200;
/// The failing card: a fixed seed; `unplug` after this many noise bytes (the 1 MiB ring is full
/// after the first MiB, so the fault comes after about 0.6 MB were served from this card).
const FAILING: &str = "sim:pcie-16m?rate=0&seed=41&fault=unplug&fault-after=1600000";
const HEALTHY: &str = "sim:pcie-16m?rate=0&seed=42";

fn required() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    ci || std::env::var("QRNG_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

fn missing_tool() -> Option<&'static str> {
    [("haproxy", "-v"), ("openssl", "version"), ("curl", "--version")]
        .into_iter()
        .find(|(t, arg)| !Command::new(t).arg(arg).output().is_ok_and(|o| o.status.success()))
        .map(|(t, _)| t)
}

/// One answer as a client saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    device: String,
    body: String,
    /// Whether its batch started after the failure was seen.
    after_failure: bool,
}

/// Runs one curl over `BATCH` requests; parses what the `-w` format wrote after each body.
fn batch(url: &str, ca: &Path, http2: bool, after_failure: bool) -> Vec<Answer> {
    let mut cmd = Command::new("curl");
    cmd.arg("-sS").arg("--cacert").arg(ca).arg(if http2 { "--http2" } else { "--http1.1" });
    cmd.args(["-w", "\n@@ %{http_code} %header{x-qrng-device} @@\n"]);
    for _ in 0..BATCH {
        cmd.arg(url);
    }
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut answers = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("\n@@ ") {
        let body = rest[..i].to_owned();
        let meta_end = rest[i..].find(" @@\n").map(|j| i + j).expect("end of the -w marker");
        let meta = &rest[i + 4..meta_end];
        let (code, device) = meta.split_once(' ').unwrap_or((meta, ""));
        answers.push(Answer {
            status: code.parse().unwrap_or(0),
            device: device.to_owned(),
            body,
            after_failure,
        });
        rest = &rest[meta_end + 4..];
    }
    if answers.len() < BATCH {
        // curl stopped early (a connection failed): count the rest as failed answers.
        let why = String::from_utf8_lossy(&out.stderr).into_owned();
        answers.extend((answers.len()..BATCH).map(|_| Answer {
            status: 0,
            device: String::new(),
            body: why.clone(),
            after_failure,
        }));
    }
    answers
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// The shipped configuration with the test's port, certificate and back ends; each replaced
/// text must occur exactly once, so the file tested is the file shipped.
fn haproxy_config(listen: u16, pem: &Path, backends: [std::net::SocketAddr; 2]) -> String {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy/haproxy.cfg");
    let mut cfg = std::fs::read_to_string(&shipped).expect("deploy/haproxy/haproxy.cfg");
    for (from, to) in [
        ("bind :443 ", format!("bind 127.0.0.1:{listen} ")),
        ("/etc/haproxy/certs/qrng.pem", pem.display().to_string()),
        ("server bridge1 10.0.0.11:8080 ", format!("server bridge1 {} ", backends[0])),
        ("server bridge2 10.0.0.12:8080 ", format!("server bridge2 {} ", backends[1])),
    ] {
        assert_eq!(cfg.matches(from).count(), 1, "{from:?} in {}", shipped.display());
        cfg = cfg.replace(from, &to);
    }
    cfg
}

#[test]
fn two_bridges_behind_haproxy_lose_no_request_when_a_card_fails() {
    if let Some(tool) = missing_tool() {
        let why =
            format!("`{tool}` is not installed (Debian: apt-get install haproxy openssl curl)");
        assert!(!required(), "two_bridges_behind_haproxy: {why}");
        eprintln!("SKIPPED two_bridges_behind_haproxy: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let bridge_on = |name: &str, spec: &str| {
        let rings = dir.join(format!("rings-{name}"));
        std::fs::create_dir(&rings).expect("ring dir");
        let driver = start_driver_sized(spec, &rings.join(format!("{name}.ring")), "1M");
        // Every connection comes from HAProxy's address: no per-client cap on the bridges.
        let args = ["--no-fuse", "--http-max-connections-per-client", "0"];
        let bridge = Bridge::start(&rings, &dir.join(format!("dev-{name}")), &args);
        wait_until(&format!("{name} is ok"), || {
            (bridge.device(name)?["health"] == "ok").then_some(())
        });
        (driver, bridge)
    };
    let (_failing_driver, failing) = bridge_on("qrng0", FAILING);
    let (_healthy_driver, healthy) = bridge_on("qrng1", HEALTHY);

    let (key, cert, pem) = (dir.join("key.pem"), dir.join("cert.pem"), dir.join("qrng.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    let both = [std::fs::read(&cert).expect("cert"), std::fs::read(&key).expect("key")].concat();
    std::fs::write(&pem, both).expect("write the certificate bundle");

    let port = free_addr().port();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config(port, &pem, [failing.addr, healthy.addr])).expect("cfg");
    let check = Command::new("haproxy").arg("-c").arg("-f").arg(&cfg).output().expect("haproxy -c");
    assert!(check.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&check.stderr));
    let mut cmd = Command::new("haproxy");
    cmd.arg("-f").arg(&cfg).arg("-db");
    let haproxy = Proc::spawn("haproxy", cmd, dir.join("haproxy.log"));

    // The certificate names 127.0.0.1 (subjectAltName), so curl verifies it.
    let url = format!("https://127.0.0.1:{port}/api/v1/random/bytes?length={LENGTH}");
    wait_until("HAProxy answers over HTTPS", || {
        let a = batch(&url, &cert, true, false);
        a.iter().any(|a| a.status == 200).then_some(())
    });

    let failed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let after = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (failed, stop, after, answers) =
                (failed.clone(), stop.clone(), after.clone(), answers.clone());
            let (url, cert) = (url.clone(), cert.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let seen = failed.load(Ordering::SeqCst);
                    let got = batch(&url, &cert, i > 0, seen);
                    if seen {
                        after.fetch_add(got.len(), Ordering::Relaxed);
                    }
                    answers.lock().expect("answers").extend(got);
                }
            })
        })
        .collect();
    wait_until("the failing card fails under load", || {
        let h = failing.device("qrng0")?["health"].as_str()?.to_owned();
        (h == "failed" || h == "stopped").then_some(())
    });
    failed.store(true, Ordering::SeqCst);
    wait_until("the clients go on after the failure", || {
        (after.load(Ordering::Relaxed) >= AFTER_FAILURE).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    drop(haproxy);
    // httplog's connection counters end in the retries: `+N` when the request was redispatched
    // to another server after a retry.
    let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
    let retried = log
        .lines()
        .filter(|l| l.contains("/api/v1/random/bytes"))
        .filter_map(|l| {
            l.split(' ').find(|f| {
                f.matches('/').count() == 4
                    && f.chars().all(|c| c.is_ascii_digit() || c == '/' || c == '+')
            })
        })
        .filter(|counters| counters.rsplit('/').next().is_some_and(|r| r != "0"))
        .count();

    let answers = std::mem::take(&mut *answers.lock().expect("answers"));
    let refused: Vec<_> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(
        refused.is_empty(),
        "{} of {} answers were not 200 (the first: {:?}); HAProxy log:\n{}",
        refused.len(),
        answers.len(),
        refused.first(),
        std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
    );
    let count = |dev: &str, after: bool| {
        answers.iter().filter(|a| a.device == dev && a.after_failure == after).count()
    };
    let (a_before, b_before) = (count("qrng0", false), count("qrng1", false));
    let (a_after, b_after) = (count("qrng0", true), count("qrng1", true));
    eprintln!(
        "answers before the failure: qrng0 {a_before}, qrng1 {b_before}; after: qrng0 \
         {a_after}, qrng1 {b_after}"
    );
    eprintln!("requests HAProxy retried on the other bridge: {retried}");
    assert!(a_before > 0 && b_before > 0, "both bridges served before the failure");
    assert!(retried > 0, "requests to the failed bridge were retried on the other (log:\n{log})");
    assert_eq!(a_after, 0, "the failed card served nothing");
    assert!(b_after >= AFTER_FAILURE, "the healthy bridge took all the traffic");
    // No byte served twice, across the pair and within each bridge.
    let chunks: Vec<Vec<u8>> = answers
        .iter()
        .map(|a| {
            let v: serde_json::Value = serde_json::from_str(&a.body).expect("JSON answer");
            let data = hex_decode(v["data"].as_str().expect("data"));
            assert_eq!(data.len(), LENGTH);
            data
        })
        .collect();
    assert_no_repeated_windows(&chunks);
}
