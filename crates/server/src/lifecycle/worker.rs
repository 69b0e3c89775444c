//! The worker: claims packs with due work from the store, runs their checks, and
//! moves them through `pending_validation -> pending_issuance -> pending_deployment ->
//! active`, then renews or expires them.
//!
//! Every step is written to the store before the next begins, so a crash leaves the
//! pack in a state the next claim resumes from; claims are leases, so a crashed
//! server's packs are taken over when the lease runs out.
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
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Packs claimed per round.
const BATCH: u64 = 64;

/// How long a failed issuance or deployment waits before it is tried again.
const ISSUANCE_RETRY_SECS: i64 = 300;

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
}

/// One server's lifecycle worker.
#[derive(Debug)]
pub struct Worker {
    store: Store,
    config: Arc<Config>,
    clock: SharedClock,
    signals: Arc<Signals>,
    validator: Validator,
    issuer: Issuer,
    hook: Option<HookCommand>,
    owner: String,
    checks: Arc<Semaphore>,
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
        Ok(Worker {
            store,
            checks: Arc::new(Semaphore::new(config.check_concurrency.max(1))),
            config,
            clock,
            signals,
            validator,
            issuer,
            hook,
            owner: format!("worker-{}", crate::secrets::mint_id()),
        })
    }

    /// Runs rounds until `cancel` fires; the round in hand is finished first.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        self.signals.set_workers_running(true);
        loop {
            let claimed = match self.round().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "lifecycle: claiming due work failed");
                    0
                }
            };
            if cancel.is_cancelled() {
                break;
            }
            if claimed as u64 == BATCH {
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.signals.woken() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        self.signals.set_workers_running(false);
    }

    /// Claims one batch of due packs and works on them concurrently (checks bounded by
    /// `check_concurrency`); returns how many were claimed.
    pub async fn round(self: &Arc<Self>) -> Result<usize, StoreError> {
        let claimed = self
            .store
            .claim_due(&Claim {
                owner: &self.owner,
                now: self.clock.now(),
                wall_now: SystemClock.now(),
                lease_secs: self.config.lease.as_secs().max(1) as i64,
                limit: BATCH,
            })
            .await?;
        let n = claimed.len();
        let mut tasks = JoinSet::new();
        for (zone, id) in claimed {
            let me = Arc::clone(self);
            tasks.spawn(async move {
                if let Err(e) = me.step(&zone, &id).await {
                    tracing::warn!(pack = %id.as_str(), error = %e, "lifecycle step failed");
                }
                if let Err(e) = me.store.release(&me.owner, &id).await {
                    tracing::warn!(pack = %id.as_str(), error = %e, "releasing a lease failed");
                }
                // Once per pack, after its last write: a waiting `retry=true` then sees
                // where the pack ended up, not an intermediate state.
                me.signals.progressed();
            });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "lifecycle task panicked");
            }
        }
        Ok(n)
    }

    async fn step(&self, zone: &ZoneId, id: &PackId) -> Result<(), StoreError> {
        let Some(pack) = self.store.pack(zone, id).await? else {
            return Ok(());
        };
        let now = self.clock.now();
        match pack.state {
            PackState::PendingValidation if now >= pack.validation_deadline => {
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
            PackState::PendingValidation => self.validate(pack).await,
            PackState::PendingIssuance | PackState::PendingDeployment => {
                self.issue_and_deploy(pack).await
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
                _ => self.renew(pack).await,
            },
            _ => Ok(()),
        }
    }

    /// Checks the due unverified hosts; when every host has validated and CAA allows the
    /// CA, moves on to issuance.
    async fn validate(&self, pack: Pack) -> Result<(), StoreError> {
        let now = self.clock.now();
        let due: Vec<usize> = pack
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.check.verified != Some(true) && h.check.next_due_at <= now)
            .map(|(i, _)| i)
            .collect();
        let pack = if due.is_empty() {
            // Claimed with every host validated: CAA is being retried.
            pack
        } else {
            let outcomes = self.check_hosts(&pack, &due, false).await;
            let deadline = pack.validation_deadline;
            let saved = self
                .save_with(pack, |p| {
                    p.state == PackState::PendingValidation
                        && apply_outcomes(p, &outcomes, now, Some(deadline))
                })
                .await?;
            match saved {
                Some(pack) => pack,
                None => return Ok(()),
            }
        };
        if pack.hosts.iter().any(|h| h.check.verified != Some(true)) {
            return Ok(());
        }
        if let Some(refusal) = self.caa_refusal(&pack).await {
            self.hold_for_caa(pack, refusal, now).await?;
            return Ok(());
        }
        let Some(pack) = self
            .save_with(pack, |p| {
                if p.state != PackState::PendingValidation
                    || p.hosts.iter().any(|h| h.check.verified != Some(true))
                {
                    return false;
                }
                p.state = PackState::PendingIssuance;
                p.errors.clear();
                // Due now: if this server dies here, the next claim resumes issuance.
                for h in &mut p.hosts {
                    h.check.next_due_at = now;
                }
                true
            })
            .await?
        else {
            return Ok(());
        };
        self.issue_and_deploy(pack).await
    }

    /// Renewal of an active pack: the hosts' records are checked again (the built-in CA
    /// re-validates like Cloudflare does for its renewals), then a new certificate is
    /// issued and deployed. The pack stays `active` while this fails; failures are
    /// recorded and retried on the DCV schedule until 24 hours before expiry.
    async fn renew(&self, pack: Pack) -> Result<(), StoreError> {
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
        let outcomes = self.check_hosts(&pack, &all, true).await;
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
        let refusal = if failed.is_empty() {
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
        if failed.is_empty() && refusal.is_none() {
            self.issue_and_deploy(pack).await?;
        }
        Ok(())
    }

    /// Obtains a certificate for the pack's hosts from the issuer, records it
    /// (`pending_deployment`), writes it to the deploy directory and marks the pack
    /// `active`. The private key exists only in memory and in
    /// `<deploy_dir>/<pack>/privkey.pem`: if deployment fails, the next try issues a fresh
    /// certificate rather than storing the key.
    pub(crate) async fn issue_and_deploy(&self, pack: Pack) -> Result<(), StoreError> {
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
                p.state = PackState::PendingDeployment;
                p.certificate = Some(cert.clone());
                true
            })
            .await?
        else {
            return Ok(());
        };
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

    /// Records a failed issuance or deployment and makes the pack due again later. A
    /// failed renewal's pack (still `active`) keeps its current certificate.
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
            for h in &mut p.hosts {
                h.check.next_due_at = now + ISSUANCE_RETRY_SECS;
            }
            true
        })
        .await?;
        Ok(())
    }

    /// Keeps a validated pack in `pending_validation` with the CAA refusal as its error,
    /// and checks CAA again at the hosts' next schedule slot.
    async fn hold_for_caa(&self, pack: Pack, refusal: String, now: i64) -> Result<(), StoreError> {
        self.save_with(pack, |p| {
            if p.state != PackState::PendingValidation {
                return false;
            }
            push_error(p, refusal.clone());
            for h in &mut p.hosts {
                h.check.next_due_at = HostCheck::next_due_after(h.check.attempts, now);
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
        for host in &pack.hosts {
            let validator = self.validator.clone();
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
    ) -> Vec<HostOutcome> {
        let mut checks = JoinSet::new();
        for &index in indexes {
            let Some(host) = pack.hosts.get(index) else {
                continue;
            };
            let record = host.record.clone();
            let validator = self.validator.clone();
            let bound = Arc::clone(&self.checks);
            checks.spawn(async move {
                let _permit = bound.acquire_owned().await.ok();
                let outcome = match &record {
                    DcvRecord::Txt { name, value } => validator.check_txt(name, value).await,
                    DcvRecord::Http { url, body } => validator.check_http(url, body).await,
                    DcvRecord::Cname { name, target } => validator.check_cname(name, target).await,
                    DcvRecord::Email { .. } if renewing => CheckOutcome::Passed,
                    DcvRecord::Email { .. } => CheckOutcome::Failed(EMAIL_REASON.into()),
                };
                HostOutcome {
                    index,
                    record,
                    outcome,
                }
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = checks.join_next().await {
            match joined {
                Ok(o) => out.push(o),
                Err(e) => tracing::error!(error = %e, "DCV check task failed"),
            }
        }
        out
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
            match self.store.update_pack(&mut next).await {
                Ok(()) => return Ok(Some(next)),
                Err(StoreError::Conflict) if attempt == 0 => {
                    match self.store.pack(&current.zone_id, &current.id).await? {
                        Some(fresh) => current = fresh,
                        None => return Ok(None),
                    }
                }
                Err(StoreError::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        // A second conflict: the lease stays until released and the pack is still due,
        // so the next round checks again.
        Ok(None)
    }
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
    let deadline = pack.validation_deadline;
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
