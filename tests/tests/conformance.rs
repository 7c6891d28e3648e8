//! HTTP conformance of the real `qrng-bridge` binary over a socket (docs/api.md, "Conformance"):
//! `--cors-origin` from the command line, 400 for HTTP/1.1 without `Host` (hyper lets such a
//! request through), 405 and 406 with the JSON error body, `Accept: application/octet-stream`,
//! and compression of operator answers but never of random data, as they leave the server.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use qrng_e2e::{start_driver, wait_until, Bridge};

/// One raw exchange (the request must ask for `Connection: close` or be HTTP/1.0): the status,
/// the head's lines (lower-cased names), and the body as sent (not de-chunked).
fn exchange(b: &Bridge, request: &str) -> (u16, Vec<String>, Vec<u8>) {
    let mut s = TcpStream::connect(b.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s.write_all(request.as_bytes()).expect("request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("response");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of the head");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok());
    let headers = lines
        .map(|l| match l.split_once(':') {
            Some((k, v)) => format!("{}: {}", k.to_ascii_lowercase(), v.trim()),
            None => l.to_owned(),
        })
        .collect();
    (status.expect("status line"), headers, raw[end + 4..].to_vec())
}

fn header<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
    headers.iter().find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    v["error"]["code"].as_str().expect("error code").to_owned()
}

#[test]
fn the_bridge_answers_conformant_http_over_a_socket() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rings = tmp.path().join("rings");
    std::fs::create_dir(&rings).expect("ring dir");
    let _driver = start_driver("sim:pcie-16m?rate=0&seed=51", &rings.join("qrng0.ring"));
    let args = ["--no-fuse", "--cors-origin", "https://app.example"];
    let b = Bridge::start(&rings, &tmp.path().join("dev"), &args);
    wait_until("the card is ok", || (b.device("qrng0")?["health"] == "ok").then_some(()));

    // RFC 9112 §3.2: HTTP/1.1 needs Host; HTTP/1.0 does not.
    for path in ["/health", "/api/v1/random/bytes?length=8"] {
        let (s, _, body) =
            exchange(&b, &format!("GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert_eq!((s, error_code(&body).as_str()), (400, "missing_host"), "{path}");
    }
    let (s, _, _) = exchange(&b, "GET /api/v1/random/bytes?length=8 HTTP/1.0\r\n\r\n");
    assert_eq!(s, 200);

    // 405 with Allow and the JSON body.
    let (s, h, body) =
        exchange(&b, "DELETE /api/v1/random/uuid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(s, 405);
    assert!(header(&h, "allow").is_some_and(|a| a.contains("GET")), "{h:?}");
    assert_eq!(error_code(&body), "method_not_allowed");

    // CORS from the command line: preflight and a GET from the allowed origin.
    let (s, h, _) = exchange(
        &b,
        "OPTIONS /api/v1/random/bytes HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\
         Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(s, 204);
    assert_eq!(header(&h, "access-control-allow-origin"), Some("https://app.example"), "{h:?}");
    let (s, h, _) = exchange(
        &b,
        "GET /api/v1/random/bytes?length=8 HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\
         Connection: close\r\n\r\n",
    );
    assert_eq!(s, 200);
    assert_eq!(header(&h, "access-control-allow-origin"), Some("https://app.example"));

    // Accept: binary without format=, and 406.
    let (s, h, body) = exchange(
        &b,
        "GET /api/v1/random/bytes?length=64 HTTP/1.1\r\nHost: x\r\n\
         Accept: application/octet-stream\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(s, 200);
    assert_eq!(header(&h, "content-type"), Some("application/octet-stream"));
    assert_eq!(body.len(), 64);
    let (s, _, body) = exchange(
        &b,
        "GET /api/v1/random/floats HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((s, error_code(&body).as_str()), (406, "not_acceptable"));

    // Compression: operator answers on request, random data never.
    let (s, h, _) = exchange(
        &b,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(s, 200);
    assert_eq!(header(&h, "content-encoding"), Some("gzip"), "{h:?}");
    for q in ["length=4096", "length=4096&format=binary", "length=4096&format=base64"] {
        let (s, h, body) = exchange(
            &b,
            &format!(
                "GET /api/v1/random/bytes?{q} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip, br\r\n\
                 Connection: close\r\n\r\n"
            ),
        );
        assert_eq!(s, 200, "{q}");
        assert!(header(&h, "content-encoding").is_none(), "{q}: {h:?}");
        assert_eq!(header(&h, "content-length"), Some(body.len().to_string().as_str()), "{q}");
    }
}
