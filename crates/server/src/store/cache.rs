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
//!   counter (`sqlite/wal_watch.rs`) is not the one the cache knows. Writes of this
//!   process tell the cache the counter they leave behind;
//! - a read that raced with a write does not enter the cache: fills carry the epoch
//!   they started in, every invalidation moves the epoch on, and the cache remembers at
//!   which epoch each zone last changed. A fill is dropped only when what it read
//!   changed after it started: its zone, the credentials, or everything (another
//!   process wrote). With one epoch for everything, every lifecycle commit (one every
//!   few milliseconds while it works) dropped every fill in flight, and the zones it
//!   was filling stayed cold.
//!
//! Misses are not cached (a flood of bad tokens must not grow memory), and the zones'
//! part has a size budget: past it, arbitrary entries are evicted.
//!
//! A backend shared by many nodes (PostgreSQL) uses the cache with a change signal that
//! plays the commit counter's part: every commit notifies the other nodes of what it
//! touched (LISTEN/NOTIFY), and a request first makes sure it heard every notification
//! of the commits before it started (`postgres/changes.rs`).

use crate::model::{Pack, Token, User, Zone, ZoneId};
use crate::store::WebhookEndpoint;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A zone and its packs (with their hosts), ordered as they were created.
#[derive(Debug)]
pub struct ZoneView {
    /// The zone.
    pub zone: Zone,
    /// Its packs, oldest first. Shared, not owned: a lifecycle write of one pack builds
    /// the zone's next view from the same packs but that one (deep copies of a 100-pack
    /// zone on each write raised the server's peak RSS by 20-30 MB with 100,000 packs
    /// stored, through the allocator's fragmentation).
    pub packs: Vec<Arc<Pack>>,
}

impl ZoneView {
    /// A view of `zone` with `packs`.
    pub fn new(zone: Zone, packs: Vec<Pack>) -> ZoneView {
        Self::shared(zone, packs.into_iter().map(Arc::new).collect())
    }

    /// A view of `zone` with packs shared with other views.
    fn shared(zone: Zone, packs: Vec<Arc<Pack>>) -> ZoneView {
        ZoneView { zone, packs }
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
        // The rendered answer ([`CachedZone::answer`]) takes about as much again.
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
    /// The webhook endpoints.
    Webhooks,
    /// Anything (the test controls' reset empties every table).
    Everything,
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

/// A cached zone: its view, and the answer rendered from that view by the one endpoint
/// that renders whole views (GET verification), once a request has rendered it. The
/// answer is dropped with the view when the zone changes, so a kept answer is never
/// stale. It is held here, in the map's own memory, rather than in the view: a hit then
/// reads the map's slot and the answer's bytes, and no other allocation. With 10,000
/// zones every other allocation read is a cache miss: the view's reference count and
/// its answer's slot, two lines apart, took about 6 % of a GET verification's CPU
/// (`perf record` of `bench/verification.sh`'s load). `Bytes`' own count, in an
/// allocation of its own, is still such a miss; an `Arc<[u8]>` (count beside the first
/// bytes) handed out through `Bytes::from_owner` instead cost 6 % of req/s more (an
/// allocation and two more atomic operations per request).
#[derive(Debug)]
struct CachedZone {
    view: Arc<ZoneView>,
    answer: Option<Bytes>,
}

/// How many zones' change epochs are remembered; past it they are forgotten at once and
/// [`Entries::zones_floor`] moves up instead (a fill older than that is dropped). About
/// 40 bytes each.
const CHANGED_ZONES_KEPT: usize = 16_384;

/// The hasher of the maps every request looks up (a token by its secret's hash, a zone
/// by its id): foldhash, randomly seeded (per process and per map), instead of std's SipHash,
/// which took about 270 instructions a lookup of these 32-byte keys (two per GET
/// verification, callgrind). Their keys are not the client's to choose freely: token
/// hashes are SHA-256 digests and zone ids are checked ids, and only stored ones are
/// kept (misses are not cached).
type Fast = foldhash::fast::RandomState;

#[derive(Debug, Default)]
struct Entries {
    tokens: HashMap<[u8; 32], Arc<Token>, Fast>,
    users: HashMap<String, Arc<User>>,
    zones: HashMap<ZoneKey, CachedZone, Fast>,
    zones_weight: usize,
    /// The epoch at which each zone changed last, for the zones changed since
    /// `zones_floor`.
    zone_changed: HashMap<ZoneKey, u64>,
    /// Every zone may have changed at this epoch (the cache was emptied, or
    /// `zone_changed` overflowed): fills that started before it are dropped.
    zones_floor: u64,
    /// The epoch at which users or tokens changed last.
    credentials_changed: u64,
    /// The webhook endpoints, when known: the lifecycle looks here before it makes a
    /// transition's webhook events, and makes none when no endpoint could want them.
    /// Filled by the lifecycle's batches, which read the endpoints in their transaction.
    webhook_endpoints: Option<Arc<[WebhookEndpoint]>>,
    /// The epoch at which the webhook endpoints changed last.
    webhooks_changed: u64,
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
        let old = self.zones.remove(key)?.view;
        self.zones_weight = self.zones_weight.saturating_sub(old.weight());
        Some(old)
    }

    /// Puts a zone's view in, returning the one it replaces.
    fn put_zone(&mut self, key: ZoneKey, view: Arc<ZoneView>) -> Option<Arc<ZoneView>> {
        let old = self.take_zone(&key);
        self.zones_weight += view.weight();
        self.zones.insert(key, CachedZone { view, answer: None });
        old
    }

    /// Notes that the zone changed at `epoch`.
    fn zone_changed(&mut self, key: ZoneKey, epoch: u64) {
        if self.zone_changed.len() >= CHANGED_ZONES_KEPT {
            self.zone_changed.clear();
            self.zones_floor = epoch;
        }
        self.zone_changed.insert(key, epoch);
    }

    /// Whether a fill of the zone that started at `epoch` read what is current.
    fn zone_unchanged_since(&self, key: &ZoneKey, epoch: u64) -> bool {
        epoch >= self.zones_floor && self.zone_changed.get(key).is_none_or(|&at| at <= epoch)
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

    /// Changes the entries under the write lock and moves the epoch on; `change` gets
    /// the new epoch, to note what changed at it (so fills that started before and read
    /// it are dropped). What `change` returns (entries taken out) is dropped by the
    /// caller after the lock is released: freeing many views takes long enough to hold
    /// up every request waiting on the lock.
    fn changing<T>(&self, change: impl FnOnce(&mut Entries, u64) -> T) -> T {
        let mut entries = self.write();
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        change(&mut entries, epoch)
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Before a read that may use the cache: reads the database's commit counter with
    /// `read_counter`, empties the cache if the database moved on without it (another
    /// process wrote), and returns the epoch to pass to the `put_*` calls of a fill that
    /// starts now; `None` when the counter cannot be read (then read past the cache).
    ///
    /// A write of this process may commit while the counter is read: the value read is
    /// then older than the one the write leaves in `known`. Every value `known` held
    /// from before the read to after it is one this process accounted for (its own
    /// commits, or one whose write emptied the cache), so any of them is current enough;
    /// comparing with `known` after the read alone took such a value for another
    /// process's commit and emptied the whole cache, twice (once for the old value, once
    /// for the new), every second or so under the lifecycle's writes.
    pub(super) fn epoch_with(&self, read_counter: impl FnOnce() -> Option<u32>) -> Option<u64> {
        let known_before = self.known.load(Ordering::Acquire);
        let committing_before = self.committing.load(Ordering::Acquire);
        let counter = u64::from(read_counter()?);
        let known_after = self.known.load(Ordering::Acquire);
        let accounted = if known_before == UNKNOWN || known_after == UNKNOWN {
            counter == known_after
        } else {
            // Counters are u32 and wrap: how far `known` moved, and where the value read
            // falls from its start.
            let moved = (known_after as u32).wrapping_sub(known_before as u32);
            (counter as u32).wrapping_sub(known_before as u32) <= moved
        };
        if !accounted
            && counter != committing_before
            && counter != self.committing.load(Ordering::Acquire)
        {
            self.clear();
            // If `known` moved meanwhile, the value read may already be old: know
            // nothing, and let the next read take the counter as it is then.
            let trusted = if known_after == known_before {
                counter
            } else {
                UNKNOWN
            };
            self.known.store(trusted, Ordering::Release);
        }
        Some(self.epoch())
    }

    /// [`Self::epoch_with`] a counter read already.
    #[cfg(test)]
    fn epoch_at(&self, counter: u32) -> u64 {
        self.epoch_with(|| Some(counter)).unwrap_or(u64::MAX)
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
        self.read().zones.get(&zone_key(id)).map(|z| z.view.clone())
    }

    /// The answer kept for the zone's cached view (see [`CachedZone`]).
    pub(super) fn answer(&self, id: &ZoneId) -> Option<Bytes> {
        self.read().zones.get(&zone_key(id))?.answer.clone()
    }

    /// Keeps `answer`, rendered from `view`, while `view` is the zone's cached view; a
    /// view replaced meanwhile (the zone changed) keeps nothing.
    pub(super) fn keep_answer(&self, view: &Arc<ZoneView>, answer: Bytes) {
        let mut entries = self.write();
        if let Some(cached) = entries.zones.get_mut(&zone_key(&view.zone.id))
            && Arc::ptr_eq(&cached.view, view)
        {
            cached.answer = Some(answer);
        }
    }

    /// The webhook endpoints, if known (see [`Entries::webhook_endpoints`]).
    pub(super) fn webhook_endpoints(&self) -> Option<Arc<[WebhookEndpoint]>> {
        self.read().webhook_endpoints.clone()
    }

    /// Keeps the webhook endpoints read at `epoch`, unless they changed since.
    pub(super) fn put_webhook_endpoints(&self, epoch: u64, endpoints: Arc<[WebhookEndpoint]>) {
        let mut entries = self.write();
        if epoch >= entries.webhooks_changed {
            entries.webhook_endpoints = Some(endpoints);
        }
    }

    pub(super) fn put_token(&self, epoch: u64, token: Arc<Token>) {
        let mut entries = self.write();
        if epoch >= entries.credentials_changed {
            entries.tokens.insert(token.secret_hash, token);
        }
    }

    pub(super) fn put_user(&self, epoch: u64, user: Arc<User>) {
        let mut entries = self.write();
        if epoch >= entries.credentials_changed {
            entries.users.insert(user.email.clone(), user);
        }
    }

    pub(super) fn put_zone(&self, epoch: u64, view: Arc<ZoneView>) {
        let weight = view.weight();
        if weight > ZONES_BUDGET / 16 {
            return; // one huge zone would evict everything else
        }
        let key = zone_key(&view.zone.id);
        let mut entries = self.write();
        if !entries.zone_unchanged_since(&key, epoch) {
            return;
        }
        // Views taken out are freed after the lock is released (as in `changing`).
        let mut evicted = Vec::new();
        while entries.zones_weight + weight > ZONES_BUDGET {
            let Some(victim) = entries.zones.keys().next().copied() else {
                break;
            };
            evicted.extend(entries.take_zone(&victim));
        }
        evicted.extend(entries.put_zone(key, view));
        drop(entries);
    }

    /// Warming: puts in the views read at `epoch` that are not cached yet, as long as the
    /// zones' part stays within `share` of its budget; evicts nothing. Returns how many
    /// it put in, and `false` once that share is reached (the rest is left to the
    /// requests).
    pub(super) fn warm_zones(
        &self,
        epoch: u64,
        views: Vec<Arc<ZoneView>>,
        share: f64,
    ) -> (usize, bool) {
        let up_to = (ZONES_BUDGET as f64 * share.clamp(0.0, 1.0)) as usize;
        let mut entries = self.write();
        let mut put = 0;
        for view in views {
            let key = zone_key(&view.zone.id);
            if entries.zones.contains_key(&key) || !entries.zone_unchanged_since(&key, epoch) {
                continue;
            }
            let weight = view.weight();
            if weight > ZONES_BUDGET / 16 {
                continue;
            }
            if entries.zones_weight + weight > up_to {
                return (put, false);
            }
            entries.put_zone(key, view);
            put += 1;
        }
        (put, true)
    }

    /// For a backend told of every change rather than reading a commit counter
    /// (PostgreSQL's notifications): the epoch a fill that starts now passes to the
    /// `put_*` calls.
    pub(super) fn current_epoch(&self) -> u64 {
        self.epoch()
    }

    /// For such a backend: forgets what a change touched (or brings it up to date), made
    /// by this process or told of by another.
    pub(super) fn forget(&self, touch: Touch<'_>) {
        self.invalidate(touch);
    }

    /// For such a backend: forgets everything (its change signal was lost for a while).
    pub(super) fn forget_all(&self) {
        self.clear();
    }

    /// Forgets what a write of this process touched, or brings it up to date. Called
    /// after it committed, before the next write of this process can start.
    fn invalidate(&self, touch: Touch<'_>) {
        match touch {
            Touch::Nothing => {}
            Touch::Zone(id) => drop(self.changing(|e, epoch| {
                let key = zone_key(id);
                e.zone_changed(key, epoch);
                e.take_zone(&key)
            })),
            Touch::Packs(packs) => self.replace_packs(packs),
            Touch::Credentials => drop(self.changing(|e, epoch| {
                e.credentials_changed = epoch;
                (std::mem::take(&mut e.tokens), std::mem::take(&mut e.users))
            })),
            Touch::Webhooks => drop(self.changing(|e, epoch| {
                e.webhooks_changed = epoch;
                e.webhook_endpoints.take()
            })),
            Touch::Everything => self.clear(),
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
                .map(|key| (*key, entries.zones.get(key).map(|z| z.view.clone())))
                .collect()
        };
        let mut updated = Vec::with_capacity(seen.len());
        let mut uncached = Vec::new();
        for (key, old) in seen {
            let Some(old) = old else {
                uncached.push(key);
                continue;
            };
            let mut packs = old.packs.clone();
            let mut complete = true;
            for written in by_zone.remove(&key).unwrap_or_default() {
                match packs.iter_mut().find(|p| p.id == written.id) {
                    Some(slot) => *slot = Arc::new(written),
                    None => complete = false,
                }
            }
            let new = complete.then(|| Arc::new(ZoneView::shared(old.zone.clone(), packs)));
            updated.push((key, old, new));
        }
        let replaced = self.changing(|entries, epoch| {
            let mut replaced = Vec::with_capacity(updated.len());
            for key in uncached {
                entries.zone_changed(key, epoch);
                // A fill put in since the look above may hold what this batch replaced.
                replaced.extend(entries.take_zone(&key));
            }
            for (key, old, new) in updated {
                entries.zone_changed(key, epoch);
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
        drop(self.changing(|entries, epoch| {
            std::mem::replace(
                entries,
                Entries {
                    zones_floor: epoch,
                    credentials_changed: epoch,
                    webhooks_changed: epoch,
                    ..Entries::default()
                },
            )
        }));
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
    fn an_answer_is_kept_only_for_the_view_it_was_rendered_from() {
        let a = ZoneId::parse(A).unwrap();
        let cache = ReadCache::default();
        let epoch = cache.epoch_at(7);
        let first = view(A);
        cache.put_zone(epoch, first.clone());
        assert_eq!(cache.answer(&a), None, "nothing rendered yet");
        cache.keep_answer(&first, Bytes::from_static(b"first"));
        assert_eq!(cache.answer(&a).as_deref(), Some(&b"first"[..]));

        // The zone changes: its answer goes with its view.
        cache.committed(Some(7), true, Touch::Zone(&a));
        assert_eq!(cache.answer(&a), None);
        // A request that rendered the old view finishes late: its answer is not kept,
        // neither without a view nor beside the next one.
        cache.keep_answer(&first, Bytes::from_static(b"stale"));
        assert_eq!(cache.answer(&a), None);
        let second = view(A);
        cache.put_zone(cache.epoch_at(8), second.clone());
        cache.keep_answer(&first, Bytes::from_static(b"stale"));
        assert_eq!(cache.answer(&a), None);
        cache.keep_answer(&second, Bytes::from_static(b"second"));
        assert_eq!(cache.answer(&a).as_deref(), Some(&b"second"[..]));
    }

    #[test]
    fn a_fill_is_dropped_only_when_what_it_read_changed_meanwhile() {
        let (a, b) = (ZoneId::parse(A).unwrap(), ZoneId::parse(B).unwrap());
        let cache = ReadCache::default();
        let epoch = cache.epoch_at(7);
        // Writes to B land while fills of A and B read: B's fill may hold data from
        // before them and must not enter; A's read nothing they changed.
        cache.committed(Some(7), true, Touch::Zone(&b));
        cache.committed(Some(8), true, Touch::Packs(Vec::new()));
        cache.put_zone(epoch, view(A));
        cache.put_zone(epoch, view(B));
        assert!(cache.zone(&a).is_some());
        assert!(cache.zone(&b).is_none());
        // A fill that starts after the write enters.
        cache.put_zone(cache.epoch_at(9), view(B));
        assert!(cache.zone(&b).is_some());
        // Another process wrote: every fill that started before is dropped, and so is
        // a warming's.
        let before = cache.epoch_at(9);
        cache.epoch_at(10);
        cache.put_zone(before, view(A));
        cache.warm_zones(before, vec![view(B)], 1.0);
        assert!(cache.zone(&a).is_none() && cache.zone(&b).is_none());
    }

    #[test]
    fn a_lifecycle_write_drops_a_racing_fill_of_its_zone_even_when_uncached() {
        let cache = ReadCache::default();
        let epoch = cache.epoch_at(3);
        let pack = Pack::order(
            ZoneId::parse(A).unwrap(),
            vec![Hostname::parse("example.com").unwrap()],
            crate::model::DcvMethod::Txt,
            90,
            crate::model::CaChoice::LetsEncrypt,
            false,
            "x.dcv.test",
            100,
        );
        cache.committed(Some(3), true, Touch::Packs(vec![pack]));
        cache.put_zone(epoch, view(A));
        assert!(cache.zone(&ZoneId::parse(A).unwrap()).is_none());
    }

    #[test]
    fn warming_fills_up_to_its_share_without_evicting() {
        let cache = ReadCache::default();
        let epoch = cache.epoch_at(1);
        cache.put_zone(epoch, view(A));
        let one = view(A).weight();
        let share = (one as f64 * 1.5) / ZONES_BUDGET as f64;
        // A is cached already: warming keeps it and has room for nothing more.
        assert_eq!(
            cache.warm_zones(epoch, vec![view(A), view(B)], share),
            (0, false)
        );
        assert!(cache.zone(&ZoneId::parse(A).unwrap()).is_some());
        assert!(cache.zone(&ZoneId::parse(B).unwrap()).is_none());
        assert_eq!(cache.warm_zones(epoch, vec![view(B)], 1.0), (1, true));
        assert!(cache.zone(&ZoneId::parse(B).unwrap()).is_some());
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
    fn an_own_commit_landing_while_the_counter_is_read_keeps_the_cache() {
        let cache = ReadCache::default();
        cache.put_zone(cache.epoch_at(5), view(A));
        cache.put_zone(cache.epoch_at(5), view(B));
        let b = ZoneId::parse(B).unwrap();
        // The read took the counter (5), then this process's write committed (6)
        // before the read compared it: 5 is old, not another process's.
        let epoch = cache.epoch_with(|| {
            cache.committing(Some(5), true);
            cache.committed(Some(5), true, Touch::Zone(&ZoneId::parse(A).unwrap()));
            Some(5)
        });
        assert!(epoch.is_some());
        assert!(cache.zone(&b).is_some());
        // And the next read, which sees 6, keeps it too.
        cache.epoch_at(6);
        assert!(cache.zone(&b).is_some());
        // Another process's commit read in the same situation still empties it.
        cache.epoch_with(|| {
            cache.committing(Some(6), true);
            cache.committed(Some(6), true, Touch::Nothing);
            Some(9)
        });
        assert!(cache.zone(&b).is_none());
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
