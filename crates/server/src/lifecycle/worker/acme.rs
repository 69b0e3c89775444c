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
        // A renewal's order names the certificate it replaces (RFC 9773).
        let replaces = match pack.state {
            PackState::Active => pack.certificate.as_ref().map(|c| c.chain_pem.as_str()),
            _ => None,
        };
        let input = match issuer
            .begin_replacing(
                &hosts,
                pack.method,
                &suffix,
                Some(pack.validity_days),
                replaces,
            )
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

    /// Asks the CA of an active pack when to renew its certificate (ACME Renewal
    /// Information, RFC 9773), before the renewal starts, and records its advice
    /// ([`Input::RenewalAdvised`]: the advised time replaces the renewal window, and the
    /// pack is due again when the CA asks to be asked again). Returns whether advice was
    /// recorded; `false` for CAs without renewal information, and when asking failed (the
    /// renewal window then applies, and the CA is asked again at the next claim).
    pub(super) async fn ask_renewal_info(&self, pack: &Pack, now: i64) -> Result<bool, StoreError> {
        let issuer = self.issuer_for(pack.ca);
        let Some(cert) = &pack.certificate else {
            return Ok(false);
        };
        if !issuer.orders_remotely()
            || pack.state != PackState::Active
            || pack.order_ref.is_some()
            || now >= cert.not_after
            || pack.renewal_starts_at().is_some_and(|s| now >= s)
        {
            return Ok(false);
        }
        let advice = match issuer.renewal_info(&cert.chain_pem).await {
            Ok(Some(advice)) => advice,
            Ok(None) => return Ok(false),
            Err(e) => {
                tracing::warn!(pack = %pack.id.as_str(), error = %e, "asking the CA for its renewal information (ARI) failed; the renewal window applies");
                return Ok(false);
            }
        };
        let (start, end) = (
            advice.start.unix_timestamp(),
            advice
                .end
                .unix_timestamp()
                .max(advice.start.unix_timestamp()),
        );
        // RFC 9773 section 4.2: a time chosen at random in the window (kept while the
        // window keeps it), so that the CA's certificates are not all renewed at once.
        let renew_at = match cert.renew_at {
            Some(at) if (start..=end).contains(&at) => at,
            _ => rand::random_range(start..=end),
        };
        let ask_again_in = i64::try_from(advice.ask_again_in.as_secs())
            .unwrap_or(i64::MAX)
            .clamp(ARI_ASK_AGAIN_MIN_SECS, ARI_ASK_AGAIN_MAX_SECS);
        let input = Input::RenewalAdvised {
            certificate: cert.id.clone(),
            renew_at,
            ask_again_at: now.saturating_add(ask_again_in),
        };
        tracing::info!(
            pack = %pack.id.as_str(),
            serial = %cert.id,
            renew_at,
            window_start = start,
            window_end = end,
            explanation = advice.explanation_url.as_deref().unwrap_or(""),
            "the CA's renewal information (ARI) sets when the certificate is renewed"
        );
        Ok(self
            .apply(pack.clone(), now, |_| Some(input.clone()))
            .await?
            .is_some())
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

/// The shortest and longest wait before the CA's renewal information is asked for again,
/// whatever its `Retry-After` says.
const ARI_ASK_AGAIN_MIN_SECS: i64 = 3600;
const ARI_ASK_AGAIN_MAX_SECS: i64 = 86_400;

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
        AcmeErrorKind::AccountUnusable | AcmeErrorKind::AccountRevoked => "unauthorized",
        AcmeErrorKind::AccountUnknown => "accountDoesNotExist",
        AcmeErrorKind::OrderUnusable => "orderNotReady",
        AcmeErrorKind::BadNonce => "badNonce",
        AcmeErrorKind::ServerError => "serverInternal",
        AcmeErrorKind::DirectoryUnreachable | AcmeErrorKind::Transport => "connection",
        AcmeErrorKind::Other(t) => return t.clone(),
    }
    .to_owned()
}
