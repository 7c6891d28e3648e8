//! quantis-driver: a userspace PCI driver for ID Quantique Quantis QRNG cards.
//!
//! Layers, bottom up (see `docs/architecture.md`):
//! - [`hw`]: the access layer (VFIO, UIO, simulator) behind one [`hw::Device`] trait;
//! - [`card`]: the module-card PIO and chip-card XDMA protocols, written against that trait only;
//! - [`entropy`]: SP 800-90B health tests on raw samples, then optional extractors;
//! - [`ring`]: the shared-memory ring ABI that the driver publishes into and the bridge consumes.

pub mod card;
pub mod daemon;
pub mod entropy;
pub mod hw;
pub mod logging;
pub mod ring;
