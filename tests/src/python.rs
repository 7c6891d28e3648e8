//! Python clients for the end-to-end tests (the official SDKs of the protocols the bridge serves),
//! installed from PyPI into a virtual environment under the target directory, once per machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::packaging::skip;

/// A virtual environment named `name` under `target/py/` with the pinned `packages` installed
/// (`pip install` runs only when the set changes). `None` (after [`skip`], which fails the test
/// under `QRNG_REQUIRE_TOOLS=1`) when python3 with venv is not installed or pip cannot install.
pub fn venv(test: &str, name: &str, packages: &[&str]) -> Option<PathBuf> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py");
    let dir = target.join(name);
    let python = dir.join("bin/python");
    let stamp = dir.join("installed.txt");
    let want = packages.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) && python.exists() {
        return Some(python);
    }
    std::fs::create_dir_all(&target).expect("target/py");
    let made = Command::new("python3").args(["-m", "venv", "--clear"]).arg(&dir).output();
    match made {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            skip(
                test,
                &format!(
                    "python3 -m venv failed (apt-get install python3-venv): {}",
                    String::from_utf8_lossy(&o.stderr)
                ),
            );
            return None;
        }
        Err(e) => {
            skip(test, &format!("python3 is not installed ({e})"));
            return None;
        }
    }
    let pip = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(packages)
        .output()
        .expect("run pip");
    if !pip.status.success() {
        skip(
            test,
            &format!("pip install {packages:?} failed: {}", String::from_utf8_lossy(&pip.stderr)),
        );
        return None;
    }
    std::fs::write(&stamp, want).expect("venv stamp");
    Some(python)
}
