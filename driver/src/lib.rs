//! quantis-driver: a userspace PCI driver for ID Quantique Quantis QRNG cards.
//!
//! Layers, bottom up (see `docs/architecture.md`):
//! - [`regs`]: what a card is (PCI ids, families, register tables), shared by the layers above;
//! - [`hw`]: the access layer (VFIO, UIO, simulator) behind one [`hw::Device`] trait;
//! - [`card`]: the module-card PIO and chip-card XDMA protocols, written against that trait only;
//! - [`entropy`]: SP 800-90B health tests on raw samples, then optional extractors;
//! - publishing into the shared-memory ring of the `qrng-ring` crate, which the bridge consumes.

pub mod card;
pub mod daemon;
pub mod entropy;
pub mod hw;
pub mod regs;
