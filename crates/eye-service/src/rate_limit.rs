//! A keyed token bucket: `rate` tokens a second, up to `burst` saved, one bucket per key (a
//! publishable key and a client address, say). A request takes one token per event; when the
//! bucket cannot pay, the answer says how long until it can.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Most buckets kept; past it, idle (full) buckets are forgotten, and if that is not enough,
/// all are: a flood of new keys or addresses cannot grow the map without bound.
const CAPACITY: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// `rate` tokens a second, at most `burst` saved up (both at least 1).
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { rate: rate.max(f64::MIN_POSITIVE), burst: burst.max(1.0), buckets: Mutex::default() }
    }

    /// Takes `n` tokens from `key`'s bucket, or says how long until it could. A request larger
    /// than the burst passes once the bucket is full, and leaves it in debt.
    pub fn take(&self, key: K, n: u32, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("rate limiter");
        if buckets.len() >= CAPACITY && !buckets.contains_key(&key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, bucket| refill(bucket, now, rate, burst) < burst);
            if buckets.len() >= CAPACITY {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: self.burst, at: now });
        let tokens = refill(bucket, now, self.rate, self.burst);
        let needed = f64::from(n).min(self.burst);
        if tokens >= needed {
            *bucket = Bucket { tokens: tokens - f64::from(n), at: now };
            Ok(())
        } else {
            Err(Duration::from_secs_f64((needed - tokens) / self.rate))
        }
    }
}

/// The tokens of `bucket` at `now`.
fn refill(bucket: &Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(burst)
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
}
