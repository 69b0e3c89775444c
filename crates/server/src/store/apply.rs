//! The optimistic read-modify-write of a pack: apply a [`transition`], save it if the
//! pack's `version` is still the one it was derived from, and on a conflict read the
//! pack again and apply the same input to what is now stored. Every writer of pack
//! states (the worker through its store thread, the HTTP handlers, the admin commands)
//! goes through [`apply_transition`], so an input is never lost to a write made
//! meanwhile, and never applied to a state it no longer fits. The webhook events of the
//! transition (`webhooks::outbox_events`) are written in the same transaction.

use super::{OutboxEvent, Store, StoreError};
use crate::model::{Event, Input, Pack, PackId, Refusal, Rules, ZoneId, transition};
use std::future::Future;

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

    /// Saves `pack` if its `version` is the stored one ([`StoreError::Conflict`] if not),
    /// with the transition's webhook `events` in the same transaction; returns it with
    /// the version bumped.
    fn write_pack(
        &self,
        pack: Pack,
        events: Vec<OutboxEvent>,
    ) -> impl Future<Output = Result<Pack, StoreError>> + Send;
}

impl PackAccess for Store {
    async fn read_pack(&self, zone: &ZoneId, id: &PackId) -> Result<Option<Pack>, StoreError> {
        self.pack(zone, id).await
    }

    async fn write_pack(
        &self,
        mut pack: Pack,
        events: Vec<OutboxEvent>,
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
        // The webhook events go with the pack, in its transaction.
        let outbox = crate::webhooks::outbox_events(&current, &step.pack, &step.events, now);
        match access.write_pack(step.pack, outbox).await {
            Ok(pack) => {
                if pack.state != current.state {
                    tracing::info!(
                        pack = %pack.id.as_str(),
                        zone = %pack.zone_id.as_str(),
                        from = current.state.as_str(),
                        to = pack.state.as_str(),
                        reason = %reason(&step.events),
                        "pack transition"
                    );
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

/// Why a pack changed state, in words, from the transition's events (for its log line).
fn reason(events: &[Event]) -> String {
    let words: Vec<String> = events
        .iter()
        .filter_map(|event| {
            Some(match event {
                Event::HostValidated { .. } | Event::RecheckRequested { .. } => return None,
                Event::ValidationFailed { reasons } => {
                    format!("validation failed: {}", reasons.join("; "))
                }
                Event::Validated => "every host validated".into(),
                Event::CaaRefused { reason } => format!("CAA refused: {reason}"),
                Event::Revalidated => "renewal: records validated again".into(),
                Event::RenewalFailed { reason } => format!("renewal failed: {reason}"),
                Event::RenewalAbandoned => "renewal abandoned 24 h before expiry".into(),
                Event::OrderBegun => "order placed with the CA".into(),
                Event::Issued { serial, renewal } => {
                    let what = if *renewal { "renewal issued" } else { "issued" };
                    format!("{what}: serial {serial}")
                }
                Event::IssuanceFailed { reason } => format!("issuance failed: {reason}"),
                Event::DeploymentFailed { reason } => format!("deployment failed: {reason}"),
                Event::Active { serial } => format!("deployed: serial {serial}"),
                Event::TimedOut { state } => format!("timed out in {}", state.as_str()),
                Event::Expired => "certificate expired".into(),
                Event::Restarted => "restarted with fresh tokens".into(),
                Event::MethodChanged { method } => {
                    format!("validation method changed to {}", method.as_str())
                }
                Event::BrandingChanged { .. } => "branding changed".into(),
                Event::Approved => "approved by an operator".into(),
                Event::Deleted => "deleted".into(),
                #[allow(unreachable_patterns)]
                other => format!("{other:?}"),
            })
        })
        .collect();
    words.join("; ")
}
