//! The non-IID track (§6.3) and its combination into H_original, H_bitstring and the assessed
//! min-entropy (§3.1.3), in the reference tool's `ea_non_iid` order and with its rules: the
//! literal data gets the collision, Markov and compression estimates only when it is binary, and
//! the bitstring is assessed only when more than two symbols occur.

use crate::data::Dataset;
use crate::estimators::{self as est, Predictions};
use crate::Result;
use serde::Serialize;

/// One estimator's results. `original` is bits per sample of the literal data; `bitstring` is bits
/// per bit of the bitstring; `bitstring_per_symbol` is that times bits per symbol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Estimate {
    pub original: Option<f64>,
    pub bitstring: Option<f64>,
    pub bitstring_per_symbol: Option<f64>,
}

/// The whole non-IID assessment. Every estimate is in bits (per sample, or per bit for the
/// bitstring fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NonIidReport {
    pub samples: usize,
    pub bits_per_symbol: u32,
    pub alphabet_size: usize,
    pub most_common_value: Estimate,
    pub collision: Estimate,
    pub markov: Estimate,
    pub compression: Estimate,
    pub t_tuple: Estimate,
    pub lrs: Estimate,
    pub multi_mcw: Estimate,
    pub lag: Estimate,
    pub multi_mmc: Estimate,
    pub lz78y: Estimate,
    /// min over the literal estimates (at most bits_per_symbol).
    pub h_original: f64,
    /// min over the bitstring estimates, per bit (None when the bitstring is not assessed).
    pub h_bitstring: Option<f64>,
    /// min(H_original, bits_per_symbol × H_bitstring): the initial entropy estimate before H_submitter.
    pub h_assessed: f64,
}

/// Which of the two data views an estimator runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum View {
    Original,
    Bitstring,
}

/// Runs one estimator on the views it applies to.
fn both(
    d: &Dataset,
    literal: bool,
    f: &mut dyn FnMut(View) -> Result<Option<f64>>,
) -> Result<Estimate> {
    let mut e = Estimate::default();
    if d.has_bitstring() {
        e.bitstring = f(View::Bitstring)?;
        e.bitstring_per_symbol = e.bitstring.map(|h| h * f64::from(d.bits_per_symbol));
    }
    if literal {
        e.original = f(View::Original)?;
    }
    Ok(e)
}

fn pred(p: Option<Predictions>, k: usize) -> Option<f64> {
    p.map(|p| p.estimate(k))
}

/// Runs all ten estimators.
pub fn non_iid(d: &Dataset) -> Result<NonIidReport> {
    let binary = d.alphabet_size == 2;
    let k = d.alphabet_size;
    let data = |v: View| -> (&[u8], usize) {
        match v {
            View::Original => (&d.symbols, k),
            View::Bitstring => (&d.bits, 2),
        }
    };
    let mut r = NonIidReport {
        samples: d.symbols.len(),
        bits_per_symbol: d.bits_per_symbol,
        alphabet_size: k,
        ..Default::default()
    };
    r.most_common_value = both(d, true, &mut |v| {
        let (s, k) = data(v);
        Ok(Some(est::most_common_value(s, k)))
    })?;
    r.collision = both(d, binary, &mut |v| Ok(Some(est::collision(data(v).0))))?;
    r.markov = both(d, binary, &mut |v| Ok(Some(est::markov(data(v).0))))?;
    r.compression = both(d, binary, &mut |v| Ok(est::compression(data(v).0)))?;
    let mut lrs = Estimate::default();
    r.t_tuple = both(d, true, &mut |v| {
        let t = est::t_tuple_and_lrs(data(v).0)?;
        match v {
            View::Original => lrs.original = t.lrs,
            View::Bitstring => lrs.bitstring = t.lrs,
        }
        Ok(t.t_tuple)
    })?;
    lrs.bitstring_per_symbol = lrs.bitstring.map(|h| h * f64::from(d.bits_per_symbol));
    r.lrs = lrs;
    r.multi_mcw = both(d, true, &mut |v| {
        let (s, k) = data(v);
        Ok(pred(est::multi_mcw(s, k), k))
    })?;
    r.lag = both(d, true, &mut |v| {
        let (s, k) = data(v);
        Ok(pred(est::lag(s, k), k))
    })?;
    r.multi_mmc = both(d, true, &mut |v| {
        let (s, k) = data(v);
        Ok(pred(est::multi_mmc(s, k), k))
    })?;
    r.lz78y = both(d, true, &mut |v| {
        let (s, k) = data(v);
        Ok(pred(est::lz78y(s, k), k))
    })?;
    let all = [
        r.most_common_value,
        r.collision,
        r.markov,
        r.compression,
        r.t_tuple,
        r.lrs,
        r.multi_mcw,
        r.lag,
        r.multi_mmc,
        r.lz78y,
    ];
    let word = f64::from(d.bits_per_symbol);
    r.h_original = all.iter().filter_map(|e| e.original).fold(word, f64::min);
    r.h_bitstring =
        d.has_bitstring().then(|| all.iter().filter_map(|e| e.bitstring).fold(1.0, f64::min));
    r.h_assessed = r.h_original.min(r.h_bitstring.map_or(word, |h| h * word));
    Ok(r)
}

impl std::fmt::Display for NonIidReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.6}"));
        writeln!(
            f,
            "SP 800-90B non-IID assessment: {} samples, {} bits per symbol, {} distinct symbols",
            self.samples, self.bits_per_symbol, self.alphabet_size
        )?;
        writeln!(
            f,
            "{:<20} {:>12} {:>12} {:>14}",
            "estimator", "original", "bitstring", "bitstring×bps"
        )?;
        let rows = [
            ("most common value", self.most_common_value),
            ("collision", self.collision),
            ("markov", self.markov),
            ("compression", self.compression),
            ("t-tuple", self.t_tuple),
            ("lrs", self.lrs),
            ("multi mcw", self.multi_mcw),
            ("lag", self.lag),
            ("multi mmc", self.multi_mmc),
            ("lz78y", self.lz78y),
        ];
        for (name, e) in rows {
            writeln!(
                f,
                "{name:<20} {:>12} {:>12} {:>14}",
                show(e.original),
                show(e.bitstring),
                show(e.bitstring_per_symbol)
            )?;
        }
        writeln!(f, "H_original:  {:.6} bits per symbol", self.h_original)?;
        if let Some(h) = self.h_bitstring {
            writeln!(f, "H_bitstring: {h:.6} bits per bit")?;
        }
        writeln!(
            f,
            "assessed min-entropy: {:.6} bits per symbol (min(H_original, {} × H_bitstring))",
            self.h_assessed, self.bits_per_symbol
        )
    }
}
