//! The worker's steps for packs whose CA orders remotely (ACME): placing the order
//! ([`Input::OrderBegun`]: `initializing` -> `pending_validation` with the CA's records,
//! or an `active` pack's renewal order), and turning the CA's typed refusals into inputs
//! ([`Input::OrderLost`] when the order cannot be finished, else
//! [`Input::IssuanceFailed`] with the CA's `Retry-After`).
//!
//! A pack of an ACME CA keeps its order reference (`Pack::order_ref`) from `begin` until
//! its certificate is deployed, so a restarted server finishes the same order; the
//! transition clears it once the pack is `active`, so a renewal places a new order.

use super::Worker;
use super::lease::Hold;
use crate::issuance::IssuanceError;
use crate::issuance::acme::AcmeErrorKind;
use crate::model::{Input, IssueFailure, Pack, PackState};
use crate::store::StoreError;

impl Worker {
    /// Places the pack's order with its CA; its records replace the pack's. A failure is
    /// a pack error, retried at the CA's `Retry-After` or in 5 minutes, until the stage's
    /// deadline.
    pub(super) async fn place_order(&self, pack: Pack, hold: Hold) -> Result<(), StoreError> {
        if !self.still_held(hold, &pack.id) {
            return Ok(());
        }
        let now = self.clock.now();
        let issuer = self.issuer_for(pack.ca);
        let hosts: Vec<_> = pack.hosts.iter().map(|h| h.hostname.clone()).collect();
        let suffix = self.config.dcv_suffix(&pack.zone_id);
        let started_in = pack.state;
        let input = match issuer
            .begin(&hosts, pack.method, &suffix, Some(pack.validity_days))
            .await
        {
            Ok(order) => Input::OrderBegun {
                order_ref: order.order_ref,
                records: order.challenges.into_iter().map(|c| c.record).collect(),
                tokens_expire: order.tokens_expire.map(|t| t.unix_timestamp()),
            },
            Err(e) => {
                tracing::warn!(pack = %pack.id.as_str(), error = %e, "ordering from the CA");
                let mut failure = issue_failure(&e, now);
                if let IssueFailure::Refused { detail, .. }
                | IssueFailure::Unavailable { detail, .. } = &mut failure
                {
                    *detail = format!("ordering from {} failed: {e}", pack.ca.as_str());
                }
                Input::IssuanceFailed {
                    started_in,
                    failure,
                }
            }
        };
        self.apply(pack, now, |_| Some(input.clone())).await?;
        Ok(())
    }

    /// The input for a failed `finish` of `pack`'s order: [`Input::OrderLost`] when the
    /// CA invalidated the order (it cannot be finished), else a retried failure.
    pub(super) fn finish_failed(&self, pack: &Pack, error: &IssuanceError, now: i64) -> Input {
        let started_in = pack.state;
        if let IssuanceError::Acme(e) = error
            && !e.kind.order_survives()
        {
            let refused_validation = matches!(
                e.kind,
                AcmeErrorKind::Unauthorized
                    | AcmeErrorKind::Caa
                    | AcmeErrorKind::Dns
                    | AcmeErrorKind::Connection
                    | AcmeErrorKind::IncorrectResponse
                    | AcmeErrorKind::RejectedIdentifier
            );
            return Input::OrderLost {
                started_in,
                reason: format!("{} refused the order: {e}", pack.ca.as_str()),
                host: e.host.clone(),
                refused_validation,
            };
        }
        Input::IssuanceFailed {
            started_in,
            failure: issue_failure(error, now),
        }
    }

    /// Whether the pack must place an order before anything else: a pack of an ACME CA
    /// waiting in `initializing`, or an active one whose renewal window opened without an
    /// open order.
    pub(super) fn needs_order(&self, pack: &Pack, now: i64) -> bool {
        if !self.issuer_for(pack.ca).orders_remotely() || pack.order_ref.is_some() {
            return false;
        }
        match pack.state {
            PackState::Initializing => true,
            PackState::Active => pack.renewal_starts_at().is_some_and(|s| now >= s),
            _ => false,
        }
    }
}

/// An issuer's error as the model's typed failure, with the CA's `Retry-After`.
fn issue_failure(error: &IssuanceError, now: i64) -> IssueFailure {
    let IssuanceError::Acme(e) = error else {
        return error.as_issue_failure();
    };
    let retry_after = e
        .retry_after
        .map(|at| time::OffsetDateTime::from(at).unix_timestamp().max(now + 1))
        .or_else(|| (e.kind == AcmeErrorKind::RateLimited).then_some(now + 3600));
    match e.kind {
        AcmeErrorKind::DirectoryUnreachable
        | AcmeErrorKind::Transport
        | AcmeErrorKind::ServerError
        | AcmeErrorKind::BadNonce => IssueFailure::Unavailable {
            detail: e.to_string(),
            retry_after,
        },
        _ => IssueFailure::Refused {
            problem: problem_name(&e.kind),
            detail: e.to_string(),
            retry_after,
        },
    }
}

/// The ACME problem type's short name for a kind.
fn problem_name(kind: &AcmeErrorKind) -> String {
    match kind {
        AcmeErrorKind::RateLimited => "rateLimited",
        AcmeErrorKind::Unauthorized => "unauthorized",
        AcmeErrorKind::Caa => "caa",
        AcmeErrorKind::Dns => "dns",
        AcmeErrorKind::Connection => "connection",
        AcmeErrorKind::IncorrectResponse => "incorrectResponse",
        AcmeErrorKind::RejectedIdentifier => "rejectedIdentifier",
        AcmeErrorKind::ExternalAccountRequired => "externalAccountRequired",
        AcmeErrorKind::AccountUnusable => "unauthorized",
        AcmeErrorKind::AccountUnknown => "accountDoesNotExist",
        AcmeErrorKind::OrderUnusable => "orderNotReady",
        AcmeErrorKind::BadNonce => "badNonce",
        AcmeErrorKind::ServerError => "serverInternal",
        AcmeErrorKind::DirectoryUnreachable | AcmeErrorKind::Transport => "connection",
        AcmeErrorKind::Other(t) => return t.clone(),
    }
    .to_owned()
}
