//! A mixed device (`--mix qrng0,qrng1`) on two simulated cards, one with a bit lane stuck at 1
//! (`fault=stuck-bit`: it still passes the health tests, so only mixing protects the output).
//!
//! Exactly once: every direct read of a member is a piece of that card's stream, every mixed read
//! is the XOR of a piece of each, and no two pieces of one card overlap. Bias: the stuck member's
//! own bytes fail a monobit test; the mix's pass it.

use std::io::Read;

use qrng_e2e::{fuse_available, reference_stream, start_driver, wait_until, Bridge, Placement};

const STUCK: &str = "sim:pcie-4m?seed=21&fault=stuck-bit";
const GOOD: &str = "sim:pcie-4m?seed=22";
/// Of each card's stream, the part the test may consume (the reads below stay well inside it).
const REFERENCE: usize = 1 << 18;

/// Where a mixed chunk's two halves lie: the offsets `(i, j)` with `chunk = a[i..] ^ b[j..]`.
fn split_mix(a_ref: &[u8], b: &Placement, chunk: &[u8]) -> Option<(usize, usize)> {
    let xor = |i: usize, n: usize| -> Vec<u8> {
        chunk[..n].iter().zip(&a_ref[i..]).map(|(x, y)| x ^ y).collect()
    };
    (0..=a_ref.len() - chunk.len()).find_map(|i| {
        // The first 8 bytes find the candidate in b's index; the whole chunk confirms it.
        b.locate(&xor(i, 8))?;
        b.locate(&xor(i, chunk.len())).map(|j| (i, j))
    })
}

fn assert_disjoint(mut spans: Vec<(usize, usize)>, card: &str) {
    spans.sort_unstable();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "{card}: served twice: {:?} overlaps {:?}", w[0], w[1]);
    }
}

/// Monobit z-score: |ones − n/2| / √(n/4) over the bits of `bytes`.
fn monobit_z(bytes: &[u8]) -> f64 {
    let n = bytes.len() as f64 * 8.0;
    let ones: u64 = bytes.iter().map(|b| u64::from(b.count_ones())).sum();
    (ones as f64 - n / 2.0).abs() / (n / 4.0).sqrt()
}

#[test]
fn e2e_mix_is_exactly_once_across_members_and_unbiased_by_a_stuck_member() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a_ref = reference_stream(STUCK, REFERENCE, tmp.path());
    let b_ref = reference_stream(GOOD, REFERENCE, tmp.path());
    let (a, b) = (Placement::new(a_ref.clone()), Placement::new(b_ref.clone()));
    let rings = tmp.path().join("rings");
    std::fs::create_dir(&rings).expect("ring dir");
    let _da = start_driver(STUCK, &rings.join("qrng0.ring"));
    let _db = start_driver(GOOD, &rings.join("qrng1.ring"));
    let fuse = fuse_available("e2e_mix");
    let mut args = vec!["--mix", "qrng0,qrng1"];
    if !fuse {
        args.push("--no-fuse");
    }
    let bridge = Bridge::start(&rings, &tmp.path().join("dev"), &args);
    wait_until("mix0 ok", || bridge.device("mix0").filter(|d| d["health"] == "ok").map(|_| ()));
    assert_eq!(bridge.device("mix0").unwrap()["model"], "xor(qrng0,qrng1)");

    let (mut a_spans, mut b_spans, mut mixed) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..6 {
        for (dev, place, spans) in [("qrng0", &a, &mut a_spans), ("qrng1", &b, &mut b_spans)] {
            let piece = bridge.http_bytes(dev, 1000 + round).expect("direct read");
            let at = place.locate(&piece).unwrap_or_else(|| panic!("{dev}: not its card's bytes"));
            spans.push((at, at + piece.len()));
        }
        let mut chunk = bridge.http_bytes("mix0", 4096).expect("mixed read");
        if fuse && round == 0 {
            let mut f = std::fs::File::open(bridge.file("mix0")).expect("open the mix's file");
            chunk = vec![0; 4096];
            f.read_exact(&mut chunk).expect("read the mix's file");
        }
        let (i, j) = split_mix(&a_ref, &b, &chunk).expect("mixed bytes are a XOR b");
        a_spans.push((i, i + chunk.len()));
        b_spans.push((j, j + chunk.len()));
        mixed.extend(chunk);
    }
    assert_disjoint(a_spans, "qrng0");
    assert_disjoint(b_spans, "qrng1");

    // The stuck lane: 1 bit in 32 is always 1, which the monobit test sees in the card's own
    // bytes (z ≈ 45 over these 192 KiB) and must not see in the mix (|z| < 5: false alarm
    // 5.7e-7; the streams are fixed-seed, so the outcome is fixed).
    let mut raw = Vec::new();
    while raw.len() < 196_608 {
        raw.extend(bridge.http_bytes("qrng0", 65_536).expect("raw read"));
    }
    while mixed.len() < 196_608 {
        mixed.extend(bridge.http_bytes("mix0", 65_536).expect("mixed read"));
    }
    let (z_raw, z_mix) = (monobit_z(&raw), monobit_z(&mixed));
    assert!(z_raw > 5.0, "the stuck member must show its bias on its own: z = {z_raw}");
    assert!(z_mix < 5.0, "the stuck member biased the mix: z = {z_mix}");
}
