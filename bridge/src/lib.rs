//! qrng-bridge: serves Quantis rings as a FUSE device file and an HTTP API.
#![forbid(unsafe_code)]

pub mod fuse;
