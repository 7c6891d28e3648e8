//! The QEMU guest tests (`tests/vm/run`, see docs/vm-tests.md), run as part of `cargo test`:
//! the real VFIO and UIO paths against QEMU's edu device, and virtio-rng guests fed by the bridge
//! (QEMU's rng-egd backend on the EGD socket, rng-random on the FUSE device file). Without QEMU
//! the tests say so and skip, unless `QRNG_REQUIRE_TOOLS=1` (set by `.ci/run`), in which case the
//! script installs what it needs.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use qrng_e2e::{fuse_available, reference_stream, start_driver, wait_until, Bridge};

/// One guest suite at a time: each boots QEMU under TCG, which takes a whole core.
static SERIAL: Mutex<()> = Mutex::new(());

fn qemu_or_skip(test: &str) -> bool {
    let have_qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var("QRNG_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
    if !have_qemu && !required {
        eprintln!("SKIP {test}: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86, or run .ci/run)");
        return false;
    }
    true
}

/// Runs `tests/vm/run` with `args` and `env`; asserts its summary says PASS; returns stdout.
fn run_script(args: &[&str], env: &[(&str, &Path)]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/run");
    let mut cmd = Command::new(&script);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tests/vm/run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success() && last.starts_with("vm-tests: PASS") && last.contains(" 0 failed"),
        "tests/vm/run {args:?} failed ({}); summary: {last}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    println!("{last}");
    stdout
}

#[test]
fn vm_vfio_and_uio_paths_in_qemu_guests() {
    if !qemu_or_skip("vm tests") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    run_script(&[], &[]);
}

/// The bytes a guest printed on its `HWRNG <mode> <hex>` line.
fn guest_bytes(stdout: &str, mode: &str) -> Vec<u8> {
    let tag = format!("HWRNG {mode} ");
    let hex = stdout
        .lines()
        .find_map(|l| Some(l.split_once(&tag)?.1.trim()))
        .unwrap_or_else(|| panic!("no {tag} line in:\n{stdout}"));
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// Splits `got` into runs that each are a contiguous piece of `reference` (at least 8 bytes:
/// the window the index is keyed on); returns their spans in the reference.
fn runs_in(reference: &[u8], index: &HashMap<u64, usize>, got: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < got.len() {
        let w = got.get(i..i + 8).unwrap_or_else(|| {
            panic!("a tail of {} bytes at {i} is too short to place", got.len() - i)
        });
        let at = *index
            .get(&u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .unwrap_or_else(|| panic!("guest bytes at offset {i} are not in the card's stream"));
        let len = got[i..].iter().zip(&reference[at..]).take_while(|(a, b)| a == b).count();
        spans.push((at, at + len));
        i += len;
    }
    spans
}

/// The value of a counter line `name` (with its labels) on a /metrics page.
fn counter(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} on the metrics page"))
}

#[test]
fn vm_virtio_rng_guests_read_the_card_and_the_feeder_readies_the_crng() {
    if !qemu_or_skip("virtio-rng vm tests") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile::tempdir().expect("tempdir");
    let rings = tmp.path().join("rings");
    std::fs::create_dir(&rings).expect("ring dir");
    // A fixed-seed card: the stream the bridge serves is this reference, byte for byte (the
    // driver pauses reading when the ring is full, so nothing is skipped).
    let spec = "sim:pcie-16m?rate=0&seed=23";
    let reference = reference_stream(spec, 2 << 20, tmp.path());
    let mut index = HashMap::new();
    for (i, w) in reference.windows(8).enumerate() {
        index.entry(u64::from_le_bytes(w.try_into().expect("8 bytes"))).or_insert(i);
    }
    let _driver = start_driver(spec, &rings.join("qrng0.ring"));
    let sock = tmp.path().join("egd.sock");
    let egd_arg = format!("unix:{}", sock.display());
    let fuse = fuse_available("vm_virtio_rng (rng-random on the FUSE device file)");
    let mut args = vec!["--egd-listen", egd_arg.as_str()];
    if !fuse {
        args.push("--no-fuse");
    }
    let bridge = Bridge::start(&rings, &tmp.path().join("dev"), &args);
    wait_until("qrng0 serves", || {
        (bridge.device("qrng0")?["health"].as_str()? == "ok").then_some(())
    });
    let file = bridge.file("qrng0");
    let mut env = vec![("VM_EGD_SOCKET", sock.as_path())];
    if fuse {
        env.push(("VM_RNG_FILE", file.as_path()));
    }
    let stdout = run_script(&["virtio"], &env);

    let mut modes = vec!["egd"];
    if fuse {
        modes.push("rngfile");
    }
    let mut spans = Vec::new();
    let mut total = 0;
    for mode in &modes {
        let got = guest_bytes(&stdout, mode);
        assert!(!got.is_empty(), "{mode}: the guest read nothing");
        total += got.len();
        spans.extend(runs_in(&reference, &index, &got));
    }
    // Exactly once: no byte of the stream went to both guests, or twice to one.
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "served twice: {:?} overlaps {:?}", pair[0], pair[1]);
    }
    let page = bridge.get("/metrics").expect("GET /metrics").body;
    let page = String::from_utf8(page).expect("UTF-8");
    let egd_read = guest_bytes(&stdout, "egd").len() as u64;
    assert!(counter(&page, "qrng_egd_served_bytes_total") >= egd_read);
    assert!(counter(&page, "qrng_entropy_served_bytes_total{device=\"qrng0\"}") >= total as u64);
}
