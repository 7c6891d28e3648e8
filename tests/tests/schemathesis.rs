//! The bridge against its own OpenAPI document: schemathesis (property-based API testing) with
//! `--checks all` against a real `qrng-bridge` on a simulated card.
//!
//! schemathesis is installed with pip into a virtual environment under `target/` on first use
//! (pinned: [`VERSION`]). Where it cannot be installed the test is skipped with the reason,
//! except in CI (`CI` set, or `QRNG_REQUIRE_TOOLS=1`), where that is a failure. What
//! schemathesis is told besides `--checks all` (one check excluded, one status list widened),
//! and why, is in `tests/schemathesis/schemathesis.toml` and [`EXCLUDED`].

use std::path::{Path, PathBuf};
use std::process::Command;

use qrng_e2e::{start_driver, Bridge};

/// The schemathesis release the test runs (and installs).
const VERSION: &str = "4.32.5";

/// Fixed data generation, so a failure reproduces: the seed and the examples per operation
/// (about 600 requests in all; a few seconds against the bridge).
const SEED: &str = "20261204";
const MAX_EXAMPLES: &str = "100";

/// Checks excluded by name. `positive_data_acceptance`: two rules tie parameters together,
/// which an OpenAPI parameter list cannot express (`min ≤ max` on /api/v1/random/integers;
/// `size` required with `type=hex16` on /API/jsonI.php). Both are stated in the parameter
/// descriptions and answered 400 `invalid_parameter`; schemathesis, drawing each parameter on
/// its own, sends min > max or hex16 without size as valid data and expects 2xx.
const EXCLUDED: &str = "positive_data_acceptance";

/// Whether a missing tool must fail the test: in CI (`CI` set and not `false`/`0`) and under
/// `QRNG_REQUIRE_TOOLS=1` (set by `.ci/run`).
fn required() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    ci || std::env::var("QRNG_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// `target/` of this build (the test runs from `target/<profile>/deps/`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors().nth(3).expect("target directory").to_path_buf()
}

/// The schemathesis executable, installing it first if needed; Err(why) when it cannot be.
fn schemathesis() -> Result<PathBuf, String> {
    let venv = target_dir().join(format!("schemathesis-{VERSION}"));
    let bin = venv.join("bin/schemathesis");
    let installed = |bin: &Path| {
        Command::new(bin).arg("--version").output().is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(VERSION)
        })
    };
    if installed(&bin) {
        return Ok(bin);
    }
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    };
    let _ = std::fs::remove_dir_all(&venv);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv (Debian: apt-get install python3-venv)",
    )?;
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("schemathesis=={VERSION}")),
        "pip install schemathesis",
    )?;
    if installed(&bin) {
        Ok(bin)
    } else {
        Err(format!("{} does not run after installing", bin.display()))
    }
}

#[test]
fn schemathesis_finds_nothing_the_spec_can_express() {
    let st = match schemathesis() {
        Ok(st) => st,
        Err(why) if required() => {
            panic!("schemathesis cannot be installed (required in CI): {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED schemathesis_finds_nothing_the_spec_can_express: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let rings = tmp.path().join("rings");
    std::fs::create_dir(&rings).expect("ring dir");
    let _driver = start_driver("sim:pcie-16m?seed=15", &rings.join("qrng0.ring"));
    // Small limits, so schemathesis reaches them (413) with few examples; 4096 bytes and 100
    // values per request keep every answer small.
    let args = ["--no-fuse", "--max-bytes", "4096", "--max-count", "100"];
    let bridge = Bridge::start(&rings, &tmp.path().join("dev"), &args);
    qrng_e2e::wait_until("the card is ok", || {
        (bridge.device("qrng0")?["health"] == "ok").then_some(())
    });
    // The document from a file: given its URL, schemathesis leaves that operation out.
    let doc = bridge.get("/api/v1/openapi.json").expect("GET /api/v1/openapi.json");
    assert_eq!(doc.status, 200);
    let spec = tmp.path().join("openapi.json");
    std::fs::write(&spec, &doc.body).expect("write the document");
    let doc: serde_json::Value = serde_json::from_slice(&doc.body).expect("JSON");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis/schemathesis.toml");
    let out = Command::new(&st)
        .current_dir(tmp.path())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(&spec)
        .arg("--url")
        .arg(format!("http://{}", bridge.addr))
        .args(["--checks", "all", "--exclude-checks", EXCLUDED])
        .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES])
        .args(["--workers", "1", "--no-color", "--generation-database", "none"])
        .args(["--request-timeout", "10"])
        .output()
        .expect("run schemathesis");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    // It did test every operation of the document.
    let ops = doc["paths"].as_object().expect("paths").len();
    assert!(text.contains(&format!("Tested: {ops}")), "not every operation was tested:\n{text}");
}
