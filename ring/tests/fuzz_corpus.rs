//! The fuzz target `ring_attach` (`fuzz/`), replayed on its corpus under stable `cargo test`.

#[path = "../../fuzz/src/ring_attach.rs"]
mod ring_attach;

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
fn ring_attach_corpus_replays() {
    replay("ring_attach", ring_attach::run);
    ring_attach::cleanup();
}
