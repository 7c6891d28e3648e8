//! The pollen protocol: boot-time seeding of cloud images by `pollinate`, the client Ubuntu and
//! Debian images run at first boot (source: the `pollinate` script in Debian's package of that
//! name, `/usr/bin/pollinate`, function `exchange`).
//!
//! The client POSTs the form body `challenge=<hex>` (made with `curl --data @file`), where the
//! challenge is the SHA-512 of some local bytes, written as 128 hexadecimal digits. The answer is
//! two lines: the SHA-512 of the challenge *text* as sent (what the client computes with
//! `printf "$challenge" | sha512sum`), then [`POLLEN_BYTES`] card bytes as hexadecimal digits. The
//! client checks the first line and hashes the whole answer into its pool. With no challenge
//! (`pollinate --no-challenge` posts an empty body) the answer is the random line alone.
//!
//! The card bytes are taken like every other random answer: exactly once, never from a failed
//! card (503 after the configured wait), behind the same bearer tokens and per-client rate limit.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use sha2::{Digest as _, Sha512};

use super::random::{hex_encode, labelled, query_params};
use super::{ApiError, AppState};

/// Card bytes in each answer: 64, as pollen serves (a SHA-512's worth, 512 bits).
pub const POLLEN_BYTES: usize = 64;

/// Longest challenge accepted, in hexadecimal digits. `pollinate` sends 128 (a SHA-512); this
/// leaves room for longer digests and bounds the hashing work a client can ask for.
pub const CHALLENGE_MAX: usize = 1024;

/// Largest request body read: the form with the longest challenge and room for other fields
/// (which are ignored). A larger body gets 413 and is not read further.
pub const BODY_MAX: usize = 4096;

/// `POST /` and `POST /pollen`.
pub async fn pollen(State(s): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let [device] = query_params(req.uri().query(), ["device"])?;
    let device = device.map(|d| d.into_owned());
    let body = axum::body::to_bytes(req.into_body(), BODY_MAX).await.map_err(|_| {
        ApiError::TooLarge(format!("the pollen request body is limited to {BODY_MAX} bytes"))
    })?;
    let challenge = parse_challenge(&body)?;
    let e = s.take(device.as_deref(), POLLEN_BYTES).await?;
    let mut out = String::with_capacity(2 * (128 + 1));
    if let Some(c) = challenge {
        out.push_str(&hex_encode(&Sha512::digest(c.as_bytes())));
        out.push('\n');
    }
    out.push_str(&hex_encode(&e.bytes));
    out.push('\n');
    Ok(labelled(&e.source, &e.device, "text/plain; charset=utf-8", Response::new(Body::from(out))))
}

/// The `challenge` field of a form body: `None` when absent or the body is empty; 400 when it is
/// given twice, empty, longer than [`CHALLENGE_MAX`] or not hexadecimal.
fn parse_challenge(body: &[u8]) -> Result<Option<String>, ApiError> {
    let mut found: Option<String> = None;
    for (k, v) in form_urlencoded::parse(body) {
        if k != "challenge" {
            continue;
        }
        if found.is_some() {
            return Err(ApiError::BadRequest("challenge is given more than once".into()));
        }
        if v.is_empty() || v.len() > CHALLENGE_MAX || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::BadRequest(format!(
                "challenge must be 1 to {CHALLENGE_MAX} hexadecimal digits"
            )));
        }
        found = Some(v.into_owned());
    }
    Ok(found)
}

/// The OpenAPI path items of `POST /` and `POST /pollen` (merged into the document by `openapi`).
pub fn openapi_paths() -> [(&'static str, serde_json::Value); 2] {
    let op = |id: &str| {
        super::openapi::post_random_op(
            id,
            "Pollen protocol (pollinate): the SHA-512 of the challenge, then 64 card bytes in hex.",
            vec![serde_json::json!({"name": "device", "in": "query", "required": false,
                "schema": {"type": "string"}, "description": "Device (default: any healthy one)."})],
            serde_json::json!({"required": false, "content": {"application/x-www-form-urlencoded":
                {"schema": {"type": "object", "properties": {"challenge": {"type": "string",
                    "pattern": "^[0-9A-Fa-f]+$", "minLength": 1, "maxLength": CHALLENGE_MAX}}}}}}),
            serde_json::json!({"description": "With a challenge: two lines, the SHA-512 of the \
                challenge text and 128 hex digits of card bytes; without: the random line alone.",
                "content": {"text/plain": {"schema": {"type": "string"}}}}),
        )
    };
    [("/", op("postPollen")), ("/pollen", op("postPollenAlias"))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parsing() {
        assert_eq!(parse_challenge(b"").unwrap(), None);
        assert_eq!(parse_challenge(b"other=1").unwrap(), None);
        assert_eq!(parse_challenge(b"challenge=0aF9&x=y").unwrap().as_deref(), Some("0aF9"));
        for bad in
            [&b"challenge="[..], b"challenge=xyz", b"challenge=00&challenge=11", b"challenge=%00"]
        {
            assert!(matches!(parse_challenge(bad), Err(ApiError::BadRequest(_))), "{bad:?}");
        }
        let long = format!("challenge={}", "a".repeat(CHALLENGE_MAX + 1));
        assert!(parse_challenge(long.as_bytes()).is_err());
        let max = format!("challenge={}", "a".repeat(CHALLENGE_MAX));
        assert!(parse_challenge(max.as_bytes()).unwrap().is_some());
    }
}
