//! Revocation of deleted packs' certificates at their ACME CA (`--acme-revoke-on-delete`),
//! worked off the store's queue (`store/revocations.rs`), which the deletions fill in
//! their own transactions.
//!
//! A task of the worker claims due rows under a lease (so on several nodes each row is
//! attempted by one at a time), revokes each at the CA of its name, signed by that
//! directory's account, and records the outcome: revoked (or already revoked), the row is
//! removed; refused or unreachable, it is tried again after a backoff (5 s, doubling, up
//! to an hour, with jitter) until the certificate expires. A row whose directory (the one
//! that ordered the certificate, see `QueuedRevocation::directory`) is not configured
//! here, or found while revocation is off, is dropped: nothing to revoke. Certificates of
//! the built-in CA are never queued.

use super::Worker;
use crate::issuance::Issuer;
use crate::issuance::acme::{AcmeErrorKind, AcmeIssuer};
use crate::model::CaChoice;
use crate::store::{QueuedRevocation, RevocationClaim, wall_ms};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most revocations claimed at once.
const REVOCATION_BATCH: usize = 32;

/// The first retry's delay; each failure doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The wait before attempt `attempts + 1` after `attempts` failures (at least 1), times a
/// random factor in [0.75, 1.25).
pub(crate) fn backoff_ms(attempts: i64) -> i64 {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF);
    let jitter = 0.75 + rand::random::<f64>() / 2.0;
    (base.as_secs_f64() * jitter * 1000.0) as i64
}

impl Worker {
    /// Works off the revocation queue until `cancel` fires: a pass whenever a deletion
    /// on this node queued something ([`crate::lifecycle::Signals::revocations_queued`])
    /// and at each poll interval (deletions by other nodes or by `zonecert zone delete`,
    /// retries that came due). A revocation running when `cancel` fires is dropped; its
    /// lease is taken back by this node's next start, or runs out for the others.
    pub(super) async fn work_off_revocations(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let full = tokio::select! {
                () = cancel.cancelled() => return,
                full = self.revocation_pass() => full,
            };
            if full {
                continue;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.signals.revocations_woken() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// Claims due revocations and works them off side by side; returns whether the claim
    /// was full (more may be due).
    async fn revocation_pass(self: &Arc<Self>) -> bool {
        let now = wall_ms();
        let lease_ms = i64::try_from(self.leases.lease.as_millis()).unwrap_or(i64::MAX);
        let claim = RevocationClaim {
            owner: &self.owner,
            now_ms: now,
            lease_until_ms: now.saturating_add(lease_ms),
            limit: REVOCATION_BATCH,
        };
        let claimed = match self.db.claim_revocations(&claim).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "claiming due revocations failed");
                return false;
            }
        };
        let full = claimed.len() == REVOCATION_BATCH;
        futures_util::future::join_all(claimed.into_iter().map(|row| self.revoke(row))).await;
        full
    }

    /// The ACME issuer whose account ordered the row's certificate: the one configured
    /// with the row's directory, or for a row without one (queued before the directory
    /// was kept) the issuer of its CA name.
    fn revoking_issuer(&self, row: &QueuedRevocation) -> Option<Arc<AcmeIssuer>> {
        let acme = |issuer: &Issuer| match issuer {
            Issuer::Acme(acme) => Some(Arc::clone(acme)),
            Issuer::Builtin(_) => None,
        };
        match row.directory.as_deref().filter(|d| !d.is_empty()) {
            Some(directory) => self
                .acme
                .values()
                .filter_map(acme)
                .find(|a| a.settings().directory == directory),
            None => CaChoice::parse(&row.ca).and_then(|ca| acme(self.issuer_for(ca))),
        }
    }

    /// Revokes one queued certificate and records the outcome.
    async fn revoke(&self, row: QueuedRevocation) {
        let acme = match self.revoking_issuer(&row) {
            Some(acme) if self.config.acme.revoke_on_delete => acme,
            _ => {
                tracing::debug!(
                    pack = %row.pack_id,
                    serial = %row.serial,
                    ca = %row.ca,
                    directory = row.directory.as_deref().unwrap_or(""),
                    "a deleted pack's certificate is not revoked: the ACME directory that \
                     ordered it is not configured here, or --acme-revoke-on-delete is off"
                );
                self.finish_revocation(&row).await;
                return;
            }
        };
        if row.not_after <= self.clock.now() {
            tracing::warn!(
                pack = %row.pack_id,
                serial = %row.serial,
                ca = %row.ca,
                attempts = row.attempts,
                last_error = row.last_error.as_deref().unwrap_or(""),
                "the deleted pack's certificate expired before it could be revoked"
            );
            self.finish_revocation(&row).await;
            return;
        }
        match acme.revoke(&row.chain_pem).await {
            Ok(()) => {
                tracing::info!(
                    pack = %row.pack_id,
                    serial = %row.serial,
                    ca = %row.ca,
                    "revoked the deleted pack's certificate"
                );
                self.finish_revocation(&row).await;
            }
            Err(e) if e.kind == AcmeErrorKind::Other("alreadyRevoked".into()) => {
                tracing::info!(
                    pack = %row.pack_id,
                    serial = %row.serial,
                    ca = %row.ca,
                    "the deleted pack's certificate was revoked already"
                );
                self.finish_revocation(&row).await;
            }
            Err(e) => {
                let attempts = row.attempts.saturating_add(1);
                let delay = backoff_ms(attempts);
                tracing::warn!(
                    pack = %row.pack_id,
                    serial = %row.serial,
                    ca = %row.ca,
                    attempts,
                    retry_in_ms = delay,
                    error = %e,
                    "revoking the deleted pack's certificate failed; tried again later"
                );
                let next = wall_ms().saturating_add(delay);
                if let Err(e) = self
                    .db
                    .retry_revocation(row.id, &self.owner, next, &e.to_string())
                    .await
                {
                    tracing::warn!(error = %e, serial = %row.serial, "recording a failed revocation failed; its lease runs out and it is tried again");
                }
            }
        }
    }

    async fn finish_revocation(&self, row: &QueuedRevocation) {
        if let Err(e) = self.db.finish_revocation(row.id, &self.owner).await {
            tracing::warn!(error = %e, serial = %row.serial, "removing a finished revocation from the queue failed; it is tried again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn backoff_doubles_from_five_seconds_up_to_an_hour() {
        for (attempts, base) in [(1, 5_000), (2, 10_000), (3, 20_000), (12, 3_600_000)] {
            for _ in 0..50 {
                let ms = backoff_ms(attempts);
                assert!(ms >= base * 3 / 4 && ms < base * 5 / 4, "{attempts}: {ms}");
            }
        }
        assert!(backoff_ms(i64::MAX) <= 4_500_000);
    }
}
