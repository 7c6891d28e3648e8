//! The fuzz target `device_uri` (`fuzz/`), replayed on its corpus under stable `cargo test`.

#[path = "../../fuzz/src/device_uri.rs"]
mod device_uri;

/// Runs every file of `fuzz/corpus/<target>` (seeds and any crashers found) through `run`.
fn replay(target: &str, run: fn(&[u8])) {
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

#[test]
fn device_uri_corpus_replays() {
    replay("device_uri", device_uri::run);
}
