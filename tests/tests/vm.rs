//! The QEMU guest tests of the real VFIO and UIO paths (`tests/vm/run`, see docs/vm-tests.md),
//! run as part of `cargo test`. Without QEMU the test says so and skips, unless
//! `QRNG_REQUIRE_TOOLS=1` (set by `.ci/run`), in which case the script installs what it needs.

use std::path::Path;
use std::process::Command;

#[test]
fn vm_vfio_and_uio_paths_in_qemu_guests() {
    let have_qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var("QRNG_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
    if !have_qemu && !required {
        eprintln!("SKIP vm tests: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86, or run .ci/run)");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/run");
    let out = Command::new(&script).output().expect("run tests/vm/run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success() && last.starts_with("vm-tests: PASS") && last.contains(" 0 failed"),
        "tests/vm/run failed ({}); summary: {last}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    println!("{last}");
}
