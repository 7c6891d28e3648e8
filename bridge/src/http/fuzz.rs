//! The query parsers of the random endpoints, driven from bytes: the entry point of the fuzz
//! target `http_query` (`fuzz/`) and of its corpus replay (`bridge/tests/fuzz_corpus.rs`).

use axum::extract::Query;
use axum::http::Uri;

use super::random::{
    parse_count, parse_i64, query_params, AnuQuery, CountQuery, IntRange, IntegersQuery, ANU_MAX,
};

/// Limits the parsers are checked against: the defaults, and a tiny and a huge one.
const LIMITS: [usize; 3] = [1 << 20, 1, usize::MAX];

/// Runs every query parser of the random endpoints over `query` (the text after `?`), as the
/// handlers do before they take any bytes. Panics when a parser breaks its contract: a count
/// outside the limits it was given, an integer range whose draws fall outside it.
pub fn fuzz_query(query: &[u8]) {
    let Ok(text) = std::str::from_utf8(query) else { return };
    // `/api/v1/random/bytes` parses the raw query itself.
    if let Ok([length, format, device]) = query_params(Some(text), ["length", "format", "device"]) {
        let _ = (format, device);
        for hi in LIMITS {
            if let Ok(n) = parse_count("length", length.as_deref(), None, 1, hi, true) {
                assert!((1..=hi).contains(&n), "length {n} outside 1..={hi}");
            }
        }
    }
    // The other endpoints go through axum's `Query`, from the request URI.
    let Ok(uri) = format!("/r?{text}").parse::<Uri>() else { return };
    if let Ok(Query(q)) = Query::<IntegersQuery>::try_from_uri(&uri) {
        let (min, max) = (parse_i64("min", q.min.as_deref()), parse_i64("max", q.max.as_deref()));
        for hi in LIMITS {
            if let Ok(n) = parse_count("count", q.count.as_deref(), Some(1), 1, hi, true) {
                assert!((1..=hi).contains(&n), "count {n} outside 1..={hi}");
            }
        }
        if let (Ok(min), Ok(max)) = (min, max) {
            if min <= max {
                check_range(min, max);
            }
        }
    }
    if let Ok(Query(q)) = Query::<CountQuery>::try_from_uri(&uri) {
        if let Ok(n) = parse_count("count", q.count.as_deref(), Some(1), 1, 10_000, true) {
            assert!((1..=10_000).contains(&n));
        }
    }
    if let Ok(Query(q)) = Query::<AnuQuery>::try_from_uri(&uri) {
        for (name, v) in [("length", &q.length), ("size", &q.size)] {
            if let Ok(n) = parse_count(name, v.as_deref(), None, 1, ANU_MAX, false) {
                assert!((1..=ANU_MAX).contains(&n), "{name} {n} outside 1..={ANU_MAX}");
            }
        }
    }
}

/// Every accepted draw of an [`IntRange`] lies in `min..=max`; the extreme draws are checked.
fn check_range(min: i64, max: i64) {
    let r = IntRange::new(min, max);
    assert!(r.width() <= 8, "{min}..={max}: width {}", r.width());
    for fill in [0x00, 0xff, 0x5a] {
        let draw = vec![fill; r.width()];
        if let Some(v) = r.accept(&draw) {
            assert!((min..=max).contains(&v), "{min}..={max}: draw {draw:?} gave {v}");
        }
    }
    assert_eq!(r.accept(&vec![0; r.width()]), Some(min), "{min}..={max}: the zero draw is min");
}
