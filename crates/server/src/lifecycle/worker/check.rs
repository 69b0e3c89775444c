//! The check step: a pending pack's due hosts (and CAA once every host validated), and
//! an active pack's renewal checks. What the outcomes do to the pack is the model's
//! [`transition`](crate::model::transition) of an [`Input::Checked`].

use super::Worker;
use super::lease::Hold;
use crate::dcv::CheckOutcome;
use crate::metrics::CheckOutcome as MetricOutcome;
use crate::model::{
    CaaCheck, CheckResult, DcvRecord, Event, HostOutcome, Input, Pack, PackState, transition,
};
use crate::store::StoreError;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::task::JoinSet;

impl Worker {
    /// Checks the due unverified hosts; when every host has validated and CAA allows the
    /// CA, moves on to issuance. The outcomes and the move to `pending_issuance` (or the
    /// CAA refusal) are one write. Returns whether the pack is due again at once (its
    /// outcomes were dropped for a request that came while they were being found).
    pub(super) async fn validate(&self, pack: Pack, hold: Hold) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let due: Vec<usize> = pack
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.check.verified != Some(true) && h.check.next_due_at <= now)
            .map(|(i, _)| i)
            .collect();
        if due.is_empty() && !pack.all_verified() {
            // Nothing due yet (claimed for another server's lapsed lease, say).
            return Ok(false);
        }
        // Requests that ask for a check while this one runs (`retry=true`) find it here.
        let running = self.signals.checks_begin(&pack.id, now);
        let checking = Checking::start(&self.checking);
        // With `due` empty the pack was claimed with every host validated: CAA is being
        // retried.
        let outcomes = if due.is_empty() {
            Vec::new()
        } else {
            self.check_hosts(&pack, &due, false, hold).await
        };
        // The outcomes of the checks that ran are written whatever happens, but nothing
        // more starts once the lease may have run out.
        let held = self.still_held(hold, &pack.id);
        // CAA is asked only when these outcomes complete the validation of the pack as
        // read (the same rule, applied to it).
        let preview = Input::Checked {
            outcomes: outcomes.clone(),
            caa: CaaCheck::NotChecked,
        };
        let completes = match transition(&pack, &preview, &self.rules, now) {
            Ok(Some(t)) => t.pack.awaits_caa(),
            _ => outcomes.is_empty() && pack.awaits_caa(),
        };
        let caa = if held && completes {
            self.caa_check(&pack).await
        } else {
            CaaCheck::NotChecked
        };
        drop(checking);
        let asked = CaaCheck::NotChecked != caa;
        let mut dropped = false;
        let saved = self
            .apply(pack, now, |_| {
                // A request asked for a check after this one began: a failure found
                // before it would answer that request with what was there before (the
                // client may have published its record since, or changed its CAA). Such
                // failures are dropped, their hosts stay due and are checked again; what
                // passed is kept (auto-validation, a record found a moment early).
                if running.superseded() {
                    let (input, lost) = superseded_input(&outcomes, &caa);
                    dropped = lost;
                    input
                } else {
                    Some(Input::Checked {
                        outcomes: outcomes.clone(),
                        caa: caa.clone(),
                    })
                }
            })
            .await?;
        drop(running);
        let Some((pack, _)) = saved else {
            return Ok(dropped);
        };
        if dropped {
            // Some hosts are due again at once.
            return Ok(true);
        }
        if !held {
            return Ok(false);
        }
        match pack.state {
            PackState::PendingIssuance => self.issue_and_deploy_held(pack, hold).await?,
            // Validated by a change made while the checks ran, CAA not asked: ask it now,
            // as a write of its own.
            PackState::PendingValidation if !asked && pack.awaits_caa() => {
                if !self.still_held(hold, &pack.id) {
                    return Ok(false);
                }
                let caa = self.caa_check(&pack).await;
                let saved = self
                    .apply(pack, now, |_| {
                        Some(Input::Checked {
                            outcomes: Vec::new(),
                            caa: caa.clone(),
                        })
                    })
                    .await?;
                if let Some((pack, _)) = saved
                    && pack.state == PackState::PendingIssuance
                {
                    self.issue_and_deploy_held(pack, hold).await?;
                }
            }
            _ => {}
        }
        Ok(false)
    }

    /// Renewal of an active pack inside its renewal window: the hosts' records are
    /// checked again (the built-in CA re-validates like Cloudflare does for its
    /// renewals), then a new certificate is issued and deployed. The pack stays `active`
    /// while this fails; failures are recorded and retried on the DCV schedule until 24
    /// hours before expiry (the clock's rules, [`Input::Tick`]).
    pub(super) async fn renew(&self, pack: Pack, hold: Hold) -> Result<(), StoreError> {
        if pack.certificate.is_none() {
            return Ok(());
        }
        let now = self.clock.now();
        let all: Vec<usize> = (0..pack.hosts.len()).collect();
        let outcomes = self.check_hosts(&pack, &all, true, hold).await;
        let held = self.still_held(hold, &pack.id);
        let passed = outcomes.iter().all(|o| o.result.passed());
        let caa = if passed && held {
            self.caa_check(&pack).await
        } else {
            CaaCheck::NotChecked
        };
        let saved = self
            .apply(pack, now, |_| {
                Some(Input::Checked {
                    outcomes: outcomes.clone(),
                    caa: caa.clone(),
                })
            })
            .await?;
        if let Some((pack, events)) = saved
            && held
            && events.contains(&Event::Revalidated)
        {
            self.issue_and_deploy_held(pack, hold).await?;
        }
        Ok(())
    }

    /// Whether CAA allows the pack's CA for every host; else the first refusal, as an
    /// error message.
    async fn caa_check(&self, pack: &Pack) -> CaaCheck {
        // The CA's configured issuer domains, and (RFC 8657) its ACME account and the
        // pack's method.
        let request = Arc::new(
            self.issuer_for(pack.ca)
                .caa_request(pack.ca, pack.method)
                .await,
        );
        let identity = request.identities.join(" / ");
        // An injected CAA refusal (test controls), worded as a real one.
        let hosts = pack.hosts.iter().map(|h| h.hostname.as_str());
        if let Some(fault) = self.signals.controls().and_then(|c| {
            c.step_fault(
                crate::controls::FaultKind::Caa,
                &pack.zone_id,
                pack.id.as_str(),
                hosts,
            )
        }) {
            let host = pack.hosts.first().map_or("", |h| h.hostname.as_str());
            self.signals
                .metrics()
                .caa_check(MetricOutcome::Failed, None);
            return CaaCheck::Refused(format!(
                "CAA forbids {identity} for {host}: {}",
                fault.step_reason()
            ));
        }
        let started = std::time::Instant::now();
        let mut checks = JoinSet::new();
        let shared = self.validator.sharing_answers();
        for host in &pack.hosts {
            let validator = shared.clone();
            let checks_bound = Arc::clone(&self.checks);
            let name = host.hostname.as_str().to_owned();
            let request = Arc::clone(&request);
            checks.spawn(async move {
                let _permit = checks_bound.acquire_owned().await.ok();
                let outcome = validator.check_caa_for(&name, &request).await;
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
        let outcome = if refusals.is_empty() {
            MetricOutcome::Passed
        } else {
            MetricOutcome::Failed
        };
        self.signals
            .metrics()
            .caa_check(outcome, Some(started.elapsed()));
        match refusals.into_iter().next() {
            Some(refusal) => CaaCheck::Refused(refusal),
            None => CaaCheck::Allowed,
        }
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
            // The test controls' faults and auto-validation stand in for the lookup; the
            // result is then recorded like a real one.
            let overridden = self
                .signals
                .controls()
                .and_then(|c| c.dcv_override(&pack.zone_id, host.hostname.as_str(), &record));
            let signals = Arc::clone(&self.signals);
            checks.spawn(async move {
                let method = record.method();
                if let Some(overridden) = overridden {
                    let result = overridden.result();
                    signals
                        .metrics()
                        .dcv_check(method, check_outcome(&result), None);
                    return Some(HostOutcome {
                        index,
                        record,
                        result,
                    });
                }
                let _permit = bound.acquire_owned().await.ok();
                // The wait for a permit can be long: no check once the lease may be gone.
                if !leases.holds(hold) {
                    return None;
                }
                let started = std::time::Instant::now();
                let outcome = match &record {
                    DcvRecord::Txt { name, value } => validator.check_txt(name, value).await,
                    DcvRecord::Http { url, body } => validator.check_http(url, body).await,
                    DcvRecord::Cname { name, target } => validator.check_cname(name, target).await,
                    DcvRecord::Email { .. } if renewing => CheckOutcome::Passed,
                    DcvRecord::Email { .. } => {
                        signals
                            .metrics()
                            .dcv_check(method, MetricOutcome::AwaitingApproval, None);
                        return Some(HostOutcome {
                            index,
                            record,
                            result: CheckResult::AwaitingApproval,
                        });
                    }
                };
                let result = match outcome {
                    CheckOutcome::Passed => CheckResult::Passed,
                    CheckOutcome::Failed(reason) => CheckResult::Failed(reason),
                };
                signals.metrics().dcv_check(
                    method,
                    check_outcome(&result),
                    Some(started.elapsed()),
                );
                Some(HostOutcome {
                    index,
                    record,
                    result,
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
}

/// A check's result as the metrics count it.
fn check_outcome(result: &CheckResult) -> MetricOutcome {
    match result {
        CheckResult::AwaitingApproval => MetricOutcome::AwaitingApproval,
        r if r.passed() => MetricOutcome::Passed,
        _ => MetricOutcome::Failed,
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

/// What a superseded check still says: the hosts it found validated, and CAA when it
/// allowed the CA (`None` when nothing is left); and whether anything was dropped.
fn superseded_input(outcomes: &[HostOutcome], caa: &CaaCheck) -> (Option<Input>, bool) {
    let kept: Vec<HostOutcome> = outcomes
        .iter()
        .filter(|o| o.result.passed())
        .cloned()
        .collect();
    let kept_caa = match caa {
        CaaCheck::Allowed => CaaCheck::Allowed,
        _ => CaaCheck::NotChecked,
    };
    let dropped = kept.len() < outcomes.len() || kept_caa != *caa;
    let input = (!kept.is_empty() || kept_caa == CaaCheck::Allowed).then_some(Input::Checked {
        outcomes: kept,
        caa: kept_caa,
    });
    (input, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CheckResult;

    fn outcome(index: usize, result: CheckResult) -> HostOutcome {
        HostOutcome {
            index,
            record: DcvRecord::Txt {
                name: "_acme-challenge.example.com".into(),
                value: "v".into(),
            },
            result,
        }
    }

    #[test]
    fn a_superseded_check_keeps_what_passed_and_drops_what_failed() {
        let passed = outcome(0, CheckResult::Passed);
        let failed = outcome(1, CheckResult::Failed("no TXT record".into()));
        // Everything passed and CAA allowed: all of it stands.
        let (input, dropped) = superseded_input(std::slice::from_ref(&passed), &CaaCheck::Allowed);
        assert_eq!(
            input,
            Some(Input::Checked {
                outcomes: vec![passed.clone()],
                caa: CaaCheck::Allowed
            })
        );
        assert!(!dropped);
        // A failure is dropped (its host is checked again); the pass is kept.
        let (input, dropped) =
            superseded_input(&[passed.clone(), failed.clone()], &CaaCheck::NotChecked);
        assert_eq!(
            input,
            Some(Input::Checked {
                outcomes: vec![passed.clone()],
                caa: CaaCheck::NotChecked
            })
        );
        assert!(dropped);
        // Nothing but failures: nothing to write.
        assert_eq!(
            superseded_input(&[failed], &CaaCheck::NotChecked),
            (None, true)
        );
        // A CAA refusal may be stale too: dropped, the validated hosts kept.
        let (input, dropped) = superseded_input(
            std::slice::from_ref(&passed),
            &CaaCheck::Refused("no".into()),
        );
        assert_eq!(
            input,
            Some(Input::Checked {
                outcomes: vec![passed],
                caa: CaaCheck::NotChecked
            })
        );
        assert!(dropped);
    }
}
