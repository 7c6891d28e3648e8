//! Randomness extractors (conditioning) applied to raw bytes that passed the health tests:
//! von Neumann, IDQ's random-matrix extractor and a Toeplitz-hash extractor, plus the logic that
//! builds a matrix or seed from the card itself (IDQ's "make-matrix" procedure).
//!
//! Bit order everywhere is IDQ's: bit i of a byte string is bit (i mod 8) of byte ⌊i/8⌋
//! (least-significant bit first), which is what loading little-endian 64-bit words gives.
//!
//! Speed: both hash extractors compute y = A·x over GF(2) with the "Method of Four Russians":
//! precomputed XOR combinations of matrix columns, so one block costs a few table lookups of k
//! bits each instead of k·n/64 AND+parity word operations. The matrix has one 16-entry table per
//! input nibble (n/4 · 16 · k/8 bytes: 384 KiB for 1024→768, 1.75 MiB for 2048→1792). A Toeplitz
//! matrix's columns are shifts of one seed, so a single 256-entry table of "seed × byte" products
//! serves every input byte at a byte offset ((n+k)/8 · 256 bytes: 56 KiB for 1024→768, 120 KiB
//! for 2048→1792).

use bitvec::prelude::*;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{kernels, Error, Result};

/// Extractor input/output sizes in bits (n → k). Both multiples of 64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub n: usize,
    pub k: usize,
}

impl Shape {
    /// IDQ's 1024 → 768 (75 %) size.
    pub const S1024_768: Shape = Shape { n: 1024, k: 768 };
    /// IDQ's 2048 → 1792 (87.5 %) size.
    pub const S2048_1792: Shape = Shape { n: 2048, k: 1792 };
    /// The sizes offered (quantis-hardware.md, "IDQ's randomness extractor").
    pub const OFFERED: [Shape; 2] = [Shape::S1024_768, Shape::S2048_1792];

    /// Bytes of a matrix file in IDQ's layout: k rows of n bits, n·k/8 bytes.
    pub fn matrix_bytes(self) -> usize {
        self.n * self.k / 8
    }
    /// Bytes of a Toeplitz seed file: n + k − 1 bits, rounded up to whole bytes.
    pub fn seed_bytes(self) -> usize {
        (self.n + self.k - 1).div_ceil(8)
    }
    /// Checks the shape is one the extractors support (n, k multiples of 64, k < n) and that
    /// `len` bytes of matrix or seed are the `need` bytes it takes.
    fn validate(self, what: &str, len: usize, need: usize) -> std::result::Result<(), String> {
        if !self.n.is_multiple_of(64) || !self.k.is_multiple_of(64) || self.k >= self.n {
            return Err(format!("unsupported {what} shape {}→{}", self.n, self.k));
        }
        if len != need {
            return Err(format!("{len} bytes where {need} are needed"));
        }
        Ok(())
    }

    fn in_bytes(self) -> usize {
        self.n / 8
    }
    fn out_bytes(self) -> usize {
        self.k / 8
    }
}

/// Von Neumann's debiaser: each pair of bits (b₂ᵢ, b₂ᵢ₊₁) that differ yields b₂ᵢ; equal pairs yield
/// nothing (IDQ: 0b01 → 1, 0b10 → 0 with the first bit in the low position).
#[derive(Clone, Debug, Default)]
pub struct VonNeumann {
    acc: u64,
    nacc: u32,
}

/// Per input byte: (output bits packed LSB first, number of output bits). Four pairs per byte.
const VN_TABLE: [(u8, u8); 256] = {
    let mut t = [(0u8, 0u8); 256];
    let mut b = 0;
    while b < 256 {
        let (mut bits, mut n) = (0u8, 0u8);
        let mut pair = 0;
        while pair < 4 {
            let v = (b >> (2 * pair)) & 3;
            if v == 1 || v == 2 {
                bits |= ((v & 1) as u8) << n;
                n += 1;
            }
            pair += 1;
        }
        t[b] = (bits, n);
        b += 1;
    }
    t
};

impl VonNeumann {
    pub fn new() -> VonNeumann {
        VonNeumann::default()
    }

    /// Appends whole output bytes to `out`; up to 7 leftover bits wait for the next call.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() / 4 + 1);
        for &b in input {
            let (bits, n) = VN_TABLE[b as usize];
            self.acc |= u64::from(bits) << self.nacc;
            self.nacc += u32::from(n);
            if self.nacc >= 32 {
                out.extend_from_slice(&(self.acc as u32).to_le_bytes());
                self.acc >>= 32;
                self.nacc -= 32;
            }
        }
        while self.nacc >= 8 {
            out.push(self.acc as u8);
            self.acc >>= 8;
            self.nacc -= 8;
        }
    }

    /// Drops leftover bits.
    pub fn reset(&mut self) {
        *self = VonNeumann::default();
    }
}

/// Four-Russians tables: for each group of `TB` consecutive input bits ("position"), the 2^TB
/// XOR combinations of the group's k-bit matrix columns, `kw = k/64` words each.
#[derive(Clone)]
struct Tables {
    words: Vec<u64>,
    kw: usize,
}

impl Tables {
    /// Appends one position's 2^tb entries built from its `tb` column vectors (`cols[t]` = the
    /// column of input bit t of the group) by T[v] = T[v without its lowest bit] ⊕ col[lowest].
    fn push_position(&mut self, cols: &[u64], tb: usize) {
        let kw = self.kw;
        let base = self.words.len();
        self.words.resize(base + (kw << tb), 0);
        for v in 1..1usize << tb {
            let low = v.trailing_zeros() as usize;
            let prev = v & (v - 1);
            for w in 0..kw {
                self.words[base + v * kw + w] =
                    self.words[base + prev * kw + w] ^ cols[low * kw + w];
            }
        }
    }
}

#[inline(always)]
fn write_words(acc: &[u64], out: &mut [u8]) {
    for (o, w) in out.chunks_exact_mut(8).zip(acc) {
        o.copy_from_slice(&w.to_le_bytes());
    }
}

/// Input bits per table lookup in the matrix extractor. Nibbles: 16 entries per position, tables
/// of 384 KiB (1024→768) and 1.75 MiB (2048→1792) that stay in L2. Byte-wide positions halve the
/// lookups but need 3 MiB and 14 MiB; measured no faster for 1024→768 (both ≈ 0.5× Toeplitz on the
/// same run), so the smaller tables win.
const MATRIX_TB: usize = 4;

/// IDQ-compatible random-matrix extractor: y = M·x over GF(2) for every n-bit input block, with M
/// a k×n matrix read from a file in IDQ's layout (k rows of n bits, row r at bits r·n..(r+1)·n,
/// LSB first; i.e. IDQ's `uint64_t` array of k·n/64 little-endian words).
#[derive(Clone)]
pub struct MatrixExtractor {
    shape: Shape,
    tables: Tables,
    cpu: kernels::Cpu,
}

impl std::fmt::Debug for MatrixExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the matrix (it is secret-ish state derived from the card).
        f.debug_struct("MatrixExtractor").field("shape", &self.shape).finish_non_exhaustive()
    }
}

impl MatrixExtractor {
    /// Builds the extractor from matrix bytes in IDQ's layout; the length must be n·k/8.
    pub fn from_idq_bytes(shape: Shape, m: &[u8]) -> std::result::Result<MatrixExtractor, String> {
        shape.validate("matrix", m.len(), shape.matrix_bytes())?;
        let (kw, tb) = (shape.k / 64, MATRIX_TB);
        let bits = m.view_bits::<Lsb0>();
        let mut tables = Tables { words: Vec::with_capacity((shape.n / tb) * (kw << tb)), kw };
        let mut cols = vec![0u64; tb * kw];
        for p in 0..shape.n / tb {
            cols.iter_mut().for_each(|c| *c = 0);
            for t in 0..tb {
                let c = tb * p + t;
                for r in 0..shape.k {
                    if bits[r * shape.n + c] {
                        cols[t * kw + r / 64] |= 1u64 << (r % 64);
                    }
                }
            }
            tables.push_position(&cols, tb);
        }
        Ok(MatrixExtractor { shape, tables, cpu: kernels::Cpu::detect() })
    }

    /// Loads a matrix file; its size selects the shape (98,304 bytes: 1024→768; 458,752 bytes:
    /// 2048→1792). Anything else, or a missing file, is an error now rather than at first use.
    pub fn load(path: &Path) -> Result<MatrixExtractor> {
        load_sized(path, "matrix", Shape::matrix_bytes, MatrixExtractor::from_idq_bytes)
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Memory held by the lookup tables, in bytes.
    pub fn table_bytes(&self) -> usize {
        self.tables.words.len() * 8
    }

    /// Extracts one block: `input` is n/8 bytes, `out` k/8 bytes.
    pub fn extract_block(&self, input: &[u8], out: &mut [u8]) {
        match self.tables.kw {
            12 => kernels::matrix::<12, MATRIX_TB>(self.cpu, &self.tables.words, input, out),
            28 => kernels::matrix::<28, MATRIX_TB>(self.cpu, &self.tables.words, input, out),
            _ => self.block_dyn(input, out),
        }
    }

    fn block_dyn(&self, input: &[u8], out: &mut [u8]) {
        let kw = self.tables.kw;
        let mut acc = vec![0u64; kw];
        for (tab, &b) in self.tables.words.chunks_exact(32 * kw).zip(input) {
            let (lo, hi) = tab.split_at(16 * kw);
            for (a, e) in acc.iter_mut().zip(&lo[(b & 15) as usize * kw..][..kw]) {
                *a ^= e;
            }
            for (a, e) in acc.iter_mut().zip(&hi[(b >> 4) as usize * kw..][..kw]) {
                *a ^= e;
            }
        }
        write_words(&acc, out);
    }
}

/// Toeplitz-hash extractor: y_i = ⊕_j s[i − j + n − 1] · x_j (i < k, j < n), a k×n Toeplitz
/// matrix given by n + k − 1 seed bits (the seed file, LSB first). Equivalently y is the slice of
/// coefficients n−1 ..= n+k−2 of the carry-less product S(z)·X(z).
#[derive(Clone)]
pub struct ToeplitzExtractor {
    shape: Shape,
    /// g[b] (stride `gb` bytes) = bits of z·S(z)·b(z), b(z) the byte's 8-bit polynomial; the
    /// contribution of input byte p is the k-bit window of g[x_p] starting at byte n/8 − p.
    g: Vec<u8>,
    gb: usize,
    cpu: kernels::Cpu,
}

impl std::fmt::Debug for ToeplitzExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToeplitzExtractor").field("shape", &self.shape).finish_non_exhaustive()
    }
}

impl ToeplitzExtractor {
    /// Builds the extractor from a seed of n + k − 1 bits (whole bytes; the spare high bits of
    /// the last byte are ignored).
    pub fn from_seed(shape: Shape, seed: &[u8]) -> std::result::Result<ToeplitzExtractor, String> {
        shape.validate("Toeplitz", seed.len(), shape.seed_bytes())?;
        let sbits = shape.n + shape.k - 1;
        let gb = (shape.n + shape.k) / 8;
        let mut g = vec![0u8; 256 * gb];
        // z·S(z)·z^t for t = 0..8, each n + k bits (bit n+k−1+… beyond the window is never read).
        let mut shifted: Vec<BitVec<u8, Lsb0>> = Vec::with_capacity(8);
        for t in 0..8 {
            let mut v: BitVec<u8, Lsb0> = BitVec::repeat(false, gb * 8);
            for (i, bit) in seed.view_bits::<Lsb0>()[..sbits].iter().by_vals().enumerate() {
                let pos = i + 1 + t;
                if bit && pos < gb * 8 {
                    v.set(pos, true);
                }
            }
            shifted.push(v);
        }
        for b in 1..256usize {
            let low = b.trailing_zeros() as usize;
            let prev = b & (b - 1);
            for i in 0..gb {
                g[b * gb + i] = g[prev * gb + i] ^ shifted[low].as_raw_slice()[i];
            }
        }
        Ok(ToeplitzExtractor { shape, g, gb, cpu: kernels::Cpu::detect() })
    }

    /// Loads a seed file; its size selects the shape (224 bytes: 1024→768; 480 bytes:
    /// 2048→1792).
    pub fn load(path: &Path) -> Result<ToeplitzExtractor> {
        load_sized(path, "toeplitz seed", Shape::seed_bytes, ToeplitzExtractor::from_seed)
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Memory held by the lookup table, in bytes.
    pub fn table_bytes(&self) -> usize {
        self.g.len()
    }

    /// Extracts one block: `input` is n/8 bytes, `out` k/8 bytes.
    pub fn extract_block(&self, input: &[u8], out: &mut [u8]) {
        match self.shape.k / 8 {
            96 => kernels::toeplitz::<96>(self.cpu, &self.g, self.gb, input, out),
            224 => kernels::toeplitz::<224>(self.cpu, &self.g, self.gb, input, out),
            _ => self.block_dyn(input, out),
        }
    }

    fn block_dyn(&self, input: &[u8], out: &mut [u8]) {
        let nb = self.shape.n / 8;
        let kb = self.shape.k / 8;
        let mut acc = vec![0u8; kb];
        for (p, &b) in input.iter().enumerate() {
            let row = &self.g[b as usize * self.gb..][..self.gb];
            for (a, v) in acc.iter_mut().zip(&row[nb - p..][..kb]) {
                *a ^= v;
            }
        }
        out.copy_from_slice(&acc);
    }
}

/// A block extractor with its partial-block buffer, so callers can feed any length.
#[derive(Clone, Debug)]
pub struct Blocked<E> {
    pub ext: E,
    pending: Vec<u8>,
    shape: Shape,
}

/// Something that maps n/8 input bytes to k/8 output bytes.
pub trait BlockExtract {
    fn shape(&self) -> Shape;
    fn block(&self, input: &[u8], out: &mut [u8]);
}

impl BlockExtract for MatrixExtractor {
    fn shape(&self) -> Shape {
        self.shape
    }
    fn block(&self, input: &[u8], out: &mut [u8]) {
        self.extract_block(input, out);
    }
}

impl BlockExtract for ToeplitzExtractor {
    fn shape(&self) -> Shape {
        self.shape
    }
    fn block(&self, input: &[u8], out: &mut [u8]) {
        self.extract_block(input, out);
    }
}

impl<E: BlockExtract> Blocked<E> {
    pub fn new(ext: E) -> Blocked<E> {
        let shape = ext.shape();
        Blocked { ext, pending: Vec::with_capacity(shape.in_bytes()), shape }
    }

    /// Appends k/8 bytes per completed n/8-byte input block; a partial block waits.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        let (ib, ob) = (self.shape.in_bytes(), self.shape.out_bytes());
        if !self.pending.is_empty() {
            let take = (ib - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() < ib {
                return;
            }
            let start = out.len();
            out.resize(start + ob, 0);
            self.ext.block(&self.pending, &mut out[start..]);
            self.pending.clear();
        }
        let blocks = input.len() / ib;
        let start = out.len();
        out.resize(start + blocks * ob, 0);
        for (i, o) in input.chunks_exact(ib).zip(out[start..].chunks_exact_mut(ob)) {
            self.ext.block(i, o);
        }
        self.pending.extend_from_slice(&input[blocks * ib..]);
    }

    /// Drops a partial block.
    pub fn reset(&mut self) {
        self.pending.clear();
    }
}

/// Loads a matrix or seed file whose size (`size_of` one of the offered shapes) selects the shape,
/// and builds the extractor from it. Missing, short or odd-sized files are errors naming the path.
fn load_sized<T>(
    path: &Path,
    what: &'static str,
    size_of: fn(Shape) -> usize,
    build: fn(Shape, &[u8]) -> std::result::Result<T, String>,
) -> Result<T> {
    let data = read_small_file(path, what, Shape::OFFERED.map(size_of))?;
    let shape = Shape::OFFERED
        .into_iter()
        .find(|&s| size_of(s) == data.len())
        .expect("read_small_file checked the size");
    build(shape, &data).map_err(|why| Error::BadFile { what, path: path.to_owned(), why })
}

/// Reads a whole small file and checks its length is one of `sizes`.
fn read_small_file<const N: usize>(
    path: &Path,
    what: &'static str,
    sizes: [usize; N],
) -> Result<Vec<u8>> {
    let mut f = fs::File::open(path).map_err(|source| Error::Io {
        op: "open",
        what,
        path: path.to_owned(),
        source,
    })?;
    let max = sizes.iter().copied().max().unwrap_or(0);
    let mut data = Vec::new();
    // Read at most one byte more than the largest valid size, so a huge file is not slurped.
    (&mut f).take(max as u64 + 1).read_to_end(&mut data).map_err(|source| Error::Io {
        op: "read",
        what,
        path: path.to_owned(),
        source,
    })?;
    if !sizes.contains(&data.len()) {
        let expected: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
        return Err(Error::BadFile {
            what,
            path: path.to_owned(),
            why: format!(
                "has {}{} bytes; expected one of {} bytes",
                data.len(),
                if data.len() > max { "+" } else { "" },
                expected.join(" or ")
            ),
        });
    }
    Ok(data)
}

/// IDQ reads the card in 32 KiB chunks when building a matrix.
pub const MAKE_MATRIX_CHUNK: usize = 32 * 1024;
/// Smallest allowed undersampling period (keep the low bit of every Nth byte): IDQ uses N ≥ 13
/// so that consecutive kept bits come from well-separated, independent samples.
pub const MIN_UNDERSAMPLING: usize = 13;

/// Collects `nbytes` bytes of debiased bits from `source` the way IDQ's matrix tool does: read
/// 32 KiB chunks, keep the lowest bit of every Nth byte of each chunk (LSB-first packing), then
/// von Neumann over consecutive pairs of kept bits.
pub fn collect_debiased(
    nbytes: usize,
    every_nth: usize,
    source: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
) -> Result<Vec<u8>> {
    if every_nth < MIN_UNDERSAMPLING {
        return Err(Error::Config(format!(
            "undersampling period {every_nth} is below the minimum {MIN_UNDERSAMPLING}"
        )));
    }
    let mut out: BitVec<u8, Lsb0> = BitVec::with_capacity(nbytes * 8);
    let mut chunk = vec![0u8; MAKE_MATRIX_CHUNK];
    let mut pending: Option<bool> = None;
    // A source that never yields a differing pair would loop forever: bound the work at 64×
    // the expected amount for an unbiased source (4 kept bits per output bit).
    let max_chunks = (nbytes * 8 * 4 * every_nth / MAKE_MATRIX_CHUNK + 1) * 64;
    for _ in 0..max_chunks {
        source(&mut chunk).map_err(|source| Error::Source { op: "read card bytes", source })?;
        for kept in chunk.iter().step_by(every_nth).map(|b| b & 1 == 1) {
            match pending.take() {
                None => pending = Some(kept),
                Some(first) if first != kept => out.push(first),
                Some(_) => {}
            }
            if out.len() == nbytes * 8 {
                return Ok(out.into_vec());
            }
        }
        // IDQ processes each chunk on its own: an odd bit left at a chunk's end is dropped.
        pending = None;
    }
    Err(Error::Config(format!(
        "the source gave too few differing bit pairs to fill {nbytes} bytes (stuck source?)"
    )))
}

/// Builds an extractor matrix as IDQ's tool does: `elementary` ≥ 2 elementary matrices, each from
/// [`collect_debiased`], XORed together. Returns n·k/8 bytes in IDQ's layout.
pub fn make_matrix(
    shape: Shape,
    elementary: usize,
    every_nth: usize,
    source: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
) -> Result<Vec<u8>> {
    xor_layers(shape.matrix_bytes(), elementary, every_nth, source)
}

/// XOR of `layers` ≥ 2 independent debiased strings of `len` bytes.
pub(super) fn xor_layers(
    len: usize,
    layers: usize,
    every_nth: usize,
    source: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
) -> Result<Vec<u8>> {
    if layers < 2 {
        return Err(Error::Config(format!("need at least 2 elementary matrices, got {layers}")));
    }
    let mut acc = vec![0u8; len];
    for _ in 0..layers {
        let layer = collect_debiased(len, every_nth, source)?;
        acc.iter_mut().zip(&layer).for_each(|(a, b)| *a ^= b);
    }
    Ok(acc)
}

/// Writes `data` to `path` with mode 0600, atomically (temporary file in the same directory, then
/// rename), creating the directory (0700) if needed. An existing file is replaced.
pub fn write_secret_file(path: &Path, what: &'static str, data: &[u8]) -> Result<()> {
    let io_err = |op: &'static str, p: &Path| {
        let p: PathBuf = p.to_owned();
        move |source| Error::Io { op, what, path: p, source }
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create directory", dir))?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    // A temporary file left by a crashed run with the same pid would block create_new; removing
    // it does not follow symlinks, and create_new (O_EXCL) refuses anything that reappears.
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    let res = f
        .write_all(data)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)))
        .map_err(io_err("write", &tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err("rename into place", path)));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}
