//! `POST /` and `POST /pollen` (the pollen protocol, `super::super::pollen`), driven as `pollinate`
//! drives them: a form body `challenge=<hex>`. Expected answers are computed here from the
//! challenge and the bytes pushed into the ring.

use sha2::{Digest as _, Sha512};

use super::*;
use crate::http::pollen::{BODY_MAX, POLLEN_BYTES};
use axum::http::Method;

async fn post(
    app: Router,
    uri: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::post(uri).header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.oneshot(req.body(Body::from(body)).expect("request")).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    (status, headers, body.to_vec())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A challenge as `pollinate` makes one: the SHA-512 of local bytes, 128 hex digits.
fn challenge() -> String {
    hex(&Sha512::digest(b"local bytes of the booting image"))
}

#[tokio::test]
async fn challenge_is_answered_with_its_hash_then_card_bytes() {
    let f = fixture();
    let c = challenge();
    for (i, path) in ["/", "/pollen"].into_iter().enumerate() {
        let (s, h, body) =
            post(router(f.state.clone()), path, format!("challenge={c}").into_bytes(), &[]).await;
        assert_eq!(s, StatusCode::OK, "{path}: {}", String::from_utf8_lossy(&body));
        assert_random_headers(&h);
        assert!(h.get("content-type").expect("type").to_str().unwrap().starts_with("text/plain"));
        let text = String::from_utf8(body).expect("utf-8");
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(lines.len(), 2, "{text:?}");
        // What pollinate checks: `printf "$challenge" | sha512sum`, the hash of the text.
        assert_eq!(lines[0], hex(&Sha512::digest(c.as_bytes())));
        let all = pattern(POLLEN_BYTES * 2);
        assert_eq!(lines[1], hex(&all[i * POLLEN_BYTES..(i + 1) * POLLEN_BYTES]), "{path}");
    }
    assert_eq!(f.ring.len(), 4096 - 2 * POLLEN_BYTES, "each answer takes 64 bytes once");
}

#[tokio::test]
async fn no_challenge_gets_the_random_line_alone() {
    let f = fixture();
    let (s, _, body) = post(router(f.state.clone()), "/", Vec::new(), &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(String::from_utf8(body).unwrap(), format!("{}\n", hex(&pattern(POLLEN_BYTES))));
}

#[tokio::test]
async fn bad_requests_consume_nothing() {
    let f = fixture();
    let cases: Vec<(Vec<u8>, StatusCode)> = vec![
        (b"challenge=not-hex".to_vec(), StatusCode::BAD_REQUEST),
        (b"challenge=".to_vec(), StatusCode::BAD_REQUEST),
        (b"challenge=aa&challenge=bb".to_vec(), StatusCode::BAD_REQUEST),
        (format!("challenge={}", "a".repeat(BODY_MAX)).into_bytes(), StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (body, want) in cases {
        let (s, _, b) = post(router(f.state.clone()), "/pollen", body, &[]).await;
        assert_eq!(s, want, "{}", String::from_utf8_lossy(&b));
        let v: Value = serde_json::from_slice(&b).expect("JSON error body");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (s, _, _) = get(&f, "/pollen").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(f.ring.len(), 4096);
}

#[tokio::test]
async fn failed_card_gives_503_and_no_bytes() {
    let f = fixture();
    f.ring.set_health(Health::Failed, Reason::RepetitionCount);
    wait_health(&f, DeviceState::Failed).await;
    let (s, h, _) =
        post(router(f.state.clone()), "/", format!("challenge={}", challenge()).into_bytes(), &[])
            .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.contains_key("retry-after"));
    assert_eq!(f.ring.len(), 4096);
}

#[tokio::test]
async fn tokens_and_rate_limit_apply() {
    let f = fixture_with(
        HttpConfig {
            tokens: Some(vec!["s3cret".into()]),
            rate_limit: Some(RateLimit { per_second: 0.01, burst: 1 }),
            ..HttpConfig::default()
        },
        256,
    );
    let app =
        || router(f.state.clone()).layer(MockConnectInfo(SocketAddr::from(([10, 0, 0, 1], 5))));
    let (s, _, _) = post(app(), "/", Vec::new(), &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // How pollinate passes a token: `--curl-opts "--oauth2-bearer TOKEN"`.
    let auth = [("authorization", "Bearer s3cret")];
    let (s, _, _) = post(app(), "/", Vec::new(), &auth).await;
    assert_eq!(s, StatusCode::OK);
    let (s, h, _) = post(app(), "/", Vec::new(), &auth).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(h.contains_key("retry-after"));
    assert_eq!(f.ring.len(), 256 - POLLEN_BYTES);
}

#[tokio::test]
async fn other_methods_get_405_allowing_post() {
    let f = fixture();
    for path in ["/", "/pollen"] {
        for method in [Method::GET, Method::OPTIONS, Method::PUT] {
            let req =
                Request::builder().method(method.clone()).uri(path).body(Body::empty()).unwrap();
            let resp = router(f.state.clone()).oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(resp.headers().get("allow").expect("Allow"), "POST", "{method} {path}");
        }
    }
}
