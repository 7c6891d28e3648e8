//! `qrng-feeder`: thin command line over the library (docs/feeder.md).

use std::process::ExitCode;
use std::thread;

use clap::Parser;
use qrng_feeder::config::{Config, SourceSpec};
use qrng_feeder::{kernel, Feeder, FileSource, KernelPool, RingSource, Source, SourceError};

fn log(msg: impl std::fmt::Display) {
    eprintln!("qrng-feeder: {msg}");
}

fn open_source(cfg: &Config) -> Result<Box<dyn Source>, SourceError> {
    Ok(match &cfg.source {
        SourceSpec::File(p) => Box::new(FileSource::open(p.clone())?),
        SourceSpec::Ring(p) => {
            Box::new(RingSource::open(p.clone(), cfg.ring_owner, cfg.read_timeout())?)
        }
        SourceSpec::Remote(url) => remote(cfg, url)?,
    })
}

#[cfg(feature = "remote")]
fn remote(cfg: &Config, url: &str) -> Result<Box<dyn Source>, SourceError> {
    let opts = qrng_feeder::remote::RemoteOptions {
        client: cfg.tls_cert.clone().zip(cfg.tls_key.clone()),
        ca: cfg.ca.clone(),
        token_file: cfg.token_file.clone(),
        timeout: cfg.read_timeout(),
    };
    Ok(Box::new(qrng_feeder::remote::RemoteSource::new(url, &opts)?))
}

/// A remote bridge's HTTPS API: not in this build.
#[cfg(not(feature = "remote"))]
fn remote(_: &Config, url: &str) -> Result<Box<dyn Source>, SourceError> {
    Err(SourceError::Remote {
        url: url.to_owned(),
        message: "this build has no HTTPS client (built without the `remote` feature)".into(),
    })
}

fn main() -> ExitCode {
    let cfg = Config::parse();
    if cfg.status {
        return match kernel::crng_ready() {
            Ok(r) => {
                println!("crng_ready={}", u8::from(r));
                ExitCode::SUCCESS
            }
            Err(e) => {
                log(format!("getrandom failed: {e}"));
                ExitCode::FAILURE
            }
        };
    }
    let pool = match KernelPool::open(&cfg.random_device) {
        Ok(p) => p,
        Err(e) => {
            log(format!(
                "cannot open {} for writing: {e} (run as root or with CAP_SYS_ADMIN)",
                cfg.random_device.display()
            ));
            return ExitCode::FAILURE;
        }
    };
    let source = match open_source(&cfg) {
        Ok(s) => s,
        Err(e) => {
            log(e);
            return ExitCode::FAILURE;
        }
    };
    let mut f = Feeder {
        source,
        pool,
        chunk: cfg.chunk,
        bits_per_byte: cfg.bits_per_byte,
        counters: Default::default(),
    };
    let ready = match f.until_ready(cfg.boot_max_bytes) {
        Ok(true) => {
            log(format!("kernel CRNG ready; {}", f.counters));
            true
        }
        Ok(false) => {
            log(format!(
                "kernel CRNG still not ready after {} bytes; going on at the interval; {}",
                cfg.boot_max_bytes, f.counters
            ));
            false
        }
        Err(e) => {
            log(format!("{e}; {}", f.counters));
            false
        }
    };
    if cfg.once {
        // Already ready at start: add one chunk, so --once always exercises the ioctl.
        if ready && f.counters.bytes_read == 0 {
            if let Err(e) = f.feed_once() {
                log(e);
            }
        }
        let ready = kernel::crng_ready().unwrap_or(false);
        println!("{} crng_ready={}", f.counters, u8::from(ready));
        return if ready && f.counters.ioctl_errors == 0 && f.counters.source_errors == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    loop {
        thread::sleep(cfg.interval());
        match f.feed_once() {
            Ok(()) => log(f.counters),
            Err(e) => log(format!("{e}; {}", f.counters)),
        }
    }
}
