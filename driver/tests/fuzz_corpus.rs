//! The fuzz target `device_uri` (`fuzz/`), replayed on its corpus under stable `cargo test`.

#[path = "../../fuzz/src/device_uri.rs"]
mod device_uri;

#[path = "../../fuzz/src/replay.rs"]
mod replay;
use replay::replay;

#[test]
fn device_uri_corpus_replays() {
    replay("device_uri", device_uri::run);
}
