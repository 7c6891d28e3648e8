//! A card that stops delivering, end to end: `quantis-driver` on a simulated card with
//! `fault=stall` (the source stops, every status bit stays good) at the model's real rate, and
//! `qrng-bridge` showing the ring's reason `no-data` on `/health`. The slowest and the fastest
//! model: the data watchdog's limit scales with the rate (docs/entropy.md, "Data watchdog"). The
//! time from the stall to `no-data` on `/health` is printed (`--nocapture`), not asserted.

use std::sync::Mutex;
use std::time::Instant;

use qrng_e2e::{fuse_available, start_driver, wait_until, Bridge};

/// The drivers run at real rates; one at a time keeps a 2-core machine responsive.
static SERIAL: Mutex<()> = Mutex::new(());

/// The first device of `/health`: (health, reason).
fn health(b: &Bridge) -> Option<(String, String)> {
    let r = b.get("/health").ok()?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    let d = &v["devices"][0];
    Some((d["health"].as_str()?.to_owned(), d["reason"].as_str()?.to_owned()))
}

#[test]
fn e2e_a_stalled_card_shows_no_data_on_health() {
    if !fuse_available("e2e_a_stalled_card_shows_no_data_on_health") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Each stall starts after about 2 s of data at the model's real rate (later if the client
    // reads slower: the simulated source only runs ahead of the reader by its buffers).
    for (model, rate, seed) in [("pcie-4m", 500_000u64, 1), ("pcie-240m", 30_000_000, 2)] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rings = tmp.path().join("rings");
        std::fs::create_dir(&rings).expect("ring dir");
        let spec = format!("sim:{model}?seed={seed}&fault=stall&fault-after={}", 2 * rate);
        let mut driver = start_driver(&spec, &rings.join("qrng0.ring"));
        let bridge = Bridge::start(&rings, &tmp.path().join("dev"), &[]);
        wait_until(&format!("{model}: ok on /health"), || {
            (health(&bridge)?.0 == "ok").then_some(())
        });
        // The stall's onset, as the bridge sees it: the last time raw_bytes_read moved.
        let mut raw = 0;
        let mut moved = Instant::now();
        let (health, reason) = wait_until(&format!("{model}: no-data on /health"), || {
            // Keep a client reading, as a service would, so the ring does not stay full.
            let _ = bridge.http_bytes("qrng0", 1 << 20);
            let now = bridge.device("qrng0")?["raw_bytes_read"].as_u64()?;
            if now != raw {
                (raw, moved) = (now, Instant::now());
            }
            let h = health(&bridge)?;
            (h.1 != "none").then_some(h)
        });
        assert_eq!((health.as_str(), reason.as_str()), ("failed", "no-data"), "{model}");
        let log = driver.log();
        let silent = log.split("no bytes for ").nth(1).and_then(|t| t.split(" ms").next());
        println!(
            "{model}: no-data on /health {} ms after raw_bytes_read last moved; the driver's alarm \
             came after {} ms without a byte",
            moved.elapsed().as_millis(),
            silent.unwrap_or("?")
        );
        assert!(driver.terminate(), "{model}: driver exits cleanly; log:\n{}", driver.log());
    }
}
