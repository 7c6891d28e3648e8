//! A position-encoding test pattern: byte `i` of the stream is byte `i % 8` of the little-endian
//! u64 `i / 8`. Any loss, duplication or reordering shows up as a mismatch at a known position.
//! The one test pattern of the workspace: the ring's, the dispenser's, the HTTP and FUSE tests and
//! the benchmarks use it (feature `test-util`); never the product's data path.

/// The pattern byte at stream position `pos`.
pub fn byte(pos: u64) -> u8 {
    (pos / 8).to_le_bytes()[(pos % 8) as usize]
}

/// The pattern bytes for stream positions `pos..pos + len`.
pub fn bytes(pos: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    fill(pos, &mut buf);
    buf
}

/// Fills `buf` with the pattern bytes for stream positions `pos..pos + buf.len()`.
pub fn fill(pos: u64, buf: &mut [u8]) {
    let mut i = 0;
    while i < buf.len() {
        let p = pos + i as u64;
        let word = (p / 8).to_le_bytes();
        let k = (p % 8) as usize;
        let n = (8 - k).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&word[k..k + n]);
        i += n;
    }
}

/// Checks `buf` against the pattern at `pos`; on mismatch returns the first bad stream position.
pub fn check(pos: u64, buf: &[u8]) -> Result<(), u64> {
    let mut want = [0u8; 4096];
    for (k, got) in buf.chunks(want.len()).enumerate() {
        let at = pos + (k * want.len()) as u64;
        let want = &mut want[..got.len()];
        fill(at, want);
        if let Some(i) = got.iter().zip(want.iter()).position(|(g, w)| g != w) {
            return Err(at + i as u64);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ring_pattern_round_trips_and_catches_a_changed_byte() {
        let mut buf = vec![0u8; 1000];
        super::fill(13, &mut buf);
        assert_eq!(super::check(13, &buf), Ok(()));
        assert_eq!(
            &buf[..4],
            &[0, 0, 0, 2],
            "positions 13..16 are bytes 5..8 of word 1, then word 2 begins"
        );
        assert_eq!(super::check(14, &buf), Err(16), "shifted by one: first visible mismatch at 16");
        buf[500] ^= 1;
        assert_eq!(super::check(13, &buf), Err(513));
    }
}
