// The connection limits' defaults (std only): included by `limits.rs` and by `build.rs`.

/// Open connections when `--http-max-connections` is not given (lowered, with a warning, when the
/// open-file limit cannot hold it). nginx's default `worker_connections` is 512 per worker; this
/// is the order of a few such workers, and `LimitNOFILE=` in the shipped unit is sized for it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Open connections per client address. Generous for browsers (6 per host) and for clients
/// behind one NAT address, small next to `DEFAULT_MAX_CONNECTIONS` so one address cannot fill it.
pub const DEFAULT_PER_CLIENT: usize = 64;
/// Time from accepting a connection until its first request head is complete (nginx's
/// `client_header_timeout` is 60 s; a request to this API is one short line and a few headers).
pub const DEFAULT_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Time a kept-alive connection may wait, after an answer, until its next request head is
/// complete (nginx's `keepalive_timeout` is 75 s).
pub const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Largest request head (request line and headers). nginx's `large_client_header_buffers` is
/// 4 × 8 KiB; a request of this API with a bearer token is a few hundred bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 8 << 10;
/// Descriptors kept free beyond those open at start-up, for what opens later: rings attached by
/// hot-plug (one descriptor each while attached), the FUSE waiting readers' brief reads of
/// `/proc/<tid>/status` (up to 64 at once), the ring directory's rescans, log and metric files.
pub const DEFAULT_RESERVED_FDS: usize = 256;
/// Connections the kernel holds completed but not yet accepted (`listen(2)`'s backlog; the kernel
/// caps it at `net.core.somaxconn`, 4096 by default). At the cap new clients wait here, so it is
/// larger than the 128 of Rust's and tokio's `bind`, with which a burst beyond 128 waiting clients
/// has its SYNs dropped and retried after 1 s, 3 s, ...
pub const DEFAULT_LISTEN_BACKLOG: u32 = 1024;
/// The fewest connections a lowered default cap may come to before start-up is refused.
pub const MIN_CONNECTIONS: usize = 16;
/// Smallest `--http-max-header-bytes`: a request line with a short path.
pub const MIN_HEADER_BYTES: usize = 256;
/// Time from accepting a TLS connection until its handshake is complete; then it is closed. The
/// header timeout starts after it. A handshake is two round trips and a signature.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Streams (requests) one HTTP/2 connection may have open at once, advertised in its SETTINGS
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`, RFC 9113 §6.5.2; RFC 9113 recommends at least 100). Each
/// open stream holds one request's state, as a connection of HTTP/1.1 does.
pub const DEFAULT_HTTP2_MAX_STREAMS: u32 = 1000;
