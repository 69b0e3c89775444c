//! The packs a worker holds while they wait for a remote CA (ACME), apart from the rest
//! of its hand.
//!
//! The hand's bound (`pace.rs`) is about this node's own work: checks, signing, files,
//! hooks, at the pace this node gets through them. A pack placing or finishing an ACME
//! order mostly waits for its CA, at the CA's pace: its requests are bounded per CA
//! (`issuance::acme`, 16 in flight), and a CA answering each request in 1.5 s places
//! about three orders a second whatever else the node does. Counted in the same hand,
//! a slow CA's packs took every place in it, and every other CA's packs (the built-in
//! CA's, another ACME CA's) waited behind them, unclaimed: test
//! `a_ca_that_answers_slowly_does_not_hold_up_another_cas_packs`, two packs 65.9 s
//! behind 200 packs of a CA answering in 1.5 s, against 0.6 s alone.
//!
//! So a pack waiting for its CA takes no place in the hand; instead each CA has a share
//! of its own, bounded like the hand by its own pace: what that CA's packs finished in a
//! quarter of a lease, never fewer than [`CA_FLOOR`] (its request slots four times
//! over, so that the packs polling the CA between requests leave none idle), at most
//! [`super::MAX_IN_FLIGHT`]. Claims skip a CA whose share is full (`Claim::skip_cas`),
//! so its further packs stay in the store, free for another node, and holding them
//! here would not make the CA answer sooner. A fast CA's share grows with its pace as
//! the hand's does (Pebble, 100 orders a second: past the ceiling within a second).

use super::MAX_IN_FLIGHT;
use super::pace::Pace;
use crate::issuance::acme::REQUESTS_IN_FLIGHT;
use crate::model::CaChoice;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// Fewest packs of one CA held waiting for it, whatever its pace.
const CA_FLOOR: usize = 4 * REQUESTS_IN_FLIGHT;

/// The packs held waiting for each remote CA.
#[derive(Debug)]
pub(super) struct CaShares {
    lease: Duration,
    shares: Mutex<HashMap<CaChoice, Share>>,
}

#[derive(Debug)]
struct Share {
    held: usize,
    pace: Pace,
    /// Whether packs of this CA were left in the store because the share was full (a
    /// claim skipped the CA, or a claimed pack found no place): once places come back,
    /// the worker claims again rather than at its next poll.
    left_behind: bool,
}

/// A place in a CA's share, given back when dropped (the pack's step is over).
#[derive(Debug)]
pub(super) struct WaitingOnCa {
    shares: Arc<CaShares>,
    ca: CaChoice,
}

impl Drop for WaitingOnCa {
    fn drop(&mut self) {
        let mut shares = self.shares.lock();
        if let Some(share) = shares.get_mut(&self.ca) {
            share.held = share.held.saturating_sub(1);
            share.pace.finished(Instant::now());
        }
    }
}

impl CaShares {
    pub(super) fn new(lease: Duration) -> Arc<Self> {
        Arc::new(CaShares {
            lease,
            shares: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<CaChoice, Share>> {
        // Counts and a pace, whole after every write: a panic elsewhere cannot leave
        // them half-written.
        self.shares.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place in `ca`'s share for a pack about to wait for it, or `None` when the share
    /// is full (the pack is left for a later claim).
    pub(super) fn wait_on(self: &Arc<Self>, ca: CaChoice) -> Option<WaitingOnCa> {
        let now = Instant::now();
        let mut shares = self.lock();
        let share = shares.entry(ca).or_insert_with(|| Share {
            held: 0,
            pace: Pace::new(self.lease, CA_FLOOR, MAX_IN_FLIGHT, now),
            left_behind: false,
        });
        if share.held == 0 {
            // Time without work does not count as slow work.
            share.pace.restart(now);
        }
        if share.held >= share.pace.bound() {
            share.left_behind = true;
            return None;
        }
        share.held += 1;
        Some(WaitingOnCa {
            shares: Arc::clone(self),
            ca,
        })
    }

    /// How many packs wait for a CA now, all CAs together.
    pub(super) fn waiting(&self) -> usize {
        self.lock().values().map(|s| s.held).sum()
    }

    /// The CAs whose share is full, for a claim about to be sent: it leaves their packs
    /// in the store.
    pub(super) fn full(&self) -> Vec<CaChoice> {
        let mut shares = self.lock();
        let mut full = Vec::new();
        for (ca, share) in shares.iter_mut() {
            share.left_behind = share.held >= share.pace.bound();
            if share.left_behind {
                full.push(*ca);
            }
        }
        full
    }

    /// Whether a CA whose packs were left in the store has a quarter of its share free
    /// again: worth a claim (the hand's own rule, `room_to_reclaim`, so claims stay batched).
    pub(super) fn reopened(&self) -> bool {
        self.lock()
            .values()
            .any(|s| s.left_behind && super::room_to_reclaim(s.pace.bound(), s.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cas_share_is_bounded_and_its_places_come_back() {
        let shares = CaShares::new(Duration::from_secs(2));
        let held: Vec<_> = (0..CA_FLOOR)
            .map(|_| shares.wait_on(CaChoice::Google).expect("a place"))
            .collect();
        assert!(
            shares.wait_on(CaChoice::Google).is_none(),
            "the share is full"
        );
        assert!(!shares.reopened());
        assert_eq!(shares.full(), vec![CaChoice::Google]);
        assert_eq!(shares.waiting(), CA_FLOOR);
        // Another CA's share is its own.
        let other = shares.wait_on(CaChoice::LetsEncrypt).expect("a place");
        assert_eq!(shares.waiting(), CA_FLOOR + 1);
        drop(other);
        let mut held = held;
        held.truncate(CA_FLOOR - CA_FLOOR / 4 + 1);
        assert!(!shares.reopened(), "less than a quarter free");
        held.pop();
        assert!(shares.reopened(), "a quarter free: claim again");
        drop(held);
        assert_eq!(shares.waiting(), 0);
        assert!(shares.full().is_empty());
        assert!(shares.wait_on(CaChoice::Google).is_some());
    }
}
