//! `GET /api/v1/openapi.json`: a hand-written OpenAPI 3.1 document of the real behaviour. The limits
//! in it come from the running configuration; the router tests check it against the routes.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

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
    e["headers"] =
        json!({"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}});
    e
}

fn random_op(summary: &str, params: Vec<Value>, ok: Value) -> Value {
    json!({"get": {
        "summary": summary,
        "security": [{}, {"bearer": []}],
        "parameters": params,
        "responses": {
            "200": ok,
            "400": err("Invalid parameter."),
            "401": err("Bearer token required (only when tokens are configured)."),
            "404": err("Unknown device."),
            "413": err("More than the configured limit."),
            "429": err_retry("Per-client rate limit (only when configured), too many failed token \
                              checks from this client, or too many open connections from it."),
            "503": err_retry("No entropy within the wait limit, or the device failed/stopped.")
        }
    }})
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
                    "invalid_parameter", "too_large", "unknown_device", "not_found", "unauthorized",
                    "rate_limited", "too_many_auth_failures", "too_many_connections",
                    "no_healthy_device", "device_failed", "device_stopped",
                    "entropy_unavailable", "internal"]},
                    "message": {"type": "string"}}}}}}
        },
        "paths": {
            "/api/v1/random/bytes": random_op("Random bytes.", vec![
                int_param("length", true, 1, Some(max_bytes), None, "Number of bytes; above the limit: 413."),
                json!({"name": "format", "in": "query", "required": false,
                       "schema": {"type": "string", "enum": ["hex", "base64", "binary"], "default": "hex"}}),
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
            "/api/v1/random/integers": random_op("Uniform integers in [min, max] (rejection sampling).", vec![
                json!({"name": "min", "in": "query", "required": true, "schema": {"type": "integer", "format": "int64"}}),
                json!({"name": "max", "in": "query", "required": true, "schema": {"type": "integer", "format": "int64"},
                       "description": "Inclusive; must be ≥ min. The whole int64 range is allowed."}),
                count(), device_param()],
                json_ok(data_of(json!({"type": "integer", "format": "int64"})))),
            "/api/v1/random/floats": random_op("Uniform floats in [0, 1) with 53 random bits.", vec![count(), device_param()],
                json_ok(data_of(json!({"type": "number", "minimum": 0, "exclusiveMaximum": 1})))),
            "/api/v1/random/uuid": random_op("RFC 9562 version-4 UUIDs.", vec![count(), device_param()],
                json_ok(data_of(json!({"type": "string", "format": "uuid"})))),
            "/API/jsonI.php": random_op("ANU QRNG legacy API.", vec![
                int_param("length", true, 1, Some(ANU_MAX as i64), None, "Array length."),
                json!({"name": "type", "in": "query", "required": true,
                       "schema": {"type": "string", "enum": ["uint8", "uint16", "hex16"]}}),
                int_param("size", false, 1, Some(ANU_MAX as i64), None, "Block size in bytes; required for hex16.")],
                json_ok(json!({"type": "object", "required": ["type", "length", "data", "success"],
                    "properties": {"type": {"type": "string", "enum": ["uint8", "uint16", "string"]},
                                   "length": {"type": "integer"}, "size": {"type": "integer"},
                                   "data": {"type": "array", "items": {"type": ["integer", "string"]}},
                                   "success": {"type": "boolean"}}}))),
            "/api/v1/devices": {"get": {"summary": "Attached cards, their state and counters.",
                "security": [{}, {"bearer": []}],
                "responses": {"200": {"description": "Devices.", "content": {"application/json": {"schema":
                    {"type": "object", "properties": {"devices": {"type": "array", "items": {"type": "object"}}}}}}},
                    "401": err("Bearer token required (only when tokens are configured).")}}},
            "/health": {"get": {"summary": "Health: 200 when every device is ok, else 503 (same body).",
                "responses": {
                    "200": {"description": "Healthy.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}},
                    "503": {"description": "Degraded or unhealthy.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics.",
                "responses": {"200": {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document.",
                "responses": {"200": {"description": "OpenAPI 3.1.", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
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

pub async fn document(State(s): State<AppState>) -> Json<Value> {
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
    Json(doc)
}
