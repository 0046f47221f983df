//! A keyed token bucket: `rate` tokens a second, up to `burst` saved, one bucket per key (a
//! publishable key and a client address, or an application). A request takes one token per
//! event; when the bucket cannot pay, the answer says how long until it can. The limit is the
//! limiter's own ([`RateLimiter::take`]) or the caller's, per key ([`RateLimiter::take_within`]:
//! an application's quota).

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Most buckets kept; past it, idle (full) buckets are forgotten, and if that is not enough,
/// all are: a flood of new keys or addresses cannot grow the map without bound.
const CAPACITY: usize = 100_000;

/// A rate: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub rate: f64,
    pub burst: f64,
}

impl Limit {
    /// `rate` tokens a second (above 0), at most `burst` (at least 1) saved up.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { rate: rate.max(f64::MIN_POSITIVE), burst: burst.max(1.0) }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    limit: Limit,
}

impl Bucket {
    /// The tokens at `now`.
    fn refill(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * self.limit.rate).min(self.limit.burst)
    }
}

/// Token buckets by key. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    limit: Limit,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// `rate` tokens a second, at most `burst` saved up (see [`Limit::new`]).
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { limit: Limit::new(rate, burst), buckets: Mutex::default() }
    }

    /// Takes `n` tokens from `key`'s bucket at the limiter's limit, or says how long until it
    /// could (see [`take_within`](Self::take_within)).
    pub fn take(&self, key: K, n: u32, now: Instant) -> Result<(), Duration> {
        self.take_within(key, n, now, self.limit)
    }

    /// Takes `n` tokens from `key`'s bucket, refilled at `limit`, or says how long until it
    /// could. A request larger than the burst passes once the bucket is full, and leaves it in
    /// debt. A key whose limit changed keeps its tokens (capped at the new burst).
    pub fn take_within(&self, key: K, n: u32, now: Instant, limit: Limit) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("rate limiter");
        if buckets.len() >= CAPACITY && !buckets.contains_key(&key) {
            buckets.retain(|_, bucket| bucket.refill(now) < bucket.limit.burst);
            if buckets.len() >= CAPACITY {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: limit.burst, at: now, limit });
        let tokens = bucket.refill(now).min(limit.burst);
        let needed = f64::from(n).min(limit.burst);
        if tokens >= needed {
            *bucket = Bucket { tokens: tokens - f64::from(n), at: now, limit };
            Ok(())
        } else {
            Err(Duration::from_secs_f64((needed - tokens) / limit.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_the_rate_and_are_kept_per_key() {
        let limiter = RateLimiter::new(10.0, 20.0);
        let start = Instant::now();
        assert!(limiter.take("a", 20, start).is_ok());
        let wait = limiter.take("a", 5, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(limiter.take("b", 20, start).is_ok(), "another key has its own bucket");
        assert!(limiter.take("a", 5, start + Duration::from_millis(500)).is_ok());
        assert!(limiter.take("a", 1, start + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn a_request_over_the_burst_passes_on_a_full_bucket_and_leaves_a_debt() {
        let limiter = RateLimiter::new(10.0, 20.0);
        let start = Instant::now();
        assert!(limiter.take("a", 50, start).is_ok());
        // 30 tokens in debt: 3 s to get back to zero, 3.1 s to afford one.
        let wait = limiter.take("a", 1, start).unwrap_err();
        assert!((wait.as_secs_f64() - 3.1).abs() < 1e-9, "{wait:?}");
    }

    #[test]
    fn each_key_can_have_its_own_limit() {
        let limiter = RateLimiter::new(1.0, 1.0);
        let (fast, slow) = (Limit::new(100.0, 100.0), Limit::new(10.0, 10.0));
        let start = Instant::now();
        assert!(limiter.take_within("fast", 100, start, fast).is_ok());
        assert!(limiter.take_within("slow", 10, start, slow).is_ok());
        let wait = limiter.take_within("slow", 1, start, slow).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        let later = start + Duration::from_millis(100);
        assert!(limiter.take_within("fast", 10, later, fast).is_ok(), "refilled at its own rate");
        assert!(limiter.take_within("fast", 1, later, fast).is_err());
    }
}
