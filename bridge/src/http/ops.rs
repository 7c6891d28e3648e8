//! Operator endpoints: `/health`, `/api/v1/devices` and `/metrics`.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::accept::Accept;
use super::{ApiError, AppState};
use crate::dispenser::{DeviceState, DeviceStatus};

/// The whole service's health on /health: `healthy` when every device is `ok`; `degraded` when some device can still serve
/// but not all are `ok` (stale heartbeat, starting, or another card failed); `unhealthy` when none can
/// serve or none is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceHealth {
    Healthy,
    Degraded,
    Unhealthy,
}

pub fn service_health(devices: &[DeviceStatus]) -> ServiceHealth {
    let serving = |d: &&DeviceStatus| {
        matches!(d.health, DeviceState::Ok | DeviceState::Degraded | DeviceState::Starting)
    };
    if devices.is_empty() || !devices.iter().any(|d| serving(&d)) {
        ServiceHealth::Unhealthy
    } else if devices.iter().all(|d| d.health == DeviceState::Ok) {
        ServiceHealth::Healthy
    } else {
        ServiceHealth::Degraded
    }
}

#[derive(Serialize)]
struct DeviceStateBody<'a> {
    name: &'a str,
    health: DeviceState,
    reason: &'a str,
    source: &'a str,
    simulated: bool,
    heartbeat_age_ms: Option<u64>,
    heartbeat_stale: bool,
    buffer_fill_percent: f64,
    entropy_rate_mbps: f64,
    bytes_served: u64,
}

#[derive(Serialize)]
struct HealthBody<'a> {
    status: ServiceHealth,
    entropy_rate_mbps: f64,
    buffer_fill_percent: f64,
    uptime_seconds: u64,
    total_bytes_served: u64,
    devices: Vec<DeviceStateBody<'a>>,
}

fn mbps(bytes_per_second: f64) -> f64 {
    bytes_per_second * 8.0 / 1e6
}

/// The service state and the health report of `/health` (and of the MCP `device_health` tool),
/// as JSON text in the field order of docs/api.md.
pub(super) fn health_report(s: &AppState) -> (ServiceHealth, String) {
    let devices = s.dispenser().devices();
    let status = service_health(&devices);
    let (fill, cap) =
        devices.iter().fold((0u64, 0u64), |(f, c), d| (f + d.ring_fill, c + d.ring_capacity));
    let body = HealthBody {
        status,
        entropy_rate_mbps: mbps(devices.iter().map(|d| d.publish_rate_bytes_per_second).sum()),
        buffer_fill_percent: if cap == 0 { 0.0 } else { fill as f64 * 100.0 / cap as f64 },
        uptime_seconds: s.0.started.elapsed().as_secs(),
        total_bytes_served: s.dispenser().total_bytes_served(),
        devices: devices
            .iter()
            .map(|d| DeviceStateBody {
                name: &d.name,
                health: d.health,
                reason: &d.reason,
                source: &d.source,
                simulated: d.simulated,
                heartbeat_age_ms: d.heartbeat_age_ms,
                heartbeat_stale: d.heartbeat_stale,
                buffer_fill_percent: d.buffer_fill_ratio * 100.0,
                entropy_rate_mbps: mbps(d.publish_rate_bytes_per_second),
                bytes_served: d.bytes_served,
            })
            .collect(),
    };
    let text = serde_json::to_string(&body).unwrap_or_else(|e| {
        tracing::error!(error = %e, "failed to encode the health report");
        String::from("{}")
    });
    (status, text)
}

/// `GET /health`: 200 when healthy, 503 otherwise (degraded included), always with the body.
pub async fn health(State(s): State<AppState>, accept: Accept) -> Response {
    if let Err(e) = accept.require(super::random::JSON) {
        return e.into_response();
    }
    let (status, body) = health_report(&s);
    let code = if status == ServiceHealth::Healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut resp = (code, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Serialize)]
struct DevicesBody {
    devices: Vec<DeviceStatus>,
}

/// `GET /api/v1/devices`: every attached card with its identity, state and counters.
pub async fn devices(State(s): State<AppState>, accept: Accept) -> Result<Response, ApiError> {
    accept.require(super::random::JSON)?;
    let mut resp = Json(DevicesBody { devices: s.dispenser().devices() }).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(s): State<AppState>, accept: Accept) -> Result<Response, ApiError> {
    accept.require("text/plain")?;
    let text =
        s.0.metrics.render(&s.dispenser().devices(), &s.0.server, &s.0.egd, s.0.started.elapsed());
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}
