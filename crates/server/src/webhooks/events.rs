//! Which webhook events a transition causes, derived from the model's [`Event`]s (what
//! `model::transition` reports), and the body each is delivered with.
//!
//! Derived in one place, from the pack before and after the transition: the worker, the
//! handlers and the admin commands write what [`outbox_events`] returns with the pack,
//! in the same transaction (`store::apply_transition`).

use crate::http::wire;
use crate::model::{Event, Pack, PackState};
use crate::store::{OutboxEvent, Payload};
use serde_json::{Value, json};
use std::sync::Arc;

/// Every event type, as delivered (`type`) and as `--events` names them.
pub const EVENT_TYPES: &[&str] = &[
    VALIDATION_FAILED,
    VALIDATED,
    ISSUED,
    ACTIVE,
    RENEWED,
    EXPIRING,
    EXPIRED,
    TIMED_OUT,
    DELETED,
];

/// Checks failed: `data.reasons` (`host: reason`), once per changed set of reasons.
pub const VALIDATION_FAILED: &str = "pack.validation_failed";
/// Every host validated and CAA allows the CA (`data.renewal` for a renewal's checks).
pub const VALIDATED: &str = "pack.validated";
/// The pack's first certificate was issued (`data.serial`).
pub const ISSUED: &str = "pack.issued";
/// A certificate is deployed: the pack is active (after `pack.issued` or
/// `pack.renewed`; `data.serial`).
pub const ACTIVE: &str = "pack.active";
/// A renewal's certificate was issued (`data.serial`); `pack.active` follows once it
/// is deployed.
pub const RENEWED: &str = "pack.renewed";
/// The certificate expires within `data.days` (30, 7, 1) days; once per certificate
/// and threshold.
pub const EXPIRING: &str = "pack.expiring";
/// The certificate expired.
pub const EXPIRED: &str = "pack.expired";
/// A stage ran out of time (`data.state`, the timed-out state).
pub const TIMED_OUT: &str = "pack.timed_out";
/// The pack was deleted.
pub const DELETED: &str = "pack.deleted";
/// Sent by `zonecert webhook test` only.
pub const TEST: &str = "webhook.test";

/// The `pack.expiring` thresholds, in days, smallest first.
pub const EXPIRING_DAYS: [i64; 3] = [1, 7, 30];

/// The webhook events of a transition of `before` into `after` at `now` (Unix seconds)
/// that reported `events`. Their bodies are made only when written (see [`Payload`]);
/// the events of one transition share one copy of `after`.
pub fn outbox_events(before: &Pack, after: &Pack, events: &[Event], now: i64) -> Vec<OutboxEvent> {
    // The certificate's nearing expiry first: it was so before this transition.
    let mut out: Vec<OutboxEvent> = expiring(after, now).into_iter().collect();
    let mut snapshot: Option<Arc<Pack>> = None;
    let mut add = |kind: &'static str, extra: Value| {
        let pack = snapshot.get_or_insert_with(|| Arc::new(after.clone()));
        out.push(event(kind, pack, extra, now, None));
    };
    let before_failed = failed_reasons(before);
    for e in events {
        match e {
            // Once per changed reason: a check failing again for the same reason
            // (every few minutes for days) tells the operator nothing new.
            Event::ValidationFailed { reasons }
                if reasons.iter().any(|r| !before_failed.contains(r)) =>
            {
                add(
                    VALIDATION_FAILED,
                    json!({"reasons": reasons, "renewal": false}),
                );
            }
            Event::RenewalFailed { reason } | Event::CaaRefused { reason }
                if before.errors.last() != Some(reason) =>
            {
                add(
                    VALIDATION_FAILED,
                    json!({"reasons": [reason], "renewal": before.state == PackState::Active}),
                );
            }
            Event::Validated => add(VALIDATED, json!({"renewal": false})),
            Event::Revalidated => add(VALIDATED, json!({"renewal": true})),
            Event::Issued { serial, renewal } => add(
                if *renewal { RENEWED } else { ISSUED },
                json!({"serial": serial, "renewal": renewal}),
            ),
            Event::Active { serial } => add(ACTIVE, json!({"serial": serial})),
            Event::TimedOut { state } => {
                add(TIMED_OUT, json!({"state": wire::pack_status(*state)}));
            }
            Event::Expired => add(EXPIRED, json!({})),
            Event::Deleted => add(DELETED, json!({})),
            _ => {}
        }
    }
    out
}

/// `pack.deleted` for a pack deleted at `now` (the deletions happen outside
/// `apply_transition`: they have no version to race).
pub fn deleted(pack: &Pack, now: i64) -> OutboxEvent {
    event(DELETED, &Arc::new(pack.clone()), json!({}), now, None)
}

/// `pack.expiring` for the smallest threshold the pack's certificate has crossed, if
/// any (thresholds shorter than its lifetime only); at most once per certificate and
/// threshold (its `dedupe` key).
pub fn expiring(pack: &Pack, now: i64) -> Option<OutboxEvent> {
    if !matches!(pack.state, PackState::Active) {
        return None;
    }
    let cert = pack.certificate.as_ref()?;
    let left = cert.not_after - now;
    if left <= 0 {
        return None;
    }
    // A threshold as long as the certificate's whole life (30 days for a 30-day
    // certificate) would be crossed at issuance: it tells nothing.
    let lifetime = cert.not_after - cert.not_before;
    let days = EXPIRING_DAYS
        .into_iter()
        .find(|d| left <= d * 86_400 && lifetime > d * 86_400)?;
    let key = format!("expiring:{}:{}:{days}", pack.id, cert.id);
    Some(event(
        EXPIRING,
        &Arc::new(pack.clone()),
        json!({"days": days, "serial": cert.id, "expires_on": rfc3339(cert.not_after)}),
        now,
        Some(key),
    ))
}

/// The failed hosts' reasons as [`Event::ValidationFailed`] words them.
fn failed_reasons(pack: &Pack) -> Vec<String> {
    pack.hosts
        .iter()
        .filter(|h| h.check.verified == Some(false))
        .filter_map(|h| {
            h.check
                .reason
                .as_ref()
                .map(|r| format!("{}: {r}", h.hostname))
        })
        .collect()
}

/// A new message id: `msg_` and 32 hex digits (a random, version 4 UUID).
pub fn message_id() -> String {
    // From the thread's generator (a CSPRNG seeded by the system), not `Uuid::new_v4`,
    // which asks the system for every id: three `getrandom` calls per issued pack, for
    // events that are written only when an endpoint wants them.
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    format!("msg_{}", id.simple())
}

/// RFC 3339 (UTC) of Unix seconds.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// An event about `pack`: the body is `{type, timestamp, data: {zone_id, pack, ...extra}}`,
/// the pack as the API shows it. Only the pack's rendering is deferred: `extra` is small.
fn event(
    kind: &'static str,
    pack: &Arc<Pack>,
    extra: Value,
    now: i64,
    dedupe: Option<String>,
) -> OutboxEvent {
    let snapshot = Arc::clone(pack);
    let payload = Payload::deferred(move || {
        let mut data = json!({
            "zone_id": snapshot.zone_id.as_str(),
            "pack": wire::pack(&snapshot),
        });
        if let (Value::Object(data), Value::Object(extra)) = (&mut data, extra.clone()) {
            data.extend(extra);
        }
        json!({"type": kind, "timestamp": rfc3339(now), "data": data}).to_string()
    });
    OutboxEvent {
        id: message_id(),
        kind: kind.to_owned(),
        zone_id: pack.zone_id.as_str().to_owned(),
        pack_id: pack.id.as_str().to_owned(),
        occurred_at: now,
        payload,
        dedupe,
    }
}
