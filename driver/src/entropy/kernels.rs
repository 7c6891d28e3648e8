//! The hot loops of the entropy module — the extractors' table XORs and the health tests —
//! compiled twice: for the baseline x86-64 target (SSE2) and with AVX2, POPCNT, BMI1 and LZCNT
//! enabled (32-byte vectors, one-instruction bit counts), the build picked at run time from the
//! CPU's feature flags. The calls into the second build are the only unsafe code of the module.

/// What the CPU can run. Only [`Cpu::detect`] makes one, so `avx2` is true only when the CPU has
/// AVX2, POPCNT, BMI1 and LZCNT: that is the invariant the unsafe calls below rely on.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cpu {
    avx2: bool,
}

impl Cpu {
    pub(super) fn detect() -> Cpu {
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("popcnt")
            && std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("lzcnt");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        Cpu { avx2 }
    }

    /// The baseline build only (tests compare it with the detected one).
    #[cfg(test)]
    pub(super) fn baseline() -> Cpu {
        Cpu { avx2: false }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt,bmi1,lzcnt")]
fn call_fast<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f`, compiled with the fast instruction set when the CPU has it. Only code inlined into
/// `f` benefits, so the callers mark their hot functions `#[inline(always)]`.
#[inline(always)]
pub(super) fn run<R>(cpu: Cpu, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if cpu.avx2 {
        // SAFETY: `call_fast` only requires AVX2, POPCNT, BMI1 and LZCNT, and `cpu.avx2` is true
        // only when `Cpu::detect` found all four on this CPU.
        return unsafe { call_fast(f) };
    }
    let _ = cpu;
    f()
}

/// Matrix block: `tables` holds n/TB positions of 2^TB entries of KW words, 8/TB positions per
/// input byte (low bits first, the LSB-first bit order).
#[inline(always)]
fn matrix_body<const KW: usize, const TB: usize>(tables: &[u64], input: &[u8], out: &mut [u8]) {
    let mut acc = [0u64; KW];
    let per_byte = 8 / TB;
    let mask = (1usize << TB) - 1;
    for (tab, &b) in tables.chunks_exact((per_byte << TB) * KW).zip(input) {
        for j in 0..per_byte {
            let v = (usize::from(b) >> (j * TB)) & mask;
            let start = ((j << TB) + v) * KW;
            let e: &[u64; KW] = tab[start..start + KW].try_into().expect("KW words");
            for w in 0..KW {
                acc[w] ^= e[w];
            }
        }
    }
    for (o, w) in out.chunks_exact_mut(8).zip(&acc) {
        o.copy_from_slice(&w.to_le_bytes());
    }
}

/// Toeplitz block: input byte p contributes the KB-byte window of row `g[x_p]` (stride `gb`)
/// that starts at byte `nb − p`. Byte-wise XOR: no endianness work, full-width vector XORs.
#[inline(always)]
fn toeplitz_body<const KB: usize>(g: &[u8], gb: usize, input: &[u8], out: &mut [u8]) {
    let nb = input.len();
    let mut acc = [0u8; KB];
    for (p, &b) in input.iter().enumerate() {
        // Row b of g is gb = nb + KB bytes, so the window stays inside the row.
        let start = b as usize * gb + nb - p;
        let win: &[u8; KB] = g[start..start + KB].try_into().expect("window fits");
        for (a, v) in acc.iter_mut().zip(win) {
            *a ^= v;
        }
    }
    out.copy_from_slice(&acc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt,bmi1,lzcnt")]
fn matrix_avx2<const KW: usize, const TB: usize>(tables: &[u64], input: &[u8], out: &mut [u8]) {
    matrix_body::<KW, TB>(tables, input, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt,bmi1,lzcnt")]
fn toeplitz_avx2<const KB: usize>(g: &[u8], gb: usize, input: &[u8], out: &mut [u8]) {
    toeplitz_body::<KB>(g, gb, input, out);
}

/// One matrix block (n/8 input bytes → KW·8 output bytes) with TB-bit table positions.
pub(super) fn matrix<const KW: usize, const TB: usize>(
    cpu: Cpu,
    tables: &[u64],
    input: &[u8],
    out: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if cpu.avx2 {
        // SAFETY: `matrix_avx2` only requires AVX2, POPCNT, BMI1 and LZCNT, and `cpu.avx2` is
        // true only when `Cpu::detect` found all four on this CPU.
        unsafe { matrix_avx2::<KW, TB>(tables, input, out) };
        return;
    }
    let _ = cpu;
    matrix_body::<KW, TB>(tables, input, out);
}

/// One Toeplitz block (n/8 input bytes → KB output bytes).
pub(super) fn toeplitz<const KB: usize>(
    cpu: Cpu,
    g: &[u8],
    gb: usize,
    input: &[u8],
    out: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if cpu.avx2 {
        // SAFETY: `toeplitz_avx2` only requires AVX2, POPCNT, BMI1 and LZCNT, and `cpu.avx2` is
        // true only when `Cpu::detect` found all four on this CPU.
        unsafe { toeplitz_avx2::<KB>(g, gb, input, out) };
        return;
    }
    let _ = cpu;
    toeplitz_body::<KB>(g, gb, input, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both builds give the same bytes (the AVX2 one only where the CPU has it).
    #[test]
    fn avx2_and_baseline_builds_agree() {
        let cpu = Cpu::detect();
        let base = Cpu::baseline();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let tables: Vec<u64> = (0..128 * 256 * 12).map(|_| next()).collect();
        let g: Vec<u8> = (0..256 * 224).map(|_| next() as u8).collect();
        let input: Vec<u8> = (0..128).map(|_| next() as u8).collect();
        let (mut a, mut b) = ([0u8; 96], [0u8; 96]);
        matrix::<12, 4>(cpu, &tables, &input, &mut a);
        matrix::<12, 4>(base, &tables, &input, &mut b);
        assert_eq!(a, b);
        matrix::<12, 8>(cpu, &tables, &input, &mut a);
        matrix::<12, 8>(base, &tables, &input, &mut b);
        assert_eq!(a, b);
        toeplitz::<96>(cpu, &g, 224, &input, &mut a);
        toeplitz::<96>(base, &g, 224, &input, &mut b);
        assert_eq!(a, b);
    }
}
