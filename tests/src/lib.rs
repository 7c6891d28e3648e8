//! Helpers for the end-to-end tests: locate and start the real binaries.

pub mod idq;
