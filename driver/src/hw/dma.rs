//! Host memory that a device writes into by DMA.
//!
//! The device (or the simulator's DMA engine) may write these bytes at any time, so no Rust
//! reference into the buffer is ever made: all access goes through raw pointers with volatile
//! copies, and the buffer hands out its address only as a raw pointer.

use std::ptr::NonNull;

/// Page-aligned, zero-initialised anonymous memory plus the IOVA the device sees it at.
#[derive(Debug)]
pub struct DmaBuffer {
    map: memmap2::MmapMut,
    len: usize,
    iova: u64,
}

/// The host page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

impl DmaBuffer {
    /// Allocates `len` bytes rounded up to whole pages. The IOVA is assigned by the backend.
    pub fn allocate(len: usize, iova: u64) -> std::io::Result<DmaBuffer> {
        let page = page_size();
        let len = len.max(1).div_ceil(page) * page;
        let map = memmap2::MmapOptions::new().len(len).map_anon()?;
        Ok(DmaBuffer { map, len, iova })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The host virtual address, for the backend's DMA map call and the simulator's engine.
    pub fn as_ptr(&self) -> NonNull<u8> {
        // The MmapMut is only used to own the mapping; it is never dereferenced as a slice.
        NonNull::new(self.map.as_ptr().cast_mut()).expect("mmap never returns null")
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the buffer.
    ///
    /// # Panics
    /// If the range is outside the buffer (a caller bug, never peer-controlled).
    pub fn read(&self, offset: usize, dst: &mut [u8]) {
        let end = offset.checked_add(dst.len()).expect("dma read range overflows");
        assert!(end <= self.len, "dma read {offset}..{end} outside buffer of {}", self.len);
        let src = self.as_ptr().as_ptr();
        for (i, d) in dst.iter_mut().enumerate() {
            let p = src.wrapping_add(offset + i);
            // SAFETY: offset + i < end <= self.len, so `p` is inside the live mapping; a volatile
            // read of a u8 has no alignment requirement and never creates a reference into device
            // memory.
            *d = unsafe { std::ptr::read_volatile(p) };
        }
    }

    /// Copies `src` into the buffer at `offset` (descriptor rings are written this way).
    ///
    /// # Panics
    /// If the range is outside the buffer.
    pub fn write(&self, offset: usize, src: &[u8]) {
        let end = offset.checked_add(src.len()).expect("dma write range overflows");
        assert!(end <= self.len, "dma write {offset}..{end} outside buffer of {}", self.len);
        let dst = self.as_ptr().as_ptr();
        for (i, s) in src.iter().enumerate() {
            let p = dst.wrapping_add(offset + i);
            // SAFETY: as in `read`: in bounds of the live mapping, byte-sized volatile store.
            unsafe { std::ptr::write_volatile(p, *s) };
        }
    }
}

// SAFETY: the buffer owns its mapping; access is through raw pointers with volatile operations, so
// moving it to another thread cannot create aliasing references.
unsafe impl Send for DmaBuffer {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_pages_and_round_trips() {
        let b = DmaBuffer::allocate(10, 0x1000).unwrap();
        assert_eq!(b.len() % page_size(), 0);
        assert_eq!(b.iova(), 0x1000);
        b.write(3, b"abc");
        let mut out = [0u8; 5];
        b.read(2, &mut out);
        assert_eq!(&out, b"\0abc\0");
    }

    #[test]
    #[should_panic(expected = "outside buffer")]
    fn out_of_range_read_panics() {
        let b = DmaBuffer::allocate(1, 0).unwrap();
        let mut out = vec![0u8; b.len() + 1];
        b.read(0, &mut out);
    }
}
