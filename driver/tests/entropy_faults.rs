//! Which SP 800-90B health test catches the simulator's finer data faults, and after how many
//! samples: one module (chip) of several stuck at 0 with its status bit good (`module-stuck`), a
//! single stuck bit lane (`stuck-bit`) and a slow bias drift (`drift`). Fixed seeds, so every
//! figure is deterministic; each bound is derived in the test and in docs/entropy.md ("Finer
//! data faults"), where the table of figures printed here is kept.
//!
//! `cargo test --release -p quantis-driver --test entropy_faults -- --nocapture` prints them.

use quantis_driver::card::{self, Card, CardOptions};
use quantis_driver::entropy::health::{self, Failure, HealthTester, Params, SampleWidth, Test};
use quantis_driver::entropy::sp800_22::{frequency, unpack_msb};
use quantis_driver::hw;
use quantis_driver::hw::sim::noise::{DRIFT_SPAN, FAULT_BIAS};

/// Bytes of healthy output before each fault starts.
const ONSET: u64 = 300_000;

fn open(spec: &str) -> Box<dyn Card> {
    let uri = format!("sim:{spec}").parse().expect("valid sim uri");
    let dev = hw::open(&uri).expect("open simulator");
    let mut c = card::open(dev, &CardOptions::default()).expect("open card");
    c.start().expect("start card");
    c
}

fn read(card: &mut dyn Card, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let mut done = 0;
    while done < n {
        done += card.read(&mut v[done..]).expect("card read");
    }
    v
}

/// Feeds the card's stream to a tester in 64 KiB pieces until it fails or `limit` bytes have
/// passed. Returns the failure (if any) and the bytes read.
fn run(spec: &str, p: Params, limit: u64) -> (Option<Failure>, u64) {
    let mut card = open(spec);
    let mut t = HealthTester::new(p);
    let mut seen = 0u64;
    while seen < limit {
        let chunk = read(card.as_mut(), 64 << 10);
        seen += chunk.len() as u64;
        if let Err(f) = t.process(&chunk) {
            return (Some(f), seen);
        }
    }
    (None, seen)
}

fn byte_params() -> Params {
    Params::new(SampleWidth::Byte, 6.4, 30).unwrap()
}

#[test]
fn module_stuck_is_caught_by_the_rct_or_apt_within_its_bound() {
    let p = byte_params();
    let c = u64::from(p.rct_cutoff);
    // RCT: a stuck unit's word is 4 zero bytes; the run reaches C = 6 when the 2 random bytes
    // around it make up the rest: probability q_w per stuck word (below). With one stuck word in
    // every 4·units bytes, the chance that m stuck words all miss is (1 − q_w)^m; the bound is
    // the m where that falls below 2^−40. The APT fires earlier whenever a window's first sample
    // falls in a stuck word (its count is then ≥ W/units ≥ the cutoff).
    let z: f64 = 1.0 / 256.0;
    let q_w = 1.0 - ((1.0 - z) * (1.0 - z) + 2.0 * z * (1.0 - z) * (1.0 - z));
    for (model, units) in [("pcie-40m", 2u64), ("pcie-16m", 4), ("pcie-240m", 12)] {
        let m = (40.0 * std::f64::consts::LN_2 / -(1.0 - q_w).ln()).ceil() as u64;
        let bound = ONSET + m * 4 * units;
        let spec = format!("{model}?rate=0&seed=31&fault=module-stuck&fault-after={ONSET}");
        let (f, _) = run(&spec, p, bound + (1 << 20));
        let f = f.unwrap_or_else(|| panic!("{spec}: no alarm"));
        assert!(!f.startup, "{spec}: {f}");
        assert!(f.at_sample <= bound, "{spec}: {f}, bound {bound}");
        if f.test == Test::RepetitionCount {
            assert_eq!(f.count, c as u32);
        }
        println!(
            "module-stuck {model} ({units} units): {} at sample {} = {} after the onset (bound {} after)",
            f.test,
            f.at_sample,
            f.at_sample - ONSET,
            bound - ONSET
        );
    }
}

#[test]
fn a_stuck_bit_lane_stays_within_the_claim_and_no_health_test_fires() {
    // Bit 0 of every 32-bit word stuck at 1: byte samples keep min-entropy 7 bits (one byte in
    // four) or 8, bit samples 31/32 of a bit on average; both above the claims (6.4 per byte,
    // 0.8 per bit), so SP 800-90B health tests must not fire: their α is for exactly this.
    // What catches it is an offline statistical test: SP 800-22 frequency on 1 Mbit.
    for model in ["pcie-16m", "pcie-240m"] {
        let spec = format!("{model}?rate=0&seed=32&fault=stuck-bit&fault-after=0");
        for p in [byte_params(), Params::new(SampleWidth::Bit, 0.8, 30).unwrap()] {
            let (f, seen) = run(&spec, p, 16 << 20);
            assert!(f.is_none(), "{spec} {:?}: {}", p.width, f.unwrap());
            println!("stuck-bit {model} {:?}: no alarm in {seen} bytes", p.width);
        }
        let mut card = open(&spec);
        let raw = read(card.as_mut(), 1 << 17);
        let pv = frequency(&unpack_msb(&raw));
        assert!(pv < 1e-10, "{spec}: SP 800-22 frequency p = {pv}");
        println!("stuck-bit {model}: SP 800-22 frequency p-value {pv:.3e} on 1 Mbit");
    }
}

#[test]
fn a_slow_drift_is_caught_by_the_apt_after_it_crosses_the_claim() {
    // P(1) = 0.5 + 0.25·t/DRIFT_SPAN. Byte samples fall below the claimed 6.4 bits when
    // P(0xFF) = p^8 > 2^−6.4, i.e. p > 2^−0.8 = 0.574 (t > 0.297·DRIFT_SPAN). Detection is
    // statistical (APT per-window probability q rises with p); bound: at the end of the ramp
    // (p = 0.75, q = 0.173 per 1024-byte window) 146 more windows leave a miss below 2^−40.
    let p = byte_params();
    let w = u64::from(p.apt_window);
    let mut q = 0.0;
    for v in 0..256u32 {
        let pv = 0.75f64.powi(v.count_ones() as i32) * 0.25f64.powi(8 - v.count_ones() as i32);
        let tails = health::binomial_upper_tails_ln(p.apt_window - 1, pv);
        q += pv * tails[(p.apt_cutoff - 1) as usize].exp();
    }
    let k = (-40.0 * std::f64::consts::LN_2 / (1.0 - q).ln()).ceil() as u64;
    let crossing = (2f64.powf(-0.8) - 0.5) / FAULT_BIAS;
    for model in ["pcie-16m", "pcie-240m"] {
        // Sample i is noise byte i: chip cards discard their warm-up before returning bytes.
        let onset = ONSET;
        let bound = onset + DRIFT_SPAN + (k + 1) * w;
        let spec = format!("{model}?rate=0&seed=33&fault=drift&fault-after={ONSET}");
        let (f, _) = run(&spec, p, bound + (1 << 20));
        let f = f.unwrap_or_else(|| panic!("{spec}: no alarm"));
        assert_eq!(f.test, Test::AdaptiveProportion, "{spec}: {f}");
        assert!(f.at_sample <= bound, "{spec}: {f}, bound {bound}");
        let t = (f.at_sample - onset) as f64 / DRIFT_SPAN as f64;
        println!(
            "drift {model}: APT at sample {} = {} after the onset, P(1) = {:.3} (claim crossed at {:.3} = {} samples; bound {})",
            f.at_sample,
            f.at_sample - onset,
            0.5 + FAULT_BIAS * t.min(1.0),
            2f64.powf(-0.8),
            (crossing * DRIFT_SPAN as f64) as u64,
            bound - onset
        );
    }
}
