//! `qrng-bridge`: thin command-line front over the library: parse the configuration, attach the
//! rings, serve HTTP until SIGTERM/SIGINT, then shut down cleanly.
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser as _;
use qrng_bridge::config::{Config, LogFormat};
use qrng_bridge::dispenser::Dispenser;
use qrng_bridge::http;

fn init_logging(format: LogFormat) {
    // Without RUST_LOG, EnvFilter would show errors only: default to info.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the bridge");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM: shutting down"),
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => tracing::info!("SIGINT: shutting down"),
            Err(e) => tracing::error!(error = %e, "cannot watch SIGINT"),
        },
    }
}

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    init_logging(cfg.log_format);
    let http_cfg = cfg.http().context("invalid HTTP configuration")?;
    let dispenser = Dispenser::new(cfg.dispenser());
    for ring in &cfg.rings {
        let name = dispenser
            .attach(ring)
            .with_context(|| format!("cannot attach ring {}", ring.display()))?;
        tracing::info!(device = %name, ring = %ring.display(), "serving ring");
    }
    if cfg.rings.is_empty() {
        tracing::warn!("no --ring given: every random request will get 503");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        if cfg.no_http {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            shutdown_signal().await;
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        tracing::info!(listen = %cfg.listen, "HTTP API ready");
        let state = http::AppState::new(dispenser.clone(), http_cfg)?;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        http::serve(listener, state, shutdown_signal()).await.context("HTTP server failed")
    });
    dispenser.shutdown();
    tracing::info!("stopped");
    result
}
