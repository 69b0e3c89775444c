//! One test per rule of [`transition`].

use super::*;
use crate::model::{CaChoice, Hostname, ZoneId};

const T: i64 = 1_000_000;
const RULES: Rules = Rules {
    issuance_timeout_secs: 86_400,
};

fn pack(method: DcvMethod) -> Pack {
    let zone = ZoneId::parse("023e105f4ecef8ad9ca31a8372d0c353").unwrap();
    let hosts = vec![
        Hostname::parse("example.com").unwrap(),
        Hostname::parse("www.example.com").unwrap(),
    ];
    Pack::order(
        zone,
        hosts,
        method,
        90,
        CaChoice::LetsEncrypt,
        false,
        "x.dcv.test",
        T,
    )
}

fn cert(not_after: i64) -> IssuedCertificate {
    IssuedCertificate {
        id: "0a".into(),
        chain_pem: String::new(),
        not_before: not_after - 90 * 86_400,
        not_after,
        issuer: "CA".into(),
        signature: "ECDSAWithSHA256".into(),
        issued_at: not_after - 90 * 86_400,
        renew_at: None,
        acme_directory: None,
    }
}

fn active(not_after: i64) -> Pack {
    let mut p = pack(DcvMethod::Txt);
    p.state = PackState::Active;
    p.certificate = Some(cert(not_after));
    for h in &mut p.hosts {
        h.check.verified = Some(true);
    }
    p
}

fn outcome(p: &Pack, index: usize, result: CheckResult) -> HostOutcome {
    HostOutcome {
        index,
        record: p.hosts[index].record.clone(),
        result,
    }
}

fn apply(p: &Pack, input: Input, now: i64) -> Transition {
    transition(p, &input, &RULES, now)
        .expect("not refused")
        .expect("applies")
}

fn checked(outcomes: Vec<HostOutcome>, caa: CaaCheck) -> Input {
    Input::Checked { outcomes, caa }
}

#[test]
fn a_failed_check_is_recorded_and_due_on_the_schedule() {
    let p = pack(DcvMethod::Txt);
    let o = outcome(&p, 0, CheckResult::Failed("no record".into()));
    let t = apply(&p, checked(vec![o], CaaCheck::NotChecked), T + 5);
    let h = &t.pack.hosts[0].check;
    assert_eq!(h.verified, Some(false));
    assert_eq!(h.attempts, 1);
    assert_eq!(h.last_checked_at, Some(T + 5));
    assert_eq!(h.next_due_at, T + 5 + 60);
    assert_eq!(h.reason.as_deref(), Some("no record"));
    assert_eq!(t.pack.state, PackState::PendingValidation);
    assert_eq!(t.pack.updated_at, T + 5);
    assert_eq!(
        t.events,
        [Event::ValidationFailed {
            reasons: vec!["example.com: no record".into()]
        }]
    );
}

#[test]
fn a_passed_check_waits_for_the_others_until_the_deadline() {
    let p = pack(DcvMethod::Txt);
    let o = outcome(&p, 0, CheckResult::Passed);
    let t = apply(&p, checked(vec![o], CaaCheck::NotChecked), T);
    assert_eq!(t.pack.hosts[0].check.verified, Some(true));
    assert_eq!(t.pack.hosts[0].check.next_due_at, p.stage_deadline);
    assert_eq!(t.pack.state, PackState::PendingValidation);
    assert!(matches!(t.events[0], Event::HostValidated { .. }));
}

#[test]
fn an_outcome_for_a_replaced_record_is_dropped() {
    let p = pack(DcvMethod::Txt);
    let mut o = outcome(&p, 0, CheckResult::Passed);
    o.record = DcvRecord::Txt {
        name: "_acme-challenge.example.com".into(),
        value: "an older token".into(),
    };
    assert_eq!(
        transition(&p, &checked(vec![o], CaaCheck::Allowed), &RULES, T),
        Ok(None)
    );
}

#[test]
fn email_hosts_wait_for_an_operator_until_the_deadline() {
    let p = pack(DcvMethod::Email);
    let o = outcome(&p, 0, CheckResult::AwaitingApproval);
    let t = apply(&p, checked(vec![o], CaaCheck::NotChecked), T);
    let h = &t.pack.hosts[0].check;
    assert_eq!(h.reason.as_deref(), Some(EMAIL_REASON));
    assert_eq!(h.next_due_at, p.stage_deadline, "no polling");
    assert!(t.events.is_empty(), "{:?}", t.events);
}

#[test]
fn the_last_host_with_caa_allowed_moves_to_issuance() {
    let mut p = pack(DcvMethod::Txt);
    p.hosts[1].check.verified = Some(true);
    p.errors.push("an old CAA refusal".into());
    let o = outcome(&p, 0, CheckResult::Passed);
    let t = apply(&p, checked(vec![o], CaaCheck::Allowed), T + 10);
    assert_eq!(t.pack.state, PackState::PendingIssuance);
    assert_eq!(t.pack.stage_deadline, T + 10 + 86_400);
    assert!(t.pack.errors.is_empty());
    assert!(t.pack.hosts.iter().all(|h| h.check.next_due_at == T + 10));
    assert_eq!(t.events.last(), Some(&Event::Validated));
}

#[test]
fn a_caa_refusal_keeps_the_pack_pending_until_the_next_slot() {
    let mut p = pack(DcvMethod::Txt);
    p.hosts[1].check.verified = Some(true);
    p.hosts[1].check.attempts = 3;
    let o = outcome(&p, 0, CheckResult::Passed);
    let t = apply(
        &p,
        checked(vec![o], CaaCheck::Refused("CAA forbids".into())),
        T,
    );
    assert_eq!(t.pack.state, PackState::PendingValidation);
    assert_eq!(t.pack.errors, ["CAA forbids"]);
    // Each at its own next slot: the one just checked after one attempt, the other
    // after three.
    assert_eq!(t.pack.hosts[0].check.next_due_at, T + 63);
    assert_eq!(
        t.pack.hosts[1].check.next_due_at,
        HostCheck::next_due_after(3, T)
    );
    assert_eq!(
        t.events.last(),
        Some(&Event::CaaRefused {
            reason: "CAA forbids".into()
        })
    );
}

#[test]
fn a_validation_completed_without_caa_is_due_at_once_for_it() {
    let mut p = pack(DcvMethod::Txt);
    p.hosts[1].check.verified = Some(true);
    let o = outcome(&p, 0, CheckResult::Passed);
    let t = apply(&p, checked(vec![o], CaaCheck::NotChecked), T);
    assert!(t.pack.awaits_caa());
    assert!(t.pack.hosts.iter().all(|h| h.check.next_due_at == T));
    // CAA alone, asked next.
    let t = apply(&t.pack, checked(Vec::new(), CaaCheck::Allowed), T + 1);
    assert_eq!(t.pack.state, PackState::PendingIssuance);
    // CAA alone on a pack that is not validated changes nothing.
    assert_eq!(
        transition(
            &pack(DcvMethod::Txt),
            &checked(Vec::new(), CaaCheck::Allowed),
            &RULES,
            T
        ),
        Ok(None)
    );
}

#[test]
fn checks_of_a_pack_past_validation_change_nothing() {
    let mut p = pack(DcvMethod::Txt);
    p.state = PackState::PendingIssuance;
    let o = outcome(&p, 0, CheckResult::Passed);
    assert_eq!(
        transition(&p, &checked(vec![o], CaaCheck::Allowed), &RULES, T),
        Ok(None)
    );
}

#[test]
fn validation_times_out_at_its_deadline() {
    let p = pack(DcvMethod::Txt);
    assert_eq!(
        transition(&p, &Input::Tick, &RULES, p.stage_deadline - 1),
        Ok(None)
    );
    let t = apply(&p, Input::Tick, p.stage_deadline);
    assert_eq!(t.pack.state, PackState::ValidationTimedOut);
    assert_eq!(
        t.events,
        [Event::TimedOut {
            state: PackState::ValidationTimedOut
        }]
    );
}

#[test]
fn issuance_and_deployment_time_out_with_the_reason() {
    let mut p = pack(DcvMethod::Txt);
    p.state = PackState::PendingIssuance;
    p.stage_deadline = T + 100;
    let t = apply(&p, Input::Tick, T + 100);
    assert_eq!(t.pack.state, PackState::IssuanceTimedOut);
    assert!(
        t.pack.errors[0].starts_with("issuance timed out: not done within 24 hours"),
        "{:?}",
        t.pack.errors
    );
    p.state = PackState::PendingDeployment;
    let rules = Rules {
        issuance_timeout_secs: 90,
    };
    let t = transition(&p, &Input::Tick, &rules, T + 100)
        .unwrap()
        .unwrap();
    assert_eq!(t.pack.state, PackState::DeploymentTimedOut);
    assert!(t.pack.errors[0].contains("deployment timed out: not done within 90 seconds"));
    assert_eq!(human_duration(5_400), "90 minutes");
    assert_eq!(human_duration(3_600), "1 hour");
}

#[test]
fn initialisation_times_out_at_its_deadline() {
    let mut p = pack(DcvMethod::Txt);
    p.state = PackState::Initializing;
    let t = apply(&p, Input::Tick, p.stage_deadline);
    assert_eq!(t.pack.state, PackState::InitializingTimedOut);
}

#[test]
fn a_certificate_past_not_after_expires() {
    let p = active(T + 1000);
    let t = apply(&p, Input::Tick, T + 1000);
    assert_eq!(t.pack.state, PackState::Expired);
    assert_eq!(t.events, [Event::Expired]);
}

#[test]
fn an_active_pack_before_its_window_is_due_when_it_opens() {
    let not_after = T + 100 * 86_400;
    let p = active(not_after);
    let t = apply(&p, Input::Tick, T);
    let starts = not_after - 30 * 86_400;
    assert!(t.pack.hosts.iter().all(|h| h.check.next_due_at == starts));
    assert_eq!(t.pack.state, PackState::Active);
    // Inside the window the clock leaves it to the renewal checks.
    assert_eq!(transition(&p, &Input::Tick, &RULES, starts), Ok(None));
}

#[test]
fn the_cas_renewal_advice_replaces_the_window_and_says_when_to_ask_again() {
    let not_after = T + 100 * 86_400;
    let p = active(not_after);
    let advised = |renew_at, ask_again_at| Input::RenewalAdvised {
        certificate: "0a".into(),
        renew_at,
        ask_again_at,
    };
    // Earlier than the window (30 days before expiry): due when the CA is to be asked
    // again, renewal from the advised time on.
    let renew_at = T + 10 * 86_400;
    let t = apply(&p, advised(renew_at, T + 6 * 3600), T);
    assert_eq!(
        t.pack.certificate.as_ref().unwrap().renew_at,
        Some(renew_at)
    );
    assert_eq!(t.pack.renewal_starts_at(), Some(renew_at));
    assert!(
        t.pack
            .hosts
            .iter()
            .all(|h| h.check.next_due_at == T + 6 * 3600)
    );
    assert_eq!(
        t.pack.updated_at, p.updated_at,
        "not a change a client sees"
    );
    assert!(t.events.is_empty());
    // The clock then keeps it due at the advised time, not the window's.
    let ticked = apply(&t.pack, Input::Tick, T + 7 * 3600);
    assert!(
        ticked
            .pack
            .hosts
            .iter()
            .all(|h| h.check.next_due_at == renew_at)
    );
    // Inside the advised window the clock leaves it to the renewal.
    assert_eq!(
        transition(&t.pack, &Input::Tick, &RULES, renew_at),
        Ok(None)
    );
    // Renewal advised now: due at once.
    let now = apply(&p, advised(T - 60, T + 3600), T);
    assert!(now.pack.hosts.iter().all(|h| h.check.next_due_at == T));
    // Advice for another certificate, or while a renewal order is open, does not apply.
    let other = Input::RenewalAdvised {
        certificate: "0b".into(),
        renew_at,
        ask_again_at: T + 3600,
    };
    assert_eq!(transition(&p, &other, &RULES, T), Ok(None));
    let mut ordering = p.clone();
    ordering.order_ref = Some("order".into());
    assert_eq!(
        transition(&ordering, &advised(renew_at, T + 3600), &RULES, T),
        Ok(None)
    );
    // A new certificate starts without advice.
    let mut renewed = t.pack.clone();
    renewed.state = PackState::PendingDeployment;
    let issued = apply(
        &renewed,
        Input::Issued {
            started_in: PackState::PendingDeployment,
            certificate: cert(not_after + 90 * 86_400),
        },
        renew_at,
    );
    assert_eq!(issued.pack.certificate.unwrap().renew_at, None);
}

#[test]
fn renewal_gives_up_a_day_before_expiry() {
    let not_after = T + 100 * 86_400;
    let p = active(not_after);
    let t = apply(&p, Input::Tick, not_after - 86_400);
    assert_eq!(t.pack.state, PackState::Active);
    assert!(t.pack.errors[0].starts_with("renewal: gave up 24 hours before expiry"));
    assert!(
        t.pack
            .hosts
            .iter()
            .all(|h| h.check.next_due_at == not_after)
    );
    assert_eq!(t.events, [Event::RenewalAbandoned]);
}

#[test]
fn renewal_checks_that_pass_with_caa_allowed_revalidate() {
    let p = active(T + 10 * 86_400);
    let all = vec![
        outcome(&p, 0, CheckResult::Passed),
        outcome(&p, 1, CheckResult::Passed),
    ];
    let t = apply(&p, checked(all, CaaCheck::Allowed), T);
    assert_eq!(t.pack.state, PackState::Active);
    assert_eq!(t.events, [Event::Revalidated]);
    assert_eq!(t.pack.hosts[0].check.next_due_at, T + 60, "on the schedule");
}

#[test]
fn renewal_failures_are_pack_errors_and_the_pack_stays_active() {
    let p = active(T + 10 * 86_400);
    let all = vec![
        outcome(&p, 0, CheckResult::Failed("gone".into())),
        outcome(&p, 1, CheckResult::Passed),
    ];
    let t = apply(&p, checked(all, CaaCheck::NotChecked), T);
    assert_eq!(t.pack.state, PackState::Active);
    assert_eq!(t.pack.errors, ["renewal: DCV failed: example.com: gone"]);
    let passed = vec![
        outcome(&p, 0, CheckResult::Passed),
        outcome(&p, 1, CheckResult::Passed),
    ];
    let t = apply(
        &p,
        checked(passed, CaaCheck::Refused("CAA forbids".into())),
        T,
    );
    assert_eq!(t.pack.errors, ["renewal: CAA forbids"]);
    assert!(matches!(t.events[0], Event::RenewalFailed { .. }));
}

#[test]
fn a_certificate_issued_waits_for_deployment_and_a_renewal_gets_a_deadline() {
    let mut p = pack(DcvMethod::Txt);
    p.state = PackState::PendingIssuance;
    p.stage_deadline = T + 50;
    let c = cert(T + 90 * 86_400);
    let issued = |started_in| Input::Issued {
        started_in,
        certificate: c.clone(),
    };
    let t = apply(&p, issued(PackState::PendingIssuance), T);
    assert_eq!(t.pack.state, PackState::PendingDeployment);
    assert_eq!(t.pack.certificate.as_ref(), Some(&c));
    assert_eq!(
        t.pack.stage_deadline,
        T + 50,
        "validation's deadline stands"
    );
    // Begun in another state than the pack is now in: dropped.
    assert_eq!(
        transition(&p, &issued(PackState::Active), &RULES, T),
        Ok(None)
    );
    let renewing = active(T + 10 * 86_400);
    let t = apply(&renewing, issued(PackState::Active), T);
    assert_eq!(t.pack.state, PackState::PendingDeployment);
    assert_eq!(t.pack.stage_deadline, T + 86_400);
    assert_eq!(
        t.events,
        [Event::Issued {
            serial: "0a".into(),
            renewal: true
        }]
    );
}

#[test]
fn a_failed_issuance_is_retried_in_five_minutes_or_when_the_ca_says() {
    let mut p = pack(DcvMethod::Txt);
    p.state = PackState::PendingIssuance;
    p.stage_deadline = T + 3600;
    let failed = |failure| Input::IssuanceFailed {
        started_in: PackState::PendingIssuance,
        failure,
    };
    let t = apply(&p, failed(IssueFailure::Local("disk full".into())), T);
    assert_eq!(t.pack.errors, ["issuance failed: disk full"]);
    assert!(t.pack.hosts.iter().all(|h| h.check.next_due_at == T + 300));
    let limited = IssueFailure::Refused {
        problem: "rateLimited".into(),
        detail: "too many".into(),
        retry_after: Some(T + 1200),
    };
    let t = apply(&p, failed(limited), T);
    assert_eq!(t.pack.hosts[0].check.next_due_at, T + 1200);
    // Never past the deadline, where it times out.
    let t = apply(&p, failed(IssueFailure::Injected("fault".into())), T + 3500);
    assert_eq!(t.pack.hosts[0].check.next_due_at, T + 3600);
    // A renewal's failure leaves the pack active and is not held to a deadline.
    let renewing = active(T + 10 * 86_400);
    let t = apply(
        &renewing,
        Input::IssuanceFailed {
            started_in: PackState::Active,
            failure: IssueFailure::Local("x".into()),
        },
        T + 10 * 86_400 - 100,
    );
    assert_eq!(t.pack.state, PackState::Active);
    assert_eq!(t.pack.hosts[0].check.next_due_at, T + 10 * 86_400 + 200);
}

#[test]
fn a_deployment_makes_the_pack_active_and_due_at_renewal() {
    let not_after = T + 90 * 86_400;
    let mut p = pack(DcvMethod::Txt);
    p.state = PackState::PendingDeployment;
    p.certificate = Some(cert(not_after));
    p.errors.push("deployment failed: x".into());
    let t = apply(&p, Input::Deployed, T);
    assert_eq!(t.pack.state, PackState::Active);
    assert!(t.pack.errors.is_empty());
    let starts = not_after - 30 * 86_400;
    assert!(t.pack.hosts.iter().all(|h| h.check.next_due_at == starts));
    assert_eq!(
        t.events,
        [Event::Active {
            serial: "0a".into()
        }]
    );
    assert_eq!(
        transition(&t.pack, &Input::Deployed, &RULES, T),
        Ok(None),
        "only a pack pending deployment"
    );
}

#[test]
fn a_failed_deployment_is_retried_and_shown() {
    let mut p = pack(DcvMethod::Txt);
    p.state = PackState::PendingDeployment;
    let t = apply(&p, Input::DeploymentFailed("hook exited 3".into()), T);
    assert_eq!(t.pack.errors, ["deployment failed: hook exited 3"]);
    assert_eq!(t.pack.hosts[0].check.next_due_at, T + 300);
    // A retried failure is shown once; at most five errors are kept.
    let t = apply(&t.pack, Input::DeploymentFailed("hook exited 3".into()), T);
    assert_eq!(t.pack.errors.len(), 1);
    let mut many = t.pack;
    for i in 0..7 {
        many = apply(&many, Input::DeploymentFailed(format!("{i}")), T).pack;
    }
    assert_eq!(many.errors.len(), MAX_ERRORS);
    assert_eq!(
        many.errors.last().map(String::as_str),
        Some("deployment failed: 6")
    );
}

#[test]
fn an_order_begun_by_the_ca_gets_its_records() {
    let mut p = pack(DcvMethod::Txt);
    p.state = PackState::Initializing;
    let records = vec![
        DcvRecord::Txt {
            name: "_acme-challenge.example.com".into(),
            value: "ca-token-1".into(),
        },
        DcvRecord::Txt {
            name: "_acme-challenge.www.example.com".into(),
            value: "ca-token-2".into(),
        },
    ];
    let begun = Input::OrderBegun {
        order_ref: "order-1".into(),
        records: records.clone(),
        tokens_expire: Some(T + 86_400),
    };
    let t = apply(&p, begun.clone(), T + 1);
    assert_eq!(t.pack.state, PackState::PendingValidation);
    assert_eq!(t.pack.order_ref.as_deref(), Some("order-1"));
    assert_eq!(t.pack.hosts[1].record, records[1]);
    assert_eq!(t.pack.hosts[1].check.next_due_at, T + 1);
    assert_eq!(
        t.pack.stage_deadline,
        T + 86_400,
        "the CA's tokens expire first"
    );
    let short = Input::OrderBegun {
        order_ref: "order-2".into(),
        records: records[..1].to_vec(),
        tokens_expire: None,
    };
    assert_eq!(transition(&p, &short, &RULES, T), Ok(None), "one per host");
}

#[test]
fn the_verification_patch_rechecks_switches_or_restarts() {
    let suffix = "x.dcv.test".to_owned();
    let edit = |method| Input::EditVerification {
        method,
        orders_remotely: false,
        dcv_target_suffix: suffix.clone(),
    };
    let mut p = pack(DcvMethod::Txt);
    p.updated_at = T - 1;
    p.due_at(T + 60);
    // Same method: due now, attempts kept, not a modification.
    let t = apply(&p, edit(DcvMethod::Txt), T);
    assert!(t.pack.hosts.iter().all(|h| h.check.next_due_at == T));
    assert_eq!(t.pack.updated_at, T - 1);
    // Another method: fresh records.
    let t = apply(&p, edit(DcvMethod::Http), T);
    assert_eq!(t.pack.hosts[0].record.method(), DcvMethod::Http);
    assert_eq!(
        t.events,
        [Event::MethodChanged {
            method: DcvMethod::Http
        }]
    );
    // Timed out: restarted with the method asked for.
    p.state = PackState::ValidationTimedOut;
    let t = apply(&p, edit(DcvMethod::Cname), T);
    assert_eq!(t.pack.state, PackState::PendingValidation);
    assert_eq!(t.pack.method, DcvMethod::Cname);
    assert!(t.events.contains(&Event::Restarted));
    // Settled: the same method changes nothing, another one is refused.
    p.state = PackState::Active;
    assert_eq!(transition(&p, &edit(DcvMethod::Txt), &RULES, T), Ok(None));
    assert_eq!(
        transition(&p, &edit(DcvMethod::Http), &RULES, T),
        Err(Refusal::MethodFixed {
            state: PackState::Active,
            method: DcvMethod::Txt
        })
    );
}

#[test]
fn the_pack_patch_restarts_a_timed_out_pack_with_fresh_tokens() {
    let edit = |branding| Input::EditPack {
        cloudflare_branding: branding,
        orders_remotely: false,
        dcv_target_suffix: "x.dcv.test".into(),
    };
    let mut p = pack(DcvMethod::Txt);
    p.state = PackState::DeploymentTimedOut;
    p.errors.push("deployment timed out".into());
    p.hosts[0].check.attempts = 9;
    let t = apply(&p, edit(None), T + 10);
    assert_eq!(t.pack.state, PackState::PendingValidation);
    assert_ne!(t.pack.hosts[0].record, p.hosts[0].record);
    assert_eq!(t.pack.hosts[0].check.attempts, 0);
    assert!(t.pack.errors.is_empty());
    assert_eq!(t.pack.stage_deadline, T + 10 + 7 * 86_400);
    assert_eq!(t.events, [Event::Restarted]);
    // Not timed out: branding only, or refused.
    p.state = PackState::Active;
    let t = apply(&p, edit(Some(true)), T);
    assert!(t.pack.cloudflare_branding);
    assert_eq!(t.pack.state, PackState::Active);
    assert_eq!(
        transition(&p, &edit(None), &RULES, T),
        Err(Refusal::NotTimedOut {
            state: PackState::Active
        })
    );
}

#[test]
fn a_retry_makes_hosts_due_within_its_budget_and_supersedes_a_running_check() {
    let mut p = pack(DcvMethod::Txt);
    p.due_at(T + 60);
    let recheck = |budget, supersede_running| Input::Recheck {
        checked_since: None,
        budget,
        supersede_running,
    };
    let t = apply(&p, recheck(1, false), T);
    assert_eq!(t.pack.hosts[0].check.next_due_at, T);
    assert_eq!(t.pack.hosts[1].check.next_due_at, T + 60);
    assert_eq!(
        t.events,
        [Event::RecheckRequested {
            hosts: 1,
            running: 0
        }]
    );
    // Due already: nothing to make due, nothing written...
    p.due_at(T);
    assert_eq!(transition(&p, &recheck(2, false), &RULES, T), Ok(None));
    // ... unless their check is running and must not answer the retry.
    let t = apply(&p, recheck(2, true), T);
    assert_eq!(t.pack.hosts, p.hosts, "the write is what counts");
    assert_eq!(
        t.events,
        [Event::RecheckRequested {
            hosts: 0,
            running: 2
        }]
    );
    // A pack held for the brand check waits for an operator.
    p.brand_check = true;
    p.due_at(T + 60);
    assert_eq!(transition(&p, &recheck(2, true), &RULES, T), Ok(None));
}

#[test]
fn a_retry_coalesces_with_checks_an_earlier_retry_asked_for_only() {
    let mut p = pack(DcvMethod::Txt);
    // Both hosts checked (and failed) at T - 2, the second one again at T.
    p.due_at(T + 60);
    p.hosts[0].check.last_checked_at = Some(T - 2);
    p.hosts[1].check.last_checked_at = Some(T);
    let recheck = |checked_since| Input::Recheck {
        checked_since,
        budget: 10,
        supersede_running: false,
    };
    // No retry asked for them: whatever ran before (the order's own check) was not asked
    // for by a client, which may have published since.
    let t = apply(&p, recheck(None), T);
    assert!(t.pack.hosts.iter().all(|h| h.check.next_due_at == T));
    // A retry asked at T - 1: the host checked since is coalesced, the other is not.
    let t = apply(&p, recheck(Some(T - 1)), T);
    assert_eq!(t.pack.hosts[0].check.next_due_at, T);
    assert_eq!(t.pack.hosts[1].check.next_due_at, T + 60);
    // Both checked since the retry asked: nothing to do.
    assert_eq!(transition(&p, &recheck(Some(T - 2)), &RULES, T), Ok(None));
}

#[test]
fn approval_validates_email_hosts_and_lifts_the_brand_check() {
    let mut p = pack(DcvMethod::Email);
    p.brand_check = true;
    p.due_at(p.stage_deadline);
    let t = apply(&p, Input::Approve, T + 3);
    assert!(!t.pack.brand_check);
    assert!(t.pack.all_verified());
    assert!(t.pack.hosts.iter().all(|h| h.check.next_due_at == T + 3));
    assert_eq!(t.events, [Event::Approved]);
    p.state = PackState::Active;
    assert_eq!(
        transition(&p, &Input::Approve, &RULES, T),
        Err(Refusal::NotPendingValidation {
            state: PackState::Active
        })
    );
}

#[test]
fn deletion_is_reported_and_left_to_the_caller() {
    let p = pack(DcvMethod::Txt);
    let t = apply(&p, Input::Delete, T);
    assert!(t.delete);
    assert_eq!(t.events, [Event::Deleted]);
}

#[test]
fn an_acme_order_lost_goes_back_to_initializing_with_the_cas_reason() {
    let mut p = pack(DcvMethod::Txt);
    p.state = PackState::PendingIssuance;
    p.order_ref = Some("order-1".into());
    let lost = |refused_validation| Input::OrderLost {
        started_in: PackState::PendingIssuance,
        reason: "lets_encrypt refused the order: unauthorized".into(),
        host: Some("www.example.com".into()),
        refused_validation,
    };
    let t = apply(&p, lost(true), T);
    assert_eq!(t.pack.state, PackState::Initializing);
    assert_eq!(t.pack.order_ref, None);
    assert_eq!(t.pack.hosts[1].check.verified, Some(false));
    assert!(
        t.pack.hosts[1]
            .check
            .reason
            .as_deref()
            .unwrap()
            .contains("unauthorized")
    );
    assert_eq!(
        t.pack.hosts[0].check.reason, None,
        "only the host the CA named"
    );
    assert!(
        t.pack.hosts[0].check.next_due_at > T,
        "new records: on the schedule"
    );
    // An order or account the CA lost needs nothing from the customer: at once.
    let t = apply(&p, lost(false), T);
    assert!(t.pack.hosts.iter().all(|h| h.check.next_due_at == T));
    // A pack that moved on meanwhile is left alone.
    let mut other = p.clone();
    other.state = PackState::IssuanceTimedOut;
    assert_eq!(transition(&other, &lost(true), &RULES, T), Ok(None));
}

#[test]
fn an_acme_pack_renews_through_a_new_order_and_drops_it_once_deployed() {
    let mut p = pack(DcvMethod::Txt);
    p.state = PackState::Active;
    p.order_ref = None;
    let records: Vec<DcvRecord> = p
        .hosts
        .iter()
        .map(|h| DcvRecord::Txt {
            name: format!("_acme-challenge.{}", h.hostname.base()),
            value: "renewal-token".into(),
        })
        .collect();
    let begun = Input::OrderBegun {
        order_ref: "renewal-order".into(),
        records: records.clone(),
        tokens_expire: None,
    };
    let t = apply(&p, begun.clone(), T);
    assert_eq!(
        t.pack.state,
        PackState::Active,
        "a renewal keeps the pack active"
    );
    assert_eq!(t.pack.order_ref.as_deref(), Some("renewal-order"));
    assert_eq!(t.pack.hosts[0].record, records[0]);
    // Once per renewal: an open order is not replaced.
    assert_eq!(transition(&t.pack, &begun, &RULES, T), Ok(None));
    // Deployed: the order is done.
    let mut deploying = t.pack.clone();
    deploying.state = PackState::PendingDeployment;
    let t = apply(&deploying, Input::Deployed, T);
    assert_eq!(t.pack.order_ref, None);
}

#[test]
fn an_acme_pack_switched_or_restarted_waits_for_a_new_order() {
    let mut p = pack(DcvMethod::Txt);
    p.order_ref = Some("order-1".into());
    let switch = Input::EditVerification {
        method: DcvMethod::Http,
        orders_remotely: true,
        dcv_target_suffix: "x.dcv.test".into(),
    };
    let t = apply(&p, switch, T);
    assert_eq!(t.pack.state, PackState::Initializing);
    assert_eq!(t.pack.order_ref, None);
    // The same method only rechecks the CA's records.
    let same = Input::EditVerification {
        method: DcvMethod::Txt,
        orders_remotely: true,
        dcv_target_suffix: "x.dcv.test".into(),
    };
    let t = apply(&p, same, T);
    assert_eq!(t.pack.state, PackState::PendingValidation);
    assert_eq!(t.pack.order_ref.as_deref(), Some("order-1"));
    let mut timed_out = p.clone();
    timed_out.state = PackState::ValidationTimedOut;
    let restart = Input::EditPack {
        cloudflare_branding: None,
        orders_remotely: true,
        dcv_target_suffix: "x.dcv.test".into(),
    };
    let t = apply(&timed_out, restart, T);
    assert_eq!(t.pack.state, PackState::Initializing);
}
