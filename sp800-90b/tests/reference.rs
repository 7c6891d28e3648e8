//! The estimates agree with NIST's reference tool (ea_non_iid) to within 0.001 bit on every input
//! of tests/common/inputs.rs. tests/fixtures/reference.json says how its figures were made.

#[path = "common/inputs.rs"]
mod inputs;

use serde_json::Value;
use sp800_90b::{non_iid, Dataset, Estimate};

/// The agreement the assessment promises (bits per symbol, or per bit for the bitstring).
const TOLERANCE: f64 = 0.001;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/reference.json")).expect("reference.json parses")
}

fn check(name: &str, what: &str, mine: Option<f64>, theirs: &Value) -> Option<String> {
    match (mine, theirs.as_f64()) {
        (Some(m), Some(t)) if (m - t).abs() <= TOLERANCE => None,
        (None, None) => None,
        (m, t) => Some(format!("{name} {what}: ours {m:?}, reference {t:?}")),
    }
}

#[test]
fn non_iid_estimates_match_the_reference_tool() {
    let fixture = fixture();
    let refs = fixture["inputs"].as_object().expect("inputs");
    let inputs = inputs::all();
    assert_eq!(inputs.len(), refs.len(), "every input has reference figures");
    let mut errors = Vec::new();
    for input in inputs {
        let r = &refs[input.name];
        assert_eq!(r["bits_per_symbol"].as_u64(), Some(u64::from(input.bits)), "{}", input.name);
        let d = Dataset::new(&input.samples, Some(input.bits)).expect("dataset");
        let report = non_iid(&d).expect("assessment");
        let estimates: [(&str, Estimate); 10] = [
            ("most_common_value", report.most_common_value),
            ("collision", report.collision),
            ("markov", report.markov),
            ("compression", report.compression),
            ("t_tuple", report.t_tuple),
            ("lrs", report.lrs),
            ("multi_mcw", report.multi_mcw),
            ("lag", report.lag),
            ("multi_mmc", report.multi_mmc),
            ("lz78y", report.lz78y),
        ];
        for (key, e) in estimates {
            errors.extend(check(
                input.name,
                &format!("{key} original"),
                e.original,
                &r[key]["original"],
            ));
            errors.extend(check(
                input.name,
                &format!("{key} bitstring"),
                e.bitstring,
                &r[key]["bitstring"],
            ));
        }
        errors.extend(check(input.name, "h_original", Some(report.h_original), &r["h_original"]));
        errors.extend(check(input.name, "h_bitstring", report.h_bitstring, &r["h_bitstring"]));
        errors.extend(check(input.name, "h_assessed", Some(report.h_assessed), &r["h_assessed"]));
    }
    assert!(errors.is_empty(), "disagreements with the reference tool:\n{}", errors.join("\n"));
}
