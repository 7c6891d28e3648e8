//! Per-client rate limiting (a token bucket per IP address) and constant-time token comparison.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests per second per client IP, with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// Most clients tracked at once; beyond this, idle (full) buckets are dropped first, then all, so a
/// flood of source addresses cannot grow memory without bound (a forgotten bucket is a full one).
const MAX_CLIENTS: usize = 100_000;
/// A bucket untouched this long is full again and can be forgotten.
const IDLE: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(super) struct Limiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<Option<IpAddr>, (f64, Instant)>>,
}

impl Limiter {
    pub(super) fn new(limit: RateLimit) -> Self {
        Self { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Ok if `client` may make a request now, else Err(seconds until it may).
    pub(super) fn check(&self, client: Option<IpAddr>) -> Result<(), u64> {
        self.check_at(client, Instant::now())
    }

    fn check_at(&self, client: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        let burst = f64::from(self.limit.burst.max(1));
        let rate = self.limit.per_second;
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() >= MAX_CLIENTS && !b.contains_key(&client) {
            b.retain(|_, (_, t)| now.saturating_duration_since(*t) < IDLE);
            if b.len() >= MAX_CLIENTS {
                b.clear();
            }
        }
        let (tokens, last) = b.entry(client).or_insert((burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * rate;
        *tokens = (*tokens + refill).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else if rate > 0.0 {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        } else {
            Err(u64::from(u32::MAX))
        }
    }

    /// Forgets idle buckets.
    pub(super) fn purge(&self) {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        b.retain(|_, (_, t)| now.saturating_duration_since(*t) < IDLE);
    }
}

/// Equality whose time depends only on the lengths, not on where the first difference is.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_at_the_rate() {
        let l = Limiter::new(RateLimit { per_second: 2.0, burst: 3 });
        let ip: Option<IpAddr> = Some([10, 0, 0, 1].into());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check_at(ip, t0), Ok(()));
        }
        assert_eq!(l.check_at(ip, t0), Err(1));
        // Another client has its own bucket.
        assert_eq!(l.check_at(Some([10, 0, 0, 2].into()), t0), Ok(()));
        // Half a second at 2/s refills one token.
        assert_eq!(l.check_at(ip, t0 + Duration::from_millis(500)), Ok(()));
        assert!(l.check_at(ip, t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn slow_rates_give_longer_retry_after() {
        let l = Limiter::new(RateLimit { per_second: 0.1, burst: 1 });
        let t0 = Instant::now();
        assert_eq!(l.check_at(None, t0), Ok(()));
        assert_eq!(l.check_at(None, t0), Err(10));
    }

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
