//! The beacon's pulses and certificates on NIST's beacon 2.0 paths (docs/beacon.md). Mounted only
//! with a beacon configured; open like /health (pulses are public by design, and a request takes
//! no card bytes: pulses are made on the beacon's timer).

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::{ApiError, AppState};
use crate::beacon::pulse::{unhex, Envelope, Pulse, VALUE_LEN};
use crate::beacon::{sign, Beacon};

/// The beacon routes (none without a beacon).
pub fn routes(state: &AppState) -> Router<AppState> {
    if state.cfg().beacon.is_none() {
        return Router::new();
    }
    Router::new()
        .route("/beacon/2.0/pulse/last", get(last))
        .route("/beacon/2.0/pulse/time/{ms}", get(at_time))
        .route("/beacon/2.0/chain/{chain}/pulse/{index}", get(by_index))
        .route("/beacon/2.0/certificate/{id}", get(certificate))
}

fn beacon(s: &AppState) -> Result<&Beacon, ApiError> {
    s.cfg().beacon.as_ref().ok_or_else(|| not_found("no beacon is configured"))
}

fn not_found(message: &str) -> ApiError {
    ApiError::NotFound { code: "not_found", message: message.into() }
}

fn answer(p: Result<Option<Pulse>, crate::beacon::StoreError>) -> Result<Response, ApiError> {
    let p = p.map_err(|e| {
        tracing::error!(error = %e, "beacon database");
        ApiError::Internal
    })?;
    let pulse = p.ok_or_else(|| not_found("no such pulse"))?;
    Ok(Json(Envelope { pulse }).into_response())
}

fn number(s: &str, what: &str) -> Result<u64, ApiError> {
    s.parse().map_err(|_| ApiError::BadRequest(format!("{what} must be a non-negative integer")))
}

/// `GET /beacon/2.0/pulse/last`.
async fn last(State(s): State<AppState>) -> Result<Response, ApiError> {
    answer(beacon(&s)?.store().last())
}

/// `GET /beacon/2.0/pulse/time/{ms}`: the pulse at that time (Unix milliseconds), or the next.
async fn at_time(State(s): State<AppState>, Path(ms): Path<String>) -> Result<Response, ApiError> {
    let ms = number(&ms, "the time")?;
    answer(beacon(&s)?.store().at_or_after(ms))
}

/// `GET /beacon/2.0/chain/{chain}/pulse/{index}` (`index` may be `last`).
async fn by_index(
    State(s): State<AppState>,
    Path((chain, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let b = beacon(&s)?;
    let chain = number(&chain, "the chain index")?;
    if index == "last" {
        return answer(b.store().last_of(chain));
    }
    answer(b.store().get(chain, number(&index, "the pulse index")?))
}

/// `GET /beacon/2.0/certificate/{id}`: the certificate (PEM) whose SHA-512 is `id` (hex).
async fn certificate(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let b = beacon(&s)?;
    let id = unhex(&id).filter(|v| v.len() == VALUE_LEN).ok_or_else(|| {
        ApiError::BadRequest("the certificate id is 128 hexadecimal digits".into())
    })?;
    let der = b
        .store()
        .certificate(&id)
        .map_err(|e| {
            tracing::error!(error = %e, "beacon database");
            ApiError::Internal
        })?
        .ok_or_else(|| not_found("no such certificate"))?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], sign::to_pem("CERTIFICATE", &der))
        .into_response())
}

/// The OpenAPI path items of the beacon routes (merged into the document by `openapi`).
pub fn openapi_paths() -> Vec<(&'static str, serde_json::Value)> {
    let pulse = serde_json::json!({"description": "The pulse, as NIST's beacon 2.0 serves it (docs/beacon.md).",
        "content": {"application/json": {"schema": {"type": "object", "required": ["pulse"],
            "properties": {"pulse": {"type": "object"}}}}}});
    let err = |d: &str| {
        serde_json::json!({"description": d, "content": {"application/json":
        {"schema": {"$ref": "#/components/schemas/Error"}}}})
    };
    let param = |name: &str, doc: &str| {
        serde_json::json!({"name": name, "in": "path", "required": true,
        "schema": {"type": "string"}, "description": doc})
    };
    let op = |id: &str, summary: &str, params: Vec<serde_json::Value>, ok: serde_json::Value| {
        serde_json::json!({"get": {"operationId": id, "summary": summary, "security": [{}],
            "parameters": params, "responses": {"200": ok, "400": err("Malformed path parameter."),
            "404": err("No such pulse or certificate, or no beacon configured.")}}})
    };
    vec![
        (
            "/beacon/2.0/pulse/last",
            op("beaconLastPulse", "The latest pulse.", vec![], pulse.clone()),
        ),
        (
            "/beacon/2.0/pulse/time/{ms}",
            op(
                "beaconPulseAtTime",
                "The pulse at a time (Unix ms), or the next one.",
                vec![param("ms", "Unix time in milliseconds.")],
                pulse.clone(),
            ),
        ),
        (
            "/beacon/2.0/chain/{chain}/pulse/{index}",
            op(
                "beaconPulse",
                "Pulse `index` (or `last`) of chain `chain`.",
                vec![param("chain", "Chain index."), param("index", "Pulse index, or `last`.")],
                pulse,
            ),
        ),
        (
            "/beacon/2.0/certificate/{id}",
            op(
                "beaconCertificate",
                "The certificate whose SHA-512 (DER) is `id`.",
                vec![param("id", "128 hexadecimal digits.")],
                serde_json::json!({"description": "PEM certificate.", "content": {"application/x-pem-file": {"schema": {"type": "string"}}}}),
            ),
        ),
    ]
}
