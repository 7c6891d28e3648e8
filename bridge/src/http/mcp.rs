//! The Model Context Protocol endpoint for AI agents: `/mcp`, the streamable HTTP transport, served
//! by the official Rust SDK (`rmcp`) in stateless mode with plain JSON answers. Stateless means no
//! session is kept between requests (nothing to bound, nothing lost when a client goes away), and
//! every tool call is one HTTP request, so the bearer tokens and per-client rate limit of the other
//! random endpoints apply to it unchanged (the router layers them around this service).
//!
//! Tools, each with the JSON schema of its arguments (docs/api.md "MCP"):
//! `random_bytes` (hex or base64), `random_integers` (uniform in `[min, max]`), `random_floats`
//! (uniform in [0, 1)), `random_uuids` (RFC 9562 version 4) and `device_health` (the `/health`
//! report). The values are drawn exactly as by the REST endpoints (shared functions in `random`):
//! each byte served once, never from a failed card. A refused call (bad arguments, a failed or
//! missing card, no entropy within the wait) is a tool error (`isError: true`) whose text is the
//! REST API's error message, and takes no byte.

use std::sync::Arc;

use base64::Engine as _;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool, tool_handler, tool_router, ErrorData};
use schemars::JsonSchema;
use serde::Deserialize;

use super::random::{draw_floats, draw_integers, draw_uuids, hex_encode};
use super::{ApiError, AppState};
use crate::dispenser::Entropy;

/// The path of the endpoint.
pub const MCP_PATH: &str = "/mcp";

/// Largest JSON-RPC request body read: tool arguments are a few numbers and names.
pub const MCP_BODY_MAX: usize = 64 * 1024;

/// Encoding of `random_bytes`.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Two lowercase hexadecimal digits per byte.
    #[default]
    Hex,
    /// RFC 4648 base64 with padding.
    Base64,
}

/// Arguments of `random_bytes`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BytesArgs {
    /// Number of bytes, at least 1 and at most the server's --max-bytes.
    #[schemars(range(min = 1))]
    pub length: u64,
    /// `hex` (default) or `base64`.
    #[serde(default)]
    pub format: Encoding,
    /// Device to draw from (default: any healthy one).
    #[serde(default)]
    pub device: Option<String>,
}

/// Arguments of `random_integers`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegersArgs {
    /// Smallest value (inclusive), a signed 64-bit integer.
    pub min: i64,
    /// Largest value (inclusive); must be at least `min`.
    pub max: i64,
    /// How many values (default 1, at most the server's --max-count).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub count: Option<u64>,
    /// Device to draw from (default: any healthy one).
    #[serde(default)]
    pub device: Option<String>,
}

/// Arguments of `random_floats` and `random_uuids`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountArgs {
    /// How many values (default 1, at most the server's --max-count).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub count: Option<u64>,
    /// Device to draw from (default: any healthy one).
    #[serde(default)]
    pub device: Option<String>,
}

/// The MCP server: the bridge's state and the tool table.
#[derive(Clone)]
pub struct Tools {
    state: AppState,
    tool_router: ToolRouter<Self>,
}

/// A tool's answer: the values as JSON (structured content, with the same JSON as text for
/// clients that read only text), or the refusal as a tool error.
fn answer(result: Result<serde_json::Value, ApiError>) -> Result<CallToolResult, ErrorData> {
    Ok(match result {
        Ok(v) => {
            let mut r = CallToolResult::structured(v);
            if r.content.is_empty() {
                if let Some(v) = &r.structured_content {
                    r.content = vec![ContentBlock::text(v.to_string())];
                }
            }
            r
        }
        Err(e) => CallToolResult::error(vec![ContentBlock::text(format!(
            "{} ({}): {e}",
            e.code(),
            e.status().as_u16()
        ))]),
    })
}

/// A count argument checked against the server's limit (the REST API's `count` rules).
fn count_of(s: &AppState, count: Option<u64>) -> Result<usize, ApiError> {
    let max = s.cfg().max_count;
    match count.unwrap_or(1) {
        0 => Err(ApiError::BadRequest("count must be at least 1".into())),
        n if n > max as u64 => Err(ApiError::TooLarge(format!("count must be at most {max}"))),
        n => Ok(n as usize),
    }
}

fn with_source<T: serde::Serialize>(data: T, e: &Entropy) -> serde_json::Value {
    serde_json::json!({"data": data, "source": e.source, "device": e.device})
}

#[tool_router(router = tool_router)]
impl Tools {
    pub fn new(state: AppState) -> Self {
        Self { state, tool_router: Self::tool_router() }
    }

    #[tool(description = "Random bytes from the quantum random number generator, as hex or \
                          base64. Each byte is served once and never from a failed card.")]
    async fn random_bytes(
        &self,
        Parameters(a): Parameters<BytesArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(
            async {
                let max = self.state.cfg().max_bytes;
                let n = match a.length {
                    0 => return Err(ApiError::BadRequest("length must be at least 1".into())),
                    n if n > max as u64 => {
                        return Err(ApiError::TooLarge(format!("length must be at most {max}")))
                    }
                    n => n as usize,
                };
                let e = self.state.take(a.device.as_deref(), n).await?;
                let (data, format) = match a.format {
                    Encoding::Hex => (hex_encode(&e.bytes), "hex"),
                    Encoding::Base64 => {
                        (base64::engine::general_purpose::STANDARD.encode(&e.bytes), "base64")
                    }
                };
                Ok(serde_json::json!({"data": data, "length": n, "format": format,
                                      "source": e.source, "device": e.device}))
            }
            .await,
        )
    }

    #[tool(description = "Uniform random integers in [min, max] (inclusive; no modulo bias).")]
    async fn random_integers(
        &self,
        Parameters(a): Parameters<IntegersArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(
            async {
                let count = count_of(&self.state, a.count)?;
                if a.min > a.max {
                    return Err(ApiError::BadRequest(format!(
                        "min ({}) must not exceed max ({})",
                        a.min, a.max
                    )));
                }
                let (data, e) =
                    draw_integers(&self.state, a.device.as_deref(), a.min, a.max, count).await?;
                Ok(with_source(data, &e))
            }
            .await,
        )
    }

    #[tool(description = "Uniform random floats in [0, 1) with 53 random bits each.")]
    async fn random_floats(
        &self,
        Parameters(a): Parameters<CountArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(
            async {
                let count = count_of(&self.state, a.count)?;
                let (data, e) = draw_floats(&self.state, a.device.as_deref(), count).await?;
                Ok(with_source(data, &e))
            }
            .await,
        )
    }

    #[tool(description = "Random RFC 9562 version-4 UUIDs.")]
    async fn random_uuids(
        &self,
        Parameters(a): Parameters<CountArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(
            async {
                let count = count_of(&self.state, a.count)?;
                let (data, e) = draw_uuids(&self.state, a.device.as_deref(), count).await?;
                Ok(with_source(data, &e))
            }
            .await,
        )
    }

    #[tool(description = "Health of the service and of each card: state, reason, fill, rate \
                          and bytes served (the /health report).")]
    async fn device_health(&self) -> Result<CallToolResult, ErrorData> {
        let (_, text) = super::ops::health_report(&self.state);
        answer(serde_json::from_str(&text).map_err(|_| ApiError::Internal))
    }
}

#[tool_handler(router = self.tool_router)]
impl rmcp::ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("qrng-bridge", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Random values from Quantis quantum random number generator cards. Every value \
                 is drawn from bytes served once; a failed card gives a tool error, never \
                 stale or substitute randomness.",
            )
    }
}

/// The OpenAPI path item of `/mcp` (merged into the document by `openapi`): the transport's
/// JSON-RPC messages are described by the MCP specification, not here. A refused tool call is a
/// 200 JSON-RPC answer with `isError`; 404, 413 and 503 are not answered at this level.
pub fn openapi_path() -> serde_json::Value {
    let mut item = super::openapi::post_random_op(
        "postMcp",
        "Model Context Protocol, streamable HTTP transport (stateless, JSON answers). Tools: \
         random_bytes, random_integers, random_floats, random_uuids, device_health.",
        Vec::new(),
        serde_json::json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}),
        serde_json::json!({"description": "A JSON-RPC answer.",
                           "content": {"application/json": {"schema": {"type": "object"}}}}),
    );
    let op = &mut item["post"];
    op["externalDocs"] =
        serde_json::json!({"url": "https://modelcontextprotocol.io/specification"});
    op["responses"]["202"] = serde_json::json!({"description": "A notification was accepted."});
    op["responses"]["403"] =
        serde_json::json!({"description": "The Host header is not in --mcp-allowed-host."});
    item
}

/// The transport's own refusals (406 for an `Accept` without both JSON and event streams, 415,
/// 403 for a `Host` not allowed, 400 for a body that is not JSON-RPC) come as plain text from the
/// SDK; they get the API's JSON error shape here, code `mcp_transport` and the SDK's text as the
/// message (405 is shaped, with `Allow`, by the router's layer).
fn json_errors(resp: SdkResponse) -> axum::response::Response {
    use axum::http::header::CONTENT_TYPE;
    let resp = resp.map(axum::body::Body::new);
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_client_error() || status == axum::http::StatusCode::METHOD_NOT_ALLOWED || is_json
    {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = futures_util::FutureExt::now_or_never(axum::body::to_bytes(body, 4096));
    let text = match bytes {
        Some(Ok(b)) => String::from_utf8_lossy(&b).trim().to_owned(),
        _ => status.canonical_reason().unwrap_or("refused").to_owned(),
    };
    let body = serde_json::json!({"error": {"code": "mcp_transport", "message": text}});
    let mut out = axum::response::IntoResponse::into_response((status, axum::Json(body)));
    for name in [axum::http::header::ALLOW, axum::http::header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// The `/mcp` service, its transport refusals in the API's JSON error shape.
pub fn router_service(
    state: AppState,
    allowed_hosts: &[String],
) -> tower::util::MapResponse<
    StreamableHttpService<Tools, LocalSessionManager>,
    fn(SdkResponse) -> axum::response::Response,
> {
    <_ as tower::ServiceExt<axum::extract::Request>>::map_response(
        service(state, allowed_hosts),
        json_errors as fn(SdkResponse) -> axum::response::Response,
    )
}

/// What the SDK's service answers with.
type SdkResponse = axum::http::Response<
    http_body_util::combinators::BoxBody<axum::body::Bytes, std::convert::Infallible>,
>;

/// The `/mcp` service. `allowed_hosts`: the `Host` values accepted (DNS-rebinding protection of
/// the transport); empty accepts any.
pub fn service(
    state: AppState,
    allowed_hosts: &[String],
) -> StreamableHttpService<Tools, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(MCP_BODY_MAX);
    config = if allowed_hosts.is_empty() {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(allowed_hosts.iter().cloned())
    };
    StreamableHttpService::new(
        move || Ok(Tools::new(state.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
