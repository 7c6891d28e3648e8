//! The HTTP API (axum): random values, devices, health, Prometheus metrics and the OpenAPI document.
//!
//! [`router`] builds everything from an [`AppState`], so tests drive it with `oneshot` and no socket;
//! [`serve`] runs it on a listener until a shutdown future resolves (SIGTERM in the binary).
//! Endpoints, parameters, limits and error codes: docs/api.md (and `/api/v1/openapi.json`).
//! Random bytes never reach a log: request logs carry the method, path, query and status only.

mod accept;
mod auth;
mod beacon;
mod compress;
mod cors;
mod error;
#[cfg(feature = "fuzzing")]
mod fuzz;
mod lent;
mod limit;
mod mcp;
mod metrics;
mod openapi;
mod ops;
mod pollen;
mod random;
pub mod server;

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
use axum::routing::{get, post};
use axum::Router;

pub use auth::FailureLimit;
pub use cors::CorsOrigins;
pub use error::ApiError;
#[cfg(feature = "fuzzing")]
pub use fuzz::fuzz_query;
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
    #[error("{0}")]
    Config(String),
    #[error("failed to configure metrics: {0}")]
    Metrics(String),
    #[error("failed to serve HTTP")]
    Serve(#[source] std::io::Error),
    #[error(
        "{connections} HTTP connections (--http-max-connections) + {reserved} reserved \
         descriptors (--http-reserved-fds) + {open} already open need an open-file limit of \
         {need}, but RLIMIT_NOFILE is {soft} (hard {hard}): raise LimitNOFILE= in the systemd \
         unit (or ulimit -n), or lower --http-max-connections"
    )]
    Descriptors {
        connections: usize,
        reserved: usize,
        open: usize,
        need: u64,
        soft: u64,
        hard: u64,
    },
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
    /// Failed token checks allowed per client and window before 429; None = no throttle.
    pub auth_failures: Option<FailureLimit>,
    /// Connection caps, timeouts and the head limit (see [`server::limits`]).
    pub conn: server::ConnLimits,
    /// HTTP worker threads (0 = one per CPU); see [`server`].
    pub threads: usize,
    /// Pin the workers to CPUs and give each connection to the worker on its CPU, when there is
    /// one worker per allowed CPU (see [`server`]).
    pub pin: bool,
    /// How long shutdown waits for open connections before closing them.
    pub drain: Duration,
    /// `Host` values /mcp accepts (see [`mcp::service`]); empty accepts any.
    pub mcp_allowed_hosts: Vec<String>,
    /// Origins allowed to call the API from a browser (`--cors-origin`); None = no CORS headers.
    pub cors: Option<CorsOrigins>,
    /// The randomness beacon whose pulses `/beacon/2.0/...` serves (see [`beacon`]); None = no routes.
    pub beacon: Option<crate::beacon::Beacon>,
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
            auth_failures: Some(FailureLimit::default()),
            conn: server::ConnLimits::default(),
            threads: 0,
            pin: true,
            drain: server::DRAIN_LIMIT,
            mcp_allowed_hosts: ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec(),
            cors: None,
            beacon: None,
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

/// Endpoint labels for `qrng_http_request_duration_seconds{endpoint}`: the route templates.
const ENDPOINTS: &[&str] = &[
    BYTES_PATH,
    "/api/v1/random/integers",
    "/api/v1/random/floats",
    "/api/v1/random/uuid",
    "/api/v1/devices",
    "/api/v1/openapi.json",
    "/API/jsonI.php",
    "/",
    "/pollen",
    mcp::MCP_PATH,
    "/health",
    "/metrics",
];

struct Inner {
    dispenser: Dispenser,
    cfg: HttpConfig,
    started: Instant,
    metrics: metrics::HttpMetrics,
    limiter: Option<limit::Limiter>,
    /// Failed-authentication throttle (with tokens and a failure limit configured).
    auth_throttle: Option<auth::Throttle>,
    /// Open connections per HTTP worker and connection placement (see [`server`]).
    server: Arc<metrics::ServerMetrics>,
    /// The EGD server's counters, rendered on /metrics with the rest (`crate::egd`).
    egd: Arc<crate::egd::EgdMetrics>,
}

/// Shared state of the router; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("cfg", &self.0.cfg).finish_non_exhaustive()
    }
}

impl AppState {
    /// A state with its own (local, not process-global) Prometheus recorder.
    pub fn new(dispenser: Dispenser, cfg: HttpConfig) -> Result<Self, HttpError> {
        let metrics = metrics::HttpMetrics::new()?;
        let limiter = cfg.rate_limit.map(limit::Limiter::new);
        let auth_throttle = cfg.tokens.as_ref().and(cfg.auth_failures).map(auth::Throttle::new);
        let server = Arc::new(metrics::ServerMetrics::new(server::worker_count(cfg.threads)));
        Ok(Self(Arc::new(Inner {
            dispenser,
            cfg,
            started: Instant::now(),
            metrics,
            limiter,
            auth_throttle,
            server,
            egd: Arc::default(),
        })))
    }

    pub fn cfg(&self) -> &HttpConfig {
        &self.0.cfg
    }

    pub fn dispenser(&self) -> &Dispenser {
        &self.0.dispenser
    }

    /// The counters the EGD server updates and /metrics renders.
    pub fn egd_metrics(&self) -> Arc<crate::egd::EgdMetrics> {
        Arc::clone(&self.0.egd)
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
        self.0
            .dispenser
            .take(device, n, self.0.cfg.wait)
            .await
            .map_err(|e| ApiError::from_dispense(e, self.0.cfg.retry_after))
    }

    /// Records one response in the request metrics.
    fn record(&self, label: Option<&'static str>, status: u16, start: Instant) {
        self.0.metrics.record(label, status, start);
    }

    /// Folds buffered histogram samples (call about once a second so memory stays flat).
    pub fn run_upkeep(&self) {
        self.0.metrics.run_upkeep();
        if let Some(l) = &self.0.limiter {
            l.purge();
        }
        if let Some(t) = &self.0.auth_throttle {
            t.purge();
        }
    }
}

/// Records `qrng_http_request_duration_seconds{endpoint}` and `qrng_http_responses_total{endpoint,status}`.
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
        let label = begin_request(req.method(), req.uri());
        let allow = allowed_methods(req.uri().path());
        let state = self.state.clone();
        let origin = cors_origin(&state, req.headers());
        if let Some(cors) = &state.0.cfg.cors {
            if CorsOrigins::is_preflight(req.method(), req.headers()) {
                let resp = cors.preflight(origin.as_ref());
                return Box::pin(async move { Ok(track(state, label, async { resp }).await) });
            }
        }
        // A handler may panic before its future exists; that is caught here, one in its future
        // by `track`.
        let fut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.inner.call(req)));
        Box::pin(async move {
            let finish_state = state.clone();
            let answer = async move {
                let resp = match fut {
                    Ok(fut) => fut.await.unwrap_or_else(|e| match e {}),
                    Err(_) => handler_panicked(),
                };
                finish(&finish_state, origin.as_ref(), allow, resp)
            };
            Ok(track(state, label, answer).await)
        })
    }
}

/// Logs a request (method, path and query only: never a body, so no random byte reaches a log)
/// and names its endpoint for the metrics. Every route is a static path, so the request path
/// names the endpoint; anything else is "other" (unbounded label values from client paths would
/// let clients grow the registry).
fn begin_request(method: &axum::http::Method, uri: &axum::http::Uri) -> Option<&'static str> {
    tracing::debug!(method = %method, uri = %uri, "request");
    ENDPOINTS.iter().find(|k| **k == uri.path()).copied()
}

/// The cross-cutting concerns of every answer, in one place for the router's routes
/// ([`TrackLayer`]) and [`Entry`]'s direct call alike: a panic in the handler becomes a 500,
/// a body of known size gets its `Content-Length` (as hyper would add on the wire), and the
/// request metrics are recorded.
async fn track(
    state: AppState,
    label: Option<&'static str>,
    answer: impl Future<Output = Response>,
) -> Response {
    use futures_util::FutureExt as _;
    let start = Instant::now();
    let mut resp = std::panic::AssertUnwindSafe(answer)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| handler_panicked());
    if let Some(n) = axum::body::HttpBody::size_hint(resp.body()).exact() {
        resp.headers_mut().entry(axum::http::header::CONTENT_LENGTH).or_insert(n.into());
    }
    state.record(label, resp.status().as_u16(), start);
    resp
}

/// The request's `Origin`, when CORS is configured (no work otherwise).
fn cors_origin(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Option<axum::http::HeaderValue> {
    state.0.cfg.cors.as_ref().and_then(|_| headers.get(axum::http::header::ORIGIN).cloned())
}

/// The paths answered to POST only (every other route is GET and HEAD).
const POST_PATHS: &[&str] = &["/", "/pollen", mcp::MCP_PATH];

/// The `Allow` value of a 405 on `path`. axum adds its own `Allow` only on its way out, after
/// this layer, so the layer names the methods itself.
fn allowed_methods(path: &str) -> &'static str {
    if POST_PATHS.contains(&path) {
        "POST"
    } else {
        "GET,HEAD"
    }
}

/// What every routed answer gets on its way out: a 405 (axum's, with no body) gets the JSON
/// error body and `Allow` (`allow` unless the answer names its own), and the CORS headers are
/// added when configured.
fn finish(
    state: &AppState,
    origin: Option<&axum::http::HeaderValue>,
    allow: &'static str,
    resp: Response,
) -> Response {
    let mut resp = if resp.status() == axum::http::StatusCode::METHOD_NOT_ALLOWED {
        let allow = resp
            .headers()
            .get(axum::http::header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(allow)
            .to_owned();
        ApiError::MethodNotAllowed { allow }.into_response()
    } else {
        resp
    };
    if let Some(cors) = &state.0.cfg.cors {
        cors.decorate(origin, &mut resp);
    }
    resp
}

/// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
/// request message that lacks a Host header field". hyper does not check it. HTTP/1.0 has no
/// such rule, and HTTP/2 carries the authority in `:authority`.
fn lacks_host<B>(req: &axum::http::Request<B>) -> bool {
    req.version() == axum::http::Version::HTTP_11
        && !req.headers().contains_key(axum::http::header::HOST)
}

/// The client's address, recorded by the server when a per-client limit is configured (or by
/// `MockConnectInfo` in router tests).
fn peer(req: &Request) -> Option<SocketAddr> {
    let e = req.extensions();
    let recorded = e.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0);
    #[cfg(test)]
    let recorded = recorded.or_else(|| {
        e.get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>().map(|m| m.0)
    });
    recorded
}

/// Applies the per-client rate limit when configured.
async fn rate_limit(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(l) = &s.0.limiter {
        let ip = peer(&req).map(|p| p.ip());
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
        .route("/API/jsonI.php", get(random::anu))
        .route("/", post(pollen::pollen))
        .route("/pollen", post(pollen::pollen))
        .route_service(
            mcp::MCP_PATH,
            mcp::router_service(state.clone(), &state.0.cfg.mcp_allowed_hosts),
        );
    if state.0.limiter.is_some() {
        random = random.layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    }
    random = random.route("/api/v1/devices", get(ops::devices).layer(compress::layer()));
    if state.0.cfg.tokens.is_some() {
        random = random.layer(middleware::from_fn_with_state(state.clone(), auth::auth));
    }
    Router::new()
        .merge(random)
        .route("/health", get(ops::health).layer(compress::layer()))
        .route("/metrics", get(ops::metrics).layer(compress::layer()))
        .route("/api/v1/openapi.json", get(openapi::document).layer(compress::layer()))
        .merge(beacon::routes(&state))
        .fallback(not_found)
        .layer(TrackLayer(state.clone()))
        .with_state(state)
}

/// The answer to a request whose handler panicked (the router's layer and [`Entry`] alike).
fn handler_panicked() -> Response {
    tracing::error!("a request handler panicked");
    ApiError::Internal.into_response()
}

/// What every HTTP connection calls for each request ([`server`]). `GET /api/v1/random/bytes`,
/// the endpoint that carries the traffic, goes straight to its handler when no middleware is
/// configured (no bearer tokens, no rate limit), inside the same [`track`] as every route of the
/// axum [`router`], which serves everything else: one request log, one panic handler, one pair
/// of metrics for both. The direct call saves the per-request cost of routing (the route lookup,
/// a boxed clone of the route's service, the boxed futures of the layers); figures in
/// bridge/bench/README.md.
///
/// Before either, an HTTP/1.1 request without `Host` is refused with 400 (RFC 9112 §3.2): every
/// server front end (HTTP/1.1, HTTP/2, any listener) calls this, so the check is made once
/// here, for every version, and HTTP/2 requests (`:authority`) pass.
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
        if lacks_host(&req) {
            let label = begin_request(req.method(), req.uri());
            return track(self.state, label, async { ApiError::MissingHost.into_response() }).await;
        }
        if self.fast && req.method() == axum::http::Method::GET && req.uri().path() == BYTES_PATH {
            let accept = accept::Accept::from_headers(req.headers());
            let origin = cors_origin(&self.state, req.headers());
            return self.bytes(req.uri().clone(), accept, origin).await;
        }
        tower::ServiceExt::oneshot(self.router, req).await.unwrap_or_else(|e| match e {})
    }

    async fn bytes(
        self,
        uri: axum::http::Uri,
        accept: accept::Accept,
        origin: Option<axum::http::HeaderValue>,
    ) -> Response {
        let label = begin_request(&axum::http::Method::GET, &uri);
        let state = self.state.clone();
        track(self.state, label, async move {
            let resp = random::bytes(State(state.clone()), uri, accept).await.into_response();
            finish(&state, origin.as_ref(), "GET,HEAD", resp)
        })
        .await
    }
}

/// Serves `router(state)` on `listener` until `shutdown` resolves, then drains open requests
/// (see [`server`]). Runs the metrics upkeep once a second meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    serve_on(vec![listener.into()], state, shutdown).await
}

/// [`serve`] on several listeners (TCP or Unix sockets, plain HTTP or HTTPS).
pub async fn serve_on(
    listeners: Vec<server::Listener>,
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
        connect_info: state.0.limiter.is_some() || state.0.auth_throttle.is_some(),
        drain: state.0.cfg.drain,
        pin: state.0.cfg.pin,
        limits: state.0.cfg.conn.clone(),
    };
    let stats = Arc::clone(&state.0.server);
    let result = server::run(listeners, Entry::new(state), stats, opts, shutdown).await;
    upkeep.abort();
    result
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod conform_tests;
