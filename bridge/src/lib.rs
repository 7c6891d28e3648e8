//! qrng-bridge: serves Quantis rings as a FUSE device file and an HTTP API.
//!
//! - [`beacon`]: the randomness beacon (NIST beacon 2.0 pulses) and its verifier.
//! - [`config`]: command line and environment.
//! - [`dispenser`]: the only reader of the rings; hands every byte to exactly one caller, FIFO.
//! - [`http`]: the axum API (random values, ANU legacy API, devices, health, metrics, OpenAPI).
//! - [`egd`]: the EGD protocol server (QEMU rng-egd / libvirt virtio-rng backends).
//! - [`fuse`]: the device files (`/run/qrng/dev/qrng0`), one per ring.
//! - [`watch`]: hot-plug: attaches and detaches rings as they appear in the ring directory.
#![forbid(unsafe_code)]

/// Items of `config.rs` that need the rest of the crate: kept here, dropped by `build.rs`, which
/// compiles `config.rs` on its own to render the man page and completions.
macro_rules! lib_only {
    ($($item:item)*) => { $($item)* };
}

pub mod beacon;
pub mod config;
pub mod dispenser;
pub mod egd;
pub mod fuse;
pub mod http;
pub mod watch;
