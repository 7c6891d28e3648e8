//! What a Quantis card is, below both the access layer (`hw`, including the simulator) and the
//! card protocols (`card`): the PCI ids and card families, the register tables of both families,
//! and small decoders for their status words.
//!
//! Every number here is a fact from `quantis-hardware.md` (IDQ's GPL `quantis_pci` driver for the
//! module cards, IDQ's "Quantis Software 20.2.4" package for the chip cards) or from Xilinx PG195
//! ("DMA/Bridge Subsystem for PCI Express", register space and descriptor chapters) for the XDMA
//! engine. Where a fact is unknown the constant says so; the simulator's choices live in
//! `docs/simulator.md`, not here.

use std::fmt;

/// PCI ids and the two card families (quantis-hardware.md, "Two hardware generations").
pub mod ids {
    use std::fmt;

    /// A PCI vendor:device pair.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
    pub struct PciId {
        pub vendor: u16,
        pub device: u16,
    }

    impl fmt::Display for PciId {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{:04x}:{:04x}", self.vendor, self.device)
        }
    }

    /// Module cards: Quantis PCI, PCIe-4M, PCIe-16M.
    pub const MODULE_CARD: PciId = PciId { vendor: 0x179a, device: 0x0001 };
    /// Chip card PCIe-40M.
    pub const CHIP_CARD_40M: PciId = PciId { vendor: 0x1e89, device: 0x0002 };
    /// Chip card PCIe-240M.
    pub const CHIP_CARD_240M: PciId = PciId { vendor: 0x1e89, device: 0x0003 };

    /// The two Quantis PCI families: they need different access (PIO vs DMA).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Family {
        /// PIO through a FIFO register: works over UIO or VFIO.
        Module,
        /// XDMA streaming into host memory: needs VFIO behind an IOMMU.
        Chip,
    }

    /// Which Quantis model a PCI id is, if any, as `quantis-driver list` names it.
    pub fn quantis_model(id: PciId) -> Option<(Family, &'static str)> {
        match id {
            MODULE_CARD => Some((Family::Module, "Quantis PCI / PCIe-4M / PCIe-16M")),
            CHIP_CARD_40M => Some((Family::Chip, "Quantis PCIe-40M")),
            CHIP_CARD_240M => Some((Family::Chip, "Quantis PCIe-240M")),
            _ => None,
        }
    }

    /// The family of a PCI id, and the model name where the id alone tells it (module cards say
    /// which model they are only through their modules, see `card::pio::probe`).
    pub fn family_of(id: PciId) -> Option<(Family, Option<&'static str>)> {
        match id {
            MODULE_CARD => Some((Family::Module, None)),
            CHIP_CARD_40M => Some((Family::Chip, Some("pcie-40m"))),
            CHIP_CARD_240M => Some((Family::Chip, Some("pcie-240m"))),
            _ => None,
        }
    }
}

/// Module cards (179a:0001: Quantis PCI, PCIe-4M, PCIe-16M): PIO from a FIFO.
/// Source: quantis-hardware.md "Module cards (PIO)" (IDQ quantis_pci driver).
pub mod pio {
    /// The registers live in BAR 1.
    pub const BAR: u8 = 1;
    /// BAR 1 is a 64-byte window of 32-bit registers.
    pub const WINDOW: u64 = 64;
    /// Core enable (W). Writing 1 here then 1 to CC_DR is IDQ's board reset.
    pub const CC_ER: u64 = 0x00;
    /// Core disable (W).
    pub const CC_DR: u64 = 0x04;
    /// Core status (R); bit meanings unknown, logged for debugging only.
    pub const CC_SR: u64 = 0x0C;
    /// Core version (R), IDQ's "board version"; layout unknown, shown in hex.
    pub const CV_SR: u64 = 0x1C;
    /// FIFO flush (W): write 0.
    pub const FS_CA: u64 = 0x20;
    /// FIFO status (R), decoded by [`super::FifoStatus`].
    pub const FS_RR: u64 = 0x28;
    /// FIFO data (R): each read pops one 32-bit random word.
    pub const FD_RR: u64 = 0x2C;
    /// Module enable (W): write 1s to set bits of the module bytes.
    pub const MX_ER: u64 = 0x30;
    /// Module disable (W): write 1s to clear bits of the module bytes.
    pub const MX_DR: u64 = 0x34;
    /// Module status (R), decoded by [`super::ModuleStatus`].
    pub const MX_SR: u64 = 0x3C;
    /// FIFO size in bytes.
    pub const FIFO_BYTES: usize = 4096;
    /// At most four modules, one status byte each.
    pub const MAX_MODULES: u32 = 4;
    /// IDQ's library reports 500,000 bytes/s per module (4 Mbit/s).
    pub const MODULE_BYTES_PER_S: u64 = 500_000;
    /// IDQ's driver hands out at most 65,536 bytes per read() call.
    pub const MAX_READ: usize = 65_536;
}

/// Chip cards (1e89:0002 PCIe-40M, 1e89:0003 PCIe-240M): the IDQ register block.
/// Source: quantis-hardware.md "Chip cards (XDMA)" (IDQ Quantis Software 20.2.4).
pub mod chip {
    /// Software reset; bit 4 set = reset released.
    pub const SW_RST: u64 = 0x000;
    pub const SW_RST_RELEASE: u32 = 1 << 4;
    /// Module enable; bit 4 = SPI enable. The start-up writes 0x11.
    pub const MODULE_ENABLE: u64 = 0x004;
    pub const MODULE_ENABLE_ON: u32 = 0x11;
    /// SPI module control.
    pub const SPI_MODULE_CTRL: u64 = 0x008;
    pub const SPI_DATA_ACCESS: u32 = 1 << 0;
    pub const SPI_TEST_INIT: u32 = 1 << 2;
    pub const SPI_STATUS_RESET: u32 = 1 << 6;
    pub const SPI_RNG_ENABLE: u32 = 1 << 7;
    /// Value written last in the start-up: RNG module enable + data access enable.
    pub const SPI_RUN: u32 = SPI_RNG_ENABLE | SPI_DATA_ACCESS;
    /// First value written by the shutdown (bits 7, 5, 0; bit 5's meaning is not documented).
    pub const SPI_SHUTDOWN: u32 = 0xA1;
    pub const CMD_RAM_END_ADDR: u64 = 0x00C;
    /// Bits 0-1 input bus select, bit 4 burst enable, bits 7-9 qmode. Not used by the start-up.
    pub const BURST_MODE: u64 = 0x010;
    /// Bit 1 drop leading 16 bits, bit 2 drop trailing 16 bits, bit 3 drop packet tail,
    /// bit 6 built-in self-test.
    pub const TESTMODE_HWREJECT: u64 = 0x014;
    pub const HWREJECT_RNG: u32 = 0x0A;
    pub const HWREJECT_SAMPLE: u32 = 0x0C;
    /// Number of chips: 0 auto, 0x10 two chips, 0x20 twelve chips.
    pub const Q400_NUM: u64 = 0x030;
    pub const Q400_AUTO: u32 = 0;
    pub const Q400_TWO: u32 = 0x10;
    pub const Q400_TWELVE: u32 = 0x20;
    /// Decoded by [`super::InitStatus`].
    pub const INIT_STATUS: u64 = 0x084;
    pub const LOOPBACK_TEST: u64 = 0x088;
    /// Serial number: 4 + 3 + 4 little-endian bytes of these three registers, 11 characters.
    pub const BATCH_NUMBER: u64 = 0x0C4;
    pub const INCREMENTAL_NUMBER: u64 = 0x0C8;
    pub const PRODUCT_MODEL: u64 = 0x0CC;
    /// Bits 31-24 board revision, bits 23-0 firmware major.minor.patch.
    pub const VERSION: u64 = 0x100;
    pub const FIRMWARE_BUILD_DATE: u64 = 0x104;
    /// 0xA0000 RNG (post-processed), 0xA0001 SAMPLE (raw).
    pub const MODE_SEL: u64 = 0x5A8;
    pub const MODE_RNG: u32 = 0xA_0000;
    pub const MODE_SAMPLE: u32 = 0xA_0001;
    /// Bytes discarded after each reset in RNG mode.
    pub const DISCARD_RNG: u64 = 65_536;
    /// Bytes discarded after each reset in SAMPLE mode.
    pub const DISCARD_SAMPLE: u64 = 16_809_984;
    /// Wait for the ready bit: up to 1000 polls, 1 ms apart.
    pub const READY_POLLS: u32 = 1000;
    /// Chips on the 40M and 240M cards.
    pub const CHIPS_40M: u32 = 2;
    pub const CHIPS_240M: u32 = 12;
    /// About 20 Mbit/s per chip (240 Mbit/s / 12, 40 Mbit/s / 2).
    pub const CHIP_BYTES_PER_S: u64 = 2_500_000;
    /// IDQ's driver streams into 256 buffers of 4 KiB.
    pub const DMA_BUFFERS: usize = 256;
    pub const DMA_BUFFER_BYTES: usize = 4096;
}

/// Xilinx XDMA ("DMA/Bridge Subsystem for PCI Express", PG195 v4.1, chapter "Register Space").
/// Offsets are from the start of the DMA BAR; bits 15:12 select the target block.
pub mod xdma {
    /// Size of the XDMA register BAR (PG195: 64 KiB DMA BAR).
    pub const BAR_LEN: u64 = 0x1_0000;
    /// Block bases (PG195 Table "Register Address Map": target in address bits 15:12).
    pub const H2C_CHANNEL: u64 = 0x0000;
    pub const C2H_CHANNEL: u64 = 0x1000;
    pub const IRQ_BLOCK: u64 = 0x2000;
    pub const CONFIG_BLOCK: u64 = 0x3000;
    pub const H2C_SGDMA: u64 = 0x4000;
    pub const C2H_SGDMA: u64 = 0x5000;
    pub const SGDMA_COMMON: u64 = 0x6000;
    /// Channel `n` of a channel block is at `base + n * CHANNEL_STRIDE`.
    pub const CHANNEL_STRIDE: u64 = 0x100;

    /// Identifier register (offset 0 of every block): bits 31:20 subsystem id 0x1FC,
    /// 19:16 target, 15 stream (AXI4-Stream interface), 11:8 channel, 7:0 version.
    pub const IDENTIFIER: u64 = 0x00;
    pub const SUBSYSTEM_ID: u32 = 0x1FC;
    pub const TARGET_H2C: u32 = 0;
    pub const TARGET_C2H: u32 = 1;
    pub const TARGET_IRQ: u32 = 2;
    pub const TARGET_CONFIG: u32 = 3;
    pub const TARGET_H2C_SGDMA: u32 = 4;
    pub const TARGET_C2H_SGDMA: u32 = 5;
    pub const TARGET_SGDMA_COMMON: u32 = 6;
    pub const ID_STREAM: u32 = 1 << 15;

    /// Builds an identifier value (used by the simulator and by tests).
    pub const fn identifier(target: u32, stream: bool, channel: u32, version: u32) -> u32 {
        (SUBSYSTEM_ID << 20)
            | ((target & 0xF) << 16)
            | if stream { ID_STREAM } else { 0 }
            | ((channel & 0xF) << 8)
            | (version & 0xFF)
    }

    /// True if `v` is an XDMA identifier for `target`.
    pub const fn is_identifier(v: u32, target: u32) -> bool {
        v >> 20 == SUBSYSTEM_ID && (v >> 16) & 0xF == target
    }

    // C2H channel registers (PG195 "C2H Channel Registers (0x1)").
    /// Control (RW): run bit and interrupt enables.
    pub const CH_CONTROL: u64 = 0x04;
    /// Control, write 1 to set.
    pub const CH_CONTROL_W1S: u64 = 0x08;
    /// Control, write 1 to clear.
    pub const CH_CONTROL_W1C: u64 = 0x0C;
    /// Status (RW1C).
    pub const CH_STATUS: u64 = 0x40;
    /// Status, clear on read.
    pub const CH_STATUS_RC: u64 = 0x44;
    /// Completed descriptor count since the run bit was set (RO).
    pub const CH_COMPLETED: u64 = 0x48;
    /// Poll-mode writeback address (not used by this driver).
    pub const CH_POLL_WB_LO: u64 = 0x88;
    pub const CH_POLL_WB_HI: u64 = 0x8C;
    /// Channel interrupt enable mask.
    pub const CH_IRQ_MASK: u64 = 0x90;

    /// Alignment requirements of the channel (RO): bits 23:16 addr_alignment (bytes),
    /// 15:8 len_granularity (bytes), 7:0 address_bits (PG195 "C2H Channel Alignments (0x4C)").
    pub const CH_ALIGNMENTS: u64 = 0x4C;

    /// Control bits (PG195 "C2H Channel Control (0x04)"; the same names in IDQ's xdma-core.h
    /// `XDMA_CTRL_*`). Each ie_* bit enables the status bit of the same position (or field).
    pub const CTRL_RUN: u32 = 1 << 0;
    pub const CTRL_IE_DESC_STOPPED: u32 = 1 << 1;
    pub const CTRL_IE_DESC_COMPLETED: u32 = 1 << 2;
    pub const CTRL_IE_ALIGN_MISMATCH: u32 = 1 << 3;
    pub const CTRL_IE_MAGIC_STOPPED: u32 = 1 << 4;
    /// PG195 only; IDQ never sets it.
    pub const CTRL_IE_INVALID_LENGTH: u32 = 1 << 5;
    pub const CTRL_IE_IDLE_STOPPED: u32 = 1 << 6;
    /// ie_read_error, bits 13:9: log read errors and stop the engine on one (PG195).
    pub const CTRL_IE_READ_ERROR: u32 = 0x1F << 9;
    /// ie_desc_error, bits 23:19: log descriptor-fetch errors and stop the engine on one.
    pub const CTRL_IE_DESC_ERROR: u32 = 0x1F << 19;
    pub const CTRL_POLLMODE_WB: u32 = 1 << 26;
    /// The error enables IDQ's driver sets in every mode (xdma-core.c
    /// `engine_start_mode_config`): read and descriptor errors, alignment, magic.
    pub const CTRL_IE_ERRORS: u32 =
        CTRL_IE_READ_ERROR | CTRL_IE_DESC_ERROR | CTRL_IE_ALIGN_MISMATCH | CTRL_IE_MAGIC_STOPPED;
    /// The value this driver writes to start C2H: run plus IDQ's error enables, 0x00F83E19.
    /// IDQ's poll-mode value (0x04F83E19) without pollmode_wb_enable, because progress is read
    /// from the completed count (0x48), not from a poll-mode writeback, whose address (0x88)
    /// this driver never programs. IDQ's interrupt-mode extras (descriptor stopped/completed,
    /// idle stopped) only feed interrupts this driver does not use.
    pub const CTRL_START: u32 = CTRL_RUN | CTRL_IE_ERRORS;
    /// The stop value: the same enables without run, a plain write to 0x04 as IDQ does
    /// (xdma-core.c `xdma_engine_stop`). Run's falling edge clears the credits (PG195).
    pub const CTRL_STOP: u32 = CTRL_START & !CTRL_RUN;

    /// Status bits (PG195 "C2H Channel Status (0x40)"): RW1C except busy; every field but busy
    /// resets when run is set.
    pub const ST_BUSY: u32 = 1 << 0;
    pub const ST_DESC_STOPPED: u32 = 1 << 1;
    pub const ST_DESC_COMPLETED: u32 = 1 << 2;
    pub const ST_ALIGN_MISMATCH: u32 = 1 << 3;
    pub const ST_MAGIC_STOPPED: u32 = 1 << 4;
    /// PG195 invalid_length (IDQ's xdma-core.h calls bit 5 FETCH_STOPPED).
    pub const ST_INVALID_LENGTH: u32 = 1 << 5;
    pub const ST_IDLE_STOPPED: u32 = 1 << 6;
    /// C2H read_error, bits 13:9 (bit 9 decode error, bit 10 slave error).
    pub const ST_READ_ERROR_SHIFT: u32 = 9;
    pub const ST_READ_DECERR: u32 = 1 << 9;
    pub const ST_READ_ERROR_MASK: u32 = 0x1F << 9;
    /// desc_error, bits 23:19 (bit 19 unsupported request, 20 completer abort, 21 parity,
    /// 22 header EP, 23 unexpected completion).
    pub const ST_DESC_ERROR_SHIFT: u32 = 19;
    pub const ST_DESC_UR: u32 = 1 << 19;
    pub const ST_DESC_ERROR_MASK: u32 = 0x1F << 19;
    /// Any of these means the engine stopped on an error (IDQ's
    /// `engine_service_final_transfer` treats the same four as failures).
    pub const ST_ERRORS: u32 =
        ST_ALIGN_MISMATCH | ST_MAGIC_STOPPED | ST_READ_ERROR_MASK | ST_DESC_ERROR_MASK;

    /// The alignment register decoded. A field of 0 means no constraint (IDQ's
    /// `engine_alignments` uses 1/1/64 when the register reads 0).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Alignments {
        pub addr: u32,
        pub granularity: u32,
        pub address_bits: u32,
    }

    impl Alignments {
        pub fn decode(v: u32) -> Alignments {
            let f = |x: u32, none: u32| if x == 0 { none } else { x };
            Alignments {
                addr: f((v >> 16) & 0xFF, 1),
                granularity: f((v >> 8) & 0xFF, 1),
                address_bits: f(v & 0xFF, 64),
            }
        }

        pub const fn encode(self) -> u32 {
            (self.addr & 0xFF) << 16 | (self.granularity & 0xFF) << 8 | (self.address_bits & 0xFF)
        }

        /// True if the engine can reach `iova..iova+len`.
        pub fn reaches(self, iova: u64, len: u64) -> bool {
            self.address_bits >= 64 || iova.saturating_add(len.max(1) - 1) >> self.address_bits == 0
        }
    }

    // SGDMA channel registers (PG195 "C2H SGDMA Registers (0x5)").
    pub const SG_DESC_LO: u64 = 0x80;
    pub const SG_DESC_HI: u64 = 0x84;
    /// Number of extra adjacent descriptors after the first (bits 5:0).
    pub const SG_DESC_ADJACENT: u64 = 0x88;
    /// Descriptor credits (bits 9:0), added on write when credit mode is on.
    pub const SG_DESC_CREDITS: u64 = 0x8C;
    pub const MAX_CREDITS_PER_WRITE: u32 = 0x3FF;

    // SGDMA common registers (PG195 "SGDMA Common Registers (0x6)").
    /// Descriptor credit mode enable: bits 3:0 H2C channels, bits 19:16 C2H channels.
    pub const COMMON_CREDIT_MODE: u64 = 0x20;
    pub const COMMON_CREDIT_MODE_W1S: u64 = 0x24;
    pub const COMMON_CREDIT_MODE_W1C: u64 = 0x28;
    pub const fn credit_mode_c2h(channel: u32) -> u32 {
        1 << (16 + channel)
    }
    /// SGDMA descriptor control (PG195 "SGDMA Descriptor Control Register (0x10)"): bits 19:16
    /// halt descriptor fetches of C2H channels. Nothing clears them but a write; fpga_sio clears
    /// the channel's bit through the W1C alias before every run, IDQ never touches them.
    pub const COMMON_DESC_CONTROL: u64 = 0x10;
    pub const COMMON_DESC_CONTROL_W1S: u64 = 0x14;
    pub const COMMON_DESC_CONTROL_W1C: u64 = 0x18;
    pub const fn desc_halt_c2h(channel: u32) -> u32 {
        1 << (16 + channel)
    }

    // Descriptor (PG195 "Descriptors": 32 bytes, little-endian).
    pub const DESC_BYTES: usize = 32;
    /// Word 0 bits 31:16.
    pub const DESC_MAGIC: u32 = 0xAD4B;
    /// Word 0 control bits 7:0.
    pub const DESC_STOP: u32 = 1 << 0;
    pub const DESC_COMPLETED: u32 = 1 << 1;
    pub const DESC_EOP: u32 = 1 << 4;
    /// Control bits of every descriptor of the cyclic C2H ring: EOP | COMPLETED (0x12), as IDQ's
    /// `cyclic_transfer_setup` sets them (xdma-core.c `transfer_set_all_control`); no STOP, the
    /// last descriptor links back to the first.
    pub const DESC_RING_CONTROL: u32 = DESC_EOP | DESC_COMPLETED;
    /// Word 0 bits 13:8: number of adjacent descriptors following this one.
    pub const DESC_NXT_ADJ_SHIFT: u32 = 8;
    /// Word 1 bits 27:0: length in bytes.
    pub const DESC_LEN_MASK: u32 = 0x0FFF_FFFF;

    /// C2H AXI4-Stream writeback (PG195 "C2H Stream Writeback"), written to the descriptor's
    /// source address: word 0 = magic 0x52B4 in bits 31:16 and EOP in bit 0; word 1 = length.
    pub const WB_BYTES: usize = 8;
    pub const WB_MAGIC: u32 = 0x52B4;

    /// One descriptor, as laid out in host memory.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Descriptor {
        /// Control bits (7:0): [`DESC_STOP`], [`DESC_COMPLETED`], [`DESC_EOP`].
        pub control: u8,
        pub nxt_adj: u8,
        pub len: u32,
        /// C2H stream: where the engine writes the writeback.
        pub src: u64,
        pub dst: u64,
        pub next: u64,
    }

    impl Descriptor {
        pub fn to_bytes(&self) -> [u8; DESC_BYTES] {
            let w0 = (DESC_MAGIC << 16)
                | (u32::from(self.nxt_adj & 0x3F) << DESC_NXT_ADJ_SHIFT)
                | u32::from(self.control);
            let words: [u32; 8] = [
                w0,
                self.len & DESC_LEN_MASK,
                self.src as u32,
                (self.src >> 32) as u32,
                self.dst as u32,
                (self.dst >> 32) as u32,
                self.next as u32,
                (self.next >> 32) as u32,
            ];
            let mut out = [0u8; DESC_BYTES];
            for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
            out
        }

        /// Decodes a descriptor; `None` if the magic is wrong.
        pub fn from_bytes(b: &[u8; DESC_BYTES]) -> Option<Descriptor> {
            let w =
                |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
            let q = |i: usize| u64::from(w(i)) | (u64::from(w(i + 1)) << 32);
            let w0 = w(0);
            if w0 >> 16 != DESC_MAGIC {
                return None;
            }
            Some(Descriptor {
                control: w0 as u8,
                nxt_adj: ((w0 >> DESC_NXT_ADJ_SHIFT) & 0x3F) as u8,
                len: w(1) & DESC_LEN_MASK,
                src: q(2),
                dst: q(4),
                next: q(6),
            })
        }
    }
}

/// FIFO status register FS_RR of module cards.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FifoStatus(pub u32);

impl FifoStatus {
    pub const EMPTY: u32 = 1 << 0;
    pub const QUARTER: u32 = 1 << 1;
    pub const HALF: u32 = 1 << 2;
    pub const THREE_QUARTERS: u32 = 1 << 3;
    pub const FULL: u32 = 1 << 6;
    pub const ERROR: u32 = 1 << 7;

    /// Bytes that may be read now, as IDQ's driver counts them: full 4096, 3/4 3072,
    /// 1/2 2048, 1/4 1024, else 0.
    pub fn available_bytes(self) -> usize {
        let s = self.0;
        if s & Self::FULL != 0 {
            pio::FIFO_BYTES
        } else if s & Self::THREE_QUARTERS != 0 {
            pio::FIFO_BYTES * 3 / 4
        } else if s & Self::HALF != 0 {
            pio::FIFO_BYTES / 2
        } else if s & Self::QUARTER != 0 {
            pio::FIFO_BYTES / 4
        } else {
            0
        }
    }

    /// The FIFO overflowed since the last flush: data was lost.
    pub fn overflow(self) -> bool {
        self.0 & Self::ERROR != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 & Self::EMPTY != 0
    }

    /// Builds the flags for a fill level in bytes (used by the simulator).
    pub fn for_level(bytes: usize, overflow: bool) -> FifoStatus {
        let f = pio::FIFO_BYTES;
        let mut s = 0;
        if bytes == 0 {
            s |= Self::EMPTY;
        }
        if bytes >= f / 4 {
            s |= Self::QUARTER;
        }
        if bytes >= f / 2 {
            s |= Self::HALF;
        }
        if bytes >= f * 3 / 4 {
            s |= Self::THREE_QUARTERS;
        }
        if bytes >= f {
            s |= Self::FULL;
        }
        if overflow {
            s |= Self::ERROR;
        }
        FifoStatus(s)
    }
}

impl fmt::Debug for FifoStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FifoStatus({:#04x}: {} bytes", self.0, self.available_bytes())?;
        if self.is_empty() {
            f.write_str(", empty")?;
        }
        if self.overflow() {
            f.write_str(", overflow")?;
        }
        f.write_str(")")
    }
}

/// One module's byte in MX_SR / MX_ER / MX_DR.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ModuleBits(pub u8);

impl ModuleBits {
    /// Software shutdown.
    pub const SD: u8 = 1 << 0;
    /// Software enable.
    pub const SEN: u8 = 1 << 1;
    /// Test mode.
    pub const TM: u8 = 1 << 2;
    /// Hardware enable: the module is present.
    pub const HEN: u8 = 1 << 6;
    /// Hardware status: the module is OK.
    pub const HST: u8 = 1 << 7;
}

/// The module status register MX_SR: one [`ModuleBits`] byte per module, module i in bits 8i..8i+7.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ModuleStatus(pub u32);

impl ModuleStatus {
    pub fn module(self, i: u32) -> ModuleBits {
        ModuleBits((self.0 >> (8 * i)) as u8)
    }

    fn mask_where(self, f: impl Fn(ModuleBits) -> bool) -> u32 {
        (0..pio::MAX_MODULES).filter(|&i| f(self.module(i))).fold(0, |m, i| m | 1 << i)
    }

    /// Modules present: HEN bits.
    pub fn present(self) -> u32 {
        self.mask_where(|b| b.0 & ModuleBits::HEN != 0)
    }

    /// Modules software-enabled: SEN bits.
    pub fn enabled(self) -> u32 {
        self.mask_where(|b| b.0 & ModuleBits::SEN != 0)
    }

    /// Modules working: SEN and HST both set (IDQ's definition).
    pub fn working(self) -> u32 {
        self.mask_where(|b| {
            b.0 & (ModuleBits::SEN | ModuleBits::HST) == ModuleBits::SEN | ModuleBits::HST
        })
    }

    /// Modules with a good hardware status, enabled or not.
    pub fn hardware_ok(self) -> u32 {
        self.mask_where(|b| b.0 & ModuleBits::HST != 0)
    }

    /// Modules in test mode (IDQ: while any is, module status is ignored; `card::pio` refuses
    /// to serve them).
    pub fn test_mode(self) -> u32 {
        self.mask_where(|b| b.0 & ModuleBits::TM != 0)
    }

    /// The MX_ER / MX_DR value that sets / clears `bits` in each module of `mask`.
    pub fn write_value(mask: u32, bits: u8) -> u32 {
        (0..pio::MAX_MODULES)
            .filter(|i| mask & (1 << i) != 0)
            .fold(0, |v, i| v | u32::from(bits) << (8 * i))
    }
}

impl fmt::Debug for ModuleStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ModuleStatus({:#010x}: present {:#x}, enabled {:#x}, working {:#x})",
            self.0,
            self.present(),
            self.enabled(),
            self.working()
        )
    }
}

/// The chip cards' reg_init_status_chk: chips present, ready, per-chip packet errors.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InitStatus(pub u32);

impl InitStatus {
    pub const CHIPS_MASK: u32 = 0xFFF;
    pub const READY: u32 = 1 << 12;
    pub const ERROR_SHIFT: u32 = 20;

    pub fn chips_present(self) -> u32 {
        self.0 & Self::CHIPS_MASK
    }

    pub fn ready(self) -> bool {
        self.0 & Self::READY != 0
    }

    /// Chips with a packet error.
    pub fn chip_errors(self) -> u32 {
        (self.0 >> Self::ERROR_SHIFT) & Self::CHIPS_MASK
    }

    /// Working chips: present minus those with an error bit.
    pub fn chips_working(self) -> u32 {
        self.chips_present() & !self.chip_errors()
    }
}

impl fmt::Debug for InitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "InitStatus({:#010x}: present {:#05x}, ready {}, errors {:#05x})",
            self.0,
            self.chips_present(),
            self.ready(),
            self.chip_errors()
        )
    }
}

/// The chip cards' version register: board revision and firmware major.minor.patch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ChipVersion(pub u32);

impl ChipVersion {
    pub fn board_revision(self) -> u8 {
        (self.0 >> 24) as u8
    }
    /// (major, minor, patch), one byte each of bits 23-0.
    pub fn firmware(self) -> (u8, u8, u8) {
        ((self.0 >> 16) as u8, (self.0 >> 8) as u8, self.0 as u8)
    }
}

impl fmt::Display for ChipVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.firmware();
        write!(f, "firmware {a}.{b}.{c}, board revision {}", self.board_revision())
    }
}

/// The 11-character serial of a chip card from its three serial registers (4 + 3 + 4 bytes,
/// little-endian). Non-printable bytes become '?', so a garbage register never breaks a log line.
pub fn chip_serial(batch: u32, incremental: u32, model: u32) -> String {
    let b = batch.to_le_bytes();
    let i = incremental.to_le_bytes();
    let m = model.to_le_bytes();
    b.iter()
        .chain(&i[..3])
        .chain(m.iter())
        .map(|&c| if c.is_ascii_graphic() || c == b' ' { char::from(c) } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_fifo_status_counts_like_idq() {
        assert_eq!(FifoStatus(FifoStatus::EMPTY).available_bytes(), 0);
        assert_eq!(FifoStatus(0x02).available_bytes(), 1024);
        assert_eq!(FifoStatus(0x06).available_bytes(), 2048);
        assert_eq!(FifoStatus(0x0E).available_bytes(), 3072);
        assert_eq!(FifoStatus(0x4E).available_bytes(), 4096);
        assert!(FifoStatus(0x80).overflow());
        assert!(!FifoStatus(0x4E).overflow());
        assert_eq!(FifoStatus::for_level(4096, true).0, 0xCE);
        assert_eq!(FifoStatus::for_level(0, false).0, 0x01);
        assert_eq!(FifoStatus::for_level(1500, false).available_bytes(), 1024);
    }

    #[test]
    fn card_module_status_masks() {
        // module 0: HEN|HST|SEN; module 1: HEN|SEN (unhealthy); module 2: HEN|HST; module 3 absent.
        let s = ModuleStatus(0x00_C0_42_C2);
        assert_eq!(s.present(), 0b0111);
        assert_eq!(s.enabled(), 0b0011);
        assert_eq!(s.working(), 0b0001);
        assert_eq!(s.hardware_ok(), 0b0101);
        assert_eq!(ModuleStatus::write_value(0b1001, ModuleBits::SEN), 0x0200_0002);
    }

    #[test]
    fn card_init_status_and_serial() {
        let s = InitStatus(0x0010_1003);
        assert_eq!(s.chips_present(), 0b11);
        assert!(s.ready());
        assert_eq!(s.chip_errors(), 0b1);
        assert_eq!(s.chips_working(), 0b10);
        let serial = chip_serial(
            u32::from_le_bytes(*b"2301"),
            u32::from_le_bytes(*b"042\0"),
            u32::from_le_bytes(*b"A240"),
        );
        assert_eq!(serial, "2301042A240");
        assert_eq!(chip_serial(0xFFFF_FFFF, 0, 0x41).len(), 11);
        assert_eq!(ChipVersion(0x0201_0403).to_string(), "firmware 1.4.3, board revision 2");
    }

    #[test]
    fn xdma_descriptor_round_trips_and_checks_magic() {
        let d = xdma::Descriptor {
            control: 0x13,
            nxt_adj: 5,
            len: 4096,
            src: 0x1_2345_6780,
            dst: 0xdead_b000,
            next: 0x20,
        };
        let b = d.to_bytes();
        assert_eq!(&b[0..4], &[0x13, 0x05, 0x4B, 0xAD]);
        assert_eq!(xdma::Descriptor::from_bytes(&b), Some(d));
        let mut bad = b;
        bad[3] = 0;
        assert_eq!(xdma::Descriptor::from_bytes(&bad), None);
        assert_eq!(xdma::identifier(xdma::TARGET_C2H, true, 0, 6), 0x1FC1_8006);
        assert!(xdma::is_identifier(0x1FC3_0006, xdma::TARGET_CONFIG));
        assert!(!xdma::is_identifier(0xFFFF_FFFF, xdma::TARGET_CONFIG));
    }
}
