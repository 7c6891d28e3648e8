//! Simulator tests for the module cards' status and PIO timing options: `status-lag`,
//! `test-mode`, `pio-latency`.

use super::*;
use crate::regs::{pio, FifoStatus, ModuleBits, ModuleStatus};

fn dev(spec: &str) -> SimDevice {
    SimDevice::new(spec.parse().unwrap()).unwrap()
}

fn mx_sr(d: &mut SimDevice) -> ModuleStatus {
    ModuleStatus(d.read32(pio::BAR, pio::MX_SR).unwrap())
}

fn enable(d: &mut SimDevice, mask: u32) {
    d.write32(pio::BAR, pio::MX_ER, ModuleStatus::write_value(mask, ModuleBits::SEN)).unwrap();
}

#[test]
fn sim_spec_parses_the_pio_keys() {
    let s: SimSpec = "pcie-16m?status-lag=50ms&test-mode=0x3&pio-latency=800ns".parse().unwrap();
    assert_eq!(s.status_lag, Duration::from_millis(50));
    assert_eq!(s.test_mode, 0x3);
    assert_eq!(s.pio_latency, Duration::from_nanos(800));
    let d: SimSpec = "pcie-4m".parse().unwrap();
    assert_eq!((d.status_lag, d.test_mode, d.pio_latency), (Duration::ZERO, 0, Duration::ZERO));
    // Register reads cost time on chip cards too.
    let c: SimSpec = "pcie-40m?pio-latency=1us".parse().unwrap();
    assert_eq!(c.pio_latency, Duration::from_micros(1));
    for (v, want) in [
        ("800ns", Duration::from_nanos(800)),
        ("0.8us", Duration::from_nanos(800)),
        ("0.8µs", Duration::from_nanos(800)),
        ("1.5ms", Duration::from_micros(1500)),
        ("2s", Duration::from_secs(2)),
        ("0ms", Duration::ZERO),
    ] {
        assert_eq!(parse_duration(v), Some(want), "{v}");
    }
    for v in ["800", "ms", "5m", "-1ms", "1.2.3ms", "1e3ns", ""] {
        assert_eq!(parse_duration(v), None, "{v}");
    }
}

#[test]
fn sim_spec_rejects_bad_pio_keys_clearly() {
    let cases = [
        ("pcie-4m?pio-latency=800", "bad value \"800\" for pio-latency: expected a duration"),
        ("pcie-4m?status-lag=fast", "bad value \"fast\" for status-lag"),
        ("pcie-40m?status-lag=1ms", "status-lag= applies to module cards only"),
        ("pcie-240m?test-mode=1", "test-mode= applies to module cards only"),
        ("pcie-4m?test-mode=0x2", "non-empty mask within 0x1"),
        ("pcie-16m?test-mode=0", "non-empty mask within 0xf"),
        ("pcie-4m?pio-latency=1us&pio-latency=2us", "given twice"),
    ];
    for (spec, want) in cases {
        let e = spec.parse::<SimSpec>().unwrap_err().to_string();
        assert!(e.contains(want), "{spec}: {e}");
        assert!(e.contains(&format!("sim:{spec}")), "{spec}: error names the uri: {e}");
    }
}

#[test]
fn sim_pio_status_lag_delays_hst_after_each_enable() {
    // A long lag: HST is certainly still clear right after the enable; SEN shows at once.
    let mut d = dev("pcie-16m?rate=0&seed=1&status-lag=3600s");
    assert_eq!(mx_sr(&mut d).hardware_ok(), 0xF, "disabled modules report HST");
    enable(&mut d, 0b0011);
    let st = mx_sr(&mut d);
    assert_eq!((st.enabled(), st.working(), st.hardware_ok()), (0b0011, 0, 0b1100));
    // Data flows from the enable (only the status report lags).
    assert!(FifoStatus(d.read32(pio::BAR, pio::FS_RR).unwrap()).available_bytes() > 0);
    // Disable and reset end the lag.
    d.write32(pio::BAR, pio::MX_DR, ModuleStatus::write_value(0b0001, ModuleBits::SEN)).unwrap();
    assert_eq!(mx_sr(&mut d).hardware_ok(), 0b1101);
    d.write32(pio::BAR, pio::CC_ER, 1).unwrap();
    d.write32(pio::BAR, pio::CC_DR, 1).unwrap();
    assert_eq!(mx_sr(&mut d).hardware_ok(), 0xF);

    // A short lag: HST shows once it has passed, and each new enable starts it again.
    let mut d = dev("pcie-4m?rate=0&seed=1&status-lag=20ms");
    enable(&mut d, 1);
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(mx_sr(&mut d).working(), 1);
    enable(&mut d, 1);
    assert_eq!(mx_sr(&mut d).working(), 1, "enabling an enabled module does not restart the lag");
}

#[test]
fn sim_pio_test_mode_is_set_from_power_on_and_stays() {
    let mut d = dev("pcie-16m?rate=0&seed=1&test-mode=0x5&modules=0x7");
    assert_eq!(mx_sr(&mut d).test_mode(), 0x5);
    enable(&mut d, 0x7);
    d.write32(pio::BAR, pio::CC_ER, 1).unwrap();
    d.write32(pio::BAR, pio::CC_DR, 1).unwrap();
    d.write32(pio::BAR, pio::MX_DR, ModuleStatus::write_value(0x7, ModuleBits::TM)).unwrap();
    d.reset().unwrap();
    assert_eq!(mx_sr(&mut d).test_mode(), 0x5, "neither reset nor MX_DR clears it");
    // Modules not present show no bits at all.
    let mut absent = dev("pcie-16m?test-mode=0x8&modules=0x7");
    assert_eq!(mx_sr(&mut absent).test_mode(), 0);
}

#[test]
fn sim_pio_latency_makes_each_register_read_cost_at_least_that_long() {
    // A lower bound that holds by construction (the reads busy-wait), not a timing measurement.
    let mut d = dev("pcie-4m?rate=0&seed=1&pio-latency=5us");
    enable(&mut d, 1);
    let t = std::time::Instant::now();
    let mut words = [0u32; 1024];
    d.read32_repeat(pio::BAR, pio::FD_RR, &mut words).unwrap();
    assert!(t.elapsed() >= Duration::from_micros(5 * 1024));
    let t = std::time::Instant::now();
    for _ in 0..100 {
        d.read32(pio::BAR, pio::FS_RR).unwrap();
    }
    assert!(t.elapsed() >= Duration::from_micros(500));
    assert!(words.iter().any(|&w| w != 0), "the data is still the noise");
}
