//! The fuzz target `ring_attach` (`fuzz/`), replayed on its corpus under stable `cargo test`.

#[path = "../../fuzz/src/ring_attach.rs"]
mod ring_attach;

#[path = "../../fuzz/src/replay.rs"]
mod replay;
use replay::replay;

#[test]
fn ring_attach_corpus_replays() {
    replay("ring_attach", ring_attach::run);
    ring_attach::cleanup();
}
