//! `/mcp` at the HTTP level (the MCP SDK client test is tests/tests/mcp.rs): the JSON-RPC
//! exchange the streamable HTTP transport makes, the `Host` check and the bearer tokens.

use super::*;

const ACCEPT: &str = "application/json, text/event-stream";

async fn rpc(app: Router, host: &str, body: Value, token: Option<&str>) -> (StatusCode, Vec<u8>) {
    let mut req = Request::post("/mcp")
        .header("host", host)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app.oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = resp.status();
    (status, to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec())
}

fn call(name: &str, args: Value) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": {"name": name, "arguments": args}})
}

#[tokio::test]
async fn tool_call_takes_the_next_ring_bytes() {
    let f = fixture();
    let (s, b) = rpc(
        router(f.state.clone()),
        "127.0.0.1:8080",
        call("random_bytes", serde_json::json!({"length": 8})),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).expect("JSON-RPC answer");
    let want: String = pattern(8).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v["result"]["structuredContent"]["data"], want.as_str(), "{v}");
    assert_eq!(v["result"]["isError"], false);
    assert_eq!(f.ring.len(), 4096 - 8);
}

#[tokio::test]
async fn failed_card_is_a_tool_error_and_takes_nothing() {
    let f = fixture();
    f.ring.set_health(Health::Failed, Reason::RepetitionCount);
    wait_health(&f, DeviceState::Failed).await;
    let (s, b) = rpc(
        router(f.state.clone()),
        "localhost",
        call("random_uuids", serde_json::json!({})),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert!(v["result"]["content"][0]["text"].as_str().unwrap().contains("device_failed"), "{v}");
    assert_eq!(f.ring.len(), 4096);
}

#[tokio::test]
async fn unknown_host_is_refused_unless_allowed() {
    let f = fixture();
    let list = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let (s, _) = rpc(router(f.state.clone()), "evil.example:80", list.clone(), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a rebinding Host must not reach the tools");
    let open =
        fixture_with(HttpConfig { mcp_allowed_hosts: Vec::new(), ..HttpConfig::default() }, 64);
    let (s, b) = rpc(router(open.state.clone()), "evil.example:80", list, None).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
}

#[tokio::test]
async fn tokens_guard_mcp() {
    let f = fixture_with(
        HttpConfig { tokens: Some(vec!["s3cret".into()]), ..HttpConfig::default() },
        64,
    );
    let args = serde_json::json!({"length": 4});
    let (s, _) =
        rpc(router(f.state.clone()), "localhost", call("random_bytes", args.clone()), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) =
        rpc(router(f.state.clone()), "localhost", call("random_bytes", args), Some("s3cret")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(f.ring.len(), 60);
}

#[tokio::test]
async fn transport_refusals_get_the_json_error_shape() {
    let f = fixture();
    // No Accept: the transport wants both JSON and event streams (406).
    let req = Request::post("/mcp").header("host", "localhost").body(Body::empty()).unwrap();
    let resp = router(f.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_ACCEPTABLE);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let v: Value = serde_json::from_slice(&to_bytes(resp.into_body(), usize::MAX).await.unwrap())
        .expect("JSON error");
    assert_eq!(v["error"]["code"], "mcp_transport");
    assert!(v["error"]["message"].as_str().unwrap().contains("accept"), "{v}");
    // Other methods: 405 naming POST.
    let req = Request::get("/mcp").header("host", "localhost").body(Body::empty()).unwrap();
    let resp = router(f.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "POST");
    assert_eq!(f.ring.len(), 4096);
}
