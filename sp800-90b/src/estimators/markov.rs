//! §6.3.3 Markov estimate (binary data only).

pub fn markov(bits: &[u8]) -> f64 {
    let len = bits.len();
    let (mut c0, mut c00, mut c10) = (0u64, 0u64, 0u64);
    for w in bits.windows(2) {
        if w[0] == 0 {
            c0 += 1;
            c00 += u64::from(w[1] == 0);
        } else {
            c10 += u64::from(w[1] == 0);
        }
    }
    let c1 = (len as u64 - 1) - c0;
    let (p00, p01) = if c0 > 0 {
        let p = c00 as f64 / c0 as f64;
        (p, 1.0 - p)
    } else {
        (0.0, 0.0)
    };
    let (p10, p11) = if c1 > 0 {
        let p = c10 as f64 / c1 as f64;
        (p, 1.0 - p)
    } else {
        (0.0, 0.0)
    };
    if bits[len - 1] == 0 {
        c0 += 1;
    }
    let p0 = c0 as f64 / len as f64;
    let p1 = 1.0 - p0;
    // The most likely 128-bit sequences of the fitted chain (§6.3.3 step 3).
    let mut h = 128.0f64;
    let mut consider = |ok: bool, v: f64| {
        if ok && v < h {
            h = v;
        }
    };
    consider(p00 > 0.0, -p0.log2() - 127.0 * p00.log2());
    consider(p01 > 0.0 && p10 > 0.0, -p0.log2() - 64.0 * p01.log2() - 63.0 * p10.log2());
    consider(p01 > 0.0 && p11 > 0.0, -p0.log2() - p01.log2() - 126.0 * p11.log2());
    consider(p10 > 0.0 && p00 > 0.0, -p1.log2() - p10.log2() - 126.0 * p00.log2());
    consider(p10 > 0.0 && p01 > 0.0, -p1.log2() - 64.0 * p10.log2() - 63.0 * p01.log2());
    consider(p11 > 0.0, -p1.log2() - 127.0 * p11.log2());
    (h / 128.0).min(1.0)
}
