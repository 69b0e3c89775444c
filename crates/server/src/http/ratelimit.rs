//! Per-credential rate limiting: a token bucket per credential, refilled continuously,
//! so a client that stays under Cloudflare's 1,200 requests per 5 minutes is never
//! refused. Limits are per node: nodes sharing a database do not share buckets.

use crate::config::RateLimit;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The bucket's size.
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// When refused: seconds until one request is allowed.
    pub retry_after_secs: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets keyed by credential.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
    max_buckets: usize,
}

/// Most buckets kept: past it, full ones (idle keys) are swept, and if that is not
/// enough (a flood of keys, each a client address), half of them are dropped, whose keys
/// start again from a full bucket. The map never grows past this.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    /// A limiter enforcing `limit` per key.
    pub fn new(limit: RateLimit) -> Self {
        Self::with_max_buckets(limit, MAX_BUCKETS)
    }

    fn with_max_buckets(limit: RateLimit, max_buckets: usize) -> Self {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
            max_buckets: max_buckets.max(2),
        }
    }

    fn per_sec(&self) -> f64 {
        f64::from(self.limit.requests) / self.limit.window.as_secs_f64().max(0.001)
    }

    /// Takes one request from `key`'s bucket, at time `now`.
    pub fn check(&self, key: [u8; 32], now: Instant) -> Decision {
        let capacity = f64::from(self.limit.requests);
        let per_sec = self.per_sec();
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() >= self.max_buckets && !buckets.contains_key(&key) {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec < capacity
            });
            if buckets.len() >= self.max_buckets {
                let mut kept = 0usize;
                buckets.retain(|_, _| {
                    kept += 1;
                    kept.is_multiple_of(2)
                });
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.at = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let remaining = bucket.tokens.floor().max(0.0) as u32;
        Decision {
            allowed,
            limit: self.limit.requests,
            remaining,
            reset_secs: ((capacity - bucket.tokens) / per_sec).ceil().max(0.0) as u64,
            retry_after_secs: if allowed {
                0
            } else {
                ((1.0 - bucket.tokens) / per_sec).ceil().max(1.0) as u64
            },
        }
    }
}

impl RateLimiter {
    /// Takes up to `n` more requests' worth from `key`'s bucket (work a request causes
    /// beyond itself, such as the checks of `retry=true`); returns how many it took.
    pub fn take_up_to(&self, key: [u8; 32], n: usize, now: Instant) -> usize {
        let capacity = f64::from(self.limit.requests);
        let per_sec = self.per_sec();
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(bucket) = buckets.get_mut(&key) else {
            // Every request checks its bucket first, so it exists; a swept one is full.
            return n.min(self.limit.requests as usize);
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.at = now;
        let taken = (bucket.tokens.floor().max(0.0) as usize).min(n);
        bucket.tokens -= taken as f64;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refuses_past_the_budget_and_refills() {
        let rl = RateLimiter::new(RateLimit {
            requests: 3,
            window: Duration::from_secs(3),
        });
        let t0 = Instant::now();
        let key = [1; 32];
        for left in [2, 1, 0] {
            let d = rl.check(key, t0);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let refused = rl.check(key, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, 1);
        assert!(rl.check([2; 32], t0).allowed, "buckets are per key");
        assert!(rl.check(key, t0 + Duration::from_millis(1100)).allowed);
    }

    #[test]
    fn the_bucket_map_stays_bounded_under_a_flood_of_keys() {
        let rl = RateLimiter::with_max_buckets(
            RateLimit {
                requests: 10,
                window: Duration::from_secs(300),
            },
            1000,
        );
        let t0 = Instant::now();
        // Every key spends from its bucket, so none is full (idle) and swept as such.
        for i in 0..50_000u32 {
            let mut key = [0; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            rl.check(key, t0);
        }
        let len = rl.buckets.lock().unwrap().len();
        assert!(len <= 1000, "{len} buckets kept");
    }
}
