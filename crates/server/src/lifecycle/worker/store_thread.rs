//! The worker's store thread and the handle the worker's tasks use to reach it.

use super::lease::LeaseClock;
use crate::clock::{Clock, SystemClock};
use crate::model::{CaChoice, Pack, PackId, ZoneId};
use crate::store::{
    Claim, OutboxEvent, PackAccess, SealedKey, Store, StoreError, WebhookEndpoint, WriteMode,
};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

/// Most store operations taken from the queue at once (the writes among them commit in
/// one transaction). Bounded so one transaction stays short: the store thread runs at
/// normal priority and a request thread may wait for the CPU behind it.
const WRITE_BATCH: usize = 128;

/// An operation handed to the worker's store thread, the only lifecycle thread that
/// touches the store. It commits the writes that queued up meanwhile in one transaction
/// (group commit): the packs in flight share transactions instead of each paying for its
/// own, and queue for the store's write lock once per batch.
///
/// Why one thread at normal priority: SQLite's in-process locks (its file and
/// shared-memory mutexes) are shared by every connection of the process, requests'
/// included. A low-priority lifecycle thread preempted while holding one made requests
/// wait until it got the CPU back, behind every other lifecycle thread: tens of
/// milliseconds. Every other lifecycle thread runs at low priority and never holds them.
#[derive(Debug)]
pub(super) enum StoreOp {
    /// Save the pack (version-checked) with its transition's webhook events and, for a
    /// certificate just issued, its sealed key (written first, in the same transaction);
    /// the reply is the saved pack.
    Update(Box<PackWrite>, oneshot::Sender<Result<Pack, StoreError>>),
    /// Give up this worker's lease on the pack (at once when its last write already did).
    Release(PackId, oneshot::Sender<()>),
    /// Read a pack.
    Read(
        ZoneId,
        PackId,
        oneshot::Sender<Result<Option<Pack>, StoreError>>,
    ),
    /// Lease up to this many due packs, as of `now` (the lifecycle's clock), none of
    /// the authorities in `skip_cas`.
    Claim {
        now: i64,
        limit: usize,
        skip_cas: Vec<CaChoice>,
        reply: oneshot::Sender<Result<Vec<(ZoneId, PackId)>, StoreError>>,
    },
    /// Read the sealed key kept for a pack's certificate.
    ReadKey(
        PackId,
        oneshot::Sender<Result<Option<crate::store::SealedKey>, StoreError>>,
    ),
    /// A fault the tests inject: the store thread panics.
    #[cfg(test)]
    Panic,
}

/// A pack's write, as the store thread takes it.
#[derive(Debug)]
pub(super) struct PackWrite {
    pack: Pack,
    events: Vec<OutboxEvent>,
    key: Option<SealedKey>,
    /// How the batch writes it: with the lease given up (the step's last write: a
    /// transaction of its own for the release after it was one batch in three per
    /// pack), its host rows kept.
    mode: WriteMode,
}

/// The worker's way to its store thread: every read, write, claim and release of the
/// lifecycle goes through it.
#[derive(Debug, Clone)]
pub(super) struct StoreThread {
    ops: mpsc::UnboundedSender<StoreOp>,
    /// The store, for what its cache knows without a read (the webhook endpoints):
    /// memory only, never SQLite, which only the store thread touches.
    store: Store,
}

impl StoreThread {
    /// The way to the store thread that takes `ops`, working on `store`.
    pub(super) fn new(ops: mpsc::UnboundedSender<StoreOp>, store: Store) -> Self {
        StoreThread { ops, store }
    }

    /// Sends `op` (built around a reply channel) and waits for the reply.
    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> StoreOp,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.ops.send(op(reply)).map_err(|_| store_thread_gone())?;
        answer.await.map_err(|_| store_thread_gone())?
    }

    /// Saves `write.pack` (version-checked) with what goes with it.
    async fn update(&self, write: PackWrite) -> Result<Pack, StoreError> {
        self.ask(|reply| StoreOp::Update(Box::new(write), reply))
            .await
    }

    /// This thread as a [`PackAccess`] whose writes carry `key` (the sealed key of the
    /// certificate the write records): the key and the certificate commit together, in
    /// one round trip and one transaction, the key first.
    pub(super) fn with_key(&self, key: SealedKey) -> Writes<'_> {
        Writes {
            thread: self,
            key: Some(key),
            release: false,
        }
    }

    /// This thread as a [`PackAccess`] whose write is the step's last: the pack's lease
    /// is given up with it when it is written (and the release that ends the pack's turn
    /// then costs nothing). Nothing may be done to the pack after such a write.
    pub(super) fn last_write(&self) -> Writes<'_> {
        Writes {
            thread: self,
            key: None,
            release: true,
        }
    }

    /// The sealed key kept for the pack's certificate, if any.
    pub(super) async fn read_key(
        &self,
        pack: PackId,
    ) -> Result<Option<crate::store::SealedKey>, StoreError> {
        self.ask(|reply| StoreOp::ReadKey(pack, reply)).await
    }

    /// Leases up to `limit` due packs as of `now` (the lifecycle's clock), none of the
    /// authorities in `skip_cas`.
    pub(super) async fn claim(
        &self,
        now: i64,
        limit: usize,
        skip_cas: Vec<CaChoice>,
    ) -> Result<Vec<(ZoneId, PackId)>, StoreError> {
        self.ask(|reply| StoreOp::Claim {
            now,
            limit,
            skip_cas,
            reply,
        })
        .await
    }

    /// Gives up the lease on a pack (a failure is logged by the store thread, which
    /// writes the release again with its next batches until one commits).
    pub(super) async fn release(&self, id: PackId) {
        let (reply, released) = oneshot::channel();
        if self.ops.send(StoreOp::Release(id, reply)).is_ok() {
            let _ = released.await;
        }
    }

    /// Has the store thread panic (a test's fault).
    #[cfg(test)]
    pub(super) fn panic(&self) {
        let _ = self.ops.send(StoreOp::Panic);
    }
}

impl PackAccess for StoreThread {
    async fn read_pack(&self, zone: &ZoneId, id: &PackId) -> Result<Option<Pack>, StoreError> {
        let (zone, id) = (zone.clone(), id.clone());
        self.ask(|reply| StoreOp::Read(zone, id, reply)).await
    }

    fn known_webhook_endpoints(&self) -> Option<Arc<[WebhookEndpoint]>> {
        self.store.known_webhook_endpoints()
    }

    async fn write_pack(
        &self,
        pack: Pack,
        events: Vec<OutboxEvent>,
        same_hosts: bool,
    ) -> Result<Pack, StoreError> {
        // A plain write: no key attached, the lease kept.
        Writes {
            thread: self,
            key: None,
            release: false,
        }
        .write_pack(pack, events, same_hosts)
        .await
    }
}

/// The store thread's writes with a certificate's sealed key attached
/// ([`StoreThread::with_key`]), or giving the lease up ([`StoreThread::last_write`]). A
/// write retried after a version conflict carries them again (the key's serial is the
/// same: kept once; a conflicting write released nothing).
#[derive(Debug)]
pub(super) struct Writes<'a> {
    thread: &'a StoreThread,
    key: Option<SealedKey>,
    release: bool,
}

impl PackAccess for Writes<'_> {
    async fn read_pack(&self, zone: &ZoneId, id: &PackId) -> Result<Option<Pack>, StoreError> {
        self.thread.read_pack(zone, id).await
    }

    fn known_webhook_endpoints(&self) -> Option<Arc<[WebhookEndpoint]>> {
        self.thread.known_webhook_endpoints()
    }

    async fn write_pack(
        &self,
        pack: Pack,
        events: Vec<OutboxEvent>,
        same_hosts: bool,
    ) -> Result<Pack, StoreError> {
        self.thread
            .update(PackWrite {
                pack,
                events,
                key: self.key.clone(),
                mode: WriteMode {
                    release: self.release,
                    hosts_unchanged: same_hosts,
                },
            })
            .await
    }
}

pub(super) fn store_thread_gone() -> StoreError {
    StoreError::Unavailable("the lifecycle's store thread has stopped".into())
}

/// The worker's store thread: takes up to [`WRITE_BATCH`] queued operations at a time,
/// answers the reads, commits the writes in one transaction, then claims (so leases given
/// up in this batch can be claimed again). A renewal of the worker's leases, when
/// `renew_asked`, runs before the next batch. Runs until every sender is gone.
pub(super) async fn store_thread(
    store: Store,
    owner: String,
    leases: Arc<LeaseClock>,
    renew_asked: Arc<Notify>,
    mut queued: mpsc::UnboundedReceiver<StoreOp>,
    signals: Arc<crate::lifecycle::Signals>,
) {
    // Leases are stored in whole seconds of the wall clock, whose second may be about to
    // end: one second more keeps every lease at least `lease` long, as `LeaseClock`
    // counts it.
    let lease_secs = i64::try_from(leases.lease.as_secs())
        .unwrap_or(i64::MAX / 2)
        .saturating_add(1);
    let mut ops = Vec::with_capacity(WRITE_BATCH);
    // Releases whose batch failed (the database down or restarting): written again with
    // every batch until one commits. Dropped, the lease would stay for good: the renewals
    // extend every live lease of this owner, so the pack would not be claimed again, by
    // this node or another, until the node restarts (seen after a PostgreSQL restart:
    // the packs whose steps failed while it was down stayed leased and never issued).
    let mut unreleased: Vec<PackId> = Vec::new();
    // Packs whose last write gave their lease up, until the release that ends their turn
    // comes (it then needs no write).
    let mut released_with_write: HashSet<PackId> = HashSet::new();
    loop {
        // A renewal goes before the queued operations, however many there are.
        let renew = tokio::select! {
            biased;
            _ = renew_asked.notified() => true,
            taken = queued.recv_many(&mut ops, WRITE_BATCH) => {
                if taken == 0 {
                    break;
                }
                false
            }
        };
        if renew {
            let at = Instant::now();
            match store
                .renew_leases(&owner, SystemClock.now(), lease_secs)
                .await
            {
                Ok(_) => {
                    leases.renewed(at);
                    signals.metrics().lease_renewal(true);
                }
                Err(e) => {
                    signals.metrics().lease_renewal(false);
                    tracing::warn!(
                        error = %e,
                        "lifecycle: renewing leases failed; packs in hand are dropped when their leases may have run out"
                    )
                }
            }
            continue;
        }
        let mut packs = Vec::new();
        let mut events = Vec::new();
        let mut saved_replies = Vec::new();
        let mut modes = Vec::new();
        let mut releases = Vec::new();
        let mut released_replies = Vec::new();
        let mut claims = Vec::new();
        let mut keys = Vec::new();
        for op in ops.drain(..) {
            match op {
                StoreOp::Read(zone, id, reply) => {
                    let _ = reply.send(store.pack(&zone, &id).await);
                }
                StoreOp::Claim {
                    now,
                    limit,
                    skip_cas,
                    reply,
                } => claims.push((now, limit, skip_cas, reply)),
                StoreOp::ReadKey(pack, reply) => {
                    let _ = reply.send(store.certificate_key(&pack).await);
                }
                StoreOp::Update(write, reply) => {
                    let PackWrite {
                        pack,
                        events: pack_events,
                        key,
                        mode,
                    } = *write;
                    keys.extend(key);
                    packs.push(pack);
                    events.push(pack_events);
                    modes.push(mode);
                    saved_replies.push(reply);
                }
                StoreOp::Release(id, reply) => {
                    if released_with_write.remove(&id) {
                        let _ = reply.send(());
                    } else {
                        releases.push(id);
                        released_replies.push(reply);
                    }
                }
                #[cfg(test)]
                StoreOp::Panic => panic!("injected: the store thread panics"),
            }
        }
        releases.append(&mut unreleased);
        let written = if packs.is_empty() && releases.is_empty() && keys.is_empty() {
            Ok(Vec::new())
        } else {
            store
                .write_lifecycle_batch(&owner, &mut packs, &events, &modes, &releases, &keys)
                .await
        };
        match written {
            Ok(outcomes) => {
                for (((pack, reply), outcome), mode) in packs
                    .into_iter()
                    .zip(saved_replies)
                    .zip(outcomes)
                    .zip(modes)
                {
                    if mode.release && outcome.is_ok() {
                        released_with_write.insert(pack.id.clone());
                    }
                    let _ = reply.send(outcome.map(|()| pack));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, packs = packs.len(), leases = releases.len(), "lifecycle: a batch of writes failed; its releases are retried with the next batch");
                for reply in saved_replies {
                    let _ = reply.send(Err(e.clone()));
                }
                unreleased = releases;
            }
        }
        for reply in released_replies {
            let _ = reply.send(());
        }
        for (now, limit, skip_cas, reply) in claims {
            let claimed = store
                .claim_due(&Claim {
                    owner: &owner,
                    now,
                    wall_now: SystemClock.now(),
                    lease_secs,
                    limit: limit as u64,
                    skip_cas: &skip_cas,
                })
                .await;
            // A pack claimed again (its lease ran out meanwhile) is this claim's: its
            // old release must not end the new lease.
            if let Ok(claimed) = &claimed {
                unreleased.retain(|id| !claimed.iter().any(|(_, c)| c == id));
            }
            let _ = reply.send(claimed);
        }
    }
}
