//! The workspace's shape, as docs/architecture.md states it: the bridge builds none of the
//! driver's hardware stack, and no product source file grows past what a reader can hold.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The crates `qrng-bridge` links (normal dependencies only, each once).
fn bridge_dependencies() -> Vec<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .args(["tree", "-q", "--offline", "-p", "qrng-bridge", "-e", "normal", "--prefix", "none"])
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

#[test]
fn the_bridge_links_none_of_the_drivers_hardware_stack() {
    let deps = bridge_dependencies();
    assert!(deps.iter().any(|d| d == "qrng-ring"), "the bridge links the ring crate: {deps:?}");
    for forbidden in ["quantis-driver", "vfio-ioctls", "vfio-bindings", "vmm-sys-util", "bitvec"] {
        assert!(
            !deps.iter().any(|d| d == forbidden),
            "qrng-bridge must not link {forbidden} (the ring and its vocabulary live in qrng-ring)"
        );
    }
}

/// Product sources: every `.rs` under a crate's `src/`, except test modules.
fn product_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() {
            if name != "tests" {
                product_sources(&path, out);
            }
        } else if name.ends_with(".rs")
            && name != "tests.rs"
            && !name.ends_with("_tests.rs")
            && name != "testutil.rs"
        {
            out.push(path);
        }
    }
}

#[test]
fn no_product_source_file_exceeds_900_lines() {
    let root = workspace();
    let mut files = Vec::new();
    for krate in ["ring", "logging", "driver", "bridge", "sp800-90b"] {
        product_sources(&root.join(krate).join("src"), &mut files);
    }
    assert!(files.len() > 20, "found the sources ({} files)", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).expect("read source").lines().count();
            (n > 900).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these files along their concerns: {long:?}");
}
