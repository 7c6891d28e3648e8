//! IDQ's `/dev/qrandomN` ioctls, answered on the FUSE device file so that software written for
//! IDQ's kernel driver (libQuantis) works through a symlink to our file.
//!
//! The numbers are the x86/ARM encodings of IDQ's `_IOR('q', nr, unsigned int)` and friends, taken
//! from IDQ's driver headers (see `docs/quantis-hardware.md`, "The kernel driver's user
//! interface"). A FUSE file system only sees "restricted" ioctls, whose size and direction the
//! kernel decodes from the number itself; every IDQ number is of that kind, so the kernel copies the
//! 4-byte (or 256-byte) answers back to the caller for us.
//!
//! Each card family answers as IDQ's driver for it does (see docs/fuse.md, "IDQ ioctls"): module
//! cards as `quantis_pci` (MOD: `leifj/quantispci`, `linux/quantis_pci_linux.c`, whose unknown
//! command is `ENOTTY`), chip cards as the PCIe-40M/240M driver (CHIP: `xdma-core.c`,
//! `char_sgdma_ioctl`, whose unknown command, like its declared but unhandled 5, 6, 9, 10 and 11,
//! is `EINVAL`; it alone has the QRNG-mode ioctls 13–15).

/// Magic byte of IDQ's ioctls (`'q'`).
pub const IDQ_MAGIC: u8 = b'q';

/// `QUANTIS_IOCTL_GET_DRIVER_VERSION`: `_IOR('q', 0, unsigned int)`.
pub const GET_DRIVER_VERSION: u32 = 0x8004_7100;
/// `QUANTIS_IOCTL_GET_CARD_COUNT`: `_IOR('q', 1, unsigned int)`.
pub const GET_CARD_COUNT: u32 = 0x8004_7101;
/// `QUANTIS_IOCTL_GET_MODULES_MASK`: `_IOR('q', 2, unsigned int)`.
pub const GET_MODULES_MASK: u32 = 0x8004_7102;
/// `QUANTIS_IOCTL_GET_BOARD_VERSION`: `_IOR('q', 3, unsigned int)` (CV_SR on module cards).
pub const GET_BOARD_VERSION: u32 = 0x8004_7103;
/// `QUANTIS_IOCTL_RESET_BOARD`: `_IO('q', 4)`.
pub const RESET_BOARD: u32 = 0x0000_7104;
/// `QUANTIS_IOCTL_ENABLE_MODULE`: `_IOW('q', 5, unsigned int)`, argument: module mask.
pub const ENABLE_MODULE: u32 = 0x4004_7105;
/// `QUANTIS_IOCTL_DISABLE_MODULE`: `_IOW('q', 6, unsigned int)`, argument: module mask.
pub const DISABLE_MODULE: u32 = 0x4004_7106;
/// `QUANTIS_IOCTL_GET_MODULES_STATUS`: `_IOR('q', 8, unsigned int)`.
pub const GET_MODULES_STATUS: u32 = 0x8004_7108;
/// `QUANTIS_IOCTL_GET_PCI_BUS_DEVICE_ID`: `_IOR('q', 9, unsigned int)`. Never answered: IDQ's
/// chip driver does not handle it (`EINVAL`), the module driver v2.4 does not define it
/// (`ENOTTY`), and no public source gives its encoding.
pub const GET_PCI_BUS_DEVICE_ID: u32 = 0x8004_7109;
/// `QUANTIS_IOCTL_GET_AIS31_STARTUP_TESTS_REQUEST_FLAG`: `_IOR('q', 10, unsigned int)`. Never
/// answered, like IDQ's drivers (semantics on PCI unknown).
pub const GET_AIS31_STARTUP_TESTS_REQUEST_FLAG: u32 = 0x8004_710A;
/// `QUANTIS_IOCTL_CLEAR_AIS31_STARTUP_TESTS_REQUEST_FLAG`: `_IOW('q', 11, unsigned int)`. Never
/// answered, like IDQ's drivers.
pub const CLEAR_AIS31_STARTUP_TESTS_REQUEST_FLAG: u32 = 0x4004_710B;
/// `QUANTIS_IOCTL_GET_SERIAL`: `_IOR('q', 12, char[256])`.
pub const GET_SERIAL: u32 = 0x8100_710C;
/// Chip cards: `QUANTIS_IOCTL_SET_QRNG_MODE`, `_IOW('q', 13, unsigned int)`: 0 RNG, 1 SAMPLE.
pub const SET_QRNG_MODE: u32 = 0x4004_710D;
/// Chip cards: `QUANTIS_IOCTL_GET_QRNG_MODE`, `_IOR('q', 14, unsigned int)`: the mode the next
/// reset would use.
pub const GET_QRNG_MODE: u32 = 0x8004_710E;
/// Chip cards: `QUANTIS_IOCTL_GET_CURRENT_QRNG_MODE`, `_IOR('q', 15, unsigned int)`: the mode
/// in effect.
pub const GET_CURRENT_QRNG_MODE: u32 = 0x8004_710F;

/// IDQ's QRNG mode values (CHIP `quantis_ioctl.h`).
pub const QRNG_MODE_RNG: u32 = 0;
/// Raw samples.
pub const QRNG_MODE_SAMPLE: u32 = 1;

/// The driver version IDQ's kernel driver reports (2.02); software compares against it.
pub const IDQ_DRIVER_VERSION: u32 = 202;

/// Size of the serial-number buffer of `GET_SERIAL` (IDQ: `char serialNumber[256]`).
pub const SERIAL_LEN: usize = 256;

/// What the file system knows about one card when it answers an ioctl.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CardFacts {
    /// Modules (module cards) or chips (chip cards) present, working or not, one bit each
    /// (IDQ's module driver: the HEN bits).
    pub modules_mask: u32,
    /// Modules currently working (IDQ: SEN and HST both set); 0 while the card is failed or gone.
    pub modules_status: u32,
    /// Board version (CV_SR) if the ring publishes it, else 0.
    pub board_version: u32,
    /// Card serial number as the ring publishes it; "simulated" for the simulator.
    pub serial: String,
    /// Module or chip card; `None` (a producer that does not say) answers as a module card.
    pub family: Option<qrng_ring::CardFamily>,
    /// Chip cards' mode as the driver runs the card; `None` if unknown.
    pub chip_mode: Option<qrng_ring::ChipMode>,
}

impl CardFacts {
    /// A chip card (its ioctls follow the PCIe-40M/240M driver).
    pub fn is_chip(&self) -> bool {
        self.family == Some(qrng_ring::CardFamily::Chip)
    }
}

/// A decoded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A query answered with a 4-byte native-endian unsigned int.
    DriverVersion,
    /// Number of cards this bridge serves.
    CardCount,
    /// Modules present.
    ModulesMask,
    /// Board version.
    BoardVersion,
    /// Modules working.
    ModulesStatus,
    /// The serial as a NUL-terminated string in a 256-byte buffer.
    Serial,
    /// Chip cards: the mode the next reset uses (the driver's: it owns the mode).
    QrngMode,
    /// Chip cards: the mode in effect.
    CurrentQrngMode,
    /// A control request (reset/enable/disable/set mode) that would change the card.
    Control(Control),
}

/// Card-changing requests: refused unless the operator allowed them (they are no-ops then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `RESET_BOARD`.
    Reset,
    /// `ENABLE_MODULE` with its mask argument.
    Enable,
    /// `DISABLE_MODULE` with its mask argument.
    Disable,
    /// `SET_QRNG_MODE` with its mode argument (chip cards).
    SetMode,
}

/// Why an ioctl got no answer; the FUSE layer turns it into an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IoctlError {
    /// Not one IDQ's module-card driver answers (ENOTTY, as it does).
    #[error("unknown ioctl {0:#010x}")]
    Unknown(u32),
    /// Not one IDQ's chip-card driver answers (EINVAL, as it does: its `default:` case).
    #[error("ioctl {0:#010x} is not handled for chip cards")]
    NotForChipCards(u32),
    /// The mode argument of `SET_QRNG_MODE` is not 0 (RNG) or 1 (SAMPLE), or the card's mode is
    /// unknown (EINVAL).
    #[error("ioctl {cmd:#010x}: QRNG mode {mode:?} is not 0 (RNG) or 1 (SAMPLE)")]
    BadMode {
        /// The ioctl number.
        cmd: u32,
        /// The value given or found, if any.
        mode: Option<u32>,
    },
    /// The caller's buffer is smaller than the answer (EINVAL).
    #[error("ioctl {cmd:#010x}: output buffer of {got} bytes, {need} needed")]
    ShortBuffer {
        /// The ioctl number.
        cmd: u32,
        /// Bytes the caller offered.
        got: u32,
        /// Bytes the answer takes.
        need: u32,
    },
    /// A control ioctl while control ioctls are not allowed (EPERM).
    #[error("ioctl {0:?} refused: control ioctls are disabled")]
    ControlRefused(Control),
    /// An enable/disable mask naming modules the card does not have (EINVAL).
    #[error("ioctl {control:?}: mask {mask:#x} names modules outside {present:#x}")]
    BadMask {
        /// The request.
        control: Control,
        /// The mask given.
        mask: u32,
        /// Modules present.
        present: u32,
    },
    /// The argument of enable/disable is missing or short (EINVAL).
    #[error("ioctl {0:?}: missing 4-byte mask argument")]
    MissingArgument(Control),
    /// The card is gone (EIO).
    #[error("card is gone")]
    Gone,
}

impl IoctlError {
    /// The errno the caller sees.
    pub fn errno(self) -> i32 {
        match self {
            IoctlError::Unknown(_) => libc::ENOTTY,
            IoctlError::NotForChipCards(_) | IoctlError::BadMode { .. } => libc::EINVAL,
            IoctlError::ShortBuffer { .. }
            | IoctlError::BadMask { .. }
            | IoctlError::MissingArgument(_) => libc::EINVAL,
            IoctlError::ControlRefused(_) => libc::EPERM,
            IoctlError::Gone => libc::EIO,
        }
    }
}

/// Decodes an ioctl number as IDQ's driver for the family does: module cards (and cards of
/// unknown family) as `quantis_pci`, chip cards as the PCIe-40M/240M driver.
pub fn decode(cmd: u32, chip: bool) -> Result<Request, IoctlError> {
    let unknown = if chip { IoctlError::NotForChipCards(cmd) } else { IoctlError::Unknown(cmd) };
    Ok(match cmd {
        GET_DRIVER_VERSION => Request::DriverVersion,
        GET_CARD_COUNT => Request::CardCount,
        GET_MODULES_MASK => Request::ModulesMask,
        GET_BOARD_VERSION => Request::BoardVersion,
        GET_MODULES_STATUS => Request::ModulesStatus,
        GET_SERIAL => Request::Serial,
        RESET_BOARD => Request::Control(Control::Reset),
        ENABLE_MODULE if !chip => Request::Control(Control::Enable),
        DISABLE_MODULE if !chip => Request::Control(Control::Disable),
        SET_QRNG_MODE if chip => Request::Control(Control::SetMode),
        GET_QRNG_MODE if chip => Request::QrngMode,
        GET_CURRENT_QRNG_MODE if chip => Request::CurrentQrngMode,
        _ => return Err(unknown),
    })
}

/// The mode a chip card reports, as IDQ's value.
fn mode_value(cmd: u32, card: &CardFacts) -> Result<u32, IoctlError> {
    match card.chip_mode {
        Some(qrng_ring::ChipMode::Rng) => Ok(QRNG_MODE_RNG),
        Some(qrng_ring::ChipMode::Sample) => Ok(QRNG_MODE_SAMPLE),
        None => Err(IoctlError::BadMode { cmd, mode: None }),
    }
}

/// The 4-byte argument of a write ioctl.
fn argument(in_data: &[u8], control: Control) -> Result<u32, IoctlError> {
    in_data
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_ne_bytes)
        .ok_or(IoctlError::MissingArgument(control))
}

/// Everything needed to answer one ioctl.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The card behind the file; `None` if it is gone.
    pub card: Option<&'a CardFacts>,
    /// Cards attached to the bridge.
    pub card_count: u32,
    /// Whether reset/enable/disable are accepted (as no-ops).
    pub allow_control: bool,
}

/// Answers one ioctl: the bytes to copy back to the caller (empty for control requests).
pub fn answer(
    cmd: u32,
    in_data: &[u8],
    out_size: u32,
    ctx: Context<'_>,
) -> Result<Vec<u8>, IoctlError> {
    let req = decode(cmd, ctx.card.is_some_and(CardFacts::is_chip))?;
    let need = match req {
        Request::Serial => SERIAL_LEN as u32,
        Request::Control(_) => 0,
        _ => 4,
    };
    if out_size < need {
        return Err(IoctlError::ShortBuffer { cmd, got: out_size, need });
    }
    let word = |v: u32| Ok(v.to_ne_bytes().to_vec());
    match req {
        Request::DriverVersion => word(IDQ_DRIVER_VERSION),
        Request::CardCount => word(ctx.card_count),
        Request::ModulesMask => word(ctx.card.ok_or(IoctlError::Gone)?.modules_mask),
        Request::BoardVersion => word(ctx.card.ok_or(IoctlError::Gone)?.board_version),
        Request::ModulesStatus => word(ctx.card.ok_or(IoctlError::Gone)?.modules_status),
        Request::QrngMode | Request::CurrentQrngMode => {
            // The driver owns the mode (`--chip-mode`): the next reset uses the one in effect.
            word(mode_value(cmd, ctx.card.ok_or(IoctlError::Gone)?)?)
        }
        Request::Serial => {
            let card = ctx.card.ok_or(IoctlError::Gone)?;
            let mut buf = vec![0u8; SERIAL_LEN];
            // Keep the last byte NUL so C callers always get a terminated string.
            let s = card.serial.as_bytes();
            let n = s.len().min(SERIAL_LEN - 1);
            buf[..n].copy_from_slice(&s[..n]);
            Ok(buf)
        }
        Request::Control(control) => {
            if !ctx.allow_control {
                return Err(IoctlError::ControlRefused(control));
            }
            let card = ctx.card.ok_or(IoctlError::Gone)?;
            match control {
                Control::Reset => {}
                Control::SetMode => {
                    let mode = argument(in_data, control)?;
                    if mode != QRNG_MODE_RNG && mode != QRNG_MODE_SAMPLE {
                        return Err(IoctlError::BadMode { cmd, mode: Some(mode) });
                    }
                }
                Control::Enable | Control::Disable => {
                    let mask = argument(in_data, control)?;
                    if mask & !card.modules_mask != 0 {
                        return Err(IoctlError::BadMask {
                            control,
                            mask,
                            present: card.modules_mask,
                        });
                    }
                }
            }
            // The bridge has no device access: the driver owns the card and resets it itself
            // after any health failure, so an allowed control request is accepted without effect.
            Ok(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux `_IOC` encoding (asm-generic/ioctl.h): dir << 30 | size << 16 | type << 8 | nr.
    fn ioc(dir: u32, nr: u32, size: u32) -> u32 {
        (dir << 30) | (size << 16) | (u32::from(IDQ_MAGIC) << 8) | nr
    }

    #[test]
    fn numbers_match_the_generic_linux_encoding() {
        const READ: u32 = 2;
        const WRITE: u32 = 1;
        assert_eq!(GET_DRIVER_VERSION, ioc(READ, 0, 4));
        assert_eq!(GET_CARD_COUNT, ioc(READ, 1, 4));
        assert_eq!(GET_MODULES_MASK, ioc(READ, 2, 4));
        assert_eq!(GET_BOARD_VERSION, ioc(READ, 3, 4));
        assert_eq!(RESET_BOARD, ioc(0, 4, 0));
        assert_eq!(ENABLE_MODULE, ioc(WRITE, 5, 4));
        assert_eq!(DISABLE_MODULE, ioc(WRITE, 6, 4));
        assert_eq!(GET_MODULES_STATUS, ioc(READ, 8, 4));
        assert_eq!(GET_SERIAL, ioc(READ, 12, 256));
        assert_eq!(GET_PCI_BUS_DEVICE_ID, ioc(READ, 9, 4));
        assert_eq!(GET_AIS31_STARTUP_TESTS_REQUEST_FLAG, ioc(READ, 10, 4));
        assert_eq!(CLEAR_AIS31_STARTUP_TESTS_REQUEST_FLAG, ioc(WRITE, 11, 4));
        assert_eq!(SET_QRNG_MODE, ioc(WRITE, 13, 4));
        assert_eq!(GET_QRNG_MODE, ioc(READ, 14, 4));
        assert_eq!(GET_CURRENT_QRNG_MODE, ioc(READ, 15, 4));
    }

    #[test]
    fn chip_cards_answer_their_mode_and_refuse_setting_it_unless_allowed() {
        use qrng_ring::ChipMode;
        for (mode, want) in [(ChipMode::Rng, QRNG_MODE_RNG), (ChipMode::Sample, QRNG_MODE_SAMPLE)] {
            let c = chip_card(Some(mode));
            for cmd in [GET_QRNG_MODE, GET_CURRENT_QRNG_MODE] {
                let out = answer(cmd, &[], 4, ctx(Some(&c), false)).expect("mode");
                assert_eq!(as_u32(&out), want, "{cmd:#x} {mode:?}");
            }
            let set = answer(SET_QRNG_MODE, &1u32.to_ne_bytes(), 0, ctx(Some(&c), false));
            assert_eq!(set, Err(IoctlError::ControlRefused(Control::SetMode)));
            assert_eq!(
                answer(SET_QRNG_MODE, &1u32.to_ne_bytes(), 0, ctx(Some(&c), true)),
                Ok(vec![])
            );
            let bad = answer(SET_QRNG_MODE, &2u32.to_ne_bytes(), 0, ctx(Some(&c), true));
            assert_eq!(
                bad.map_err(IoctlError::errno),
                Err(libc::EINVAL),
                "IDQ accepts 0 or 1 only"
            );
        }
        let unknown = chip_card(None);
        let err = answer(GET_CURRENT_QRNG_MODE, &[], 4, ctx(Some(&unknown), false));
        assert_eq!(err.map_err(IoctlError::errno), Err(libc::EINVAL));
    }

    #[test]
    fn unknown_ioctls_fail_as_each_idq_driver_fails_them() {
        let module = card();
        let chip = chip_card(Some(qrng_ring::ChipMode::Rng));
        // Unknown numbers, the declared-but-unanswered 9/10/11, and the other family's ioctls.
        for cmd in [
            0x8004_71ff,
            GET_PCI_BUS_DEVICE_ID,
            GET_AIS31_STARTUP_TESTS_REQUEST_FLAG,
            CLEAR_AIS31_STARTUP_TESTS_REQUEST_FLAG,
            GET_QRNG_MODE,
            GET_CURRENT_QRNG_MODE,
            SET_QRNG_MODE,
        ] {
            let err =
                answer(cmd, &0u32.to_ne_bytes(), 4, ctx(Some(&module), true)).expect_err("module");
            assert_eq!(err.errno(), libc::ENOTTY, "module card {cmd:#x}");
        }
        for cmd in [
            0x8004_71ff,
            GET_PCI_BUS_DEVICE_ID,
            GET_AIS31_STARTUP_TESTS_REQUEST_FLAG,
            CLEAR_AIS31_STARTUP_TESTS_REQUEST_FLAG,
            ENABLE_MODULE,
            DISABLE_MODULE,
        ] {
            let err =
                answer(cmd, &0u32.to_ne_bytes(), 4, ctx(Some(&chip), true)).expect_err("chip");
            assert_eq!(err.errno(), libc::EINVAL, "chip card {cmd:#x}");
        }
        // The queries both drivers answer stay answered on chip cards.
        assert!(answer(GET_MODULES_STATUS, &[], 4, ctx(Some(&chip), false)).is_ok());
    }

    fn card() -> CardFacts {
        CardFacts {
            modules_mask: 0b1111,
            modules_status: 0b0101,
            board_version: 0x1234,
            serial: "SIM-0001".into(),
            family: Some(qrng_ring::CardFamily::Module),
            chip_mode: None,
        }
    }

    fn chip_card(mode: Option<qrng_ring::ChipMode>) -> CardFacts {
        CardFacts {
            modules_mask: 0b11,
            modules_status: 0b01,
            family: Some(qrng_ring::CardFamily::Chip),
            chip_mode: mode,
            ..card()
        }
    }

    fn ctx(card: Option<&CardFacts>, allow_control: bool) -> Context<'_> {
        Context { card, card_count: 3, allow_control }
    }

    fn as_u32(b: &[u8]) -> u32 {
        u32::from_ne_bytes(b.try_into().expect("4 bytes"))
    }

    #[test]
    fn queries_answer_from_the_card_facts() {
        let c = card();
        let q = |cmd| as_u32(&answer(cmd, &[], 4, ctx(Some(&c), false)).expect("answer"));
        assert_eq!(q(GET_DRIVER_VERSION), 202);
        assert_eq!(q(GET_CARD_COUNT), 3);
        assert_eq!(q(GET_MODULES_MASK), 0b1111);
        assert_eq!(q(GET_MODULES_STATUS), 0b0101);
        assert_eq!(q(GET_BOARD_VERSION), 0x1234);
    }

    #[test]
    fn serial_is_nul_terminated_in_256_bytes() {
        let mut c = card();
        let out = answer(GET_SERIAL, &[], 256, ctx(Some(&c), false)).expect("serial");
        assert_eq!(out.len(), 256);
        assert_eq!(&out[..9], b"SIM-0001\0");
        c.serial = "x".repeat(400);
        let out = answer(GET_SERIAL, &[], 256, ctx(Some(&c), false)).expect("serial");
        assert_eq!(out[255], 0, "an over-long serial is cut so the string stays terminated");
        assert_eq!(out[254], b'x');
    }

    #[test]
    fn bad_requests_get_clear_errors() {
        let c = card();
        assert_eq!(
            answer(0x8004_7107, &[], 4, ctx(Some(&c), true)),
            Err(IoctlError::Unknown(0x8004_7107))
        );
        assert_eq!(
            answer(GET_SERIAL, &[], 4, ctx(Some(&c), false)),
            Err(IoctlError::ShortBuffer { cmd: GET_SERIAL, got: 4, need: 256 })
        );
        assert_eq!(answer(GET_MODULES_MASK, &[], 4, ctx(None, false)), Err(IoctlError::Gone));
        assert_eq!(IoctlError::Unknown(1).errno(), libc::ENOTTY);
    }

    #[test]
    fn control_is_refused_unless_allowed() {
        let c = card();
        for (cmd, control) in [
            (RESET_BOARD, Control::Reset),
            (ENABLE_MODULE, Control::Enable),
            (DISABLE_MODULE, Control::Disable),
        ] {
            let err =
                answer(cmd, &1u32.to_ne_bytes(), 0, ctx(Some(&c), false)).expect_err("refused");
            assert_eq!(err, IoctlError::ControlRefused(control));
            assert_eq!(err.errno(), libc::EPERM);
            assert_eq!(answer(cmd, &1u32.to_ne_bytes(), 0, ctx(Some(&c), true)), Ok(Vec::new()));
        }
    }

    #[test]
    fn allowed_control_still_checks_its_mask() {
        let c = card();
        let err = answer(ENABLE_MODULE, &0x10u32.to_ne_bytes(), 0, ctx(Some(&c), true))
            .expect_err("bad mask");
        assert_eq!(err.errno(), libc::EINVAL);
        let err = answer(DISABLE_MODULE, &[1, 0], 0, ctx(Some(&c), true)).expect_err("short arg");
        assert_eq!(err, IoctlError::MissingArgument(Control::Disable));
    }
}
