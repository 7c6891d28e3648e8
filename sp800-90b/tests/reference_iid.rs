//! The IID track agrees with NIST's reference tool (ea_iid): the 19 permutation-test statistics of
//! each input, the chi-square statistics, p-values and verdicts, the LRS test, and the IID
//! estimates. The permutations themselves are the reference's from /dev/urandom and ours from a
//! fixed seed, so only their verdict is compared, on the small inputs (the full runs on 1,000,000
//! samples take seconds each). tests/fixtures/reference_iid.json says how its figures were made.

#[path = "common/inputs.rs"]
mod inputs;

use serde_json::Value;
use sp800_90b::iid::{chi_square_and_lrs, iid_tests, statistics, NAMES};
use sp800_90b::Dataset;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn iid_statistics_match_the_reference_tool() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/reference_iid.json")).expect("parses");
    let refs = fixture["inputs"].as_object().expect("inputs");
    let mut errors = Vec::new();
    let mut checked = 0;
    for input in inputs::all() {
        let Some(r) = refs.get(input.name) else { continue };
        checked += 1;
        let d = Dataset::new(&input.samples, Some(input.bits)).expect("dataset");
        let stats = statistics(&d);
        for (name, value) in NAMES.iter().zip(stats) {
            let want = r["statistics"][*name].as_f64().expect("statistic");
            if !close(value, want) {
                errors.push(format!("{} {name}: ours {value}, reference {want}", input.name));
            }
        }
        let (ind, fit, lrs) = chi_square_and_lrs(&d).expect("tests");
        for (key, c) in [("chi_square_independence", ind), ("chi_square_goodness_of_fit", fit)] {
            let want = &r[key];
            if !close(c.statistic, want["statistic"].as_f64().expect("T"))
                || u64::from(c.df) != want["df"].as_u64().expect("df")
                || !close(c.p_value, want["p_value"].as_f64().expect("p"))
            {
                errors.push(format!("{} {key}: ours {c:?}, reference {want}", input.name));
            }
        }
        if (ind.passed() && fit.passed()) != r["chi_square_passed"].as_bool().expect("verdict") {
            errors.push(format!("{} chi-square verdict differs", input.name));
        }
        if lrs.w as u64 != r["lrs_w"].as_u64().expect("W")
            || lrs.passed != r["lrs_passed"].as_bool().expect("verdict")
        {
            errors.push(format!(
                "{} LRS test: ours {lrs:?}, reference W {} {}",
                input.name, r["lrs_w"], r["lrs_passed"]
            ));
        }
        if input.samples.len() <= 100_000 {
            let report = iid_tests(&d).expect("iid track");
            let want = r["permutation_passed"].as_bool().expect("verdict");
            if report.permutation.iter().all(|p| p.passed()) != want {
                errors.push(format!(
                    "{} permutation verdict: reference {want}, ours {:?}",
                    input.name, report.permutation
                ));
            }
            for (key, ours) in [
                ("h_original", Some(report.h_original)),
                ("h_bitstring", report.h_bitstring),
                ("h_assessed", Some(report.h_assessed)),
            ] {
                match (ours, r[key].as_f64()) {
                    (Some(a), Some(b)) if (a - b).abs() <= 0.001 => {}
                    (None, None) => {}
                    (a, b) => {
                        errors.push(format!("{} {key}: ours {a:?}, reference {b:?}", input.name))
                    }
                }
            }
        }
    }
    assert!(checked >= 5, "the fixture covers the inputs ({checked})");
    assert!(errors.is_empty(), "disagreements with the reference tool:\n{}", errors.join("\n"));
}
