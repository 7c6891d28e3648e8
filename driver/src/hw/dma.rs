//! Host memory that a device writes into by DMA.
//!
//! The device (or the simulator's DMA engine) may write these bytes at any time, so no Rust
//! reference into the buffer is ever made: all access goes through raw pointers with volatile
//! copies, and the buffer hands out its address only as a raw pointer.

use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

/// Page-aligned, zero-initialised anonymous memory plus the IOVA the device sees it at.
///
/// The mapping is reference-counted: a backend keeps a [`DmaBuffer::share`]d handle in its
/// DMA-map table, so the memory stays allocated until the backend has unmapped it, even if the
/// driver drops its handle first (the device can never write into freed memory).
#[derive(Debug)]
pub struct DmaBuffer {
    map: Arc<memmap2::MmapMut>,
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
        Ok(DmaBuffer { map: Arc::new(map), len, iova })
    }

    /// A second handle on the same memory (for the backend's DMA-map table).
    pub fn share(&self) -> DmaBuffer {
        DmaBuffer { map: Arc::clone(&self.map), len: self.len, iova: self.iova }
    }

    /// True if both handles name the same memory.
    pub fn same_memory(&self, other: &DmaBuffer) -> bool {
        Arc::ptr_eq(&self.map, &other.map)
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
    /// Call it only for bytes the device has finished writing (it reported the descriptor
    /// complete through a register read): the Acquire fence orders this copy after that read.
    ///
    /// # Panics
    /// If the range is outside the buffer (a caller bug, never peer-controlled).
    pub fn read(&self, offset: usize, dst: &mut [u8]) {
        let end = offset.checked_add(dst.len()).expect("dma read range overflows");
        assert!(end <= self.len, "dma read {offset}..{end} outside buffer of {}", self.len);
        fence(Ordering::Acquire);
        // SAFETY: offset <= end <= self.len, so the result stays inside the live mapping.
        let src = unsafe { self.as_ptr().as_ptr().add(offset) };
        // SAFETY: offset..end lies inside the live mapping (checked above; the Arc keeps it
        // mapped). `dst` is a Rust slice, which cannot overlap the mapping because no reference
        // into the mapping is ever created. The device does not write this range concurrently:
        // callers only read bytes the engine reported complete, and the fence orders the copy
        // after that report. No reference into the mapping is made; u8 needs no alignment.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
    }

    /// Copies `src` into the buffer at `offset` (descriptor rings are written this way; the
    /// simulator's engine writes card data this way). The Release fence makes the bytes visible
    /// before any later register write that hands them to the device.
    ///
    /// # Panics
    /// If the range is outside the buffer.
    pub fn write(&self, offset: usize, src: &[u8]) {
        let end = offset.checked_add(src.len()).expect("dma write range overflows");
        assert!(end <= self.len, "dma write {offset}..{end} outside buffer of {}", self.len);
        // SAFETY: offset <= end <= self.len, so the result stays inside the live mapping.
        let dst = unsafe { self.as_ptr().as_ptr().add(offset) };
        // SAFETY: in bounds of the live mapping (checked above); `src` is a Rust slice and so
        // cannot overlap the mapping, into which no reference is ever made; the device is not
        // reading this range while the driver prepares it (it is handed over only afterwards).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        fence(Ordering::Release);
    }
}

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
    fn shared_handle_keeps_the_memory() {
        let a = DmaBuffer::allocate(4096, 0x2000).unwrap();
        let b = a.share();
        assert!(a.same_memory(&b));
        assert!(!a.same_memory(&DmaBuffer::allocate(4096, 0x2000).unwrap()));
        a.write(100, b"xyz");
        drop(a);
        let mut out = [0u8; 3];
        b.read(100, &mut out);
        assert_eq!(&out, b"xyz");
    }

    #[test]
    #[should_panic(expected = "outside buffer")]
    fn out_of_range_read_panics() {
        let b = DmaBuffer::allocate(1, 0).unwrap();
        let mut out = vec![0u8; b.len() + 1];
        b.read(0, &mut out);
    }
}
