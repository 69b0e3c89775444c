//! Certificates of deleted packs waiting to be revoked at their ACME CA
//! (`--acme-revoke-on-delete`): a queue in the database, not in memory.
//!
//! Deleting a pack (the API's `DELETE`, a zone's deletion through the API or `zonecert
//! zone delete`, `zonecert pack reject`) records each deleted pack's certificate in
//! `revocations` in the same transaction as the deletion, so a crash between the
//! deletion's acknowledgement and the CA's answer loses nothing. The lifecycle
//! (`lifecycle::worker::revoke`) claims due rows under a lease, so one node works on
//! each, revokes them or drops them (the name is not an ACME CA here, or revocation is
//! off), and on failure writes when to try again. Only the lease holder records an
//! outcome; a node restarted under the same identity takes its own leases back at once.

use super::{Store, StoreError};

/// A deleted pack's certificate waiting in the revocation queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRevocation {
    /// The row's id.
    pub id: i64,
    /// The deleted pack.
    pub pack_id: String,
    /// Its zone.
    pub zone_id: String,
    /// The pack's certificate-authority name (`lets_encrypt`, ...), as stored: for logs,
    /// and to find the CA of a row without `directory`.
    pub ca: String,
    /// The ACME directory that ordered the certificate. The revocation is signed by that
    /// directory's account (accounts are per directory: `acme_accounts`, and the account
    /// file's name), and the URL says which CA that is unambiguously: a name can be
    /// pointed at another directory since (staging, then production), whose account never
    /// ordered the certificate and whose CA never issued it. `None` or empty for rows and
    /// certificates recorded before the directory was kept: found by `ca` then.
    pub directory: Option<String>,
    /// The certificate's serial (hex).
    pub serial: String,
    /// The leaf followed by its chain, PEM.
    pub chain_pem: String,
    /// The certificate's `notAfter` (Unix seconds): past it, nothing is left to revoke.
    pub not_after: i64,
    /// Failed attempts so far.
    pub attempts: i64,
    /// When the next attempt is due (Unix milliseconds, wall clock).
    pub next_attempt_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// A claim of due revocations: by whom, until when, how many.
#[derive(Debug, Clone, Copy)]
pub struct RevocationClaim<'a> {
    /// The claiming node (its lease owner name).
    pub owner: &'a str,
    /// Now, Unix milliseconds (wall clock).
    pub now_ms: i64,
    /// The lease's end, Unix milliseconds.
    pub lease_until_ms: i64,
    /// Most rows claimed.
    pub limit: usize,
}

impl Store {
    /// Leases up to `claim.limit` due revocations (those whose next attempt is due and
    /// that no other node holds under a live lease; this node's own leases are taken
    /// back) to `claim.owner`, oldest first.
    pub async fn claim_revocations(
        &self,
        claim: &RevocationClaim<'_>,
    ) -> Result<Vec<QueuedRevocation>, StoreError> {
        match self {
            Store::Sqlite(s) => s.claim_revocations(claim),
            Store::Postgres(s) => s.claim_revocations(claim).await,
        }
    }

    /// Removes a revocation that is done (revoked, or dropped), if `owner` still holds
    /// its lease; `false` otherwise (another node took it: it records the outcome).
    pub async fn finish_revocation(&self, id: i64, owner: &str) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.finish_revocation(id, owner),
            Store::Postgres(s) => s.finish_revocation(id, owner).await,
        }
    }

    /// Records a failed attempt and when to try again (`next_attempt_ms`), releasing the
    /// lease, if `owner` still holds it.
    pub async fn retry_revocation(
        &self,
        id: i64,
        owner: &str,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.retry_revocation(id, owner, next_attempt_ms, error),
            Store::Postgres(s) => s.retry_revocation(id, owner, next_attempt_ms, error).await,
        }
    }

    /// Every queued revocation, oldest first (for operators and tests).
    pub async fn queued_revocations(&self) -> Result<Vec<QueuedRevocation>, StoreError> {
        match self {
            Store::Sqlite(s) => s.queued_revocations(),
            Store::Postgres(s) => s.queued_revocations().await,
        }
    }
}
