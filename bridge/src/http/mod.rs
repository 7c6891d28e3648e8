//! The HTTP API (axum): random values, devices, health, Prometheus metrics and the OpenAPI document.
//!
//! [`router`] builds everything from an [`AppState`], so tests drive it with `oneshot` and no socket;
//! [`serve`] runs it on a listener until a shutdown future resolves (SIGTERM in the binary).
//! Endpoints, parameters, limits and error codes: docs/api.md (and `/api/v1/openapi.json`).
//! Random bytes never reach a log: request logs carry the method, path, query and status only.

mod error;
mod lent;
mod limit;
mod openapi;
mod ops;
mod random;
pub mod server;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics::{Counter, Histogram, Key, Label, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusHandle, PrometheusRecorder};

pub use error::ApiError;
pub use limit::RateLimit;
pub use random::{hex_encode, unit_float, uuid_v4, IntRange, DEVICE_HEADER, SOURCE_HEADER};

use crate::dispenser::{Delivery, Dispenser, Entropy, Served};

/// Errors setting up the HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("failed to read bearer tokens from {path}")]
    Tokens {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bearer token file {path} holds no token")]
    NoTokens { path: std::path::PathBuf },
    #[error("failed to configure metrics: {0}")]
    Metrics(String),
    #[error("failed to serve HTTP")]
    Serve(#[source] std::io::Error),
}

/// HTTP settings (from the command line, see `Config`).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest `length` for /random/bytes (413 above).
    pub max_bytes: usize,
    /// Largest `count` for integers, floats and UUIDs (413 above).
    pub max_count: usize,
    /// How long a request waits for entropy before 503.
    pub wait: Duration,
    /// Retry-After seconds on 503.
    pub retry_after: u64,
    /// Per-client (IP address) rate limit on the random endpoints.
    pub rate_limit: Option<RateLimit>,
    /// Accepted bearer tokens; None = no authentication.
    pub tokens: Option<Vec<String>>,
    /// HTTP worker threads (0 = one per CPU); see [`server`].
    pub threads: usize,
    /// Pin the workers to CPUs and give each connection to the worker on its CPU, when there is
    /// one worker per allowed CPU (see [`server`]).
    pub pin: bool,
    /// How long shutdown waits for open connections before closing them.
    pub drain: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            max_count: 10_000,
            wait: Duration::from_secs(2),
            retry_after: 1,
            rate_limit: None,
            tokens: None,
            threads: 0,
            pin: true,
            drain: server::DRAIN_LIMIT,
        }
    }
}

/// Reads bearer tokens: one per line; blank lines and lines starting with `#` are ignored.
pub fn read_tokens(path: &std::path::Path) -> Result<Vec<String>, HttpError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| HttpError::Tokens { path: path.to_owned(), source })?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        return Err(HttpError::NoTokens { path: path.to_owned() });
    }
    Ok(tokens)
}

/// The hot endpoint (see [`Entry`]).
const BYTES_PATH: &str = "/api/v1/random/bytes";

/// Endpoint labels for `request_duration_seconds{endpoint}`: the route templates.
const ENDPOINTS: &[&str] = &[
    BYTES_PATH,
    "/api/v1/random/integers",
    "/api/v1/random/floats",
    "/api/v1/random/uuid",
    "/api/v1/devices",
    "/api/v1/openapi.json",
    "/API/jsonI.php",
    "/health",
    "/metrics",
];

/// Histogram buckets for request durations, seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

struct Inner {
    dispenser: Dispenser,
    cfg: HttpConfig,
    started: Instant,
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    durations: HashMap<&'static str, Histogram>,
    other_duration: Histogram,
    responses: std::sync::RwLock<HashMap<(&'static str, u16), Counter>>,
    limiter: Option<limit::Limiter>,
    /// `http_responses_total{endpoint="/api/v1/random/bytes",status="200"}`, the one counter of
    /// the hot path, held directly (it is also in `responses`).
    bytes_ok: Counter,
    /// Open connections per HTTP worker and connection placement (see [`server`]).
    server: Arc<server::ServerStats>,
}

/// Shared state of the router; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("cfg", &self.0.cfg).finish_non_exhaustive()
    }
}

/// The key of `http_responses_total{endpoint,status}`.
fn response_key(endpoint: &'static str, status: u16) -> Key {
    Key::from_parts(
        "http_responses_total",
        vec![Label::new("endpoint", endpoint), Label::new("status", status.to_string())],
    )
}

fn metadata() -> metrics::Metadata<'static> {
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}

impl AppState {
    /// A state with its own (local, not process-global) Prometheus recorder.
    pub fn new(dispenser: Dispenser, cfg: HttpConfig) -> Result<Self, HttpError> {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("request_duration_seconds".into()),
                DURATION_BUCKETS,
            )
            .map_err(|e| HttpError::Metrics(e.to_string()))?
            .build_recorder();
        let handle = recorder.handle();
        let hist = |endpoint: &str| {
            let key = Key::from_parts(
                "request_duration_seconds",
                vec![Label::new("endpoint", endpoint.to_owned())],
            );
            recorder.register_histogram(&key, &metadata())
        };
        let durations = ENDPOINTS.iter().map(|e| (*e, hist(e))).collect();
        let other_duration = hist("other");
        ops::describe(&recorder);
        let limiter = cfg.rate_limit.map(limit::Limiter::new);
        let server = Arc::new(server::ServerStats::new(server::worker_count(cfg.threads)));
        let bytes_ok = recorder.register_counter(&response_key(BYTES_PATH, 200), &metadata());
        let responses = HashMap::from([((BYTES_PATH, 200), bytes_ok.clone())]);
        Ok(Self(Arc::new(Inner {
            dispenser,
            cfg,
            started: Instant::now(),
            recorder,
            handle,
            durations,
            other_duration,
            responses: std::sync::RwLock::new(responses),
            limiter,
            bytes_ok,
            server,
        })))
    }

    pub fn cfg(&self) -> &HttpConfig {
        &self.0.cfg
    }

    pub fn dispenser(&self) -> &Dispenser {
        &self.0.dispenser
    }

    /// Serves `n` bytes within the configured wait, mapping errors to HTTP.
    async fn serve(
        &self,
        device: Option<&str>,
        n: usize,
        delivery: Delivery,
    ) -> Result<Served, ApiError> {
        self.0
            .dispenser
            .serve(device, n, self.0.cfg.wait, delivery)
            .await
            .map_err(|e| ApiError::from_dispense(e, self.0.cfg.retry_after))
    }

    /// [`Self::serve`], always copied (every answer but large binary ones).
    async fn take(&self, device: Option<&str>, n: usize) -> Result<Entropy, ApiError> {
        match self.serve(device, n, Delivery::Copy).await? {
            Served::Copied(e) => Ok(e),
            Served::Lent(_) => unreachable!("Delivery::Copy never lends"),
        }
    }

    /// `http_responses_total{endpoint,status}`, registered once per pair and cached (the hot path
    /// then costs a read lock and an atomic add).
    fn response_counter(&self, endpoint: &'static str, status: u16) -> Counter {
        let cached = self
            .0
            .responses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(endpoint, status))
            .cloned();
        if let Some(c) = cached {
            return c;
        }
        let c = self.0.recorder.register_counter(&response_key(endpoint, status), &metadata());
        self.0
            .responses
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((endpoint, status), c.clone());
        c
    }

    /// Records one response in `request_duration_seconds{endpoint}` and
    /// `http_responses_total{endpoint,status}` (`None`: not one of [`ENDPOINTS`]).
    fn record(&self, label: Option<&'static str>, status: u16, start: Instant) {
        let elapsed = start.elapsed().as_secs_f64();
        tracing::debug!(status, seconds = elapsed, "response");
        match label.and_then(|l| self.0.durations.get(l)) {
            Some(h) => h.record(elapsed),
            None => self.0.other_duration.record(elapsed),
        }
        if label == Some(BYTES_PATH) && status == 200 {
            self.0.bytes_ok.increment(1);
        } else {
            self.response_counter(label.unwrap_or("other"), status).increment(1);
        }
    }

    /// Folds buffered histogram samples (call about once a second so memory stays flat).
    pub fn run_upkeep(&self) {
        self.0.handle.run_upkeep();
        if let Some(l) = &self.0.limiter {
            l.purge();
        }
    }
}

/// Records `request_duration_seconds{endpoint}` and `http_responses_total{endpoint,status}`.
/// A plain tower layer rather than `middleware::from_fn`: on every request that would clone the
/// boxed inner route and box a `Next` besides the future; this boxes the future only.
#[derive(Clone)]
struct TrackLayer(AppState);

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track { inner, state: self.0.clone() }
    }
}

#[derive(Clone)]
struct Track<S> {
    inner: S,
    state: AppState,
}

impl<S> tower::Service<Request> for Track<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // Every route is a static path, so the request path names the endpoint; anything else is
        // "other" (unbounded label values from client paths would let clients grow the registry).
        let label = ENDPOINTS.iter().find(|k| **k == req.uri().path()).copied();
        // Method, path and query only: never a response body, so no random byte reaches a log.
        tracing::debug!(method = %req.method(), uri = %req.uri(), "request");
        let start = Instant::now();
        let fut = self.inner.call(req);
        let s = self.state.clone();
        Box::pin(async move {
            let Ok(resp) = fut.await;
            s.record(label, resp.status().as_u16(), start);
            Ok(resp)
        })
    }
}

/// Checks `Authorization: Bearer <token>` when tokens are configured.
async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(tokens) = &s.0.cfg.tokens {
        let presented = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let ok = presented.is_some_and(|p| {
            // Compare against every token without early exit, so timing does not reveal a prefix.
            tokens
                .iter()
                .fold(false, |acc, t| acc | limit::constant_time_eq(t.as_bytes(), p.as_bytes()))
        });
        if !ok {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// Applies the per-client rate limit when configured.
async fn rate_limit(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(l) = &s.0.limiter {
        let ip = req.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        if let Err(retry_after) = l.check(ip) {
            return ApiError::RateLimited { retry_after }.into_response();
        }
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound { code: "not_found", message: "no such endpoint".into() }
}

/// The whole API. Authentication and rate limiting are only layered in when configured, so the
/// default hot path carries no middleware it does not use.
pub fn router(state: AppState) -> Router {
    let mut random = Router::new()
        .route(BYTES_PATH, get(random::bytes))
        .route("/api/v1/random/integers", get(random::integers))
        .route("/api/v1/random/floats", get(random::floats))
        .route("/api/v1/random/uuid", get(random::uuid))
        .route("/API/jsonI.php", get(random::anu));
    if state.0.limiter.is_some() {
        random = random.layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    }
    random = random.route("/api/v1/devices", get(ops::devices));
    if state.0.cfg.tokens.is_some() {
        random = random.layer(middleware::from_fn_with_state(state.clone(), auth));
    }
    Router::new()
        .merge(random)
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/api/v1/openapi.json", get(openapi::document))
        .fallback(not_found)
        .layer(TrackLayer(state.clone()))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| handler_panicked()))
        .with_state(state)
}

/// The answer to a request whose handler panicked (the router's layer and [`Entry`] alike).
fn handler_panicked() -> Response {
    tracing::error!("a request handler panicked");
    ApiError::Internal.into_response()
}

/// What every HTTP connection calls for each request ([`server`]). `GET /api/v1/random/bytes`,
/// the endpoint that carries the traffic, goes straight to its handler when no middleware is
/// configured (no bearer tokens, no rate limit); everything else goes through the axum [`router`].
/// The direct call does what the router's layers do for it (request log, the two metrics, a panic
/// turned into a 500) and answers identically (tested), without the per-request cost of routing:
/// the route lookup, a boxed clone of the route's service, and the boxed futures of the layers
/// (measured: about 20 % more 32-byte requests per second; docs/architecture.md, Performance).
#[derive(Clone, Debug)]
pub struct Entry {
    state: AppState,
    router: Router,
    fast: bool,
}

impl Entry {
    pub fn new(state: AppState) -> Self {
        let fast = state.0.limiter.is_none() && state.0.cfg.tokens.is_none();
        Self { router: router(state.clone()), state, fast }
    }

    /// Answers one request.
    pub async fn handle<B>(self, req: axum::http::Request<B>) -> Response
    where
        B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        if self.fast && req.method() == axum::http::Method::GET && req.uri().path() == BYTES_PATH {
            return self.bytes(req.uri().clone()).await;
        }
        tower::ServiceExt::oneshot(self.router, req).await.unwrap_or_else(|e| match e {})
    }

    async fn bytes(self, uri: axum::http::Uri) -> Response {
        use futures_util::FutureExt as _;
        // Method, path and query only, as in `Track`: never a body.
        tracing::debug!(method = "GET", uri = %uri, "request");
        let start = Instant::now();
        let answer = std::panic::AssertUnwindSafe(random::bytes(State(self.state.clone()), uri))
            .catch_unwind()
            .await;
        let mut resp = match answer {
            Ok(r) => r.into_response(),
            Err(_) => handler_panicked(),
        };
        // As axum's routes do (hyper would add the same header on the wire).
        if let Some(n) = axum::body::HttpBody::size_hint(resp.body()).exact() {
            resp.headers_mut().entry(axum::http::header::CONTENT_LENGTH).or_insert(n.into());
        }
        self.state.record(Some(BYTES_PATH), resp.status().as_u16(), start);
        resp
    }
}

/// Serves `router(state)` on `listener` until `shutdown` resolves, then drains open requests
/// (see [`server`]). Runs the metrics upkeep once a second meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let upkeep_state = state.clone();
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            upkeep_state.run_upkeep();
        }
    });
    let opts = server::RunOptions {
        connect_info: state.0.limiter.is_some(),
        drain: state.0.cfg.drain,
        pin: state.0.cfg.pin,
    };
    let stats = Arc::clone(&state.0.server);
    let result = server::run(listener, Entry::new(state), stats, opts, shutdown).await;
    upkeep.abort();
    result
}

#[cfg(test)]
mod tests;
