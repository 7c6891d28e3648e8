//! The VFIO backend: a card bound to vfio-pci, reached through the IOMMU.
//!
//! Opening follows the kernel's VFIO model (Documentation/driver-api/vfio.rst): a container
//! (`/dev/vfio/vfio`), the card's IOMMU group (`/dev/vfio/N`, which must be viable: every device in
//! it bound to vfio-pci or to nothing), then the device fd. On it: PCI config space (memory and
//! bus-master enable, read back), region info and mmap of the BARs, DMA mapping of pinned host
//! buffers at IOVAs we allocate, function reset, and interrupts delivered through an eventfd.
//!
//! vfio-ioctls does the ioctls for container, group, DMA map and IRQs. Config-space and
//! non-mmappable-BAR accesses go through our own pread/pwrite on the device fd because
//! vfio-ioctls' `region_read`/`region_write` only log failures. Every failure becomes an
//! [`Error`] naming the device and the cause; nothing here panics.

use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vfio_bindings::bindings::vfio::{
    VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_PCI_MSI_IRQ_INDEX, VFIO_REGION_INFO_FLAG_MMAP,
};
use vfio_ioctls::{VfioContainer, VfioError};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::dma::page_size;
use super::mmio::{BarAccess, Mmio};
use super::pci::{cfg, describe_peers, Sysfs, MODULE_CARD};
use super::{poll_readable, Device, DeviceInfo, DmaBuffer, Error, PciAddress, PciId, Result};

// VFIO_DEVICE_RESET = _IO(VFIO_TYPE, VFIO_BASE + 11) with VFIO_TYPE ';' and VFIO_BASE 100
// (include/uapi/linux/vfio.h). Issued directly so a device without reset gets an error, where
// vfio-ioctls' `reset()` silently does nothing.
nix::ioctl_none!(vfio_device_reset, b';', 111);

/// The lowest IOVA handed out: IOVA 0 stays unmapped so a zeroed descriptor address faults
/// instead of reaching a buffer.
const IOVA_BASE: u64 = 0x10_0000;
/// One past the highest IOVA: x86 reserves 0xfee00000.. for MSI (the IOMMU group's
/// `reserved_regions`), and staying under 4 GiB suits devices with 32-bit DMA.
const IOVA_LIMIT: u64 = 0xfee0_0000;

/// First-fit IOVA allocator over [base, limit), in page-multiple extents.
#[derive(Debug)]
pub(crate) struct IovaAllocator {
    /// Free extents below `next`, by start address (kept merged).
    free: BTreeMap<u64, u64>,
    next: u64,
    limit: u64,
}

impl IovaAllocator {
    pub(crate) fn new(base: u64, limit: u64) -> IovaAllocator {
        IovaAllocator { free: BTreeMap::new(), next: base, limit }
    }

    /// An IOVA for `len` bytes (`len` a multiple of the page size), or None if the window is full.
    pub(crate) fn alloc(&mut self, len: u64) -> Option<u64> {
        if len == 0 {
            return None;
        }
        let hit = self.free.iter().find(|(_, &l)| l >= len).map(|(&s, &l)| (s, l));
        if let Some((start, l)) = hit {
            self.free.remove(&start);
            if l > len {
                self.free.insert(start + len, l - len);
            }
            return Some(start);
        }
        let end = self.next.checked_add(len).filter(|&e| e <= self.limit)?;
        let start = self.next;
        self.next = end;
        Some(start)
    }

    /// Returns an extent; merges it with free neighbours and with the unallocated top.
    pub(crate) fn free(&mut self, start: u64, len: u64) {
        let mut start = start;
        let mut len = len;
        if let Some((&ps, &pl)) = self.free.range(..start).next_back() {
            if ps + pl == start {
                self.free.remove(&ps);
                start = ps;
                len += pl;
            }
        }
        if let Some(&nl) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += nl;
        }
        if start + len == self.next {
            self.next = start;
        } else {
            self.free.insert(start, len);
        }
    }
}

/// Which interrupt the device signals through our eventfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqMode {
    /// MSI vector 0: edge-like, nothing to unmask.
    Msi,
    /// Legacy INTx: VFIO masks the line when it fires; it is unmasked before the next wait.
    Intx,
}

#[derive(Debug)]
struct Irq {
    mode: IrqMode,
    fd: EventFd,
    /// INTx fired since the last unmask.
    needs_unmask: bool,
}

/// A PCI device opened through VFIO.
pub struct VfioDevice {
    info: DeviceInfo,
    addr: PciAddress,
    sysfs_path: PathBuf,
    bars: [Option<BarAccess>; 6],
    /// Dropped by hand: vfio-ioctls' Drop panics if the device's sysfs entry is gone (unplug).
    dev: ManuallyDrop<vfio_ioctls::VfioDevice>,
    /// A duplicate of the device fd for config-space and BAR pread/pwrite with real error reports.
    dev_file: Arc<std::fs::File>,
    container: Arc<VfioContainer>,
    iova: IovaAllocator,
    /// Live DMA mappings: IOVA -> length.
    mapped: BTreeMap<u64, usize>,
    irq: Option<Irq>,
}

impl std::fmt::Debug for VfioDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioDevice")
            .field("info", &self.info)
            .field("bars", &self.bars)
            .field("mapped", &self.mapped)
            .field("irq", &self.irq)
            .finish_non_exhaustive()
    }
}

impl VfioDevice {
    /// Opens the device at `addr`, which must be bound to vfio-pci, and enables memory decoding
    /// (bus mastering follows with the first DMA mapping).
    pub fn open(addr: PciAddress) -> Result<VfioDevice> {
        Self::open_in(&Sysfs::default(), addr)
    }

    fn open_in(sysfs: &Sysfs, addr: PciAddress) -> Result<VfioDevice> {
        let name = format!("vfio:{addr}");
        let dir = sysfs.require_driver(addr, "vfio-pci")?;
        let group = sysfs.iommu_group(addr).ok_or_else(|| {
            let module_card = sysfs.id(addr).is_ok_and(|id| id == MODULE_CARD);
            let hint = if module_card {
                "; module cards also work without an IOMMU through uio_pci_generic (--device uio:ADDR)"
                    .replace("ADDR", &addr.to_string())
            } else {
                String::new()
            };
            Error::NoIommuGroup { device: addr.to_string(), hint }
        })?;
        let container =
            VfioContainer::new(None).map_err(|e| open_error(&name, sysfs, addr, group, e))?;
        let container = Arc::new(container);
        let dev = vfio_ioctls::VfioDevice::new(&dir, container.clone(), false)
            .map_err(|e| open_error(&name, sysfs, addr, group, e))?;
        // SAFETY: the fd is the live device fd owned by `dev`; it is only borrowed to duplicate it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(dev.as_raw_fd()) };
        let dev_file = borrowed
            .try_clone_to_owned()
            .map(|fd| Arc::new(std::fs::File::from(fd)))
            .map_err(|source| Error::Io {
                op: "duplicate the VFIO device fd".into(),
                device: name.clone(),
                source,
            })?;

        let mut this = VfioDevice {
            info: DeviceInfo {
                name,
                id: PciId { vendor: 0, device: 0 },
                bars: [None; 6],
                simulated: false,
                dma: true,
            },
            addr,
            sysfs_path: dir,
            bars: Default::default(),
            dev: ManuallyDrop::new(dev),
            dev_file,
            container,
            iova: IovaAllocator::new(IOVA_BASE, IOVA_LIMIT),
            mapped: BTreeMap::new(),
            irq: None,
        };
        this.info.id = PciId {
            vendor: this.config_read16(cfg::VENDOR_ID)?,
            device: this.config_read16(cfg::DEVICE_ID)?,
        };
        this.set_command_bits(cfg::CMD_MEMORY, "memory decoding")?;
        this.map_bars()?;
        Ok(this)
    }

    pub fn address(&self) -> PciAddress {
        self.addr
    }

    fn raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }

    fn io_err(&self, op: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { op: op.into(), device: self.info.name.clone(), source }
    }

    /// Reads `buf.len()` bytes of region `index` at `offset`, failing loudly on a short read.
    fn region_pread(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let base = self.dev.get_region_offset(index);
        let n = buf.len();
        let what = || format!("read {n} bytes at {offset:#x} of VFIO region {index}");
        let pos = base.checked_add(offset).filter(|&p| i64::try_from(p).is_ok());
        let pos =
            pos.ok_or_else(|| self.io_err(what(), std::io::ErrorKind::InvalidInput.into()))?;
        self.dev_file.read_exact_at(buf, pos).map_err(|e| self.io_err(what(), e))
    }

    fn region_pwrite(&self, index: u32, offset: u64, buf: &[u8]) -> Result<()> {
        let base = self.dev.get_region_offset(index);
        let what = || format!("write {} bytes at {offset:#x} of VFIO region {index}", buf.len());
        let pos = base.checked_add(offset).filter(|&p| i64::try_from(p).is_ok());
        let pos =
            pos.ok_or_else(|| self.io_err(what(), std::io::ErrorKind::InvalidInput.into()))?;
        self.dev_file.write_all_at(buf, pos).map_err(|e| self.io_err(what(), e))
    }

    /// A 16-bit read from PCI config space.
    pub fn config_read16(&self, offset: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.region_pread(VFIO_PCI_CONFIG_REGION_INDEX, offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// A 32-bit read from PCI config space.
    pub fn config_read32(&self, offset: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.region_pread(VFIO_PCI_CONFIG_REGION_INDEX, offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// A 16-bit write to PCI config space (VFIO virtualises parts of it: read back what matters).
    pub fn config_write16(&self, offset: u64, value: u16) -> Result<()> {
        self.region_pwrite(VFIO_PCI_CONFIG_REGION_INDEX, offset, &value.to_le_bytes())
    }

    /// Sets bits of the command register and checks they stuck (VFIO virtualises parts of config
    /// space, and a write that silently did nothing must not go unnoticed).
    fn set_command_bits(&self, bits: u16, what: &str) -> Result<()> {
        let cmd = self.config_read16(cfg::COMMAND)?;
        if cmd & bits != bits {
            self.config_write16(cfg::COMMAND, cmd | bits)?;
        }
        let back = self.config_read16(cfg::COMMAND)?;
        if back & bits != bits {
            return Err(self.io_err(
                format!(
                    "enable {what} (command register reads {back:#06x} after writing {:#06x})",
                    cmd | bits
                ),
                std::io::ErrorKind::Other.into(),
            ));
        }
        Ok(())
    }

    /// Sets memory-space and bus-master enable in the command register and checks they stuck.
    /// (Open enables memory only; the first DMA mapping enables bus mastering, so `probe` leaves
    /// a card that never did DMA as it found it.)
    pub fn enable_memory_and_bus_master(&self) -> Result<()> {
        self.set_command_bits(
            cfg::CMD_MEMORY | cfg::CMD_BUS_MASTER,
            "memory decoding and bus mastering",
        )
    }

    /// Maps every present BAR: mmap where VFIO allows it, else register access by pread/pwrite.
    fn map_bars(&mut self) -> Result<()> {
        let page = page_size() as u64;
        for bar in 0..6u8 {
            let index = VFIO_PCI_BAR0_REGION_INDEX + u32::from(bar);
            let size = self.dev.get_region_size(index);
            if size == 0 {
                continue;
            }
            let region_offset = self.dev.get_region_offset(index);
            let mut access = self.read_write_access(bar, size);
            if self.dev.get_region_flags(index) & VFIO_REGION_INFO_FLAG_MMAP != 0 {
                let map_len = size.div_ceil(page).saturating_mul(page);
                let mapped = usize::try_from(map_len).ok().and_then(|len| {
                    memmap2::MmapOptions::new()
                        .offset(region_offset)
                        .len(len)
                        .map_raw(self.raw_fd())
                        .ok()
                });
                match mapped {
                    Some(map) => {
                        access = BarAccess::Mapped(Mmio::new(map, size, bar, &self.info.name)?)
                    }
                    // e.g. an MSI-X table inside the BAR (sparse mmap): fall back to pread/pwrite.
                    None => {
                        tracing::debug!(device = %self.info.name, bar, "BAR not mmappable; using pread/pwrite")
                    }
                }
            }
            self.bars[usize::from(bar)] = Some(access);
            self.info.bars[usize::from(bar)] = Some(size);
        }
        Ok(())
    }

    /// Register access to BAR `bar` (`len` bytes) by pread/pwrite on the device fd.
    fn read_write_access(&self, bar: u8, len: u64) -> BarAccess {
        let index = VFIO_PCI_BAR0_REGION_INDEX + u32::from(bar);
        BarAccess::File {
            file: self.dev_file.clone(),
            base: self.dev.get_region_offset(index),
            len,
            bar,
            device: self.info.name.clone(),
        }
    }

    /// Switches BAR `bar` to pread/pwrite access on the device fd, the path used when VFIO will
    /// not mmap a BAR. Public so the QEMU guest test can prove that path on a real kernel.
    pub fn use_read_write_access(&mut self, bar: u8) -> Result<()> {
        let access = self.read_write_access(bar, self.bar(bar)?.len());
        if let Some(slot) = self.bars.get_mut(usize::from(bar)) {
            *slot = Some(access);
        }
        Ok(())
    }

    /// Whether BAR `bar` is mmapped (as opposed to reached by pread/pwrite).
    pub fn bar_is_mapped(&self, bar: u8) -> bool {
        matches!(self.bars.get(usize::from(bar)), Some(Some(BarAccess::Mapped(_))))
    }

    fn bar(&self, bar: u8) -> Result<&BarAccess> {
        self.bars
            .get(usize::from(bar))
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::NoSuchBar { device: self.info.name.clone(), bar })
    }

    /// Chooses and enables the interrupt the eventfd receives (replacing a previous choice).
    pub fn enable_interrupts(&mut self, mode: IrqMode) -> Result<()> {
        self.disable_interrupts()?;
        let index = irq_index(mode);
        let available = self.dev.get_irq_info(index).map_or(0, |i| i.count);
        if available == 0 {
            return Err(Error::Unsupported {
                backend: "vfio",
                what: "this interrupt type",
                why: format!("{} offers no {mode:?} interrupt", self.info.name),
            });
        }
        let fd = EventFd::new(EFD_NONBLOCK)
            .map_err(|e| self.io_err("create an interrupt eventfd", e))?;
        self.dev
            .enable_irq(index, vec![&fd])
            .map_err(|e| self.io_err(format!("enable {mode:?} interrupts"), other(e)))?;
        self.irq = Some(Irq { mode, fd, needs_unmask: false });
        Ok(())
    }

    /// Stops interrupt delivery.
    pub fn disable_interrupts(&mut self) -> Result<()> {
        if let Some(irq) = self.irq.take() {
            let mode = irq.mode;
            self.dev
                .disable_irq(irq_index(mode))
                .map_err(|e| self.io_err(format!("disable {mode:?} interrupts"), other(e)))?;
        }
        Ok(())
    }

    /// The live DMA mappings as (IOVA, length), for diagnostics.
    pub fn dma_mappings(&self) -> Vec<(u64, usize)> {
        self.mapped.iter().map(|(&i, &l)| (i, l)).collect()
    }

    fn memlock_error(&self, needed: u64) -> Error {
        let limit =
            match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK) {
                Ok((soft, _)) if soft == nix::sys::resource::RLIM_INFINITY => {
                    "unlimited".to_owned()
                }
                Ok((soft, _)) => format!("{soft} bytes"),
                Err(e) => format!("unknown ({e})"),
            };
        Error::MemlockLimit { device: self.info.name.clone(), limit, needed }
    }
}

fn irq_index(mode: IrqMode) -> u32 {
    match mode {
        IrqMode::Msi => VFIO_PCI_MSI_IRQ_INDEX,
        IrqMode::Intx => VFIO_PCI_INTX_IRQ_INDEX,
    }
}

fn other(e: VfioError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Turns a vfio-ioctls failure while opening into the cause a user can act on.
fn open_error(name: &str, sysfs: &Sysfs, addr: PciAddress, group: u32, e: VfioError) -> Error {
    use std::io::ErrorKind;
    let io = |op: String, source: std::io::Error| Error::Io { op, device: name.to_owned(), source };
    let open_failed = |path: String, source: std::io::Error| match source.kind() {
        ErrorKind::PermissionDenied => Error::PermissionDenied { device: addr.to_string(), path },
        ErrorKind::NotFound => io(format!("open {path} (is the vfio-pci module loaded?)"), source),
        _ if source.raw_os_error() == Some(libc::EBUSY) => {
            io(format!("open {path} (another process holds IOMMU group {group})"), source)
        }
        _ => io(format!("open {path}"), source),
    };
    match e {
        VfioError::OpenContainer(source) => open_failed("/dev/vfio/vfio".into(), source),
        VfioError::OpenGroup(source, _) => open_failed(format!("/dev/vfio/{group}"), source),
        VfioError::GroupViable => Error::GroupNotViable {
            device: addr.to_string(),
            group,
            others: describe_peers(&sysfs.group_peers(group, addr)),
        },
        other_err => {
            io(format!("open the VFIO device through IOMMU group {group}"), other(other_err))
        }
    }
}

impl Device for VfioDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn read32(&mut self, bar: u8, offset: u64) -> Result<u32> {
        self.bar(bar)?.read32(offset)
    }

    fn write32(&mut self, bar: u8, offset: u64, value: u32) -> Result<()> {
        self.bar(bar)?.write32(offset, value)
    }

    fn dma_alloc(&mut self, len: usize) -> Result<DmaBuffer> {
        // The device needs bus mastering to reach the buffer; a reset or another user may have
        // cleared it since the last mapping.
        self.enable_memory_and_bus_master()?;
        let page = page_size();
        let rounded = len.max(1).checked_next_multiple_of(page).ok_or_else(|| Error::Dma {
            device: self.info.name.clone(),
            reason: format!("buffer of {len} bytes is too large"),
        })?;
        let iova = self.iova.alloc(rounded as u64).ok_or_else(|| Error::Dma {
            device: self.info.name.clone(),
            reason: format!(
                "IOVA window {IOVA_BASE:#x}..{IOVA_LIMIT:#x} has no room for {rounded} bytes"
            ),
        })?;
        let buf = match DmaBuffer::allocate(rounded, iova) {
            Ok(b) => b,
            Err(e) => {
                self.iova.free(iova, rounded as u64);
                return Err(self.io_err(format!("allocate {rounded} bytes of DMA memory"), e));
            }
        };
        // SAFETY: `buf` is fresh anonymous memory that DmaBuffer owns and only ever touches through
        // raw pointers with volatile copies (never a Rust reference), which is what vfio_dma_map's
        // contract requires for as long as the device can reach it. The mapping ends either in
        // `dma_free` (unmap before the memory is released) or when the buffer is dropped, whose
        // munmap the contract also allows; the pages stay pinned by VFIO until unmapped.
        let mapped = unsafe { self.container.vfio_dma_map(iova, buf.len(), buf.as_ptr().as_ptr()) };
        if let Err(e) = mapped {
            self.iova.free(iova, rounded as u64);
            let errno = match &e {
                VfioError::IommuDmaMap(se) => se.errno(),
                _ => 0,
            };
            let in_use: usize = self.mapped.values().sum();
            return Err(if errno == libc::ENOMEM {
                self.memlock_error((in_use + rounded) as u64)
            } else {
                Error::Dma {
                    device: self.info.name.clone(),
                    reason: format!(
                        "VFIO_IOMMU_MAP_DMA of {rounded} bytes at IOVA {iova:#x} failed: {e}"
                    ),
                }
            });
        }
        self.mapped.insert(iova, rounded);
        Ok(buf)
    }

    fn dma_free(&mut self, buf: DmaBuffer) -> Result<()> {
        let iova = buf.iova();
        if self.mapped.get(&iova) != Some(&buf.len()) {
            let reason = format!(
                "buffer at IOVA {iova:#x} ({} bytes) was not mapped by this device",
                buf.len()
            );
            // It may be live in another device's IOMMU domain: leak it rather than free memory a
            // device could still write.
            std::mem::forget(buf);
            return Err(Error::Dma { device: self.info.name.clone(), reason });
        }
        if let Err(e) = self.container.vfio_dma_unmap(iova, buf.len()) {
            // Still reachable by the device: never release the memory.
            std::mem::forget(buf);
            return Err(Error::Dma {
                device: self.info.name.clone(),
                reason: format!(
                    "VFIO_IOMMU_UNMAP_DMA at IOVA {iova:#x} failed ({e}); buffer leaked"
                ),
            });
        }
        self.mapped.remove(&iova);
        self.iova.free(iova, buf.len() as u64);
        drop(buf);
        Ok(())
    }

    fn reset(&mut self) -> Result<()> {
        // SAFETY: VFIO_DEVICE_RESET takes no argument; the fd is the live device fd.
        let r = unsafe { vfio_device_reset(self.raw_fd()) };
        match r {
            Ok(_) => {}
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOTTY) => {
                return Err(Error::Unsupported {
                    backend: "vfio",
                    what: "device reset",
                    why: format!(
                        "{} offers no function-level, power-management or bus reset",
                        self.info.name
                    ),
                })
            }
            Err(e) => return Err(self.io_err("reset the device (VFIO_DEVICE_RESET)", e.into())),
        }
        // A reset clears the command register on some devices: restore what was on, and check.
        if self.mapped.is_empty() {
            self.set_command_bits(cfg::CMD_MEMORY, "memory decoding")
        } else {
            self.enable_memory_and_bus_master()
        }
    }

    fn wait_interrupt(&mut self, timeout: Duration) -> Result<bool> {
        if self.irq.is_none() {
            let msi = self.dev.get_irq_info(VFIO_PCI_MSI_IRQ_INDEX).is_some_and(|i| i.count > 0);
            self.enable_interrupts(if msi { IrqMode::Msi } else { IrqMode::Intx })?;
        }
        let name = self.info.name.clone();
        let Some(irq) = self.irq.as_mut() else {
            return Ok(false);
        };
        if irq.mode == IrqMode::Intx && irq.needs_unmask {
            self.dev.unmask_irq(VFIO_PCI_INTX_IRQ_INDEX).map_err(|e| Error::Io {
                op: "unmask INTx".into(),
                device: name.clone(),
                source: other(e),
            })?;
            irq.needs_unmask = false;
        }
        // SAFETY: the eventfd is owned by `irq`, alive for this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(irq.fd.as_raw_fd()) };
        let ready = poll_readable(fd, timeout).map_err(|source| Error::Io {
            op: "wait for an interrupt".into(),
            device: name.clone(),
            source,
        })?;
        if !ready {
            return Ok(false);
        }
        match irq.fd.read() {
            Ok(_) => {
                irq.needs_unmask = irq.mode == IrqMode::Intx;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(source) => {
                Err(Error::Io { op: "read the interrupt eventfd".into(), device: name, source })
            }
        }
    }
}

impl Drop for VfioDevice {
    fn drop(&mut self) {
        // vfio-ioctls' Drop re-reads the sysfs iommu_group link and unwraps; after a surprise
        // removal that link is gone, so leak the fd (the kernel closes it at exit) instead of
        // panicking.
        if std::fs::read_link(self.sysfs_path.join("iommu_group")).is_ok() {
            // SAFETY: `dev` is dropped exactly once, here, and never used afterwards.
            unsafe { ManuallyDrop::drop(&mut self.dev) };
        } else {
            tracing::warn!(device = %self.info.name, "device vanished; leaving its VFIO fd to process exit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::pci::tests::FakeSysfs;
    use crate::hw::pci::CHIP_CARD_240M;

    const PAGE: u64 = 4096;

    #[test]
    fn iova_allocator_hands_out_disjoint_page_ranges() {
        let mut a = IovaAllocator::new(0x10_0000, 0x20_0000);
        let x = a.alloc(PAGE).unwrap();
        let y = a.alloc(3 * PAGE).unwrap();
        let z = a.alloc(PAGE).unwrap();
        assert_eq!(x, 0x10_0000);
        assert!(x + PAGE <= y && y + 3 * PAGE <= z, "{x:#x} {y:#x} {z:#x}");
        assert_eq!(a.alloc(0), None);
    }

    #[test]
    fn iova_allocator_reuses_freed_ranges_and_merges_them() {
        let mut a = IovaAllocator::new(0x10_0000, 0x20_0000);
        let x = a.alloc(PAGE).unwrap();
        let y = a.alloc(PAGE).unwrap();
        let z = a.alloc(PAGE).unwrap();
        a.free(x, PAGE);
        a.free(y, PAGE);
        // x and y merged into one two-page hole, reused first-fit.
        assert_eq!(a.alloc(2 * PAGE), Some(x));
        a.free(x, 2 * PAGE);
        a.free(z, PAGE);
        // Everything free again: the window is whole, so the full window fits.
        assert_eq!(a.alloc(0x10_0000), Some(0x10_0000));
    }

    #[test]
    fn iova_allocator_refuses_past_its_limit() {
        let mut a = IovaAllocator::new(0x10_0000, 0x10_0000 + 4 * PAGE);
        assert!(a.alloc(4 * PAGE).is_some());
        assert_eq!(a.alloc(PAGE), None);
        let mut b = IovaAllocator::new(u64::MAX - PAGE, u64::MAX);
        assert_eq!(b.alloc(2 * PAGE), None, "no overflow");
    }

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn open_names_a_missing_device() {
        let f = FakeSysfs::new();
        let err = VfioDevice::open_in(&f.sysfs(), addr("0000:07:00.0")).unwrap_err();
        assert!(matches!(err, Error::NoSuchDevice { .. }), "{err}");
        assert!(err.to_string().contains("no PCI device 0000:07:00.0"), "{err}");
    }

    #[test]
    fn open_says_which_driver_holds_the_card_and_how_to_rebind() {
        let f = FakeSysfs::new();
        f.add("0000:05:00.0", CHIP_CARD_240M, 0x108000, Some("qrandom"), Some(4));
        let err = VfioDevice::open_in(&f.sysfs(), addr("0000:05:00.0")).unwrap_err().to_string();
        assert!(err.contains("bound to qrandom, not vfio-pci"), "{err}");
        assert!(
            err.contains("echo vfio-pci > /sys/bus/pci/devices/0000:05:00.0/driver_override"),
            "{err}"
        );
        assert!(err.contains("driver/unbind"), "{err}");

        f.add("0000:06:00.0", MODULE_CARD, 0x108000, None, Some(5));
        let err = VfioDevice::open_in(&f.sysfs(), addr("0000:06:00.0")).unwrap_err().to_string();
        assert!(err.contains("bound to no driver"), "{err}");
        assert!(!err.contains("unbind"), "{err}");
    }

    #[test]
    fn open_explains_a_missing_iommu_group() {
        let f = FakeSysfs::new();
        f.add("0000:05:00.0", CHIP_CARD_240M, 0x108000, Some("vfio-pci"), None);
        let err = VfioDevice::open_in(&f.sysfs(), addr("0000:05:00.0")).unwrap_err().to_string();
        assert!(err.contains("no IOMMU group"), "{err}");
        assert!(err.contains("intel_iommu=on"), "{err}");
        assert!(!err.contains("uio"), "chip cards cannot use uio: {err}");
        f.add("0000:06:00.0", MODULE_CARD, 0x108000, Some("vfio-pci"), None);
        let err = VfioDevice::open_in(&f.sysfs(), addr("0000:06:00.0")).unwrap_err().to_string();
        assert!(err.contains("--device uio:0000:06:00.0"), "{err}");
    }

    #[test]
    fn vfio_open_errors_map_to_user_causes() {
        let f = FakeSysfs::new();
        f.add("0000:05:00.0", CHIP_CARD_240M, 0x108000, Some("vfio-pci"), Some(4));
        f.add(
            "0000:05:00.1",
            crate::hw::PciId { vendor: 0x8086, device: 1 },
            0x020000,
            Some("e1000e"),
            Some(4),
        );
        let a = addr("0000:05:00.0");
        let err =
            open_error("vfio:0000:05:00.0", &f.sysfs(), a, 4, VfioError::GroupViable).to_string();
        assert!(err.contains("IOMMU group 4 of 0000:05:00.0 is not viable"), "{err}");
        assert!(err.contains("0000:05:00.1 (bound to e1000e)"), "{err}");

        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let err = open_error(
            "vfio:0000:05:00.0",
            &f.sysfs(),
            a,
            4,
            VfioError::OpenGroup(denied, "4".into()),
        );
        assert!(err.to_string().contains("permission denied opening /dev/vfio/4"), "{err}");
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let err =
            open_error("vfio:0000:05:00.0", &f.sysfs(), a, 4, VfioError::OpenContainer(denied));
        assert!(err.to_string().contains("permission denied opening /dev/vfio/vfio"), "{err}");
    }
}
