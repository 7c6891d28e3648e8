//! Fuzz target `http_query`: the bytes as the query string of the random endpoints.

/// One fuzz input.
pub fn run(data: &[u8]) {
    qrng_bridge::http::fuzz_query(data);
}
