//! The read cache of the request path: tokens and users by credential, and each zone's
//! packs, kept in memory between the writes that change them.
//!
//! Every API request authenticates and most read one zone's packs; reading them from
//! SQLite each time (two read transactions, B-tree seeks, decoding) cost several times
//! the rest of the request. The cache holds what those reads return, and the backend
//! keeps it exact:
//! - a write of this process invalidates what it touched before `write` returns, so a
//!   request that follows a write always reads it;
//! - a write of another process (the admin CLI, a second server on the same file) is
//!   noticed by the next read, which then empties the cache: the database's commit
//!   counter ([`super::wal_watch`]) is not the one the cache knows. Writes of this
//!   process tell the cache the counter they leave behind;
//! - a read that raced with a write does not enter the cache: fills carry the epoch
//!   they started in, and every invalidation moves the epoch on.
//!
//! Misses are not cached (a flood of bad tokens must not grow memory), and the zones'
//! part has a size budget: past it, arbitrary entries are evicted.
//!
//! A backend shared by many nodes (PostgreSQL) may use the cache only with a change
//! signal that plays the commit counter's part (LISTEN/NOTIFY on every commit).

use crate::model::{Pack, Token, User, Zone, ZoneId};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A zone and its packs (with their hosts), ordered as they were created.
#[derive(Debug)]
pub struct ZoneView {
    /// The zone.
    pub zone: Zone,
    /// Its packs, oldest first.
    pub packs: Vec<Pack>,
    /// The answer rendered from this view by the one endpoint that renders whole views
    /// (GET verification), kept with the view: the cache drops both when the zone
    /// changes, so a kept answer is never stale.
    pub rendered: OnceLock<Bytes>,
}

impl ZoneView {
    /// A view of `zone` with `packs`, not rendered yet.
    pub fn new(zone: Zone, packs: Vec<Pack>) -> ZoneView {
        ZoneView {
            zone,
            packs,
            rendered: OnceLock::new(),
        }
    }

    /// Roughly the bytes the view holds: the cache's unit of size.
    fn weight(&self) -> usize {
        let pack_bytes: usize = self
            .packs
            .iter()
            .map(|p| {
                512 + p.hosts.len() * 384
                    + p.errors.iter().map(String::len).sum::<usize>()
                    + p.certificate.as_ref().map_or(0, |c| c.chain_pem.len())
            })
            .sum();
        // The rendered answer takes about as much again.
        2 * (256 + pack_bytes)
    }
}

/// What a write may have changed, for the cache to forget (or bring up to date).
#[derive(Debug)]
pub enum Touch<'a> {
    /// Nothing the cache holds (leases, which no view shows).
    Nothing,
    /// One zone or its packs.
    Zone(&'a ZoneId),
    /// These packs, written exactly as given (a lifecycle batch): the views of their
    /// zones get them in place instead of being forgotten. The lifecycle rewrites a
    /// pack several times in seconds; forgetting its zone each time would send the
    /// zone's next request to the database, where it waits for SQLite's locks behind
    /// the lifecycle's own commits.
    Packs(Vec<Pack>),
    /// Users or tokens.
    Credentials,
}

/// Size budget of the zones' part, in [`ZoneView::weight`] units (bytes, roughly). A
/// zone of 2 pending packs of 2 hosts weighs about 5.6 KB with its answer, so 64 MiB
/// keeps some 12,000 such zones; 1,000 zones of 100 such packs would not all fit.
const ZONES_BUDGET: usize = 64 << 20;

/// A zone id's 32 characters, held in the map's own memory: comparing a key then
/// reads no other allocation (with ids as `String`s, that read was a cache miss).
type ZoneKey = [u8; 32];

fn zone_key(id: &ZoneId) -> ZoneKey {
    let mut key = [0; 32];
    for (k, b) in key.iter_mut().zip(id.as_str().bytes()) {
        *k = b;
    }
    key
}

#[derive(Debug, Default)]
struct Entries {
    tokens: HashMap<[u8; 32], Arc<Token>>,
    users: HashMap<String, Arc<User>>,
    zones: HashMap<ZoneKey, Arc<ZoneView>>,
    zones_weight: usize,
}

/// The cache; one per open store.
#[derive(Debug)]
pub(super) struct ReadCache {
    /// Moves on with every invalidation, under the entries' write lock.
    epoch: AtomicU64,
    /// The database's commit counter the entries are current with, or [`UNKNOWN`].
    known: AtomicU64,
    /// While a write of this process commits: the counter its commit will leave, or
    /// [`UNKNOWN`]. A read that sees it is concurrent with that write, whose invalidation
    /// follows; without this, every such read would empty the cache.
    committing: AtomicU64,
    entries: RwLock<Entries>,
}

/// No commit counter: never equal to a real one (a u32).
const UNKNOWN: u64 = u64::MAX;

impl Default for ReadCache {
    fn default() -> Self {
        ReadCache {
            epoch: AtomicU64::new(0),
            known: AtomicU64::new(UNKNOWN),
            committing: AtomicU64::new(UNKNOWN),
            entries: RwLock::default(),
        }
    }
}

impl Entries {
    /// Removes a zone's view, returned so the caller can drop it after the lock.
    fn take_zone(&mut self, key: &ZoneKey) -> Option<Arc<ZoneView>> {
        let old = self.zones.remove(key)?;
        self.zones_weight = self.zones_weight.saturating_sub(old.weight());
        Some(old)
    }

    /// Puts a zone's view in, returning the one it replaces.
    fn put_zone(&mut self, key: ZoneKey, view: Arc<ZoneView>) -> Option<Arc<ZoneView>> {
        let old = self.take_zone(&key);
        self.zones_weight += view.weight();
        self.zones.insert(key, view);
        old
    }
}

impl ReadCache {
    fn read(&self) -> RwLockReadGuard<'_, Entries> {
        // The entries are plain maps: a panic elsewhere cannot leave them half-changed
        // in a way that matters, so a poisoned lock is still usable.
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the entries under the write lock and moves the epoch on (so fills that
    /// started before are dropped). What `change` returns (entries taken out) is dropped
    /// by the caller after the lock is released: freeing many views takes long enough to
    /// hold up every request waiting on the lock.
    fn changing<T>(&self, change: impl FnOnce(&mut Entries) -> T) -> T {
        let mut entries = self.write();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        change(&mut entries)
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Before a read that may use the cache, given the database's commit counter now:
    /// empties the cache if the database moved on without it (another process wrote),
    /// and returns the epoch to pass to the `put_*` calls of a fill that starts now.
    pub(super) fn epoch_at(&self, counter: u32) -> u64 {
        let counter = u64::from(counter);
        if self.known.load(Ordering::Acquire) != counter
            && self.committing.load(Ordering::Acquire) != counter
        {
            self.clear();
            self.known.store(counter, Ordering::Release);
        }
        self.epoch()
    }

    /// Before a write of this process commits, with what [`Self::committed`] will be
    /// told: announces the counter the commit will leave.
    pub(super) fn committing(&self, before: Option<u32>, wrote: bool) {
        if let Some(c) = before.filter(|_| wrote)
            && self.known.load(Ordering::Acquire) == u64::from(c)
        {
            self.committing
                .store(u64::from(c.wrapping_add(1)), Ordering::Release);
        }
    }

    /// After a write of this process committed. `before` is the commit counter read
    /// inside the write transaction (no other commit can land there), `wrote` whether it
    /// changed rows (then its commit moved the counter on by one).
    pub(super) fn committed(&self, before: Option<u32>, wrote: bool, touch: Touch<'_>) {
        match before {
            Some(c) if self.known.load(Ordering::Acquire) == u64::from(c) => self.invalidate(touch),
            // Another process wrote since the last look, or the counter is unreadable.
            _ => self.clear(),
        }
        let after = before.map_or(UNKNOWN, |c| u64::from(c.wrapping_add(u32::from(wrote))));
        self.known.store(after, Ordering::Release);
        self.committing.store(UNKNOWN, Ordering::Release);
    }

    /// After a write of this process failed to commit: nothing is known any more (the
    /// counter another process moves on must not pass for this one's).
    pub(super) fn commit_failed(&self) {
        self.clear();
        self.known.store(UNKNOWN, Ordering::Release);
        self.committing.store(UNKNOWN, Ordering::Release);
    }

    pub(super) fn token(&self, hash: &[u8; 32]) -> Option<Arc<Token>> {
        self.read().tokens.get(hash).cloned()
    }

    pub(super) fn user(&self, email: &str) -> Option<Arc<User>> {
        self.read().users.get(email).cloned()
    }

    pub(super) fn zone(&self, id: &ZoneId) -> Option<Arc<ZoneView>> {
        self.read().zones.get(&zone_key(id)).cloned()
    }

    pub(super) fn put_token(&self, epoch: u64, token: Arc<Token>) {
        let mut entries = self.write();
        if self.epoch() == epoch {
            entries.tokens.insert(token.secret_hash, token);
        }
    }

    pub(super) fn put_user(&self, epoch: u64, user: Arc<User>) {
        let mut entries = self.write();
        if self.epoch() == epoch {
            entries.users.insert(user.email.clone(), user);
        }
    }

    pub(super) fn put_zone(&self, epoch: u64, view: Arc<ZoneView>) {
        let weight = view.weight();
        if weight > ZONES_BUDGET / 16 {
            return; // one huge zone would evict everything else
        }
        let mut entries = self.write();
        if self.epoch() != epoch {
            return;
        }
        while entries.zones_weight + weight > ZONES_BUDGET {
            let Some(victim) = entries.zones.keys().next().copied() else {
                break;
            };
            entries.take_zone(&victim);
        }
        entries.put_zone(zone_key(&view.zone.id), view);
    }

    /// Forgets what a write of this process touched, or brings it up to date. Called
    /// after it committed, before the next write of this process can start.
    fn invalidate(&self, touch: Touch<'_>) {
        match touch {
            Touch::Nothing => {}
            Touch::Zone(id) => drop(self.changing(|e| e.take_zone(&zone_key(id)))),
            Touch::Packs(packs) => self.replace_packs(packs),
            Touch::Credentials => drop(
                self.changing(|e| (std::mem::take(&mut e.tokens), std::mem::take(&mut e.users))),
            ),
        }
    }

    /// Puts written packs into the cached views of their zones. The new views are built
    /// outside the lock from the views seen before it; a view that changed meanwhile (a
    /// fill that raced with this write) is forgotten instead, as is a view that does
    /// not hold the pack (it was read before the pack existed).
    fn replace_packs(&self, packs: Vec<Pack>) {
        let mut by_zone: HashMap<ZoneKey, Vec<Pack>> = HashMap::new();
        for pack in packs {
            by_zone
                .entry(zone_key(&pack.zone_id))
                .or_default()
                .push(pack);
        }
        let seen: Vec<(ZoneKey, Option<Arc<ZoneView>>)> = {
            let entries = self.read();
            by_zone
                .keys()
                .map(|key| (*key, entries.zones.get(key).cloned()))
                .collect()
        };
        let mut updated = Vec::with_capacity(seen.len());
        for (key, old) in seen {
            let Some(old) = old else { continue };
            let mut packs = old.packs.clone();
            let mut complete = true;
            for written in by_zone.remove(&key).unwrap_or_default() {
                match packs.iter_mut().find(|p| p.id == written.id) {
                    Some(slot) => *slot = written,
                    None => complete = false,
                }
            }
            let new = complete.then(|| Arc::new(ZoneView::new(old.zone.clone(), packs)));
            updated.push((key, old, new));
        }
        let replaced = self.changing(|entries| {
            let mut replaced = Vec::with_capacity(updated.len());
            for (key, old, new) in updated {
                match (entries.take_zone(&key), new) {
                    (Some(current), Some(new)) if Arc::ptr_eq(&current, &old) => {
                        entries.put_zone(key, new);
                        replaced.push(current);
                    }
                    (current, _) => replaced.extend(current),
                }
            }
            replaced
        });
        drop(replaced);
    }

    /// Forgets everything: another process changed the database.
    fn clear(&self) {
        drop(self.changing(std::mem::take));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Hostname;

    fn view(id: &str) -> Arc<ZoneView> {
        Arc::new(ZoneView::new(
            Zone {
                id: ZoneId::parse(id).unwrap(),
                name: Hostname::parse("example.com").unwrap(),
                created_at: 0,
            },
            Vec::new(),
        ))
    }

    const A: &str = "023e105f4ecef8ad9ca31a8372d0c353";
    const B: &str = "023e105f4ecef8ad9ca31a8372d0c354";

    #[test]
    fn a_fill_that_raced_with_a_write_is_dropped() {
        let cache = ReadCache::default();
        let epoch = cache.epoch_at(7);
        // A write to another zone lands while the fill reads: the fill may hold data
        // from before it, so it must not enter.
        cache.committed(Some(7), true, Touch::Zone(&ZoneId::parse(B).unwrap()));
        cache.put_zone(epoch, view(A));
        assert!(cache.zone(&ZoneId::parse(A).unwrap()).is_none());
        cache.put_zone(cache.epoch_at(8), view(A));
        assert!(cache.zone(&ZoneId::parse(A).unwrap()).is_some());
    }

    #[test]
    fn own_writes_forget_what_they_touched_and_others_everything() {
        let cache = ReadCache::default();
        cache.put_zone(cache.epoch_at(1), view(A));
        cache.put_zone(cache.epoch_at(1), view(B));
        cache.committed(Some(1), true, Touch::Zone(&ZoneId::parse(A).unwrap()));
        assert!(cache.zone(&ZoneId::parse(A).unwrap()).is_none());
        assert!(cache.zone(&ZoneId::parse(B).unwrap()).is_some());
        // Our commit moved the counter to 2: no loss at the next look.
        cache.epoch_at(2);
        assert!(cache.zone(&ZoneId::parse(B).unwrap()).is_some());
        cache.committed(Some(2), false, Touch::Nothing);
        cache.epoch_at(2);
        assert!(cache.zone(&ZoneId::parse(B).unwrap()).is_some());
        // Another process committed (3): everything goes.
        cache.epoch_at(3);
        assert!(cache.zone(&ZoneId::parse(B).unwrap()).is_none());
        // Another process committed before one of ours: everything goes too.
        cache.put_zone(cache.epoch_at(3), view(B));
        cache.committed(Some(4), true, Touch::Nothing);
        assert!(cache.zone(&ZoneId::parse(B).unwrap()).is_none());
    }

    #[test]
    fn a_read_during_an_own_commit_keeps_the_cache() {
        let cache = ReadCache::default();
        cache.put_zone(cache.epoch_at(5), view(A));
        cache.put_zone(cache.epoch_at(5), view(B));
        cache.committing(Some(5), true);
        // The commit landed (6) but has not invalidated yet: a read now is concurrent
        // with the write and must not wipe the other zones.
        cache.epoch_at(6);
        assert!(cache.zone(&ZoneId::parse(B).unwrap()).is_some());
        cache.committed(Some(5), true, Touch::Zone(&ZoneId::parse(A).unwrap()));
        assert!(cache.zone(&ZoneId::parse(A).unwrap()).is_none());
        assert!(cache.zone(&ZoneId::parse(B).unwrap()).is_some());
        // A commit that failed leaves nothing trusted: another process's 7 empties it.
        cache.committing(Some(6), true);
        cache.commit_failed();
        cache.put_zone(cache.epoch_at(7), view(B));
        cache.committing(Some(7), true);
        cache.commit_failed();
        cache.epoch_at(8);
        assert!(cache.zone(&ZoneId::parse(B).unwrap()).is_none());
    }
}
