//! The optimistic read-modify-write of a pack: apply a [`transition`], save it if the
//! pack's `version` is still the one it was derived from, and on a conflict read the
//! pack again and apply the same input to what is now stored. Every writer of pack
//! states (the worker through its store thread, the HTTP handlers, the admin commands)
//! goes through [`apply_transition`], so an input is never lost to a write made
//! meanwhile, and never applied to a state it no longer fits. The webhook events of the
//! transition (`webhooks::outbox_events`) are written in the same transaction.

use super::{OutboxEvent, Store, StoreError, WebhookEndpoint};
use crate::model::{Event, Input, Pack, PackId, PackState, Refusal, Rules, ZoneId, transition};
use std::future::Future;
use std::sync::Arc;

/// How many times an input is applied before giving up on a pack that keeps changing.
/// Each conflict means another writer saved in between; a few in a row is already rare.
pub const MAX_ATTEMPTS: usize = 5;

/// Reads and version-checked writes of packs: the store itself, or the lifecycle's
/// store thread, which batches its writes.
pub trait PackAccess {
    /// The pack as stored now.
    fn read_pack(
        &self,
        zone: &ZoneId,
        id: &PackId,
    ) -> impl Future<Output = Result<Option<Pack>, StoreError>> + Send;

    /// The webhook endpoints, when known without reading the database
    /// ([`Store::known_webhook_endpoints`]).
    fn known_webhook_endpoints(&self) -> Option<Arc<[WebhookEndpoint]>>;

    /// Saves `pack` if its `version` is the stored one ([`StoreError::Conflict`] if not),
    /// with the transition's webhook `events` in the same transaction; returns it with
    /// the version bumped. `same_hosts`: its hosts are those of the version it replaces
    /// (a writer may then keep their rows).
    fn write_pack(
        &self,
        pack: Pack,
        events: Vec<OutboxEvent>,
        same_hosts: bool,
    ) -> impl Future<Output = Result<Pack, StoreError>> + Send;
}

impl PackAccess for Store {
    async fn read_pack(&self, zone: &ZoneId, id: &PackId) -> Result<Option<Pack>, StoreError> {
        self.pack(zone, id).await
    }

    fn known_webhook_endpoints(&self) -> Option<Arc<[WebhookEndpoint]>> {
        Store::known_webhook_endpoints(self)
    }

    async fn write_pack(
        &self,
        mut pack: Pack,
        events: Vec<OutboxEvent>,
        _same_hosts: bool,
    ) -> Result<Pack, StoreError> {
        self.update_pack_with_events(&mut pack, &events).await?;
        Ok(pack)
    }
}

/// What became of an input.
#[derive(Debug)]
pub enum Applied {
    /// Saved: the pack as stored, and what happened.
    Saved {
        /// The saved pack (its new version).
        pack: Pack,
        /// The transition's events.
        events: Vec<Event>,
    },
    /// The input no longer applies (or its maker withdrew it): the pack as last read.
    Unchanged(Pack),
    /// The pack's state forbids the request.
    Refused(Refusal),
    /// The pack no longer exists.
    Gone,
    /// The pack changed under every one of [`MAX_ATTEMPTS`] tries.
    Contended,
}

/// Applies the input `input` gives for the pack as it is (`None`: withdrawn) and saves
/// the result, retrying on conflicts; `pack` is the caller's latest read. Inputs that
/// delete are answered [`Applied::Unchanged`]: deleting is the caller's (it has no
/// version to race).
pub async fn apply_transition<A: PackAccess + Sync>(
    access: &A,
    pack: Pack,
    rules: &Rules,
    now: i64,
    mut input: impl FnMut(&Pack) -> Option<Input> + Send,
) -> Result<Applied, StoreError> {
    let mut current = pack;
    for _ in 0..MAX_ATTEMPTS {
        let Some(asked) = input(&current) else {
            return Ok(Applied::Unchanged(current));
        };
        let step = match transition(&current, &asked, rules, now) {
            Ok(Some(step)) if !step.delete => step,
            Ok(_) => return Ok(Applied::Unchanged(current)),
            Err(refusal) => return Ok(Applied::Refused(refusal)),
        };
        // The webhook events go with the pack, in its transaction; none are made when no
        // endpoint known wants this zone's (most servers have none: making them cost
        // more than the transition).
        let outbox = if no_endpoint_wants(access, &current.zone_id) {
            Vec::new()
        } else {
            crate::webhooks::outbox_events(&current, &step.pack, &step.events, now)
        };
        let same_hosts = step.pack.hosts == current.hosts;
        match access.write_pack(step.pack, outbox, same_hosts).await {
            Ok(pack) => {
                if pack.state != current.state {
                    log_transition(current.state, &pack, &step.events);
                }
                return Ok(Applied::Saved {
                    pack,
                    events: step.events,
                });
            }
            Err(StoreError::Conflict) => {
                match access.read_pack(&current.zone_id, &current.id).await? {
                    Some(fresh) => current = fresh,
                    None => return Ok(Applied::Gone),
                }
            }
            Err(StoreError::NotFound) => return Ok(Applied::Gone),
            Err(e) => return Err(e),
        }
    }
    Ok(Applied::Contended)
}

/// Whether the webhook endpoints are known and none wants the zone's events. A change
/// of the endpoints committed before this look is seen; one committed between it and
/// the pack's write is as if made just after it.
fn no_endpoint_wants<A: PackAccess>(access: &A, zone: &ZoneId) -> bool {
    access
        .known_webhook_endpoints()
        .is_some_and(|endpoints| !endpoints.iter().any(|e| e.wants_zone(zone.as_str())))
}

/// Logs a pack's change of state: at info, but for the steps every new certificate takes
/// on its way to `active` (ordered, validated, issued), at debug. A pack's line at info
/// is then the one that says it is active with its serial, or the one that says what went
/// wrong; three lines per certificate took more of the lifecycle's CPU than its events.
fn log_transition(from: PackState, pack: &Pack, events: &[Event]) {
    macro_rules! transition_line {
        ($level:expr) => {
            tracing::event!(
                $level,
                pack = %pack.id.as_str(),
                zone = %pack.zone_id.as_str(),
                from = from.as_str(),
                to = pack.state.as_str(),
                reason = %Reason(events),
                "pack transition"
            )
        };
    }
    if on_the_way_to_active(from, pack.state) {
        transition_line!(tracing::Level::DEBUG);
    } else {
        transition_line!(tracing::Level::INFO);
    }
}

/// Whether a change of state is one of the steps a pack takes towards `active` when all
/// goes well.
fn on_the_way_to_active(from: PackState, to: PackState) -> bool {
    matches!(
        (from, to),
        (PackState::Initializing, PackState::PendingValidation)
            | (PackState::PendingValidation, PackState::PendingIssuance)
            | (PackState::PendingIssuance, PackState::PendingDeployment)
    )
}

/// Why a pack changed state, in words, from the transition's events (for its log line);
/// written straight into the line.
struct Reason<'a>(&'a [Event]);

impl std::fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for event in self.0 {
            if matches!(
                event,
                Event::HostValidated { .. } | Event::RecheckRequested { .. }
            ) {
                continue;
            }
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            match event {
                Event::HostValidated { .. } | Event::RecheckRequested { .. } => {}
                Event::ValidationFailed { reasons } => {
                    write!(f, "validation failed: {}", reasons.join("; "))?;
                }
                Event::Validated => f.write_str("every host validated")?,
                Event::CaaRefused { reason } => write!(f, "CAA refused: {reason}")?,
                Event::Revalidated => f.write_str("renewal: records validated again")?,
                Event::RenewalFailed { reason } => write!(f, "renewal failed: {reason}")?,
                Event::RenewalAbandoned => f.write_str("renewal abandoned 24 h before expiry")?,
                Event::OrderBegun => f.write_str("order placed with the CA")?,
                Event::Issued { serial, renewal } => {
                    let what = if *renewal { "renewal issued" } else { "issued" };
                    write!(f, "{what}: serial {serial}")?;
                }
                Event::IssuanceFailed { reason } => write!(f, "issuance failed: {reason}")?,
                Event::DeploymentFailed { reason } => write!(f, "deployment failed: {reason}")?,
                Event::Active { serial } => write!(f, "deployed: serial {serial}")?,
                Event::TimedOut { state } => write!(f, "timed out in {}", state.as_str())?,
                Event::Expired => f.write_str("certificate expired")?,
                Event::Restarted => f.write_str("restarted with fresh tokens")?,
                Event::MethodChanged { method } => {
                    write!(f, "validation method changed to {}", method.as_str())?;
                }
                Event::BrandingChanged { .. } => f.write_str("branding changed")?,
                Event::Approved => f.write_str("approved by an operator")?,
                Event::Deleted => f.write_str("deleted")?,
                #[allow(unreachable_patterns)]
                other => write!(f, "{other:?}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_lists_the_events_that_say_why_in_order() {
        let events = [
            Event::Validated,
            Event::Issued {
                serial: "0a1b".into(),
                renewal: false,
            },
            Event::ValidationFailed {
                reasons: vec!["a: no TXT".into(), "b: wrong value".into()],
            },
            Event::Active {
                serial: "0a1b".into(),
            },
        ];
        assert_eq!(
            Reason(&events).to_string(),
            "every host validated; issued: serial 0a1b; \
             validation failed: a: no TXT; b: wrong value; deployed: serial 0a1b"
        );
        assert_eq!(Reason(&[]).to_string(), "");
    }

    #[test]
    fn only_the_steps_towards_active_are_logged_at_debug() {
        use PackState::*;
        for (from, to) in [
            (Initializing, PendingValidation),
            (PendingValidation, PendingIssuance),
            (PendingIssuance, PendingDeployment),
        ] {
            assert!(on_the_way_to_active(from, to), "{from:?} -> {to:?}");
        }
        for (from, to) in [
            (PendingDeployment, Active),
            (PendingValidation, ValidationTimedOut),
            (ValidationTimedOut, PendingValidation),
            (PendingIssuance, PendingValidation),
            (PendingIssuance, Initializing),
        ] {
            assert!(!on_the_way_to_active(from, to), "{from:?} -> {to:?}");
        }
    }
}
