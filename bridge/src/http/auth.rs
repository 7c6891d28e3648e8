//! Bearer-token authentication (`--tokens-file`) and the throttle on failed attempts.
//!
//! The scheme name is matched case-insensitively (RFC 9110 §11.1, RFC 6750 §2.1), with one or
//! more spaces before the token (RFC 9110 §11.6.2: `auth-scheme 1*SP token68`). Tokens are
//! compared in constant time.
//!
//! A client (address; an IPv6 client's /64) whose checks failed `max` times within `window` is
//! answered 429 with `Retry-After`, without looking at its token, until that window ends: guessing
//! tokens costs a window per `max` guesses. The window starts at the client's first failure; a
//! success does not reset it (a client that holds a token has nothing to guess, and a reset would
//! let guesses from behind a shared address go on). Memory is bounded like the rate limiter's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::limit::constant_time_eq;
use super::server::limits::client_key;
use super::{ApiError, AppState};

/// Failed token checks allowed per client within a window (`--auth-max-failures`,
/// `--auth-failure-window-secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    pub max: u32,
    pub window: Duration,
}

impl Default for FailureLimit {
    /// 10 failures a minute: far more than a person mistyping or a client with a stale token
    /// makes, and 14,400 guesses a day per address against tokens of 128 bits or more.
    fn default() -> Self {
        Self { max: 10, window: Duration::from_secs(60) }
    }
}

/// Most clients tracked at once; past it, expired entries are dropped, then all (as the rate
/// limiter does), so a flood of source addresses cannot grow memory without bound.
const MAX_CLIENTS: usize = 100_000;

/// Failed checks per client: (failures, start of the window).
#[derive(Debug)]
pub(super) struct Throttle {
    limit: FailureLimit,
    failures: Mutex<HashMap<Option<IpAddr>, (u32, Instant)>>,
    /// Entries in `failures`: with none, a request needs no lock.
    tracked: AtomicUsize,
}

impl Throttle {
    pub(super) fn new(limit: FailureLimit) -> Self {
        Self { limit, failures: Mutex::default(), tracked: AtomicUsize::new(0) }
    }

    /// Seconds until `client` may try again, if it is throttled now.
    fn blocked(&self, client: Option<IpAddr>, now: Instant) -> Option<u64> {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let m = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let &(n, start) = m.get(&client)?;
        let left = self.limit.window.checked_sub(now.saturating_duration_since(start))?;
        (n >= self.limit.max && !left.is_zero()).then(|| left.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Counts a failed check of `client`.
    fn failed(&self, client: Option<IpAddr>, now: Instant) {
        let window = self.limit.window;
        let mut m = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if m.len() >= MAX_CLIENTS && !m.contains_key(&client) {
            m.retain(|_, (_, t)| now.saturating_duration_since(*t) < window);
            if m.len() >= MAX_CLIENTS {
                m.clear();
            }
        }
        let e = m.entry(client).or_insert((0, now));
        if now.saturating_duration_since(e.1) >= window {
            *e = (0, now);
        }
        e.0 = e.0.saturating_add(1);
        self.tracked.store(m.len(), Ordering::Relaxed);
    }

    /// Forgets clients whose window has ended.
    pub(super) fn purge(&self) {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return;
        }
        let now = Instant::now();
        let mut m = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        m.retain(|_, (_, t)| now.saturating_duration_since(*t) < self.limit.window);
        self.tracked.store(m.len(), Ordering::Relaxed);
    }
}

/// The token of an `Authorization` value in the `Bearer` scheme (any case), if it is one.
pub(super) fn bearer_token(value: &str) -> Option<&str> {
    // The field value's surrounding whitespace (OWS) is not part of it.
    let value = value.trim_matches([' ', '\t']);
    let (scheme, rest) = value.split_once(' ')?;
    let token = rest.trim_start_matches(' ');
    // token68 has no whitespace.
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains([' ', '\t']))
        .then_some(token)
}

/// Checks `Authorization: Bearer <token>` when tokens are configured (see the module docs).
pub(super) async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(tokens) = &s.0.cfg.tokens else { return next.run(req).await };
    let throttle = s.0.auth_throttle.as_ref();
    let client = throttle.and_then(|_| super::peer(&req)).map(|p| client_key(p.ip()));
    if let Some(t) = throttle {
        if let Some(retry_after) = t.blocked(client, Instant::now()) {
            s.0.server.auth_throttled.fetch_add(1, Ordering::Relaxed);
            return ApiError::AuthThrottled { retry_after }.into_response();
        }
    }
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let ok = presented.is_some_and(|p| {
        // Compare against every token without early exit, so timing does not reveal a prefix.
        tokens.iter().fold(false, |acc, t| acc | constant_time_eq(t.as_bytes(), p.as_bytes()))
    });
    if !ok {
        if let Some(t) = throttle {
            t.failed(client, Instant::now());
        }
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::StatusCode;
    use std::net::SocketAddr;
    use tower::ServiceExt as _;

    use crate::dispenser::{Dispenser, DispenserConfig};
    use crate::http::{router, HttpConfig};

    /// The API with one token and `limit`, no devices (`/api/v1/devices` answers 200 when
    /// authorized).
    fn state(limit: Option<FailureLimit>) -> AppState {
        let cfg = HttpConfig {
            tokens: Some(vec!["s3cret".into()]),
            auth_failures: limit,
            ..HttpConfig::default()
        };
        AppState::new(Dispenser::new(DispenserConfig::default()), cfg).expect("state")
    }

    /// `GET /api/v1/devices` from `client` with `authorization`: status, Retry-After, error code.
    async fn devices(
        s: &AppState,
        client: [u8; 4],
        authorization: Option<&str>,
    ) -> (StatusCode, Option<String>, String) {
        let app = router(s.clone()).layer(MockConnectInfo(SocketAddr::from((client, 1234))));
        let mut req = axum::http::Request::get("/api/v1/devices");
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let resp =
            app.oneshot(req.body(Body::empty()).expect("request")).await.expect("infallible");
        let status = resp.status();
        let retry =
            resp.headers().get("retry-after").map(|v| v.to_str().expect("ascii").to_owned());
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        (status, retry, v["error"]["code"].as_str().unwrap_or_default().to_owned())
    }

    #[tokio::test]
    async fn any_case_of_the_bearer_scheme_is_accepted() {
        let s = state(None);
        for a in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "Bearer   s3cret"] {
            assert_eq!(devices(&s, [192, 0, 2, 1], Some(a)).await.0, StatusCode::OK, "{a:?}");
        }
        for a in ["Basic s3cret", "bearer other", "bearers3cret"] {
            assert_eq!(devices(&s, [192, 0, 2, 1], Some(a)).await.0, StatusCode::UNAUTHORIZED);
        }
    }

    #[tokio::test]
    async fn a_client_that_fails_too_often_gets_429_without_a_token_check() {
        let s = state(Some(FailureLimit { max: 3, window: Duration::from_secs(60) }));
        let guesser = [192, 0, 2, 1];
        for guess in ["Bearer a", "Bearer b", "Bearer c"] {
            let (status, _, code) = devices(&s, guesser, Some(guess)).await;
            assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));
        }
        // Now even the right token is not looked at.
        let (status, retry, code) = devices(&s, guesser, Some("Bearer s3cret")).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "too_many_auth_failures")
        );
        let retry: u64 = retry.expect("retry-after").parse().expect("seconds");
        assert!((1..=60).contains(&retry), "{retry}");
        // Another client is not affected.
        assert_eq!(devices(&s, [192, 0, 2, 2], Some("Bearer s3cret")).await.0, StatusCode::OK);
        assert_eq!(s.0.server.auth_throttled.load(Ordering::Relaxed), 1);
        // Without a limit, failures are never throttled.
        let s = state(None);
        for _ in 0..20 {
            assert_eq!(devices(&s, guesser, Some("Bearer x")).await.0, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(devices(&s, guesser, Some("Bearer s3cret")).await.0, StatusCode::OK);
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_spaces_follow_rfc_9110() {
        for ok in [
            "Bearer abc",
            "bearer abc",
            "BEARER abc",
            "bEaReR abc",
            "Bearer   abc",
            " Bearer abc\t",
        ] {
            assert_eq!(bearer_token(ok), Some("abc"), "{ok:?}");
        }
        for bad in [
            "Bearer",
            "Bearer ",
            "Basic abc",
            "Bearerabc",
            "Bearer\tabc",
            "Bearer a b",
            "Bearers abc",
        ] {
            assert_eq!(bearer_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn failures_block_a_client_for_the_rest_of_its_window() {
        let t = Throttle::new(FailureLimit { max: 3, window: Duration::from_secs(60) });
        let a = Some(IpAddr::from([192, 0, 2, 1]));
        let b = Some(IpAddr::from([192, 0, 2, 2]));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(t.blocked(a, t0), None, "after {i} failures");
            t.failed(a, t0);
        }
        assert_eq!(t.blocked(a, t0), Some(60));
        assert_eq!(t.blocked(a, t0 + Duration::from_millis(30_500)), Some(30));
        assert_eq!(t.blocked(b, t0), None, "another client is not affected");
        // The window ends: allowed again, and a new failure starts a new window.
        assert_eq!(t.blocked(a, t0 + Duration::from_secs(60)), None);
        t.failed(a, t0 + Duration::from_secs(61));
        assert_eq!(t.blocked(a, t0 + Duration::from_secs(61)), None);
    }
}
