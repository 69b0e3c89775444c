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
//! zonecert's own checks (DCV, CAA) passed. Today's only issuer, the built-in CA, trusts
//! those checks, so its packs' records are minted locally when the pack is ordered
//! ([`DcvRecord::mint`]), the pack starts in `pending_validation`, and the order
//! reference passed to `finish` is [`Issuer::local_order`] of the pack's hosts.
//!
//! How an ACME issuer plugs in, without reshaping this worker:
//! - The order handler creates the pack `initializing` (with no records yet) when the
//!   issuer does not mint locally.
//! - The worker claims `initializing` packs and calls [`Issuer::begin`] with the pack's
//!   hosts, method and DCV target suffix; it stores the returned records in the hosts,
//!   the order reference with the pack, lowers the validation deadline to
//!   `tokens_expire` when that is earlier, and moves the pack to `pending_validation`.
//!   A failure is a pack error, retried like a failed issuance, until initialisation
//!   times out (`initializing_timed_out`).
//! - Validation runs unchanged: the records are the model's, so the validator checks
//!   the CA's tokens exactly like local ones, and CAA is checked before issuing.
//! - Issuance passes the stored reference, instead of `local_order`, to
//!   [`Issuer::finish`], where the CA validates for itself and signs; a pack restarted or
//!   switched to another method, and a renewal, go through `begin` again, since the CA's
//!   authorizations are per order.
//!
//! None of this exists in code yet: it needs a stored order reference (a pack column)
//! and the ACME variant.

use super::Signals;
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::config::Config;
use crate::dcv::{CheckOutcome, DcvConfig, Validator};
use crate::issuance::{BuiltinCa, HookCommand, IssueRequest, IssuedLeaf, Issuer, deploy};
use crate::model::{DcvRecord, HostCheck, IssuedCertificate, Pack, PackId, PackState, ZoneId};
use crate::store::{Claim, Store, StoreError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most packs one worker holds at once. Validation runs ahead of issuance (checks are
/// cheap, issuance writes files): a validated pack waits here, under its lease, for an
/// issuance slot, so this bounds how far ahead it runs (and the memory it takes).
const MAX_IN_FLIGHT: usize = 4096;

/// Most packs leased by one claim.
const CLAIM_BATCH: usize = 512;

/// While more work is due than fits, the worker claims again once this much room has
/// freed up, so claims stay large (each one is a write transaction).
const RECLAIM_ROOM: usize = 128;

/// Issuances and deployments at once. Deployment mostly waits for fsyncs, so many run
/// side by side.
const ISSUANCE_CONCURRENCY: usize = 32;

/// Issuances and deployments at once while checks are running. Each runs on a thread of
/// its own (signing, file system work), and the checks of every pack share one: with many
/// issuances runnable, the operating system would give the checks a small share of the
/// CPU. Checks are cheap and tell users what is missing, so they go first; issuance keeps
/// this many slots so it never stops.
const ISSUANCE_WHILE_CHECKING: usize = 4;

/// Most store operations taken from the queue at once (the writes among them commit in
/// one transaction). Bounded so one transaction stays short: the store thread runs at
/// normal priority and a request thread may wait for the CPU behind it.
const WRITE_BATCH: usize = 128;

/// How long a failed issuance or deployment waits before it is tried again.
const ISSUANCE_RETRY_SECS: i64 = 300;

/// How many times per lease the store thread renews the worker's leases: a renewal can
/// fail or be late once and the leases still hold.
const RENEWALS_PER_LEASE: u32 = 3;

/// The reason shown for e-mail validation, which no machine can check: an operator
/// stands in for the recipient clicking the link.
pub const EMAIL_REASON: &str =
    "e-mail validation: waiting for approval (an operator runs `zonecert pack approve ID`)";

/// Why the lifecycle could not start.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The DCV validator could not be set up (resolvers, TLS).
    #[error(transparent)]
    Dcv(#[from] crate::dcv::DcvError),
    /// The built-in CA could not be loaded or created.
    #[error(transparent)]
    Issuance(#[from] crate::issuance::IssuanceError),
    /// The workers' thread or runtime could not be started.
    #[error("starting the lifecycle thread: {0}")]
    Runtime(std::io::Error),
    /// A lifecycle thread failed (a panic) while running: the workers stopped.
    #[error("the lifecycle failed: {0}")]
    Failed(String),
}

/// One server's lifecycle worker.
#[derive(Debug)]
pub struct Worker {
    config: Arc<Config>,
    clock: SharedClock,
    signals: Arc<Signals>,
    validator: Validator,
    issuer: Issuer,
    hook: Option<HookCommand>,
    checks: Arc<Semaphore>,
    issuing: Semaphore,
    issuing_while_checking: Semaphore,
    /// Packs whose hosts (or CAA) are being checked right now.
    checking: AtomicUsize,
    /// How long a pack in this worker's hand stays leased to it.
    leases: Arc<LeaseClock>,
    /// Wakes the store thread to renew the leases (see `ask_for_renewals`).
    renew_asked: Arc<Notify>,
    /// How long a validated pack may spend in issuance and deployment.
    issuance_timeout_secs: i64,
    store_ops: mpsc::UnboundedSender<StoreOp>,
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

/// How a task holds its pack.
#[derive(Debug, Clone, Copy)]
enum Hold {
    /// Claimed through a lease asked for at this instant.
    Leased(Instant),
    /// Not through a lease: the dev seed issues its pack before any worker runs.
    Unleased,
}

/// Until when this worker's leases are known to hold, in the worker's monotonic time.
///
/// A claim leases a pack for at least `lease` from when the store thread runs it (the
/// stored lease is a second longer, times being whole wall-clock seconds); the worker
/// notes `claimed_at` before asking, so `claimed_at + lease` is a safe bound. Each
/// renewal asked
/// at `at` extends every lease of this worker still running then to `at + lease`. While
/// renewals follow each other within a lease (a chain), every pack claimed since the
/// chain began, or still leased when it began, is covered by the last one; when a renewal
/// comes too late the chain breaks and older packs are only as good as their own claim.
#[derive(Debug)]
struct LeaseClock {
    lease: Duration,
    chain: Mutex<RenewalChain>,
}

#[derive(Debug, Clone, Copy)]
struct RenewalChain {
    /// When the first renewal of the unbroken chain was asked for.
    since: Instant,
    /// What the last renewal guarantees.
    until: Instant,
}

impl LeaseClock {
    /// A clock with no renewal yet, from `start` on (before any claim).
    fn new(lease: Duration, start: Instant) -> Self {
        LeaseClock {
            lease,
            chain: Mutex::new(RenewalChain {
                since: start,
                until: start,
            }),
        }
    }

    fn chain(&self) -> std::sync::MutexGuard<'_, RenewalChain> {
        // The chain is two instants, whole after every write: a panic elsewhere
        // cannot leave it half-written.
        self.chain.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a successful renewal asked for at `at`.
    fn renewed(&self, at: Instant) {
        let mut chain = self.chain();
        if at >= chain.until {
            chain.since = at;
        }
        chain.until = chain.until.max(at + self.lease);
    }

    /// Whether work on a pack held by `hold` may still start: its lease surely holds.
    fn holds(&self, hold: Hold) -> bool {
        let Hold::Leased(claimed_at) = hold else {
            return true;
        };
        let own = claimed_at + self.lease;
        let chain = *self.chain();
        let until = if own > chain.since {
            own.max(chain.until)
        } else {
            own
        };
        Instant::now() < until
    }
}

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
enum StoreOp {
    /// Save the pack (version-checked); the reply is the saved pack.
    Update(Box<Pack>, oneshot::Sender<Result<Pack, StoreError>>),
    /// Give up this worker's lease on the pack.
    Release(PackId, oneshot::Sender<()>),
    /// Read a pack.
    Read(
        ZoneId,
        PackId,
        oneshot::Sender<Result<Option<Pack>, StoreError>>,
    ),
    /// Lease up to this many due packs, as of `now` (the lifecycle's clock).
    Claim {
        now: i64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<(ZoneId, PackId)>, StoreError>>,
    },
    /// A fault the tests inject: the store thread panics.
    #[cfg(test)]
    Panic,
}

/// One host's check result, tied to the record that was checked so it is never
/// applied to a record minted since (a method switch or a restart).
struct HostOutcome {
    index: usize,
    record: DcvRecord,
    outcome: CheckOutcome,
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
        let hook = config.deploy_hook.as_ref().and_then(|argv| {
            let (program, args) = argv.split_first()?;
            Some(HookCommand {
                program: program.into(),
                args: args.to_vec(),
                timeout: Duration::from_secs(60),
            })
        });
        let (owner, identity) = node_identity(&config.data_dir);
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
                    store_thread(store, owner, renewing, asked, queued).await;
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
            leases,
            renew_asked,
            issuance_timeout_secs: i64::try_from(config.issuance_timeout.as_secs())
                .unwrap_or(i64::MAX)
                .max(1),
            config,
            clock,
            signals,
            validator,
            issuer,
            hook,
            store_ops,
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
        let mut in_flight = JoinSet::new();
        let mut claim_now = true;
        let mut more_due = false;
        let mut next_poll = Instant::now() + self.config.poll_interval;
        while !cancel.is_cancelled() && !self.store_failed.fired.is_cancelled() {
            #[cfg(test)]
            match self.signals.take_fault() {
                Some(super::Fault::WorkerPanic) => panic!("injected: the worker panics"),
                Some(super::Fault::StorePanic) => {
                    let _ = self.store_ops.send(StoreOp::Panic);
                }
                None => {}
            }
            if claim_now {
                // Fill the room: validation then runs ahead of issuance.
                more_due = self.claim_into(&mut in_flight).await;
                while more_due && MAX_IN_FLIGHT.saturating_sub(in_flight.len()) >= RECLAIM_ROOM {
                    more_due = self.claim_into(&mut in_flight).await;
                }
                claim_now = false;
            }
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = self.store_failed.fired.cancelled() => {}
                Some(joined) = in_flight.join_next() => {
                    if let Err(e) = joined {
                        tracing::error!(error = %e, "lifecycle task panicked");
                    }
                    claim_now = more_due
                        && MAX_IN_FLIGHT.saturating_sub(in_flight.len()) >= RECLAIM_ROOM;
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
        renewing.cancel();
        let _ = renewals.await;
        self.signals.set_workers_running(false);
        if self.store_failed.fired.is_cancelled() {
            return Err(LifecycleError::Failed(self.store_failed.reason()));
        }
        Ok(())
    }

    /// Claims as many due packs as there is room for (at most [`CLAIM_BATCH`]) and starts
    /// a task for each; returns whether more may be due (the claim was full).
    async fn claim_into(self: &Arc<Self>, in_flight: &mut JoinSet<()>) -> bool {
        let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
        if room == 0 {
            return true;
        }
        let limit = room.min(CLAIM_BATCH);
        // Before the claim is sent: the leases it gets run from a later instant.
        let hold = Hold::Leased(Instant::now());
        let (reply, claimed) = oneshot::channel();
        let asked = self.store_ops.send(StoreOp::Claim {
            now: self.clock.now(),
            limit,
            reply,
        });
        let claimed = match asked {
            Ok(()) => claimed.await.unwrap_or_else(|_| Err(store_thread_gone())),
            Err(_) => Err(store_thread_gone()),
        };
        let claimed = match claimed {
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
                if let Err(e) = me.step(&zone, &id, hold).await {
                    tracing::warn!(pack = %id.as_str(), error = %e, "lifecycle step failed");
                }
                me.release(id.clone()).await;
                // Once per pack, after its last write: a waiting `retry=true` then sees
                // where the pack ended up, not an intermediate state.
                me.signals.progressed(&id);
            });
        }
        more
    }

    async fn step(&self, zone: &ZoneId, id: &PackId, hold: Hold) -> Result<(), StoreError> {
        let Some(pack) = self.read(zone, id).await? else {
            return Ok(());
        };
        if !self.still_held(hold, &pack.id) {
            return Ok(());
        }
        let now = self.clock.now();
        match pack.state {
            PackState::PendingValidation if now >= pack.stage_deadline => {
                self.save_with(pack, |p| {
                    if p.state != PackState::PendingValidation {
                        return false;
                    }
                    p.state = PackState::ValidationTimedOut;
                    true
                })
                .await?;
                Ok(())
            }
            PackState::PendingValidation => self.validate(pack, hold).await,
            PackState::PendingIssuance | PackState::PendingDeployment
                if now >= pack.stage_deadline =>
            {
                let timeout = self.issuance_timeout_secs;
                self.save_with(pack, |p| time_out_issuance(p, timeout))
                    .await?;
                Ok(())
            }
            PackState::PendingIssuance | PackState::PendingDeployment => {
                self.issue_and_deploy_held(pack, hold).await
            }
            PackState::Active => match pack.certificate.as_ref().map(|c| c.not_after) {
                Some(not_after) if now >= not_after => {
                    self.save_with(pack, |p| {
                        if p.state != PackState::Active {
                            return false;
                        }
                        p.state = PackState::Expired;
                        true
                    })
                    .await?;
                    Ok(())
                }
                _ => self.renew(pack, hold).await,
            },
            _ => Ok(()),
        }
    }

    /// Checks the due unverified hosts; when every host has validated and CAA allows the
    /// CA, moves on to issuance. The outcomes and the move to `pending_issuance` (or the
    /// CAA refusal) are one write.
    async fn validate(&self, pack: Pack, hold: Hold) -> Result<(), StoreError> {
        let now = self.clock.now();
        let due: Vec<usize> = pack
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.check.verified != Some(true) && h.check.next_due_at <= now)
            .map(|(i, _)| i)
            .collect();
        if due.is_empty() && !all_verified(&pack) {
            // Nothing due yet (claimed for another server's lapsed lease, say).
            return Ok(());
        }
        let checking = Checking::start(&self.checking);
        // With `due` empty the pack was claimed with every host validated: CAA is being
        // retried.
        let outcomes = if due.is_empty() {
            Vec::new()
        } else {
            self.check_hosts(&pack, &due, false, hold).await
        };
        let deadline = pack.stage_deadline;
        let mut preview = pack.clone();
        apply_outcomes(&mut preview, &outcomes, now, Some(deadline));
        // The outcomes of the checks that ran are written whatever happens, but nothing
        // more starts once the lease may have run out.
        let held = self.still_held(hold, &pack.id);
        // CAA is asked only when these outcomes complete the validation.
        let caa = if held && all_verified(&preview) {
            Some(self.caa_refusal(&preview).await)
        } else {
            None
        };
        drop(checking);
        let issuance_timeout = self.issuance_timeout_secs;
        let Some(pack) = self
            .save_with(pack, |p| {
                if p.state != PackState::PendingValidation {
                    return false;
                }
                let matched = apply_outcomes(p, &outcomes, now, Some(deadline));
                if !due.is_empty() && !matched {
                    // Every checked record was replaced meanwhile: nothing to record.
                    return false;
                }
                if !all_verified(p) {
                    return true;
                }
                match &caa {
                    Some(Some(refusal)) => hold_for_caa(p, refusal.clone(), now),
                    Some(None) => to_issuance(p, now, issuance_timeout),
                    // Left for the next claim, due at once, to ask CAA.
                    None if !held => {
                        for h in &mut p.hosts {
                            h.check.next_due_at = now;
                        }
                        true
                    }
                    // Validated by a change made meanwhile, CAA not asked: below.
                    None => true,
                }
            })
            .await?
        else {
            return Ok(());
        };
        if !held {
            return Ok(());
        }
        match pack.state {
            PackState::PendingIssuance => self.issue_and_deploy_held(pack, hold).await,
            PackState::PendingValidation if caa.is_none() && all_verified(&pack) => {
                self.after_late_validation(pack, now, hold).await
            }
            _ => Ok(()),
        }
    }

    /// A pack found fully validated only when its outcomes were saved (a change made
    /// meanwhile validated the rest): CAA, then issuance, as separate writes.
    async fn after_late_validation(
        &self,
        pack: Pack,
        now: i64,
        hold: Hold,
    ) -> Result<(), StoreError> {
        if !self.still_held(hold, &pack.id) {
            return Ok(());
        }
        let issuance_timeout = self.issuance_timeout_secs;
        match self.caa_refusal(&pack).await {
            Some(refusal) => {
                self.save_with(pack, |p| {
                    p.state == PackState::PendingValidation
                        && all_verified(p)
                        && hold_for_caa(p, refusal.clone(), now)
                })
                .await?;
                Ok(())
            }
            None => {
                let saved = self
                    .save_with(pack, |p| {
                        p.state == PackState::PendingValidation
                            && all_verified(p)
                            && to_issuance(p, now, issuance_timeout)
                    })
                    .await?;
                match saved {
                    Some(pack) => self.issue_and_deploy_held(pack, hold).await,
                    None => Ok(()),
                }
            }
        }
    }

    /// Renewal of an active pack: the hosts' records are checked again (the built-in CA
    /// re-validates like Cloudflare does for its renewals), then a new certificate is
    /// issued and deployed. The pack stays `active` while this fails; failures are
    /// recorded and retried on the DCV schedule until 24 hours before expiry.
    async fn renew(&self, pack: Pack, hold: Hold) -> Result<(), StoreError> {
        let now = self.clock.now();
        let (Some(starts), Some(gives_up), Some(not_after)) = (
            pack.renewal_starts_at(),
            pack.renewal_gives_up_at(),
            pack.certificate.as_ref().map(|c| c.not_after),
        ) else {
            return Ok(());
        };
        if now < starts {
            // Claimed early (a `retry=true` on an active pack): nothing to do until the
            // window opens.
            self.save_with(pack, |p| {
                for h in &mut p.hosts {
                    h.check.next_due_at = starts;
                }
                p.state == PackState::Active
            })
            .await?;
            return Ok(());
        }
        if now >= gives_up {
            self.save_with(pack, |p| {
                if p.state != PackState::Active {
                    return false;
                }
                push_error(
                    p,
                    "renewal: gave up 24 hours before expiry; the certificate will expire".into(),
                );
                for h in &mut p.hosts {
                    h.check.next_due_at = not_after;
                }
                true
            })
            .await?;
            return Ok(());
        }
        let all: Vec<usize> = (0..pack.hosts.len()).collect();
        let outcomes = self.check_hosts(&pack, &all, true, hold).await;
        let held = self.still_held(hold, &pack.id);
        let failed: Vec<String> = outcomes
            .iter()
            .filter_map(|o| match &o.outcome {
                CheckOutcome::Failed(reason) => pack
                    .hosts
                    .get(o.index)
                    .map(|h| format!("{}: {reason}", h.hostname)),
                CheckOutcome::Passed => None,
            })
            .collect();
        let refusal = if failed.is_empty() && held {
            self.caa_refusal(&pack).await
        } else {
            None
        };
        let Some(pack) = self
            .save_with(pack, |p| {
                if p.state != PackState::Active {
                    return false;
                }
                apply_outcomes(p, &outcomes, now, None);
                if !failed.is_empty() {
                    push_error(p, format!("renewal: DCV failed: {}", failed.join("; ")));
                } else if let Some(refusal) = &refusal {
                    push_error(p, format!("renewal: {refusal}"));
                }
                true
            })
            .await?
        else {
            return Ok(());
        };
        if failed.is_empty() && refusal.is_none() && held {
            self.issue_and_deploy_held(pack, hold).await?;
        }
        Ok(())
    }

    /// Obtains a certificate for the pack's hosts from the issuer, records it
    /// (`pending_deployment`), writes it to the deploy directory and marks the pack
    /// `active`. The private key exists only in memory and in
    /// `<deploy_dir>/<pack>/privkey.pem`: if deployment fails, the next try issues a fresh
    /// certificate rather than storing the key.
    pub(crate) async fn issue_and_deploy(&self, pack: Pack) -> Result<(), StoreError> {
        self.issue_and_deploy_held(pack, Hold::Unleased).await
    }

    /// [`Worker::issue_and_deploy`] of a pack held by `hold`: neither the issuance nor the
    /// deployment starts once its lease may have run out (the wait for a slot can be long).
    async fn issue_and_deploy_held(&self, pack: Pack, hold: Hold) -> Result<(), StoreError> {
        // The semaphores are never closed; without a permit this would only run unbounded.
        let _slot = self.issuing.acquire().await.ok();
        let _checks_first = if self.checking.load(Ordering::Relaxed) > 0 {
            self.issuing_while_checking.acquire().await.ok()
        } else {
            None
        };
        if !self.still_held(hold, &pack.id) {
            return Ok(());
        }
        let now = self.clock.now();
        let from = pack.state;
        let leaf = match self.issue(&pack, now).await {
            Ok(leaf) => leaf,
            Err(e) => {
                self.retry_later(pack, from, format!("issuance failed: {e}"), now)
                    .await?;
                return Ok(());
            }
        };
        let issuance_timeout = self.issuance_timeout_secs;
        let cert = IssuedCertificate {
            id: leaf.serial_hex.clone(),
            chain_pem: leaf.chain_pem.clone(),
            not_before: leaf.not_before.unix_timestamp(),
            not_after: leaf.not_after.unix_timestamp(),
            issuer: leaf.issuer.clone(),
            signature: leaf.signature.to_owned(),
            issued_at: now,
        };
        let Some(pack) = self
            .save_with(pack, |p| {
                if p.state != from {
                    return false;
                }
                if from == PackState::Active {
                    // A renewal: its deployment gets a deadline of its own.
                    p.stage_deadline = now.saturating_add(issuance_timeout);
                }
                p.state = PackState::PendingDeployment;
                p.certificate = Some(cert.clone());
                true
            })
            .await?
        else {
            return Ok(());
        };
        if !self.still_held(hold, &pack.id) {
            // The next claim issues afresh: the key of this certificate is not kept.
            return Ok(());
        }
        let hook = self.hook.as_ref();
        let id = pack.id.as_str().to_owned();
        match deploy(&self.config.deploy_dir(), pack.id.as_str(), &leaf, hook).await {
            Ok(_) => {
                self.save_with(pack, |p| {
                    if p.state != PackState::PendingDeployment {
                        return false;
                    }
                    p.state = PackState::Active;
                    p.errors.clear();
                    if let Some(starts) = p.renewal_starts_at() {
                        for h in &mut p.hosts {
                            h.check.next_due_at = starts;
                        }
                    }
                    true
                })
                .await?;
                tracing::info!(pack = %id, serial = %cert.id, "certificate deployed");
            }
            Err(e) => {
                self.retry_later(
                    pack,
                    PackState::PendingDeployment,
                    format!("deployment failed: {e}"),
                    now,
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn issue(&self, pack: &Pack, now: i64) -> Result<IssuedLeaf, String> {
        let at = |secs: i64| {
            time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| format!("time: {e}"))
        };
        let hosts: Vec<_> = pack.hosts.iter().map(|h| h.hostname.clone()).collect();
        let req = IssueRequest {
            hosts: hosts.iter().map(|h| h.as_str().to_owned()).collect(),
            not_before: at(now)?,
            not_after: at(now + i64::from(pack.validity_days) * 86_400)?,
            key_type: self.config.key_type,
        };
        // The records were minted when the pack was ordered: the order is a local one.
        let order_ref = self.issuer.local_order(&hosts).map_err(|e| e.to_string())?;
        self.issuer
            .finish(&order_ref, &req)
            .await
            .map_err(|e| e.to_string())
    }

    /// Records a failed issuance or deployment and makes the pack due again later, at the
    /// stage's deadline at the latest (where it times out). A failed renewal's pack (still
    /// `active`) keeps its current certificate.
    async fn retry_later(
        &self,
        pack: Pack,
        expected: PackState,
        error: String,
        now: i64,
    ) -> Result<(), StoreError> {
        tracing::warn!(pack = %pack.id.as_str(), %error, "lifecycle");
        self.save_with(pack, |p| {
            if p.state != expected {
                return false;
            }
            push_error(p, error.clone());
            let mut retry_at = now + ISSUANCE_RETRY_SECS;
            if p.state != PackState::Active {
                retry_at = retry_at.min(p.stage_deadline);
            }
            for h in &mut p.hosts {
                h.check.next_due_at = retry_at;
            }
            true
        })
        .await?;
        Ok(())
    }

    /// The first host whose CAA records forbid the pack's CA, as an error message.
    async fn caa_refusal(&self, pack: &Pack) -> Option<String> {
        let identity = pack.ca.caa_identity();
        let mut checks = JoinSet::new();
        let shared = self.validator.sharing_answers();
        for host in &pack.hosts {
            let validator = shared.clone();
            let checks_bound = Arc::clone(&self.checks);
            let name = host.hostname.as_str().to_owned();
            checks.spawn(async move {
                let _permit = checks_bound.acquire_owned().await.ok();
                let outcome = validator.check_caa(&name, identity).await;
                (name, outcome)
            });
        }
        let mut refusals = Vec::new();
        while let Some(joined) = checks.join_next().await {
            match joined {
                Ok((_, CheckOutcome::Passed)) => {}
                Ok((name, CheckOutcome::Failed(reason))) => {
                    refusals.push(format!("CAA forbids {identity} for {name}: {reason}"))
                }
                Err(e) => refusals.push(format!("CAA check task failed: {e}")),
            }
        }
        refusals.sort();
        refusals.into_iter().next()
    }

    /// Runs the checks of the hosts at `indexes` concurrently, each under the global
    /// bound. E-mail hosts cannot be checked by a machine: during validation they wait
    /// for an operator; at renewal the earlier approval stands.
    async fn check_hosts(
        &self,
        pack: &Pack,
        indexes: &[usize],
        renewing: bool,
        hold: Hold,
    ) -> Vec<HostOutcome> {
        let mut checks = JoinSet::new();
        let shared = self.validator.sharing_answers();
        for &index in indexes {
            let Some(host) = pack.hosts.get(index) else {
                continue;
            };
            let record = host.record.clone();
            let validator = shared.clone();
            let bound = Arc::clone(&self.checks);
            let leases = Arc::clone(&self.leases);
            checks.spawn(async move {
                let _permit = bound.acquire_owned().await.ok();
                // The wait for a permit can be long: no check once the lease may be gone.
                if !leases.holds(hold) {
                    return None;
                }
                let outcome = match &record {
                    DcvRecord::Txt { name, value } => validator.check_txt(name, value).await,
                    DcvRecord::Http { url, body } => validator.check_http(url, body).await,
                    DcvRecord::Cname { name, target } => validator.check_cname(name, target).await,
                    DcvRecord::Email { .. } if renewing => CheckOutcome::Passed,
                    DcvRecord::Email { .. } => CheckOutcome::Failed(EMAIL_REASON.into()),
                };
                Some(HostOutcome {
                    index,
                    record,
                    outcome,
                })
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = checks.join_next().await {
            match joined {
                Ok(Some(o)) => out.push(o),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "DCV check task failed"),
            }
        }
        out
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

    /// Applies `change` to the pack and saves it. On a concurrent change the pack is
    /// read again and `change` applied once more, so an outcome is not lost to an edit
    /// made meanwhile; `change` returns `false` when it no longer applies (the pack
    /// moved on), and then nothing is written. Returns the saved pack.
    async fn save_with(
        &self,
        pack: Pack,
        change: impl Fn(&mut Pack) -> bool,
    ) -> Result<Option<Pack>, StoreError> {
        let mut current = pack;
        for attempt in 0..2 {
            let mut next = current.clone();
            if !change(&mut next) {
                return Ok(None);
            }
            next.updated_at = self.clock.now();
            match self.update(next).await {
                Ok(saved) => return Ok(Some(saved)),
                Err(StoreError::Conflict) if attempt == 0 => {
                    match self.read(&current.zone_id, &current.id).await? {
                        Some(fresh) => current = fresh,
                        None => return Ok(None),
                    }
                }
                Err(StoreError::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        // A second conflict: the pack is still due, so a later claim checks again.
        Ok(None)
    }

    /// Saves the pack through the store thread; the saved pack (its version bumped) comes back.
    async fn update(&self, pack: Pack) -> Result<Pack, StoreError> {
        let (reply, saved) = oneshot::channel();
        self.store_ops
            .send(StoreOp::Update(Box::new(pack), reply))
            .map_err(|_| store_thread_gone())?;
        saved.await.map_err(|_| store_thread_gone())?
    }

    /// Reads a pack through the store thread.
    async fn read(&self, zone: &ZoneId, id: &PackId) -> Result<Option<Pack>, StoreError> {
        let (reply, read) = oneshot::channel();
        self.store_ops
            .send(StoreOp::Read(zone.clone(), id.clone(), reply))
            .map_err(|_| store_thread_gone())?;
        read.await.map_err(|_| store_thread_gone())?
    }

    /// Gives up the lease on a pack, through the store thread (a failure is logged there; the
    /// lease then runs out by itself).
    async fn release(&self, id: PackId) {
        let (reply, released) = oneshot::channel();
        if self.store_ops.send(StoreOp::Release(id, reply)).is_ok() {
            let _ = released.await;
        }
    }
}

/// Counts a pack as being checked for as long as it lives (a cancelled task included).
struct Checking<'a>(&'a AtomicUsize);

impl<'a> Checking<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Checking(count)
    }
}

impl Drop for Checking<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The file in the data directory that keeps the node's identity.
const NODE_ID_FILE: &str = "node-id";

/// This worker's lease owner. A server keeps a stable identity, `node-<id>` with the id in
/// `<data_dir>/node-id`, so that after a crash it knows which leases were its own and takes
/// them back at once instead of waiting for them to run out. The file is locked while a
/// worker uses it: a second worker on the same data directory at the same time (another
/// process, or the dev seed's) gets a fresh `worker-<id>` instead, and the lock goes with
/// the process, so a crashed server's is free again. Returns the lock when it was taken.
fn node_identity(data_dir: &std::path::Path) -> (String, Option<std::fs::File>) {
    match lock_node_identity(data_dir) {
        Ok(Some((id, lock))) => (format!("node-{id}"), Some(lock)),
        Ok(None) => {
            tracing::info!(
                "another worker holds this data directory's node identity: this one leases under a fresh identity"
            );
            (format!("worker-{}", crate::secrets::mint_id()), None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no node identity in the data directory: a restart waits for this worker's leases to run out");
            (format!("worker-{}", crate::secrets::mint_id()), None)
        }
    }
}

fn lock_node_identity(
    data_dir: &std::path::Path,
) -> std::io::Result<Option<(String, std::fs::File)>> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(NODE_ID_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let id = text.trim();
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Some((id.to_owned(), file)));
    }
    let id = crate::secrets::mint_id();
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(format!("{id}\n").as_bytes())?;
    file.sync_all()?;
    Ok(Some((id, file)))
}

/// Asks the store thread to renew the worker's leases every `period` until `stop`.
async fn ask_for_renewals(renew_asked: Arc<Notify>, period: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(period);
    // After a stall, renew once, not once per missed period.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => renew_asked.notify_one(),
        }
    }
}

fn store_thread_gone() -> StoreError {
    StoreError::Backend("the lifecycle's store thread has stopped".into())
}

/// The worker's store thread: takes up to [`WRITE_BATCH`] queued operations at a time,
/// answers the reads, commits the writes in one transaction, then claims (so leases given
/// up in this batch can be claimed again). A renewal of the worker's leases, when
/// `renew_asked`, runs before the next batch. Runs until every sender is gone.
async fn store_thread(
    store: Store,
    owner: String,
    leases: Arc<LeaseClock>,
    renew_asked: Arc<Notify>,
    mut queued: mpsc::UnboundedReceiver<StoreOp>,
) {
    // Leases are stored in whole seconds of the wall clock, whose second may be about to
    // end: one second more keeps every lease at least `lease` long, as `LeaseClock`
    // counts it.
    let lease_secs = i64::try_from(leases.lease.as_secs())
        .unwrap_or(i64::MAX / 2)
        .saturating_add(1);
    let mut ops = Vec::with_capacity(WRITE_BATCH);
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
                Ok(_) => leases.renewed(at),
                Err(e) => tracing::warn!(
                    error = %e,
                    "lifecycle: renewing leases failed; packs in hand are dropped when their leases may have run out"
                ),
            }
            continue;
        }
        let mut packs = Vec::new();
        let mut saved_replies = Vec::new();
        let mut releases = Vec::new();
        let mut released_replies = Vec::new();
        let mut claims = Vec::new();
        for op in ops.drain(..) {
            match op {
                StoreOp::Read(zone, id, reply) => {
                    let _ = reply.send(store.pack(&zone, &id).await);
                }
                StoreOp::Claim { now, limit, reply } => claims.push((now, limit, reply)),
                StoreOp::Update(pack, reply) => {
                    packs.push(*pack);
                    saved_replies.push(reply);
                }
                StoreOp::Release(id, reply) => {
                    releases.push(id);
                    released_replies.push(reply);
                }
                #[cfg(test)]
                StoreOp::Panic => panic!("injected: the store thread panics"),
            }
        }
        let written = if packs.is_empty() && releases.is_empty() {
            Ok(Vec::new())
        } else {
            store
                .write_lifecycle_batch(&owner, &mut packs, &releases)
                .await
        };
        match written {
            Ok(outcomes) => {
                for ((pack, reply), outcome) in packs.into_iter().zip(saved_replies).zip(outcomes) {
                    let _ = reply.send(outcome.map(|()| pack));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, packs = packs.len(), leases = releases.len(), "lifecycle: a batch of writes failed");
                let reason = e.to_string();
                for reply in saved_replies {
                    let _ = reply.send(Err(StoreError::Backend(reason.clone())));
                }
            }
        }
        for reply in released_replies {
            let _ = reply.send(());
        }
        for (now, limit, reply) in claims {
            let claimed = store
                .claim_due(&Claim {
                    owner: &owner,
                    now,
                    wall_now: SystemClock.now(),
                    lease_secs,
                    limit: limit as u64,
                })
                .await;
            let _ = reply.send(claimed);
        }
    }
}

/// Ends a pack's issuance or deployment that ran past its deadline: it is
/// `issuance_timed_out` or `deployment_timed_out`, with why, until a PATCH restarts it.
fn time_out_issuance(pack: &mut Pack, timeout_secs: i64) -> bool {
    let (state, stage) = match pack.state {
        PackState::PendingIssuance => (PackState::IssuanceTimedOut, "issuance"),
        PackState::PendingDeployment => (PackState::DeploymentTimedOut, "deployment"),
        _ => return false,
    };
    pack.state = state;
    push_error(
        pack,
        format!(
            "{stage} timed out: not done within {} (failures were retried every {} \
             minutes); PATCH the pack to restart it with fresh tokens",
            human_duration(timeout_secs),
            ISSUANCE_RETRY_SECS / 60
        ),
    );
    true
}

/// `24 hours`, `90 minutes`, `45 seconds`: the largest whole unit.
fn human_duration(secs: i64) -> String {
    let (n, unit) = if secs % 3600 == 0 {
        (secs / 3600, "hour")
    } else if secs % 60 == 0 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} {unit}{plural}")
}

fn all_verified(pack: &Pack) -> bool {
    pack.hosts.iter().all(|h| h.check.verified == Some(true))
}

/// Moves a validated pack on to issuance, due at once: if this server dies before issuing,
/// the next claim resumes there. Issuance and deployment have `timeout_secs` from now.
fn to_issuance(pack: &mut Pack, now: i64, timeout_secs: i64) -> bool {
    pack.state = PackState::PendingIssuance;
    pack.stage_deadline = now.saturating_add(timeout_secs);
    pack.errors.clear();
    for h in &mut pack.hosts {
        h.check.next_due_at = now;
    }
    true
}

/// Keeps a validated pack in `pending_validation` with the CAA refusal as its error, CAA
/// being checked again at the hosts' next schedule slot.
fn hold_for_caa(pack: &mut Pack, refusal: String, now: i64) -> bool {
    push_error(pack, refusal);
    for h in &mut pack.hosts {
        h.check.next_due_at = HostCheck::next_due_after(h.check.attempts, now);
    }
    true
}

/// Writes check outcomes into the hosts whose record is still the one checked.
/// `verified_due` is when a validated host is next looked at (`None`: on the schedule
/// like a failed one). Returns whether any host matched.
fn apply_outcomes(
    pack: &mut Pack,
    outcomes: &[HostOutcome],
    now: i64,
    verified_due: Option<i64>,
) -> bool {
    let deadline = pack.stage_deadline;
    let mut any = false;
    for o in outcomes {
        let Some(host) = pack.hosts.get_mut(o.index) else {
            continue;
        };
        if host.record != o.record {
            continue;
        }
        any = true;
        let before = host.check.attempts;
        host.check.attempts = before.saturating_add(1);
        host.check.last_checked_at = Some(now);
        let on_schedule = HostCheck::next_due_after(before, now);
        match &o.outcome {
            CheckOutcome::Passed => {
                host.check.verified = Some(true);
                host.check.reason = None;
                host.check.next_due_at = verified_due.unwrap_or(on_schedule);
            }
            CheckOutcome::Failed(reason) => {
                host.check.verified = Some(false);
                host.check.reason = Some(reason.clone());
                host.check.next_due_at = if reason == EMAIL_REASON {
                    // Nothing changes until an operator approves: no point in polling.
                    deadline
                } else {
                    on_schedule
                };
            }
        }
    }
    any
}

/// Adds a pack error unless it is already the newest one (a retried failure is shown
/// once), keeping the last few.
fn push_error(pack: &mut Pack, error: String) {
    if pack.errors.last() != Some(&error) {
        pack.errors.push(error);
    }
    let excess = pack.errors.len().saturating_sub(5);
    pack.errors.drain(..excess);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CaChoice, DcvMethod, Hostname};

    #[test]
    fn a_lease_holds_for_its_claim_and_as_long_as_renewals_follow_each_other() {
        let lease = Duration::from_secs(60);
        let now = Instant::now();
        let start = now.checked_sub(Duration::from_secs(300)).unwrap();
        let leases = LeaseClock::new(lease, start);
        let fresh = Hold::Leased(now);
        let old = Hold::Leased(now - Duration::from_secs(59));
        let lapsed = Hold::Leased(now - Duration::from_secs(61));
        assert!(leases.holds(fresh) && leases.holds(old));
        assert!(
            !leases.holds(lapsed),
            "no renewal: only the claim's own lease"
        );
        assert!(leases.holds(Hold::Unleased));

        // A renewal covers every lease still running when it was asked for.
        leases.renewed(now - Duration::from_secs(30));
        assert!(leases.holds(Hold::Leased(now - Duration::from_secs(80))));
        assert!(
            !leases.holds(Hold::Leased(now - Duration::from_secs(95))),
            "lapsed before the renewal"
        );
        // The next renewal, within the lease, carries the chain on.
        leases.renewed(now - Duration::from_secs(5));
        assert!(leases.holds(Hold::Leased(now - Duration::from_secs(80))));

        // Renewals stopped for longer than a lease: the chain is broken, and a late
        // renewal covers only leases running when it was asked for.
        let stalled = LeaseClock::new(lease, start);
        stalled.renewed(now - Duration::from_secs(200));
        stalled.renewed(now - Duration::from_secs(10));
        assert!(!stalled.holds(Hold::Leased(now - Duration::from_secs(190))));
        assert!(stalled.holds(Hold::Leased(now - Duration::from_secs(65))));
    }

    #[test]
    fn issuance_and_deployment_time_out_with_the_reason() {
        let zone = ZoneId::parse("023e105f4ecef8ad9ca31a8372d0c353").unwrap();
        let mut pack = Pack::order(
            zone,
            vec![Hostname::parse("example.com").unwrap()],
            DcvMethod::Txt,
            90,
            CaChoice::LetsEncrypt,
            false,
            "x.dcv.test",
            1_000,
        );
        assert!(
            !time_out_issuance(&mut pack, 86_400),
            "validation has its own"
        );
        assert!(to_issuance(&mut pack, 2_000, 86_400));
        assert_eq!(pack.stage_deadline, 2_000 + 86_400);
        assert!(time_out_issuance(&mut pack, 86_400));
        assert_eq!(pack.state, PackState::IssuanceTimedOut);
        assert!(
            pack.errors
                .last()
                .is_some_and(|e| e.starts_with("issuance timed out: not done within 24 hours")),
            "{:?}",
            pack.errors
        );
        pack.state = PackState::PendingDeployment;
        assert!(time_out_issuance(&mut pack, 90));
        assert_eq!(pack.state, PackState::DeploymentTimedOut);
        assert!(pack.errors.last().is_some_and(|e| e.contains("90 seconds")));
        assert_eq!(human_duration(5_400), "90 minutes");
        assert_eq!(human_duration(3_600), "1 hour");
    }
}
