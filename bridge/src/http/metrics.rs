//! The bridge's Prometheus metrics, in one place: what is registered, what it means (HELP), and
//! how a scrape renders it. [`HttpMetrics`] owns the recorder (a local one, not the process-wide
//! global, so tests can build several); the per-request series are recorded as requests end,
//! the per-device and per-worker ones are read at scrape time from the dispenser's
//! `DeviceStatus` (its `DeviceMetrics`) and the server's [`ServerMetrics`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram, Key, Label, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusHandle, PrometheusRecorder};

use super::{HttpError, BYTES_PATH, ENDPOINTS};
use crate::dispenser::{DeviceState, DeviceStatus};
use crate::egd::EgdMetrics;

/// Histogram buckets for request durations, seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The server's counters: open connections per worker and where connections were placed.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    /// Open connections, one entry per worker (`qrng_http_connections_open{worker}`).
    pub open: Vec<Arc<AtomicUsize>>,
    /// Connections given to the worker on the CPU their packets arrive on
    /// (`qrng_http_connections_accepted_total{placement="local"}`).
    pub local: AtomicU64,
    /// Connections given to the least loaded worker (`placement="balanced"`): workers not
    /// pinned, the CPU unknown or not a worker's, or that worker too far ahead.
    pub balanced: AtomicU64,
    /// The global connection cap in force (`qrng_http_connections_max`).
    pub max_connections: AtomicUsize,
    /// Times the acceptor found every slot taken and waited (`qrng_http_connection_cap_reached_total`).
    pub cap_reached: AtomicU64,
    /// Connections refused because their client was at its cap
    /// (`qrng_http_connections_refused_total{reason="client_cap"}`).
    pub client_cap: AtomicU64,
    /// Requests refused unchecked after too many failed authentications
    /// (`qrng_http_auth_throttled_total`).
    pub auth_throttled: AtomicU64,
}

impl ServerMetrics {
    /// Counters for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self { open: (0..workers).map(|_| Arc::default()).collect(), ..Self::default() }
    }
}

/// The HTTP front end's metrics: the recorder and the per-request series.
pub(super) struct HttpMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    durations: HashMap<&'static str, Histogram>,
    other_duration: Histogram,
    responses: std::sync::RwLock<HashMap<(&'static str, u16), Counter>>,
    /// `qrng_http_responses_total{endpoint="/api/v1/random/bytes",status="200"}`, the one counter of
    /// the hot path, held directly (it is also in `responses`).
    bytes_ok: Counter,
}

/// The key of `qrng_http_responses_total{endpoint,status}`.
fn response_key(endpoint: &'static str, status: u16) -> Key {
    Key::from_parts(
        "qrng_http_responses_total",
        vec![Label::new("endpoint", endpoint), Label::new("status", status.to_string())],
    )
}

fn metadata() -> metrics::Metadata<'static> {
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}

impl HttpMetrics {
    pub(super) fn new() -> Result<Self, HttpError> {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("qrng_http_request_duration_seconds".into()),
                DURATION_BUCKETS,
            )
            .map_err(|e| HttpError::Metrics(e.to_string()))?
            .build_recorder();
        let handle = recorder.handle();
        let hist = |endpoint: &str| {
            let key = Key::from_parts(
                "qrng_http_request_duration_seconds",
                vec![Label::new("endpoint", endpoint.to_owned())],
            );
            recorder.register_histogram(&key, &metadata())
        };
        let durations = ENDPOINTS.iter().map(|e| (*e, hist(e))).collect();
        let other_duration = hist("other");
        describe(&recorder);
        let bytes_ok = recorder.register_counter(&response_key(BYTES_PATH, 200), &metadata());
        let responses = HashMap::from([((BYTES_PATH, 200), bytes_ok.clone())]);
        Ok(Self {
            recorder,
            handle,
            durations,
            other_duration,
            responses: std::sync::RwLock::new(responses),
            bytes_ok,
        })
    }

    /// `qrng_http_responses_total{endpoint,status}`, registered once per pair and cached (the hot path
    /// then costs a read lock and an atomic add).
    pub(super) fn response_counter(&self, endpoint: &'static str, status: u16) -> Counter {
        let cached = self
            .responses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(endpoint, status))
            .cloned();
        if let Some(c) = cached {
            return c;
        }
        let c = self.recorder.register_counter(&response_key(endpoint, status), &metadata());
        self.responses
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((endpoint, status), c.clone());
        c
    }

    /// Records one response in `qrng_http_request_duration_seconds{endpoint}` and
    /// `qrng_http_responses_total{endpoint,status}` (`None`: not one of [`ENDPOINTS`]).
    pub(super) fn record(&self, label: Option<&'static str>, status: u16, start: Instant) {
        let elapsed = start.elapsed().as_secs_f64();
        tracing::debug!(status, seconds = elapsed, "response");
        match label.and_then(|l| self.durations.get(l)) {
            Some(h) => h.record(elapsed),
            None => self.other_duration.record(elapsed),
        }
        if label == Some(BYTES_PATH) && status == 200 {
            self.bytes_ok.increment(1);
        } else {
            self.response_counter(label.unwrap_or("other"), status).increment(1);
        }
    }

    /// Folds buffered histogram samples (call about once a second so memory stays flat).
    pub(super) fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text of a scrape: the per-request series plus the devices' and the server's
    /// state now.
    pub(super) fn render(
        &self,
        devices: &[DeviceStatus],
        server: &ServerMetrics,
        egd: &EgdMetrics,
        uptime: Duration,
    ) -> String {
        let r = &self.recorder;
        let m = metadata();
        let dev_key = |name: &'static str, dev: &str| {
            Key::from_parts(name, vec![Label::new("device", dev.to_owned())])
        };
        for d in devices {
            let counter = |name, v| r.register_counter(&dev_key(name, &d.name), &m).absolute(v);
            counter("qrng_entropy_served_bytes_total", d.bytes_served);
            counter("qrng_entropy_published_bytes_total", d.bytes_published);
            counter("qrng_raw_read_bytes_total", d.raw_bytes_read);
            counter("qrng_dropped_bytes_total", d.bytes_dropped);
            counter("qrng_health_alarms_total", d.health_alarms);
            counter("qrng_requests_timed_out_total", d.requests_timed_out);
            counter("qrng_requests_served_total", d.requests_served);
            let gauge = |name, v: f64| r.register_gauge(&dev_key(name, &d.name), &m).set(v);
            gauge("qrng_ring_fill_ratio", d.buffer_fill_ratio);
            gauge(
                "qrng_device_up",
                f64::from(u8::from(matches!(
                    d.health,
                    DeviceState::Ok | DeviceState::Degraded | DeviceState::Starting
                ))),
            );
            gauge(
                "qrng_heartbeat_age_seconds",
                d.heartbeat_age_ms.map_or(f64::NAN, |ms| ms as f64 / 1000.0),
            );
            gauge("qrng_requests_waiting", d.requests_waiting as f64);
            gauge("qrng_entropy_publish_rate_bytes_per_second", d.publish_rate_bytes_per_second);
            if let Some(rate) = nominal_raw_rate(&d.model) {
                gauge("qrng_raw_nominal_rate_bytes_per_second", rate);
            }
            for state in [
                DeviceState::Ok,
                DeviceState::Degraded,
                DeviceState::Starting,
                DeviceState::Failed,
                DeviceState::Stopped,
            ] {
                let key = Key::from_parts(
                    "qrng_device_state",
                    vec![
                        Label::new("device", d.name.clone()),
                        Label::new("state", state.to_string()),
                    ],
                );
                r.register_gauge(&key, &m).set(f64::from(u8::from(d.health == state)));
            }
        }
        r.register_gauge(&Key::from_name("qrng_devices_attached"), &m).set(devices.len() as f64);
        for (i, open) in server.open.iter().enumerate() {
            let key = Key::from_parts(
                "qrng_http_connections_open",
                vec![Label::new("worker", i.to_string())],
            );
            r.register_gauge(&key, &m).set(open.load(Ordering::Relaxed) as f64);
        }
        for (placement, n) in [("local", &server.local), ("balanced", &server.balanced)] {
            let key = Key::from_parts(
                "qrng_http_connections_accepted_total",
                vec![Label::new("placement", placement)],
            );
            r.register_counter(&key, &m).absolute(n.load(Ordering::Relaxed));
        }
        r.register_gauge(&Key::from_name("qrng_http_connections_max"), &m)
            .set(server.max_connections.load(Ordering::Relaxed) as f64);
        r.register_counter(&Key::from_name("qrng_http_connection_cap_reached_total"), &m)
            .absolute(server.cap_reached.load(Ordering::Relaxed));
        let key = Key::from_parts(
            "qrng_http_connections_refused_total",
            vec![Label::new("reason", "client_cap")],
        );
        r.register_counter(&key, &m).absolute(server.client_cap.load(Ordering::Relaxed));
        r.register_counter(&Key::from_name("qrng_http_auth_throttled_total"), &m)
            .absolute(server.auth_throttled.load(Ordering::Relaxed));
        render_egd(r, egd);
        r.register_gauge(&Key::from_name("qrng_uptime_seconds"), &m).set(uptime.as_secs_f64());
        self.handle.render()
    }
}

/// The EGD server's series (`crate::egd::EgdMetrics`).
fn render_egd(r: &PrometheusRecorder, egd: &EgdMetrics) {
    let m = metadata();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    r.register_gauge(&Key::from_name("qrng_egd_connections_open"), &m)
        .set(egd.open.load(Ordering::Relaxed) as f64);
    for (name, v) in [
        ("qrng_egd_connections_accepted_total", load(&egd.accepted)),
        ("qrng_egd_served_bytes_total", load(&egd.served_bytes)),
        ("qrng_egd_client_entropy_ignored_bytes_total", load(&egd.ignored_bytes)),
        ("qrng_egd_unserved_waits_total", load(&egd.unserved)),
        ("qrng_egd_protocol_errors_total", load(&egd.protocol_errors)),
    ] {
        r.register_counter(&Key::from_name(name), &m).absolute(v);
    }
    let key = Key::from_parts(
        "qrng_egd_connections_refused_total",
        vec![Label::new("reason", "max_clients")],
    );
    r.register_counter(&key, &m).absolute(load(&egd.refused));
    for (command, n) in crate::egd::COMMANDS.iter().zip(&egd.requests) {
        let key = Key::from_parts("qrng_egd_requests_total", vec![Label::new("command", *command)]);
        r.register_counter(&key, &m).absolute(load(n));
    }
}

/// The raw rate a card model is built for, in bytes per second, or `None` for a name that does not
/// state it. Quantis models are named after their raw rate in Mbit/s (the names the driver writes
/// into the ring: `pcie-4m`, `pcie-16m`, `module-card-8m`, `pcie-40m`, `pcie-240m`): 4 Mbit/s =
/// 500,000 bytes/s per module (IDQ's figure, `MODULE_BYTES_PER_S` in driver/src/regs.rs) and
/// 20 Mbit/s = 2,500,000 bytes/s per chip (`CHIP_BYTES_PER_S`). The alert "raw rate below the
/// model's" compares `rate(qrng_raw_read_bytes_total)` with it (deploy/prometheus/qrng.rules.yml).
pub(super) fn nominal_raw_rate(model: &str) -> Option<f64> {
    let (_, last) = model.rsplit_once('-')?;
    let mbit: u32 = last.strip_suffix('m')?.parse().ok()?;
    (mbit > 0).then(|| f64::from(mbit) * 1e6 / 8.0)
}

/// HELP texts for the metrics set at scrape time.
fn describe(r: &PrometheusRecorder) {
    let c = |name: &'static str, unit, help: &'static str| {
        r.describe_counter(name.into(), unit, help.into())
    };
    let g = |name: &'static str, unit, help: &'static str| {
        r.describe_gauge(name.into(), unit, help.into())
    };
    c(
        "qrng_entropy_served_bytes_total",
        Some(Unit::Bytes),
        "Random bytes handed to clients (HTTP and FUSE), per device.",
    );
    c(
        "qrng_entropy_published_bytes_total",
        Some(Unit::Bytes),
        "Bytes the driver published into the ring, per device.",
    );
    c(
        "qrng_raw_read_bytes_total",
        Some(Unit::Bytes),
        "Raw bytes the driver read from the card, per device.",
    );
    c(
        "qrng_dropped_bytes_total",
        Some(Unit::Bytes),
        "Bytes the driver dropped (ring full or failed tests), per device.",
    );
    c(
        "qrng_health_alarms_total",
        None,
        "SP 800-90B health-test alarms reported by the driver, per device.",
    );
    c(
        "qrng_requests_timed_out_total",
        None,
        "Requests that waited too long for entropy, per device.",
    );
    c("qrng_requests_served_total", None, "Requests served with entropy, per device.");
    c("qrng_http_responses_total", None, "HTTP responses by endpoint and status.");
    g("qrng_ring_fill_ratio", None, "Fill of the shared-memory ring (0..1), per device.");
    g("qrng_device_up", None, "1 if the device can serve (ok, degraded or starting), else 0.");
    g(
        "qrng_device_state",
        None,
        "1 for the device's current state (ok|degraded|starting|failed|stopped).",
    );
    g(
        "qrng_heartbeat_age_seconds",
        Some(Unit::Seconds),
        "Age of the driver's heartbeat, per device.",
    );
    g("qrng_requests_waiting", None, "Requests queued for entropy, per device.");
    g(
        "qrng_entropy_publish_rate_bytes_per_second",
        None,
        "Bytes per second the driver published (last second), per device.",
    );
    g(
        "qrng_raw_nominal_rate_bytes_per_second",
        None,
        "Raw bytes per second the card model is built for (from its name), per device.",
    );
    g("qrng_devices_attached", None, "Rings attached.");
    g("qrng_http_connections_open", None, "Open HTTP connections, per worker thread.");
    r.describe_counter(
        "qrng_http_connections_accepted_total".into(),
        None,
        "Accepted HTTP connections by placement: local = the worker pinned to the CPU the \
         connection's packets arrive on, balanced = the least loaded worker."
            .into(),
    );
    g("qrng_http_connections_max", None, "The global HTTP connection cap in force.");
    c(
        "qrng_http_connection_cap_reached_total",
        None,
        "Times every connection slot was taken and accepting paused until one closed.",
    );
    c(
        "qrng_http_connections_refused_total",
        None,
        "Connections refused by reason: client_cap = their client address was at its cap.",
    );
    c(
        "qrng_http_auth_throttled_total",
        None,
        "Requests answered 429 without a token check: their client failed authentication too often.",
    );
    g("qrng_egd_connections_open", None, "EGD clients connected now.");
    c("qrng_egd_connections_accepted_total", None, "EGD clients accepted.");
    c(
        "qrng_egd_connections_refused_total",
        None,
        "EGD clients closed as they connected, by reason: max_clients = --egd-max-clients were connected.",
    );
    c("qrng_egd_requests_total", None, "EGD requests by command.");
    c("qrng_egd_served_bytes_total", Some(Unit::Bytes), "Random bytes sent to EGD clients.");
    c(
        "qrng_egd_client_entropy_ignored_bytes_total",
        Some(Unit::Bytes),
        "Bytes EGD clients offered with the write-entropy command; discarded, never served.",
    );
    c(
        "qrng_egd_unserved_waits_total",
        None,
        "EGD reads that found no device able to serve: a blocking read waited on, a non-blocking one got 0 bytes.",
    );
    c(
        "qrng_egd_protocol_errors_total",
        None,
        "EGD connections closed for an unknown command byte.",
    );
    g("qrng_uptime_seconds", Some(Unit::Seconds), "Seconds since the bridge started.");
    r.describe_histogram(
        "qrng_http_request_duration_seconds".into(),
        Some(Unit::Seconds),
        "HTTP request handling time by endpoint (until the response head).".into(),
    );
}

#[cfg(test)]
mod tests {
    use super::nominal_raw_rate;

    #[test]
    fn nominal_raw_rate_follows_the_model_name() {
        assert_eq!(nominal_raw_rate("pcie-4m"), Some(500_000.0));
        assert_eq!(nominal_raw_rate("pcie-16m"), Some(2_000_000.0));
        assert_eq!(nominal_raw_rate("module-card-8m"), Some(1_000_000.0));
        assert_eq!(nominal_raw_rate("pcie-40m"), Some(5_000_000.0));
        assert_eq!(nominal_raw_rate("pcie-240m"), Some(30_000_000.0));
        for other in ["", "usb", "pcie-", "pcie-0m", "pcie-xm", "pcie-16"] {
            assert_eq!(nominal_raw_rate(other), None, "{other:?}");
        }
    }
}
