//! Logging set-up shared by both binaries: `RUST_LOG` filters (default `info`), to stderr, plain
//! text or JSON lines; colours only on a terminal (journald and log files get plain text) and
//! never when `NO_COLOR` is set. Random bytes are never logged by either process.

/// Installs the global tracing subscriber. `json`: one JSON object per line.
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
