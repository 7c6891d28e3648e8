//! Operator endpoints: `/health`, `/api/v1/devices` and `/metrics`.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use metrics::{Key, Label, Recorder, Unit};
use metrics_exporter_prometheus::PrometheusRecorder;
use serde::Serialize;

use super::{metadata, AppState};
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

/// `GET /health`: 200 when healthy, 503 otherwise (degraded included), always with the body.
pub async fn health(State(s): State<AppState>) -> Response {
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
    let code = if status == ServiceHealth::Healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut resp = (code, Json(body)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Serialize)]
struct DevicesBody {
    devices: Vec<DeviceStatus>,
}

/// `GET /api/v1/devices`: every attached card with its identity, state and counters.
pub async fn devices(State(s): State<AppState>) -> Response {
    let mut resp = Json(DevicesBody { devices: s.dispenser().devices() }).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// HELP texts for the metrics set at scrape time.
pub(super) fn describe(r: &PrometheusRecorder) {
    let c = |name: &'static str, unit, help: &'static str| {
        r.describe_counter(name.into(), unit, help.into())
    };
    let g = |name: &'static str, unit, help: &'static str| {
        r.describe_gauge(name.into(), unit, help.into())
    };
    c(
        "entropy_bytes_total",
        Some(Unit::Bytes),
        "Random bytes handed to clients (HTTP and FUSE), per device.",
    );
    c(
        "entropy_bytes_published_total",
        Some(Unit::Bytes),
        "Bytes the driver published into the ring, per device.",
    );
    c(
        "raw_bytes_read_total",
        Some(Unit::Bytes),
        "Raw bytes the driver read from the card, per device.",
    );
    c(
        "bytes_dropped_total",
        Some(Unit::Bytes),
        "Bytes the driver dropped (ring full or failed tests), per device.",
    );
    c(
        "health_alarms_total",
        None,
        "SP 800-90B health-test alarms reported by the driver, per device.",
    );
    c("requests_timed_out_total", None, "Requests that waited too long for entropy, per device.");
    c("requests_served_total", None, "Requests served with entropy, per device.");
    c("http_responses_total", None, "HTTP responses by endpoint and status.");
    g("buffer_utilization_ratio", None, "Fill of the shared-memory ring (0..1), per device.");
    g("device_up", None, "1 if the device can serve (ok, degraded or starting), else 0.");
    g(
        "device_state",
        None,
        "1 for the device's current state (ok|degraded|starting|failed|stopped).",
    );
    g("heartbeat_age_seconds", Some(Unit::Seconds), "Age of the driver's heartbeat, per device.");
    g("requests_waiting", None, "Requests queued for entropy, per device.");
    g(
        "entropy_rate_bytes_per_second",
        None,
        "Bytes per second the driver published (last second), per device.",
    );
    g("devices_attached", None, "Rings attached.");
    g("http_connections_open", None, "Open HTTP connections, per worker thread.");
    r.describe_counter(
        "http_connections_accepted_total".into(),
        None,
        "Accepted HTTP connections by placement: local = the worker pinned to the CPU the \
         connection's packets arrive on, balanced = the least loaded worker."
            .into(),
    );
    g("uptime_seconds", Some(Unit::Seconds), "Seconds since the bridge started.");
    r.describe_histogram(
        "request_duration_seconds".into(),
        Some(Unit::Seconds),
        "HTTP request handling time by endpoint (until the response head).".into(),
    );
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(s): State<AppState>) -> Response {
    let r = &s.0.recorder;
    let m = metadata();
    let devices = s.dispenser().devices();
    let dev_key = |name: &'static str, dev: &str| {
        Key::from_parts(name, vec![Label::new("device", dev.to_owned())])
    };
    for d in &devices {
        let counter = |name, v| r.register_counter(&dev_key(name, &d.name), &m).absolute(v);
        counter("entropy_bytes_total", d.bytes_served);
        counter("entropy_bytes_published_total", d.bytes_published);
        counter("raw_bytes_read_total", d.raw_bytes_read);
        counter("bytes_dropped_total", d.bytes_dropped);
        counter("health_alarms_total", d.health_alarms);
        counter("requests_timed_out_total", d.requests_timed_out);
        counter("requests_served_total", d.requests_served);
        let gauge = |name, v: f64| r.register_gauge(&dev_key(name, &d.name), &m).set(v);
        gauge("buffer_utilization_ratio", d.buffer_fill_ratio);
        gauge(
            "device_up",
            f64::from(u8::from(matches!(
                d.health,
                DeviceState::Ok | DeviceState::Degraded | DeviceState::Starting
            ))),
        );
        gauge(
            "heartbeat_age_seconds",
            d.heartbeat_age_ms.map_or(f64::NAN, |ms| ms as f64 / 1000.0),
        );
        gauge("requests_waiting", d.requests_waiting as f64);
        gauge("entropy_rate_bytes_per_second", d.publish_rate_bytes_per_second);
        for state in [
            DeviceState::Ok,
            DeviceState::Degraded,
            DeviceState::Starting,
            DeviceState::Failed,
            DeviceState::Stopped,
        ] {
            let key = Key::from_parts(
                "device_state",
                vec![Label::new("device", d.name.clone()), Label::new("state", state.to_string())],
            );
            r.register_gauge(&key, &m).set(f64::from(u8::from(d.health == state)));
        }
    }
    r.register_gauge(&Key::from_name("devices_attached"), &m).set(devices.len() as f64);
    let server = &s.0.server;
    for (i, open) in server.open.iter().enumerate() {
        let key =
            Key::from_parts("http_connections_open", vec![Label::new("worker", i.to_string())]);
        r.register_gauge(&key, &m).set(open.load(std::sync::atomic::Ordering::Relaxed) as f64);
    }
    for (placement, n) in [("local", &server.local), ("balanced", &server.balanced)] {
        let key = Key::from_parts(
            "http_connections_accepted_total",
            vec![Label::new("placement", placement)],
        );
        r.register_counter(&key, &m).absolute(n.load(std::sync::atomic::Ordering::Relaxed));
    }
    r.register_gauge(&Key::from_name("uptime_seconds"), &m)
        .set(s.0.started.elapsed().as_secs_f64());
    let text = s.0.handle.render();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}
