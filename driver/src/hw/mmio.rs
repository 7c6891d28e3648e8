//! Bounds-checked, aligned, volatile 32-bit access to a memory-mapped BAR.
//!
//! This is the only place the driver touches device memory. A BAR's bytes can change under us and
//! reads have side effects (a FIFO data register pops a word), so no Rust reference into the
//! mapping is ever made: each access checks its offset against the BAR length and its 4-byte
//! alignment, then does exactly one volatile 32-bit load or store through a raw pointer (the shape
//! of ixy.rs's `get_reg32`/`set_reg32`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use memmap2::MmapRaw;

use super::{Error, Result};

/// A mapped BAR (or any mapping treated like one).
#[derive(Debug)]
pub struct Mmio {
    map: MmapRaw,
    /// Usable length: the BAR's size, which can be less than the (page-rounded) mapping.
    len: u64,
    bar: u8,
    device: String,
}

impl Mmio {
    /// Wraps a mapping of BAR `bar` on `device`; only the first `len` bytes are accessible.
    ///
    /// Fails if `len` exceeds the mapping or the mapping is not 4-byte aligned (mmap returns
    /// page-aligned addresses, so that would be a caller bug).
    pub fn new(map: MmapRaw, len: u64, bar: u8, device: &str) -> Result<Mmio> {
        let map_len = u64::try_from(map.len()).unwrap_or(u64::MAX);
        if len > map_len {
            return Err(Error::OutOfBounds {
                device: device.to_owned(),
                bar,
                offset: len,
                len: map_len,
            });
        }
        if map.as_ptr().align_offset(4) != 0 {
            return Err(Error::Unaligned { bar, offset: map.as_ptr() as u64 });
        }
        Ok(Mmio { map, len, bar, device: device.to_owned() })
    }

    /// The usable length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks a register offset and returns the pointer to it.
    fn reg(&self, offset: u64) -> Result<*mut u32> {
        let offset = check_reg(&self.device, self.bar, offset, self.len)?;
        // wrapping_add: pointer arithmetic without an `unsafe` claim; the bounds check above is
        // what makes the result point inside the mapping. The cast is aligned: the base is
        // checked 4-aligned in `new` and the offset is a multiple of 4.
        #[allow(clippy::cast_ptr_alignment)]
        Ok(self.map.as_mut_ptr().wrapping_add(offset).cast::<u32>())
    }

    /// One volatile 32-bit load from `offset`.
    pub fn read32(&self, offset: u64) -> Result<u32> {
        let p = self.reg(offset)?;
        // SAFETY: `reg` checked that [offset, offset + 4) lies inside the live mapping owned by
        // `self.map`, and that offset is a multiple of 4 from a 4-aligned base, so `p` is valid
        // and aligned for a u32. The access is volatile through a raw pointer: no reference to
        // device memory is created and the compiler cannot merge, split or elide it.
        Ok(unsafe { std::ptr::read_volatile(p) })
    }

    /// One volatile 32-bit store to `offset`.
    pub fn write32(&self, offset: u64, value: u32) -> Result<()> {
        let p = self.reg(offset)?;
        // SAFETY: as in `read32`: in bounds, aligned, a single volatile store through a raw pointer.
        unsafe { std::ptr::write_volatile(p, value) };
        Ok(())
    }
}

/// How a backend reaches one BAR.
#[derive(Debug)]
pub enum BarAccess {
    /// mmapped: one volatile access per register.
    Mapped(Mmio),
    /// Not mmappable (an I/O-port BAR, or a region the kernel will not map): one 4-byte
    /// pread/pwrite per register on a file whose bytes at `base..base + len` are the BAR (a VFIO
    /// device fd region, a sysfs `resourceN` file); the kernel turns it into one 32-bit access.
    File { file: Arc<File>, base: u64, len: u64, bar: u8, device: String },
}

impl BarAccess {
    /// The BAR's size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            BarAccess::Mapped(m) => m.len(),
            BarAccess::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, BarAccess::Mapped(_))
    }

    pub fn read32(&self, offset: u64) -> Result<u32> {
        match self {
            BarAccess::Mapped(m) => m.read32(offset),
            BarAccess::File { file, base, len, bar, device } => {
                check_reg(device, *bar, offset, *len)?;
                let mut b = [0u8; 4];
                file.read_exact_at(&mut b, base + offset).map_err(|source| Error::Io {
                    op: format!("read register {offset:#x} of BAR {bar}"),
                    device: device.clone(),
                    source,
                })?;
                Ok(u32::from_le_bytes(b))
            }
        }
    }

    pub fn write32(&self, offset: u64, value: u32) -> Result<()> {
        match self {
            BarAccess::Mapped(m) => m.write32(offset, value),
            BarAccess::File { file, base, len, bar, device } => {
                check_reg(device, *bar, offset, *len)?;
                file.write_all_at(&value.to_le_bytes(), base + offset).map_err(|source| Error::Io {
                    op: format!("write register {offset:#x} of BAR {bar}"),
                    device: device.clone(),
                    source,
                })
            }
        }
    }
}

/// Checks that a 32-bit register at `offset` is 4-byte aligned and lies inside a BAR of `len`
/// bytes; returns the offset as a usize. Shared by every backend (mapped or read/write-based).
pub fn check_reg(device: &str, bar: u8, offset: u64, len: u64) -> Result<usize> {
    if !offset.is_multiple_of(4) {
        return Err(Error::Unaligned { bar, offset });
    }
    let out = || Error::OutOfBounds { device: device.to_owned(), bar, offset, len };
    if offset.checked_add(4).is_none_or(|end| end > len) {
        return Err(out());
    }
    usize::try_from(offset).map_err(|_| out())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(len: usize, usable: u64) -> Mmio {
        let map = memmap2::MmapOptions::new().len(len).map_anon().unwrap();
        Mmio::new(MmapRaw::from(map), usable, 1, "test:anon").unwrap()
    }

    #[test]
    fn reads_back_what_was_written() {
        let m = anon(4096, 64);
        m.write32(0x3c, 0xdead_beef).unwrap();
        m.write32(0x00, 1).unwrap();
        assert_eq!(m.read32(0x3c).unwrap(), 0xdead_beef);
        assert_eq!(m.read32(0x00).unwrap(), 1);
        assert_eq!(m.read32(0x04).unwrap(), 0, "untouched register of a fresh anonymous map");
    }

    #[test]
    fn last_register_in_bounds_and_the_next_one_out() {
        let m = anon(4096, 64);
        assert!(m.read32(60).is_ok());
        // 64 is inside the page mapping but outside the 64-byte BAR: refused.
        assert!(matches!(
            m.read32(64),
            Err(Error::OutOfBounds { offset: 64, len: 64, bar: 1, .. })
        ));
        assert!(matches!(m.write32(4096, 0), Err(Error::OutOfBounds { .. })));
        assert!(matches!(m.read32(u64::MAX - 3), Err(Error::OutOfBounds { .. })));
    }

    #[test]
    fn unaligned_offsets_are_refused_and_change_nothing() {
        let m = anon(4096, 4096);
        m.write32(0, 0x1122_3344).unwrap();
        m.write32(4, 0x5566_7788).unwrap();
        for off in [1, 2, 3, 5, 4094, u64::MAX] {
            assert!(matches!(m.write32(off, 0), Err(Error::Unaligned { .. })), "offset {off}");
            assert!(matches!(m.read32(off), Err(Error::Unaligned { .. })), "offset {off}");
        }
        assert_eq!(m.read32(0).unwrap(), 0x1122_3344);
        assert_eq!(m.read32(4).unwrap(), 0x5566_7788);
    }

    #[test]
    fn usable_length_cannot_exceed_the_mapping() {
        let map = memmap2::MmapOptions::new().len(4096).map_anon().unwrap();
        let err = Mmio::new(MmapRaw::from(map), 8192, 0, "test:anon").unwrap_err();
        assert!(err.to_string().contains("outside BAR 0"), "{err}");
    }

    #[test]
    fn file_backed_bar_checks_like_a_mapped_one() {
        let mut tmp = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut tmp, &[0u8; 256]).unwrap();
        let bar = BarAccess::File {
            file: Arc::new(tmp),
            base: 128,
            len: 64,
            bar: 2,
            device: "test:file".into(),
        };
        bar.write32(60, 0xa5a5_0001).unwrap();
        assert_eq!(bar.read32(60).unwrap(), 0xa5a5_0001);
        assert!(matches!(bar.read32(64), Err(Error::OutOfBounds { bar: 2, .. })));
        assert!(matches!(bar.write32(2, 0), Err(Error::Unaligned { .. })));
        assert!(!bar.is_mapped());
        assert_eq!(bar.len(), 64);
    }

    #[test]
    fn empty_bar_refuses_every_access() {
        let m = anon(4096, 0);
        assert!(m.is_empty());
        assert!(matches!(m.read32(0), Err(Error::OutOfBounds { .. })));
    }
}
