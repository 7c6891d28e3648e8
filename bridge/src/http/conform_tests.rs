//! Router tests of HTTP conformance: CORS, 405 and missing-Host answers, `Accept` (406), and
//! compression of the operator answers (never of random data). Through both the axum router and
//! [`Entry`] (the server's per-request call, with its direct path for random bytes).

use std::io::Read as _;

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderMap, Method, Request, StatusCode, Version};
use serde_json::Value;
use tower::ServiceExt as _;

use super::tests::{assert_error, fixture, fixture_with, get_with, pattern, Fixture};
use super::*;

fn cors_fixture(origins: CorsOrigins) -> Fixture {
    fixture_with(
        HttpConfig {
            wait: Duration::from_millis(50),
            cors: Some(origins),
            tokens: None,
            ..HttpConfig::default()
        },
        4096,
    )
}

fn list(origins: &[&'static str]) -> CorsOrigins {
    CorsOrigins::List(origins.iter().map(|o| axum::http::HeaderValue::from_static(o)).collect())
}

/// One request through [`Entry`] (what the server calls), with `headers`.
async fn entry(
    f: &Fixture,
    method: Method,
    version: Version,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri).version(version);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = Entry::new(f.state.clone()).handle(req.body(Body::empty()).expect("request")).await;
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, to_bytes(resp.into_body(), usize::MAX).await.expect("body").to_vec())
}

async fn request(
    f: &Fixture,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = router(f.state.clone())
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, to_bytes(resp.into_body(), usize::MAX).await.expect("body").to_vec())
}

fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("not JSON ({e}): {b:?}"))
}

fn vary(h: &HeaderMap) -> String {
    h.get_all(header::VARY).iter().map(|v| v.to_str().expect("ascii")).collect::<Vec<_>>().join(",")
}

const PREFLIGHT: &[(&str, &str)] =
    &[("origin", "https://app.example"), ("access-control-request-method", "GET")];

#[tokio::test]
async fn cors_preflight_and_answers_for_allowed_origins_only() {
    let f = cors_fixture(list(&["https://app.example"]));
    let (s, h, b) = request(&f, Method::OPTIONS, "/api/v1/random/bytes", PREFLIGHT).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(b.is_empty());
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert!(h["access-control-allow-methods"].to_str().expect("ascii").contains("GET"));
    assert!(h["access-control-allow-headers"].to_str().expect("ascii").contains("authorization"));
    assert!(h.contains_key("access-control-max-age"));
    assert!(vary(&h).contains("origin"), "{h:?}");
    // A disallowed origin: still 204 (the browser decides), but no allow headers.
    let other = [("origin", "https://evil.example"), ("access-control-request-method", "GET")];
    let (s, h, _) = request(&f, Method::OPTIONS, "/api/v1/random/bytes", &other).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(!h.contains_key("access-control-allow-origin"), "{h:?}");
    assert!(!h.contains_key("access-control-allow-methods"), "{h:?}");

    // GET, through the router and through Entry's direct path for random bytes.
    let origin = [("origin", "https://app.example")];
    let (s, h, _) = request(&f, Method::GET, "/api/v1/random/uuid", &origin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert!(h["access-control-expose-headers"].to_str().expect("ascii").contains("x-qrng-source"));
    assert!(vary(&h).contains("origin"));
    let (s, h, _) = entry(
        &f,
        Method::GET,
        Version::HTTP_11,
        "/api/v1/random/bytes?length=4",
        &[("host", "x"), ("origin", "https://app.example")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert!(vary(&h).contains("origin"));
    let (s, h, _) = entry(
        &f,
        Method::GET,
        Version::HTTP_11,
        "/api/v1/random/bytes?length=4",
        &[("host", "x"), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!h.contains_key("access-control-allow-origin"), "{h:?}");
    assert!(vary(&h).contains("origin"), "the answer depends on Origin: {h:?}");
    // Errors carry it too (a script must be able to read the JSON error).
    let (s, h, _) = request(&f, Method::GET, "/api/v1/random/bytes", &origin).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
}

#[tokio::test]
async fn cors_any_origin_and_preflight_before_authentication() {
    let f = fixture_with(
        HttpConfig {
            cors: Some(CorsOrigins::Any),
            tokens: Some(vec!["s3cret".into()]),
            ..HttpConfig::default()
        },
        64,
    );
    let (s, h, _) = request(&f, Method::OPTIONS, "/api/v1/random/bytes", PREFLIGHT).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "a preflight carries no token");
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(!vary(&h).contains("origin"), "{h:?}");
    let (s, h, _) = request(
        &f,
        Method::GET,
        "/api/v1/random/bytes?length=4",
        &[("origin", "https://any.example"), ("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(f.ring.len(), 60);
}

#[tokio::test]
async fn without_cors_nothing_changes() {
    let f = fixture();
    let (s, h, b) = request(&f, Method::OPTIONS, "/api/v1/random/bytes", PREFLIGHT).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(!h.contains_key("access-control-allow-origin"));
    assert_eq!(json(&b)["error"]["code"], "method_not_allowed");
    let (s, h, _) = request(
        &f,
        Method::GET,
        "/api/v1/random/bytes?length=4",
        &[("origin", "https://app.example")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!h.contains_key("access-control-allow-origin") && !h.contains_key("vary"), "{h:?}");
}

#[tokio::test]
async fn method_not_allowed_is_json_with_allow() {
    let f = fixture();
    for (method, path) in [
        (Method::POST, "/api/v1/random/bytes?length=4"),
        (Method::DELETE, "/health"),
        (Method::PUT, "/api/v1/openapi.json"),
        (Method::PATCH, "/API/jsonI.php"),
    ] {
        let (s, h, b) = request(&f, method.clone(), path, &[]).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let allow = h.get(header::ALLOW).expect("Allow").to_str().expect("ascii");
        assert!(allow.contains("GET") && allow.contains("HEAD"), "{allow}");
        assert_eq!(h["content-type"], "application/json");
        let v = json(&b);
        assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
        assert!(v["error"]["message"].as_str().expect("message").contains("GET"));
    }
    assert_eq!(f.ring.len(), 4096, "a refused method consumes nothing");
}

#[tokio::test]
async fn http11_without_host_is_400_other_versions_pass() {
    let f = fixture();
    for path in ["/api/v1/random/bytes?length=4", "/health"] {
        let (s, h, b) = entry(&f, Method::GET, Version::HTTP_11, path, &[]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(json(&b)["error"]["code"], "missing_host");
    }
    assert_eq!(f.ring.len(), 4096, "refused before any byte is taken");
    let (s, _, _) =
        entry(&f, Method::GET, Version::HTTP_11, "/api/v1/random/bytes?length=4", &[("host", "x")])
            .await;
    assert_eq!(s, StatusCode::OK);
    // HTTP/2 has :authority instead; HTTP/1.0 has no Host requirement.
    for v in [Version::HTTP_2, Version::HTTP_10] {
        let (s, _, _) = entry(&f, Method::GET, v, "/api/v1/random/bytes?length=4", &[]).await;
        assert_eq!(s, StatusCode::OK, "{v:?}");
    }
    assert_eq!(f.ring.len(), 4096 - 12);
}

#[tokio::test]
async fn accept_octet_stream_means_binary_and_unsatisfiable_accept_is_406() {
    let f = fixture();
    let bin = [("host", "x"), ("accept", "application/octet-stream")];
    // Entry's direct path and the router alike.
    let (s, h, b) =
        entry(&f, Method::GET, Version::HTTP_11, "/api/v1/random/bytes?length=5", &bin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "application/octet-stream");
    assert_eq!(b, pattern(5));
    let (s, h, b) = request(
        &f,
        Method::GET,
        "/api/v1/random/bytes?length=3",
        &[("accept", "application/json;q=0.5, application/octet-stream")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "application/octet-stream");
    assert_eq!(b, pattern(8)[5..]);
    // JSON preferred, or */*, or no Accept: hex as before.
    for accept in ["application/json, application/octet-stream;q=0.9", "*/*"] {
        let (s, h, _) =
            request(&f, Method::GET, "/api/v1/random/bytes?length=1", &[("accept", accept)]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["content-type"], "application/json", "{accept}");
    }
    let before = f.ring.len();
    for (uri, accept) in [
        ("/api/v1/random/bytes?length=4", "text/html"),
        ("/api/v1/random/bytes?length=4&format=binary", "application/json"),
        ("/api/v1/random/bytes?length=4&format=hex", "application/octet-stream"),
        ("/api/v1/random/bytes?length=4", "application/*;q=0"),
        ("/api/v1/random/integers?min=1&max=6", "text/plain"),
        ("/api/v1/random/floats", "application/octet-stream"),
        ("/api/v1/random/uuid", "image/png"),
        ("/API/jsonI.php?length=1&type=uint8", "text/csv"),
        ("/metrics", "application/json"),
        ("/health", "text/html"),
        ("/api/v1/openapi.json", "text/yaml"),
        ("/api/v1/devices", "text/plain"),
    ] {
        let (s, h, b) = request(&f, Method::GET, uri, &[("accept", accept)]).await;
        assert_eq!(s, StatusCode::NOT_ACCEPTABLE, "{uri} with Accept: {accept}");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(json(&b)["error"]["code"], "not_acceptable");
    }
    let (s, _, _) = entry(
        &f,
        Method::GET,
        Version::HTTP_11,
        "/api/v1/random/bytes?length=4",
        &[("host", "x"), ("accept", "text/html")],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(f.ring.len(), before, "a 406 consumes nothing");
    // Prometheus' scrape Accept header.
    let scrape = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4";
    let (s, _, _) = request(&f, Method::GET, "/metrics", &[("accept", scrape)]).await;
    assert_eq!(s, StatusCode::OK);
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b).read_to_end(&mut out).expect("gzip");
    out
}

#[tokio::test]
async fn operator_answers_are_compressed_on_request_random_answers_never() {
    let f = fixture_with(HttpConfig::default(), 1 << 16);
    for path in ["/api/v1/openapi.json", "/metrics", "/api/v1/devices"] {
        let (s, plain_h, plain) = request(&f, Method::GET, path, &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(!plain_h.contains_key("content-encoding"), "{path}: identity unless asked");
        let (s, h, gz) = request(&f, Method::GET, path, &[("accept-encoding", "gzip")]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["content-encoding"], "gzip", "{path}");
        assert!(vary(&h).contains("accept-encoding"), "{path}: {h:?}");
        let unzipped = gunzip(&gz);
        assert!(gz.len() < unzipped.len(), "{path}");
        if path == "/api/v1/openapi.json" {
            assert_eq!(unzipped, plain);
        } else {
            // Counters and ages move between two requests; the start of the answer does not.
            assert_eq!(unzipped[..12], plain[..12], "{path}");
        }
        let (s, h, _) = request(&f, Method::GET, path, &[("accept-encoding", "br")]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["content-encoding"], "br", "{path}");
    }
    // Random data: identity whatever is asked, through the router and Entry's direct path.
    for uri in [
        "/api/v1/random/bytes?length=4096",
        "/api/v1/random/bytes?length=4096&format=binary",
        "/api/v1/random/integers?min=0&max=9&count=500",
        "/api/v1/random/floats?count=100",
        "/api/v1/random/uuid?count=100",
        "/API/jsonI.php?length=500&type=uint8",
    ] {
        let ae = [("accept-encoding", "gzip, br")];
        let (s, h, _) = request(&f, Method::GET, uri, &ae).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
        assert!(!h.contains_key("content-encoding"), "{uri}: {h:?}");
        let ae = [("accept-encoding", "gzip, br"), ("host", "x")];
        let (s, h, b) = entry(&f, Method::GET, Version::HTTP_11, uri, &ae).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
        assert!(!h.contains_key("content-encoding"), "{uri}: {h:?}");
        assert_eq!(h["content-length"], b.len().to_string().as_str());
    }
}

#[tokio::test]
async fn anu_size_is_validated_whenever_given() {
    let f = fixture();
    for uri in [
        "/API/jsonI.php?length=2&type=uint8&size=0",
        "/API/jsonI.php?length=2&type=uint16&size=1025",
        "/API/jsonI.php?length=2&type=uint8&size=x",
    ] {
        assert_error(&f, uri, StatusCode::BAD_REQUEST, "invalid_parameter").await;
    }
    // A valid size has no effect on uint8 and uint16 (and is not echoed).
    let (s, _, b) =
        get_with(router(f.state.clone()), "/API/jsonI.php?length=2&type=uint8&size=7", &[]).await;
    assert_eq!(s, StatusCode::OK);
    let v = json(&b);
    assert!(v.get("size").is_none(), "{v}");
    assert_eq!(v["data"].as_array().expect("data").len(), 2);
    assert_eq!(f.ring.len(), 4094);
}

#[tokio::test]
async fn openapi_names_every_operation_and_documents_refusals_with_their_headers() {
    let f = fixture();
    let (s, _, b) = request(&f, Method::GET, "/api/v1/openapi.json", &[]).await;
    assert_eq!(s, StatusCode::OK);
    let v = json(&b);
    let mut ids = std::collections::HashSet::new();
    let ops = v["paths"].as_object().expect("paths").iter().flat_map(|(path, item)| {
        item.as_object().expect("path item").values().map(move |op| (path, op))
    });
    for (path, op) in ops {
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{path}: operationId"));
        assert!(ids.insert(id.to_owned()), "{path}: operationId {id} used twice");
        let r = &op["responses"];
        for code in ["400", "405", "406", "429"] {
            assert!(r[code].is_object(), "{path}: {code} undocumented");
        }
        assert!(r["405"]["headers"]["Allow"]["required"] == true, "{path}: 405 without Allow");
        assert!(r["429"]["headers"]["Retry-After"].is_object(), "{path}: 429 without Retry-After");
        if path.starts_with("/api/v1/random")
            || ["/API/jsonI.php", "/", "/pollen"].contains(&path.as_str())
        {
            for code in ["401", "404", "413", "503"] {
                assert!(r[code].is_object(), "{path}: {code} undocumented");
            }
            assert!(r["503"]["headers"]["Retry-After"]["required"] == true, "{path}");
            assert!(r["401"]["headers"]["WWW-Authenticate"].is_object(), "{path}");
        }
    }
    // Rules the parameter schemas cannot carry are stated.
    let ints = &v["paths"]["/api/v1/random/integers"]["get"]["parameters"];
    assert!(ints[0]["description"].as_str().expect("min").contains("≤ max"));
    let anu = &v["paths"]["/API/jsonI.php"]["get"]["parameters"][2];
    assert_eq!(anu["name"], "size");
    let d = anu["description"].as_str().expect("size");
    assert!(d.contains("Required for hex16") && d.contains("uint8"), "{d}");
    let codes = &v["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"];
    for c in ["method_not_allowed", "not_acceptable", "missing_host"] {
        assert!(codes["enum"].as_array().expect("enum").iter().any(|x| x == c), "{c}");
    }
}
