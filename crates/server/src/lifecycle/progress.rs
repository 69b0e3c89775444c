//! Who waits for which pack's progress.
//!
//! A `retry=true` waits for the checks of its zone's packs (see `http::ssl`), and the
//! worker tells when a pack's step ended. Waiters are kept per pack, so a step wakes only
//! the requests waiting for that pack. One channel of every pack's steps woke each waiting
//! request at every step of any pack: with 256 customers retrying at once during an ACME
//! run (bench/acme.sh), the request threads spent about a tenth of a CPU in those wake-ups
//! (`perf record` of the request threads: the broadcast receiver, the handler's re-read
//! and its timer re-armed each time), and a GET waited for them.

use crate::model::PackId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;

/// The waiters of each pack.
#[derive(Debug, Default)]
pub(super) struct ProgressWaiters {
    by_pack: Mutex<HashMap<PackId, Vec<Arc<Notify>>>>,
}

impl ProgressWaiters {
    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<PackId, Vec<Arc<Notify>>>> {
        // Registrations only: a panic elsewhere cannot leave them half-written.
        self.by_pack.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the waiters of `pack`. A waiter not waiting at this moment finds the
    /// notice when it next waits ([`Notify::notify_one`] keeps it).
    pub(super) fn notify(&self, pack: &PackId) {
        if let Some(waiters) = self.waiters().get(pack) {
            for waiter in waiters {
                waiter.notify_one();
            }
        }
    }

    /// Registers a waiter for `packs`, until the returned watch is dropped.
    pub(super) fn watch(&self, packs: Vec<PackId>) -> ProgressWatch<'_> {
        let notify = Arc::new(Notify::new());
        let mut waiters = self.waiters();
        for pack in &packs {
            waiters
                .entry(pack.clone())
                .or_default()
                .push(Arc::clone(&notify));
        }
        drop(waiters);
        ProgressWatch {
            waiters: self,
            packs,
            notify,
        }
    }
}

/// A registration for some packs' progress (see [`super::Signals::watch_progress`]).
#[derive(Debug)]
pub struct ProgressWatch<'a> {
    waiters: &'a ProgressWaiters,
    packs: Vec<PackId>,
    notify: Arc<Notify>,
}

impl ProgressWatch<'_> {
    /// Resolves when one of the watched packs' steps ended since the watch was made or
    /// since this last resolved (not which one: the caller re-reads those it waits for).
    pub async fn moved(&self) {
        self.notify.notified().await;
    }
}

impl Drop for ProgressWatch<'_> {
    fn drop(&mut self) {
        let mut waiters = self.waiters.waiters();
        for pack in &self.packs {
            if let Some(list) = waiters.get_mut(pack) {
                list.retain(|w| !Arc::ptr_eq(w, &self.notify));
                if list.is_empty() {
                    waiters.remove(pack);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pack(n: u128) -> PackId {
        PackId::parse(&uuid::Uuid::from_u128(n).to_string()).expect("a UUID")
    }

    #[tokio::test]
    async fn a_step_wakes_only_the_waiters_of_its_pack() {
        let waiters = ProgressWaiters::default();
        let first = waiters.watch(vec![pack(1)]);
        let second = waiters.watch(vec![pack(2), pack(3)]);
        waiters.notify(&pack(3));
        // The notice given before the wait is kept.
        tokio::time::timeout(Duration::from_secs(1), second.moved())
            .await
            .expect("the waiter of pack 3 is woken");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), first.moved())
                .await
                .is_err(),
            "the waiter of pack 1 is not woken by pack 3's step"
        );
        // Once dropped, a watch leaves nothing registered.
        drop(first);
        drop(second);
        assert!(waiters.waiters().is_empty());
    }

    #[tokio::test]
    async fn two_waiters_of_one_pack_are_both_woken_and_one_leaving_keeps_the_other() {
        let waiters = ProgressWaiters::default();
        let a = waiters.watch(vec![pack(7)]);
        let b = waiters.watch(vec![pack(7)]);
        waiters.notify(&pack(7));
        for w in [&a, &b] {
            tokio::time::timeout(Duration::from_secs(1), w.moved())
                .await
                .expect("both waiters are woken");
        }
        drop(a);
        waiters.notify(&pack(7));
        tokio::time::timeout(Duration::from_secs(1), b.moved())
            .await
            .expect("the remaining waiter is still registered");
    }
}
