//! Verifies a range of pulses of one chain: each pulse's form, certificate, signature and output
//! value; the links to its predecessor (`previous`, the precommitment, time, status code); and
//! the hour/day/month/year skip list (each entry the first pulse of its span in the chain).
//!
//! Pulses referenced by the range (the predecessor of the first, skip-list targets and the pulses
//! before those) are fetched and checked on their own as well. With a pinned certificate every
//! pulse must be signed by it; without one, by the certificate the source serves under the
//! pulse's `certificateId` (which proves consistency, not origin: docs/beacon.md).

use std::collections::HashMap;

use super::pulse::{self, pulse_path, sha512, status, Pulse, Span, LIST_TYPES, VALUE_LEN};
use super::sign;
use super::store::Store;

/// Why a range did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("pulse {chain}/{index}: {what}")]
    Pulse { chain: u64, index: u64, what: String },
    #[error("pulse {chain}/{index} is missing")]
    Missing { chain: u64, index: u64 },
    #[error("certificate {id}: {what}")]
    Certificate { id: String, what: String },
    #[error("{0}")]
    Source(String),
}

/// Where pulses and certificates come from: the database, or a bridge over HTTP.
pub trait Source {
    fn pulse(&mut self, chain: u64, index: u64) -> Result<Option<Pulse>, VerifyError>;
    /// The last pulse of `chain`, or of all chains.
    fn last(&mut self, chain: Option<u64>) -> Result<Option<Pulse>, VerifyError>;
    /// A certificate (DER or PEM) by `certificateId`.
    fn certificate(&mut self, id: &[u8]) -> Result<Option<Vec<u8>>, VerifyError>;
}

impl Source for &Store {
    fn pulse(&mut self, chain: u64, index: u64) -> Result<Option<Pulse>, VerifyError> {
        self.get(chain, index).map_err(|e| VerifyError::Source(e.to_string()))
    }

    fn last(&mut self, chain: Option<u64>) -> Result<Option<Pulse>, VerifyError> {
        match chain {
            Some(c) => self.last_of(c),
            None => Store::last(self),
        }
        .map_err(|e| VerifyError::Source(e.to_string()))
    }

    fn certificate(&mut self, id: &[u8]) -> Result<Option<Vec<u8>>, VerifyError> {
        Store::certificate(self, id).map_err(|e| VerifyError::Source(e.to_string()))
    }
}

/// What a verified range covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub chain: u64,
    pub from: u64,
    pub to: u64,
    /// Pulses outside the range that were checked because the range refers to them.
    pub referenced: usize,
}

/// Checks pulses from one [`Source`], each pulse once.
#[derive(Debug)]
pub struct Verifier<S> {
    src: S,
    pinned: Option<Vec<u8>>,
    certs: HashMap<Vec<u8>, Vec<u8>>,
    checked: HashMap<(u64, u64), Pulse>,
    base: Option<String>,
}

fn fail(p: &Pulse, what: impl Into<String>) -> VerifyError {
    VerifyError::Pulse { chain: p.chain_index, index: p.pulse_index, what: what.into() }
}

fn need(ok: bool, p: &Pulse, what: &str) -> Result<(), VerifyError> {
    if ok {
        Ok(())
    } else {
        Err(fail(p, what))
    }
}

impl<S: Source> Verifier<S> {
    /// A verifier of `src`'s pulses; `pinned` (PEM or DER) is the only certificate accepted.
    pub fn new(src: S, pinned: Option<&[u8]>) -> Result<Self, VerifyError> {
        let pinned = pinned
            .map(|c| sign::certificate_der(c, "the pinned certificate"))
            .transpose()
            .map_err(|e| VerifyError::Certificate { id: "(pinned)".into(), what: e.to_string() })?;
        Ok(Self { src, pinned, certs: HashMap::new(), checked: HashMap::new(), base: None })
    }

    /// The last pulse of `chain` (or of all chains).
    pub fn last(&mut self, chain: Option<u64>) -> Result<Option<Pulse>, VerifyError> {
        self.src.last(chain)
    }

    /// Verifies pulses `from..=to` of `chain`.
    pub fn verify_range(&mut self, chain: u64, from: u64, to: u64) -> Result<Summary, VerifyError> {
        if from == 0 || from > to {
            return Err(VerifyError::Source(format!(
                "empty range {from}..={to} (indices start at 1)"
            )));
        }
        for index in from..=to {
            let p = self.checked_pulse(chain, index)?;
            self.check_links(&p)?;
        }
        let referenced =
            self.checked.keys().filter(|(c, i)| *c != chain || *i < from || *i > to).count();
        Ok(Summary { chain, from, to, referenced })
    }

    /// Verifies one pulse on its own: form, certificate, signature and output value.
    pub fn verify_pulse(&mut self, chain: u64, index: u64) -> Result<Pulse, VerifyError> {
        self.checked_pulse(chain, index)
    }

    fn certificate(&mut self, p: &Pulse) -> Result<Vec<u8>, VerifyError> {
        let id = &p.certificate_id;
        if let Some(der) = self.certs.get(id) {
            return Ok(der.clone());
        }
        let hex_id = pulse::hex(id, false);
        let der = match &self.pinned {
            Some(pin) => pin.clone(),
            None => {
                let bytes = self.src.certificate(id)?.ok_or_else(|| VerifyError::Certificate {
                    id: hex_id.clone(),
                    what: "not served".into(),
                })?;
                sign::certificate_der(&bytes, "the served certificate").map_err(|e| {
                    VerifyError::Certificate { id: hex_id.clone(), what: e.to_string() }
                })?
            }
        };
        if sha512(&der) != *id {
            return Err(fail(
                p,
                if self.pinned.is_some() {
                    "certificateId is not the pinned certificate's SHA-512"
                } else {
                    "certificateId is not the SHA-512 of the certificate served under it"
                },
            ));
        }
        self.certs.insert(id.clone(), der.clone());
        Ok(der)
    }

    /// Fetches a pulse and checks it on its own (form, certificate, signature, output value).
    fn checked_pulse(&mut self, chain: u64, index: u64) -> Result<Pulse, VerifyError> {
        if let Some(p) = self.checked.get(&(chain, index)) {
            return Ok(p.clone());
        }
        let p = self.src.pulse(chain, index)?.ok_or(VerifyError::Missing { chain, index })?;
        need(
            p.chain_index == chain && p.pulse_index == index,
            &p,
            "served for another chain or index",
        )?;
        let path = pulse_path(chain, index);
        let base = p
            .uri
            .strip_suffix(&path)
            .ok_or_else(|| fail(&p, format!("uri does not end in {path}")))?;
        match &self.base {
            Some(b) => need(b == base, &p, "uri names another beacon than the other pulses")?,
            None => self.base = Some(base.to_owned()),
        }
        need(p.version == pulse::VERSION, &p, "unknown version")?;
        need(p.cipher_suite == pulse::CIPHER_SUITE, &p, "unknown cipher suite")?;
        need(p.period > 0, &p, "period is 0")?;
        let t = p.time_ms().ok_or_else(|| fail(&p, "timeStamp is not YYYY-MM-DDTHH:MM:SS.sssZ"))?;
        need(t % u64::from(p.period) == 0, &p, "timeStamp is not on a period boundary")?;
        for (name, v) in [
            ("certificateId", &p.certificate_id),
            ("localRandomValue", &p.local_random_value),
            ("external.sourceId", &p.external.source_id),
            ("external.value", &p.external.value),
            ("precommitmentValue", &p.precommitment_value),
            ("outputValue", &p.output_value),
        ] {
            need(v.len() == VALUE_LEN, &p, &format!("{name} is not {VALUE_LEN} bytes"))?;
        }
        let kinds: Vec<&str> = p.list_values.iter().map(|v| v.kind.as_str()).collect();
        need(kinds == LIST_TYPES, &p, "listValues are not previous, hour, day, month, year")?;
        need(
            p.list_values.iter().all(|v| v.value.len() == VALUE_LEN),
            &p,
            "a list value is not 64 bytes",
        )?;
        need(
            matches!(p.status_code, status::NORMAL | status::NEW_CHAIN | status::GAP),
            &p,
            "unknown statusCode",
        )?;
        need(
            (p.status_code == status::NEW_CHAIN) == (index == 1),
            &p,
            "statusCode 1 is for pulse 1 alone",
        )?;
        let der = self.certificate(&p)?;
        let ok =
            sign::verify_signature(&der, &p.signed_bytes(), &p.signature_value).map_err(|e| {
                VerifyError::Certificate {
                    id: pulse::hex(&p.certificate_id, false),
                    what: e.to_string(),
                }
            })?;
        need(ok, &p, "the signature does not verify")?;
        need(
            p.compute_output() == p.output_value,
            &p,
            "outputValue is not SHA-512 of the pulse and signature",
        )?;
        self.checked.insert((chain, index), p.clone());
        Ok(p)
    }

    /// Checks the links of `p` to earlier pulses of its chain.
    fn check_links(&mut self, p: &Pulse) -> Result<(), VerifyError> {
        let (chain, index) = (p.chain_index, p.pulse_index);
        if index == 1 {
            let empty =
                p.list_values.iter().all(|v| v.uri.is_empty() && v.value.iter().all(|b| *b == 0));
            return need(empty, p, "the first pulse of a chain has list values");
        }
        let prev = self.checked_pulse(chain, index - 1)?;
        let (t, tp) = (p.time_ms().unwrap_or_default(), prev.time_ms().unwrap_or_default());
        need(p.period == prev.period, p, "period differs from the previous pulse's")?;
        need(t > tp, p, "timeStamp is not after the previous pulse's")?;
        let gap = t - tp > u64::from(p.period);
        need(
            p.status_code == if gap { status::GAP } else { status::NORMAL },
            p,
            "statusCode does not match the time since the previous pulse",
        )?;
        let lv = &p.list_values[0];
        need(
            lv.value == prev.output_value && lv.uri == prev.uri,
            p,
            "previous is not the previous pulse",
        )?;
        need(
            sha512(&p.local_random_value) == prev.precommitment_value,
            p,
            "localRandomValue breaks the previous pulse's precommitment",
        )?;
        let base = self.base.clone().unwrap_or_default();
        for (span, lv) in Span::ALL.into_iter().zip(&p.list_values[1..]) {
            let what = |s: &str| format!("{} {s}", span.kind());
            let j = lv
                .uri
                .strip_prefix(&base)
                .and_then(|rest| rest.strip_prefix(&format!("/beacon/2.0/chain/{chain}/pulse/")))
                .and_then(|i| i.parse::<u64>().ok())
                .filter(|j| (1..index).contains(j))
                .ok_or_else(|| fail(p, what("names no earlier pulse of the chain")))?;
            let r = self.checked_pulse(chain, j)?;
            need(
                lv.uri == r.uri && lv.value == r.output_value,
                p,
                &what("is not the output of the pulse it names"),
            )?;
            let start = span.start(tp);
            let rt = r.time_ms().unwrap_or_default();
            need(
                span.start(rt) == start,
                p,
                &what("names a pulse outside the previous pulse's span"),
            )?;
            if j > 1 {
                let before = self.checked_pulse(chain, j - 1)?;
                need(
                    before.time_ms().unwrap_or_default() < start,
                    p,
                    &what("names a pulse that is not the first of its span"),
                )?;
            }
        }
        Ok(())
    }
}
