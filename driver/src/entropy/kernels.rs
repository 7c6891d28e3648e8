//! The extractors' inner loops (XOR of precomputed table entries), compiled twice: for the
//! baseline x86-64 target (SSE2, 16-byte vectors) and with AVX2 enabled (32-byte vectors), the
//! build picked at run time from the CPU's feature flags. The call into the AVX2 build is the only
//! unsafe code of the entropy module.

/// What the CPU can run. Only [`Cpu::detect`] makes one, so `avx2` is true only when the CPU has
/// AVX2: that is the invariant the unsafe calls below rely on.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cpu {
    avx2: bool,
}

impl Cpu {
    pub(super) fn detect() -> Cpu {
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        Cpu { avx2 }
    }
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

/// Lanes of 64 blocks each in the bit-sliced matrix kernel.
const LANES: usize = 4;
/// Blocks the bit-sliced matrix kernel processes at once.
pub(super) const SLICE_BLOCKS: usize = 64 * LANES;
type Lane = [u64; LANES];

/// Transposes a 64×64 bit matrix in place: afterwards bit b of a[c] is what bit c of a[b] was
/// (recursive block swaps, Hacker's Delight §7-3, LSB-first numbering).
#[inline(always)]
fn transpose64(a: &mut [u64; 64]) {
    let mut j = 32usize;
    let mut m = 0x0000_0000_FFFF_FFFFu64;
    while j != 0 {
        let mut k = 0usize;
        while k < 64 {
            let t = ((a[k] >> j) ^ a[k + j]) & m;
            a[k + j] ^= t;
            a[k] ^= t << j;
            k = (k + j + 1) & !j;
        }
        j >>= 1;
        m ^= m << j;
    }
}

/// Bit-sliced "Method of Four Russians" (M4RM) for SLICE_BLOCKS blocks at once. The input is
/// transposed so that X[j] holds input bit j of every block (one bit per block); for each group
/// of 8 input bits a 256-entry table of XOR combinations of their X rows is built, and output row
/// r of every block is the XOR over groups g of table[M byte (r, g)]. `mt[g·k + r]` is the matrix
/// byte holding M[r][8g..8g+8] (IDQ layout byte r·n/8 + g). Everything fits in L1/L2; the work
/// per block is n/8·(255 + k)/SLICE_BLOCKS lane XORs plus two bit-matrix transposes.
#[inline(always)]
fn matrix_sliced_body(n: usize, k: usize, mt: &[u8], input: &[u8], out: &mut [u8]) {
    let (nb, kb) = (n / 8, k / 8);
    let mut x: Vec<Lane> = vec![[0; LANES]; n];
    let mut a = [0u64; 64];
    for l in 0..LANES {
        for w in 0..n / 64 {
            for (b, v) in a.iter_mut().enumerate() {
                let at = (64 * l + b) * nb + 8 * w;
                *v = u64::from_le_bytes(input[at..at + 8].try_into().expect("8 bytes"));
            }
            transpose64(&mut a);
            for (c, v) in a.iter().enumerate() {
                x[64 * w + c][l] = *v;
            }
        }
    }
    let mut c: Vec<Lane> = vec![[0; LANES]; k];
    let mut t: Vec<Lane> = vec![[0; LANES]; 256];
    for (g, rows) in mt.chunks_exact(k).enumerate().take(nb) {
        for v in 1..256usize {
            let (prev, col) = (t[v & (v - 1)], x[8 * g + v.trailing_zeros() as usize]);
            for l in 0..LANES {
                t[v][l] = prev[l] ^ col[l];
            }
        }
        for (cr, &m) in c.iter_mut().zip(rows) {
            let e = t[m as usize];
            for l in 0..LANES {
                cr[l] ^= e[l];
            }
        }
    }
    for l in 0..LANES {
        for w in 0..k / 64 {
            for (r, v) in a.iter_mut().enumerate() {
                *v = c[64 * w + r][l];
            }
            transpose64(&mut a);
            for (b, v) in a.iter().enumerate() {
                let at = (64 * l + b) * kb + 8 * w;
                out[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn matrix_sliced_avx2(n: usize, k: usize, mt: &[u8], input: &[u8], out: &mut [u8]) {
    matrix_sliced_body(n, k, mt, input, out);
}

/// SLICE_BLOCKS matrix blocks at once (SLICE_BLOCKS·n/8 input bytes → SLICE_BLOCKS·k/8 output
/// bytes); `mt` as for [`matrix_sliced_body`].
pub(super) fn matrix_sliced(cpu: Cpu, n: usize, k: usize, mt: &[u8], input: &[u8], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if cpu.avx2 {
        // SAFETY: `matrix_sliced_avx2` only requires AVX2, and `cpu.avx2` is true only when
        // `Cpu::detect` found it on this CPU.
        unsafe { matrix_sliced_avx2(n, k, mt, input, out) };
        return;
    }
    let _ = cpu;
    matrix_sliced_body(n, k, mt, input, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn matrix_avx2<const KW: usize, const TB: usize>(tables: &[u64], input: &[u8], out: &mut [u8]) {
    matrix_body::<KW, TB>(tables, input, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
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
        // SAFETY: `matrix_avx2` only requires AVX2, and `cpu.avx2` is true only when
        // `Cpu::detect` found it on this CPU.
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
        // SAFETY: `toeplitz_avx2` only requires AVX2, and `cpu.avx2` is true only when
        // `Cpu::detect` found it on this CPU.
        unsafe { toeplitz_avx2::<KB>(g, gb, input, out) };
        return;
    }
    let _ = cpu;
    toeplitz_body::<KB>(g, gb, input, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose64_matches_definition() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut a = [0u64; 64];
        for v in a.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = x;
        }
        let orig = a;
        transpose64(&mut a);
        for r in 0..64 {
            for c in 0..64 {
                assert_eq!((a[c] >> r) & 1, (orig[r] >> c) & 1, "row {r} col {c}");
            }
        }
    }

    /// Both builds give the same bytes (the AVX2 one only where the CPU has it).
    #[test]
    fn avx2_and_baseline_builds_agree() {
        let cpu = Cpu::detect();
        let base = Cpu { avx2: false };
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
