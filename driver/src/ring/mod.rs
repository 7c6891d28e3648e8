//! The shared-memory ring ABI (see docs/ring-abi.md).
