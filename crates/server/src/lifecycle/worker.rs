//! The worker: claims packs with due work from the store, runs their checks, and
//! moves them through `pending_validation -> pending_issuance -> pending_deployment ->
//! active`, then renews or expires them.
//!
//! Every step is written to the store before the next begins, so a crash leaves the
//! pack in a state the next claim resumes from; claims are leases, so a crashed
//! server's packs are taken over when the lease runs out.
//!
//! Packs may wait in hand longer than a lease (for an issuance slot behind slow deploy
//! hooks, say), so the store thread renews this worker's leases every third of a lease,
//! and the worker fences itself: it starts no check, issuance or deployment for a pack
//! whose lease may have run out ([`LeaseClock`]). When renewals fail (the store is
//! unavailable), the packs in hand are dropped as their leases run out, and whoever
//! claims them next resumes them from the store.
//!
//! Certificates come only through the [`Issuer`] seam: [`Issuer::finish`], after
//! zonecert's own checks (DCV, CAA) passed. The built-in CA trusts those checks, so its
//! packs' records are minted locally when the pack is ordered ([`DcvRecord::mint`]), the
//! pack starts in `pending_validation`, and the order reference passed to `finish` is
//! [`Issuer::local_order`] of the pack's hosts.
//!
//! How an ACME issuer (`Issuer::Acme`, for the names configured with `--acme`) plugs in
//! (its steps are in `worker/acme.rs`):
//! - The order handler creates the pack `initializing` (with no records yet) when the
//!   issuer does not mint locally.
//! - The worker claims `initializing` packs and calls [`Issuer::begin`] with the pack's
//!   hosts, method and DCV target suffix; its answer is the model's
//!   [`Input::OrderBegun`] (the records, the tokens' expiry: the pack moves to
//!   `pending_validation`) or [`Input::IssuanceFailed`] (a pack error, retried like a
//!   failed issuance, not before the CA's `Retry-After`), until initialisation times out
//!   (`initializing_timed_out`, an [`Input::Tick`] rule).
//! - Validation runs unchanged: the records are the model's, so the validator checks
//!   the CA's tokens exactly like local ones, and CAA is checked before issuing.
//! - Issuance passes the stored reference, instead of `local_order`, to
//!   [`Issuer::finish`], where the CA validates for itself and signs; a pack restarted or
//!   switched to another method (back to `initializing`), and a renewal (an `active`
//!   pack whose window opened, with no open order), go through `begin` again, since the
//!   CA's authorizations are per order. The reference (`Pack::order_ref`) is cleared
//!   once the certificate is deployed, and the issuer told to forget the order's kept
//!   key.
//! - A CA's refusal that invalidates the order (a refused validation, a lost order or
//!   account) is [`Input::OrderLost`]: back to `initializing`, the host showing the CA's
//!   reason; a transient one (unreachable, 5xx, rate limit) is [`Input::IssuanceFailed`]
//!   with the same order, not before the CA's `Retry-After`.

mod acme;
mod check;
mod hand;
mod issue;
mod lease;
mod pace;
mod revoke;
mod store_thread;

use super::Signals;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::dcv::{DcvConfig, Validator};
use crate::issuance::acme::AcmeIssuer;
use crate::issuance::{BuiltinCa, HookCommand, Issuer};
use crate::model::{CaChoice, Event, Input, Pack, PackId, PackState, Rules, ZoneId, transition};
use crate::store::{Applied, PackAccess, Store, StoreError, apply_transition};
use hand::CaShares;
use lease::{Hold, LeaseClock, ask_for_renewals, node_identity};
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store_thread::{StoreThread, store_thread};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most packs one worker holds at once. Validation runs ahead of issuance (checks are
/// cheap, issuance writes files): a validated pack waits here, under its lease, for an
/// issuance slot, so this bounds how far ahead it runs (and the memory it takes). A short
/// lease bounds it further, by the worker's pace (`pace.rs`).
const MAX_IN_FLIGHT: usize = 4096;

/// Most packs leased by one claim.
const CLAIM_BATCH: usize = 512;

/// While more work is due than fits, the worker claims again once this much room has
/// freed up, so claims stay large (each one is a write transaction).
const RECLAIM_ROOM: usize = 128;

/// Whether enough of `bound` is free, with `held` packs in hand, to claim again while
/// more is due: [`RECLAIM_ROOM`], or a quarter of a smaller bound.
fn room_to_reclaim(bound: usize, held: usize) -> bool {
    bound.saturating_sub(held) >= RECLAIM_ROOM.min(bound / 4).max(1)
}

/// Issuances and deployments at once. Deployment mostly waits for fsyncs, so many run
/// side by side. An ACME order waits for its CA without a slot (its requests are bounded
/// per CA instead, `issuance::acme`): it takes one to record and deploy the certificate.
const ISSUANCE_CONCURRENCY: usize = 32;

/// Issuances and deployments at once while checks are running. Each runs on a thread of
/// its own (signing, file system work), and the checks of every pack share one: with many
/// issuances runnable, the operating system would give the checks a small share of the
/// CPU. Checks are cheap and tell users what is missing, so they go first; issuance keeps
/// this many slots so it never stops.
const ISSUANCE_WHILE_CHECKING: usize = 4;

/// How many times per lease the store thread renews the worker's leases: a renewal can
/// fail or be late once and the leases still hold.
const RENEWALS_PER_LEASE: u32 = 3;

/// Why the lifecycle could not start.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The DCV validator could not be set up (resolvers, TLS).
    #[error(transparent)]
    Dcv(#[from] crate::dcv::DcvError),
    /// The built-in CA could not be loaded or created.
    #[error(transparent)]
    Issuance(#[from] crate::issuance::IssuanceError),
    /// The ACME settings cannot be used (a malformed option, an unreadable root).
    #[error("{0}")]
    Acme(String),
    /// The workers' thread or runtime could not be started.
    #[error("starting the lifecycle thread: {0}")]
    Runtime(std::io::Error),
    /// A lifecycle thread failed (a panic) while running: the workers stopped.
    #[error("the lifecycle failed: {0}")]
    Failed(String),
}

/// How a claimed pack's turn went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Its step ran in the hand.
    Stepped,
    /// Its step waited for its CA, in the CA's share (`hand.rs`).
    WaitedOnCa,
    /// Its CA's share was full: released without a step.
    LeftForLater,
}

/// One server's lifecycle worker.
#[derive(Debug)]
pub struct Worker {
    config: Arc<Config>,
    clock: SharedClock,
    signals: Arc<Signals>,
    validator: Validator,
    issuer: Issuer,
    /// The ACME issuers of the names configured with `--acme` (the others use `issuer`).
    acme: HashMap<CaChoice, Issuer>,
    hook: Option<HookCommand>,
    checks: Arc<Semaphore>,
    issuing: Semaphore,
    issuing_while_checking: Semaphore,
    /// Packs whose hosts (or CAA) are being checked right now.
    checking: AtomicUsize,
    /// How long a pack in this worker's hand stays leased to it.
    leases: Arc<LeaseClock>,
    /// The packs held while they wait for a remote CA, which take no place in the hand
    /// (`worker/hand.rs`).
    waiting_on_cas: Arc<CaShares>,
    /// Wakes the store thread to renew the leases (see `ask_for_renewals`).
    renew_asked: Arc<Notify>,
    /// The settings the model's transition rules depend on.
    rules: Rules,
    /// The way to the store thread.
    store: StoreThread,
    /// The store itself, for the revocation queue's few writes (`worker/revoke.rs`).
    db: Store,
    /// This worker's lease owner name (its node).
    owner: String,
    /// Set (with the reason) when the store thread ended by a panic: without it the
    /// worker could only fail every step, forever, and look alive.
    store_failed: Arc<Failure>,
    /// The lock on `<data_dir>/node-id` while this worker leases as that node.
    _identity: Option<std::fs::File>,
}

/// A failure one lifecycle thread reports to the others: a reason, set once, and a token
/// that fires when it is set.
#[derive(Debug, Default)]
struct Failure {
    reason: Mutex<Option<String>>,
    fired: CancellationToken,
}

impl Failure {
    fn set(&self, reason: String) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(reason);
        self.fired.cancel();
    }

    fn reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }
}

/// The message of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
impl Worker {
    /// Builds the worker: its validator and its issuer, the built-in CA (created in
    /// `<data_dir>/ca` on first start). Must be called inside a Tokio runtime.
    pub fn new(
        store: Store,
        config: Arc<Config>,
        clock: SharedClock,
        signals: Arc<Signals>,
    ) -> Result<Worker, LifecycleError> {
        let validator = Validator::new(DcvConfig {
            resolvers: config.dcv_resolvers.clone(),
            http_port: config.dcv_http_port,
            allow_private_addresses: config.dcv_allow_private_addresses,
            timeout: config.dcv_timeout,
            ..DcvConfig::default()
        })?;
        let issuer = Issuer::Builtin(Arc::new(BuiltinCa::load_or_create(&config.data_dir)?));
        let mut acme = HashMap::new();
        for settings in config.acme.cas().map_err(LifecycleError::Acme)? {
            let ca = settings.ca;
            let mut issuer =
                AcmeIssuer::with_timeout(settings, &config.data_dir, config.acme_timeout)
                    .map_err(LifecycleError::Acme)?;
            if let Some(kek) = signals.kek_shared() {
                issuer.share_accounts(store.clone(), kek);
            }
            acme.insert(ca, Issuer::Acme(Arc::new(issuer)));
        }
        let hook = config.deploy_hook_command();
        let (owner, identity) = node_identity(&config.data_dir);
        let (db, revocation_owner) = (store.clone(), owner.clone());
        signals.set_lease_owner(&owner);
        let take_back = identity.is_some();
        let (store_ops, queued) = mpsc::unbounded_channel();
        // The store thread (see `StoreOp`) is a thread of its own, at normal priority; a
        // commit can also wait for SQLite's checkpoint fsyncs, and on the runtime's thread
        // every check would wait with it. It ends when the worker (the only sender) is
        // dropped.
        let runtime = tokio::runtime::Handle::current();

        let lease = Duration::from_secs(config.lease.as_secs().max(1));
        let leases = Arc::new(LeaseClock::new(lease, Instant::now()));
        let renew_asked = Arc::new(Notify::new());
        let (renewing, asked) = (Arc::clone(&leases), Arc::clone(&renew_asked));
        let store_failed = Arc::new(Failure::default());
        let failed = Arc::clone(&store_failed);
        let thread_signals = Arc::clone(&signals);
        std::thread::Builder::new()
            .name("zonecert-lc-store".into())
            .spawn(move || {
                // Normal priority, not the lifecycle's nice 10: request threads wait for
                // it through SQLite's in-process locks and the store's writer connection
                // (see `crate::sched`). Started before the thread that starts it lowers
                // itself (`App::start_lifecycle`): raising a nice value takes a privilege.
                if let Err(e) = crate::sched::store_thread() {
                    tracing::warn!(reason = %e, "the lifecycle's store thread keeps its inherited priority");
                }
                // A panic here would otherwise end the thread alone: every later step
                // of the worker would fail and the server would look healthy while no
                // certificate is ever issued or renewed. The worker stops on it instead
                // (and with it the server, see `App::serve`).
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(async move {
                    // This node's leases from before a crash or restart: nobody else can
                    // be working on them (the node identity is locked), so they are free
                    // now, not after the lease.
                    if take_back {
                        match store.release_leases_of(&owner).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(packs = n, "lifecycle: took back this node's leases from before its restart"),
                            Err(e) => tracing::warn!(error = %e, "lifecycle: taking back this node's earlier leases failed; they run out by themselves"),
                        }
                    }
                    store_thread(store, owner, renewing, asked, queued, thread_signals).await;
                    })
                }));
                if let Err(payload) = ran {
                    let reason = format!(
                        "the lifecycle's store thread panicked: {}",
                        panic_message(payload.as_ref())
                    );
                    tracing::error!("{reason}");
                    failed.set(reason);
                }
            })
            .map_err(LifecycleError::Runtime)?;
        Ok(Worker {
            checks: Arc::new(Semaphore::new(config.check_concurrency.max(1))),
            issuing: Semaphore::new(ISSUANCE_CONCURRENCY),
            issuing_while_checking: Semaphore::new(ISSUANCE_WHILE_CHECKING),
            checking: AtomicUsize::new(0),
            waiting_on_cas: CaShares::new(lease),
            leases,
            renew_asked,
            rules: config.transition_rules(),
            config,
            clock,
            signals,
            validator,
            issuer,
            acme,
            hook,
            store: StoreThread::new(store_ops, db.clone()),
            db,
            owner: revocation_owner,
            store_failed,
            _identity: identity,
        })
    }

    /// Works until `cancel` fires, then finishes the packs in hand.
    ///
    /// Claims continuously rather than in rounds: whenever enough of its
    /// [`MAX_IN_FLIGHT`] room has freed up and the last claim left due work behind, it
    /// claims again, so no pack waits for the slowest of a batch. Otherwise it claims
    /// when woken (an order, `retry=true`, PATCH) or at each poll interval.
    ///
    /// Returns an error when its store thread failed: the worker cannot go on (every
    /// step would fail), and whoever runs it must not carry on as if it did.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), LifecycleError> {
        self.signals.set_workers_running(true);
        // Renewals go on until the packs in hand are finished, after `cancel`. A task of
        // the runtime rather than a timer of the store thread: it ends with the runtime.
        let renewing = CancellationToken::new();
        let renewals = tokio::spawn(ask_for_renewals(
            Arc::clone(&self.renew_asked),
            self.leases.lease / RENEWALS_PER_LEASE,
            renewing.clone(),
        ));
        // Deleted packs' certificates to revoke (`--acme-revoke-on-delete`), from the
        // store's queue: a task of its own, so a slow CA holds nothing else up.
        let revoking = CancellationToken::new();
        let revocations = tokio::spawn(Arc::clone(&self).work_off_revocations(revoking.clone()));
        let mut in_flight = JoinSet::new();
        let mut claim_now = true;
        let mut more_due = false;
        // What this node holds at once (see `pace`): at least what it runs at once.
        let mut pace = pace::Pace::new(
            self.leases.lease,
            self.config.check_concurrency.max(1) + ISSUANCE_CONCURRENCY,
            MAX_IN_FLIGHT,
            Instant::now(),
        );
        let mut next_poll = Instant::now() + self.config.poll_interval;
        while !cancel.is_cancelled() && !self.store_failed.fired.is_cancelled() {
            #[cfg(test)]
            match self.signals.take_fault() {
                Some(super::Fault::WorkerPanic) => panic!("injected: the worker panics"),
                Some(super::Fault::StorePanic) => {
                    self.store.panic();
                }
                None => {}
            }
            if claim_now {
                if self.in_hand(&in_flight) == 0 {
                    pace.restart(Instant::now());
                }
                // Fill the room: validation then runs ahead of issuance.
                let bound = pace.bound();
                more_due = self.claim_into(&mut in_flight, bound).await;
                while more_due && room_to_reclaim(bound, self.in_hand(&in_flight)) {
                    more_due = self.claim_into(&mut in_flight, bound).await;
                }
                claim_now = false;
            }
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = self.store_failed.fired.cancelled() => {}
                Some(joined) = in_flight.join_next() => {
                    match joined {
                        // The hand's pace is this node's own work's: a CA's steps count
                        // in the CA's share (`hand.rs`), a pack left for later in none.
                        Ok(Turn::Stepped) => pace.finished(Instant::now()),
                        Ok(Turn::WaitedOnCa | Turn::LeftForLater) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "lifecycle task panicked");
                            pace.finished(Instant::now());
                        }
                    }
                    claim_now = (more_due && room_to_reclaim(pace.bound(), self.in_hand(&in_flight)))
                        || self.waiting_on_cas.reopened();
                }
                _ = self.signals.woken() => claim_now = true,
                _ = tokio::time::sleep_until(next_poll) => {
                    claim_now = true;
                    next_poll = Instant::now() + self.config.poll_interval;
                }
            }
        }
        if self.store_failed.fired.is_cancelled() {
            // The packs in hand can write nothing; their leases run out and another
            // start of the worker (or another node) claims them again.
            in_flight.abort_all();
        } else {
            // Stopping: the steps in hand may finish within the shutdown's grace; a
            // longer one (a deploy hook that hangs) is dropped then, its hook killed,
            // as a crash would leave it: its lease runs out and the pack is claimed
            // again, so shutdown ends in bounded time whatever a hook does.
            let grace = tokio::time::sleep(self.config.shutdown_timeout);
            tokio::pin!(grace);
            loop {
                tokio::select! {
                    joined = in_flight.join_next() => match joined {
                        Some(Err(e)) if e.is_panic() => {
                            tracing::error!(error = %e, "lifecycle task panicked");
                        }
                        Some(_) => {}
                        None => break,
                    },
                    () = &mut grace => {
                        tracing::warn!(
                            steps = in_flight.len(),
                            "stopping: steps still running after the shutdown grace are dropped"
                        );
                        in_flight.abort_all();
                        break;
                    }
                }
            }
        }
        while let Some(joined) = in_flight.join_next().await {
            if let Err(e) = joined
                && e.is_panic()
            {
                tracing::error!(error = %e, "lifecycle task panicked");
            }
        }
        revoking.cancel();
        let _ = revocations.await;
        renewing.cancel();
        let _ = renewals.await;
        self.signals.set_workers_running(false);
        if self.store_failed.fired.is_cancelled() {
            return Err(LifecycleError::Failed(self.store_failed.reason()));
        }
        Ok(())
    }

    /// The packs in hand that take a place in it: those in flight but the ones waiting
    /// for their CA (`hand.rs`).
    fn in_hand(&self, in_flight: &JoinSet<Turn>) -> usize {
        in_flight
            .len()
            .saturating_sub(self.waiting_on_cas.waiting())
    }

    /// Claims as many due packs as there is room for under `bound` (at most
    /// [`CLAIM_BATCH`]), none of a CA whose share is full, and starts a task for each;
    /// returns whether more may be due (the claim was full).
    async fn claim_into(self: &Arc<Self>, in_flight: &mut JoinSet<Turn>, bound: usize) -> bool {
        let room = bound
            .min(MAX_IN_FLIGHT)
            .saturating_sub(self.in_hand(in_flight));
        if room == 0 {
            return true;
        }
        let limit = room.min(CLAIM_BATCH);
        // Before the claim is sent: the leases it gets run from a later instant.
        let hold = Hold::Leased(Instant::now());
        let skip = self.waiting_on_cas.full();
        let claimed = match self.store.claim(self.clock.now(), limit, skip).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "lifecycle: claiming due work failed");
                return false;
            }
        };
        let more = claimed.len() == limit;
        for (zone, id) in claimed {
            let me = Arc::clone(self);
            in_flight.spawn(async move {
                // Boxed: the step's future (every state's step, issuance and deployment
                // included) is tens of kilobytes, and unboxed it is the task's own: copied
                // when the task is spawned and again as it completes, a cost callgrind
                // put at most of the claim loop's instructions.
                let (turn, again) = match Box::pin(me.turn(&zone, &id, hold)).await {
                    Ok(turn) => turn,
                    Err(e) => {
                        tracing::warn!(pack = %id.as_str(), error = %e, "lifecycle step failed");
                        (Turn::Stepped, false)
                    }
                };
                me.store.release(id.clone()).await;
                if again {
                    // Claimable again only now that its lease is given up.
                    me.signals.wake();
                }
                // Once per pack, after its last write: a waiting `retry=true` then sees
                // where the pack ended up, not an intermediate state. A pack left for
                // later did not move.
                if turn != Turn::LeftForLater {
                    me.signals.progressed(&id);
                }
                turn
            });
        }
        more
    }

    /// One turn of a claimed pack: its step ([`Self::step`]), in its CA's share when it
    /// waits for a remote CA, or nothing when that share is full (it is left for a later
    /// claim, or another node). Returns how the turn went and whether the pack is due
    /// again at once.
    async fn turn(
        &self,
        zone: &ZoneId,
        id: &PackId,
        hold: Hold,
    ) -> Result<(Turn, bool), StoreError> {
        let Some(pack) = self.store.read_pack(zone, id).await? else {
            return Ok((Turn::Stepped, false));
        };
        if !self.waits_on_ca(&pack) {
            return Ok((Turn::Stepped, self.step(pack, hold).await?));
        }
        // Held until the step is over, whatever way it ends.
        let Some(_place) = self.waiting_on_cas.wait_on(pack.ca) else {
            return Ok((Turn::LeftForLater, false));
        };
        Ok((Turn::WaitedOnCa, self.step(pack, hold).await?))
    }

    /// Whether the pack's step waits for its CA: placing or finishing an ACME order, or
    /// asking about an active certificate's renewal. Not a validation: zonecert checks
    /// the records itself (and a claim skipping a CA still takes those, `skip_cas`).
    fn waits_on_ca(&self, pack: &Pack) -> bool {
        self.issuer_for(pack.ca).orders_remotely()
            && matches!(
                pack.state,
                PackState::Initializing
                    | PackState::PendingIssuance
                    | PackState::PendingDeployment
                    | PackState::Active
            )
    }

    /// The step of a claimed pack: the clock's rules first (timeouts, expiry, the
    /// renewal window), else the step of its state. Returns whether the pack is due
    /// again at once.
    async fn step(&self, pack: Pack, hold: Hold) -> Result<bool, StoreError> {
        if !self.still_held(hold, &pack.id) {
            return Ok(false);
        }
        let now = self.clock.now();
        // Before the clock's rules: they would put an active pack back to its renewal
        // time without asking its CA whether that changed.
        if self.ask_renewal_info(&pack, now).await? {
            return Ok(false);
        }
        if let Ok(Some(_)) = transition(&pack, &Input::Tick, &self.rules, now) {
            self.apply(pack, now, |_| Some(Input::Tick)).await?;
            return Ok(false);
        }
        if self.needs_order(&pack, now) {
            self.place_order(pack, hold).await?;
            return Ok(false);
        }
        match pack.state {
            PackState::PendingValidation => self.validate(pack, hold).await,
            PackState::PendingIssuance | PackState::PendingDeployment => {
                self.issue_and_deploy_held(pack, hold).await?;
                Ok(false)
            }
            PackState::Active => {
                self.renew(pack, hold).await?;
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// The issuer of `ca`: its ACME directory when one is configured, else the built-in CA.
    pub(super) fn issuer_for(&self, ca: CaChoice) -> &Issuer {
        self.acme.get(&ca).unwrap_or(&self.issuer)
    }

    /// Whether work on the pack may still start; says so when it may not.
    fn still_held(&self, hold: Hold, id: &PackId) -> bool {
        let held = self.leases.holds(hold);
        if !held {
            tracing::warn!(
                pack = %id.as_str(),
                "lifecycle: the lease may have run out (not renewed in time); leaving the pack to the next claim"
            );
        }
        held
    }

    /// Applies the input `input` gives (for the pack as stored at each try) and saves
    /// the result through the store thread ([`apply_transition`]); returns the saved
    /// pack and its events, or `None` when nothing was written (the input no longer
    /// applies, the pack is gone, or it kept changing: it is still due then, and a later
    /// claim looks again).
    async fn apply(
        &self,
        pack: Pack,
        now: i64,
        input: impl FnMut(&Pack) -> Option<Input> + Send,
    ) -> Result<Option<(Pack, Vec<Event>)>, StoreError> {
        self.apply_through(&self.store, pack, now, input).await
    }

    /// [`Self::apply`] with the reads and writes through `access` (the store thread with
    /// a certificate's key attached to the write, say).
    async fn apply_through<A: PackAccess + Sync>(
        &self,
        access: &A,
        pack: Pack,
        now: i64,
        input: impl FnMut(&Pack) -> Option<Input> + Send,
    ) -> Result<Option<(Pack, Vec<Event>)>, StoreError> {
        let from = pack.state;
        match apply_transition(access, pack, &self.rules, now, input).await? {
            Applied::Saved { pack, events } => {
                let metrics = self.signals.metrics();
                metrics.transition(from, pack.state);
                for event in &events {
                    tracing::debug!(pack = %pack.id.as_str(), ?event, "lifecycle");
                    match event {
                        Event::Issued { .. } => metrics.issued(pack.ca),
                        Event::IssuanceFailed { .. } => metrics.issuance_failed(pack.ca),
                        _ => {}
                    }
                }
                Ok(Some((pack, events)))
            }
            Applied::Unchanged(_) | Applied::Refused(_) | Applied::Gone | Applied::Contended => {
                Ok(None)
            }
        }
    }
}
