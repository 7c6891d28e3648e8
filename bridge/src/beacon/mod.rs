//! A randomness beacon in the format of NIST's beacon version 2 (NISTIR 8213): every period the
//! bridge publishes a signed, hash-chained pulse whose local random value comes from the card.
//! Format, sources, options and trust model: docs/beacon.md.
//!
//! - [`pulse`]: the pulse, its JSON and its signed serialization.
//! - [`sign`]: RSA keys, the certificate and `certificateId`.
//! - [`store`]: the SQLite database of pulses, certificates and the committed next value.
//! - [`verify`]: checks a range of pulses (signatures, chain, skip list, precommitments).
//! - [`client`]: fetches pulses over HTTP for the verifier.
//!
//! Each pulse reveals the local value committed by the previous one (`precommitmentValue` =
//! SHA-512 of it) and commits to a fresh one taken from the card one period ahead, kept in the
//! database until published. Card bytes are taken like any random answer (exactly once, never
//! from a failed card): when the card cannot give them, no pulse is published for that period,
//! and the next pulse carries the gap status.

pub mod client;
pub mod pulse;
pub mod sign;
pub mod store;
pub mod verify;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pulse::{pulse_path, sha512, status, External, ListValue, Pulse, Span, VALUE_LEN};
pub use sign::{SignError, Signer};
pub use store::{Store, StoreError};

use crate::dispenser::{DispenseError, Dispenser};

/// How long a pulse waits for its card bytes before the period is skipped.
pub const TAKE_WAIT: Duration = Duration::from_secs(2);

/// Beacon settings (from the command line, see `Config::beacon`).
#[derive(Debug, Clone)]
pub struct BeaconConfig {
    /// PEM RSA private key (PKCS#8).
    pub key: PathBuf,
    /// Certificate of the key; None = self-signed, kept next to the database.
    pub cert: Option<PathBuf>,
    /// The pulse database.
    pub db: PathBuf,
    /// Seconds between pulses.
    pub period_secs: u32,
    /// Base URL of the pulses' `uri` (scheme, host, port, no trailing slash).
    pub base_url: String,
}

/// Errors of the beacon.
#[derive(Debug, thiserror::Error)]
pub enum BeaconError {
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no card bytes for the pulse: {0}")]
    Card(#[from] DispenseError),
    #[error("the card gave {got} bytes, the pulse needs {want}")]
    Short { got: usize, want: usize },
    #[error("the beacon task failed: {0}")]
    Task(String),
}

/// What the next pulse at a slot will be.
struct Plan {
    chain: u64,
    index: u64,
    status: u32,
    previous: Option<Pulse>,
    /// The committed local value, when the chain goes on.
    committed: Option<Vec<u8>>,
}

impl Plan {
    /// Card bytes the pulse needs: the next committed value, and its own when none is kept.
    fn needs(&self) -> usize {
        if self.committed.is_some() {
            VALUE_LEN
        } else {
            2 * VALUE_LEN
        }
    }
}

struct Inner {
    signer: Signer,
    store: Store,
    period_ms: u32,
    base_url: String,
    /// One pulse at a time.
    publishing: Mutex<()>,
}

/// The beacon: publishes pulses and answers queries; cheap to clone.
#[derive(Clone)]
pub struct Beacon(Arc<Inner>);

impl std::fmt::Debug for Beacon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beacon")
            .field("period_ms", &self.0.period_ms)
            .field("base_url", &self.0.base_url)
            .finish_non_exhaustive()
    }
}

impl Beacon {
    /// Loads the key and certificate and opens the database.
    pub fn open(cfg: &BeaconConfig) -> Result<Self, BeaconError> {
        let signer = Signer::load(&cfg.key, cfg.cert.as_deref(), &sign::self_signed_path(&cfg.db))?;
        let store = Store::open(&cfg.db)?;
        Ok(Self::new(signer, store, cfg.period_secs.saturating_mul(1000), &cfg.base_url)?)
    }

    /// A beacon from its parts (tests give a database in a temporary directory).
    pub fn new(
        signer: Signer,
        store: Store,
        period_ms: u32,
        base_url: &str,
    ) -> Result<Self, StoreError> {
        store.put_certificate(signer.certificate_id(), signer.certificate())?;
        Ok(Self(Arc::new(Inner {
            signer,
            store,
            period_ms: period_ms.max(1),
            base_url: base_url.trim_end_matches('/').to_owned(),
            publishing: Mutex::new(()),
        })))
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn period_ms(&self) -> u32 {
        self.0.period_ms
    }

    /// The slot (pulse time) at or before `now_ms`.
    pub fn slot(&self, now_ms: u64) -> u64 {
        now_ms - now_ms % u64::from(self.0.period_ms)
    }

    /// What a pulse at `slot_ms` would be; None when a pulse at or after it exists.
    fn plan(&self, slot_ms: u64) -> Result<Option<Plan>, BeaconError> {
        let last = self.0.store.last()?;
        if let Some(l) = &last {
            if l.time_ms().is_some_and(|t| slot_ms <= t) {
                return Ok(None);
            }
        }
        let id = self.0.signer.certificate_id();
        let plan = match last {
            // A new chain when there is none, or the certificate or period changed.
            Some(l) if l.certificate_id == id && l.period == self.0.period_ms => {
                let gap = l.time_ms().is_none_or(|t| slot_ms - t > u64::from(self.0.period_ms));
                let committed = self
                    .0
                    .store
                    .commitment()?
                    .filter(|(c, v)| *c == l.chain_index && sha512(v) == l.precommitment_value)
                    .map(|(_, v)| v);
                Plan {
                    chain: l.chain_index,
                    index: l.pulse_index + 1,
                    status: if gap { status::GAP } else { status::NORMAL },
                    previous: Some(l),
                    committed,
                }
            }
            Some(l) => Plan {
                chain: l.chain_index + 1,
                index: 1,
                status: status::NEW_CHAIN,
                previous: None,
                committed: None,
            },
            None => Plan {
                chain: 1,
                index: 1,
                status: status::NEW_CHAIN,
                previous: None,
                committed: None,
            },
        };
        if plan.previous.is_some() && plan.committed.is_none() {
            // The kept value is lost or does not match: its commitment cannot be kept, so the
            // chain ends here rather than publish a pulse that breaks it.
            tracing::error!(
                chain = plan.chain,
                "the committed beacon value is missing: starting a new chain"
            );
            let chain = plan.chain + 1;
            return Ok(Some(Plan {
                chain,
                index: 1,
                status: status::NEW_CHAIN,
                previous: None,
                committed: None,
            }));
        }
        Ok(Some(plan))
    }

    /// Card bytes a pulse at `slot_ms` needs; None when that slot is already published.
    pub fn needs(&self, slot_ms: u64) -> Result<Option<usize>, BeaconError> {
        Ok(self.plan(slot_ms)?.map(|p| p.needs()))
    }

    /// Publishes the pulse of `slot_ms` from `card` (the bytes [`Self::needs`] asked for, or the
    /// card's failure: then nothing is published). None when the slot is already published.
    pub fn publish(
        &self,
        slot_ms: u64,
        card: Result<Vec<u8>, DispenseError>,
    ) -> Result<Option<Pulse>, BeaconError> {
        let _one = self.0.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let Some(plan) = self.plan(slot_ms)? else { return Ok(None) };
        let bytes = card?;
        if bytes.len() != plan.needs() {
            return Err(BeaconError::Short { got: bytes.len(), want: plan.needs() });
        }
        let (local, next) = match &plan.committed {
            Some(c) => (c.clone(), bytes),
            None => (bytes[..VALUE_LEN].to_vec(), bytes[VALUE_LEN..].to_vec()),
        };
        let mut p = self.build(&plan, slot_ms, local, &next)?;
        p.signature_value = self.0.signer.sign(&p.signed_bytes())?;
        p.output_value = p.compute_output();
        self.0.store.append(&p, &next)?;
        Ok(Some(p))
    }

    fn uri(&self, chain: u64, index: u64) -> String {
        format!("{}{}", self.0.base_url, pulse_path(chain, index))
    }

    fn build(
        &self,
        plan: &Plan,
        slot_ms: u64,
        local: Vec<u8>,
        next: &[u8],
    ) -> Result<Pulse, BeaconError> {
        let zero = || vec![0; VALUE_LEN];
        let mut list = Vec::with_capacity(5);
        match &plan.previous {
            None => {
                list.extend(pulse::LIST_TYPES.map(|k| ListValue {
                    uri: String::new(),
                    kind: k.into(),
                    value: zero(),
                }));
            }
            Some(prev) => {
                list.push(ListValue {
                    uri: prev.uri.clone(),
                    kind: "previous".into(),
                    value: prev.output_value.clone(),
                });
                let prev_ms = prev.time_ms().unwrap_or_default();
                for span in Span::ALL {
                    // The first pulse of the chain in the span of the previous pulse (the
                    // current span, unless this pulse is the first in it).
                    let first = self
                        .0
                        .store
                        .first_in_chain_from(plan.chain, span.start(prev_ms))?
                        .unwrap_or_else(|| prev.clone());
                    list.push(ListValue {
                        uri: first.uri,
                        kind: span.kind().into(),
                        value: first.output_value,
                    });
                }
            }
        }
        Ok(Pulse {
            uri: self.uri(plan.chain, plan.index),
            version: pulse::VERSION.into(),
            cipher_suite: pulse::CIPHER_SUITE,
            period: self.0.period_ms,
            certificate_id: self.0.signer.certificate_id().to_vec(),
            chain_index: plan.chain,
            pulse_index: plan.index,
            time_stamp: pulse::format_time(slot_ms),
            local_random_value: local,
            external: External { source_id: zero(), status_code: 0, value: zero() },
            list_values: list,
            precommitment_value: sha512(next),
            status_code: plan.status,
            signature_value: Vec::new(),
            output_value: Vec::new(),
        })
    }

    /// One period's work: takes the card bytes the pulse of `slot_ms` needs from any healthy
    /// device and publishes it (signing and storing off the async thread).
    pub async fn tick(
        &self,
        dispenser: &Dispenser,
        slot_ms: u64,
    ) -> Result<Option<Pulse>, BeaconError> {
        let Some(n) = self.needs(slot_ms)? else { return Ok(None) };
        let card = dispenser.take(None, n, TAKE_WAIT).await.map(|e| e.bytes);
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.publish(slot_ms, card))
            .await
            .map_err(|e| BeaconError::Task(e.to_string()))?
    }

    /// Publishes a pulse at every period boundary of `clock` until dropped.
    pub async fn run(self, dispenser: Dispenser, clock: Arc<dyn Clock>) {
        loop {
            let now = clock.now_ms();
            let next = self.slot(now) + u64::from(self.0.period_ms);
            tokio::time::sleep(Duration::from_millis(next.saturating_sub(now))).await;
            // A late wake-up still publishes the slot it waited for (the timestamp is the slot).
            match self.tick(&dispenser, next).await {
                Ok(Some(p)) => tracing::debug!(
                    chain = p.chain_index,
                    pulse = p.pulse_index,
                    "beacon pulse published"
                ),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, slot = %pulse::format_time(next), "no beacon pulse this period")
                }
            }
        }
    }
}

/// Wall-clock time for the beacon (tests give fixed times to [`Beacon::tick`] instead).
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
