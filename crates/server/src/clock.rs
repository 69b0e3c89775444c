//! The one clock of the server. Tests inject a [`ManualClock`] and move it, so a 7-day
//! validation timeout, a renewal or an expiry runs in seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A source of "now", in Unix seconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time in Unix seconds.
    fn now(&self) -> i64;
}

/// The shared clock handle every part of the server reads.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock standing at `now` (Unix seconds).
    pub fn new(now: i64) -> Arc<Self> {
        Arc::new(ManualClock(AtomicI64::new(now)))
    }

    /// Moves the clock forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }

    /// Sets the clock to `now`.
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// RFC 3339 text of Unix seconds, as the API shows times (`2014-01-01T05:20:00Z`).
pub fn rfc3339(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&fmt).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_cloudflare() {
        assert_eq!(
            rfc3339(1_388_534_400 + 5 * 3600 + 20 * 60),
            "2014-01-01T05:20:00Z"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(100);
        assert_eq!(c.now(), 100);
        c.advance(7 * 86_400);
        assert_eq!(c.now(), 100 + 7 * 86_400);
    }
}
