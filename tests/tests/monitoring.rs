//! The monitoring files operators drop in: the Prometheus alerting rules
//! (`deploy/prometheus/qrng.rules.yml`, checked and unit-tested by the real promtool) and the
//! Grafana dashboard (`deploy/grafana/qrng.json`, checked for structure). Both may name only
//! metrics the bridge exports: the names are taken from a real `/metrics` page of the bridge
//! serving a simulated card, which promtool also lints.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use qrng_e2e::packaging::{find_tool, output_text, skip, workspace_root};
use qrng_e2e::{start_driver, wait_until, Bridge};

fn rules_dir() -> PathBuf {
    workspace_root().join("deploy/prometheus")
}

fn dashboard() -> serde_json::Value {
    let path = workspace_root().join("deploy/grafana/qrng.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Runs promtool with `args` in `dir`; panics with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .current_dir(dir)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start promtool");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("promtool output");
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "promtool {args:?} failed:\n{stdout}\n{stderr}");
    stdout + &stderr
}

/// The alert names of the rules file, and the alert names its unit tests evaluate.
fn alert_names(text: &str, key: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix(key))
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn monitoring_rules_pass_promtool_check_and_their_unit_tests() {
    let test = "monitoring_rules_pass_promtool_check_and_their_unit_tests";
    if find_tool("promtool").is_none() {
        return skip(test, "`promtool` is not installed (Debian package prometheus)");
    }
    let out = promtool(&rules_dir(), &["check", "rules", "qrng.rules.yml"], None);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&rules_dir(), &["test", "rules", "qrng.rules.test.yml"], None);
    assert!(out.contains("SUCCESS"), "{out}");

    // Every alert is unit-tested, and the tests name no alert the rules lack.
    let rules = std::fs::read_to_string(rules_dir().join("qrng.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(rules_dir().join("qrng.rules.test.yml")).unwrap();
    let alerts = alert_names(&rules, "alert:");
    assert!(alerts.len() >= 7, "{alerts:?}");
    assert_eq!(alert_names(&tests, "alertname:"), alerts);
}

/// Metric names in a PromQL expression: the identifiers with the bridge's `qrng_` prefix.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("qrng_") {
        let boundary =
            rest[..i].chars().next_back().is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let tail = &rest[i..];
        let end = tail.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(tail.len());
        if boundary {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Every query of the dashboard: (panel title, expression).
fn dashboard_queries(d: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or("?").to_owned();
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((title.clone(), t["expr"].as_str().unwrap_or("").to_owned()));
        }
    }
    out
}

#[test]
fn monitoring_dashboard_is_a_grafana_dashboard_whose_panels_all_query() {
    let d = dashboard();
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    // Grafana 10.4 and 11 write 39; below 36 Grafana migrates the panels on load.
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["uid"].as_str().is_some_and(|t| !t.is_empty()));
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id: {p}");
        assert!(p["gridPos"]["w"].as_u64().is_some_and(|w| w > 0 && w <= 24), "{p}");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().filter(|t| !t.is_empty());
        let targets = targets.unwrap_or_else(|| panic!("panel {} has no targets", p["title"]));
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(!metric_names(expr).is_empty(), "panel {}: query {expr:?}", p["title"]);
            assert!(t["refId"].as_str().is_some(), "panel {}: target without refId", p["title"]);
        }
    }
    // What the issue asks to see: per-card health, rate, ring fill, alarms, request rate,
    // latency, 503/429.
    let all: String = dashboard_queries(&d).into_iter().map(|(_, e)| e + "\n").collect();
    for needed in [
        "qrng_device_state",
        "qrng_raw_read_bytes_total",
        "qrng_ring_fill_ratio",
        "qrng_health_alarms_total",
        "qrng_http_responses_total",
        "qrng_http_request_duration_seconds_bucket",
        "503|429",
    ] {
        assert!(all.contains(needed), "no panel shows {needed}");
    }
}

/// The metric names a /metrics page exports (a histogram also as its _bucket, _sum, _count).
fn exported_names(page: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
        names.insert(name.to_owned());
        if kind == "histogram" || kind == "summary" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

#[test]
fn monitoring_rules_and_dashboard_use_only_metrics_of_a_real_metrics_page() {
    let tmp = tempfile::tempdir().unwrap();
    let rings = tmp.path().join("rings");
    std::fs::create_dir(&rings).unwrap();
    // At the model's rate (no rate=0): the card need not run flat out for a scrape.
    let _driver = start_driver("sim:pcie-16m?seed=1", &rings.join("qrng0.ring"));
    let bridge = Bridge::start(&rings, &tmp.path().join("dev"), &["--no-fuse"]);
    wait_until("qrng0 is ok", || (bridge.device("qrng0")?["health"] == "ok").then_some(()));
    // One request of each kind so that the per-request series exist.
    assert_eq!(bridge.http_bytes("qrng0", 16).map(|b| b.len()), Ok(16));
    let _ = bridge.get("/api/v1/random/bytes?length=-1");
    let page = bridge.get("/metrics").expect("GET /metrics");
    assert_eq!(page.status, 200);
    let page = String::from_utf8(page.body).expect("UTF-8 metrics page");
    let exported = exported_names(&page);
    assert!(exported.contains("qrng_raw_nominal_rate_bytes_per_second"), "{page}");

    let d = dashboard();
    for (title, expr) in dashboard_queries(&d) {
        for name in metric_names(&expr) {
            assert!(
                exported.contains(&name),
                "panel {title:?} queries {name}, not exported:\n{page}"
            );
        }
    }
    let rules = std::fs::read_to_string(rules_dir().join("qrng.rules.yml")).unwrap();
    let used = metric_names(&rules);
    assert!(used.len() >= 8, "{used:?}");
    for name in used {
        assert!(exported.contains(&name), "the rules use {name}, not exported:\n{page}");
    }

    // promtool's lint of the page (naming, units, HELP) — what a scrape config meets.
    if find_tool("promtool").is_none() {
        return skip(
            "monitoring_rules_and_dashboard_use_only_metrics_of_a_real_metrics_page",
            "`promtool` is not installed: the page's lint (`promtool check metrics`) did not run",
        );
    }
    promtool(&rules_dir(), &["check", "metrics"], Some(&page));
}
