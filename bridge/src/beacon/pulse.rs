//! The pulse of NIST's beacon format version 2 (NISTIR 8213), its JSON shape as NIST serves it
//! (`{"pulse": {...}}`), the byte serialization that is signed and hashed, and the UTC time
//! arithmetic of timestamps and of the hour/day/month/year skip list.
//!
//! The serialization was checked against a real NIST pulse (chain 1, pulse 54610, fixture in
//! `testdata/`): every field in JSON order; integers big-endian (`cipherSuite`, `period`,
//! `external.statusCode`, `statusCode` as 4 bytes, `chainIndex` and `pulseIndex` as 8); strings
//! (`uri`, `version`, `timeStamp`) as UTF-8 and byte values (hex in JSON) as raw bytes, each
//! prefixed with its length as 4 bytes; of `listValues` only the values, in the order previous,
//! hour, day, month, year. The signature covers everything up to and including `statusCode`;
//! `outputValue` is SHA-512 of those same bytes followed by the signature's bytes (no length).

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha512};

/// `version` as NIST serves it.
pub const VERSION: &str = "Version 2.0";
/// Cipher suite 0: SHA-512 and RSA PKCS#1 v1.5 signatures (NISTIR 8213).
pub const CIPHER_SUITE: u32 = 0;
/// Bytes of every random value and hash in a pulse (SHA-512's output length).
pub const VALUE_LEN: usize = 64;
/// The `type`s of `listValues`, in their fixed order.
pub const LIST_TYPES: [&str; 5] = ["previous", "hour", "day", "month", "year"];

/// `statusCode` values, as NIST documented them for beacon 1.0 and its version 2 pulses keep
/// using (sources and what was not checked: docs/beacon.md).
pub mod status {
    /// Chain intact: the previous pulse is one period earlier.
    pub const NORMAL: u32 = 0;
    /// The first pulse of a new chain (`pulseIndex` 1): no previous pulse, list values zero.
    pub const NEW_CHAIN: u32 = 1;
    /// The chain is intact but more than one period passed since the previous pulse (the
    /// bridge was down, or the card failed and no pulse was published for some periods).
    pub const GAP: u32 = 2;
}

/// Hexadecimal in JSON, bytes in memory. NIST writes values in upper case and `certificateId`
/// in lower case; both are read in either case.
mod hex_upper {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(v, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        super::unhex(&s).ok_or_else(|| serde::de::Error::custom("expected hexadecimal digits"))
    }
}

mod hex_lower {
    use serde::Serializer;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(v, false))
    }

    pub use super::hex_upper::deserialize;
}

/// Hexadecimal digits of `v`.
pub fn hex(v: &[u8], upper: bool) -> String {
    let digits: &[u8; 16] = if upper { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
    let mut s = String::with_capacity(2 * v.len());
    for b in v {
        s.push(digits[usize::from(b >> 4)] as char);
        s.push(digits[usize::from(b & 15)] as char);
    }
    s
}

/// Bytes of hexadecimal digits (either case); None for anything else.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// `external`: a value from another source mixed in by the beacon. This beacon has none, and
/// serves zeros with status 0 as NIST does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct External {
    #[serde(with = "hex_upper")]
    pub source_id: Vec<u8>,
    pub status_code: u32,
    #[serde(with = "hex_upper")]
    pub value: Vec<u8>,
}

/// One entry of `listValues`: the `outputValue` of an earlier pulse. Only `value` is signed;
/// the verifier checks `uri` and `type` against the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListValue {
    pub uri: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "hex_upper")]
    pub value: Vec<u8>,
}

/// A pulse, field for field as NIST serves it (the JSON order is the serialization order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pulse {
    pub uri: String,
    pub version: String,
    pub cipher_suite: u32,
    /// Milliseconds between pulses.
    pub period: u32,
    /// SHA-512 of the signing certificate (DER).
    #[serde(with = "hex_lower")]
    pub certificate_id: Vec<u8>,
    pub chain_index: u64,
    pub pulse_index: u64,
    /// UTC, millisecond precision: `YYYY-MM-DDTHH:MM:SS.sssZ`.
    pub time_stamp: String,
    #[serde(with = "hex_upper")]
    pub local_random_value: Vec<u8>,
    pub external: External,
    pub list_values: Vec<ListValue>,
    /// SHA-512 of the next pulse's `localRandomValue`.
    #[serde(with = "hex_upper")]
    pub precommitment_value: Vec<u8>,
    pub status_code: u32,
    #[serde(with = "hex_upper")]
    pub signature_value: Vec<u8>,
    #[serde(with = "hex_upper")]
    pub output_value: Vec<u8>,
}

/// The JSON envelope NIST serves: `{"pulse": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub pulse: Pulse,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, v: &[u8]) {
    // Field lengths are tiny (URIs, 64-byte values); a 4 GiB field cannot be built.
    put_u32(out, u32::try_from(v.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(v);
}

impl Pulse {
    /// The bytes the signature covers: every field up to and including `statusCode`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        put_bytes(&mut out, self.uri.as_bytes());
        put_bytes(&mut out, self.version.as_bytes());
        put_u32(&mut out, self.cipher_suite);
        put_u32(&mut out, self.period);
        put_bytes(&mut out, &self.certificate_id);
        put_u64(&mut out, self.chain_index);
        put_u64(&mut out, self.pulse_index);
        put_bytes(&mut out, self.time_stamp.as_bytes());
        put_bytes(&mut out, &self.local_random_value);
        put_bytes(&mut out, &self.external.source_id);
        put_u32(&mut out, self.external.status_code);
        put_bytes(&mut out, &self.external.value);
        for v in &self.list_values {
            put_bytes(&mut out, &v.value);
        }
        put_bytes(&mut out, &self.precommitment_value);
        put_u32(&mut out, self.status_code);
        out
    }

    /// `outputValue` for this pulse's fields and signature.
    pub fn compute_output(&self) -> Vec<u8> {
        let mut h = Sha512::new();
        h.update(self.signed_bytes());
        h.update(&self.signature_value);
        h.finalize().to_vec()
    }

    /// The list value of `kind` (`previous`, `hour`, ...).
    pub fn list_value(&self, kind: &str) -> Option<&ListValue> {
        self.list_values.iter().find(|v| v.kind == kind)
    }

    /// Milliseconds since the epoch of `timeStamp`.
    pub fn time_ms(&self) -> Option<u64> {
        parse_time(&self.time_stamp)
    }
}

/// The path of a pulse under a beacon's base URL.
pub fn pulse_path(chain: u64, index: u64) -> String {
    format!("/beacon/2.0/chain/{chain}/pulse/{index}")
}

/// SHA-512.
pub fn sha512(v: &[u8]) -> Vec<u8> {
    Sha512::digest(v).to_vec()
}

const MS_PER_DAY: u64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DDTHH:MM:SS.sssZ` (UTC) of milliseconds since the epoch.
pub fn format_time(ms: u64) -> String {
    let (y, mo, d) = civil_from_days((ms / MS_PER_DAY) as i64);
    let in_day = ms % MS_PER_DAY;
    let (h, mi, s, milli) =
        (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// The inverse of [`format_time`]: only its exact form is accepted.
pub fn parse_time(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 24 || [4, 7, 10, 13, 16, 19, 23].map(|i| b[i]) != *b"--T::.Z" {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let t = &s[r];
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec, milli) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&mo) || d == 0 || h > 23 || mi > 59 || sec > 59 || y < 1970 {
        return None;
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    let ms = u64::try_from(days).ok()? * MS_PER_DAY + ((h * 60 + mi) * 60 + sec) * 1000 + milli;
    // Rejects days past the month's end (30 February) by the round trip.
    (format_time(ms) == s).then_some(ms)
}

/// The calendar spans of the skip list in `listValues`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Hour,
    Day,
    Month,
    Year,
}

impl Span {
    pub const ALL: [Span; 4] = [Span::Hour, Span::Day, Span::Month, Span::Year];

    /// The `listValues` type.
    pub fn kind(self) -> &'static str {
        match self {
            Span::Hour => "hour",
            Span::Day => "day",
            Span::Month => "month",
            Span::Year => "year",
        }
    }

    /// The first millisecond (UTC) of the span holding `ms`.
    pub fn start(self, ms: u64) -> u64 {
        match self {
            Span::Hour => ms - ms % 3_600_000,
            Span::Day => ms - ms % MS_PER_DAY,
            Span::Month | Span::Year => {
                let (y, m, _) = civil_from_days((ms / MS_PER_DAY) as i64);
                let m = if self == Span::Year { 1 } else { m };
                days_from_civil(y, m, 1) as u64 * MS_PER_DAY
            }
        }
    }
}
