//! The MCP endpoint with its real client: the official MCP Python SDK (PyPI `mcp`, pinned) against
//! the real `qrng-bridge` on two simulated cards, one healthy (`qrng0`) and one whose noise is
//! stuck at 0 from the start, so its health tests fail it (`qrng1`).
//!
//! The SDK lists the tools and calls each; the test checks the schemas, the values, that the
//! bytes are pieces of the healthy card's stream served once, and that bad arguments, a failed
//! card and a missing token give clean errors that take no byte.

use std::path::Path;
use std::process::Command;

use qrng_e2e::{reference_stream, start_driver, wait_until, Bridge, Placement};
use serde_json::{json, Value};

/// The SDK release the test pins (a newer one is tried by changing this line).
const SDK: &str = "mcp==2.3.0";
const TOKEN: &str = "mcp-test-token";
const HEALTHY: &str = "sim:pcie-4m?seed=11";
const STUCK: &str = "sim:pcie-4m?seed=12&fault=stuck0";

/// Runs the SDK client with `script`; returns one JSON value per step, or the client's failure.
fn client(python: &Path, url: &str, token: &str, script: &Value) -> Result<Vec<Value>, String> {
    let script_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp/client.py");
    let out = Command::new(python)
        .arg(script_path)
        .args([url, token, &script.to_string()])
        .output()
        .expect("run the MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{}\n{stdout}{}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(stdout.lines().map(|l| serde_json::from_str(l).expect("client JSON line")).collect())
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

#[test]
fn e2e_mcp_python_sdk_lists_and_calls_every_tool() {
    let Some(python) = qrng_e2e::python::venv("mcp", "mcp", &[SDK]) else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let reference = Placement::new(reference_stream(HEALTHY, 1 << 16, tmp.path()));
    let rings = tmp.path().join("rings");
    std::fs::create_dir(&rings).expect("ring dir");
    let _good = start_driver(HEALTHY, &rings.join("qrng0.ring"));
    let _bad = start_driver(STUCK, &rings.join("qrng1.ring"));
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("token file");
    let bridge = Bridge::start(
        &rings,
        &tmp.path().join("dev"),
        &["--no-fuse", "--tokens-file", tokens.to_str().expect("utf-8 path")],
    );
    let health = |b: &Bridge| -> Value {
        serde_json::from_slice(&b.get("/health").expect("GET /health").body).expect("health JSON")
    };
    wait_until("qrng0 ok and qrng1 failed", || {
        let h = health(&bridge);
        let state = |n: &str| {
            h["devices"].as_array()?.iter().find(|d| d["name"] == n).map(|d| d["health"].clone())
        };
        (state("qrng0")? == "ok" && state("qrng1")? == "failed").then_some(())
    });
    let url = format!("http://{}/mcp", bridge.addr);

    let script = json!([
        {"list": true},
        {"tool": "random_bytes", "arguments": {"length": 32}},
        {"tool": "random_bytes", "arguments": {"length": 24, "format": "base64", "device": "qrng0"}},
        {"tool": "random_integers", "arguments": {"min": -3, "max": 3, "count": 50}},
        {"tool": "random_floats", "arguments": {"count": 10}},
        {"tool": "random_uuids", "arguments": {"count": 3}},
        {"tool": "device_health"},
        {"tool": "random_bytes", "arguments": {"length": 16}},
        // Refusals: bad arguments, then the failed card.
        {"tool": "random_integers", "arguments": {"min": 5, "max": 1}},
        {"tool": "random_bytes", "arguments": {"length": 0}},
        {"tool": "random_bytes", "arguments": {"length": "many"}},
        {"tool": "random_uuids", "arguments": {"count": 1, "colour": "red"}},
        {"tool": "random_bytes", "arguments": {"length": 8, "device": "qrng1"}},
        {"tool": "random_floats", "arguments": {"device": "qrng1"}},
    ]);
    let served_before = health(&bridge)["total_bytes_served"].as_u64().expect("served");
    let r = client(&python, &url, TOKEN, &script).expect("MCP session");
    assert_eq!(r.len(), script.as_array().unwrap().len());

    // The tools and the JSON schemas of their arguments.
    let tools = r[0]["tools"].as_array().expect("tools");
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["device_health", "random_bytes", "random_floats", "random_integers", "random_uuids"]
    );
    let schema = |n: &str| &tools.iter().find(|t| t["name"] == n).unwrap()["inputSchema"];
    assert_eq!(schema("random_bytes")["required"], json!(["length"]));
    assert_eq!(schema("random_integers")["required"], json!(["min", "max"]));
    assert_eq!(schema("random_uuids")["properties"]["count"]["minimum"], 1);

    // Values, all from qrng0.
    let ok = |i: usize| -> &Value {
        assert_eq!(r[i]["isError"], false, "step {i}: {}", r[i]);
        assert_eq!(r[i]["structuredContent"]["source"], "simulated", "step {i}");
        assert_eq!(r[i]["structuredContent"]["device"], "qrng0", "step {i}");
        &r[i]["structuredContent"]["data"]
    };
    use base64::Engine as _;
    let mut pieces = vec![hex_bytes(ok(1).as_str().unwrap())];
    pieces.push(
        base64::engine::general_purpose::STANDARD.decode(ok(2).as_str().unwrap()).expect("base64"),
    );
    pieces.push(hex_bytes(ok(7).as_str().unwrap()));
    assert_eq!(pieces.iter().map(Vec::len).collect::<Vec<_>>(), [32, 24, 16]);
    reference.assert_disjoint_pieces(&pieces);
    let ints = ok(3).as_array().unwrap();
    assert_eq!(ints.len(), 50);
    assert!(ints.iter().all(|v| (-3..=3).contains(&v.as_i64().unwrap())), "{ints:?}");
    let floats = ok(4).as_array().unwrap();
    assert_eq!(floats.len(), 10);
    assert!(floats.iter().all(|v| (0.0..1.0).contains(&v.as_f64().unwrap())));
    let uuids = ok(5).as_array().unwrap();
    assert_eq!(uuids.len(), 3);
    assert!(uuids.iter().all(|u| u.as_str().unwrap().as_bytes()[14] == b'4'), "{uuids:?}");
    let h = &r[6];
    assert_eq!(h["isError"], false);
    assert_eq!(h["structuredContent"]["status"], "degraded", "one card of two failed: {h}");

    // Refusals are tool errors with the reason, and take nothing.
    let refused = |i: usize, want: &str| {
        assert_eq!(r[i]["isError"], true, "step {i}: {}", r[i]);
        let text = r[i]["text"].to_string();
        assert!(text.contains(want), "step {i}: {text}");
    };
    refused(8, "min (5) must not exceed max (1)");
    refused(9, "length must be at least 1");
    refused(10, "many");
    refused(11, "colour");
    refused(12, "device_failed");
    refused(13, "device_failed");
    let served = health(&bridge)["total_bytes_served"].as_u64().unwrap() - served_before;
    // 72 bytes, 50 integers of one byte each (plus rejections), 80 + 48: at least 250.
    assert!(served >= 32 + 24 + 16 + 50 + 80 + 48, "served {served}");

    // Without the token the SDK cannot even initialize (the bridge answers 401).
    let e = client(&python, &url, "-", &json!([])).expect_err("an open session without the token");
    assert!(e.contains("Server returned an error response"), "{e}");
    let after = health(&bridge)["total_bytes_served"].as_u64().unwrap();
    assert_eq!(after - served_before, served, "the refused session took bytes");
}
