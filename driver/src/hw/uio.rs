//! The UIO backend: a card bound to uio_pci_generic, for machines without an IOMMU.
//!
//! Registers are reached by mmapping the BARs through sysfs (`/sys/bus/pci/devices/<addr>/resourceN`;
//! I/O-port BARs by pread/pwrite on the same files). Interrupts arrive through `/dev/uioN`: a
//! read returns the interrupt count, poll waits for the next one. uio_pci_generic has no
//! irqcontrol; its handler masks INTx by setting the Interrupt Disable bit, so we clear that bit
//! (bit 10 of the command register) through the sysfs `config` file before each wait.
//!
//! Without an IOMMU a device could write anywhere in RAM, so there is no safe DMA: this backend
//! refuses DMA, and with it the chip cards, which stream by DMA. Module cards (PIO) work.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::dma::page_size;
use super::mmio::{BarAccess, Mmio};
use super::pci::{cfg, quantis_model, CardFamily, Sysfs};
use super::{poll_readable, Device, DeviceInfo, DmaBuffer, Error, PciAddress, PciId, Result};

/// Resource flags in sysfs `resource` lines (include/linux/ioport.h).
const IORESOURCE_IO: u64 = 0x100;
const IORESOURCE_MEM: u64 = 0x200;

/// Refuses the cards this backend cannot drive safely: chip cards need DMA, and without an IOMMU
/// there is no safe DMA. The card layer calls this too, before choosing a protocol.
pub fn ensure_uio_can_drive(id: PciId) -> Result<()> {
    match quantis_model(id) {
        Some((CardFamily::Chip, model)) => Err(Error::Unsupported {
            backend: "uio",
            what: "chip cards",
            why: format!(
                "the {model} ({id}) streams by DMA, and uio has no IOMMU, so no safe DMA: bind the card to \
                 vfio-pci (IOMMU on) and use --device vfio:<address>"
            ),
        }),
        _ => Ok(()),
    }
}

fn no_dma() -> Error {
    Error::Unsupported {
        backend: "uio",
        what: "DMA",
        why: "no IOMMU, so no safe DMA (use vfio-pci)".into(),
    }
}

/// A PCI device bound to uio_pci_generic.
#[derive(Debug)]
pub struct UioDevice {
    info: DeviceInfo,
    addr: PciAddress,
    bars: [Option<BarAccess>; 6],
    /// The sysfs `config` file (config space; writable as root).
    config: File,
    /// `/dev/uioN`.
    uio: File,
    uio_path: PathBuf,
    sysfs_dir: PathBuf,
}

impl UioDevice {
    /// Opens the device at `addr`, which must be bound to uio_pci_generic.
    pub fn open(addr: PciAddress) -> Result<UioDevice> {
        Self::open_in(&Sysfs::default(), Path::new("/dev"), addr)
    }

    fn open_in(sysfs: &Sysfs, dev_root: &Path, addr: PciAddress) -> Result<UioDevice> {
        let name = format!("uio:{addr}");
        let dir = sysfs.require_driver(addr, "uio_pci_generic")?;
        let id = sysfs.id(addr)?;
        ensure_uio_can_drive(id)?;
        let uio_name = find_uio_node(&dir).ok_or_else(|| Error::Io {
            op: format!("find the uio node under {}/uio", dir.display()),
            device: name.clone(),
            source: ErrorKind::NotFound.into(),
        })?;
        let uio_path = dev_root.join(&uio_name);
        let uio = open_rw(&uio_path, addr, &name)?;
        let config = open_rw(&dir.join("config"), addr, &name)?;
        let mut this = UioDevice {
            info: DeviceInfo { name, id, bars: [None; 6], simulated: false, dma: false },
            addr,
            bars: Default::default(),
            config,
            uio,
            uio_path,
            sysfs_dir: dir,
        };
        this.enable_memory()?;
        this.map_bars()?;
        Ok(this)
    }

    pub fn address(&self) -> PciAddress {
        self.addr
    }

    /// `/dev/uioN`.
    pub fn uio_path(&self) -> &Path {
        &self.uio_path
    }

    fn io_err(&self, op: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { op: op.into(), device: self.info.name.clone(), source }
    }

    /// A 16-bit read from PCI config space through sysfs.
    pub fn config_read16(&self, offset: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.config
            .read_exact_at(&mut b, offset)
            .map_err(|e| self.io_err(format!("read config space at {offset:#x}"), e))?;
        Ok(u16::from_le_bytes(b))
    }

    /// A 16-bit write to PCI config space through sysfs.
    pub fn config_write16(&self, offset: u64, value: u16) -> Result<()> {
        self.config
            .write_all_at(&value.to_le_bytes(), offset)
            .map_err(|e| self.io_err(format!("write config space at {offset:#x}"), e))
    }

    /// uio_pci_generic enables the device, but a reset or firmware may have cleared decoding:
    /// set memory-space enable and check it by reading back.
    fn enable_memory(&self) -> Result<()> {
        let cmd = self.config_read16(cfg::COMMAND)?;
        if cmd & cfg::CMD_MEMORY == 0 {
            self.config_write16(cfg::COMMAND, cmd | cfg::CMD_MEMORY)?;
        }
        let back = self.config_read16(cfg::COMMAND)?;
        if back & cfg::CMD_MEMORY == 0 {
            return Err(self.io_err(
                format!("enable memory decoding (command reads {back:#06x})"),
                ErrorKind::Other.into(),
            ));
        }
        Ok(())
    }

    /// Re-enables INTx after uio_pci_generic's handler masked it.
    ///
    /// If the device still asserts its interrupt, the handler fires again at once and masks it
    /// again: then the read-back shows the bit set with the status register's Interrupt Status bit
    /// set, which is not an error (the event is already counted on /dev/uioN).
    pub fn unmask_intx(&self) -> Result<()> {
        let cmd = self.config_read16(cfg::COMMAND)?;
        if cmd & cfg::CMD_INTX_DISABLE == 0 {
            return Ok(());
        }
        self.config_write16(cfg::COMMAND, cmd & !cfg::CMD_INTX_DISABLE)?;
        let back = self.config_read16(cfg::COMMAND)?;
        if back & cfg::CMD_INTX_DISABLE != 0
            && self.config_read16(cfg::STATUS)? & cfg::STATUS_INTX == 0
        {
            return Err(self.io_err(
                format!("re-enable INTx (command reads {back:#06x} after clearing bit 10, no interrupt pending)"),
                ErrorKind::Other.into(),
            ));
        }
        Ok(())
    }

    fn map_bars(&mut self) -> Result<()> {
        let resources = std::fs::read_to_string(self.sysfs_dir.join("resource"))
            .map_err(|e| self.io_err(format!("read {}/resource", self.sysfs_dir.display()), e))?;
        let page = page_size() as u64;
        for (bar, (start, end, flags)) in
            parse_resources(&resources).into_iter().enumerate().take(6)
        {
            let Ok(bar) = u8::try_from(bar) else { continue };
            if end <= start || flags & (IORESOURCE_MEM | IORESOURCE_IO) == 0 {
                continue;
            }
            let size = end - start + 1;
            let path = self.sysfs_dir.join(format!("resource{bar}"));
            let file = open_rw(&path, self.addr, &self.info.name)?;
            let access = if flags & IORESOURCE_MEM != 0 {
                let map_len =
                    usize::try_from(size.div_ceil(page).saturating_mul(page)).map_err(|_| {
                        self.io_err(
                            format!("map {} ({size} bytes)", path.display()),
                            ErrorKind::InvalidInput.into(),
                        )
                    })?;
                let map = memmap2::MmapOptions::new()
                    .len(map_len)
                    .map_raw(&file)
                    .map_err(|e| self.io_err(format!("mmap {}", path.display()), e))?;
                BarAccess::Mapped(Mmio::new(map, size, bar, &self.info.name)?)
            } else {
                BarAccess::File {
                    file: Arc::new(file),
                    base: 0,
                    len: size,
                    bar,
                    device: self.info.name.clone(),
                }
            };
            self.bars[usize::from(bar)] = Some(access);
            self.info.bars[usize::from(bar)] = Some(size);
        }
        Ok(())
    }

    fn bar(&self, bar: u8) -> Result<&BarAccess> {
        self.bars
            .get(usize::from(bar))
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::NoSuchBar { device: self.info.name.clone(), bar })
    }

    /// Whether BAR `bar` is mmapped (memory BAR) rather than reached by pread/pwrite (I/O BAR).
    pub fn bar_is_mapped(&self, bar: u8) -> bool {
        self.bar(bar).is_ok_and(BarAccess::is_mapped)
    }
}

/// `(start, end, flags)` of each line of a sysfs `resource` file; unparsable lines give zeros.
fn parse_resources(text: &str) -> Vec<(u64, u64, u64)> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    text.lines()
        .map(|line| {
            let f: Vec<u64> = line.split_whitespace().filter_map(hex).collect();
            match f[..] {
                [start, end, flags, ..] => (start, end, flags),
                _ => (0, 0, 0),
            }
        })
        .collect()
}

/// The `uioN` name under `<device>/uio/`.
fn find_uio_node(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("uio"))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with("uio"))
        .collect();
    names.sort();
    names.into_iter().next()
}

fn open_rw(path: &Path, addr: PciAddress, name: &str) -> Result<File> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|source| match source.kind() {
        ErrorKind::PermissionDenied => {
            Error::PermissionDenied { device: addr.to_string(), path: path.display().to_string() }
        }
        _ => Error::Io { op: format!("open {}", path.display()), device: name.to_owned(), source },
    })
}

impl Device for UioDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn read32(&mut self, bar: u8, offset: u64) -> Result<u32> {
        self.bar(bar)?.read32(offset)
    }

    fn write32(&mut self, bar: u8, offset: u64, value: u32) -> Result<()> {
        self.bar(bar)?.write32(offset, value)
    }

    fn dma_alloc(&mut self, _len: usize) -> Result<DmaBuffer> {
        Err(no_dma())
    }

    fn dma_free(&mut self, _buf: DmaBuffer) -> Result<()> {
        // No buffer can come from this backend; whatever this is, it is not mapped here.
        Err(no_dma())
    }

    fn reset(&mut self) -> Result<()> {
        let path = self.sysfs_dir.join("reset");
        if !path.exists() {
            return Err(Error::Unsupported {
                backend: "uio",
                what: "device reset",
                why: format!("{} offers no reset (no {})", self.info.name, path.display()),
            });
        }
        std::fs::write(&path, b"1")
            .map_err(|e| self.io_err(format!("reset through {}", path.display()), e))?;
        self.enable_memory()
    }

    fn wait_interrupt(&mut self, timeout: Duration) -> Result<bool> {
        self.unmask_intx()?;
        let ready = poll_readable(self.uio.as_fd(), timeout).map_err(|e| {
            self.io_err(format!("wait for an interrupt on {}", self.uio_path.display()), e)
        })?;
        if !ready {
            return Ok(false);
        }
        // The read returns the 32-bit interrupt count and consumes the event.
        let mut count = [0u8; 4];
        match self.uio.read_at(&mut count, 0) {
            Ok(4) => Ok(true),
            Ok(n) => Err(self.io_err(
                format!("read {} (got {n} of 4 bytes)", self.uio_path.display()),
                ErrorKind::UnexpectedEof.into(),
            )),
            Err(e) => Err(self.io_err(format!("read {}", self.uio_path.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::pci::tests::FakeSysfs;
    use crate::hw::pci::{CHIP_CARD_240M, CHIP_CARD_40M, MODULE_CARD};

    #[test]
    fn chip_cards_are_refused_with_the_reason() {
        for id in [CHIP_CARD_40M, CHIP_CARD_240M] {
            let err = ensure_uio_can_drive(id).unwrap_err().to_string();
            assert!(err.contains("no IOMMU, so no safe DMA"), "{err}");
            assert!(err.contains("vfio-pci"), "{err}");
        }
        assert!(ensure_uio_can_drive(MODULE_CARD).is_ok());
        assert!(ensure_uio_can_drive(PciId { vendor: 0x1234, device: 0x11e8 }).is_ok());
    }

    #[test]
    fn open_refuses_wrong_driver_and_chip_cards() {
        let f = FakeSysfs::new();
        f.add("0000:03:00.0", MODULE_CARD, 0x108000, Some("vfio-pci"), Some(2));
        f.add("0000:04:00.0", CHIP_CARD_40M, 0x108000, Some("uio_pci_generic"), None);
        let dev = Path::new("/nonexistent");
        let err = UioDevice::open_in(&f.sysfs(), dev, "0000:03:00.0".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bound to vfio-pci, not uio_pci_generic"), "{err}");
        assert!(
            err.contains(
                "echo uio_pci_generic > /sys/bus/pci/devices/0000:03:00.0/driver_override"
            ),
            "{err}"
        );
        let err = UioDevice::open_in(&f.sysfs(), dev, "0000:04:00.0".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no safe DMA"), "{err}");
        let err = UioDevice::open_in(&f.sysfs(), dev, "0000:09:00.0".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PCI device 0000:09:00.0"), "{err}");
    }

    #[test]
    fn open_reports_a_missing_uio_node() {
        let f = FakeSysfs::new();
        f.add("0000:03:00.0", MODULE_CARD, 0x108000, Some("uio_pci_generic"), None);
        let err = UioDevice::open_in(
            &f.sysfs(),
            Path::new("/nonexistent"),
            "0000:03:00.0".parse().unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("find the uio node"), "{err}");
    }

    #[test]
    fn resource_lines_parse_and_garbage_gives_empty_bars() {
        let text = "0x00000000fea00000 0x00000000feafffff 0x0000000000040200\n\
                    0x000000000000c000 0x000000000000c03f 0x0000000000040101\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    garbage\n";
        let r = parse_resources(text);
        assert_eq!(r[0], (0xfea0_0000, 0xfeaf_ffff, 0x40200));
        assert_eq!(r[1].2 & IORESOURCE_IO, IORESOURCE_IO);
        assert_eq!(r[1].1 - r[1].0 + 1, 64);
        assert_eq!(r[3], (0, 0, 0));
    }
}
