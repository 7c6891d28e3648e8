//! The one module that touches the shared mapping.
//!
//! The file is shared with a peer process we do not trust, so this module creates no Rust reference
//! into the mapping: header fields are accessed through short-lived atomics built from raw pointers,
//! and data moves with volatile copies. The one exception lives in the consumer: a
//! [`super::Lease`] hands the kernel a `&[u8]` over a lent range (for `writev`/`write`), with its
//! reason next to it. Offsets come from our own layout constants or from indices
//! that the callers have already reduced modulo a validated capacity; every accessor still checks
//! its range, so a logic error here is a panic, never an out-of-bounds access.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::layout::DATA_OFFSET;
use super::sigbus::Registration;
use super::{Error, Result, Role};

/// A `MAP_SHARED` mapping of a whole ring file, registered with the SIGBUS handler
/// ([`super::sigbus`]) for as long as it is mapped.
#[derive(Debug)]
pub(crate) struct Shared {
    // Declared before `map`: fields drop in order, so the registration is withdrawn before the
    // range is unmapped (and possibly reused by another mapping).
    reg: Registration,
    map: memmap2::MmapRaw,
    len: u64,
}

impl Shared {
    /// Maps `len` bytes of `file` read-write.
    pub(crate) fn map(file: &File, len: u64, path: &Path) -> Result<Shared> {
        let size = usize::try_from(len).map_err(|_| Error::Truncated { path: path.into(), len })?;
        let map = memmap2::MmapOptions::new()
            .len(size)
            .map_raw(file)
            .map_err(|e| Error::io("map", path, e))?;
        let reg = Registration::new(map.as_ptr(), size).ok_or_else(|| {
            Error::io(
                "register the mapping (SIGBUS handler) of",
                path,
                std::io::Error::other(format!(
                    "cannot install the SIGBUS handler, or {} ring mappings are live",
                    super::sigbus::SLOTS
                )),
            )
        })?;
        Ok(Shared { reg, map, len })
    }

    /// The file was truncated under the mapping and a SIGBUS replaced it with anonymous memory
    /// (see [`super::sigbus`]): everything read since is zeros, not the peer's bytes, and nothing
    /// written reaches the file. Callers check it after every copy out and before publishing.
    pub(crate) fn broken(&self) -> bool {
        self.reg.broken()
    }

    /// The address of data-area offset `at`, valid for `len` bytes (checked against the mapping).
    /// Only [`super::Lease`] uses it, to lend a range to the kernel.
    pub(crate) fn data_ptr(&self, at: u64, len: usize) -> *const u8 {
        self.ptr(DATA_OFFSET + at, len as u64)
    }

    fn ptr(&self, off: u64, size: u64) -> *mut u8 {
        let end = off.checked_add(size).expect("shared offset overflow");
        assert!(end <= self.len, "shared access {off:#x}+{size} beyond mapping of {}", self.len);
        // `off < len <= isize::MAX` because the mapping exists; the pointer stays inside it.
        self.map.as_mut_ptr().wrapping_add(off as usize)
    }

    fn word(&self, off: u64, size: u64) -> *mut u8 {
        assert!(off.is_multiple_of(size), "misaligned shared word at {off:#x}");
        self.ptr(off, size)
    }

    pub(crate) fn load64(&self, off: u64, order: Ordering) -> u64 {
        let p = self.word(off, 8).cast::<u64>();
        // SAFETY: `p` is 8-aligned (page-aligned base + checked offset) and inside the live
        // mapping; the atomic is used only for this one load and no other reference is made.
        unsafe { AtomicU64::from_ptr(p) }.load(order)
    }

    pub(crate) fn store64(&self, off: u64, value: u64, order: Ordering) {
        let p = self.word(off, 8).cast::<u64>();
        // SAFETY: as in `load64`.
        unsafe { AtomicU64::from_ptr(p) }.store(value, order)
    }

    pub(crate) fn load32(&self, off: u64, order: Ordering) -> u32 {
        let p = self.word(off, 4).cast::<u32>();
        // SAFETY: 4-aligned, in bounds, transient atomic as in `load64`.
        unsafe { AtomicU32::from_ptr(p) }.load(order)
    }

    pub(crate) fn store32(&self, off: u64, value: u32, order: Ordering) {
        let p = self.word(off, 4).cast::<u32>();
        // SAFETY: as in `load32`.
        unsafe { AtomicU32::from_ptr(p) }.store(value, order)
    }

    /// Copies `dst.len()` bytes out of the data area starting at data offset `at`.
    /// The caller guarantees `at + dst.len() <= capacity` (wrap-around is split by the caller).
    pub(crate) fn read_data(&self, at: u64, dst: &mut [u8]) {
        let src = self.ptr(DATA_OFFSET + at, dst.len() as u64).cast_const();
        // SAFETY: `ptr` checked that the whole range lies inside the mapping; `dst` is private
        // memory that cannot overlap the shared mapping.
        unsafe { copy_from_shared(src, dst.as_mut_ptr(), dst.len()) }
    }

    /// Appends `len` bytes from the data area starting at data offset `at` to `out` (same range
    /// contract as `read_data`), copying straight into its spare capacity: no zero-fill of a
    /// buffer that is about to be overwritten (a measurable share of a 64 KiB HTTP response).
    pub(crate) fn read_data_append(&self, at: u64, len: usize, out: &mut Vec<u8>) {
        let src = self.ptr(DATA_OFFSET + at, len as u64).cast_const();
        out.reserve(len);
        let spare = &mut out.spare_capacity_mut()[..len];
        // SAFETY: `ptr` checked that the source range lies inside the mapping; `spare` is `len`
        // bytes of `out`'s private allocation (reserved above), which cannot overlap the mapping.
        unsafe { copy_from_shared(src, spare.as_mut_ptr().cast::<u8>(), len) };
        let new_len = out.len() + len;
        // SAFETY: the `len` bytes after the old length were all written by the copy above, and
        // `new_len <= capacity` because of the `reserve`.
        unsafe { out.set_len(new_len) };
    }

    /// Copies `src` into the data area starting at data offset `at` (same contract as `read_data`).
    pub(crate) fn write_data(&self, at: u64, src: &[u8]) {
        let dst = self.ptr(DATA_OFFSET + at, src.len() as u64);
        // SAFETY: as in `read_data`, with the roles swapped.
        unsafe { copy_to_shared(src.as_ptr(), dst, src.len()) }
    }
}

/// The widest plain load/store the target always has: 16-byte SSE2 vectors on x86-64, else u64.
#[cfg(target_arch = "x86_64")]
type Word = std::arch::x86_64::__m128i;
#[cfg(not(target_arch = "x86_64"))]
type Word = u64;
const WORD: usize = std::mem::size_of::<Word>();

/// Which side of a copy is the shared mapping: only that side needs volatile accesses (the peer
/// is another process, so the compiler must not assume the memory is ours); the private side is
/// ordinary memory and is accessed with plain unaligned loads and stores.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SharedSide {
    Src,
    Dst,
}

/// Copies `len` bytes: single bytes until the shared side is `Word`-aligned, then aligned
/// volatile `Word` accesses on the shared side (four per step) paired with unaligned plain ones
/// on the private side, then the last bytes.
///
/// # Safety
/// `src` must be valid for `len` reads and `dst` for `len` writes, and the ranges must not overlap.
unsafe fn volatile_copy_impl(src: *const u8, dst: *mut u8, len: usize, shared: SharedSide) {
    let shared_addr = if shared == SharedSide::Src { src as usize } else { dst as usize };
    let head = ((WORD - shared_addr % WORD) % WORD).min(len);
    let mut i = 0;
    while i < head {
        // SAFETY: i < len: in range of both buffers per the function contract.
        unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
        i += 1;
    }
    while i + 4 * WORD <= len {
        // SAFETY: the 4 words lie inside both buffers; the shared side is WORD-aligned here
        // (volatile accesses need alignment), the private side uses unaligned accesses.
        unsafe {
            let s = src.add(i).cast::<Word>();
            let d = dst.add(i).cast::<Word>();
            if shared == SharedSide::Src {
                let w = [
                    s.read_volatile(),
                    s.add(1).read_volatile(),
                    s.add(2).read_volatile(),
                    s.add(3).read_volatile(),
                ];
                d.cast::<[Word; 4]>().write_unaligned(w);
            } else {
                let w = s.cast::<[Word; 4]>().read_unaligned();
                d.write_volatile(w[0]);
                d.add(1).write_volatile(w[1]);
                d.add(2).write_volatile(w[2]);
                d.add(3).write_volatile(w[3]);
            }
        }
        i += 4 * WORD;
    }
    while i < len {
        // SAFETY: i < len, in range of both buffers.
        unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
        i += 1;
    }
}

/// Copies out of the shared mapping into private memory.
///
/// # Safety
/// As for [`volatile_copy_impl`]; `src` is the shared side.
unsafe fn copy_from_shared(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: forwarded contract.
    unsafe { volatile_copy_impl(src, dst, len, SharedSide::Src) }
}

/// Copies private memory into the shared mapping.
///
/// # Safety
/// As for [`volatile_copy_impl`]; `dst` is the shared side.
unsafe fn copy_to_shared(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: forwarded contract.
    unsafe { volatile_copy_impl(src, dst, len, SharedSide::Dst) }
}

/// Takes the role's open-file-description lock: byte 0 of the file for the producer, byte 1 for
/// the consumer. OFD locks belong to the open file, so they conflict even inside one process and
/// vanish when the holder dies, which is what makes restart-after-crash work.
pub(crate) fn lock_role(file: &File, role: Role, path: &Path) -> Result<()> {
    let mut fl: libc::flock = zeroed_flock();
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = match role {
        Role::Producer => 0,
        Role::Consumer => 1,
    };
    fl.l_len = 1;
    // SAFETY: F_OFD_SETLK reads a valid, initialised `flock` through the pointer for the duration
    // of the call; the fd is open for the lifetime of `file`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => {
            Err(Error::AlreadyAttached { role, path: path.into() })
        }
        _ => Err(Error::io("lock", path, err)),
    }
}

fn zeroed_flock() -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers, for which all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::{copy_from_shared, copy_to_shared};

    #[test]
    fn ring_volatile_copy_matches_for_all_alignments() {
        let src: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for so in 0..16 {
            for d_o in 0..16 {
                for len in [0, 1, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 100, 150, 255] {
                    for copy in [copy_from_shared, copy_to_shared] {
                        let mut dst = vec![0u8; 300];
                        // SAFETY: both ranges are inside their vectors, which are distinct.
                        unsafe { copy(src.as_ptr().add(so), dst.as_mut_ptr().add(d_o), len) };
                        assert_eq!(
                            &dst[d_o..d_o + len],
                            &src[so..so + len],
                            "so={so} do={d_o} len={len}"
                        );
                        assert!(dst[..d_o].iter().all(|&b| b == 0));
                        assert!(dst[d_o + len..].iter().all(|&b| b == 0));
                    }
                }
            }
        }
    }
}
