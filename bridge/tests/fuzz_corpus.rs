//! The fuzz targets `http_query` and `ioctl` (`fuzz/`), replayed on their corpora under stable
//! `cargo test`.

#[path = "../../fuzz/src/http_query.rs"]
mod http_query;
#[path = "../../fuzz/src/ioctl.rs"]
mod ioctl;

#[path = "../../fuzz/src/replay.rs"]
mod replay;
use replay::replay;

#[test]
fn http_query_corpus_replays() {
    replay("http_query", http_query::run);
}

#[test]
fn ioctl_corpus_replays() {
    replay("ioctl", ioctl::run);
}
