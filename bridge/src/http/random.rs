//! The random-value endpoints: bytes, integers, floats, UUIDs and the ANU QRNG legacy API.
//!
//! Every parameter is validated before a single byte is taken, so a bad request consumes nothing.
//! Conversions are exact: integers by masked rejection sampling (no modulo bias), floats from 53 bits,
//! UUIDs per RFC 9562 §5.4 (version 4).

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderName, HeaderValue, Uri};
use axum::response::Response;
use std::borrow::Cow;
use std::io::Write as _;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::accept::Accept;
use super::{ApiError, AppState};
use crate::dispenser::{Delivery, Entropy, Served};

/// Response header naming the source: the card serial, or "simulated".
pub const SOURCE_HEADER: HeaderName = HeaderName::from_static("x-qrng-source");
/// Response header naming the device (ring file stem) the bytes came from.
pub const DEVICE_HEADER: HeaderName = HeaderName::from_static("x-qrng-device");

/// The media types of the random answers.
pub(super) const JSON: &str = "application/json";
pub(super) const BINARY: &str = "application/octet-stream";

/// ANU QRNG legacy limits: "Array length … Must be between 1–1024", "Block size … between 1–1024"
/// (qrng.anu.edu.au/contact/api-documentation).
pub const ANU_MAX: usize = 1024;

/// A header value built from peer-controlled text (the ring's serial): visible ASCII only.
fn header_text(s: &str) -> HeaderValue {
    if s.bytes().all(|b| b.is_ascii_graphic()) {
        if let Ok(v) = HeaderValue::from_str(s) {
            return v;
        }
    }
    let clean: String = s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').collect();
    HeaderValue::from_str(clean.trim()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Adds the content type and the headers every random response carries.
fn random_response(e: &Entropy, content_type: &'static str, resp: Response) -> Response {
    labelled(&e.source, &e.device, content_type, resp)
}

pub(super) fn labelled(
    source: &str,
    device: &str,
    content_type: &'static str,
    mut resp: Response,
) -> Response {
    let h = resp.headers_mut();
    h.reserve(4);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(SOURCE_HEADER, header_text(source));
    h.insert(DEVICE_HEADER, header_text(device));
    resp
}

/// Serializes `body` into one buffer of `size_hint` bytes (plus room for the envelope), so the
/// common case allocates once instead of growing step by step.
fn json_response<T: Serialize>(
    e: &Entropy,
    body: &T,
    size_hint: usize,
) -> Result<Response, ApiError> {
    let mut bytes = Vec::with_capacity(size_hint + 96 + e.source.len());
    serde_json::to_writer(&mut bytes, body).map_err(|err| {
        tracing::error!(error = %err, "failed to encode a JSON response");
        ApiError::Internal
    })?;
    Ok(random_response(e, "application/json", Response::new(Body::from(bytes))))
}

/// Parses an optional integer parameter in `lo..=hi` (413 above `hi` when `too_large_above`).
pub(super) fn parse_count(
    name: &str,
    value: Option<&str>,
    default: Option<usize>,
    lo: usize,
    hi: usize,
    too_large_above: bool,
) -> Result<usize, ApiError> {
    let Some(v) = value else {
        return default.ok_or_else(|| ApiError::BadRequest(format!("missing parameter {name}")));
    };
    let range = || format!("{name} must be an integer from {lo} to {hi}");
    let n: u64 = v.trim().parse().map_err(|_| ApiError::BadRequest(range()))?;
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    if n > hi {
        return Err(if too_large_above {
            ApiError::TooLarge(format!("{name} = {n} exceeds the limit of {hi}"))
        } else {
            ApiError::BadRequest(range())
        });
    }
    if n < lo {
        return Err(ApiError::BadRequest(range()));
    }
    Ok(n)
}

pub(super) fn parse_i64(name: &str, value: Option<&str>) -> Result<i64, ApiError> {
    let v = value.ok_or_else(|| ApiError::BadRequest(format!("missing parameter {name}")))?;
    v.trim().parse().map_err(|_| {
        ApiError::BadRequest(format!("{name} must be an integer from {} to {}", i64::MIN, i64::MAX))
    })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_pair(b: u8) -> [u8; 2] {
    [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]
}

/// Lower-case hex.
pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().flat_map(|&b| hex_pair(b)).map(char::from).collect()
}

/// Appends lower-case hex to `out` (the JSON body is built in one buffer).
fn hex_encode_into(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.extend_from_slice(&hex_pair(b));
    }
}

/// The query parameters `names`, percent-decoded, borrowed from the URI when no decoding was
/// needed (no allocation on the hot path). Unknown names are ignored, as by `Query`; a repeated
/// name is a 400, as `Query` reports a duplicate field.
pub(super) fn query_params<'a, const N: usize>(
    query: Option<&'a str>,
    names: [&str; N],
) -> Result<[Option<Cow<'a, str>>; N], ApiError> {
    let mut out = [const { None }; N];
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if let Some(i) = names.iter().position(|n| *n == k) {
            if out[i].is_some() {
                return Err(ApiError::BadRequest(format!(
                    "invalid query string: duplicate parameter {}",
                    names[i]
                )));
            }
            out[i] = Some(v);
        }
    }
    Ok(out)
}

/// An RFC 9562 version-4 UUID from 16 random bytes: version nibble 0b0100 (§5.4), variant 0b10 (§4.1).
pub fn uuid_v4(b: &[u8; 16]) -> String {
    let mut u = *b;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    let h = hex_encode(&u);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A float uniform in [0, 1) from the top 53 bits of 8 bytes (every representable k·2⁻⁵³).
pub fn unit_float(b: [u8; 8]) -> f64 {
    (u64::from_be_bytes(b) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Uniform integers in [min, max] by masked rejection sampling: draw `width` bytes, keep the low
/// `bits` bits, accept if ≤ range. Acceptance is > 1/2, so the expected cost is < 2·width bytes.
#[derive(Debug, Clone, Copy)]
pub struct IntRange {
    min: i64,
    range: u64,
    width: usize,
    mask: u64,
}

impl IntRange {
    /// `min ≤ max` is the caller's check.
    pub fn new(min: i64, max: i64) -> Self {
        // Two's complement: max − min as u64 is exact for every min ≤ max, up to u64::MAX.
        let range = max.wrapping_sub(min) as u64;
        let bits = 64 - range.leading_zeros();
        let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
        Self { min, range, width: bits.div_ceil(8) as usize, mask }
    }

    /// Bytes per draw (0 when min = max).
    pub fn width(&self) -> usize {
        self.width
    }

    /// The value for one draw of `width()` bytes, or None if rejected.
    pub fn accept(&self, draw: &[u8]) -> Option<i64> {
        let v = draw.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)) & self.mask;
        (v <= self.range).then(|| (self.min as u64).wrapping_add(v) as i64)
    }
}

/// `GET /api/v1/random/bytes`, the hot path: the query is parsed without allocating, and a JSON
/// answer is written into one buffer sized up front (`{"data":…,"length":…,"format":…,"source":…}`,
/// the field order of docs/api.md); a binary answer is the dispenser's buffer itself, no copy.
///
/// Without `format`, `Accept` picks it: `application/octet-stream` preferred over
/// `application/json` means binary, otherwise hex. With `format`, its media type must be
/// acceptable (406 otherwise).
pub async fn bytes(
    State(s): State<AppState>,
    uri: Uri,
    accept: Accept,
) -> Result<Response, ApiError> {
    // `Uri`, not `RawQuery`: a clone of the request's URI shares its buffer, a raw query is copied.
    let [length, format, device] = query_params(uri.query(), ["length", "format", "device"])?;
    let length = parse_count("length", length.as_deref(), None, 1, s.cfg().max_bytes, true)?;
    let format = match format.as_deref() {
        None => match accept.choose(&[JSON, BINARY])? {
            BINARY => "binary",
            _ => "hex",
        },
        Some("hex") => "hex",
        Some("base64") => "base64",
        Some("binary") => "binary",
        _ => return Err(ApiError::BadRequest("format must be hex, base64 or binary".into())),
    };
    accept.require(if format == "binary" { BINARY } else { JSON })?;
    let delivery =
        if format == "binary" && length >= super::lent::LEND_MIN && super::lent::may_lend() {
            Delivery::LendOrCopy
        } else {
            Delivery::Copy
        };
    let mut e = match s.serve(device.as_deref(), length, delivery).await? {
        Served::Lent(lent) => return Ok(super::lent::answer(&s, lent)),
        Served::Copied(e) => e,
    };
    if format == "binary" {
        let resp = Response::new(Body::from(std::mem::take(&mut e.bytes)));
        return Ok(random_response(&e, "application/octet-stream", resp));
    }
    let encoded = if format == "hex" {
        length * 2
    } else {
        base64::encoded_len(length, true).ok_or(ApiError::Internal)?
    };
    let mut out = Vec::with_capacity(encoded + 64 + e.source.len());
    out.extend_from_slice(b"{\"data\":\"");
    if format == "hex" {
        hex_encode_into(&mut out, &e.bytes);
    } else {
        let start = out.len();
        out.resize(start + encoded, 0);
        base64::engine::general_purpose::STANDARD
            .encode_slice(&e.bytes, &mut out[start..])
            .map_err(|_| ApiError::Internal)?;
    }
    let tail = (|| {
        write!(out, "\",\"length\":{length},\"format\":\"{format}\",\"source\":")?;
        serde_json::to_writer(&mut out, &e.source)?;
        out.push(b'}');
        Ok::<_, std::io::Error>(())
    })();
    tail.map_err(|err| {
        tracing::error!(error = %err, "failed to encode a JSON response");
        ApiError::Internal
    })?;
    let resp = Response::new(Body::from(out));
    Ok(random_response(&e, "application/json", resp))
}

#[derive(Debug, Deserialize)]
pub struct IntegersQuery {
    pub(super) min: Option<String>,
    pub(super) max: Option<String>,
    pub(super) count: Option<String>,
    device: Option<String>,
}

#[derive(Serialize)]
struct DataBody<'a, T> {
    data: Vec<T>,
    source: &'a str,
}

pub async fn integers(
    State(s): State<AppState>,
    accept: Accept,
    q: Result<Query<IntegersQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    accept.require(JSON)?;
    let min = parse_i64("min", q.min.as_deref())?;
    let max = parse_i64("max", q.max.as_deref())?;
    let count = parse_count("count", q.count.as_deref(), Some(1), 1, s.cfg().max_count, true)?;
    if min > max {
        return Err(ApiError::BadRequest(format!("min ({min}) must not exceed max ({max})")));
    }
    let (data, e) = draw_integers(&s, q.device.as_deref(), min, max, count).await?;
    json_response(&e, &DataBody { data, source: &e.source }, count * 21)
}

/// `count` integers uniform in `[min, max]` (`min ≤ max`, checked by the caller) and the last
/// take, whose labels name the source. Rejected draws are replaced by further takes.
pub(super) async fn draw_integers(
    s: &AppState,
    device: Option<&str>,
    min: i64,
    max: i64,
    count: usize,
) -> Result<(Vec<i64>, Entropy), ApiError> {
    let r = IntRange::new(min, max);
    let mut data = Vec::with_capacity(count);
    let mut last = None;
    while data.len() < count {
        // Ask for exactly what the remaining values need at 100 % acceptance; rejections loop.
        let e = s.take(device, (count - data.len()) * r.width()).await?;
        if r.width() == 0 {
            data.resize(count, min);
        } else {
            data.extend(e.bytes.chunks_exact(r.width()).filter_map(|d| r.accept(d)));
        }
        last = Some(e);
    }
    data.truncate(count);
    Ok((data, last.ok_or(ApiError::Internal)?))
}

/// `count` values made by `make` from `W` bytes each, and the take they came from.
async fn draw_fixed<T, const W: usize>(
    s: &AppState,
    device: Option<&str>,
    count: usize,
    make: impl Fn(&[u8; W]) -> T,
) -> Result<(Vec<T>, Entropy), ApiError> {
    let e = s.take(device, count * W).await?;
    let data = e.bytes.chunks_exact(W).map(|c| make(c.try_into().expect("W bytes"))).collect();
    Ok((data, e))
}

/// `count` floats uniform in [0, 1) ([`unit_float`]) and the take they came from.
pub(super) async fn draw_floats(
    s: &AppState,
    device: Option<&str>,
    count: usize,
) -> Result<(Vec<f64>, Entropy), ApiError> {
    draw_fixed(s, device, count, |b: &[u8; 8]| unit_float(*b)).await
}

/// `count` version-4 UUIDs ([`uuid_v4`]) and the take they came from.
pub(super) async fn draw_uuids(
    s: &AppState,
    device: Option<&str>,
    count: usize,
) -> Result<(Vec<String>, Entropy), ApiError> {
    draw_fixed(s, device, count, uuid_v4).await
}

#[derive(Debug, Deserialize)]
pub struct CountQuery {
    pub(super) count: Option<String>,
    device: Option<String>,
}

pub async fn floats(
    State(s): State<AppState>,
    accept: Accept,
    q: Result<Query<CountQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    accept.require(JSON)?;
    let count = parse_count("count", q.count.as_deref(), Some(1), 1, s.cfg().max_count, true)?;
    let (data, e) = draw_floats(&s, q.device.as_deref(), count).await?;
    json_response(&e, &DataBody { data, source: &e.source }, count * 24)
}

pub async fn uuid(
    State(s): State<AppState>,
    accept: Accept,
    q: Result<Query<CountQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    accept.require(JSON)?;
    let count = parse_count("count", q.count.as_deref(), Some(1), 1, s.cfg().max_count, true)?;
    let (data, e) = draw_uuids(&s, q.device.as_deref(), count).await?;
    json_response(&e, &DataBody { data, source: &e.source }, count * 39)
}

#[derive(Debug, Deserialize)]
pub struct AnuQuery {
    pub(super) length: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    pub(super) size: Option<String>,
}

/// The ANU answer: field order as ANU sends it (type, length, size, data, success).
#[derive(Serialize)]
struct AnuBody<T> {
    #[serde(rename = "type")]
    kind: &'static str,
    length: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<usize>,
    data: Vec<T>,
    success: bool,
}

/// `GET /API/jsonI.php`: the ANU QRNG legacy API, so ANU clients work by changing only the host.
/// `size` is validated whenever it is given (1 to [`ANU_MAX`]), required for `hex16`, and has no
/// effect on `uint8` and `uint16`.
pub async fn anu(
    State(s): State<AppState>,
    accept: Accept,
    q: Result<Query<AnuQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    accept.require(JSON)?;
    let length = parse_count("length", q.length.as_deref(), None, 1, ANU_MAX, false)?;
    if let Some(size) = q.size.as_deref() {
        parse_count("size", Some(size), None, 1, ANU_MAX, false)?;
    }
    match q.kind.as_deref() {
        Some("uint8") => {
            let e = s.take(None, length).await?;
            let data = e.bytes.clone();
            let body = AnuBody { kind: "uint8", length, size: None, data, success: true };
            json_response(&e, &body, length * 4)
        }
        Some("uint16") => {
            let e = s.take(None, length * 2).await?;
            let data: Vec<u16> =
                e.bytes.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            let body = AnuBody { kind: "uint16", length, size: None, data, success: true };
            json_response(&e, &body, length * 6)
        }
        Some("hex16") => {
            let size = parse_count("size", q.size.as_deref(), None, 1, ANU_MAX, false)?;
            let e = s.take(None, length * size).await?;
            let data: Vec<String> = e.bytes.chunks_exact(size).map(hex_encode).collect();
            let body = AnuBody { kind: "string", length, size: Some(size), data, success: true };
            json_response(&e, &body, length * (2 * size + 3))
        }
        _ => Err(ApiError::BadRequest("type must be uint8, uint16 or hex16".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_the_usual_encoding() {
        assert_eq!(hex_encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex_encode(&[]), "");
    }

    #[test]
    fn uuid_sets_version_and_variant_only() {
        let u = uuid_v4(&[0xff; 16]);
        assert_eq!(u, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let u = uuid_v4(&[0x00; 16]);
        assert_eq!(u, "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn floats_span_zero_to_just_below_one() {
        assert_eq!(unit_float([0; 8]), 0.0);
        let top = unit_float([0xff; 8]);
        assert!(top < 1.0);
        assert_eq!(top, 1.0 - f64::EPSILON / 2.0);
        // Only the top 53 bits count.
        assert_eq!(unit_float([0, 0, 0, 0, 0, 0, 0x07, 0xff]), 0.0);
        assert_eq!(unit_float([0, 0, 0, 0, 0, 0, 0x08, 0]), 2f64.powi(-53));
    }

    #[test]
    fn full_i64_range_accepts_every_draw_as_a_bijection() {
        let r = IntRange::new(i64::MIN, i64::MAX);
        assert_eq!(r.width(), 8);
        assert_eq!(r.accept(&[0; 8]), Some(i64::MIN));
        assert_eq!(r.accept(&[0xff; 8]), Some(i64::MAX));
        assert_eq!(r.accept(&[0x80, 0, 0, 0, 0, 0, 0, 0]), Some(0));
    }

    #[test]
    fn small_range_is_exactly_uniform_over_all_draws() {
        // 1..=6: width 1, mask 7; over all 256 byte values each face appears equally often.
        let r = IntRange::new(1, 6);
        assert_eq!(r.width(), 1);
        let mut hist = [0u32; 7];
        for b in 0..=255u8 {
            if let Some(v) = r.accept(&[b]) {
                hist[usize::try_from(v).expect("small")] += 1;
            }
        }
        assert_eq!(hist[0], 0);
        assert!(hist[1..].iter().all(|&c| c == hist[1]), "{hist:?}");
        assert_eq!(hist[1..].iter().sum::<u32>(), 6 * 32);
    }

    #[test]
    fn range_edges_and_widths() {
        assert_eq!(IntRange::new(5, 5).width(), 0);
        assert_eq!(IntRange::new(5, 5).accept(&[]), Some(5));
        assert_eq!(IntRange::new(0, 255).width(), 1);
        assert_eq!(IntRange::new(0, 256).width(), 2);
        assert_eq!(IntRange::new(-1, 0).accept(&[1]), Some(0));
        assert_eq!(IntRange::new(-1, 0).accept(&[0xfe]), Some(-1));
        let r = IntRange::new(i64::MAX - 2, i64::MAX);
        assert_eq!(r.accept(&[2]), Some(i64::MAX));
        assert_eq!(r.accept(&[3]), None);
        // A range of exactly 2^63 values (high bit clear) needs all 8 bytes and rejects nothing
        // with the top bit masked off.
        let r = IntRange::new(0, i64::MAX);
        assert_eq!(r.accept(&[0xff; 8]), Some(i64::MAX));
    }

    #[test]
    fn header_text_strips_control_characters() {
        assert_eq!(header_text("AB\r\n12"), "AB12");
        assert_eq!(header_text("\u{7f}\u{1}"), "");
    }
}
