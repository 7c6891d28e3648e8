//! Compression of the operator answers (`/api/v1/openapi.json`, `/metrics`, `/health`,
//! `/api/v1/devices`) when the client asks for it with `Accept-Encoding`: gzip or brotli
//! (tower-http's `CompressionLayer`, which also sets `Vary: Accept-Encoding`).
//!
//! The layer is put on those routes only, never on the random endpoints: random data does not
//! compress, so it would cost CPU for nothing on the hot path, and a compressed body's length
//! would no longer be the one asked for. Random answers are always `identity`.

use tower_http::compression::predicate::SizeAbove;
use tower_http::compression::{CompressionLayer, CompressionLevel};

/// Answers smaller than this are sent as they are: below it the encoding's own header and the
/// extra work outweigh what is saved.
pub const MIN_COMPRESS_BYTES: u64 = 256;

/// Quality for both encodings. Brotli's default (11) is far slower than gzip's for a few percent
/// less; at 4 both are fast and still shrink the OpenAPI document (23.4 kB) and a one-card
/// metrics page (22.0 kB) about 9× (gzip 2.6 and 2.3 kB, br 2.5 and 2.3 kB).
const LEVEL: i32 = 4;

/// The layer for one operator route.
pub fn layer() -> CompressionLayer<SizeAbove> {
    CompressionLayer::new()
        .quality(CompressionLevel::Precise(LEVEL))
        .compress_when(SizeAbove::new(MIN_COMPRESS_BYTES))
}
