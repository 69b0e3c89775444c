//! How much claimed work a worker holds: no more than it gets through in a fraction of a
//! lease, at the pace it has been working.
//!
//! Every claimed pack is leased to this node until its step is done. A node that dies
//! leaves its packs to the others once their leases run out; if it held more than it
//! could work through in a lease, so does every other node, and the dead node's packs
//! queue behind what each of them holds (3,000 packs on three nodes with a 4 s lease:
//! claimed back 11 s after the kill, finished 90 s after it, each node holding a thousand
//! packs). So the worker holds at most what it finished in [`HOLD_FRACTION`] of a lease
//! at its measured pace (steps finished per second, averaged over windows of about a
//! second of work), and never less than it can run at once (its check and issuance
//! slots): fewer would starve its own concurrency, and so its pace. Until a first second
//! of work is measured it holds that much. With the default lease (2 minutes), a worker
//! finishing 137 steps a second or more holds up to [`super::MAX_IN_FLIGHT`] as before;
//! with a short lease, or a slow worker, it keeps a node's queue, and a dead node's,
//! short.

use std::time::Duration;
use tokio::time::Instant;

/// The share of a lease a worker's held work lasts at its pace.
const HOLD_FRACTION: f64 = 0.25;

/// How long a window of the pace's measurement lasts at least.
const WINDOW: Duration = Duration::from_secs(1);

/// The measured pace and the bound it gives.
#[derive(Debug)]
pub(super) struct Pace {
    lease: Duration,
    /// Fewest packs held whatever the pace: what the worker runs at once.
    floor: usize,
    /// Most packs held whatever the pace.
    ceiling: usize,
    window_start: Instant,
    finished_in_window: u64,
    /// Steps per second, a moving average of the windows; `None` before the first.
    per_sec: Option<f64>,
}

impl Pace {
    pub(super) fn new(lease: Duration, floor: usize, ceiling: usize, now: Instant) -> Pace {
        Pace {
            lease,
            floor: floor.min(ceiling).max(1),
            ceiling,
            window_start: now,
            finished_in_window: 0,
            per_sec: None,
        }
    }

    /// A step finished at `now`.
    pub(super) fn finished(&mut self, now: Instant) {
        self.finished_in_window += 1;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            let rate = self.finished_in_window as f64 / elapsed.as_secs_f64();
            self.per_sec = Some(match self.per_sec {
                Some(before) => (before + rate) / 2.0,
                None => rate,
            });
            self.window_start = now;
            self.finished_in_window = 0;
        }
    }

    /// The worker had nothing in hand: the window starts again, so that time without
    /// work does not count as slow work.
    pub(super) fn restart(&mut self, now: Instant) {
        self.window_start = now;
        self.finished_in_window = 0;
    }

    /// How many packs the worker may hold now.
    pub(super) fn bound(&self) -> usize {
        match self.per_sec {
            // Before any measurement: what it runs at once. Starting at the ceiling,
            // the first node to poll would claim every due pack (thousands) before any
            // other node had a chance, and hold them for as long as it takes it alone.
            None => self.floor,
            Some(per_sec) => {
                let held = per_sec * self.lease.as_secs_f64() * HOLD_FRACTION;
                (held as usize).clamp(self.floor, self.ceiling)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_lease_bounds_what_a_worker_holds_by_its_pace() {
        let start = Instant::now();
        let mut pace = Pace::new(Duration::from_secs(4), 96, 4096, start);
        assert_eq!(
            pace.bound(),
            96,
            "nothing measured yet: what it runs at once"
        );
        // 400 steps a second for a second: a 4 s lease holds 400 (a quarter of it).
        for i in 1..=400u64 {
            pace.finished(start + Duration::from_micros(i * 2_500));
        }
        assert_eq!(pace.bound(), 400);
        // Slower: never below what the worker runs at once.
        for i in 1..=10u64 {
            pace.finished(start + Duration::from_secs(1) + Duration::from_millis(i * 100));
        }
        assert_eq!(pace.bound(), (((400.0 + 10.0) / 2.0) as usize));
        for w in 2..6u64 {
            for i in 1..=2u64 {
                pace.finished(start + Duration::from_secs(w) + Duration::from_millis(i * 500));
            }
        }
        assert_eq!(pace.bound(), 96);
    }

    #[test]
    fn the_default_lease_keeps_the_ceiling() {
        let start = Instant::now();
        let mut pace = Pace::new(Duration::from_secs(120), 96, 4096, start);
        for i in 1..=300u64 {
            pace.finished(start + Duration::from_micros(i * 3_334));
        }
        assert_eq!(pace.bound(), 4096);
    }
}
