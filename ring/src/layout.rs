//! Byte offsets of the ring header (ABI version 1). `docs/ring-abi.md` is the normative copy;
//! keep the two in step. Every field is little-endian on the wire (the ring never leaves the host,
//! so in practice it is the host's native order, and x86-64/aarch64 are both little-endian).
//!
//! ```text
//! line 0  0x000  identity: written once at creation, never changed
//! line 1  0x080  producer line: tail
//! line 2  0x100  consumer line: head
//! line 3+ 0x180  status line(s): written only by the producer
//! 0x1000         data area (capacity bytes, a power of two)
//! ```

/// `b"QRNGRING"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"QRNGRING");
/// Bumped on any incompatible change of this layout.
pub const ABI_VERSION: u32 = 1;
/// The header occupies one 4 KiB page; the data area starts right after it.
pub const HEADER_LEN: u64 = 4096;
pub const DATA_OFFSET: u64 = HEADER_LEN;
/// Lines are 128 bytes apart so the two indices never share a cache line, even on CPUs that
/// prefetch adjacent 64-byte lines in pairs.
pub const LINE: u64 = 128;

/// Smallest and largest data areas. The largest is also the largest `--ring-size` quantis-driver
/// accepts, so a consumer never attaches to a ring the driver could not have made: 1 GiB is
/// minutes of output of the fastest card (a few MB/s) and already a large share of the RAM
/// backing `/run`, whereas a sparse file can claim any size at no cost (docs/ring-abi.md, "Trust
/// model"). It also keeps `DATA_OFFSET + capacity` and index arithmetic far from overflow.
pub const MIN_CAPACITY: u64 = 4096;
pub const MAX_CAPACITY: u64 = 1 << 30;
pub const DEFAULT_CAPACITY: u64 = 16 << 20;

// Line 0: identity.
pub const OFF_MAGIC: u64 = 0x00; // u64
pub const OFF_VERSION: u64 = 0x08; // u32
pub const OFF_HEADER_LEN: u64 = 0x0C; // u32
pub const OFF_DATA_OFFSET: u64 = 0x10; // u64
pub const OFF_CAPACITY: u64 = 0x18; // u64

// Line 1: producer. Total bytes ever published (free-running).
pub const OFF_TAIL: u64 = LINE;
// Line 2: consumer. Total bytes ever consumed (free-running).
pub const OFF_HEAD: u64 = 2 * LINE;
// Line 2, second word: consumer cursor. Bytes before it were handed out (copied, or lent to the
// kernel); head trails it while lent bytes are still being sent. 0 (or ≤ head): not in use.
pub const OFF_CURSOR: u64 = 2 * LINE + 8;

// Status, from line 3 on. Written only by the producer.
pub const OFF_STATUS: u64 = 3 * LINE;
pub const OFF_EPOCH: u64 = OFF_STATUS; // u64: bumped each time a producer attaches
pub const OFF_HEARTBEAT: u64 = OFF_STATUS + 0x08; // u64: CLOCK_BOOTTIME ns of the last beat
pub const OFF_HEALTH: u64 = OFF_STATUS + 0x10; // u64: health code << 32 | reason code
pub const OFF_RAW_READ: u64 = OFF_STATUS + 0x18; // u64 counters, monotonic within a file
pub const OFF_PUBLISHED: u64 = OFF_STATUS + 0x20;
pub const OFF_ALARMS: u64 = OFF_STATUS + 0x28;
pub const OFF_DROPPED: u64 = OFF_STATUS + 0x30;
/// Sequence counter guarding the identity block below: odd while the producer rewrites it.
pub const OFF_IDENT_SEQ: u64 = OFF_STATUS + 0x38;
pub const OFF_MODULES: u64 = OFF_STATUS + 0x40; // u32 module mask
pub const OFF_FLAGS: u64 = OFF_STATUS + 0x44; // u32, bit 0: simulated source
pub const OFF_MIN_ENTROPY: u64 = OFF_STATUS + 0x48; // u32, H in milli-bits per sample
pub const OFF_RCT_CUTOFF: u64 = OFF_STATUS + 0x4C; // u32
pub const OFF_APT_WINDOW: u64 = OFF_STATUS + 0x50; // u32
pub const OFF_APT_CUTOFF: u64 = OFF_STATUS + 0x54; // u32
pub const OFF_MODEL: u64 = OFF_STATUS + 0x58; // [u8; 32], NUL-padded UTF-8
pub const OFF_SERIAL: u64 = OFF_STATUS + 0x78; // [u8; 32]
pub const OFF_EXTRACTOR: u64 = OFF_STATUS + 0x98; // [u8; 32]
pub const OFF_BOARD_VERSION: u64 = OFF_STATUS + 0xB8; // u32: CV_SR / version register, 0 = unknown
                                                      // Later additions inside the identity block (zero = unknown, so older producers stay readable).
pub const OFF_MODULES_PRESENT: u64 = OFF_STATUS + 0xBC; // u32 module mask (HEN), 0 = unknown
pub const OFF_FAMILY: u64 = OFF_STATUS + 0xC0; // u32: 1 module card, 2 chip card, 0 = unknown
pub const OFF_CHIP_MODE: u64 = OFF_STATUS + 0xC4; // u32: 1 RNG, 2 SAMPLE, 0 = unknown / module card
pub const STATUS_END: u64 = OFF_STATUS + 0xC8;
pub const TEXT_LEN: usize = 32;

pub const FLAG_SIMULATED: u32 = 1;

const _: () = {
    assert!(
        OFF_TAIL.is_multiple_of(LINE)
            && OFF_HEAD.is_multiple_of(LINE)
            && OFF_STATUS.is_multiple_of(LINE)
    );
    assert!(OFF_HEAD - OFF_TAIL >= LINE && OFF_STATUS - OFF_HEAD >= LINE);
    assert!(
        OFF_MODEL.is_multiple_of(8)
            && OFF_SERIAL.is_multiple_of(8)
            && OFF_EXTRACTOR.is_multiple_of(8)
    );
    assert!(OFF_SERIAL - OFF_MODEL == TEXT_LEN as u64);
    assert!(OFF_EXTRACTOR - OFF_SERIAL == TEXT_LEN as u64);
    assert!(OFF_BOARD_VERSION - OFF_EXTRACTOR == TEXT_LEN as u64);
    assert!(OFF_MODULES_PRESENT == OFF_BOARD_VERSION + 4 && OFF_CHIP_MODE + 4 == STATUS_END);
    assert!(STATUS_END <= HEADER_LEN);
    assert!(DATA_OFFSET.is_multiple_of(4096));
    assert!(DEFAULT_CAPACITY.is_power_of_two() && MIN_CAPACITY.is_power_of_two());
};
