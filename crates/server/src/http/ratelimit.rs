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
}

/// Buckets kept before idle (full) ones are swept.
const SWEEP_AT: usize = 100_000;

impl RateLimiter {
    /// A limiter enforcing `limit` per key.
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
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
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec < capacity
            });
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
}
