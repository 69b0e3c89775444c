//! Every rule that moves a pack through its lifecycle, as one pure function:
//! [`transition`]`(pack, input, rules, now) -> (pack, events)`.
//!
//! The worker, the HTTP handlers and the admin commands decide nothing about a pack's
//! state themselves: they gather an [`Input`] (check outcomes, an issuer's answer, a
//! deployment's outcome, a client's PATCH, an operator's approval, the clock) and apply
//! it here. Applying is pure (no I/O; the time is passed in; the one thing not derived
//! from the arguments is fresh DCV tokens, which are random by design), so the same
//! input can be applied again to the pack as stored when an optimistic write found it
//! changed (`store::apply_transition`), and every rule is a unit test below.
//!
//! The answer is one of:
//! - `Ok(Some(Transition))`: the pack to save and the [`Event`]s it reports (what a
//!   webhook or a metric will tell), or that it is to be deleted;
//! - `Ok(None)`: the input no longer applies (the pack moved on meanwhile: a check of a
//!   record a PATCH replaced, an issuance for a pack that timed out): nothing to write;
//! - `Err(Refusal)`: a client's or operator's request that the pack's state forbids; the
//!   message is made where it is shown (the HTTP error, the CLI's).

use super::pack::{DcvMethod, DcvRecord, HostCheck, IssuedCertificate, Pack, PackState};

/// How long a failed issuance or deployment waits before it is tried again (unless the
/// CA asks for longer, see [`IssueFailure::retry_after`]).
pub const ISSUANCE_RETRY_SECS: i64 = 300;

/// How many pack errors are kept (newest last).
pub const MAX_ERRORS: usize = 5;

/// The reason shown for e-mail validation, which no machine can check: an operator
/// stands in for the recipient clicking the link.
pub const EMAIL_REASON: &str =
    "e-mail validation: waiting for approval (an operator runs `zonecert pack approve ID`)";

/// The note a host passed by the test controls' auto-validation keeps (as its check's
/// reason, on a validated host), so the verification view says it was not looked up.
pub const AUTO_VALIDATED: &str = "validated automatically by zonecert's test controls (auto-validation): no record was looked up";

/// The settings the rules depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// How long a validated pack (or a renewal's new certificate) may spend in issuance
    /// and deployment before it times out, in seconds.
    pub issuance_timeout_secs: i64,
}

mod event;
mod input;

pub use event::Event;
pub use input::{CaaCheck, CheckResult, HostOutcome, Input, IssueFailure};

/// Why a request cannot change the pack in its state. The caller words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The method of a pack past validation cannot change.
    MethodFixed {
        /// The pack's state.
        state: PackState,
        /// Its method.
        method: DcvMethod,
    },
    /// Only a timed-out pack can be restarted.
    NotTimedOut {
        /// The pack's state.
        state: PackState,
    },
    /// Only a pack pending validation can be approved.
    NotPendingValidation {
        /// The pack's state.
        state: PackState,
    },
}

/// The outcome of an input that applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The pack as it is to be saved (its `version` still the one it was derived from).
    pub pack: Pack,
    /// What happened.
    pub events: Vec<Event>,
    /// The pack is to be deleted rather than saved.
    pub delete: bool,
}

/// Applies `input` to `pack` at `now` (Unix seconds). See the module documentation for
/// the three kinds of answer.
pub fn transition(
    pack: &Pack,
    input: &Input,
    rules: &Rules,
    now: i64,
) -> Result<Option<Transition>, Refusal> {
    let mut next = pack.clone();
    let mut events = Vec::new();
    // Whether the change is one a client sees as a modification (`modified_on`); asking
    // for a check is not.
    let mut touches = true;
    let applies = match input {
        Input::Tick => tick(&mut next, rules, now, &mut events),
        Input::Checked { outcomes, caa } => match next.state {
            PackState::PendingValidation => {
                validation_checked(&mut next, outcomes, caa, rules, now, &mut events)
            }
            PackState::Active => renewal_checked(&mut next, outcomes, caa, now, &mut events),
            _ => false,
        },
        Input::OrderBegun {
            order_ref,
            records,
            tokens_expire,
        } => order_begun(
            &mut next,
            order_ref,
            records,
            *tokens_expire,
            now,
            &mut events,
        ),
        Input::OrderLost {
            started_in,
            reason,
            host,
            refused_validation,
        } => {
            let applies = next.state == *started_in
                && order_lost(&mut next, reason, host.as_deref(), *refused_validation, now);
            if applies {
                events.push(Event::IssuanceFailed {
                    reason: reason.clone(),
                });
            }
            applies
        }
        Input::Issued {
            started_in,
            certificate,
        } => issued(&mut next, *started_in, certificate, rules, now, &mut events),
        Input::IssuanceFailed {
            started_in,
            failure,
        } => {
            let reason = failure.message();
            let applies = next.state == *started_in
                && retry_later(&mut next, reason.clone(), failure.retry_after(), now);
            if applies {
                events.push(Event::IssuanceFailed { reason });
            }
            applies
        }
        Input::RenewalAdvised {
            certificate,
            renew_at,
            ask_again_at,
        } => {
            touches = false;
            renewal_advised(&mut next, certificate, *renew_at, *ask_again_at, now)
        }
        Input::Deployed => deployed(&mut next, &mut events),
        Input::DeploymentFailed(error) => {
            let reason = format!("deployment failed: {error}");
            let applies = next.state == PackState::PendingDeployment
                && retry_later(&mut next, reason.clone(), None, now);
            if applies {
                events.push(Event::DeploymentFailed { reason });
            }
            applies
        }
        Input::EditVerification {
            method,
            orders_remotely,
            dcv_target_suffix,
        } => {
            let same = *method == next.method;
            touches = !(same && next.state == PackState::PendingValidation);
            let applies =
                edit_verification(&mut next, *method, dcv_target_suffix, now, &mut events)?;
            let new_records = pack.state.is_timed_out()
                || (pack.state == PackState::PendingValidation && *method != pack.method);
            if applies && *orders_remotely && new_records {
                await_new_order(&mut next);
            }
            applies
        }
        Input::EditPack {
            cloudflare_branding,
            orders_remotely,
            dcv_target_suffix,
        } => {
            let applies = edit_pack(
                &mut next,
                *cloudflare_branding,
                dcv_target_suffix,
                now,
                &mut events,
            )?;
            if applies && *orders_remotely && pack.state.is_timed_out() {
                await_new_order(&mut next);
            }
            applies
        }
        Input::Recheck {
            checked_since,
            budget,
            supersede_running,
        } => {
            touches = false;
            let pending = next.state == PackState::PendingValidation
                && !next.brand_check
                && !next.all_verified();
            let (mut made, mut running) = (0, 0);
            if pending {
                // Due already, so being checked: asked for anew (nothing to change in
                // them; the write is what counts).
                if *supersede_running {
                    running = next
                        .hosts
                        .iter()
                        .filter(|h| h.check.verified != Some(true) && h.check.next_due_at <= now)
                        .count();
                }
                made = next.recheck_some(now, *checked_since, *budget);
            }
            if made + running > 0 {
                events.push(Event::RecheckRequested {
                    hosts: made,
                    running,
                });
            }
            made + running > 0
        }
        Input::Approve => approve(&mut next, now, &mut events)?,
        Input::Delete => {
            return Ok(Some(Transition {
                pack: next,
                events: vec![Event::Deleted],
                delete: true,
            }));
        }
    };
    if !applies {
        return Ok(None);
    }
    if touches {
        next.updated_at = now;
    }
    Ok(Some(Transition {
        pack: next,
        events,
        delete: false,
    }))
}

/// The clock's rules: a stage past its deadline times out, a certificate past
/// `not_after` expires, and an active pack outside its renewal window is rescheduled.
fn tick(pack: &mut Pack, rules: &Rules, now: i64, events: &mut Vec<Event>) -> bool {
    let timed_out = match pack.state {
        PackState::Initializing => PackState::InitializingTimedOut,
        PackState::PendingValidation => PackState::ValidationTimedOut,
        PackState::PendingIssuance => PackState::IssuanceTimedOut,
        PackState::PendingDeployment => PackState::DeploymentTimedOut,
        PackState::Active => return active_tick(pack, now, events),
        _ => return false,
    };
    if now < pack.stage_deadline {
        return false;
    }
    if let Some(stage) = match pack.state {
        PackState::PendingIssuance => Some("issuance"),
        PackState::PendingDeployment => Some("deployment"),
        _ => None,
    } {
        push_error(
            pack,
            format!(
                "{stage} timed out: not done within {} (failures were retried every {} \
                 minutes); PATCH the pack to restart it with fresh tokens",
                human_duration(rules.issuance_timeout_secs),
                ISSUANCE_RETRY_SECS / 60
            ),
        );
    }
    pack.state = timed_out;
    events.push(Event::TimedOut { state: timed_out });
    true
}

/// An active pack: expired past `not_after`; before its renewal window, due when it
/// opens (claimed early, by a `retry=true` say); past the last day of renewal, left to
/// expire with the reason shown. Inside the window the clock changes nothing: the
/// records are checked again (an [`Input::Checked`]).
fn active_tick(pack: &mut Pack, now: i64, events: &mut Vec<Event>) -> bool {
    let (Some(starts), Some(gives_up), Some(not_after)) = (
        pack.renewal_starts_at(),
        pack.renewal_gives_up_at(),
        pack.certificate.as_ref().map(|c| c.not_after),
    ) else {
        return false;
    };
    if now >= not_after {
        pack.state = PackState::Expired;
        events.push(Event::Expired);
    } else if now < starts {
        pack.due_at(starts);
    } else if now >= gives_up {
        push_error(
            pack,
            "renewal: gave up 24 hours before expiry; the certificate will expire".into(),
        );
        pack.due_at(not_after);
        events.push(Event::RenewalAbandoned);
    } else {
        return false;
    }
    true
}

/// Outcomes of a pending pack's checks; when every host validated, CAA decides between
/// issuance and a wait for the next slot of the schedule. When CAA was not asked, the
/// hosts are due at once, so whoever looks next asks it.
fn validation_checked(
    pack: &mut Pack,
    outcomes: &[HostOutcome],
    caa: &CaaCheck,
    rules: &Rules,
    now: i64,
    events: &mut Vec<Event>,
) -> bool {
    let deadline = pack.stage_deadline;
    let matched = apply_outcomes(pack, outcomes, now, Some(deadline), events);
    if !outcomes.is_empty() && !matched {
        // Every checked record was replaced meanwhile: nothing to record.
        return false;
    }
    if !pack.all_verified() {
        // Outcomes written; with none (CAA alone) nothing changed.
        return matched;
    }
    match caa {
        CaaCheck::Allowed => {
            pack.state = PackState::PendingIssuance;
            pack.stage_deadline = now.saturating_add(rules.issuance_timeout_secs);
            pack.errors.clear();
            // Due at once: if this server dies before issuing, the next claim resumes.
            pack.due_at(now);
            events.push(Event::Validated);
        }
        CaaCheck::Refused(reason) => {
            // Checked again at the hosts' next slot of the schedule.
            push_error(pack, reason.clone());
            for h in &mut pack.hosts {
                h.check.next_due_at = HostCheck::next_due_after(h.check.attempts, now);
            }
            events.push(Event::CaaRefused {
                reason: reason.clone(),
            });
        }
        CaaCheck::NotChecked if matched => pack.due_at(now),
        CaaCheck::NotChecked => return false,
    }
    true
}

/// Outcomes of an active pack's renewal checks: failures are pack errors (the pack stays
/// active, checked again on the schedule); success with CAA allowed is
/// [`Event::Revalidated`], the go-ahead for the renewal's issuance.
fn renewal_checked(
    pack: &mut Pack,
    outcomes: &[HostOutcome],
    caa: &CaaCheck,
    now: i64,
    events: &mut Vec<Event>,
) -> bool {
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            let reason = match &o.result {
                CheckResult::Passed | CheckResult::PassedAutomatically => return None,
                CheckResult::Failed(reason) => reason.as_str(),
                CheckResult::AwaitingApproval => EMAIL_REASON,
            };
            pack.hosts
                .get(o.index)
                .map(|h| format!("{}: {reason}", h.hostname))
        })
        .collect();
    apply_outcomes(pack, outcomes, now, None, &mut Vec::new());
    let failure = if !failed.is_empty() {
        Some(format!("renewal: DCV failed: {}", failed.join("; ")))
    } else {
        match caa {
            CaaCheck::Refused(reason) => Some(format!("renewal: {reason}")),
            CaaCheck::Allowed => {
                events.push(Event::Revalidated);
                None
            }
            CaaCheck::NotChecked => None,
        }
    };
    if let Some(reason) = failure {
        push_error(pack, reason.clone());
        events.push(Event::RenewalFailed { reason });
    }
    true
}

/// An `initializing` pack gets its CA's records and waits for validation, until the
/// tokens expire at the latest.
fn order_begun(
    pack: &mut Pack,
    order_ref: &str,
    records: &[DcvRecord],
    tokens_expire: Option<i64>,
    now: i64,
    events: &mut Vec<Event>,
) -> bool {
    // One record per host, or the issuer answered for another order. An active pack
    // orders its renewal (once per renewal: while its order is open it has a reference).
    let renewal = pack.state == PackState::Active && pack.order_ref.is_none();
    if !(pack.state == PackState::Initializing || renewal) || records.len() != pack.hosts.len() {
        return false;
    }
    for (host, record) in pack.hosts.iter_mut().zip(records) {
        host.record = record.clone();
        host.check = HostCheck {
            attempts: host.check.attempts,
            ..HostCheck::fresh(now)
        };
    }
    pack.order_ref = Some(order_ref.to_owned());
    if !renewal {
        if let Some(expire) = tokens_expire {
            pack.stage_deadline = pack.stage_deadline.min(expire);
        }
        pack.state = PackState::PendingValidation;
        pack.errors.clear();
    }
    events.push(Event::OrderBegun);
    true
}

/// See [`Input::OrderLost`].
fn order_lost(
    pack: &mut Pack,
    reason: &str,
    host: Option<&str>,
    refused_validation: bool,
    now: i64,
) -> bool {
    push_error(pack, reason.to_owned());
    pack.order_ref = None;
    if pack.state != PackState::Active {
        pack.state = PackState::Initializing;
        pack.stage_deadline = now.saturating_add(pack.ca.token_lifetime_secs());
    }
    for h in &mut pack.hosts {
        let named = host.is_some_and(|n| n.eq_ignore_ascii_case(h.hostname.as_str()));
        if named || host.is_none() {
            h.check.verified = Some(false);
            h.check.reason = Some(reason.to_owned());
        }
        h.check.next_due_at = if refused_validation {
            HostCheck::next_due_after(h.check.attempts, now)
        } else {
            now
        };
    }
    true
}

/// A pack of a CA that orders remotely, switched to `method` or restarted: its records
/// come from a new order, so it waits in `initializing` (the minted ones are
/// placeholders the verification view does not show).
fn await_new_order(pack: &mut Pack) {
    pack.state = PackState::Initializing;
    pack.order_ref = None;
}

/// A certificate signed for the pack: stored, to be deployed. A renewal's deployment
/// gets a deadline of its own.
fn issued(
    pack: &mut Pack,
    started_in: PackState,
    certificate: &IssuedCertificate,
    rules: &Rules,
    now: i64,
    events: &mut Vec<Event>,
) -> bool {
    let renewal = match started_in {
        PackState::PendingIssuance | PackState::PendingDeployment => false,
        PackState::Active => true,
        _ => return false,
    };
    if pack.state != started_in {
        return false;
    }
    if renewal {
        pack.stage_deadline = now.saturating_add(rules.issuance_timeout_secs);
    }
    pack.state = PackState::PendingDeployment;
    pack.certificate = Some(certificate.clone());
    events.push(Event::Issued {
        serial: certificate.id.clone(),
        renewal,
    });
    true
}

/// Deployed: active, errors cleared, due again when the renewal window opens.
fn deployed(pack: &mut Pack, events: &mut Vec<Event>) -> bool {
    if pack.state != PackState::PendingDeployment {
        return false;
    }
    pack.state = PackState::Active;
    pack.errors.clear();
    // The order is done: a renewal places a new one.
    pack.order_ref = None;
    if let Some(starts) = pack.renewal_starts_at() {
        pack.due_at(starts);
    }
    events.push(Event::Active {
        serial: pack
            .certificate
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default(),
    });
    true
}

/// The CA's renewal advice for the pack's current certificate: its time replaces the
/// renewal window's start; the pack is due when renewal starts or when the CA is to be
/// asked again, whichever comes first (at once when renewal starts now).
fn renewal_advised(
    pack: &mut Pack,
    certificate: &str,
    renew_at: i64,
    ask_again_at: i64,
    now: i64,
) -> bool {
    if pack.state != PackState::Active || pack.order_ref.is_some() {
        return false;
    }
    let Some(cert) = pack.certificate.as_mut() else {
        return false;
    };
    if cert.id != certificate {
        return false;
    }
    cert.renew_at = Some(renew_at);
    pack.due_at(renew_at.min(ask_again_at).max(now));
    true
}

/// Records a failed issuance or deployment and makes the pack due again later (when the
/// CA asked, not before it said), at the stage's deadline at the latest (where it times
/// out). A failed renewal's pack (still `active`) keeps its current certificate.
fn retry_later(pack: &mut Pack, error: String, retry_after: Option<i64>, now: i64) -> bool {
    push_error(pack, error);
    let mut retry_at = now.saturating_add(ISSUANCE_RETRY_SECS);
    if let Some(asked) = retry_after {
        retry_at = retry_at.max(asked);
    }
    if pack.state != PackState::Active {
        retry_at = retry_at.min(pack.stage_deadline);
    }
    pack.due_at(retry_at);
    true
}

/// The verification PATCH: the same method rechecks a pending pack now; another one
/// switches it to fresh records; a timed-out pack restarts with the method asked for. A
/// settled pack keeps its method.
fn edit_verification(
    pack: &mut Pack,
    method: DcvMethod,
    suffix: &str,
    now: i64,
    events: &mut Vec<Event>,
) -> Result<bool, Refusal> {
    match pack.state {
        PackState::PendingValidation if method == pack.method => {
            let hosts = pack
                .hosts
                .iter()
                .filter(|h| h.check.verified != Some(true))
                .count();
            pack.recheck_now(now);
            events.push(Event::RecheckRequested { hosts, running: 0 });
        }
        PackState::PendingValidation => {
            pack.switch_method(method, suffix, now);
            events.push(Event::MethodChanged { method });
        }
        state if state.is_timed_out() => {
            if method != pack.method {
                events.push(Event::MethodChanged { method });
            }
            pack.method = method;
            pack.restart_validation(suffix, now);
            events.push(Event::Restarted);
        }
        // Settled (a worker may have just written it): nothing to change.
        _ if method == pack.method => return Ok(false),
        state => {
            return Err(Refusal::MethodFixed {
                state,
                method: pack.method,
            });
        }
    }
    Ok(true)
}

/// The pack PATCH: branding as asked; a timed-out pack restarts with fresh tokens.
fn edit_pack(
    pack: &mut Pack,
    branding: Option<bool>,
    suffix: &str,
    now: i64,
    events: &mut Vec<Event>,
) -> Result<bool, Refusal> {
    if let Some(b) = branding {
        pack.cloudflare_branding = b;
        events.push(Event::BrandingChanged {
            cloudflare_branding: b,
        });
    }
    if pack.state.is_timed_out() {
        pack.restart_validation(suffix, now);
        events.push(Event::Restarted);
    } else if branding.is_none() {
        return Err(Refusal::NotTimedOut { state: pack.state });
    }
    Ok(true)
}

/// An operator's approval: the brand check lifted and, for e-mail validation (which no
/// machine can check), every host validated, as if the recipient had clicked the link.
/// The workers take the pack on at once.
fn approve(pack: &mut Pack, now: i64, events: &mut Vec<Event>) -> Result<bool, Refusal> {
    if pack.state != PackState::PendingValidation {
        return Err(Refusal::NotPendingValidation { state: pack.state });
    }
    pack.brand_check = false;
    for host in &mut pack.hosts {
        if host.record.method() == DcvMethod::Email && host.check.verified != Some(true) {
            host.check.verified = Some(true);
            host.check.reason = None;
            host.check.last_checked_at = Some(now);
        }
        host.check.next_due_at = now;
    }
    events.push(Event::Approved);
    Ok(true)
}

/// Writes check outcomes into the hosts whose record is still the one checked.
/// `verified_due` is when a validated host is next looked at (`None`: on the schedule
/// like a failed one). Returns whether any host matched.
fn apply_outcomes(
    pack: &mut Pack,
    outcomes: &[HostOutcome],
    now: i64,
    verified_due: Option<i64>,
    events: &mut Vec<Event>,
) -> bool {
    let deadline = pack.stage_deadline;
    let mut any = false;
    let mut failed = Vec::new();
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
        match &o.result {
            CheckResult::Passed | CheckResult::PassedAutomatically => {
                host.check.verified = Some(true);
                // A pass has no reason; an automatic one keeps a note saying so.
                host.check.reason = (o.result == CheckResult::PassedAutomatically)
                    .then(|| AUTO_VALIDATED.to_owned());
                host.check.next_due_at = verified_due.unwrap_or(on_schedule);
                events.push(Event::HostValidated {
                    host: host.hostname.clone(),
                });
            }
            CheckResult::Failed(reason) => {
                host.check.verified = Some(false);
                host.check.reason = Some(reason.clone());
                host.check.next_due_at = on_schedule;
                failed.push(format!("{}: {reason}", host.hostname));
            }
            CheckResult::AwaitingApproval => {
                host.check.verified = Some(false);
                host.check.reason = Some(EMAIL_REASON.into());
                // Nothing changes until an operator approves: no point in polling.
                host.check.next_due_at = deadline;
            }
        }
    }
    if !failed.is_empty() {
        events.push(Event::ValidationFailed { reasons: failed });
    }
    any
}

/// Adds a pack error unless it is already the newest one (a retried failure is shown
/// once), keeping the last [`MAX_ERRORS`].
fn push_error(pack: &mut Pack, error: String) {
    if pack.errors.last() != Some(&error) {
        pack.errors.push(error);
    }
    let excess = pack.errors.len().saturating_sub(MAX_ERRORS);
    pack.errors.drain(..excess);
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

#[cfg(test)]
mod tests;
