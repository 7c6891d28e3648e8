//! The bodies of the fuzz targets. Each module uses only its own crate and std, so the crate it
//! covers includes the same file in a stable test that replays the target's corpus
//! (`#[path = "../../fuzz/src/<target>.rs"]`): what the fuzzer runs is what CI replays.

pub mod device_uri;
pub mod http_query;
pub mod ioctl;
pub mod ring_attach;
