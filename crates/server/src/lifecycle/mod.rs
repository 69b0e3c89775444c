//! The certificate lifecycle's background side.
//!
//! The HTTP side and the lifecycle never call each other: they meet in the store
//! (hosts with a due time) and through [`Signals`]: a wake-up so a new order or a
//! `retry=true` does not wait for a poll tick, per-pack progress notices the HTTP side
//! waits for while it waits for the outcome of a check it asked for, and a wake-up for the
//! revocation of deleted packs' certificates at their ACME CA (`--acme-revoke-on-delete`),
//! whose queue is in the store, written by the deletion's own transaction.
//!
//! What the [`Worker`] does with a claimed pack:
//! - `pending_validation`: checks the due hosts (TXT, HTTP, CNAME delegation) and writes
//!   each outcome (verified, time, reason, attempts + 1, next slot of Cloudflare's
//!   schedule). Once every host validated, CAA is checked for each; a refusal is a pack
//!   error and the pack stays pending, CAA being checked again on the schedule. Past the
//!   validation deadline the pack becomes `validation_timed_out`. E-mail validation waits
//!   for an operator (`zonecert pack approve`).
//! - `pending_issuance -> pending_deployment -> active`: the issuer (today the built-in
//!   CA) signs (validity from the order, `not_before` = now), the certificate is
//!   stored, the chain and key are written to `<deploy_dir>/<pack>/` and the hook
//!   runs. The key never enters the database. A failure is a pack error, retried after
//!   five minutes, until `Config::issuance_timeout` (24 hours) after validation:
//!   then the pack is `issuance_timed_out` or `deployment_timed_out` until a PATCH.
//! - `active`: from the renewal window on, the hosts' records are checked again and a
//!   new certificate issued and deployed (`active -> pending_deployment -> active`);
//!   failures are pack errors, retried on the schedule until 24 hours before expiry.
//!   Past `not_after` the pack is `expired`.
//! - Packs held for brand check are never claimed until approved.
//! - `initializing`: a pack of a name with an ACME directory (`--acme`) waits for its
//!   CA's order; the worker places it and the pack moves to `pending_validation` with the
//!   CA's challenges as its records (`worker/acme.rs`; the worker module's documentation
//!   describes the steps). Past its deadline it is `initializing_timed_out`.

use crate::model::PackId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// How many packs' retry times are kept before those past their window are dropped.
const RETRY_ASKS_KEPT: usize = 4096;

/// The wake-up and progress signals shared by the HTTP side and the workers.
#[derive(Debug)]
pub struct Signals {
    wake: Notify,
    /// Who waits for which pack's steps (`retry=true`): a step wakes only its pack's
    /// waiters (see `progress.rs`).
    progress: progress::ProgressWaiters,
    workers_running: AtomicBool,
    /// Whether this server runs a lifecycle (readiness requires it then).
    lifecycle_expected: AtomicBool,
    /// The lease owner of this process's worker, once it started.
    lease_owner: Mutex<Option<String>>,
    /// The packs whose DCV checks this process's worker is running (see
    /// [`Signals::checks_begin`]).
    running: Mutex<HashMap<PackId, RunningCheck>>,
    /// When (the lifecycle's clock) a `retry=true` on this node last asked for each
    /// pack's checks (see [`Signals::retry_asked_at`]).
    retries: Mutex<HashMap<PackId, i64>>,
    /// The test controls, when the server offers them: inputs of the check, CAA,
    /// issuance and deployment steps (see `crate::controls`).
    controls: std::sync::OnceLock<std::sync::Arc<crate::controls::Controls>>,
    /// The server's metrics, moved by both sides.
    metrics: crate::metrics::Metrics,
    /// Wakes the worker's revocation task: a deletion queued certificates to revoke
    /// (`--acme-revoke-on-delete`; the queue itself is in the store).
    revocations: tokio::sync::Notify,
    /// The key-encryption key certificates' private keys are sealed under before they
    /// are stored (see `crate::keys`), once the server has it.
    kek: std::sync::OnceLock<std::sync::Arc<crate::keys::Kek>>,
    /// The certificates this process's worker deployed since the deploy sync's last pass
    /// (pack -> serial), kept only while a deploy sync runs (see
    /// [`Signals::deployed_here`]).
    deployed_here: Mutex<Option<HashMap<PackId, String>>>,
    #[cfg(test)]
    fault: std::sync::Mutex<Option<Fault>>,
}

/// A fault the tests inject into a running worker.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The worker's claim loop panics.
    WorkerPanic,
    /// The worker's store thread panics.
    StorePanic,
}

impl Default for Signals {
    fn default() -> Self {
        Signals::with_metrics(crate::metrics::Metrics::default())
    }
}

impl Signals {
    /// The signals of a server counting into `metrics`.
    pub fn with_metrics(metrics: crate::metrics::Metrics) -> Self {
        Signals {
            wake: Notify::new(),
            progress: progress::ProgressWaiters::default(),
            workers_running: AtomicBool::new(false),
            lifecycle_expected: AtomicBool::new(false),
            lease_owner: Mutex::new(None),
            running: Mutex::new(HashMap::new()),
            retries: Mutex::new(HashMap::new()),
            controls: std::sync::OnceLock::new(),
            metrics,
            revocations: tokio::sync::Notify::new(),
            kek: std::sync::OnceLock::new(),
            deployed_here: Mutex::new(None),
            #[cfg(test)]
            fault: std::sync::Mutex::new(None),
        }
    }
}

impl Signals {
    /// The server's metrics (counters of requests, checks, issuances, webhook
    /// deliveries, ...): see [`crate::metrics::Metrics`].
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Wakes the workers: something became due now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Signals::wake`] is called (or was called since the last wait).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Tells the waiters of `pack` that its outcome was written.
    pub fn progressed(&self, pack: &PackId) {
        self.progress.notify(pack);
    }

    /// Watches `packs`: the watch's [`ProgressWatch::moved`] resolves when a step of one
    /// of them ends after this call. Made before the first read of what is waited for,
    /// so a step that ends between the read and the wait is not missed.
    pub fn watch_progress(&self, packs: Vec<PackId>) -> ProgressWatch<'_> {
        self.progress.watch(packs)
    }

    /// Whether workers run in this process (so waiting for a check makes sense).
    pub fn workers_running(&self) -> bool {
        self.workers_running.load(Ordering::Acquire)
    }

    /// The lease owner of this process's worker (`None` before one started): packs
    /// leased by another owner are being worked on elsewhere.
    pub fn lease_owner(&self) -> Option<String> {
        self.lease_owner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records the lease owner of this process's worker.
    pub fn set_lease_owner(&self, owner: &str) {
        *self
            .lease_owner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(owner.to_owned());
    }

    /// Hands the test controls to the workers (once, when the server opens).
    pub fn set_controls(&self, controls: std::sync::Arc<crate::controls::Controls>) {
        let _ = self.controls.set(controls);
    }

    /// Gives the workers the key-encryption key (set once).
    pub fn set_kek(&self, kek: std::sync::Arc<crate::keys::Kek>) {
        let _ = self.kek.set(kek);
    }

    /// The key-encryption key, once set.
    pub fn kek(&self) -> Option<&crate::keys::Kek> {
        self.kek.get().map(|k| &**k)
    }

    /// The key-encryption key, shared.
    pub fn kek_shared(&self) -> Option<std::sync::Arc<crate::keys::Kek>> {
        self.kek.get().cloned()
    }

    /// Has the worker note the certificates it deploys from now on, for the deploy sync
    /// ([`Signals::take_deployed_here`]) that this server runs.
    pub fn track_deployed_here(&self) {
        self.deployed_here
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(HashMap::new);
    }

    /// The worker wrote `serial`'s files for `pack` to this node's deploy directory and
    /// recorded the pack active: the deploy sync need not read them back to compare.
    pub fn deployed_here(&self, pack: &PackId, serial: &str) {
        if let Some(deployed) = self
            .deployed_here
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            deployed.insert(pack.clone(), serial.to_owned());
        }
    }

    /// What the worker deployed since the last call (empty unless tracked).
    pub fn take_deployed_here(&self) -> HashMap<PackId, String> {
        self.deployed_here
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The test controls, when the server offers them.
    pub fn controls(&self) -> Option<&crate::controls::Controls> {
        self.controls.get().map(|c| &**c)
    }

    /// Whether a lifecycle was started for this server (by [`crate::App::serve`] or
    /// [`crate::App::start_lifecycle`]): readiness then requires it to run.
    pub fn lifecycle_expected(&self) -> bool {
        self.lifecycle_expected.load(Ordering::Acquire)
    }

    /// Marks the workers as started or stopped.
    pub fn set_workers_running(&self, running: bool) {
        if running {
            self.lifecycle_expected.store(true, Ordering::Release);
        }
        self.workers_running.store(running, Ordering::Release);
    }

    /// Tells this server's worker that a deletion queued certificates to revoke at
    /// their ACME CA (`--acme-revoke-on-delete`), so it does not wait for its next poll.
    /// Returns `false` when no worker runs here (the queue waits in the store for a
    /// node whose lifecycle runs).
    pub fn revocations_queued(&self) -> bool {
        self.revocations.notify_one();
        self.workers_running()
    }

    /// Resolves when [`Signals::revocations_queued`] is called (or was since the last
    /// wait).
    pub(crate) async fn revocations_woken(&self) {
        self.revocations.notified().await;
    }

    /// Notes that the worker begins checking the pack at `now` (the lifecycle's clock),
    /// for as long as the returned guard lives: until its outcomes are saved. A request
    /// that asks for a check meanwhile ([`Signals::supersede_check`]) would otherwise be
    /// answered by a check that may have looked before the client published its record,
    /// and whose failure puts the next check a schedule slot away.
    pub fn checks_begin(&self, id: &PackId, now: i64) -> ChecksRunning<'_> {
        self.running_checks().insert(
            id.clone(),
            RunningCheck {
                since: now,
                superseded: false,
            },
        );
        ChecksRunning {
            signals: self,
            id: id.clone(),
        }
    }

    /// When the checks of the pack now running began, if some are.
    pub fn checks_running_since(&self, id: &PackId) -> Option<i64> {
        self.running_checks().get(id).map(|r| r.since)
    }

    /// Asks that the outcomes of the pack's running checks be dropped and the checks run
    /// again; returns whether checks were running. Called before the request's own write
    /// of the pack, which orders it against the worker's: whichever commits second sees
    /// the other (see `Input::Recheck`).
    pub fn supersede_check(&self, id: &PackId) -> bool {
        match self.running_checks().get_mut(id) {
            Some(running) => {
                running.superseded = true;
                true
            }
            None => false,
        }
    }

    /// When a `retry=true` on this node asked for the pack's checks, if that was within
    /// the last `window` seconds: a later retry inside that window is answered by those
    /// checks (retries coalesce with retries, so a storm of them costs one check per
    /// window), while a finished check the lifecycle ran on its own (the order's first,
    /// before the client published its record) does not count. Per node: with several
    /// nodes each coalesces the retries it serves.
    pub fn retry_asked_at(&self, id: &PackId, now: i64, window: i64) -> Option<i64> {
        let at = *self.retry_asks().get(id)?;
        (at <= now && now - at < window).then_some(at)
    }

    /// Notes that a `retry=true` asked for the pack's checks at `now` (nothing to note
    /// with a `window` of zero). Entries past their window are dropped as the map grows.
    pub fn retry_asked(&self, id: &PackId, now: i64, window: i64) {
        if window <= 0 {
            return;
        }
        let mut asks = self.retry_asks();
        if asks.len() >= RETRY_ASKS_KEPT {
            asks.retain(|_, at| *at <= now && now - *at < window);
        }
        asks.insert(id.clone(), now);
    }

    fn retry_asks(&self) -> std::sync::MutexGuard<'_, HashMap<PackId, i64>> {
        // Plain values, whole after every write.
        self.retries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn running_checks(&self) -> std::sync::MutexGuard<'_, HashMap<PackId, RunningCheck>> {
        // A map of plain values, whole after every write: a panic elsewhere cannot leave
        // it half-written.
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Has the worker meet `fault` at its next turn.
    #[cfg(test)]
    pub(crate) fn inject(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = Some(fault);
        self.wake();
    }

    #[cfg(test)]
    pub(crate) fn take_fault(&self) -> Option<Fault> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Checks of one pack running in the worker.
#[derive(Debug, Clone, Copy)]
struct RunningCheck {
    /// When they began (the lifecycle's clock).
    since: i64,
    /// A request asked for a check since they began.
    superseded: bool,
}

/// The worker's note that a pack's checks are running; removed when dropped.
#[derive(Debug)]
pub struct ChecksRunning<'a> {
    signals: &'a Signals,
    id: PackId,
}

impl ChecksRunning<'_> {
    /// Whether a request asked for a check after these began: their outcomes must not
    /// answer it.
    pub fn superseded(&self) -> bool {
        self.signals
            .running_checks()
            .get(&self.id)
            .is_some_and(|r| r.superseded)
    }
}

impl Drop for ChecksRunning<'_> {
    fn drop(&mut self) {
        self.signals.running_checks().remove(&self.id);
    }
}

mod progress;
mod worker;

pub use crate::model::transition::EMAIL_REASON;
pub use progress::ProgressWatch;
pub(crate) use worker::panic_message;
pub use worker::{LifecycleError, Worker};
