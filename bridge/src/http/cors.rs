//! Cross-origin resource sharing (`--cors-origin`, the Fetch standard's CORS protocol), so a web
//! page on another origin can call the API from a browser.
//!
//! Without the option nothing here runs and no CORS header is sent. With it:
//! - a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered 204 by
//!   the bridge itself, before authentication (a browser never sends credentials on a preflight),
//!   with the `Access-Control-Allow-*` headers when the origin is allowed, and without them when
//!   it is not (the browser then refuses the call);
//! - every other answer to an allowed origin carries `Access-Control-Allow-Origin` and exposes the
//!   bridge's own headers; a disallowed origin gets no CORS header.
//!
//! With a list of origins, every answer carries `Vary: Origin` (the answer depends on it, so a
//! cache must not hand one origin's answer to another); with `*` the answer is the same for all.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

/// How long a browser may cache a preflight answer, in seconds (`Access-Control-Max-Age`).
/// Ten minutes: the allowed origins change only with a restart.
pub const PREFLIGHT_MAX_AGE_SECS: u32 = 600;

/// The methods the API has.
const ALLOW_METHODS: &str = "GET, HEAD, OPTIONS";

/// The one request header the API reads that is not CORS-safelisted (bearer tokens).
const ALLOW_HEADERS: &str = "authorization";

/// The response headers a script may read besides the safelisted ones.
const EXPOSE_HEADERS: &str = "x-qrng-source, x-qrng-device, retry-after";

/// The origins allowed (`--cors-origin`, repeatable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin (`Access-Control-Allow-Origin: *`).
    Any,
    /// Exactly these serialized origins (`scheme://host[:port]`), compared byte for byte as
    /// browsers send them.
    List(Vec<HeaderValue>),
}

impl CorsOrigins {
    /// From the command line: `*` anywhere means any origin.
    pub fn from_args(origins: &[String]) -> Result<Option<Self>, String> {
        if origins.is_empty() {
            return Ok(None);
        }
        if origins.iter().any(|o| o == "*") {
            return Ok(Some(Self::Any));
        }
        origins
            .iter()
            .map(|o| {
                let o = o.trim_end_matches('/');
                if !(o.starts_with("http://") || o.starts_with("https://")) {
                    return Err(format!(
                        "--cors-origin {o}: expected * or an origin such as https://example.org"
                    ));
                }
                HeaderValue::from_str(o)
                    .map_err(|_| format!("--cors-origin {o}: not a valid origin"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|l| Some(Self::List(l)))
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            Self::Any => Some(HeaderValue::from_static("*")),
            Self::List(l) => origin.filter(|o| l.contains(o)).cloned(),
        }
    }

    /// Whether the request is a CORS preflight.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The answer to a preflight from `origin`.
    pub fn preflight(&self, origin: Option<&HeaderValue>) -> Response {
        let mut resp = Response::new(axum::body::Body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        if let Some(allow) = self.allow(origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(PREFLIGHT_MAX_AGE_SECS));
        }
        if matches!(self, Self::List(_)) {
            h.append(
                header::VARY,
                HeaderValue::from_static(
                    "origin, access-control-request-method, access-control-request-headers",
                ),
            );
        }
        resp
    }

    /// Adds the CORS headers to an answer to a request from `origin`.
    pub fn decorate(&self, origin: Option<&HeaderValue>, resp: &mut Response) {
        let h = resp.headers_mut();
        if let Some(allow) = self.allow(origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
        if matches!(self, Self::List(_)) {
            h.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_from_the_command_line() {
        assert_eq!(CorsOrigins::from_args(&[]), Ok(None));
        let star = ["https://a.example".to_owned(), "*".to_owned()];
        assert_eq!(CorsOrigins::from_args(&star), Ok(Some(CorsOrigins::Any)));
        let l = CorsOrigins::from_args(&["https://a.example/".to_owned()]).expect("origin");
        assert_eq!(l, Some(CorsOrigins::List(vec![HeaderValue::from_static("https://a.example")])));
        let e = CorsOrigins::from_args(&["a.example".to_owned()]).expect_err("no scheme");
        assert!(e.contains("--cors-origin a.example"), "{e}");
    }
}
