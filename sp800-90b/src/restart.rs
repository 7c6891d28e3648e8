//! Restart tests (§3.1.4).
