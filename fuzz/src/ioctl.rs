//! Fuzz target `ioctl`: an ioctl as the FUSE layer hands it over. Input: command (4 bytes,
//! native endian), output size (4 bytes), a flags byte (bit 0: card attached, bit 1: control
//! allowed, bits 2-3: family unknown/module/chip, bit 4: chip mode sample, bits 5-7: card
//! count), then the argument bytes; the serial is the argument read as text.

use qrng_bridge::fuse::ioctl::{self, CardFacts, Context, IoctlError};

/// One fuzz input.
pub fn run(data: &[u8]) {
    let Some((head, arg)) = data.split_at_checked(9) else { return };
    let word = |i: usize| u32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let (cmd, out_size, flags) = (word(0), word(4), head[8]);
    let card = CardFacts {
        modules_mask: 0b1011,
        modules_status: 0b0001,
        board_version: 7,
        serial: String::from_utf8_lossy(arg).into_owned(),
        family: match (flags >> 2) & 3 {
            1 => Some(qrng_ring::CardFamily::Module),
            2 => Some(qrng_ring::CardFamily::Chip),
            _ => None,
        },
        chip_mode: Some(if flags & 0x10 != 0 {
            qrng_ring::ChipMode::Sample
        } else {
            qrng_ring::ChipMode::Rng
        }),
    };
    let ctx = Context {
        card: (flags & 1 != 0).then_some(&card),
        card_count: u32::from(flags >> 5),
        allow_control: flags & 2 != 0,
    };
    let chip = flags & 1 != 0 && card.is_chip();
    let decoded = ioctl::decode(cmd, chip);
    match ioctl::answer(cmd, arg, out_size, ctx) {
        Ok(out) => {
            let req = decoded.expect("an answered ioctl decodes");
            assert!(out.len() <= out_size as usize, "{req:?}: {} bytes for {out_size}", out.len());
            if req == ioctl::Request::Serial {
                assert_eq!(out.len(), ioctl::SERIAL_LEN);
                assert_eq!(out[ioctl::SERIAL_LEN - 1], 0, "the serial stays NUL-terminated");
            }
        }
        Err(e) => {
            let undecodable = matches!(e, IoctlError::Unknown(_) | IoctlError::NotForChipCards(_));
            assert_eq!(undecodable, decoded.is_err(), "{e}");
            assert!(ERRNOS.contains(&e.errno()), "{e}: errno {}", e.errno());
        }
    }
}

/// The errnos an ioctl may fail with (Linux numbers, spelled out so this file needs no libc):
/// ENOTTY, EINVAL, EPERM, EIO.
const ERRNOS: [i32; 4] = [25, 22, 1, 5];
