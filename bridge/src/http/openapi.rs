//! `GET /api/v1/openapi.json`: a hand-written OpenAPI 3.1 document of the real behaviour. The limits
//! in it come from the running configuration; the router tests check it against the routes.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::accept::Accept;
use super::random::ANU_MAX;
use super::AppState;

fn int_param(
    name: &str,
    required: bool,
    min: i64,
    max: Option<i64>,
    default: Option<i64>,
    doc: &str,
) -> Value {
    let mut schema = json!({"type": "integer", "minimum": min});
    if let Some(m) = max {
        schema["maximum"] = json!(m);
    }
    if let Some(d) = default {
        schema["default"] = json!(d);
    }
    json!({"name": name, "in": "query", "required": required, "schema": schema, "description": doc})
}

fn device_param() -> Value {
    json!({"name": "device", "in": "query", "required": false, "schema": {"type": "string"},
           "description": "Device (ring file stem, e.g. qrng0). Default: any healthy device."})
}

fn random_headers() -> Value {
    json!({
        "Cache-Control": {"schema": {"type": "string", "const": "no-store"}},
        "X-QRNG-Source": {"schema": {"type": "string"}, "description": "Card serial, or \"simulated\"."},
        "X-QRNG-Device": {"schema": {"type": "string"}, "description": "Device the bytes came from."}
    })
}

fn err(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn err_retry(desc: &str) -> Value {
    let mut e = err(desc);
    e["headers"] = json!({"Retry-After": {"required": true, "schema": {"type": "integer", "minimum": 0},
        "description": "Seconds until a retry may succeed (--retry-after for 503)."}});
    e
}

/// The answers every operation can give: 400 for an HTTP/1.1 request without `Host`, 405 for
/// another method, 406 for an `Accept` that allows none of the operation's media types.
fn common_errors(responses: &mut Value, bad_request: &str) {
    let r = responses.as_object_mut().expect("responses object");
    r.insert("400".into(), err(bad_request));
    let mut not_allowed = err("Any method but GET and HEAD (the JSON error `method_not_allowed`).");
    not_allowed["headers"] = json!({"Allow": {"required": true,
        "schema": {"type": "string"}, "description": "The methods the path has: GET,HEAD."}});
    r.insert("405".into(), not_allowed);
    r.insert(
        "406".into(),
        err("The Accept header allows none of this operation's media types (`not_acceptable`)."),
    );
}

/// One GET operation named `id`.
fn op(id: &str, summary: &str, params: Vec<Value>, secured: bool, mut responses: Value) -> Value {
    let bad_request = if params.is_empty() {
        "HTTP/1.1 request without a Host header (`missing_host`)."
    } else {
        "Invalid or missing parameter (`invalid_parameter`), or an HTTP/1.1 request without a \
         Host header (`missing_host`)."
    };
    common_errors(&mut responses, bad_request);
    let mut o = json!({"operationId": id, "summary": summary, "responses": responses});
    if !params.is_empty() {
        o["parameters"] = Value::Array(params);
    }
    if secured {
        o["security"] = json!([{}, {"bearer": []}]);
        let mut unauthorized = err("Bearer token required (only when tokens are configured).");
        unauthorized["headers"] = json!({"WWW-Authenticate": {"required": true, "schema": {"type": "string", "const": "Bearer"}}});
        o["responses"]["401"] = unauthorized;
        o["responses"]["429"] = err_retry(
            "Too many failed token checks from this client (`too_many_auth_failures`; only with \
             tokens), or too many open connections from its address (`too_many_connections`).",
        );
    } else {
        o["responses"]["429"] = err_retry(
            "Too many open connections from this client's address (`too_many_connections`).",
        );
    }
    json!({"get": o})
}

fn random_op(id: &str, summary: &str, params: Vec<Value>, ok: Value) -> Value {
    let mut o = op(
        id,
        summary,
        params,
        true,
        json!({
            "200": ok,
            "404": err("Unknown device (`unknown_device`)."),
            "413": err("`length` or `count` above the configured limit (`too_large`)."),
            "503": err_retry("No entropy within the wait limit, or the device failed or stopped \
                              (`entropy_unavailable`, `device_failed`, `device_stopped`, \
                              `no_healthy_device`).")
        }),
    );
    o["get"]["responses"]["429"] = err_retry(
        "Per-client rate limit (`rate_limited`; only when configured), too many failed token \
         checks from this client (`too_many_auth_failures`), or too many open connections from \
         its address (`too_many_connections`).",
    );
    o
}

/// A POST operation with the refusals of a random endpoint ([`random_op`]): tokens, rate limit,
/// 404, 413 and 503, and 405 naming POST. For the routes that keep their fragment beside their
/// handler (`pollen`, `mcp`).
pub(super) fn post_random_op(
    id: &str,
    summary: &str,
    params: Vec<Value>,
    request_body: Value,
    ok: Value,
) -> Value {
    let mut o = random_op(id, summary, params, ok)["get"].take();
    o["requestBody"] = request_body;
    let r = &mut o["responses"]["405"];
    r["description"] = json!("Any method but POST (the JSON error `method_not_allowed`).");
    r["headers"]["Allow"]["description"] = json!("The methods the path has: POST.");
    json!({"post": o})
}

fn json_ok(schema: Value) -> Value {
    json!({"description": "Random values.", "headers": random_headers(),
           "content": {"application/json": {"schema": schema}}})
}

fn data_of(items: Value) -> Value {
    json!({"type": "object", "required": ["data", "source"],
           "properties": {"data": {"type": "array", "items": items}, "source": {"type": "string"}}})
}

/// The document for the given limits.
pub fn build(max_bytes: usize, max_count: usize) -> Value {
    let (max_bytes, max_count) = (max_bytes as i64, max_count as i64);
    let count = || int_param("count", false, 1, Some(max_count), Some(1), "How many values.");
    json!({
        "openapi": "3.1.0",
        "info": {"title": "qrng-bridge", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Random numbers from Quantis QRNG cards. Every byte is served once."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string", "enum": [
                    "invalid_parameter", "missing_host", "too_large", "unknown_device", "not_found",
                    "method_not_allowed", "not_acceptable", "unauthorized",
                    "rate_limited", "too_many_auth_failures", "too_many_connections",
                    "no_healthy_device", "device_failed", "device_stopped",
                    "entropy_unavailable", "internal",
                    "mcp_transport"]},
                    "message": {"type": "string"}}}}}}
        },
        "paths": {
            "/api/v1/random/bytes": random_op("getRandomBytes", "Random bytes.", vec![
                int_param("length", true, 1, Some(max_bytes), None, "Number of bytes; above the limit: 413."),
                json!({"name": "format", "in": "query", "required": false,
                       "schema": {"type": "string", "enum": ["hex", "base64", "binary"]},
                       "description": "hex (lower case) and base64 answer JSON, binary the raw bytes. \
                           Without it: binary when Accept prefers application/octet-stream to \
                           application/json, else hex."}),
                device_param()],
                json!({"description": "Random bytes: JSON for hex and base64, raw for binary.",
                       "headers": random_headers(),
                       "content": {
                           "application/json": {"schema": {"type": "object",
                               "required": ["data", "length", "format", "source"],
                               "properties": {"data": {"type": "string"}, "length": {"type": "integer"},
                                              "format": {"type": "string", "enum": ["hex", "base64"]},
                                              "source": {"type": "string"}}}},
                           "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}})),
            "/api/v1/random/integers": random_op("getRandomIntegers", "Uniform integers in [min, max] (rejection sampling).", vec![
                json!({"name": "min", "in": "query", "required": true, "schema": {"type": "integer", "format": "int64"},
                       "description": "Inclusive lower bound; must be ≤ max (else 400)."}),
                json!({"name": "max", "in": "query", "required": true, "schema": {"type": "integer", "format": "int64"},
                       "description": "Inclusive upper bound; must be ≥ min (else 400 `invalid_parameter`: \
                           \"min (A) must not exceed max (B)\"). The whole int64 range is allowed."}),
                count(), device_param()],
                json_ok(data_of(json!({"type": "integer", "format": "int64"})))),
            "/api/v1/random/floats": random_op("getRandomFloats", "Uniform floats in [0, 1) with 53 random bits.", vec![count(), device_param()],
                json_ok(data_of(json!({"type": "number", "minimum": 0, "exclusiveMaximum": 1})))),
            "/api/v1/random/uuid": random_op("getRandomUuids", "RFC 9562 version-4 UUIDs.", vec![count(), device_param()],
                json_ok(data_of(json!({"type": "string", "format": "uuid"})))),
            "/API/jsonI.php": random_op("getAnuJson", "ANU QRNG legacy API.", vec![
                int_param("length", true, 1, Some(ANU_MAX as i64), None, "Array length."),
                json!({"name": "type", "in": "query", "required": true,
                       "schema": {"type": "string", "enum": ["uint8", "uint16", "hex16"]}}),
                int_param("size", false, 1, Some(ANU_MAX as i64), None,
                    "Block size in bytes. Required for hex16 (400 without it). For uint8 and \
                     uint16 optional and without effect, but validated when given (1 to 1024, \
                     else 400).")],
                json_ok(json!({"type": "object", "required": ["type", "length", "data", "success"],
                    "properties": {"type": {"type": "string", "enum": ["uint8", "uint16", "string"]},
                                   "length": {"type": "integer"}, "size": {"type": "integer"},
                                   "data": {"type": "array", "items": {"type": ["integer", "string"]}},
                                   "success": {"type": "boolean"}}}))),
            "/api/v1/devices": op("listDevices", "Attached cards, their state and counters.", vec![], true, json!({
                "200": {"description": "Devices.", "content": {"application/json": {"schema":
                    {"type": "object", "required": ["devices"],
                     "properties": {"devices": {"type": "array", "items": {"type": "object"}}}}}}}})),
            "/health": op("getHealth", "Health: 200 when every device is ok, else 503 (same body).", vec![], false, json!({
                "200": {"description": "Healthy.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}},
                "503": {"description": "Degraded or unhealthy.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}})),
            "/metrics": op("getMetrics", "Prometheus metrics.", vec![], false, json!({
                "200": {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}})),
            "/api/v1/openapi.json": op("getOpenApi", "This document.", vec![], false, json!({
                "200": {"description": "OpenAPI 3.1.", "content": {"application/json": {"schema": {"type": "object"}}}}}))
        }
    })
}

fn with_health_schema(mut doc: Value) -> Value {
    doc["components"]["schemas"]["Health"] = json!({"type": "object",
        "required": ["status", "entropy_rate_mbps", "buffer_fill_percent", "uptime_seconds", "total_bytes_served", "devices"],
        "properties": {
            "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
            "entropy_rate_mbps": {"type": "number"}, "buffer_fill_percent": {"type": "number"},
            "uptime_seconds": {"type": "integer"}, "total_bytes_served": {"type": "integer"},
            "devices": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"},
                "health": {"type": "string", "enum": ["ok", "degraded", "starting", "failed", "stopped"]},
                "reason": {"type": "string"}, "source": {"type": "string"}}}}}});
    doc
}

pub async fn document(
    State(s): State<AppState>,
    accept: Accept,
) -> Result<Json<Value>, super::ApiError> {
    accept.require(super::random::JSON)?;
    let mut doc = with_health_schema(build(s.cfg().max_bytes, s.cfg().max_count));
    for (path, item) in super::pollen::openapi_paths() {
        doc["paths"][path] = item;
    }
    doc["paths"][super::mcp::MCP_PATH] = super::mcp::openapi_path();
    if s.cfg().beacon.is_some() {
        for (path, item) in super::beacon::openapi_paths() {
            doc["paths"][path] = item;
        }
    }
    Ok(Json(doc))
}
