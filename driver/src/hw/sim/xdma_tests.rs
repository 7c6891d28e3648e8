//! Simulator tests of the XDMA engine's stricter rules: errors logged and stopping only with
//! their enable, credits cleared by run's falling edge, the descriptor-halt bits, the alignment
//! register, a busy engine finishing its descriptor after run is cleared, the intermittent
//! `dma-error`, and the chip cards' start-up and shutdown delays.

use super::tests::{chain, dev, r, run_chip_startup, run_engine, run_engine_with, w, IDQ_CONTROL};
use super::*;
use crate::regs::{chip, xdma, InitStatus};
use std::time::{Duration, Instant};

const CREDIT_MODE_W1S: u64 = 0x6024;
const CREDIT_MODE_W1C: u64 = 0x6028;
const HALT_W1S: u64 = 0x6014;
const HALT_W1C: u64 = 0x6018;

/// Polls `cond` every millisecond; a hang (10 s) is a failure, not a timing assertion.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn sim_spec_parses_the_chip_timing_and_alignment_keys() {
    let s: SimSpec =
        "pcie-240m?startup-delay=500ms&shutdown-delay=1s&dma-alignments=64/1/32".parse().unwrap();
    assert_eq!(s.startup_delay, Some(Duration::from_millis(500)));
    assert_eq!(s.shutdown_delay, Some(Duration::from_secs(1)));
    assert_eq!(s.dma_alignments, Some(0x0040_0120));
    let z: SimSpec = "pcie-40m?dma-alignments=0&startup-delay=250us".parse().unwrap();
    assert_eq!((z.dma_alignments, z.startup_delay), (Some(0), Some(Duration::from_micros(250))));
    let f: SimSpec = "pcie-240m?fault=dma-error&fault-after=4194304&fault-for=1".parse().unwrap();
    assert_eq!((f.fault, f.fault_after, f.fault_for), (Some(Fault::DmaError), 4_194_304, Some(1)));
    for (spec, want) in [
        ("pcie-4m?startup-delay=1s", "chip cards only"),
        ("pcie-16m?dma-alignments=0", "chip cards only"),
        ("pcie-40m?startup-delay=1", "a duration"),
        ("pcie-40m?shutdown-delay=1h", "a duration"),
        ("pcie-40m?dma-alignments=64/1", "address bits"),
        ("pcie-40m?dma-alignments=0/1/64", "each 1-255"),
        ("pcie-40m?fault=module-fail&fault-for=5", "dma-error"),
    ] {
        let e = spec.parse::<SimSpec>().unwrap_err().to_string();
        assert!(e.contains(want), "{spec}: {e}");
    }
    // Only a simulator that models the delays asks for the sequence waits.
    assert!(!dev("pcie-40m").sequence_waits());
    assert!(dev("pcie-40m?shutdown-delay=1s").sequence_waits());
}

#[test]
fn sim_xdma_errors_log_and_stop_only_with_their_enable() {
    // (what, its enable, how to provoke it)
    type Provoke = fn(&mut SimDevice) -> u64;
    let cases: [(&str, u32, u32, Provoke); 4] = [
        ("unmapped descriptor", xdma::CTRL_IE_DESC_ERROR, xdma::ST_DESC_UR, |_| 0xdead_0000),
        ("misaligned descriptor", xdma::CTRL_IE_ALIGN_MISMATCH, xdma::ST_ALIGN_MISMATCH, |d| {
            chain(d, 2, 1024, true).desc.iova() + 8
        }),
        ("bad magic", xdma::CTRL_IE_MAGIC_STOPPED, xdma::ST_MAGIC_STOPPED, |d| {
            let c = chain(d, 1, 1024, true);
            c.desc.write(2, &[0, 0]);
            c.desc.iova()
        }),
        ("unmapped destination", xdma::CTRL_IE_READ_ERROR, xdma::ST_READ_DECERR, |d| {
            let c = chain(d, 1, 1024, true);
            let mut raw = [0u8; 32];
            c.desc.read(0, &mut raw);
            let mut bad = xdma::Descriptor::from_bytes(&raw).unwrap();
            bad.dst = c.data.iova() + c.data.len() as u64;
            c.desc.write(0, &bad.to_bytes());
            c.desc.iova()
        }),
    ];
    for (what, enable, bit, provoke) in cases {
        // With the enable: logged, busy drops.
        let mut d = dev("pcie-40m?rate=0&seed=1");
        run_chip_startup(&mut d);
        let desc = provoke(&mut d);
        run_engine_with(&mut d, desc, xdma::CTRL_START);
        let st = r(&mut d, 1, 0x1040);
        assert_eq!(st & (bit | xdma::ST_BUSY), bit, "{what}: logged and stopped");
        // Without it: nothing logged, the engine stays busy and moves no further.
        let mut d = dev("pcie-40m?rate=0&seed=1");
        run_chip_startup(&mut d);
        let desc = provoke(&mut d);
        run_engine_with(&mut d, desc, xdma::CTRL_START & !enable);
        let st = r(&mut d, 1, 0x1040);
        assert_eq!(st & xdma::ST_ERRORS, 0, "{what}: not logged without its enable ({st:#x})");
        assert_ne!(st & xdma::ST_BUSY, 0, "{what}: not stopped without its enable");
        assert_eq!(r(&mut d, 1, 0x1048), 0, "{what}: no descriptor completed");
        // Run's falling edge takes the engine out of it.
        w(&mut d, 1, 0x1004, xdma::CTRL_STOP & !enable);
        assert_eq!(r(&mut d, 1, 0x1040) & xdma::ST_BUSY, 0, "{what}");
    }
}

#[test]
fn sim_xdma_completion_bits_follow_their_enables_and_the_descriptor() {
    let mut d = dev("pcie-40m?rate=0&seed=1");
    run_chip_startup(&mut d);
    let c = chain(&mut d, 2, 1024, true);
    run_engine_with(&mut d, c.desc.iova(), xdma::CTRL_START);
    assert_eq!(r(&mut d, 1, 0x1048), 2);
    let st = r(&mut d, 1, 0x1040);
    assert_eq!(st & (xdma::ST_DESC_COMPLETED | xdma::ST_DESC_STOPPED | xdma::ST_BUSY), 0);
    // A descriptor without the COMPLETED bit does not log completion, even when enabled.
    let mut d = dev("pcie-40m?rate=0&seed=1");
    run_chip_startup(&mut d);
    let c = chain(&mut d, 1, 1024, true);
    c.desc.write(0, &[xdma::DESC_STOP as u8]);
    run_engine(&mut d, c.desc.iova());
    let st = r(&mut d, 1, 0x1040);
    assert_eq!(st & (xdma::ST_DESC_COMPLETED | xdma::ST_DESC_STOPPED), xdma::ST_DESC_STOPPED);
}

#[test]
fn sim_xdma_run_falling_edge_clears_the_credits() {
    // Before the chips run nothing is transferred, so granted credits stay outstanding.
    let mut d = dev("pcie-40m?rate=0&seed=1");
    let c = chain(&mut d, 8, 512, false);
    w(&mut d, 1, CREDIT_MODE_W1S, 1 << 16);
    run_engine(&mut d, c.desc.iova());
    w(&mut d, 1, 0x508C, 5);
    assert_eq!(r(&mut d, 1, 0x508C), 5);
    w(&mut d, 1, 0x1004, IDQ_CONTROL & !xdma::CTRL_RUN);
    assert_eq!(r(&mut d, 1, 0x508C), 0, "cleared by run's falling edge");
    // Credits may be written before run; disabling credit mode clears them too (fpga_sio).
    w(&mut d, 1, 0x508C, 3);
    assert_eq!(r(&mut d, 1, 0x508C), 3);
    w(&mut d, 1, CREDIT_MODE_W1C, 1 << 16);
    assert_eq!(r(&mut d, 1, 0x508C), 0);
}

#[test]
fn sim_xdma_descriptor_halt_bit_holds_fetches_until_cleared() {
    let mut d = dev("pcie-40m?rate=0&seed=1");
    run_chip_startup(&mut d);
    let c = chain(&mut d, 4, 512, true);
    w(&mut d, 1, HALT_W1S, 1 << 16);
    assert_eq!(r(&mut d, 1, 0x6010), 1 << 16);
    run_engine(&mut d, c.desc.iova());
    assert_eq!(r(&mut d, 1, 0x1048), 0, "halted: nothing fetched");
    assert_ne!(r(&mut d, 1, 0x1040) & xdma::ST_BUSY, 0, "busy with nothing fetched");
    w(&mut d, 1, HALT_W1C, 1 << 16);
    assert_eq!(r(&mut d, 1, 0x1048), 4);
}

#[test]
fn sim_xdma_alignment_register_is_shown_and_enforced() {
    assert_eq!(r(&mut dev("pcie-40m"), 1, 0x104C), 0x0001_0140, "1/1/64 by default");
    assert_eq!(r(&mut dev("pcie-40m?dma-alignments=0"), 1, 0x104C), 0);
    // 64-byte alignment: a destination 32 bytes into a page is refused.
    let mut d = dev("pcie-40m?rate=0&seed=1&dma-alignments=64/1/64");
    run_chip_startup(&mut d);
    let c = chain(&mut d, 1, 1024, true);
    let mut raw = [0u8; 32];
    c.desc.read(0, &mut raw);
    let mut bad = xdma::Descriptor::from_bytes(&raw).unwrap();
    bad.dst += 32;
    c.desc.write(0, &bad.to_bytes());
    run_engine(&mut d, c.desc.iova());
    assert_eq!(
        r(&mut d, 1, 0x1040) & (xdma::ST_ALIGN_MISMATCH | xdma::ST_BUSY),
        xdma::ST_ALIGN_MISMATCH
    );
    // 32 address bits: the simulator's IOVAs start at 4 GiB, out of reach.
    let mut d = dev("pcie-40m?rate=0&seed=1&dma-alignments=1/1/32");
    run_chip_startup(&mut d);
    let c = chain(&mut d, 1, 1024, true);
    run_engine(&mut d, c.desc.iova());
    assert_ne!(r(&mut d, 1, 0x1040) & xdma::ST_DESC_UR, 0);
}

#[test]
fn sim_xdma_busy_engine_finishes_its_descriptor_after_run_is_cleared() {
    // 30 MB/s into one 8 MiB descriptor: half filled for a while.
    let mut d = dev("pcie-240m?seed=1");
    run_chip_startup(&mut d);
    let c = chain(&mut d, 1, 8 << 20, true);
    run_engine(&mut d, c.desc.iova());
    eventually("noise flows into the descriptor", || {
        r(&mut d, 1, 0x1040);
        d.noise_produced() > 0
    });
    w(&mut d, 1, 0x1004, IDQ_CONTROL & !xdma::CTRL_RUN);
    let st = r(&mut d, 1, 0x1040);
    assert_eq!(st & (xdma::ST_BUSY | xdma::ST_IDLE_STOPPED), xdma::ST_BUSY, "still busy");
    // It goes idle once the descriptor is done (here: the chips stop, nothing will finish it).
    w(&mut d, 0, chip::SPI_MODULE_CTRL, 0);
    let st = r(&mut d, 1, 0x1040);
    assert_eq!(st & (xdma::ST_BUSY | xdma::ST_IDLE_STOPPED), xdma::ST_IDLE_STOPPED);
}

#[test]
fn sim_xdma_dma_error_with_fault_for_happens_once() {
    // A circular list of 8 in credit mode, 32 credits per run.
    let run = |d: &mut SimDevice, desc: u64| {
        run_engine(d, desc);
        w(d, 1, 0x508C, 32);
    };
    let mut d = dev("pcie-40m?rate=0&seed=1&fault=dma-error&fault-after=10000&fault-for=1");
    run_chip_startup(&mut d);
    let c = chain(&mut d, 8, 4096, false);
    w(&mut d, 1, CREDIT_MODE_W1S, 1 << 16);
    run(&mut d, c.desc.iova());
    let st = r(&mut d, 1, 0x1040);
    assert_eq!(st & (xdma::ST_DESC_UR | xdma::ST_BUSY), xdma::ST_DESC_UR);
    // 16 descriptors of warm-up, then 3 of noise reach 12,288 >= 10,000: the 20th fetch fails.
    assert_eq!(r(&mut d, 1, 0x1048), 19, "stopped at the first fetch past the fault point");
    let before = d.noise_produced();
    assert_eq!(before, 3 * 4096 + 4096, "three descriptors of noise, then 4 KiB lost");
    // The stopped engine lost a descriptor's worth of noise; a restart runs clean.
    w(&mut d, 1, 0x1004, 0);
    run(&mut d, c.desc.iova());
    assert_eq!(r(&mut d, 1, 0x1040) & (xdma::ST_ERRORS | xdma::ST_BUSY), xdma::ST_BUSY);
    assert_eq!(r(&mut d, 1, 0x1048), 32);
    assert_eq!(d.noise_produced(), before + 32 * 4096);
    // Without fault-for the error comes back on every run.
    let mut d = dev("pcie-40m?rate=0&seed=1&fault=dma-error&fault-after=10000");
    run_chip_startup(&mut d);
    let c = chain(&mut d, 8, 4096, false);
    w(&mut d, 1, CREDIT_MODE_W1S, 1 << 16);
    for _ in 0..3 {
        run(&mut d, c.desc.iova());
        assert_ne!(r(&mut d, 1, 0x1040) & xdma::ST_DESC_UR, 0);
        w(&mut d, 1, 0x1004, 0);
    }
}

#[test]
fn sim_chip_startup_delay_holds_ready_and_data_back() {
    let mut d = dev("pcie-40m?rate=0&seed=1&startup-delay=100s");
    run_chip_startup(&mut d);
    assert!(!InitStatus(r(&mut d, 0, chip::INIT_STATUS)).ready(), "not ready within the delay");
    let c = chain(&mut d, 2, 1024, true);
    run_engine(&mut d, c.desc.iova());
    assert_eq!(r(&mut d, 1, 0x1048), 0, "no data within the delay");
    let mut d = dev("pcie-40m?rate=0&seed=1&startup-delay=20ms");
    run_chip_startup(&mut d);
    eventually("ready after the delay", || InitStatus(r(&mut d, 0, chip::INIT_STATUS)).ready());
    let c = chain(&mut d, 2, 1024, true);
    run_engine(&mut d, c.desc.iova());
    assert_eq!(r(&mut d, 1, 0x1048), 2);
}

#[test]
fn sim_chip_shutdown_delay_ignores_writes_until_it_passed() {
    let mut d = dev("pcie-40m?rate=0&seed=1&shutdown-delay=100s");
    run_chip_startup(&mut d);
    w(&mut d, 0, chip::SPI_MODULE_CTRL, chip::SPI_SHUTDOWN);
    w(&mut d, 0, chip::SPI_MODULE_CTRL, 0);
    assert_eq!(r(&mut d, 0, chip::SPI_MODULE_CTRL), chip::SPI_SHUTDOWN, "write ignored");
    run_chip_startup(&mut d);
    assert!(!InitStatus(r(&mut d, 0, chip::INIT_STATUS)).ready(), "a start-up is ignored too");
    let mut d = dev("pcie-40m?rate=0&seed=1&shutdown-delay=20ms");
    run_chip_startup(&mut d);
    w(&mut d, 0, chip::SPI_MODULE_CTRL, chip::SPI_SHUTDOWN);
    std::thread::sleep(Duration::from_millis(20));
    eventually("writes accepted after the delay", || {
        w(&mut d, 0, chip::SPI_MODULE_CTRL, 0);
        r(&mut d, 0, chip::SPI_MODULE_CTRL) == 0
    });
    run_chip_startup(&mut d);
    assert!(InitStatus(r(&mut d, 0, chip::INIT_STATUS)).ready());
}
