//! `qrng-beacon-verify`: checks a range of beacon pulses, from a bridge over HTTP or from its
//! database: signatures, certificate ids, output values, the links between pulses (previous,
//! precommitments, time and status codes) and the hour/day/month/year skip list. Exits 0 when
//! the range verifies, 1 when it does not, 2 on usage or access errors. docs/beacon.md.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use qrng_bridge::beacon::client::HttpSource;
use qrng_bridge::beacon::verify::{Source, Verifier, VerifyError};
use qrng_bridge::beacon::Store;

/// Verifies a range of randomness beacon pulses (NIST beacon 2.0 format).
#[derive(Debug, Parser)]
#[command(name = "qrng-beacon-verify", version, about)]
struct Args {
    /// Base URL of the beacon (http:// only), e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL", conflicts_with = "db", required_unless_present = "db")]
    url: Option<String>,
    /// The bridge's beacon database (--beacon-db), read-only use.
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Chain to check. Default: the chain of the latest pulse.
    #[arg(long)]
    chain: Option<u64>,
    /// First pulse index. Default: 1.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Last pulse index. Default: the chain's last pulse.
    #[arg(long)]
    to: Option<u64>,
    /// The beacon's certificate (PEM or DER), obtained out of band: every pulse must be signed
    /// by it. Without it, each pulse is checked against the certificate the source serves under
    /// its certificateId (consistency, not origin).
    #[arg(long, value_name = "PATH")]
    certificate: Option<PathBuf>,
}

fn run<S: Source>(src: S, args: &Args, pinned: Option<&[u8]>) -> Result<String, (u8, String)> {
    let access = |e: VerifyError| (2, e.to_string());
    let mut v = Verifier::new(src, pinned).map_err(access)?;
    let chain = match args.chain {
        Some(c) => c,
        None => {
            v.last(None)
                .map_err(access)?
                .ok_or((2, "the beacon has no pulse".to_owned()))?
                .chain_index
        }
    };
    let to = match args.to {
        Some(t) => t,
        None => {
            v.last(Some(chain))
                .map_err(access)?
                .ok_or((2, format!("chain {chain} has no pulse")))?
                .pulse_index
        }
    };
    let s = v.verify_range(chain, args.from, to).map_err(|e| match e {
        VerifyError::Source(_) => (2, e.to_string()),
        e => (1, e.to_string()),
    })?;
    Ok(format!(
        "ok: chain {} pulses {}..={} verified ({} referenced pulses checked too)",
        s.chain, s.from, s.to, s.referenced
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let pinned = match &args.certificate {
        Some(p) => match std::fs::read(p) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("qrng-beacon-verify: cannot read {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let result = match (&args.url, &args.db) {
        (Some(url), _) => HttpSource::new(url)
            .map_err(|e| (2, e.to_string()))
            .and_then(|s| run(s, &args, pinned.as_deref())),
        (None, Some(db)) => match Store::open_read_only(db) {
            Ok(store) => run(&store, &args, pinned.as_deref()),
            Err(e) => Err((2, format!("{e}"))),
        },
        (None, None) => Err((2, "give --url or --db".to_owned())),
    };
    match result {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err((code, msg)) => {
            eprintln!("qrng-beacon-verify: FAILED: {msg}");
            ExitCode::from(code)
        }
    }
}
