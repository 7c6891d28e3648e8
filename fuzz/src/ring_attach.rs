//! Fuzz target `ring_attach`: the bytes as a ring file, attached by a consumer and then by a
//! producer, each used a little (status, a read, a lease, a write) when the attach succeeds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use qrng_ring::{Consumer, Producer, RingOptions};

/// A private directory (mode 0700) for the ring files of this process.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("qrng-fuzz-{}", std::process::id()));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        dir
    })
}

/// Removes this process's scratch directory (for the corpus replay, which ends; a fuzzer never
/// does and leaves an empty directory behind).
pub fn cleanup() {
    let _ = std::fs::remove_dir(scratch());
}

/// One fuzz input.
pub fn run(data: &[u8]) {
    static N: AtomicU64 = AtomicU64::new(0);
    let path = scratch().join(format!("{}.ring", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, data).expect("write the ring file");
    if let Ok(mut c) = Consumer::open(&path) {
        let _ = c.status();
        let _ = c.available();
        let mut buf = [0u8; 100];
        let _ = c.read(&mut buf);
        if let Ok(Some(lease)) = c.lend(64, u64::MAX) {
            assert!(lease.as_ref().len() <= 64);
        }
    }
    let opts = RingOptions { capacity: 4096, ..RingOptions::default() };
    if let Ok(mut p) = Producer::open(&path, &opts) {
        let _ = p.status();
        let _ = p.free();
        let _ = p.write(&[0xa5; 100]);
    }
    let _ = std::fs::remove_file(&path);
}
