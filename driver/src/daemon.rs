//! The driver daemon: one card in, one ring out.
//!
//! ```text
//! card.read ──raw──► Gate (SP 800-90B health tests, extractor) ──tested──► ring.write
//!      │                      │ alarm                                          ▲
//!      └── card error ────────┴──► FAILED + reason, count, reset card, ────────┘ (start-up test
//!                                  restart tests; after N failures stay FAILED     again first)
//! ```
//!
//! Publishing is fail-closed: a batch that raised an alarm is never written, and after any alarm
//! or card error nothing is written until a fresh start-up test has passed (see docs/entropy.md).
//! A card that delivers nothing for longer than its data watchdog allows ([`no_data_limit`])
//! raises the `no-data` alarm and is reset like any other. The counters obey the invariant in
//! docs/ring-abi.md ("Counters").
//! The status line (health, counters, heartbeat) is kept current; under systemd the daemon sends
//! READY once the ring is published and feeds the watchdog with the heartbeat.

use crate::card::prefetch::Prefetch;
use crate::card::{self, CardOptions};
use crate::entropy::sp800_90b::StartupCheck;
use crate::entropy::{EntropyConfig, Gate};
use crate::hw::{self, DeviceUri};
use qrng_ring::{self as ring, Health, Identity, Producer, Reason, RingOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Everything `quantis-driver --device … --ring …` needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub device: DeviceUri,
    pub ring: PathBuf,
    pub ring_options: RingOptions,
    pub card: CardOptions,
    pub entropy: EntropyConfig,
    /// Consecutive failed recoveries after which the ring stays FAILED.
    pub max_recoveries: u32,
    /// How often the heartbeat, counters and watchdog are refreshed.
    pub heartbeat: Duration,
    /// Data watchdog: the `no-data` alarm is raised after this many [`WATCHDOG_UNIT`] intervals
    /// without a byte (see [`no_data_limit`]); 0 turns the watchdog off.
    pub no_data_intervals: u32,
    /// Raw bytes the start-up SP 800-90B assessment takes from the first the card delivers
    /// (0: off). See [`crate::entropy::sp800_90b::StartupCheck`].
    pub startup_assess_bytes: usize,
}

/// The data watchdog's unit: the time the card needs, at its nominal rate, to deliver 4 KiB
/// (a module card's FIFO, one chip-card DMA buffer).
pub const WATCHDOG_UNIT: u64 = 4096;

/// Default of [`Config::no_data_intervals`]. Modelling deliveries of [`WATCHDOG_UNIT`] bytes as a
/// Poisson process with mean interval T (far burstier than a card whose every 4 KiB sums tens of
/// thousands of photon detections), a gap of N·T follows a delivery with probability e^−N, so
/// false alarms come at (1 year / T)·e^−N a year. The fastest card (PCIe-240M, 30 MB/s:
/// T = 137 µs, 2.3·10^11 intervals a year) gives 1.0·10^−6 a year at N = 40; every slower card
/// gives fewer. See docs/entropy.md ("Data watchdog").
pub const DEFAULT_NO_DATA_INTERVALS: u32 = 40;

/// How long a card may deliver nothing before the `no-data` alarm: `intervals` × the time it
/// needs for [`WATCHDOG_UNIT`] bytes at `rate_bytes_per_s`. `None` if the watchdog is off or the
/// rate is unknown.
pub fn no_data_limit(intervals: u32, rate_bytes_per_s: u64) -> Option<Duration> {
    if intervals == 0 || rate_bytes_per_s == 0 {
        return None;
    }
    let unit = WATCHDOG_UNIT as f64 / rate_bytes_per_s as f64;
    Some(Duration::from_secs_f64(f64::from(intervals) * unit))
}

/// Errors that stop the daemon before or while it runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Hw(#[from] hw::Error),
    #[error(transparent)]
    Card(#[from] card::Error),
    #[error(transparent)]
    Entropy(#[from] crate::entropy::Error),
    #[error(transparent)]
    Ring(#[from] ring::Error),
    #[error("failed to start the card reader thread for {device}")]
    Thread {
        device: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why [`run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT: card stopped, ring marked STOPPED.
    Shutdown,
    /// The card disappeared (surprise removal): ring marked STOPPED with reason "device gone".
    DeviceGone,
}

/// Bytes asked of the card per read: large enough to amortise the per-call cost at full speed,
/// small enough that a failing batch wastes little.
const BATCH: usize = 256 << 10;

/// Runs until `stop` is set or the card goes away.
pub fn run(cfg: &Config, stop: &AtomicBool) -> Result<Exit> {
    // Everything that can fail on bad configuration fails here, before the card is touched.
    let mut gate = Gate::new(&cfg.entropy)?;
    let dev = hw::open(&cfg.device)?;
    let card = card::open(dev, &cfg.card)?;
    let mut ring = Producer::open(&cfg.ring, &cfg.ring_options)?;
    let info = card.info().clone();
    // The next batch is read while this one is tested and published (see card::prefetch).
    let mut card = Prefetch::new(card, BATCH)
        .map_err(|source| Error::Thread { device: info.device.clone(), source })?;
    if ring.capacity() != cfg.ring_options.capacity {
        tracing::warn!(
            ring = %cfg.ring.display(),
            capacity = ring.capacity(),
            asked = cfg.ring_options.capacity,
            "existing ring keeps its capacity (unread bytes are kept); remove the file to resize"
        );
    }
    ring.set_identity(&identity(&info, &gate));
    ring.set_health_params(&gate.params());
    ring.heartbeat();
    tracing::info!(
        device = %cfg.device, model = %info.model, simulated = info.simulated,
        ring = %cfg.ring.display(), epoch = ring.epoch(), extractor = gate.extractor_name(),
        "card opened; running start-up tests"
    );

    let mut pump = Pump::new(&mut card, &mut gate, &mut ring, cfg);
    let exit = pump.run(stop);
    let exit = match exit {
        Ok(e) => e,
        Err(e) => {
            ring.set_health(Health::Failed, Reason::Other);
            ring.heartbeat();
            let _ = card.stop();
            return Err(e);
        }
    };
    match exit {
        Exit::Shutdown => {
            ring.set_health(Health::Stopped, Reason::Shutdown);
            tracing::info!("stopped: card shut down, ring marked STOPPED");
        }
        Exit::DeviceGone => {
            ring.set_health(Health::Stopped, Reason::DeviceGone);
            tracing::error!(device = %cfg.device, "card is gone (unplugged?): ring marked STOPPED");
        }
    }
    ring.heartbeat();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    Ok(exit)
}

/// What the ring's status line says about the card. Chip cards report their chips only after
/// start-up, so this is published again after every start.
fn identity(info: &card::CardInfo, gate: &Gate) -> Identity {
    let serial = info
        .serial
        .clone()
        .unwrap_or_else(|| if info.simulated { "simulated" } else { "unknown" }.to_owned());
    Identity {
        model: info.model.clone(),
        serial,
        modules: info.modules_healthy,
        simulated: info.simulated,
        extractor: gate.extractor_name().to_owned(),
        board_version: info.version_raw,
        modules_present: info.modules_present,
        family: Some(match info.family {
            card::Family::Module => ring::CardFamily::Module,
            card::Family::Chip => ring::CardFamily::Chip,
        }),
        chip_mode: info.chip_mode.map(|m| match m {
            card::ChipMode::Rng => ring::ChipMode::Rng,
            card::ChipMode::Sample => ring::ChipMode::Sample,
        }),
    }
}

/// The read → test → publish loop and its recovery state.
struct Pump<'a> {
    card: &'a mut Prefetch,
    gate: &'a mut Gate,
    ring: &'a mut Producer,
    cfg: &'a Config,
    health: Health,
    /// Failed recoveries since the source was last OK.
    failures: u32,
    /// Card-layer losses (overflow, warm-up, read-ahead thrown away) already added to the ring.
    card_dropped_seen: u64,
    /// Start-up samples withheld by the gate, already added to the ring.
    startup_seen: u64,
    last_beat: Instant,
    ready_sent: bool,
    watchdog: Option<Duration>,
    /// Copies the first raw bytes for the start-up assessment, once per daemon run.
    startup_check: Option<StartupCheck>,
}

impl<'a> Pump<'a> {
    fn new(
        card: &'a mut Prefetch,
        gate: &'a mut Gate,
        ring: &'a mut Producer,
        cfg: &'a Config,
    ) -> Self {
        Pump {
            card,
            gate,
            ring,
            cfg,
            health: Health::Starting,
            failures: 0,
            card_dropped_seen: 0,
            startup_seen: 0,
            last_beat: Instant::now(),
            ready_sent: false,
            watchdog: sd_notify::watchdog_enabled(),
            startup_check: StartupCheck::new(
                cfg.startup_assess_bytes,
                cfg.entropy.min_entropy,
                cfg.entropy.sample,
            ),
        }
    }

    fn run(&mut self, stop: &AtomicBool) -> Result<Exit> {
        let mut out = Vec::with_capacity(BATCH);
        let mut pending = 0..0;
        let started = self.card.start();
        self.ring.set_identity(&identity(self.card.info(), self.gate));
        self.gate.restart();
        self.notify_ready();
        if let Err(e) = started {
            if e.is_device_gone() {
                return Ok(Exit::DeviceGone);
            }
            self.alarm(e.reason(), &e.to_string());
            if let Some(exit) = self.recover(stop) {
                return Ok(exit);
            }
        }
        let exit = self.pump(stop, &mut out, &mut pending)?;
        // Everything taken from the card is accounted for before the counters are left.
        if exit == Exit::Shutdown {
            if let Err(e) = self.card.stop() {
                tracing::warn!(error = %e, "failed to stop the card cleanly");
            }
        }
        self.sync_counters();
        if self.gate.extractor_name() == "none" {
            // Tested bytes the ring had no room for: raw bytes, never published.
            self.ring.add_counters(0, 0, pending.len() as u64);
        }
        Ok(exit)
    }

    fn pump(
        &mut self,
        stop: &AtomicBool,
        out: &mut Vec<u8>,
        pending: &mut std::ops::Range<usize>,
    ) -> Result<Exit> {
        while !stop.load(Ordering::Relaxed) {
            self.tick();
            if self.health == Health::Failed && self.failures > self.cfg.max_recoveries {
                // Given up: stay FAILED, keep the heartbeat so clients see a live, failed source.
                std::thread::sleep(self.cfg.heartbeat.min(Duration::from_millis(200)));
                continue;
            }
            // Publish what is waiting before reading more. When the ring is full, pause reading:
            // the card then overflows (counted by the card layer) rather than us testing bytes
            // only to throw them away.
            if pending.start < pending.end {
                let n = self.ring.write(&out[pending.clone()])?;
                pending.start += n;
                if pending.start < pending.end {
                    std::thread::sleep(Duration::from_millis(2));
                }
                continue;
            }
            let raw = match self.card.read() {
                Ok(raw) => raw,
                Err(e) if e.is_device_gone() => return Ok(Exit::DeviceGone),
                Err(e) => {
                    self.alarm(e.reason(), &e.to_string());
                    if let Some(exit) = self.recover(stop) {
                        return Ok(exit);
                    }
                    continue;
                }
            };
            let n = raw.len();
            if n == 0 {
                let limit =
                    no_data_limit(self.cfg.no_data_intervals, self.card.info().rate_bytes_per_s);
                let empty = self.card.empty_for();
                if let Some(limit) = limit.filter(|l| empty >= *l) {
                    let detail = format!(
                        "no bytes for {} ms (limit {} ms: {} × the time for {WATCHDOG_UNIT} bytes at {} bytes/s)",
                        empty.as_millis(),
                        limit.as_millis(),
                        self.cfg.no_data_intervals,
                        self.card.info().rate_bytes_per_s
                    );
                    self.alarm(Reason::NoData, &detail);
                    if let Some(exit) = self.recover(stop) {
                        return Ok(exit);
                    }
                }
                continue;
            }
            self.ring.add_counters(n as u64, 0, 0);
            if let Some(check) = &mut self.startup_check {
                check.feed(raw);
            }
            out.clear();
            match self.gate.process(raw, out) {
                Ok(()) => {
                    // Start-up samples passed the tests but are withheld, never published.
                    let withheld = self.gate.startup_withheld();
                    self.ring.add_counters(0, 0, withheld - self.startup_seen);
                    self.startup_seen = withheld;
                    if self.gate.started() && self.health != Health::Ok {
                        self.set_health(Health::Ok, Reason::None);
                        self.failures = 0;
                        tracing::info!("start-up tests passed: publishing");
                    }
                    *pending = 0..out.len();
                }
                Err(alarm) => {
                    // The failing batch is dropped whole (it is never copied to the ring).
                    self.ring.add_counters(0, 0, n as u64);
                    self.alarm(alarm.reason, &alarm.detail);
                    if let Some(exit) = self.recover(stop) {
                        return Ok(exit);
                    }
                }
            }
        }
        Ok(Exit::Shutdown)
    }

    fn set_health(&mut self, health: Health, reason: Reason) {
        self.health = health;
        self.ring.set_health(health, reason);
    }

    fn alarm(&mut self, reason: Reason, detail: &str) {
        self.ring.add_counters(0, 1, 0);
        self.set_health(Health::Failed, reason);
        tracing::error!(%reason, detail, failures = self.failures, "health alarm: publishing stopped");
    }

    /// Resets the card and the tests after an alarm, until a restart succeeds (the start-up test
    /// then decides) or `max_recoveries` attempts in a row have failed. A restart that fails is
    /// one more alarm, with the restart's own reason; the card is not read until a restart
    /// succeeds. Returns the exit if the card went away meanwhile.
    fn recover(&mut self, stop: &AtomicBool) -> Option<Exit> {
        loop {
            self.failures += 1;
            if self.failures > self.cfg.max_recoveries {
                self.set_health(Health::Failed, Reason::RecoveryExhausted);
                tracing::error!(
                    attempts = self.cfg.max_recoveries,
                    "recovery attempts exhausted: the source stays FAILED until the driver is restarted"
                );
                let _ = self.card.stop();
                return None;
            }
            // Back off a little more after each consecutive failure (100 ms, 200 ms, … up to 5 s).
            let backoff = Duration::from_millis(100u64 << (self.failures - 1).min(6))
                .min(Duration::from_secs(5));
            let until = Instant::now() + backoff;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                self.tick();
                std::thread::sleep(Duration::from_millis(20).min(backoff));
            }
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            tracing::warn!(
                attempt = self.failures,
                "resetting the card and re-running start-up tests"
            );
            let restarted = self.card.stop().and_then(|()| self.card.start());
            // Modules or chips may have changed (a failed one is left off by the next start).
            self.ring.set_identity(&identity(self.card.info(), self.gate));
            self.gate.restart();
            match restarted {
                Ok(()) => return None,
                Err(e) if e.is_device_gone() => return Some(Exit::DeviceGone),
                Err(e) => self.alarm(e.reason(), &e.to_string()),
            }
        }
    }

    /// Adds the card layer's losses since the last call to the ring: bytes taken from the card
    /// (read, or flushed out of its FIFO) and thrown away before the gate saw them.
    fn sync_counters(&mut self) {
        let c = self.card.counters();
        let lost = c.bytes_dropped + c.bytes_discarded;
        let delta = lost.saturating_sub(self.card_dropped_seen);
        self.ring.add_counters(delta, 0, delta);
        self.card_dropped_seen = lost;
    }

    /// Heartbeat, counters and watchdog, at most every `cfg.heartbeat`.
    fn tick(&mut self) {
        if self.last_beat.elapsed() < self.cfg.heartbeat {
            return;
        }
        self.last_beat = Instant::now();
        self.sync_counters();
        self.ring.heartbeat();
        if self.watchdog.is_some() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }

    fn notify_ready(&mut self) {
        if !self.ready_sent {
            self.ready_sent = true;
            let status = format!("STATUS=publishing into {}", self.cfg.ring.display());
            let _ = sd_notify::notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Custom(&status),
            ]);
        }
    }
}

/// Installs handlers for SIGTERM and SIGINT and returns the flag they set.
pub fn install_signal_handlers() -> std::io::Result<&'static AtomicBool> {
    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::Relaxed);
    }
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action =
        SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to a static atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.map_err(std::io::Error::from)?;
    }
    Ok(&STOP)
}

/// Restores the default SIGPIPE action, so `quantis-driver list | head` ends quietly instead of
/// failing to print (Rust ignores SIGPIPE by default). Used by the one-shot subcommands only.
pub fn default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: installing SIG_DFL runs no handler code, so nothing async-signal-unsafe can happen.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
