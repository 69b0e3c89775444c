//! The travelling clock: real time plus an offset the test controls move forward.

use crate::clock::{Clock, SharedClock};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// The server's clock under the test controls: the clock the server was opened with
/// (the system's, or a test's) plus an offset. Every part of the server reads it (the
/// lifecycle's due times, deadlines and expiry, the API's times, the built-in CA's
/// `notBefore`), so moving it moves the whole server.
#[derive(Debug)]
pub struct TravelClock {
    base: SharedClock,
    offset: AtomicI64,
}

/// Why a move of the clock was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// Moving backwards: certificates already issued, checks already recorded and leases
    /// would lie in the future.
    #[error("the clock only moves forward: {0}")]
    Backwards(String),
    /// Past what the server can represent.
    #[error("the clock cannot move that far")]
    Overflow,
}

impl TravelClock {
    /// `base` moved ahead by `offset` seconds.
    pub fn new(base: SharedClock, offset: i64) -> Arc<Self> {
        Arc::new(TravelClock {
            base,
            offset: AtomicI64::new(offset),
        })
    }

    /// How far ahead of its base the clock is, in seconds.
    pub fn offset(&self) -> i64 {
        self.offset.load(Ordering::SeqCst)
    }

    /// The base clock's now (real time, for a server on the system clock).
    pub fn real_now(&self) -> i64 {
        self.base.now()
    }

    /// The offset that moves the clock forward by `secs` (not applied: see
    /// [`TravelClock::set_offset`]).
    pub fn offset_after_advance(&self, secs: i64) -> Result<i64, ClockError> {
        if secs <= 0 {
            return Err(ClockError::Backwards(format!(
                "advance by a positive duration, not {secs} s"
            )));
        }
        self.offset()
            .checked_add(secs)
            .filter(|o| self.real_now().checked_add(*o).is_some())
            .ok_or(ClockError::Overflow)
    }

    /// The offset that puts the clock at `target` (Unix seconds), refused when that is
    /// before its now.
    pub fn offset_to_reach(&self, target: i64) -> Result<i64, ClockError> {
        let now = self.now();
        if target < now {
            return Err(ClockError::Backwards(format!(
                "{} is before the server's now, {}",
                crate::clock::rfc3339(target),
                crate::clock::rfc3339(now)
            )));
        }
        target
            .checked_sub(self.real_now())
            .ok_or(ClockError::Overflow)
    }

    /// Applies an offset computed by the methods above (once it is stored).
    pub fn set_offset(&self, offset: i64) {
        self.offset.store(offset, Ordering::SeqCst);
    }
}

impl Clock for TravelClock {
    fn now(&self) -> i64 {
        self.base.now().saturating_add(self.offset())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn travels_forward_only() {
        let base = ManualClock::new(1_000);
        let clock = TravelClock::new(base.clone(), 0);
        let offset = clock.offset_after_advance(60 * 86_400).unwrap();
        clock.set_offset(offset);
        assert_eq!(clock.now(), 1_000 + 60 * 86_400);
        // Real time keeps flowing under the offset.
        base.advance(5);
        assert_eq!(clock.now(), 1_005 + 60 * 86_400);
        assert!(matches!(
            clock.offset_after_advance(0),
            Err(ClockError::Backwards(_))
        ));
        assert!(matches!(
            clock.offset_to_reach(1_000),
            Err(ClockError::Backwards(_))
        ));
        let to = clock.offset_to_reach(10_000_000).unwrap();
        clock.set_offset(to);
        assert_eq!(clock.now(), 10_000_000);
        assert_eq!(
            clock.offset_after_advance(i64::MAX),
            Err(ClockError::Overflow)
        );
    }
}
