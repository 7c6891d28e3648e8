//! Router tests with `oneshot` (no socket) against in-memory rings, plus one test on a real port.
//! Expected values are derived independently from the bytes pushed into the ring.

use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt as _;

use super::*;
use crate::dispenser::memory::MemoryRing;
use crate::dispenser::{DeviceState, DispenserConfig};
use qrng_ring::{Health, Reason};

pub(super) struct Fixture {
    pub(super) ring: MemoryRing,
    pub(super) state: AppState,
}

pub(super) fn pattern(len: usize) -> Vec<u8> {
    qrng_ring::pattern::bytes(0, len)
}

pub(super) fn fixture_with(cfg: HttpConfig, prefill: usize) -> Fixture {
    let ring = MemoryRing::new("QX1234", false, 1 << 20);
    ring.push(&pattern(prefill));
    let d = Dispenser::new(DispenserConfig {
        heartbeat_timeout: Duration::from_secs(3600),
        status_interval: Duration::from_millis(2),
    });
    d.attach_source("qrng0", None, ring.source()).expect("attach");
    let state = AppState::new(d, cfg).expect("state");
    Fixture { ring, state }
}

pub(super) fn fixture() -> Fixture {
    fixture_with(HttpConfig { wait: Duration::from_millis(50), ..HttpConfig::default() }, 4096)
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.state.dispenser().shutdown();
    }
}

pub(super) async fn get_with(
    app: Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.oneshot(req.body(Body::empty()).expect("request")).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    (status, headers, body.to_vec())
}

async fn get(f: &Fixture, uri: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    get_with(router(f.state.clone()), uri, &[]).await
}

async fn get_json(f: &Fixture, uri: &str) -> (StatusCode, HeaderMap, Value) {
    let (s, h, b) = get(f, uri).await;
    let v = serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {b:?}"));
    (s, h, v)
}

/// Waits until the consumer thread has seen the new status (a guard, not a timing assertion).
async fn wait_health(f: &Fixture, want: DeviceState) {
    let d = f.state.dispenser().clone();
    let wait = tokio::task::spawn_blocking(move || {
        while d.health("qrng0").ok() != Some(want) {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    tokio::time::timeout(Duration::from_secs(30), wait).await.expect("state change").expect("join");
}

fn assert_random_headers(h: &HeaderMap) {
    assert_eq!(h.get("cache-control").expect("cache-control"), "no-store");
    assert_eq!(h.get("x-qrng-source").expect("source header"), "QX1234");
    assert_eq!(h.get("x-qrng-device").expect("device header"), "qrng0");
}

/// Asserts a JSON error with `status` and `code`, and that the ring was not touched.
pub(super) async fn assert_error(
    f: &Fixture,
    uri: &str,
    status: StatusCode,
    code: &str,
) -> HeaderMap {
    let before = f.ring.len();
    let (s, h, v) = get_json(f, uri).await;
    assert_eq!(s, status, "{uri}: {v}");
    assert_eq!(v["error"]["code"], code, "{uri}: {v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{uri}: {v}");
    assert_eq!(f.ring.len(), before, "{uri} consumed entropy");
    h
}

#[tokio::test]
async fn bytes_hex_is_the_next_ring_bytes_with_headers() {
    let f = fixture();
    let (s, h, v) = get_json(&f, "/api/v1/random/bytes?length=32").await;
    assert_eq!(s, StatusCode::OK);
    assert_random_headers(&h);
    let want: String = pattern(32).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v["data"], want.as_str());
    assert_eq!(v["length"], 32);
    assert_eq!(v["format"], "hex");
    assert_eq!(v["source"], "QX1234");
    assert_eq!(f.ring.len(), 4096 - 32);
}

#[tokio::test]
async fn bytes_base64_and_binary() {
    let f = fixture();
    let (s, h, v) = get_json(&f, "/api/v1/random/bytes?length=5&format=base64").await;
    assert_eq!(s, StatusCode::OK);
    assert_random_headers(&h);
    let p = pattern(5);
    let want = base64::engine::general_purpose::STANDARD.encode(&p);
    assert_eq!(v["data"], want.as_str());
    assert_eq!(v["format"], "base64");
    let (s, h, body) = get(&f, "/api/v1/random/bytes?length=100&format=binary&device=qrng0").await;
    assert_eq!(s, StatusCode::OK);
    assert_random_headers(&h);
    assert_eq!(h.get("content-type").expect("ct"), "application/octet-stream");
    assert_eq!(body, pattern(105)[5..].to_vec());
}

use base64::Engine as _;

#[tokio::test]
async fn bytes_query_is_percent_decoded_and_repeats_are_refused() {
    let f = fixture();
    // Encoded names and values decode as with any form query; unknown names are ignored.
    let (s, _, v) = get_json(&f, "/api/v1/random/bytes?l%65ngth=%34&format=b%61se64&x=1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let want = base64::engine::general_purpose::STANDARD.encode(pattern(4));
    assert_eq!(v["data"], want.as_str());
    assert_eq!(v["length"], 4);
    // A repeated parameter is ambiguous: 400, nothing taken (also when spelled differently).
    for uri in [
        "/api/v1/random/bytes?length=4&length=8",
        "/api/v1/random/bytes?length=4&l%65ngth=4",
        "/api/v1/random/bytes?length=4&format=hex&format=binary",
    ] {
        assert_error(&f, uri, StatusCode::BAD_REQUEST, "invalid_parameter").await;
    }
}

#[tokio::test]
async fn bytes_json_escapes_the_source_and_pads_base64() {
    // The serial comes from the ring's producer: quotes and backslashes must not break the JSON.
    let ring = MemoryRing::new("Q\"X\\1", false, 1 << 12);
    ring.push(&pattern(64));
    let d = Dispenser::new(DispenserConfig::default());
    d.attach_source("qrng0", None, ring.source()).expect("attach");
    let state = AppState::new(d.clone(), HttpConfig::default()).expect("state");
    let get_one = |uri: &'static str| {
        let app = router(state.clone());
        async move {
            let (s, h, b) = get_with(app, uri, &[]).await;
            let v: Value = serde_json::from_slice(&b).expect("JSON");
            (s, h, v)
        }
    };
    let (s, h, v) = get_one("/api/v1/random/bytes?length=1&format=base64").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.get("content-type").expect("ct"), "application/json");
    assert_eq!(v["source"], "Q\"X\\1");
    assert_eq!(v["data"], base64::engine::general_purpose::STANDARD.encode(pattern(1)));
    let (_, _, v) = get_one("/api/v1/random/bytes?length=3").await;
    let want: String = pattern(4)[1..].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v["data"], want.as_str());
    assert_eq!(v.as_object().map(|o| o.len()), Some(4), "{v}");
    d.shutdown();
}

#[tokio::test]
async fn bytes_bad_inputs() {
    let f = fixture();
    for uri in [
        "/api/v1/random/bytes",
        "/api/v1/random/bytes?length=0",
        "/api/v1/random/bytes?length=-1",
        "/api/v1/random/bytes?length=abc",
        "/api/v1/random/bytes?length=1.5",
        "/api/v1/random/bytes?length=32&format=octal",
        "/api/v1/random/bytes?length=99999999999999999999999",
    ] {
        assert_error(&f, uri, StatusCode::BAD_REQUEST, "invalid_parameter").await;
    }
    assert_error(
        &f,
        "/api/v1/random/bytes?length=1048577",
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
    assert_error(
        &f,
        "/api/v1/random/bytes?length=1&device=nope",
        StatusCode::NOT_FOUND,
        "unknown_device",
    )
    .await;
}

#[tokio::test]
async fn largest_allowed_request_is_served() {
    let f = fixture_with(HttpConfig { max_bytes: 8192, ..HttpConfig::default() }, 8192);
    let (s, _, body) = get(&f, "/api/v1/random/bytes?length=8192&format=binary").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, pattern(8192));
    assert_error(
        &f,
        "/api/v1/random/bytes?length=8193",
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
}

#[tokio::test]
async fn empty_ring_gives_503_with_retry_after() {
    let f = fixture_with(
        HttpConfig { wait: Duration::from_millis(20), retry_after: 7, ..HttpConfig::default() },
        0,
    );
    let (s, h, v) = get_json(&f, "/api/v1/random/bytes?length=16").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error"]["code"], "entropy_unavailable");
    assert_eq!(h.get("retry-after").expect("retry-after"), "7");
}

#[tokio::test]
async fn failed_device_gives_503_and_nothing_is_consumed() {
    let f = fixture();
    f.ring.set_health(Health::Failed, Reason::RepetitionCount);
    wait_health(&f, DeviceState::Failed).await;
    let h = assert_error(
        &f,
        "/api/v1/random/bytes?length=16&device=qrng0",
        StatusCode::SERVICE_UNAVAILABLE,
        "device_failed",
    )
    .await;
    assert!(h.contains_key("retry-after"));
    // Without device=: the only card's own reason.
    assert_error(&f, "/api/v1/random/uuid", StatusCode::SERVICE_UNAVAILABLE, "device_failed").await;
    let (s, _, v) = get_json(&f, "/health").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["status"], "unhealthy");
    assert_eq!(v["devices"][0]["health"], "failed");
    assert_eq!(v["devices"][0]["reason"], "repetition-count");
}

fn be_u64(b: &[u8]) -> u64 {
    b.iter().fold(0, |a, &x| (a << 8) | u64::from(x))
}

#[tokio::test]
async fn integers_cover_the_whole_i64_range() {
    let f = fixture();
    let (s, h, v) =
        get_json(&f, &format!("/api/v1/random/integers?min={}&max={}&count=3", i64::MIN, i64::MAX))
            .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_random_headers(&h);
    let p = pattern(24);
    // Over the full range every 8-byte draw is accepted; i64::MIN + v flips the top bit of v.
    let want: Vec<i64> = p.chunks(8).map(|c| (be_u64(c) ^ (1 << 63)) as i64).collect();
    let got: Vec<i64> =
        v["data"].as_array().expect("array").iter().map(|x| x.as_i64().expect("i64")).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn integers_small_range_stay_in_range() {
    let f = fixture_with(HttpConfig::default(), 1 << 16);
    let (s, _, v) = get_json(&f, "/api/v1/random/integers?min=-3&max=3&count=1000").await;
    assert_eq!(s, StatusCode::OK);
    let data = v["data"].as_array().expect("array");
    assert_eq!(data.len(), 1000);
    let mut seen = [false; 7];
    for x in data {
        let x = x.as_i64().expect("int");
        assert!((-3..=3).contains(&x), "{x}");
        seen[usize::try_from(x + 3).expect("idx")] = true;
    }
    assert!(seen.iter().all(|s| *s), "every value appears in 1000 draws: {seen:?}");
    let (s, _, v) = get_json(&f, "/api/v1/random/integers?min=42&max=42&count=2").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], serde_json::json!([42, 42]));
}

#[tokio::test]
async fn integers_bad_inputs() {
    let f = fixture();
    for uri in [
        "/api/v1/random/integers?max=5",
        "/api/v1/random/integers?min=5",
        "/api/v1/random/integers?min=6&max=5",
        "/api/v1/random/integers?min=a&max=5",
        "/api/v1/random/integers?min=0&max=9223372036854775808",
        "/api/v1/random/integers?min=-9223372036854775809&max=0",
        "/api/v1/random/integers?min=0&max=5&count=0",
        "/api/v1/random/integers?min=0&max=5&count=-2",
    ] {
        assert_error(&f, uri, StatusCode::BAD_REQUEST, "invalid_parameter").await;
    }
    assert_error(
        &f,
        "/api/v1/random/integers?min=0&max=5&count=10001",
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
}

#[tokio::test]
async fn floats_are_53_bit_fractions() {
    let f = fixture();
    let (s, h, v) = get_json(&f, "/api/v1/random/floats?count=4").await;
    assert_eq!(s, StatusCode::OK);
    assert_random_headers(&h);
    let p = pattern(32);
    let want: Vec<f64> =
        p.chunks(8).map(|c| (be_u64(c) >> 11) as f64 / 9_007_199_254_740_992.0).collect();
    let got: Vec<f64> =
        v["data"].as_array().expect("array").iter().map(|x| x.as_f64().expect("f64")).collect();
    assert_eq!(got, want);
    assert!(got.iter().all(|x| (0.0..1.0).contains(x)));
    assert_error(&f, "/api/v1/random/floats?count=0", StatusCode::BAD_REQUEST, "invalid_parameter")
        .await;
    assert_error(&f, "/api/v1/random/floats?count=x", StatusCode::BAD_REQUEST, "invalid_parameter")
        .await;
    assert_error(
        &f,
        "/api/v1/random/floats?count=10001",
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
}

#[tokio::test]
async fn uuids_are_version_4() {
    let f = fixture();
    let (s, h, v) = get_json(&f, "/api/v1/random/uuid?count=3").await;
    assert_eq!(s, StatusCode::OK);
    assert_random_headers(&h);
    let p = pattern(48);
    for (u, raw) in v["data"].as_array().expect("array").iter().zip(p.chunks(16)) {
        let u = u.as_str().expect("string");
        assert_eq!(u.len(), 36);
        let hex: String = u.chars().filter(|c| *c != '-').collect();
        let bytes: Vec<u8> =
            (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")).collect();
        assert_eq!(bytes[6] >> 4, 4, "version");
        assert_eq!(bytes[8] >> 6, 0b10, "variant");
        assert_eq!(bytes[6] & 0x0f, raw[6] & 0x0f);
        assert_eq!(bytes[8] & 0x3f, raw[8] & 0x3f);
        assert_eq!([&bytes[..6], &bytes[9..]], [&raw[..6], &raw[9..]]);
        assert_eq!(
            [u.as_bytes()[8], u.as_bytes()[13], u.as_bytes()[18], u.as_bytes()[23]],
            [b'-'; 4]
        );
    }
    assert_error(&f, "/api/v1/random/uuid?count=0", StatusCode::BAD_REQUEST, "invalid_parameter")
        .await;
}

#[tokio::test]
async fn anu_legacy_shapes() {
    let f = fixture();
    let (s, h, b) = get(&f, "/API/jsonI.php?length=3&type=uint8").await;
    assert_eq!(s, StatusCode::OK);
    assert_random_headers(&h);
    let p = pattern(3);
    let want = format!(
        r#"{{"type":"uint8","length":3,"data":[{},{},{}],"success":true}}"#,
        p[0], p[1], p[2]
    );
    assert_eq!(String::from_utf8(b).expect("utf8"), want);

    let (s, _, v) = get_json(&f, "/API/jsonI.php?length=2&type=uint16").await;
    assert_eq!(s, StatusCode::OK);
    let p = pattern(7);
    let want = [u16::from_be_bytes([p[3], p[4]]), u16::from_be_bytes([p[5], p[6]])];
    assert_eq!(v["type"], "uint16");
    assert_eq!(v["length"], 2);
    assert_eq!(v["data"], serde_json::json!(want));
    assert_eq!(v["success"], true);

    let (s, _, v) = get_json(&f, "/API/jsonI.php?length=2&type=hex16&size=3").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["type"], "string");
    assert_eq!(v["length"], 2);
    assert_eq!(v["size"], 3);
    let p = pattern(13);
    let hex = |c: &[u8]| c.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(v["data"], serde_json::json!([hex(&p[7..10]), hex(&p[10..13])]));
    assert_eq!(v["success"], true);

    for uri in [
        "/API/jsonI.php?length=1025&type=uint8",
        "/API/jsonI.php?length=0&type=uint8",
        "/API/jsonI.php?type=uint8",
        "/API/jsonI.php?length=5",
        "/API/jsonI.php?length=5&type=int32",
        "/API/jsonI.php?length=5&type=hex16",
        "/API/jsonI.php?length=5&type=hex16&size=1025",
        "/API/jsonI.php?length=5&type=hex16&size=0",
    ] {
        assert_error(&f, uri, StatusCode::BAD_REQUEST, "invalid_parameter").await;
    }
}

#[tokio::test]
async fn anu_limits_are_inclusive() {
    let f = fixture_with(HttpConfig::default(), 1024 * 1024);
    let (s, _, v) = get_json(&f, "/API/jsonI.php?length=1024&type=hex16&size=1024").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"].as_array().expect("array").len(), 1024);
    assert_eq!(v["data"][0].as_str().expect("string").len(), 2048);
}

#[tokio::test]
async fn health_and_devices_report_state() {
    let f = fixture();
    let (s, h, v) = get_json(&f, "/health").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h.get("cache-control").expect("cc"), "no-store");
    assert_eq!(v["status"], "healthy");
    for k in ["entropy_rate_mbps", "buffer_fill_percent", "uptime_seconds", "total_bytes_served"] {
        assert!(v[k].is_number(), "{k} missing: {v}");
    }
    assert_eq!(v["devices"][0]["source"], "QX1234");
    assert_eq!(v["devices"][0]["health"], "ok");
    // 4096 bytes in a 1 MiB ring.
    let want_fill = 4096.0 * 100.0 / f64::from(1u32 << 20);
    assert!((v["buffer_fill_percent"].as_f64().expect("fill") - want_fill).abs() < 1e-9, "{v}");

    get(&f, "/api/v1/random/bytes?length=10").await;
    let (_, _, v) = get_json(&f, "/health").await;
    assert_eq!(v["total_bytes_served"], 10);

    let (s, _, v) = get_json(&f, "/api/v1/devices").await;
    assert_eq!(s, StatusCode::OK);
    let d = &v["devices"][0];
    assert_eq!(d["name"], "qrng0");
    assert_eq!(d["serial"], "QX1234");
    assert_eq!(d["model"], "pcie-16m");
    assert_eq!(d["modules"], 15);
    assert_eq!(d["health"], "ok");
    assert_eq!(d["bytes_served"], 10);

    // The driver dies: still serving what is in the ring, but /health says degraded with 503.
    f.ring.set_last_beat(None);
    wait_health(&f, DeviceState::Degraded).await;
    let (s, _, v) = get_json(&f, "/health").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["status"], "degraded");
    assert_eq!(v["devices"][0]["heartbeat_stale"], true);
    let (s, _, _) = get(&f, "/api/v1/random/bytes?length=10").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn metrics_expose_counters_histograms_and_gauges() {
    let f = fixture();
    get(&f, "/api/v1/random/bytes?length=32").await;
    get(&f, "/api/v1/random/bytes?length=0").await;
    let (s, h, b) = get(&f, "/metrics").await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.get("content-type").expect("ct").to_str().expect("ascii").starts_with("text/plain"));
    let text = String::from_utf8(b).expect("utf8");
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} missing in:\n{text}"))
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad value for {prefix}"))
    };
    assert_eq!(value("qrng_entropy_served_bytes_total{device=\"qrng0\"}"), 32.0);
    assert_eq!(value("qrng_health_alarms_total{device=\"qrng0\"}"), 0.0);
    let want_ratio = (4096.0 - 32.0) / f64::from(1u32 << 20);
    assert!((value("qrng_ring_fill_ratio{device=\"qrng0\"}") - want_ratio).abs() < 1e-12);
    assert_eq!(
        value("qrng_http_request_duration_seconds_count{endpoint=\"/api/v1/random/bytes\"}"),
        2.0
    );
    assert!(text.contains(
        "qrng_http_request_duration_seconds_bucket{endpoint=\"/api/v1/random/bytes\",le=\"0.001\"}"
    ));
    assert_eq!(
        value("qrng_http_responses_total{endpoint=\"/api/v1/random/bytes\",status=\"400\"}"),
        1.0
    );
    assert_eq!(value("qrng_device_state{device=\"qrng0\",state=\"ok\"}"), 1.0);
    assert_eq!(value("qrng_device_up{device=\"qrng0\"}"), 1.0);
    // The fixture's card is a pcie-16m: 16 Mbit/s raw.
    assert_eq!(value("qrng_raw_nominal_rate_bytes_per_second{device=\"qrng0\"}"), 2_000_000.0);
    assert!(text.contains("# HELP qrng_entropy_served_bytes_total"));
    // Every series carries the qrng_ prefix (docs/api.md, metric names).
    for line in text.lines().filter(|l| !l.is_empty()) {
        let name = line.trim_start_matches("# HELP ").trim_start_matches("# TYPE ");
        assert!(name.starts_with("qrng_"), "metric without the qrng_ prefix: {line}");
    }
}

#[tokio::test]
async fn openapi_documents_every_route_and_nothing_else() {
    let f = fixture();
    let (s, _, v) = get_json(&f, "/api/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["openapi"], "3.1.0");
    let paths: Vec<String> = v["paths"].as_object().expect("paths").keys().cloned().collect();
    let mut want: Vec<String> = ENDPOINTS.iter().map(|s| (*s).to_owned()).collect();
    let mut got = paths.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    // Each documented path is routed (not the JSON 404 fallback).
    for p in &paths {
        let (s, _, _) = get(&f, p).await;
        assert_ne!(s, StatusCode::NOT_FOUND, "{p}");
    }
    let max = &v["paths"]["/api/v1/random/bytes"]["get"]["parameters"][0]["schema"]["maximum"];
    assert_eq!(*max, serde_json::json!(f.state.cfg().max_bytes));
}

#[tokio::test]
async fn unknown_path_is_a_json_404() {
    let f = fixture();
    assert_error(&f, "/api/v2/nothing", StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn bearer_tokens_guard_the_api_but_not_health() {
    let f = fixture_with(
        HttpConfig { tokens: Some(vec!["s3cret".into(), "other".into()]), ..HttpConfig::default() },
        64,
    );
    let app = || router(f.state.clone());
    let (s, h, _) = get_with(app(), "/api/v1/random/bytes?length=4", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h.get("www-authenticate").expect("challenge"), "Bearer");
    let (s, _, _) =
        get_with(app(), "/api/v1/random/bytes?length=4", &[("authorization", "Bearer nope")]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = get_with(app(), "/api/v1/devices", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(f.ring.len(), 64, "refused requests consume nothing");
    let (s, _, _) =
        get_with(app(), "/api/v1/random/bytes?length=4", &[("authorization", "Bearer other")])
            .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = get_with(app(), "/health", &[]).await;
    assert_eq!(s, StatusCode::OK);
}

#[test]
fn token_file_parsing() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("tokens");
    std::fs::write(&p, "# comment\n\n  abc  \ndef\n").expect("write");
    assert_eq!(read_tokens(&p).expect("tokens"), vec!["abc".to_owned(), "def".to_owned()]);
    std::fs::write(&p, "# only a comment\n").expect("write");
    assert!(matches!(read_tokens(&p), Err(HttpError::NoTokens { .. })));
    assert!(matches!(read_tokens(&dir.path().join("missing")), Err(HttpError::Tokens { .. })));
}

#[tokio::test]
async fn rate_limit_gives_429_with_retry_after() {
    let f = fixture_with(
        HttpConfig {
            rate_limit: Some(RateLimit { per_second: 0.01, burst: 2 }),
            ..HttpConfig::default()
        },
        64,
    );
    let app =
        || router(f.state.clone()).layer(MockConnectInfo(SocketAddr::from(([192, 0, 2, 1], 1234))));
    for _ in 0..2 {
        let (s, _, _) = get_with(app(), "/api/v1/random/bytes?length=1", &[]).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, h, b) = get_with(app(), "/api/v1/random/bytes?length=1", &[]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h.get("retry-after").expect("retry-after"), "100");
    let v: Value = serde_json::from_slice(&b).expect("json");
    assert_eq!(v["error"]["code"], "rate_limited");
    assert_eq!(f.ring.len(), 62);
    // Health is not rate limited.
    let (s, _, _) = get_with(app(), "/health", &[]).await;
    assert_eq!(s, StatusCode::OK);
}

/// Serves `state` on an ephemeral port until `tx` is sent: (address, shutdown, the server task).
async fn start_server(
    state: AppState,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), HttpError>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = rx.await;
    }));
    (addr, tx, server)
}

/// A real socket: bind port 0, fetch over HTTP/1.1, shut down gracefully.
#[tokio::test]
async fn serves_on_a_real_port_and_shuts_down() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let f = fixture();
    let (addr, tx, server) = start_server(f.state.clone()).await;
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /api/v1/random/bytes?length=4&format=binary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut resp = Vec::new();
    conn.read_to_end(&mut resp).await.expect("read");
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.to_ascii_lowercase().contains("x-qrng-source: qx1234"), "{text}");
    assert!(resp.ends_with(&pattern(4)));
    tx.send(()).expect("shutdown");
    server.await.expect("join").expect("serve");
}

/// Hostile parameter values on every random endpoint: always a JSON answer with a 2xx, 400, 413
/// or 503, never a 500 or a panic.
#[tokio::test]
async fn hostile_parameters_never_break_the_server() {
    let f = fixture_with(
        HttpConfig { wait: Duration::from_millis(5), ..HttpConfig::default() },
        1 << 16,
    );
    let long = "9".repeat(5000);
    let values = [
        "",
        "%00",
        "%",
        "%zz",
        "+5",
        "%2B5",
        "-0",
        "0x10",
        "1e3",
        "NaN",
        "18446744073709551616",
        "-9223372036854775809",
        "9223372036854775807",
        "%E2%82%AC",
        long.as_str(),
        "1&length=2",
    ];
    let templates = [
        "/api/v1/random/bytes?length={}",
        "/api/v1/random/bytes?length=4&format={}",
        "/api/v1/random/bytes?length=4&device={}",
        "/api/v1/random/integers?min={}&max=10",
        "/api/v1/random/integers?min=0&max={}",
        "/api/v1/random/integers?min=0&max=1&count={}",
        "/api/v1/random/floats?count={}",
        "/api/v1/random/uuid?count={}",
        "/API/jsonI.php?length={}&type=uint8",
        "/API/jsonI.php?length=2&type={}",
        "/API/jsonI.php?length=2&type=hex16&size={}",
    ];
    for t in templates {
        for v in values {
            let uri = t.replace("{}", v);
            let (s, _, b) = get(&f, &uri).await;
            assert!([200, 400, 404, 413, 503].contains(&s.as_u16()), "{uri}: status {s}");
            let v: Value =
                serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{uri}: not JSON: {e}"));
            if s != StatusCode::OK {
                assert!(v["error"]["code"].is_string(), "{uri}: {v}");
            }
        }
    }
}

/// Graceful shutdown: a request already waiting for entropy when shutdown starts is still answered.
#[tokio::test]
async fn shutdown_drains_a_request_in_flight() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let f = fixture_with(HttpConfig { wait: Duration::from_secs(30), ..HttpConfig::default() }, 0);
    let (addr, tx, server) = start_server(f.state.clone()).await;
    let client = tokio::spawn(async move {
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conn.write_all(b"GET /api/v1/random/bytes?length=8&format=binary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut resp = Vec::new();
        conn.read_to_end(&mut resp).await.expect("read");
        resp
    });
    let d = f.state.dispenser().clone();
    tokio::task::spawn_blocking(move || {
        while d.devices()[0].requests_waiting == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .await
    .expect("queued");
    tx.send(()).expect("shutdown");
    f.ring.push(&pattern(8));
    let resp = client.await.expect("client");
    assert!(resp.starts_with(b"HTTP/1.1 200 OK"), "{}", String::from_utf8_lossy(&resp));
    assert!(resp.ends_with(&pattern(8)));
    server.await.expect("join").expect("serve");
}

#[test]
fn connections_go_to_the_least_loaded_worker() {
    assert_eq!(server::least_loaded([]), None);
    assert_eq!(server::least_loaded([0, 0]), Some(0));
    assert_eq!(server::least_loaded([1, 0]), Some(1));
    assert_eq!(server::least_loaded([2, 1, 1]), Some(1));
    assert_eq!(server::least_loaded([3, 5, 4]), Some(0));
}

/// Sends one keep-alive GET on `conn` and reads exactly one response: (status code, body).
async fn keepalive_get(conn: &mut tokio::net::TcpStream, path: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().expect("status");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("content-length")
        .trim()
        .parse()
        .expect("length");
    while buf.len() < head_end + len {
        let mut chunk = vec![0u8; head_end + len - buf.len()];
        let n = conn.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (status, buf[head_end..].to_vec())
}

#[test]
fn connections_go_to_their_cpus_worker_within_the_slack() {
    use server::{choose_worker, STEER_SLACK};
    assert_eq!(choose_worker(&[], Some(0)), None);
    // No local worker: the least loaded.
    assert_eq!(choose_worker(&[3, 1], None), Some((1, false)));
    // The local worker, even when busier, up to the slack above the least loaded.
    assert_eq!(choose_worker(&[0, 0], Some(1)), Some((1, true)));
    assert_eq!(choose_worker(&[STEER_SLACK, 0], Some(0)), Some((0, true)));
    assert_eq!(choose_worker(&[STEER_SLACK + 1, 0], Some(0)), Some((1, false)));
    assert_eq!(choose_worker(&[5, STEER_SLACK + 6, 7], Some(1)), Some((0, false)));
    // A local index that is not a worker (cannot happen; still no panic) falls back.
    assert_eq!(choose_worker(&[2, 1], Some(7)), Some((1, false)));
    // A dead worker's count is parked near usize::MAX: never local, never least loaded.
    assert_eq!(choose_worker(&[usize::MAX / 2, 4], Some(0)), Some((1, false)));
}

#[test]
fn workers_are_pinned_only_one_per_allowed_cpu() {
    use server::pin_plan;
    assert_eq!(pin_plan(&[0, 1], 2), Some(vec![0, 1]));
    assert_eq!(pin_plan(&[2, 5, 7], 3), Some(vec![2, 5, 7]));
    assert_eq!(pin_plan(&[0, 1], 1), None);
    assert_eq!(pin_plan(&[0, 1], 3), None);
    assert_eq!(pin_plan(&[], 0), None);
    let allowed = server::allowed_cpus();
    assert!(!allowed.is_empty(), "this process may run on no CPU?");
    assert!(allowed.windows(2).all(|w| w[0] < w[1]), "{allowed:?}");
}

/// One blocking keep-alive GET from a thread pinned to `cpu`; returns the open connection.
fn get_from_cpu(addr: std::net::SocketAddr, cpu: usize) -> std::net::TcpStream {
    use std::io::{Read as _, Write as _};
    std::thread::spawn(move || {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).expect("cpu");
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin client");
        let mut c = std::net::TcpStream::connect(addr).expect("connect");
        c.write_all(b"GET /api/v1/random/bytes?length=4&format=binary HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut got = Vec::new();
        // The head, then the 4-byte body.
        let done = |g: &[u8]| {
            g.windows(4).position(|w| w == b"\r\n\r\n").is_some_and(|i| g.len() >= i + 8)
        };
        while !done(&got) {
            let mut b = [0u8; 512];
            let n = c.read(&mut b).expect("read");
            assert!(n > 0, "closed");
            got.extend_from_slice(&b[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
        c
    })
    .join()
    .expect("client thread")
}

/// One worker per allowed CPU, pinned: a connection made from CPU c is served by the worker
/// pinned to c (local placement), whatever the load order; `/metrics` counts the placements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_served_on_their_cpu() {
    let allowed = server::allowed_cpus();
    if allowed.len() < 2 {
        eprintln!("skipped: needs 2 CPUs to tell placements apart, this process has {allowed:?}");
        return;
    }
    let f = fixture_with(
        HttpConfig { threads: allowed.len(), pin: true, ..HttpConfig::default() },
        4096,
    );
    let (addr, tx, server) = start_server(f.state.clone()).await;
    // Three connections from the last CPU, then one from the first: least-loaded alone would
    // give them to workers 0, 1, 0, 1.
    let last = allowed.len() - 1;
    let mut conns = Vec::new();
    for cpu in [allowed[last], allowed[last], allowed[last], allowed[0]] {
        conns.push(
            tokio::task::spawn_blocking(move || get_from_cpu(addr, cpu)).await.expect("client"),
        );
    }
    let open: Vec<usize> = f
        .state
        .0
        .server
        .open
        .iter()
        .map(|o| o.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    let mut want = vec![0; allowed.len()];
    want[last] = 3;
    want[0] = 1;
    assert_eq!(open, want, "open connections per worker");
    let stats = &f.state.0.server;
    assert_eq!(stats.local.load(std::sync::atomic::Ordering::Relaxed), 4);
    assert_eq!(stats.balanced.load(std::sync::atomic::Ordering::Relaxed), 0);
    // Each worker thread runs on its CPU only.
    for (i, cpu) in allowed.iter().enumerate() {
        assert!(
            thread_pinned_to(&format!("qrng-http-{i}"), *cpu),
            "no thread qrng-http-{i} pinned to CPU {cpu}"
        );
    }
    // The fifth connection, /metrics' own, is local too: it comes from some CPU, all have a worker.
    let metrics = http_get_text(addr, "/metrics").await;
    for line in [
        "qrng_http_connections_accepted_total{placement=\"local\"} 5",
        "qrng_http_connections_accepted_total{placement=\"balanced\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing in {metrics}");
    }
    drop(conns);
    tx.send(()).expect("shutdown");
    server.await.expect("join").expect("serve");
}

/// True if some thread of this process named `name` may run on `cpu` only.
fn thread_pinned_to(name: &str, cpu: usize) -> bool {
    std::fs::read_dir("/proc/self/task").expect("tasks").flatten().any(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        comm.trim() == name
            && status.lines().any(|l| {
                l.strip_prefix("Cpus_allowed_list:").is_some_and(|v| v.trim() == cpu.to_string())
            })
    })
}

async fn http_get_text(addr: std::net::SocketAddr, path: &str) -> String {
    let mut m = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (status, body) = keepalive_get(&mut m, path).await;
    assert_eq!(status, 200);
    String::from_utf8(body).expect("utf-8")
}

/// Two workers: keep-alive connections are spread over both (least loaded first), each serves
/// its requests in order, and `/metrics` shows the per-worker counts.
#[tokio::test]
async fn connections_are_spread_over_the_workers() {
    let f = fixture_with(
        HttpConfig {
            wait: Duration::from_millis(50),
            threads: 2,
            pin: false,
            ..HttpConfig::default()
        },
        4096,
    );
    let (addr, tx, server) = start_server(f.state.clone()).await;
    let mut conns = Vec::new();
    let mut served = Vec::new();
    for _ in 0..4 {
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        for _ in 0..2 {
            let (status, body) =
                keepalive_get(&mut c, "/api/v1/random/bytes?length=8&format=binary").await;
            assert_eq!(status, 200);
            served.extend(body);
        }
        conns.push(c);
    }
    // Exactly once and in order over all connections: the ring's first 64 bytes.
    assert_eq!(served, pattern(64));
    let mut m = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (status, body) = keepalive_get(&mut m, "/metrics").await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("utf-8");
    // Five open connections (the four plus this one), alternating from worker 0.
    assert!(text.contains("qrng_http_connections_open{worker=\"0\"} 3"), "{text}");
    assert!(text.contains("qrng_http_connections_open{worker=\"1\"} 2"), "{text}");
    drop(conns);
    drop(m);
    tx.send(()).expect("shutdown");
    server.await.expect("join").expect("serve");
}

/// A client that never finishes its request cannot hold shutdown up past the drain limit.
#[tokio::test]
async fn shutdown_is_bounded_by_the_drain_limit() {
    use tokio::io::AsyncWriteExt as _;
    let f = fixture_with(
        HttpConfig { drain: Duration::from_millis(300), threads: 1, ..HttpConfig::default() },
        64,
    );
    let (addr, tx, server) = start_server(f.state.clone()).await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /api/v1/random/bytes?length=4 HTTP/1.1\r\nHost:").await.expect("write");
    // The server has the connection once it is counted.
    while f.state.0.server.open[0].load(std::sync::atomic::Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tx.send(()).expect("shutdown");
    // Generous bound for a loaded machine; without the limit this would wait for ever.
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("serve returned despite the stalled client")
        .expect("join")
        .expect("serve");
    drop(slow);
}

async fn entry_get(e: &Entry, uri: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    let req = Request::get(uri).header("host", "x").body(Body::empty()).expect("request");
    let resp = e.clone().handle(req).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    (status, headers, body.to_vec())
}

/// The lines of a Prometheus text that concern `/api/v1/random/bytes` responses.
fn bytes_metric_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("endpoint=\"/api/v1/random/bytes\""))
        .filter(|l| l.starts_with("qrng_http_responses_total") || l.contains("_count"))
        .map(str::to_owned)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `Entry`'s direct path for /api/v1/random/bytes answers every request exactly as the router
/// does (status, headers, body, from identical rings) and records the same metrics.
#[tokio::test]
async fn entry_fast_path_answers_as_the_router() {
    let a = fixture();
    let b = fixture();
    let entry = Entry::new(a.state.clone());
    assert!(entry.fast, "no middleware configured: the direct path is the one under test");
    let too_large = format!("/api/v1/random/bytes?length={}", (1 << 20) + 1);
    let uris = [
        "/api/v1/random/bytes?length=32",
        "/api/v1/random/bytes?length=10&format=base64",
        "/api/v1/random/bytes?length=7&format=binary",
        "/api/v1/random/bytes?length=3&format=hex&device=qrng0",
        "/api/v1/random/bytes?length=0",
        "/api/v1/random/bytes?length=abc",
        "/api/v1/random/bytes",
        too_large.as_str(),
        "/api/v1/random/bytes?length=4&format=xml",
        "/api/v1/random/bytes?length=4&device=nope",
        "/api/v1/random/bytes?length=4&length=5",
        "/api/v1/random/bytes?length=5000",
    ];
    for uri in uris {
        let (sa, ha, ba) = entry_get(&entry, uri).await;
        let (sb, hb, bb) = get(&b, uri).await;
        assert_eq!(sa, sb, "{uri}");
        assert_eq!(ha, hb, "{uri}");
        assert_eq!(ba, bb, "{uri}");
    }
    // 4 served (32 + 10 + 7 + 3 bytes) and 5000 > 4096 - 52 left: a 503; the rest are 400/413/404.
    assert_eq!(a.ring.len(), b.ring.len());
    let (_, _, ma) = entry_get(&entry, "/metrics").await;
    let (_, _, mb) = get(&b, "/metrics").await;
    let (la, lb) = (
        bytes_metric_lines(&String::from_utf8_lossy(&ma)),
        bytes_metric_lines(&String::from_utf8_lossy(&mb)),
    );
    assert!(la.iter().any(|l| l.contains("status=\"200\"") && l.ends_with(" 4")), "{la:?}");
    assert!(la.iter().any(|l| l.contains("_count") && l.ends_with(" 12")), "{la:?}");
    assert_eq!(la, lb);
}

/// With bearer tokens configured, `Entry` sends /api/v1/random/bytes through the router, so the
/// token check applies (and nothing is taken without a token).
#[tokio::test]
async fn entry_keeps_the_middleware_when_configured() {
    let f = fixture_with(
        HttpConfig { tokens: Some(vec!["s3cret".into()]), ..HttpConfig::default() },
        64,
    );
    let entry = Entry::new(f.state.clone());
    let (s, _, _) = entry_get(&entry, "/api/v1/random/bytes?length=8").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(f.ring.len(), 64);
    let req = Request::get("/api/v1/random/bytes?length=8&format=binary")
        .header("host", "x")
        .header("authorization", "Bearer s3cret")
        .body(Body::empty())
        .expect("request");
    let resp = entry.clone().handle(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    assert_eq!(body.to_vec(), pattern(8));
}

/// Lending, over a real ring file (the only source that lends).
mod lending {
    use super::*;
    use qrng_ring::{pattern as stream, Health, Identity, Producer, Reason, RingOptions};

    struct Real {
        _dir: tempfile::TempDir,
        producer: Producer,
        state: AppState,
    }

    impl Drop for Real {
        fn drop(&mut self) {
            self.state.dispenser().shutdown();
        }
    }

    /// A ring of `capacity` holding the position pattern for `0..fill`, attached to a dispenser.
    async fn real(capacity: u64, fill: usize, cfg: HttpConfig) -> Real {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("qrng0.ring");
        let mut producer =
            Producer::open(&path, &RingOptions { capacity, mode: 0o600, group: None })
                .expect("producer");
        producer.set_identity(&Identity {
            model: "pcie-16m".into(),
            serial: "171234A410".into(),
            modules: 1,
            simulated: false,
            extractor: "none".into(),
            board_version: 0,
            ..Identity::default()
        });
        producer.heartbeat();
        producer.set_health(Health::Ok, Reason::None);
        let mut data = vec![0u8; fill];
        stream::fill(0, &mut data);
        assert_eq!(producer.write(&data).expect("write"), fill);
        let d = Dispenser::new(DispenserConfig {
            heartbeat_timeout: Duration::from_secs(3600),
            status_interval: Duration::from_millis(2),
        });
        d.attach(&path).expect("attach");
        let state = AppState::new(d, cfg).expect("state");
        let d = state.dispenser().clone();
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || {
                while d.health("qrng0").ok() != Some(DeviceState::Ok) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }),
        )
        .await
        .expect("ring read")
        .expect("join");
        Real { _dir: dir, producer, state }
    }

    /// Where a chunk of the position pattern starts (chunks of at least 16 bytes).
    fn position_of(chunk: &[u8]) -> u64 {
        (0..8)
            .map(|a| {
                let w = u64::from_le_bytes(chunk[a..a + 8].try_into().expect("8 bytes"));
                (w * 8).wrapping_sub(a as u64)
            })
            .find(|&pos| stream::check(pos, chunk).is_ok())
            .expect("a chunk of the stream")
    }

    /// Large binary answers are lent; their ring space is freed only once the body is gone, a
    /// copy made behind a lent answer waits for it, and the stream is served once, in order,
    /// across lent and copied answers.
    #[tokio::test]
    async fn lent_answers_hold_ring_space_until_sent_and_keep_the_order() {
        let mut r = real(1 << 20, 300 << 10, HttpConfig::default()).await;
        let entry = Entry::new(r.state.clone());
        let free0 = r.producer.free().expect("free");
        let get_resp = |uri: &'static str| {
            let e = entry.clone();
            async move {
                e.handle(Request::get(uri).header("host", "x").body(Body::empty()).expect("req"))
                    .await
            }
        };
        let lent = get_resp("/api/v1/random/bytes?length=65536&format=binary").await;
        assert_eq!(lent.status(), StatusCode::OK);
        assert_random_headers_of(lent.headers());
        let (_, _, small) =
            entry_get(&entry, "/api/v1/random/bytes?length=100&format=binary").await;
        assert_eq!(r.producer.free().expect("free"), free0, "nothing freed while lent");
        // `to_bytes` hands back the body's own buffer (the lease): copy it out, then drop it.
        let first = to_bytes(lent.into_body(), usize::MAX).await.expect("body").to_vec();
        assert_eq!(r.producer.free().expect("free"), free0 + 65536 + 100, "freed once sent");
        let (_, _, hex) = entry_get(&entry, "/api/v1/random/bytes?length=20").await;
        let hex: Value = serde_json::from_slice(&hex).expect("json");
        let (_, _, second) =
            entry_get(&entry, "/api/v1/random/bytes?length=20000&format=binary").await;
        let mut served = first.to_vec();
        served.extend(small);
        let hex = hex["data"].as_str().expect("hex");
        served.extend(
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit")),
        );
        served.extend(second);
        assert_eq!(served.len(), 65536 + 100 + 20 + 20000);
        assert_eq!(stream::check(0, &served), Ok(()));
        let st = &r.state.dispenser().devices()[0];
        assert_eq!((st.bytes_served, st.requests_served), (served.len() as u64, 4));
    }

    fn assert_random_headers_of(h: &HeaderMap) {
        assert_eq!(h.get("cache-control").expect("cache-control"), "no-store");
        assert_eq!(h.get("x-qrng-source").expect("source"), "171234A410");
        assert_eq!(h.get("content-type").expect("type"), "application/octet-stream");
    }

    /// Many clients on two workers, lent and copied answers mixed: every byte of the stream goes
    /// to exactly one answer.
    #[tokio::test]
    async fn concurrent_lent_and_copied_answers_serve_every_byte_once() {
        let r = real(
            4 << 20,
            3 << 20,
            HttpConfig { threads: 2, wait: Duration::from_millis(200), ..HttpConfig::default() },
        )
        .await;
        let (addr, tx, server) = start_server(r.state.clone()).await;
        let mut clients = Vec::new();
        for c in 0..8usize {
            clients.push(tokio::spawn(async move {
                let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let mut got = Vec::new();
                for i in 0..12usize {
                    // Sizes from 17 bytes (copied) to 64 KiB (lent), fixed per client and step.
                    let len = match (c + i) % 3 {
                        0 => 17 + 97 * (c + i),
                        1 => (16 << 10) + 1000 * c,
                        _ => 65536,
                    };
                    let path = format!("/api/v1/random/bytes?length={len}&format=binary");
                    let (status, body) = keepalive_get(&mut conn, &path).await;
                    assert_eq!((status, body.len()), (200, len));
                    got.push(body);
                }
                got
            }));
        }
        let mut spans = Vec::new();
        for c in clients {
            for chunk in c.await.expect("client") {
                spans.push((position_of(&chunk), chunk.len() as u64));
            }
        }
        spans.sort_unstable();
        let mut next = 0;
        for (pos, len) in spans {
            assert_eq!(pos, next, "a gap or an overlap at stream position {next}");
            next = pos + len;
        }
        assert_eq!(next, r.state.dispenser().total_bytes_served());
        tx.send(()).expect("shutdown");
        server.await.expect("join").expect("serve");
    }

    /// A client that asks for a lent answer and stops reading is disconnected once the ring runs
    /// short of space (copies for others pile up behind its lease), and its space comes back.
    #[tokio::test]
    async fn a_stuck_reader_of_a_lent_answer_is_closed_under_ring_pressure() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // 16 MiB lent: far more than the kernel's socket buffers take (tcp_wmem's default maximum
        // is 4 MiB; the client's receive buffer is tiny).
        let mut r = real(
            32 << 20,
            32 << 20,
            HttpConfig {
                threads: 1,
                wait: Duration::from_millis(200),
                max_bytes: 16 << 20,
                ..HttpConfig::default()
            },
        )
        .await;
        let (addr, tx, server) = start_server(r.state.clone()).await;
        // The stuck client: a tiny receive buffer, and it reads nothing.
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
        let mut stuck = sock.connect(addr).await.expect("connect");
        stuck
            .write_all(b"GET /api/v1/random/bytes?length=16777216&format=binary HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let d = r.state.dispenser().clone();
        while d.total_bytes_served() < 16 << 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(r.producer.free().expect("free"), 0, "the lent 16 MiB are held");
        assert!(!d.lend_pressure("qrng0"), "half the ring lent is not yet pressure");
        // Another client takes 1.25 MiB: lending is refused (half the ring is lent), so they are
        // copied, and their space cannot be freed before the stuck lease: pressure.
        let mut other = tokio::net::TcpStream::connect(addr).await.expect("connect");
        for _ in 0..10 {
            let (status, body) =
                keepalive_get(&mut other, "/api/v1/random/bytes?length=131072&format=binary").await;
            assert_eq!((status, body.len()), (200, 131072));
        }
        assert!(d.lend_pressure("qrng0"));
        // Without the stuck client reading a byte, the watchdog closes its connection, which
        // frees the space (checked once a second; generous bound for a loaded machine).
        let freed = async {
            while r.producer.free().expect("free") == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), freed).await.expect("closed by the watchdog");
        // Its reads end (the connection is closed) short of the 16 MiB.
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stuck.read_to_end(&mut got))
            .await
            .expect("closed by the watchdog")
            .ok();
        assert!(got.len() < 16 << 20, "it got {} bytes", got.len());
        assert_eq!(r.producer.free().expect("free"), (16 << 20) + 10 * 131072, "space freed");
        assert!(!d.lend_pressure("qrng0"));
        tx.send(()).expect("shutdown");
        server.await.expect("join").expect("serve");
    }
}

mod mcp;
mod pollen;
