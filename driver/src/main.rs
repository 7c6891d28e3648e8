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
use cli::{ChipModeArg, Cli, Command, EntropyArgs, LogFormat, RunArgs, SampleArg, Sp800_90bArgs};
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
    pub use quantis_driver::entropy::sp800_90b::{
        DEFAULT_ASSESS_SAMPLES, DEFAULT_STARTUP_SAMPLES as DEFAULT_STARTUP_ASSESS_BYTES,
    };
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
        Some(Command::Probe { device, entropy, json, assess, assess_samples, save_samples }) => {
            let sample =
                assess.then_some(ProbeAssess { samples: assess_samples, save: save_samples });
            probe(&device.device, &entropy, json, sample)
        }
        Some(Command::List { json, sysfs }) => {
            let cards = hw::pci::scan(&hw::pci::Sysfs::new(sysfs))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&cards)?);
            } else {
                print!("{}", hw::pci::format_list(&cards));
            }
            Ok(())
        }
        Some(Command::Assess { input, json, sp800_90b }) => assess(input, json, &sp800_90b),
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

/// `probe --assess`: how many raw samples to assess, and where to keep them.
struct ProbeAssess {
    samples: usize,
    save: Option<PathBuf>,
}

/// Reads the input of `assess` (a file, or - for standard input).
fn read_input(input: &std::path::Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if input.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).context("failed to read standard input")?;
    } else {
        bytes =
            std::fs::read(input).with_context(|| format!("failed to read {}", input.display()))?;
    }
    Ok(bytes)
}

fn assess(input: Option<PathBuf>, json: bool, args: &Sp800_90bArgs) -> Result<()> {
    if args.restart {
        return assess_restart(input, json, args);
    }
    let Some(input) = input else {
        bail!("assess needs an input file (or - for standard input)");
    };
    let bytes = read_input(&input)?;
    if args.sp800_90b {
        let data = sp800_90b::Dataset::new(&bytes, args.bits_per_symbol)
            .with_context(|| format!("cannot assess {}", input.display()))?;
        if data.narrower_than_declared {
            eprintln!(
                "quantis-driver: warning: the samples use fewer bits than --bits-per-symbol says"
            );
        }
        if data.symbols.len() < sp800_90b::MIN_SAMPLES {
            eprintln!(
                "quantis-driver: warning: {} samples; SP 800-90B §3.1.1 asks for at least {}",
                data.symbols.len(),
                sp800_90b::MIN_SAMPLES
            );
        }
        let report = sp800_90b::non_iid(&data)?;
        let iid = if args.iid { Some(sp800_90b::iid::iid_tests(&data)?) } else { None };
        if json {
            let mut v = serde_json::to_value(&report)?;
            if let Some(iid) = &iid {
                v["iid"] = serde_json::to_value(iid)?;
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            print!("{report}");
            if let Some(iid) = &iid {
                print!("{iid}");
            }
        }
        return Ok(());
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

/// `assess --restart`: the restart tests on a saved matrix, or on one collected from a card.
fn assess_restart(input: Option<PathBuf>, json: bool, args: &Sp800_90bArgs) -> Result<()> {
    use quantis_driver::entropy::sp800_90b as a90b;
    let matrix = match (&input, &args.device) {
        (Some(path), None) => read_input(path)?,
        (None, Some(uri)) => {
            let mut card = open_card(uri, &CardOptions::default())?;
            eprintln!(
                "quantis-driver: restarting {uri} {} times for the restart matrix",
                a90b::RESTARTS
            );
            let m = a90b::restart_matrix(card.as_mut())?;
            if let Some(save) = &args.save {
                std::fs::write(save, &m)
                    .with_context(|| format!("failed to write {}", save.display()))?;
            }
            m
        }
        _ => bail!("assess --restart takes a saved matrix file or --device, not both"),
    };
    let claim = match args.claim {
        Some(c) => c,
        None => {
            let d = sp800_90b::Dataset::new(&matrix, args.bits_per_symbol)?;
            sp800_90b::non_iid(&d)?.h_assessed
        }
    };
    let report = sp800_90b::restart::restart_tests(&matrix, args.bits_per_symbol, claim)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("restart tests (SP 800-90B §3.1.4), H_I = {:.6} bits per sample", report.h_i);
        println!(
            "sanity check:  largest count of one symbol in a row or column {} (cutoff {}): {}",
            report.max_count,
            report.cutoff,
            if report.sanity_passed { "passed" } else { "FAILED" }
        );
        if let (Some(r), Some(c)) = (report.h_r, report.h_c) {
            println!(
                "H_r = {r:.6}, H_c = {c:.6}; need min(H_r, H_c) >= H_I/2 = {:.6}",
                report.h_i / 2.0
            );
        }
        println!("restart tests: {}", if report.passed { "passed" } else { "FAILED" });
    }
    if !report.passed {
        std::process::exit(2);
    }
    Ok(())
}

fn probe(
    uri: &DeviceUri,
    entropy: &EntropyArgs,
    json: bool,
    sample: Option<ProbeAssess>,
) -> Result<()> {
    let mut dev = hw::open(uri).with_context(|| format!("failed to open {uri}"))?;
    let info = card::probe(dev.as_mut())?;
    let cfg = entropy.config();
    let gate = Gate::new(&EntropyConfig { extractor: ExtractorSpec::None, ..cfg.clone() })?;
    let params = gate.params();
    let assessed = match sample {
        None => None,
        Some(s) => {
            drop(dev);
            Some(probe_assess(uri, &cfg, &s)?)
        }
    };
    if json {
        let mut v = serde_json::json!({ "card": info, "health_tests": params, "extractor": entropy.extractor.to_string() });
        if let Some(r) = &assessed {
            v["sp800_90b"] = serde_json::to_value(r)?;
            v["claim_supported"] = serde_json::Value::Bool(
                !quantis_driver::entropy::sp800_90b::claim_exceeds(cfg.min_entropy, r),
            );
        }
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
    if let Some(r) = &assessed {
        print!("{r}");
        let unit = match cfg.sample {
            SampleWidth::Bit => "bit",
            SampleWidth::Byte => "byte",
        };
        if quantis_driver::entropy::sp800_90b::claim_exceeds(cfg.min_entropy, r) {
            println!(
                "WARNING: the claimed min-entropy {:.3} bits per {unit} exceeds the assessed {:.3}",
                cfg.min_entropy, r.h_assessed
            );
        } else {
            println!(
                "the claimed min-entropy {:.3} bits per {unit} is within the assessed {:.3}",
                cfg.min_entropy, r.h_assessed
            );
        }
    }
    Ok(())
}

/// `probe --assess`: reads a fresh sample of raw bytes and assesses it as the health tests count
/// samples (bytes, or bits).
fn probe_assess(
    uri: &DeviceUri,
    cfg: &EntropyConfig,
    s: &ProbeAssess,
) -> Result<sp800_90b::NonIidReport> {
    use quantis_driver::entropy::sp800_90b as a90b;
    let mut card = open_card(uri, &CardOptions::default())?;
    card.start().with_context(|| format!("failed to start {uri}"))?;
    let mut raw = vec![0u8; s.samples];
    let read = a90b::read_samples(card.as_mut(), &mut raw);
    let _ = card.stop();
    read?;
    if let Some(path) = &s.save {
        std::fs::write(path, &raw)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(a90b::assess_raw(&raw, cfg.sample)?)
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
        startup_assess_bytes: args.startup_assess_bytes,
    };
    let stop = daemon::install_signal_handlers().context("failed to install signal handlers")?;
    match daemon::run(&cfg, stop)? {
        Exit::Shutdown | Exit::DeviceGone => Ok(()),
    }
}
