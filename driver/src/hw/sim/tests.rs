//! Simulator tests at the register level: spec parsing, FIFO flags, module bits, reset, the XDMA
//! engine's descriptor walk and its error reporting, unplug.

use super::*;
use crate::regs::{chip, pio, xdma, FifoStatus, InitStatus, ModuleStatus};

pub(super) fn dev(spec: &str) -> SimDevice {
    SimDevice::new(spec.parse().unwrap()).unwrap()
}

pub(super) fn r(d: &mut SimDevice, bar: u8, off: u64) -> u32 {
    d.read32(bar, off).unwrap()
}

pub(super) fn w(d: &mut SimDevice, bar: u8, off: u64, v: u32) {
    d.write32(bar, off, v).unwrap()
}

#[test]
fn sim_spec_parses_every_key() {
    let s: SimSpec =
        "pcie-16m?rate=8M&bias=-0.1&seed=0x10&fault=module-fail&fault-after=4096&modules=0x5"
            .parse()
            .unwrap();
    assert_eq!(s.model, Model::Pcie16m);
    assert_eq!(s.rate_bits, Some(8_000_000));
    assert_eq!(s.bias, -0.1);
    assert_eq!(s.seed, Some(16));
    assert_eq!(s.fault, Some(Fault::ModuleFail));
    assert_eq!(s.fault_after, 4096);
    assert_eq!(s.modules, Some(5));
    let d: SimSpec = "pcie-240m".parse().unwrap();
    assert_eq!((d.rate_bits, d.bias, d.seed, d.fault), (None, 0.0, None, None));
    assert_eq!(d.unit_bytes_per_s(), 2_500_000.0);
    assert_eq!("pcie-4m?rate=0".parse::<SimSpec>().unwrap().unit_bytes_per_s(), 0.0);
    assert_eq!("pcie-4m?rate=500k".parse::<SimSpec>().unwrap().rate_bits, Some(500_000));
}

#[test]
fn sim_spec_rejects_bad_input_clearly() {
    let cases = [
        ("pcie-99m", "unknown simulator model"),
        ("pcie-4m?speed=1", "unknown key \"speed\""),
        ("pcie-4m?rate=fast", "bad value \"fast\" for rate"),
        ("pcie-4m?bias=0.7", "[-0.5, 0.5]"),
        ("pcie-4m?bias=nan", "[-0.5, 0.5]"),
        ("pcie-4m?seed=-1", "bad value \"-1\" for seed"),
        ("pcie-4m?fault=fire", "bad value \"fire\" for fault"),
        ("pcie-4m?fault=dma-error", "chip cards only"),
        ("pcie-40m?fault=fifo-overflow", "module cards only"),
        ("pcie-40m?modules=1", "module cards only"),
        ("pcie-4m?modules=0x2", "non-empty mask within 0x1"),
        ("pcie-4m?fault-after=5", "needs a fault"),
        ("pcie-4m?fault=unplug&fault-for=5", "data faults"),
        ("pcie-4m?fault=stuck0&fault-for=0", "non-zero byte count"),
        ("pcie-4m?rate", "not key=value"),
        ("pcie-4m?rate=1&rate=2", "given twice"),
    ];
    for (spec, want) in cases {
        let e = spec.parse::<SimSpec>().unwrap_err().to_string();
        assert!(e.contains(want) && e.contains(&format!("sim:{spec}")), "{spec}: {e}");
    }
}

#[test]
fn sim_device_info_is_labelled_and_bounds_checked() {
    let mut d = dev("pcie-4m?seed=1");
    assert!(d.info().simulated);
    assert_eq!(d.info().name, "sim:pcie-4m?seed=1");
    assert_eq!(d.info().id.to_string(), "179a:0001");
    assert_eq!(d.info().bars[1], Some(64));
    assert!(matches!(d.read32(0, 0), Err(Error::NoSuchBar { bar: 0, .. })));
    assert!(matches!(d.read32(1, 64), Err(Error::OutOfBounds { .. })));
    assert!(matches!(d.read32(1, 2), Err(Error::Unaligned { .. })));
    let c = dev("pcie-240m?seed=1");
    assert_eq!(c.info().id.to_string(), "1e89:0003");
    assert_eq!(c.info().bars[..2], [Some(0x1000), Some(0x1_0000)]);
    assert_eq!(dev("pcie-40m").info().id.to_string(), "1e89:0002");
}

#[test]
fn sim_pio_fifo_flags_fill_and_drain() {
    let mut d = dev("pcie-4m?rate=0&seed=1");
    // Out of reset: modules present but disabled, FIFO empty.
    let st = ModuleStatus(r(&mut d, 1, pio::MX_SR));
    assert_eq!((st.present(), st.enabled(), st.hardware_ok()), (1, 0, 1));
    assert!(FifoStatus(r(&mut d, 1, pio::FS_RR)).is_empty());
    w(&mut d, 1, pio::MX_ER, 0x2);
    let full = FifoStatus(r(&mut d, 1, pio::FS_RR));
    assert_eq!(full.available_bytes(), 4096);
    for _ in 0..300 {
        r(&mut d, 1, pio::FD_RR);
    }
    // rate=0: the modules refill the FIFO at once, by the next status read.
    assert_eq!(FifoStatus(r(&mut d, 1, pio::FS_RR)).available_bytes(), 4096);
    // Disabled and flushed: empty.
    w(&mut d, 1, pio::MX_DR, 0x2);
    w(&mut d, 1, pio::FS_CA, 0);
    assert_eq!(FifoStatus(r(&mut d, 1, pio::FS_RR)).0, FifoStatus::EMPTY);
}

#[test]
fn sim_read32_repeat_is_the_same_as_reading_word_by_word() {
    // A refill in the middle (rate=0), an unplug in the middle, an empty FIFO at a slow rate.
    for spec in [
        "pcie-16m?rate=0&seed=4",
        "pcie-4m?rate=0&seed=4&fault=unplug&fault-after=6000",
        "pcie-4m?rate=1k&seed=4",
    ] {
        let (mut a, mut b) = (dev(spec), dev(spec));
        for d in [&mut a, &mut b] {
            w(d, 1, pio::MX_ER, 0x0202_0202);
            r(d, 1, pio::FS_RR);
        }
        let mut bulk = vec![0u32; 1024 + 100];
        a.read32_repeat(1, pio::FD_RR, &mut bulk).unwrap();
        let single: Vec<u32> = (0..bulk.len()).map(|_| r(&mut b, 1, pio::FD_RR)).collect();
        assert!(bulk == single, "{spec}: bulk FIFO read differs from single reads");
        let data = bulk.iter().filter(|&&w| w != 0 && w != u32::MAX).count();
        assert!(spec.contains("1k") || data >= 1000, "{spec}: only {data} data words");
        let fs = r(&mut a, 1, pio::FS_RR);
        assert_eq!(fs, r(&mut b, 1, pio::FS_RR), "{spec}: same FIFO state afterwards");
    }
    let mut a = dev("pcie-16m?rate=0&seed=4");
    let mut bulk = vec![0u32; 16];
    // Bad registers are refused as by read32, before anything is read.
    assert!(a.read32_repeat(1, pio::WINDOW, &mut bulk).is_err());
    assert!(a.read32_repeat(2, 0, &mut bulk).is_err());
}

#[test]
fn sim_pio_partial_levels_at_a_slow_rate() {
    // 8 kbit/s = 1000 bytes/s: nothing measurable arrives between two register reads.
    let mut d = dev("pcie-4m?rate=8k&seed=1");
    w(&mut d, 1, pio::MX_ER, 0x2);
    let s = FifoStatus(r(&mut d, 1, pio::FS_RR));
    assert!(s.available_bytes() < 1024 && !s.overflow(), "{s:?}");
}

#[test]
fn sim_pio_reset_disables_modules_and_cc_sr_shows_it() {
    let mut d = dev("pcie-16m?rate=0&seed=1");
    w(&mut d, 1, pio::MX_ER, 0x0202_0202);
    assert_eq!(r(&mut d, 1, pio::CC_SR), 0xF << 8);
    w(&mut d, 1, pio::CC_ER, 1);
    assert_eq!(r(&mut d, 1, pio::CC_SR), 1, "held in reset, nothing feeding");
    assert!(FifoStatus(r(&mut d, 1, pio::FS_RR)).is_empty());
    w(&mut d, 1, pio::CC_DR, 1);
    assert_eq!(r(&mut d, 1, pio::CC_SR), 0);
    assert_eq!(ModuleStatus(r(&mut d, 1, pio::MX_SR)).enabled(), 0);
    assert_ne!(r(&mut d, 1, pio::CV_SR), 0);
}

#[test]
fn sim_pio_module_fail_clears_hst_of_module_0() {
    let mut d = dev("pcie-16m?rate=0&seed=1&fault=module-fail&fault-after=4096");
    w(&mut d, 1, pio::MX_ER, 0x0202_0202);
    r(&mut d, 1, pio::FS_RR); // fills 4096 bytes: the fault point
    let st = ModuleStatus(r(&mut d, 1, pio::MX_SR));
    assert_eq!((st.present(), st.enabled(), st.working()), (0xF, 0xF, 0xE));
    assert_eq!(st.module(0).0 & 0x80, 0);
}

#[test]
fn sim_pio_fifo_overflow_fault_latches_the_error_bit_until_flush() {
    let mut d = dev("pcie-4m?rate=0&seed=1&fault=fifo-overflow&fault-after=100");
    w(&mut d, 1, pio::MX_ER, 0x2);
    assert!(!FifoStatus(r(&mut d, 1, pio::FS_RR)).overflow(), "first fill is healthy");
    for _ in 0..1024 {
        r(&mut d, 1, pio::FD_RR);
    }
    assert!(FifoStatus(r(&mut d, 1, pio::FS_RR)).overflow());
    w(&mut d, 1, pio::FS_CA, 0);
    assert_eq!(FifoStatus(r(&mut d, 1, pio::FS_CA)).0, 0, "FS_CA reads 0");
}

#[test]
fn sim_unplug_reads_all_ones_and_ignores_writes() {
    let mut d = dev("pcie-4m?rate=0&seed=1&fault=unplug&fault-after=4096");
    w(&mut d, 1, pio::MX_ER, 0x2);
    r(&mut d, 1, pio::FS_RR);
    for off in [pio::FS_RR, pio::MX_SR, pio::FD_RR, pio::CV_SR] {
        assert_eq!(r(&mut d, 1, off), u32::MAX);
    }
    w(&mut d, 1, pio::CC_ER, 1);
    assert_eq!(r(&mut d, 1, pio::CC_SR), u32::MAX);
    let mut c = dev("pcie-40m?rate=0&seed=1&fault=unplug&fault-after=0");
    run_chip_startup(&mut c);
    assert_eq!(r(&mut c, 1, xdma::CONFIG_BLOCK), u32::MAX);
}

pub(super) fn run_chip_startup(d: &mut SimDevice) {
    for (off, v) in [
        (chip::SW_RST, 0x10),
        (chip::SW_RST, 0),
        (chip::SW_RST, 0x10),
        (chip::SPI_MODULE_CTRL, 0),
        (chip::Q400_NUM, 0),
        (chip::TESTMODE_HWREJECT, 0x0A),
        (chip::MODE_SEL, chip::MODE_RNG),
        (chip::SPI_MODULE_CTRL, 0x40),
        (chip::MODULE_ENABLE, 0x11),
        (chip::SPI_MODULE_CTRL, 0x81),
    ] {
        w(d, 0, off, v);
    }
}

#[test]
fn sim_chip_ready_only_after_the_full_startup() {
    let mut d = dev("pcie-240m?rate=0&seed=1");
    assert_eq!(r(&mut d, 0, chip::INIT_STATUS), 0, "held in reset at power-on");
    assert_ne!(r(&mut d, 0, chip::VERSION), 0, "version readable while held in reset");
    // Skipping the status reset (0x40) never reaches ready.
    w(&mut d, 0, chip::SW_RST, 0x10);
    w(&mut d, 0, chip::MODULE_ENABLE, 0x11);
    w(&mut d, 0, chip::SPI_MODULE_CTRL, 0x81);
    assert!(!InitStatus(r(&mut d, 0, chip::INIT_STATUS)).ready());
    run_chip_startup(&mut d);
    let st = InitStatus(r(&mut d, 0, chip::INIT_STATUS));
    assert!(st.ready());
    assert_eq!(st.chips_present(), 0xFFF);
    // q400_num = 2 chips on a 12-chip card: only two show.
    w(&mut d, 0, chip::Q400_NUM, chip::Q400_TWO);
    assert_eq!(InitStatus(r(&mut d, 0, chip::INIT_STATUS)).chips_present(), 0b11);
    // Shutdown clears ready; asserting sw_rst clears everything.
    w(&mut d, 0, chip::SPI_MODULE_CTRL, 0xA1);
    assert!(!InitStatus(r(&mut d, 0, chip::INIT_STATUS)).ready());
    w(&mut d, 0, chip::SW_RST, 0);
    assert_eq!(r(&mut d, 0, chip::INIT_STATUS), 0);
}

#[test]
fn sim_xdma_identifiers_follow_pg195() {
    let mut d = dev("pcie-40m?seed=1");
    let id = |d: &mut SimDevice, off| r(d, 1, off);
    assert!(xdma::is_identifier(id(&mut d, 0x1000), xdma::TARGET_C2H));
    assert_ne!(id(&mut d, 0x1000) & xdma::ID_STREAM, 0);
    assert!(xdma::is_identifier(id(&mut d, 0x2000), xdma::TARGET_IRQ));
    assert!(xdma::is_identifier(id(&mut d, 0x3000), xdma::TARGET_CONFIG));
    assert!(xdma::is_identifier(id(&mut d, 0x5000), xdma::TARGET_C2H_SGDMA));
    assert!(xdma::is_identifier(id(&mut d, 0x6000), xdma::TARGET_SGDMA_COMMON));
    assert_eq!(id(&mut d, 0x0000), 0, "no H2C channel");
}

/// Sets up `n` descriptors (linked list, last one with the Stop bit) over fresh buffers.
pub(super) struct Chain {
    pub(super) desc: DmaBuffer,
    pub(super) data: DmaBuffer,
    pub(super) wb: DmaBuffer,
}

pub(super) fn chain(d: &mut SimDevice, n: usize, len: u32, stop_last: bool) -> Chain {
    let desc = d.dma_alloc(n * 32).unwrap();
    let data = d.dma_alloc(n * len as usize).unwrap();
    let wb = d.dma_alloc(n * 8).unwrap();
    for i in 0..n {
        let dsc = xdma::Descriptor {
            control: (xdma::DESC_COMPLETED
                | if stop_last && i + 1 == n { xdma::DESC_STOP } else { 0 })
                as u8,
            nxt_adj: 0,
            len,
            src: wb.iova() + 8 * i as u64,
            dst: data.iova() + u64::from(len) * i as u64,
            next: desc.iova() + 32 * ((i + 1) % n) as u64,
        };
        desc.write(32 * i, &dsc.to_bytes());
    }
    Chain { desc, data, wb }
}

/// IDQ's interrupt-mode control value: run and every enable (xdma-core.c).
pub(super) const IDQ_CONTROL: u32 = 0x00F8_3E5F;

pub(super) fn run_engine(d: &mut SimDevice, desc: u64) {
    run_engine_with(d, desc, IDQ_CONTROL);
}

pub(super) fn run_engine_with(d: &mut SimDevice, desc: u64, control: u32) {
    w(d, 1, 0x5080, desc as u32);
    w(d, 1, 0x5084, (desc >> 32) as u32);
    w(d, 1, 0x1004, control);
}

#[test]
fn sim_xdma_walks_descriptors_to_the_stop_bit_and_writes_back() {
    let mut d = dev("pcie-40m?rate=0&seed=1");
    run_chip_startup(&mut d);
    let c = chain(&mut d, 3, 1024, true);
    run_engine(&mut d, c.desc.iova());
    assert_eq!(r(&mut d, 1, 0x1048), 3, "three descriptors completed");
    let st = r(&mut d, 1, 0x1040);
    assert_eq!(
        st & (xdma::ST_BUSY | xdma::ST_DESC_STOPPED | xdma::ST_DESC_COMPLETED),
        xdma::ST_DESC_STOPPED | xdma::ST_DESC_COMPLETED
    );
    for i in 0..3 {
        let mut wb = [0u8; 8];
        c.wb.read(8 * i, &mut wb);
        assert_eq!(u32::from_le_bytes(wb[..4].try_into().unwrap()) >> 16, xdma::WB_MAGIC);
        assert_eq!(u32::from_le_bytes(wb[4..].try_into().unwrap()), 1024);
    }
    // The first 3 KiB after reset are the warm-up bytes (zeros) the driver must discard.
    let mut data = vec![1u8; 3072];
    c.data.read(0, &mut data);
    assert!(data.iter().all(|&b| b == 0));
    // Status is write-1-to-clear; the clear-on-read copy clears too.
    w(&mut d, 1, 0x1040, xdma::ST_DESC_COMPLETED);
    assert_eq!(r(&mut d, 1, 0x1040) & xdma::ST_DESC_COMPLETED, 0);
    assert_ne!(r(&mut d, 1, 0x1044), 0);
    assert_eq!(r(&mut d, 1, 0x1040), 0);
}

#[test]
fn sim_xdma_credit_mode_limits_the_walk() {
    let mut d = dev("pcie-40m?rate=0&seed=1");
    run_chip_startup(&mut d);
    let c = chain(&mut d, 8, 512, false);
    w(&mut d, 1, 0x6024, 1 << 16);
    run_engine(&mut d, c.desc.iova());
    assert_eq!(r(&mut d, 1, 0x1048), 0, "no credits, no transfer");
    assert_ne!(r(&mut d, 1, 0x1040) & xdma::ST_BUSY, 0);
    w(&mut d, 1, 0x508C, 5);
    assert_eq!(r(&mut d, 1, 0x1048), 5);
    w(&mut d, 1, 0x508C, 6);
    assert_eq!(r(&mut d, 1, 0x1048), 11, "wraps around the circular list");
    // Clearing run stops the engine and a new run restarts the count.
    w(&mut d, 1, 0x1004, 0);
    assert_eq!(r(&mut d, 1, 0x1040) & xdma::ST_BUSY, 0);
    w(&mut d, 1, 0x1004, IDQ_CONTROL);
    assert_eq!(r(&mut d, 1, 0x1048), 0);
}

#[test]
fn sim_xdma_unmapped_and_bad_descriptors_stop_with_error_bits() {
    // Descriptor address not mapped: the fetch fails with Unsupported Request.
    let mut d = dev("pcie-40m?rate=0&seed=1");
    run_chip_startup(&mut d);
    run_engine(&mut d, 0xdead_0000);
    let st = r(&mut d, 1, 0x1040);
    assert_eq!(st & (xdma::ST_DESC_UR | xdma::ST_BUSY), xdma::ST_DESC_UR);
    // Destination not mapped: a write error.
    let mut d = dev("pcie-40m?rate=0&seed=1");
    run_chip_startup(&mut d);
    let c = chain(&mut d, 1, 1024, true);
    let mut bad = xdma::Descriptor::from_bytes(&{
        let mut b = [0u8; 32];
        c.desc.read(0, &mut b);
        b
    })
    .unwrap();
    bad.dst = c.data.iova() + c.data.len() as u64; // the guard page after the buffer
    c.desc.write(0, &bad.to_bytes());
    run_engine(&mut d, c.desc.iova());
    assert_eq!(
        r(&mut d, 1, 0x1040) & (xdma::ST_READ_ERROR_MASK | xdma::ST_BUSY),
        xdma::ST_READ_DECERR
    );
    // Bad magic: magic_stopped. Freed buffers are unmapped: UR.
    let mut d = dev("pcie-40m?rate=0&seed=1");
    run_chip_startup(&mut d);
    let c = chain(&mut d, 1, 1024, true);
    c.desc.write(2, &[0, 0]);
    run_engine(&mut d, c.desc.iova());
    assert_ne!(r(&mut d, 1, 0x1040) & xdma::ST_MAGIC_STOPPED, 0);
    let iova = c.desc.iova();
    d.dma_free(c.desc).unwrap();
    w(&mut d, 1, 0x1004, 0);
    run_engine(&mut d, iova);
    assert_ne!(r(&mut d, 1, 0x1040) & xdma::ST_DESC_UR, 0);
    // Freeing twice or freeing a foreign buffer is an error.
    let foreign = DmaBuffer::allocate(4096, 0x42000).unwrap();
    assert!(matches!(d.dma_free(foreign), Err(Error::Dma { .. })));
}

#[test]
fn sim_xdma_dma_error_fault_and_chip_fault() {
    let mut d = dev("pcie-40m?rate=0&seed=1&fault=dma-error&fault-after=0");
    run_chip_startup(&mut d);
    let c = chain(&mut d, 2, 1024, true);
    run_engine(&mut d, c.desc.iova());
    assert_eq!(r(&mut d, 1, 0x1048), 0);
    assert_ne!(r(&mut d, 1, 0x1040) & xdma::ST_DESC_UR, 0);
    let mut d = dev("pcie-240m?rate=0&seed=1&fault=module-fail&fault-after=100");
    run_chip_startup(&mut d);
    let c = chain(&mut d, 200, 1024, true);
    run_engine(&mut d, c.desc.iova());
    let st = InitStatus(r(&mut d, 0, chip::INIT_STATUS));
    assert_eq!((st.chip_errors(), st.chips_working()), (1, 0xFFE));
    // A status reset clears the error bit, but the broken chip sets it again as it runs.
    w(&mut d, 0, chip::SPI_MODULE_CTRL, 0x40);
    assert_eq!(InitStatus(r(&mut d, 0, chip::INIT_STATUS)).chip_errors(), 0);
}

#[test]
fn sim_function_reset_returns_to_power_on_state() {
    let mut d = dev("pcie-240m?rate=0&seed=1");
    run_chip_startup(&mut d);
    assert!(InitStatus(r(&mut d, 0, chip::INIT_STATUS)).ready());
    d.reset().unwrap();
    assert_eq!(r(&mut d, 0, chip::INIT_STATUS), 0);
    let mut m = dev("pcie-4m?rate=0&seed=1");
    w(&mut m, 1, pio::MX_ER, 2);
    m.reset().unwrap();
    assert_eq!(ModuleStatus(r(&mut m, 1, pio::MX_SR)).enabled(), 0);
}

#[test]
fn sim_default_seed_comes_from_the_os() {
    let read = |d: &mut SimDevice| {
        w(d, 1, pio::MX_ER, 2);
        r(d, 1, pio::FS_RR);
        [0; 4].map(|_: u8| r(d, 1, pio::FD_RR))
    };
    let a = read(&mut dev("pcie-4m?rate=0"));
    let b = read(&mut dev("pcie-4m?rate=0"));
    assert_ne!(a, b, "two unseeded simulators must not agree (p = 2^-128)");
    let c = read(&mut dev("pcie-4m?rate=0&seed=3"));
    let e = read(&mut dev("pcie-4m?rate=0&seed=3"));
    assert_eq!(c, e);
}
