//! The feeder's logic against a fake pool and sources: what is credited, what is counted, and
//! that nothing is credited for a failed read or a refused ioctl.

use std::io::Write;

use super::*;

/// A pool whose CRNG becomes ready once `need` bits were credited; `refuse` fails every add.
#[derive(Debug, Default)]
struct FakePool {
    added: Vec<(Vec<u8>, u32)>,
    need: u64,
    refuse: bool,
}

impl Pool for FakePool {
    fn add(&mut self, bytes: &[u8], bits: u32) -> io::Result<()> {
        if self.refuse {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        self.added.push((bytes.to_vec(), bits));
        Ok(())
    }

    fn ready(&mut self) -> io::Result<bool> {
        Ok(self.added.iter().map(|(_, b)| u64::from(*b)).sum::<u64>() >= self.need)
    }
}

fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, FileSource) {
    let mut f = tempfile::NamedTempFile::new().expect("tempfile");
    f.write_all(bytes).expect("write");
    let s = FileSource::open(f.path().to_owned()).expect("open");
    (f, s)
}

fn pattern(n: usize) -> Vec<u8> {
    qrng_ring::pattern::bytes(0, n)
}

#[test]
fn credit_is_rounded_down_and_bounded() {
    assert_eq!(credit_bits(64, 8.0), 512);
    assert_eq!(credit_bits(64, 4.0), 256);
    assert_eq!(credit_bits(3, 0.5), 1);
    assert_eq!(credit_bits(64, 0.0), 0);
    assert_eq!(credit_bits(1, 9.0), 8, "never more than 8 bits a byte");
}

#[test]
fn at_start_it_feeds_until_the_crng_is_ready_and_counts_exactly_what_it_read() {
    let data = pattern(1024);
    let (_f, source) = file_of(&data);
    // The kernel's CRNG needs 256 bits; at 2 bits a byte that is 128 bytes: 2 chunks of 64.
    let pool = FakePool { need: 256, ..Default::default() };
    let mut f =
        Feeder { source, pool, chunk: 64, bits_per_byte: 2.0, counters: Counters::default() };
    assert!(f.until_ready(4096).expect("feed"));
    assert_eq!(f.pool.added.len(), 2);
    assert_eq!(f.pool.added[0], (data[..64].to_vec(), 128));
    assert_eq!(f.pool.added[1], (data[64..128].to_vec(), 128));
    assert_eq!(
        f.counters,
        Counters {
            bytes_read: 128,
            bytes_credited: 128,
            bits_credited: 256,
            ..Counters::default()
        }
    );
    // Ready already: nothing more at start.
    assert!(f.until_ready(4096).expect("feed"));
    assert_eq!(f.counters.bytes_read, 128);
    // The periodic addition takes the next chunk.
    f.feed_once().expect("feed");
    assert_eq!(f.pool.added[2].0, data[128..192].to_vec());
}

#[test]
fn the_start_is_bounded_when_the_crng_never_becomes_ready() {
    let (_f, source) = file_of(&pattern(4096));
    let pool = FakePool { need: u64::MAX, ..Default::default() };
    let mut f =
        Feeder { source, pool, chunk: 64, bits_per_byte: 8.0, counters: Counters::default() };
    assert!(!f.until_ready(256).expect("feed"));
    assert_eq!(f.counters.bytes_read, 256);
}

#[test]
fn a_refused_ioctl_credits_nothing_and_is_counted() {
    let (_f, source) = file_of(&pattern(256));
    let pool = FakePool { refuse: true, need: 1, ..Default::default() };
    let mut f =
        Feeder { source, pool, chunk: 64, bits_per_byte: 8.0, counters: Counters::default() };
    let e = f.until_ready(4096).expect_err("refused");
    assert!(matches!(e, FeedError::Ioctl(_)), "{e}");
    assert_eq!(f.counters, Counters { bytes_read: 64, ioctl_errors: 1, ..Counters::default() });
}

#[test]
fn a_short_source_credits_nothing_for_the_partial_chunk() {
    let (_f, source) = file_of(&pattern(100));
    let pool = FakePool { need: u64::MAX, ..Default::default() };
    let mut f =
        Feeder { source, pool, chunk: 64, bits_per_byte: 8.0, counters: Counters::default() };
    f.feed_once().expect("first chunk");
    let e = f.feed_once().expect_err("the file ends");
    assert!(e.to_string().contains("ended after 36 of 64 bytes"), "{e}");
    assert_eq!(f.pool.added.len(), 1);
    assert_eq!(
        f.counters,
        Counters {
            bytes_read: 64,
            bytes_credited: 64,
            bits_credited: 512,
            source_errors: 1,
            ..Counters::default()
        }
    );
}

#[test]
fn a_ring_source_takes_whole_chunks_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.ring");
    let opts = qrng_ring::RingOptions { capacity: 1 << 12, ..qrng_ring::RingOptions::default() };
    let mut p = qrng_ring::Producer::open(&path, &opts).expect("producer");
    assert_eq!(p.write(&pattern(100)).expect("publish"), 100);
    p.set_health(qrng_ring::Health::Ok, qrng_ring::Reason::None);
    let me = nix_uid();
    let mut s = RingSource::open(path.clone(), Some(me), std::time::Duration::ZERO).expect("open");
    let mut a = [0u8; 64];
    s.fill(&mut a).expect("64 bytes");
    assert_eq!(a.to_vec(), pattern(64));
    let mut b = [0u8; 64];
    let e = s.fill(&mut b).expect_err("only 36 left");
    assert!(e.to_string().contains("only 36 of 64"), "{e}");
    // The short attempt took nothing: the next whole chunk starts at byte 64.
    assert_eq!(p.write(&pattern(200)[100..]).expect("publish"), 100);
    s.fill(&mut b).expect("64 bytes");
    assert_eq!(b.to_vec(), pattern(128)[64..].to_vec());
}

/// This process's effective uid: the owner of a file it creates.
fn nix_uid() -> u32 {
    let f = tempfile::NamedTempFile::new().expect("tempfile");
    std::os::unix::fs::MetadataExt::uid(&f.as_file().metadata().expect("metadata"))
}
