//! The command line of `quantis-driver` (clap derive). This file is compiled twice: into the
//! binary, and by `build.rs`, which renders the man page quantis-driver(8) and the bash, zsh and fish
//! completions from it, so they never drift from `--help`. It names nothing from the library except
//! through `crate::cli_lib` (in main.rs: re-exports; in build.rs: stand-ins that only have to
//! parse, because the build script renders help text and never runs a value parser).

use crate::cli_lib::{
    parse_shape, DeviceUri, ExtractorSpec, Shape, DEFAULT_ASSESS_SAMPLES, DEFAULT_ELEMENTARY,
    DEFAULT_NO_DATA_INTERVALS, DEFAULT_STARTUP_ASSESS_BYTES, DEFAULT_UNDERSAMPLING,
    MAX_RING_CAPACITY,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "quantis-driver",
    version,
    about = "Userspace driver for ID Quantique Quantis QRNG cards"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "QRNG_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show what a card is (model, serial, versions, modules, BARs, health-test cutoffs); leaves it as found.
    Probe {
        #[command(flatten)]
        device: DeviceArg,
        #[command(flatten)]
        entropy: EntropyArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Also assess a fresh sample of the card's raw output with SP 800-90B (non-IID track, one
        /// sample per byte) and compare with --min-entropy.
        #[arg(long)]
        assess: bool,
        /// Samples (bytes) to assess with --assess.
        #[arg(long, default_value_t = DEFAULT_ASSESS_SAMPLES, requires = "assess")]
        assess_samples: usize,
        /// Write the assessed samples to this file (for NIST's ea_non_iid).
        #[arg(long, requires = "assess")]
        save_samples: Option<PathBuf>,
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
    /// Run the NIST SP 800-22 tests on a byte stream (a file, or - for standard input); with
    /// --sp800-90b the SP 800-90B entropy assessment of raw samples, one per byte; with --restart the
    /// SP 800-90B restart tests.
    Assess {
        /// The samples (a file, or - for standard input). With --restart: a saved restart matrix
        /// (1000 rows of 1000 samples, row by row), or none to collect one from --device.
        input: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sp800_90b: Sp800_90bArgs,
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
        #[arg(long, default_value_t = DEFAULT_ELEMENTARY)]
        elementary: usize,
        /// Keep the low bit of every Nth byte (N ≥ 13).
        #[arg(long, default_value_t = DEFAULT_UNDERSAMPLING)]
        every_nth: usize,
    },
}

/// SP 800-90B entropy assessment (docs/entropy.md, "Assessing a card with SP 800-90B").
#[derive(Args, Debug, Clone)]
pub struct Sp800_90bArgs {
    /// Assess the samples with SP 800-90B: the ten non-IID estimators (§6.3), H_original,
    /// H_bitstring and the assessed min-entropy.
    #[arg(long = "sp800-90b")]
    pub sp800_90b: bool,
    /// Also run the IID track: the permutation tests (§5.1, up to 10,000 shuffles from a fixed
    /// seed), the chi-square and LRS tests (§5.2), and the IID estimates.
    #[arg(long, requires = "sp800_90b")]
    pub iid: bool,
    /// Bits per sample, 1 to 8 (default: the highest bit set in any sample).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub bits_per_symbol: Option<u32>,
    /// Run the restart tests (§3.1.4) on a 1000 × 1000 restart matrix: the input file, or one
    /// collected from --device by resetting the card 1000 times.
    #[arg(long, conflicts_with = "sp800_90b")]
    pub restart: bool,
    /// The card to collect the restart matrix from (vfio:<pci-address>, uio:<pci-address> or
    /// sim:<model>[?key=value&…]).
    #[arg(long, requires = "restart")]
    pub device: Option<DeviceUri>,
    /// Write the collected restart matrix here (1,000,000 samples, row by row), for NIST's ea_restart.
    #[arg(long, requires = "device")]
    pub save: Option<PathBuf>,
    /// The entropy per sample claimed for the restart tests (default: the assessed min-entropy of the
    /// matrix's rows, concatenated).
    #[arg(long, requires = "restart")]
    pub claim: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct DeviceArg {
    /// The card: vfio:<pci-address>, uio:<pci-address> or sim:<model>[?key=value&…]
    /// (models pcie-4m, pcie-16m, pcie-40m, pcie-240m).
    #[arg(long, env = "QRNG_DEVICE")]
    pub device: DeviceUri,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The card: vfio:<pci-address>, uio:<pci-address> or sim:<model>[?key=value&…].
    #[arg(long, env = "QRNG_DEVICE")]
    pub device: Option<DeviceUri>,
    /// The ring file to publish into (created if missing; re-attached, keeping unread bytes, if present).
    #[arg(long, env = "QRNG_RING", default_value = "/run/qrng/qrng0.ring")]
    pub ring: PathBuf,
    /// Size of a new ring's data area: a power of two from 4K to 1G (suffixes K, M, G; binary).
    #[arg(long, env = "QRNG_RING_SIZE", default_value = "16M", value_parser = parse_size)]
    pub ring_size: u64,
    /// Permission bits of a new ring file (octal).
    #[arg(long, default_value = "640", value_parser = parse_mode)]
    pub ring_mode: u32,
    /// Group of a new ring file (name or number).
    #[arg(long)]
    pub ring_group: Option<String>,
    /// Module mask to enable on module cards (default: every module present).
    #[arg(long, value_parser = parse_mask)]
    pub modules: Option<u32>,
    /// Chip cards' output mode.
    #[arg(long, value_enum, default_value_t = ChipModeArg::Rng)]
    pub chip_mode: ChipModeArg,
    #[command(flatten)]
    pub entropy: EntropyArgs,
    /// Consecutive failed recoveries after which the source stays FAILED.
    #[arg(long, default_value_t = 5)]
    pub max_recoveries: u32,
    /// Heartbeat (and watchdog) period in milliseconds.
    #[arg(long, default_value_t = 250)]
    pub heartbeat_ms: u64,
    /// Data watchdog: raise the no-data alarm after this many times the time the card needs for
    /// 4 KiB at its nominal rate without a byte (0: off). The default allows about one false
    /// alarm in a million years on the fastest card (docs/entropy.md, "Data watchdog").
    #[arg(long, default_value_t = DEFAULT_NO_DATA_INTERVALS)]
    pub no_data_intervals: u32,
    /// Start-up SP 800-90B assessment: assess the first N raw bytes the card delivers (the
    /// non-IID track, on a background thread; publishing does not wait) and warn when
    /// --min-entropy exceeds the result (0: off). docs/entropy.md, "Assessing a card with SP 800-90B".
    #[arg(long, default_value_t = DEFAULT_STARTUP_ASSESS_BYTES)]
    pub startup_assess_bytes: usize,
}

#[derive(Args, Debug, Clone)]
pub struct EntropyArgs {
    /// Conditioning: none, von-neumann, matrix[:FILE] or toeplitz[:FILE] (files default to /var/lib/qrng).
    #[arg(long, env = "QRNG_EXTRACTOR", default_value = "none")]
    pub extractor: ExtractorSpec,
    /// Claimed min-entropy per raw sample in bits (default: 6.4 per byte, 0.8 per bit).
    #[arg(long)]
    pub min_entropy: Option<f64>,
    /// False-alarm probability of the health tests: alpha = 2^-N.
    #[arg(long, default_value_t = 30)]
    pub alpha_log2: u32,
    /// Raw sample width the health tests work on.
    #[arg(long, value_enum, default_value_t = SampleArg::Byte)]
    pub sample_width: SampleArg,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ChipModeArg {
    Rng,
    Sample,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum SampleArg {
    Bit,
    Byte,
}

pub fn parse_size(s: &str) -> Result<u64, String> {
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
    if v > MAX_RING_CAPACITY {
        return Err(format!("{s:?} is larger than the largest ring, {}M", MAX_RING_CAPACITY >> 20));
    }
    Ok(v)
}

pub fn parse_mode(s: &str) -> Result<u32, String> {
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

pub fn parse_mask(s: &str) -> Result<u32, String> {
    let v = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    v.ok()
        .filter(|m| *m != 0)
        .ok_or_else(|| format!("{s:?} is not a non-zero module mask (e.g. 0xf)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1G"), Ok(MAX_RING_CAPACITY));
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
