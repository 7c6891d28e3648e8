//! The bisection the reference tool uses to invert the monotone (decreasing) functions of the
//! collision-free estimators: `calc_p_local` and the compression estimate's search in
//! `cpp/shared/utils.h` / `cpp/non_iid/compression_test.h`. Its stopping rules decide the last
//! digits of p, so they are kept as they are.

/// At most this many halvings (the reference's `ITERMAX`: enough to walk the whole double range).
const ITERMAX: usize = 1076;

/// `relEpsilonEqual(a, b, DBL_MIN, DBL_EPSILON, 4)`: relatively close, or (where a relative
/// comparison is meaningless) absolutely close, or within 4 units in the last place.
pub(crate) fn rel_epsilon_equal(a: f64, b: f64) -> bool {
    close(a, b, f64::MIN_POSITIVE)
}

/// `relEpsilonEqual(a, b, max_abs, DBL_EPSILON, 4)`.
pub(crate) fn close(a: f64, b: f64, max_abs: f64) -> bool {
    let (max_rel, max_ulp) = (f64::EPSILON, 4u64);
    if a.is_nan() || b.is_nan() {
        return false;
    }
    if a == b {
        return true;
    }
    if a.is_infinite() || b.is_infinite() {
        return false;
    }
    let (mut a, mut b) = (a, b);
    if a.abs() > b.abs() {
        std::mem::swap(&mut a, &mut b);
    }
    let (abs_a, abs_b) = (a.abs(), b.abs());
    let diff = (b - a).abs();
    if abs_a < f64::MIN_POSITIVE
        || diff < f64::MIN_POSITIVE
        || diff.is_infinite()
        || abs_b * max_rel < f64::MIN_POSITIVE
    {
        return diff <= max_abs;
    }
    if diff <= abs_b * max_rel {
        return true;
    }
    if a.is_sign_negative() != b.is_sign_negative() {
        return false;
    }
    abs_b.to_bits() - abs_a.to_bits() <= max_ulp
}

fn in_closed(x: f64, a: f64, b: f64) -> bool {
    if a > b {
        x >= b && x <= a
    } else {
        x >= a && x <= b
    }
}

fn in_open(x: f64, a: f64, b: f64) -> bool {
    if a > b {
        x > b && x < a
    } else {
        x > a && x < b
    }
}

/// Finds p in [ldomain, hdomain] with f(p) = target for a decreasing f. When the search's
/// invariants break (the target is outside what f takes on the interval), it returns
/// `on_failure`; the reference's p_local search uses hdomain there, its compression search ldomain.
pub(crate) fn bisect(
    f: impl Fn(f64) -> f64,
    target: f64,
    ldomain: f64,
    hdomain: f64,
    on_failure: f64,
) -> f64 {
    let (mut lbound, mut hbound) = (ldomain, hdomain);
    let (mut lvalue, mut hvalue) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut p = (lbound + hbound) / 2.0;
    let mut pval = f(p);
    for _ in 0..ITERMAX {
        if rel_epsilon_equal(pval, target) {
            break;
        }
        if target < pval {
            lbound = p;
            lvalue = pval;
        } else {
            hbound = p;
            hvalue = pval;
        }
        if lbound >= hbound {
            return lbound.max(hbound).min(hdomain);
        }
        if !(in_closed(lbound, ldomain, hdomain) && in_closed(hbound, ldomain, hdomain)) {
            return on_failure;
        }
        if !in_closed(target, lvalue, hvalue) {
            return on_failure;
        }
        let last = p;
        p = (lbound + hbound) / 2.0;
        if !in_open(p, lbound, hbound) {
            return hbound;
        }
        if last == p {
            return hbound;
        }
        pval = f(p);
        if !in_closed(pval, lvalue, hvalue) {
            return hbound;
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_root_of_a_decreasing_function() {
        let p = bisect(|p| 1.0 - p * p, 0.75, 0.0, 1.0, -1.0);
        assert!((p - 0.5).abs() < 1e-12, "{p}");
    }

    #[test]
    fn a_target_above_the_range_walks_to_the_low_end() {
        let p = bisect(|p| 1.0 - p, 5.0, 0.0, 1.0, -1.0);
        assert!((0.0..1e-300).contains(&p), "{p}");
    }

    #[test]
    fn equality_is_relative_or_ulp() {
        assert!(rel_epsilon_equal(1.0, 1.0 + f64::EPSILON));
        assert!(!rel_epsilon_equal(1.0, 1.0 + 1e-9));
        assert!(rel_epsilon_equal(0.0, 0.0));
    }
}
