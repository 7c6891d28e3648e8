//! `quantis-driver`: thin command-line front over the library.
//!
//! ```text
//! quantis-driver --device <uri> --ring <path>      run: publish health-tested entropy into a ring
//! quantis-driver probe --device <uri> [--json]     what the card is; leaves it as found
//! quantis-driver list [--json]                     Quantis cards on this host and how to use them
//! quantis-driver assess <FILE|-> [--json]          SP 800-22 tests on a byte stream
//! quantis-driver make-matrix --device <uri> --out <FILE> [--size 1024x768]
//! ```

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use qrng_ring::RingOptions;
use quantis_driver::card::{self, CardOptions, ChipMode};
use quantis_driver::daemon::{self, Exit};
use quantis_driver::entropy::{self, EntropyConfig, ExtractorSpec, Gate, SampleWidth, Shape};
use quantis_driver::hw::{self, DeviceUri};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "quantis-driver",
    version,
    about = "Userspace driver for ID Quantique Quantis QRNG cards"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "QRNG_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show what a card is (model, serial, versions, modules, BARs, health-test cutoffs); leaves it as found.
    Probe {
        #[command(flatten)]
        device: DeviceArg,
        #[command(flatten)]
        entropy: EntropyArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the Quantis cards on this host, their kernel driver, IOMMU group and what to do to use them.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// sysfs root (for tests).
        #[arg(long, default_value = "/sys", hide = true)]
        sysfs: PathBuf,
    },
    /// Run the NIST SP 800-22 tests on a byte stream (a file, or - for standard input).
    Assess {
        input: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build an IDQ-layout extractor matrix from a card's own bytes (written with mode 0600).
    MakeMatrix {
        #[command(flatten)]
        device: DeviceArg,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Matrix shape: 1024x768 or 2048x1792.
        #[arg(long, default_value = "1024x768", value_parser = parse_shape)]
        size: Shape,
        /// Elementary matrices XORed together (≥ 2).
        #[arg(long, default_value_t = entropy::DEFAULT_ELEMENTARY)]
        elementary: usize,
        /// Keep the low bit of every Nth byte (N ≥ 13).
        #[arg(long, default_value_t = entropy::DEFAULT_UNDERSAMPLING)]
        every_nth: usize,
    },
}

#[derive(Args, Debug, Clone)]
struct DeviceArg {
    /// The card: vfio:<pci-address>, uio:<pci-address> or sim:<model>[?key=value&…]
    /// (models pcie-4m, pcie-16m, pcie-40m, pcie-240m).
    #[arg(long, env = "QRNG_DEVICE")]
    device: DeviceUri,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The card: vfio:<pci-address>, uio:<pci-address> or sim:<model>[?key=value&…].
    #[arg(long, env = "QRNG_DEVICE")]
    device: Option<DeviceUri>,
    /// The ring file to publish into (created if missing; re-attached, keeping unread bytes, if present).
    #[arg(long, env = "QRNG_RING", default_value = "/run/qrng/qrng0.ring")]
    ring: PathBuf,
    /// Size of a new ring's data area: a power of two from 4K to 1G (suffixes K, M, G; binary).
    #[arg(long, env = "QRNG_RING_SIZE", default_value = "16M", value_parser = parse_size)]
    ring_size: u64,
    /// Permission bits of a new ring file (octal).
    #[arg(long, default_value = "640", value_parser = parse_mode)]
    ring_mode: u32,
    /// Group of a new ring file (name or number).
    #[arg(long)]
    ring_group: Option<String>,
    /// Module mask to enable on module cards (default: every module present).
    #[arg(long, value_parser = parse_mask)]
    modules: Option<u32>,
    /// Chip cards' output mode.
    #[arg(long, value_enum, default_value_t = ChipModeArg::Rng)]
    chip_mode: ChipModeArg,
    #[command(flatten)]
    entropy: EntropyArgs,
    /// Consecutive failed recoveries after which the source stays FAILED.
    #[arg(long, default_value_t = 5)]
    max_recoveries: u32,
    /// Heartbeat (and watchdog) period in milliseconds.
    #[arg(long, default_value_t = 250)]
    heartbeat_ms: u64,
    /// Data watchdog: raise the no-data alarm after this many times the time the card needs for
    /// 4 KiB at its nominal rate without a byte (0: off). The default allows about one false
    /// alarm in a million years on the fastest card (docs/entropy.md, "Data watchdog").
    #[arg(long, default_value_t = daemon::DEFAULT_NO_DATA_INTERVALS)]
    no_data_intervals: u32,
}

#[derive(Args, Debug, Clone)]
struct EntropyArgs {
    /// Conditioning: none, von-neumann, matrix[:FILE] or toeplitz[:FILE] (files default to /var/lib/qrng).
    #[arg(long, env = "QRNG_EXTRACTOR", default_value = "none")]
    extractor: ExtractorSpec,
    /// Claimed min-entropy per raw sample in bits (default: 6.4 per byte, 0.8 per bit).
    #[arg(long)]
    min_entropy: Option<f64>,
    /// False-alarm probability of the health tests: alpha = 2^-N.
    #[arg(long, default_value_t = 30)]
    alpha_log2: u32,
    /// Raw sample width the health tests work on.
    #[arg(long, value_enum, default_value_t = SampleArg::Byte)]
    sample_width: SampleArg,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ChipModeArg {
    Rng,
    Sample,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum SampleArg {
    Bit,
    Byte,
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

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches("iB").trim_end_matches('B');
    let (num, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (e.g. 16M, 65536)"))?;
    let v = n
        .checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if !v.is_power_of_two() || v < 4096 {
        return Err(format!("{s:?} must be a power of two of at least 4K"));
    }
    // The bridge refuses larger rings (docs/ring-abi.md, "Trust model").
    if v > qrng_ring::layout::MAX_CAPACITY {
        return Err(format!(
            "{s:?} is larger than the largest ring, {}M",
            qrng_ring::layout::MAX_CAPACITY >> 20
        ));
    }
    Ok(v)
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal permission mode (e.g. 640)"))?;
    // qrng-bridge refuses such rings: whoever can write a ring feeds bytes to every client.
    if mode & 0o022 != 0 {
        return Err(format!(
            "{s:?} lets the group or others write the ring, which qrng-bridge refuses (e.g. 640)"
        ));
    }
    Ok(mode)
}

fn parse_mask(s: &str) -> Result<u32, String> {
    let v = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    v.ok()
        .filter(|m| *m != 0)
        .ok_or_else(|| format!("{s:?} is not a non-zero module mask (e.g. 0xf)"))
}

fn parse_shape(s: &str) -> Result<Shape, String> {
    Shape::OFFERED
        .iter()
        .copied()
        .find(|sh| format!("{}x{}", sh.n, sh.k) == s)
        .ok_or_else(|| format!("{s:?} is not a matrix size (1024x768 or 2048x1792)"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1G"), Ok(qrng_ring::layout::MAX_CAPACITY));
        assert!(parse_size("2G").is_err(), "larger than any ring a consumer attaches to");
        for bad in ["", "3M", "1K", "x", "99999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("660").is_err() && parse_mode("646").is_err());
        assert_eq!(parse_mask("0xf"), Ok(15));
        assert!(parse_mask("0").is_err());
    }
}
