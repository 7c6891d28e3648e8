//! The fuzz targets `http_query` and `ioctl` (`fuzz/`), replayed on their corpora under stable
//! `cargo test`.

#[path = "../../fuzz/src/http_query.rs"]
mod http_query;
#[path = "../../fuzz/src/ioctl.rs"]
mod ioctl;

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
fn http_query_corpus_replays() {
    replay("http_query", http_query::run);
}

#[test]
fn ioctl_corpus_replays() {
    replay("ioctl", ioctl::run);
}
