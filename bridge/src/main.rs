//! `qrng-bridge`: thin command-line front over the library. Attaches the `--ring` files and the
//! rings of `--ring-dir` (hot-plug), mounts the FUSE device files, serves HTTP and EGD, and on
//! SIGTERM or Ctrl-C drains HTTP, closes the EGD sockets, unmounts and detaches.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use qrng_bridge::beacon::{Beacon, SystemClock};
use qrng_bridge::config::{Bind, Config, LogFormat};
use qrng_bridge::dispenser::Dispenser;
use qrng_bridge::egd;
use qrng_bridge::fuse::{FuseConfig, FuseMount};
use qrng_bridge::http::server::tls::Tls;
use qrng_bridge::http::{self, AppState};
use qrng_bridge::watch::{RingSink, Watcher};

/// Attaches a ring everywhere it shows: dispenser (and so HTTP and /api/v1/devices) and FUSE file.
struct Attacher {
    dispenser: Dispenser,
    fuse: Option<Arc<FuseMount>>,
}

impl RingSink for Attacher {
    fn attach(&self, path: &Path) -> Result<String, String> {
        let name = self.dispenser.attach(path).map_err(|e| e.to_string())?;
        if let Some(f) = &self.fuse {
            if let Err(e) = f.add_device(&name) {
                self.dispenser.detach(&name);
                return Err(e.to_string());
            }
        }
        Ok(name)
    }

    fn detach(&self, name: &str) {
        if let Some(f) = &self.fuse {
            f.remove_device(name);
        }
        self.dispenser.detach(name);
    }
}

fn init_logging(format: LogFormat) {
    qrng_logging::init(matches!(format, LogFormat::Json));
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// SIGHUP with nothing to reload (no TLS certificate): logged, so that `systemctl reload` (the
/// unit's `ExecReload=`) never stops the bridge.
async fn ignore_hangup() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: no TLS certificate to reload");
    }
}

/// Explicit `--ring` files that live in the watched directory, as the watcher names them.
fn explicit_in_dir(rings: &[PathBuf], dir: &Path) -> HashSet<PathBuf> {
    let dir_abs = std::fs::canonicalize(dir).ok();
    rings
        .iter()
        .filter_map(|r| {
            let parent = std::fs::canonicalize(r.parent()?).ok();
            let name = r.file_name()?;
            (parent.is_some() && parent == dir_abs).then(|| dir.join(name))
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    init_logging(cfg.log_format);
    // One thread for signals, the acceptor and upkeep: HTTP requests run on the HTTP workers
    // (`http::server`), FUSE requests on fuser's threads, each ring's consumer on its own thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    rt.block_on(run(cfg))
}

/// Binds every `--listen` (after the TLS files loaded: a bad one stops start-up before anything
/// is bound).
fn bind_all(
    cfg: &Config,
    binds: &[Bind],
    tls: Option<&Tls>,
) -> anyhow::Result<Vec<http::server::Listener>> {
    use http::server::{listen, Listener, Socket};
    binds
        .iter()
        .map(|b| match b {
            Bind::Tcp { addr, tls: https } => {
                let socket = http::server::limits::bind(*addr, cfg.http_listen_backlog)
                    .with_context(|| format!("listen on {addr}"))?;
                let tls = if *https { tls.cloned() } else { None };
                Ok(Listener { socket: Socket::Tcp(socket), tls })
            }
            Bind::Unix(path) => {
                let socket = listen::bind_unix(path, &cfg.unix_access(), cfg.http_listen_backlog)
                    .with_context(|| format!("listen on unix:{}", path.display()))?;
                Ok(Listener { socket: Socket::Unix(socket), tls: None })
            }
        })
        .collect()
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    // Listener syntax and TLS files first: a mistake there stops start-up before anything is
    // mounted or bound.
    let (binds, tls) = if cfg.no_http {
        (Vec::new(), None)
    } else {
        let binds = cfg.binds().map_err(|e| anyhow::anyhow!("{e}"))?;
        (binds, cfg.tls()?)
    };
    let trust = cfg.ring_trust().map_err(|e| anyhow::anyhow!("{e}"))?;
    let dispenser = Dispenser::with_ring_trust(cfg.dispenser(), trust);
    let fuse = if cfg.no_fuse {
        None
    } else {
        let fc = FuseConfig {
            mountpoint: cfg.mount.clone(),
            file_mode: cfg.fuse_mode,
            allow_control: cfg.allow_control_ioctls,
            dev_links: cfg.dev_link.clone(),
            ..FuseConfig::default()
        };
        let source = Arc::new(dispenser.clone());
        Some(Arc::new(FuseMount::mount(&fc, source).context("mount the FUSE device files")?))
    };
    let attacher = Arc::new(Attacher { dispenser: dispenser.clone(), fuse: fuse.clone() });
    for ring in &cfg.rings {
        let name = attacher.attach(ring).map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!(device = %name, ring = %ring.display(), "ring attached");
    }
    for (i, m) in cfg.mix.iter().enumerate() {
        let name = m.name.clone().unwrap_or_else(|| format!("mix{i}"));
        dispenser
            .attach_mix(&name, &m.members, cfg.mix_degrade)
            .map_err(|e| anyhow::anyhow!("--mix: {e}"))?;
        if let Some(f) = &fuse {
            f.add_device(&name).with_context(|| format!("add the FUSE file of {name}"))?;
        }
    }
    if cfg.rings.is_empty() && cfg.no_watch {
        tracing::warn!("no --ring and --no-watch: every random request will get 503");
    }
    let watcher = if cfg.no_watch {
        None
    } else {
        let skip = explicit_in_dir(&cfg.rings, &cfg.ring_dir);
        Some(
            Watcher::start(&cfg.ring_dir, skip, attacher.clone())
                .context("watch the ring directory")?,
        )
    };

    // The beacon publishes on this runtime's thread; signing and storing run on blocking threads.
    let beacon = match cfg.beacon() {
        Some(bc) => {
            let b = Beacon::open(&bc).context("start the randomness beacon (--beacon-key)")?;
            tracing::info!(db = %bc.db.display(), period_s = bc.period_secs, "randomness beacon on");
            tokio::spawn(b.clone().run(dispenser.clone(), Arc::new(SystemClock)));
            Some(b)
        }
        None => None,
    };
    let state = if cfg.no_http {
        None
    } else {
        let http_cfg = http::HttpConfig { beacon, ..cfg.http()? };
        Some(AppState::new(dispenser.clone(), http_cfg).context("configure HTTP")?)
    };
    let egd_cfg = cfg.egd();
    let egd = if egd_cfg.listen.is_empty() {
        None
    } else {
        let metrics = state.as_ref().map(AppState::egd_metrics).unwrap_or_default();
        let listeners = egd::bind(&egd_cfg).context("start the EGD server")?;
        Some(egd::EgdServer::start(listeners, dispenser.clone(), metrics, egd_cfg.max_clients))
    };

    let served = if let Some(state) = state {
        let listeners = bind_all(&cfg, &binds, tls.as_ref())?;
        for l in &listeners {
            tracing::info!(listen = %l.describe(), "serving HTTP");
        }
        let reload = tokio::spawn(async move {
            match tls {
                Some(t) => http::server::tls::keep_fresh(t.store).await,
                None => ignore_hangup().await,
            }
        });
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        let served =
            http::serve_on(listeners, state, shutdown_signal()).await.context("serve HTTP");
        reload.abort();
        served
    } else {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        shutdown_signal().await;
        Ok(())
    };
    drop(egd);

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    drop(watcher);
    drop(attacher);
    if let Some(f) = fuse.and_then(|f| Arc::try_unwrap(f).ok()) {
        f.unmount().context("unmount the FUSE device files")?;
    }
    dispenser.shutdown();
    served
}
