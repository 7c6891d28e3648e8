//! §6.3.2 Collision estimate (binary data only).
//!
//! Like the reference tool, p comes from the closed form of the expected collision time for binary
//! data, X' = −2p² + 2p + 2 (its `collision_test`), instead of a search.

use crate::ZALPHA;

pub fn collision(bits: &[u8]) -> f64 {
    let len = bits.len();
    let (mut i, mut v, mut s) = (0usize, 0u64, 0.0f64);
    while i + 1 < len {
        let t = if bits[i] == bits[i + 1] {
            2
        } else if i + 2 < len {
            3
        } else {
            break;
        };
        v += 1;
        s += (t * t) as f64;
        i += t;
    }
    let x = i as f64 / v as f64;
    let sigma = ((s - i as f64 * x) / (v as f64 - 1.0)).sqrt();
    let x = (x - ZALPHA * sigma / (v as f64).sqrt()).max(2.0);
    if x < 2.5 {
        -(0.5 + (1.25 - 0.5 * x).sqrt()).log2()
    } else {
        1.0
    }
}
