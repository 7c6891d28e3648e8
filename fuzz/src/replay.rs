//! Replays a fuzz target's corpus under stable `cargo test`: included (`#[path]`) by the
//! `fuzz_corpus` tests of the ring, driver and bridge crates.

/// Runs every file of `fuzz/corpus/<target>` (seeds and any crashers found) through `run`.
pub fn replay(target: &str, run: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    for f in files {
        eprintln!("{target}: {}", f.display());
        run(&std::fs::read(&f).expect("corpus file"));
    }
}
