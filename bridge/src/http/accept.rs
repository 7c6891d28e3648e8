//! Content negotiation on `Accept` (RFC 9110 §12.5.1): which of the media types an endpoint can
//! answer with the client takes, honouring q-values.
//!
//! The most specific media range that matches a type gives its quality (`application/json` over
//! `application/*` over `*/*`); `q=0` means "not acceptable". An absent header, and one with no
//! element that parses, accept everything (RFC 9110 lets a server ignore a header it cannot
//! parse). Media type parameters other than `q` are ignored in matching. Nothing acceptable: 406
//! with the JSON error body (the error body is JSON whatever the client asked for).

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};

use super::ApiError;

/// The request's `Accept` header (all of its fields, joined as RFC 9110 §5.3 allows).
#[derive(Debug, Clone, Default)]
pub struct Accept(Option<HeaderValue>);

impl Accept {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut all = headers.get_all(header::ACCEPT).iter();
        let Some(first) = all.next() else { return Self(None) };
        let Some(second) = all.next() else { return Self(Some(first.clone())) };
        // Several fields: one comma-separated list (rare; only then is anything allocated).
        let mut joined = first.as_bytes().to_vec();
        for v in std::iter::once(second).chain(all) {
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(v.as_bytes());
        }
        Self(HeaderValue::from_bytes(&joined).ok())
    }

    /// The quality (0 to 1000, thousandths) the client gives `offer` (`type/subtype`).
    pub fn quality(&self, offer: &str) -> u16 {
        self.0
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| quality(v, offer))
            .unwrap_or(1000)
    }

    /// The first of `offers` with the highest non-zero quality; 406 if none is acceptable.
    pub fn choose(&self, offers: &[&'static str]) -> Result<&'static str, ApiError> {
        if self.0.is_none() {
            return Ok(offers[0]);
        }
        let mut best: Option<(&'static str, u16)> = None;
        for &o in offers {
            let q = self.quality(o);
            if q > 0 && best.is_none_or(|(_, bq)| q > bq) {
                best = Some((o, q));
            }
        }
        best.map(|(o, _)| o).ok_or_else(|| {
            ApiError::NotAcceptable(format!(
                "this endpoint answers {}; the Accept header allows none of them",
                offers.join(" or ")
            ))
        })
    }

    /// Ok if the client accepts `offer`, else 406.
    pub fn require(&self, offer: &'static str) -> Result<(), ApiError> {
        self.choose(&[offer]).map(|_| ())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Accept {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self::from_headers(&parts.headers))
    }
}

/// The quality `header` gives `offer`, or None when no element of `header` parses (then the
/// header is ignored).
fn quality(header: &str, offer: &str) -> Option<u16> {
    let (otype, osub) = offer.split_once('/')?;
    let mut valid = false;
    // (specificity, quality) of the most specific matching range; the higher quality on a tie.
    let mut best: Option<(u8, u16)> = None;
    for element in header.split(',') {
        let mut parts = element.split(';');
        let range = parts.next().unwrap_or("").trim();
        let Some((t, s)) = range.split_once('/') else { continue };
        if t.is_empty() || s.is_empty() || (t == "*" && s != "*") {
            continue;
        }
        let mut q = Some(1000);
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = parse_q(v.trim());
                }
            }
        }
        let Some(q) = q else { continue };
        valid = true;
        let specificity = if t == "*" {
            1
        } else if !t.eq_ignore_ascii_case(otype) {
            continue;
        } else if s == "*" {
            2
        } else if s.eq_ignore_ascii_case(osub) {
            3
        } else {
            continue;
        };
        if best.is_none_or(|(bs, bq)| specificity > bs || (specificity == bs && q > bq)) {
            best = Some((specificity, q));
        }
    }
    valid.then(|| best.map_or(0, |(_, q)| q))
}

/// RFC 9110 §12.4.2: `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_val = frac.bytes().fold(0u16, |a, b| a * 10 + u16::from(b - b'0'))
        * 10u16.pow(3 - frac.len() as u32);
    match int {
        "0" => Some(frac_val),
        "1" if frac_val == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Accept {
        Accept(Some(HeaderValue::from_str(v).expect("header")))
    }

    const JSON: &str = "application/json";
    const BIN: &str = "application/octet-stream";

    #[test]
    fn q_values() {
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.125"), Some(125));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(parse_q("x"), None);
    }

    #[test]
    fn most_specific_range_wins() {
        let a = accept("*/*;q=0.1, application/*;q=0.5, application/json");
        assert_eq!(a.quality(JSON), 1000);
        assert_eq!(a.quality(BIN), 500);
        assert_eq!(a.quality("text/plain"), 100);
        let a = accept("application/json;q=0, */*");
        assert_eq!(a.quality(JSON), 0);
        assert_eq!(a.quality(BIN), 1000);
        assert_eq!(accept("TEXT/Plain; version=0.0.4").quality("text/plain"), 1000);
    }

    #[test]
    fn choose_honours_quality_then_order() {
        assert_eq!(Accept(None).choose(&[JSON, BIN]).expect("absent"), JSON);
        assert_eq!(accept("*/*").choose(&[JSON, BIN]).expect("any"), JSON);
        assert_eq!(accept(BIN).choose(&[JSON, BIN]).expect("binary"), BIN);
        let a = accept("application/json;q=0.4, application/octet-stream;q=0.9");
        assert_eq!(a.choose(&[JSON, BIN]).expect("q"), BIN);
        let e = accept("text/html").choose(&[JSON, BIN]).expect_err("406");
        assert_eq!(e.status(), axum::http::StatusCode::NOT_ACCEPTABLE);
        assert!(accept("text/html, application/*;q=0").require(JSON).is_err());
    }

    #[test]
    fn unparseable_header_is_ignored() {
        assert_eq!(accept("garbage").quality(JSON), 1000);
        assert_eq!(accept("text/html;q=2").quality(JSON), 1000);
        // One good element makes the header count.
        assert_eq!(accept("garbage, text/html").quality(JSON), 0);
        let mut h = HeaderMap::new();
        h.append(header::ACCEPT, HeaderValue::from_static("text/html"));
        h.append(header::ACCEPT, HeaderValue::from_static("application/json;q=0.2"));
        assert_eq!(Accept::from_headers(&h).quality(JSON), 200);
    }
}
