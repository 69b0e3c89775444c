//! The revocation queue on PostgreSQL (see `store/revocations.rs`). Nodes claim rows
//! `FOR UPDATE SKIP LOCKED` under a lease, so each revocation is attempted by one node
//! at a time.

use super::PgStore;
use crate::model::{PackId, ZoneId};
use crate::store::StoreError;
use crate::store::revocations::{QueuedRevocation, RevocationClaim};
use crate::store::wall_ms;
use tokio_postgres::Row;

/// The queue's part of the schema (version 6).
pub(super) const REVOCATIONS_SCHEMA: &str = include_str!("revocations.sql");

const COLUMNS: &str = "id, pack_id, zone_id, ca, serial, chain_pem, not_after, attempts, \
    next_attempt_ms, last_error, directory";

/// Queues the certificates an ACME CA issued of the packs about to be deleted (the
/// zone's, or the one pack `pack` of it), inside the deletion's transaction and before
/// its `DELETE`; the built-in CA's are not queued (no CA could revoke them).
pub(super) async fn record(
    tx: &tokio_postgres::Transaction<'_>,
    zone: &ZoneId,
    pack: Option<&PackId>,
) -> Result<(), StoreError> {
    let now = wall_ms();
    tx.execute(
        "INSERT INTO revocations (pack_id, zone_id, ca, serial, chain_pem, not_after, \
         created_ms, next_attempt_ms, directory) \
         SELECT id, zone_id, ca, cert_id, cert_chain_pem, cert_not_after, $3, $3, \
         cert_acme_directory FROM packs \
         WHERE zone_id = $1 AND ($2::TEXT IS NULL OR id = $2) AND cert_chain_pem IS NOT NULL \
         AND cert_id IS NOT NULL AND cert_not_after IS NOT NULL \
         AND cert_acme_directory IS NOT NULL",
        &[&zone.as_str(), &pack.map(PackId::as_str), &now],
    )
    .await?;
    Ok(())
}

fn row(r: &Row) -> Result<QueuedRevocation, StoreError> {
    Ok(QueuedRevocation {
        id: r.try_get(0)?,
        pack_id: r.try_get(1)?,
        zone_id: r.try_get(2)?,
        ca: r.try_get(3)?,
        serial: r.try_get(4)?,
        chain_pem: r.try_get(5)?,
        not_after: r.try_get(6)?,
        attempts: r.try_get(7)?,
        next_attempt_ms: r.try_get(8)?,
        last_error: r.try_get(9)?,
        directory: r.try_get(10)?,
    })
}

impl PgStore {
    pub(in crate::store) async fn claim_revocations(
        &self,
        claim: &RevocationClaim<'_>,
    ) -> Result<Vec<QueuedRevocation>, StoreError> {
        let limit = i64::try_from(claim.limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "UPDATE revocations SET lease_owner = $1, lease_until = $2 WHERE id IN \
                     (SELECT id FROM revocations WHERE next_attempt_ms <= $3 \
                      AND (lease_owner IS NULL OR lease_until <= $3 OR lease_owner = $1) \
                      ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                     AND (lease_owner IS NULL OR lease_until <= $3 OR lease_owner = $1) \
                     RETURNING {COLUMNS}"
                ),
                &[&claim.owner, &claim.lease_until_ms, &claim.now_ms, &limit],
            )
            .await?;
        let mut claimed = rows.iter().map(row).collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|r| r.id);
        Ok(claimed)
    }

    pub(in crate::store) async fn finish_revocation(
        &self,
        id: i64,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "DELETE FROM revocations WHERE id = $1 AND lease_owner = $2",
                &[&id, &owner],
            )
            .await?
            > 0)
    }

    pub(in crate::store) async fn retry_revocation(
        &self,
        id: i64,
        owner: &str,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE revocations SET attempts = attempts + 1, next_attempt_ms = $3, \
                 last_error = $4, lease_owner = NULL, lease_until = NULL \
                 WHERE id = $1 AND lease_owner = $2",
                &[&id, &owner, &next_attempt_ms, &error],
            )
            .await?
            > 0)
    }

    pub(in crate::store) async fn queued_revocations(
        &self,
    ) -> Result<Vec<QueuedRevocation>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {COLUMNS} FROM revocations ORDER BY id"),
                &[],
            )
            .await?;
        rows.iter().map(row).collect()
    }
}
