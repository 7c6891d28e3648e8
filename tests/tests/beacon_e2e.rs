//! The randomness beacon end to end: the real `qrng-bridge` on a simulated card publishes a pulse
//! every second; `qrng-beacon-verify` checks the chain over HTTP and from the database, before
//! and after a restart (which continues the chain).

use std::path::Path;
use std::process::Command;

use qrng_e2e::{binaries, start_driver, wait_until, Bridge};

/// The last pulse's index in chain 1 (None before the first pulse).
fn last_index(bridge: &Bridge) -> Option<u64> {
    let r = bridge.get("/beacon/2.0/pulse/last").ok().filter(|r| r.status == 200)?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("pulse JSON");
    assert_eq!(v["pulse"]["chainIndex"], 1, "one chain: {v}");
    v["pulse"]["pulseIndex"].as_u64()
}

fn verify(args: &[&str]) -> std::process::Output {
    let exe = binaries().bridge.with_file_name("qrng-beacon-verify");
    Command::new(exe).args(args).output().expect("run qrng-beacon-verify")
}

fn assert_verifies(args: &[&str]) {
    let out = verify(args);
    assert!(
        out.status.success(),
        "qrng-beacon-verify {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start(rings: &Path, tmp: &Path, key: &Path, db: &Path) -> Bridge {
    let s = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    let (key, db) = (s(key), s(db));
    Bridge::start(
        rings,
        &tmp.join("dev"),
        // The pulses' uri base stays the same across the restart (the port does not).
        &[
            "--no-fuse",
            "--beacon-key",
            &key,
            "--beacon-db",
            &db,
            "--beacon-period",
            "1",
            "--beacon-url",
            "http://beacon.test",
        ],
    )
}

#[test]
fn e2e_beacon_publishes_a_chain_that_verifies_across_a_restart() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    let rings = tmp.path().join("rings");
    std::fs::create_dir(&rings).expect("ring dir");
    let _driver = start_driver("sim:pcie-4m?seed=11", &rings.join("qrng0.ring"));
    let key = tmp.path().join("beacon-key.pem");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../bridge/src/beacon/testdata/test-key-a.pem");
    std::fs::copy(&fixture, &key).expect("test key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let db = tmp.path().join("beacon.sqlite");

    let mut bridge = start(&rings, tmp.path(), &key, &db);
    wait_until("three pulses", || last_index(&bridge).filter(|i| *i >= 3));
    let url = format!("http://{}", bridge.addr);
    assert_verifies(&["--url", &url]);
    assert!(bridge.terminate(), "the bridge stops cleanly");

    // The self-signed certificate is kept next to the database: pin it.
    let cert = tmp.path().join("beacon-cert.pem");
    let (db_s, cert_s) = (db.to_str().expect("utf-8"), cert.to_str().expect("utf-8"));
    assert_verifies(&["--db", db_s, "--certificate", cert_s]);

    // A restart continues chain 1 from the database.
    let bridge = start(&rings, tmp.path(), &key, &db);
    let before = last_index(&bridge).expect("pulses kept");
    wait_until("two more pulses", || last_index(&bridge).filter(|i| *i >= before + 2));
    let url = format!("http://{}", bridge.addr);
    assert_verifies(&["--url", &url, "--certificate", cert_s]);

    // Pinned to a certificate of another key: refused, exit status 1.
    let other = tmp.path().join("other-cert.pem");
    let nist = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../bridge/src/beacon/testdata/nist-2018-certificate.pem");
    std::fs::copy(nist, &other).expect("copy");
    let out = verify(&["--url", &url, "--certificate", other.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}
