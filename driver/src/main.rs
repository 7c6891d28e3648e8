//! `quantis-driver`: thin command-line front over the library.
//!
//! ```text
//! quantis-driver --device <uri> --ring <path>      run: publish health-tested entropy into a ring
//! quantis-driver probe --device <uri> [--json]     what the card is; leaves it as found
//! quantis-driver list [--json]                     Quantis cards on this host and how to use them
//! quantis-driver assess <FILE|-> [--json]          SP 800-22 tests on a byte stream
//! quantis-driver make-matrix --device <uri> --out <FILE> [--size 1024x768]
//! ```

mod cli;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cli::{ChipModeArg, Cli, Command, EntropyArgs, LogFormat, RunArgs, SampleArg};
use qrng_ring::RingOptions;
use quantis_driver::card::{self, CardOptions, ChipMode};
use quantis_driver::daemon::{self, Exit};
use quantis_driver::entropy::{self, EntropyConfig, ExtractorSpec, Gate, SampleWidth};
use quantis_driver::hw::{self, DeviceUri};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// What the command line (`cli.rs`) takes from the library. `build.rs` compiles `cli.rs` against
/// stand-ins of these names; the man page test compares the defaults it prints with `--help`.
mod cli_lib {
    pub use qrng_ring::layout::MAX_CAPACITY as MAX_RING_CAPACITY;
    pub use quantis_driver::daemon::DEFAULT_NO_DATA_INTERVALS;
    pub use quantis_driver::entropy::{
        ExtractorSpec, Shape, DEFAULT_ELEMENTARY, DEFAULT_UNDERSAMPLING,
    };
    pub use quantis_driver::hw::DeviceUri;

    pub fn parse_shape(s: &str) -> Result<Shape, String> {
        Shape::OFFERED
            .iter()
            .copied()
            .find(|sh| format!("{}x{}", sh.n, sh.k) == s)
            .ok_or_else(|| format!("{s:?} is not a matrix size (1024x768 or 2048x1792)"))
    }
}

impl EntropyArgs {
    fn config(&self) -> EntropyConfig {
        let sample = match self.sample_width {
            SampleArg::Bit => SampleWidth::Bit,
            SampleArg::Byte => SampleWidth::Byte,
        };
        EntropyConfig {
            min_entropy: self
                .min_entropy
                .unwrap_or_else(|| EntropyConfig::default_min_entropy(sample)),
            alpha_log2: self.alpha_log2,
            sample,
            extractor: self.extractor.clone(),
        }
    }
}

fn resolve_group(g: &str) -> Result<u32> {
    if let Ok(n) = g.parse() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(g).context("failed to look up the ring group")? {
        Some(gr) => Ok(gr.gid.as_raw()),
        None => bail!("no such group {g:?} for --ring-group"),
    }
}

fn init_logging(format: LogFormat) {
    qrng_logging::init(matches!(format, LogFormat::Json));
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Err(e) = real_main(cli) {
        eprintln!("quantis-driver: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    if cli.command.is_some() {
        daemon::default_sigpipe();
    }
    match cli.command {
        None => run(cli.run),
        Some(Command::Probe { device, entropy, json }) => probe(&device.device, &entropy, json),
        Some(Command::List { json, sysfs }) => {
            let cards = hw::pci::scan(&hw::pci::Sysfs::new(sysfs))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&cards)?);
            } else {
                print!("{}", hw::pci::format_list(&cards));
            }
            Ok(())
        }
        Some(Command::Assess { input, json }) => {
            let mut bytes = Vec::new();
            if input.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .context("failed to read standard input")?;
            } else {
                bytes = std::fs::read(&input)
                    .with_context(|| format!("failed to read {}", input.display()))?;
            }
            let report = entropy::assess(&bytes);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            if !report.passed {
                std::process::exit(2);
            }
            Ok(())
        }
        Some(Command::MakeMatrix { device, out, size, elementary, every_nth }) => {
            let mut card = open_card(&device.device, &CardOptions::default())?;
            card.start().with_context(|| format!("failed to start {}", device.device))?;
            let result = entropy::make_matrix_file(&out, size, elementary, every_nth, |buf| {
                read_exact(card.as_mut(), buf)
            });
            let _ = card.stop();
            result?;
            println!("wrote {}x{} matrix to {}", size.n, size.k, out.display());
            Ok(())
        }
    }
}

fn open_card(uri: &DeviceUri, opts: &CardOptions) -> Result<Box<dyn card::Card>> {
    let dev = hw::open(uri).with_context(|| format!("failed to open {uri}"))?;
    Ok(card::open(dev, opts)?)
}

/// Fills `buf` from the card (raw bytes, for seeds and matrices).
fn read_exact(card: &mut dyn card::Card, buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        done += card.read(&mut buf[done..]).map_err(std::io::Error::other)?;
    }
    Ok(())
}

fn probe(uri: &DeviceUri, entropy: &EntropyArgs, json: bool) -> Result<()> {
    let mut dev = hw::open(uri).with_context(|| format!("failed to open {uri}"))?;
    let info = card::probe(dev.as_mut())?;
    let cfg = entropy.config();
    let gate = Gate::new(&EntropyConfig { extractor: ExtractorSpec::None, ..cfg })?;
    let params = gate.params();
    if json {
        let v = serde_json::json!({ "card": info, "health_tests": params, "extractor": entropy.extractor.to_string() });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("device:        {}{}", info.device, if info.simulated { "  (SIMULATED)" } else { "" });
    println!("model:         {} ({:?} card, PCI id {})", info.model, info.family, info.pci_id);
    println!("serial:        {}", info.serial.as_deref().unwrap_or("-"));
    println!("version:       {} (raw {:#010x})", info.version, info.version_raw);
    println!(
        "modules:       present {:#x}, healthy {:#x}",
        info.modules_present, info.modules_healthy
    );
    println!("rate:          {} bytes/s", info.rate_bytes_per_s);
    for (i, bar) in info.bars.iter().enumerate() {
        if let Some(len) = bar {
            println!("BAR {i}:         {len:#x} bytes");
        }
    }
    println!(
        "health tests:  H = {:.3} bits/sample, RCT cutoff {}, APT cutoff {} in a window of {}",
        f64::from(params.min_entropy_milli) / 1000.0,
        params.rct_cutoff,
        params.apt_cutoff,
        params.apt_window
    );
    Ok(())
}

fn run(args: RunArgs) -> Result<()> {
    let Some(device) = args.device else {
        bail!("--device is required (vfio:<pci-address>, uio:<pci-address> or sim:<model>); see --help");
    };
    let group = args.ring_group.as_deref().map(resolve_group).transpose()?;
    let mut entropy = args.entropy.config();
    if let ExtractorSpec::Toeplitz(None) = entropy.extractor {
        // First use without a seed file: make one from the card and say where it is.
        let path = PathBuf::from(entropy::DEFAULT_TOEPLITZ_SEED);
        if !path.exists() {
            let mut card = open_card(&device, &CardOptions::default())?;
            card.start()?;
            let made = entropy::ensure_toeplitz_seed(&path, |buf| read_exact(card.as_mut(), buf));
            let _ = card.stop();
            let made = made?;
            eprintln!("quantis-driver: created Toeplitz seed {} from the card", made.display());
        }
        entropy.extractor = ExtractorSpec::Toeplitz(Some(path));
    }
    let cfg = daemon::Config {
        device,
        ring: args.ring,
        ring_options: RingOptions { capacity: args.ring_size, mode: args.ring_mode, group },
        card: CardOptions {
            modules: args.modules,
            chip_mode: match args.chip_mode {
                ChipModeArg::Rng => ChipMode::Rng,
                ChipModeArg::Sample => ChipMode::Sample,
            },
            ..CardOptions::default()
        },
        entropy,
        max_recoveries: args.max_recoveries,
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(10)),
        no_data_intervals: args.no_data_intervals,
    };
    let stop = daemon::install_signal_handlers().context("failed to install signal handlers")?;
    match daemon::run(&cfg, stop)? {
        Exit::Shutdown | Exit::DeviceGone => Ok(()),
    }
}
