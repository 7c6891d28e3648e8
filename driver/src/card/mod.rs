//! Card protocols: module cards (PIO from a FIFO) and chip cards (XDMA card-to-host DMA),
//! written against [`crate::hw::Device`] only, so the same code drives a card and the simulator.
