//! The revocation queue on SQLite (see `store/revocations.rs`).

use super::SqliteStore;
use crate::model::{PackId, ZoneId};
use crate::store::StoreError;
use crate::store::cache::Touch;
use crate::store::revocations::{QueuedRevocation, RevocationClaim};
use crate::store::wall_ms;
use rusqlite::{Row, Transaction, params};

/// The queue's part of the schema (version 7).
pub(super) const REVOCATIONS_SCHEMA: &str = include_str!("revocations.sql");

/// The queue's column added in schema 9 (a new database's is schema 7's table, then this).
pub(super) const DIRECTORY_COLUMN: &str = "ALTER TABLE revocations ADD COLUMN directory TEXT;";

const COLUMNS: &str = "id, pack_id, zone_id, ca, serial, chain_pem, not_after, attempts, \
    next_attempt_ms, last_error, directory";

/// Queues the certificates an ACME CA issued of the packs about to be deleted (the
/// zone's, or the one pack `pack` of it), inside the deletion's transaction and before
/// its `DELETE`; the built-in CA's are not queued (no CA could revoke them).
pub(super) fn record(
    tx: &Transaction<'_>,
    zone: &ZoneId,
    pack: Option<&PackId>,
) -> Result<(), StoreError> {
    let now = wall_ms();
    tx.prepare_cached(
        "INSERT INTO revocations (pack_id, zone_id, ca, serial, chain_pem, not_after, \
         created_ms, next_attempt_ms, directory) \
         SELECT id, zone_id, ca, cert_id, cert_chain_pem, cert_not_after, ?3, ?3, \
         cert_acme_directory FROM packs \
         WHERE zone_id = ?1 AND (?2 IS NULL OR id = ?2) AND cert_chain_pem IS NOT NULL \
         AND cert_id IS NOT NULL AND cert_not_after IS NOT NULL \
         AND cert_acme_directory IS NOT NULL",
    )?
    .execute(params![zone.as_str(), pack.map(PackId::as_str), now])?;
    Ok(())
}

fn row(r: &Row<'_>) -> rusqlite::Result<QueuedRevocation> {
    Ok(QueuedRevocation {
        id: r.get(0)?,
        pack_id: r.get(1)?,
        zone_id: r.get(2)?,
        ca: r.get(3)?,
        serial: r.get(4)?,
        chain_pem: r.get(5)?,
        not_after: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_ms: r.get(8)?,
        last_error: r.get(9)?,
        directory: r.get(10)?,
    })
}

impl SqliteStore {
    pub(in crate::store) fn claim_revocations(
        &self,
        claim: &RevocationClaim<'_>,
    ) -> Result<Vec<QueuedRevocation>, StoreError> {
        let limit = i64::try_from(claim.limit).unwrap_or(i64::MAX);
        // Read first: the worker asks at every poll, and an empty queue (the usual case)
        // then costs no write transaction, nor a wait for the writer.
        let due = self.with_conn(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM revocations WHERE next_attempt_ms <= ?2 \
                     AND (lease_owner IS NULL OR lease_until <= ?2 OR lease_owner = ?1))",
                )?
                .query_row(params![claim.owner, claim.now_ms], |r| r.get::<_, bool>(0))?)
        })?;
        if !due {
            return Ok(Vec::new());
        }
        self.write(Touch::Nothing, |tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "UPDATE revocations SET lease_owner = ?1, lease_until = ?2 WHERE id IN \
                 (SELECT id FROM revocations WHERE next_attempt_ms <= ?3 \
                  AND (lease_owner IS NULL OR lease_until <= ?3 OR lease_owner = ?1) \
                  ORDER BY id LIMIT ?4) RETURNING {COLUMNS}"
            ))?;
            let mut rows = stmt
                .query_map(
                    params![claim.owner, claim.lease_until_ms, claim.now_ms, limit],
                    row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            rows.sort_by_key(|r| r.id);
            Ok(rows)
        })
    }

    pub(in crate::store) fn finish_revocation(
        &self,
        id: i64,
        owner: &str,
    ) -> Result<bool, StoreError> {
        self.write(Touch::Nothing, |tx| {
            Ok(tx.execute(
                "DELETE FROM revocations WHERE id = ?1 AND lease_owner = ?2",
                params![id, owner],
            )? > 0)
        })
    }

    pub(in crate::store) fn retry_revocation(
        &self,
        id: i64,
        owner: &str,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<bool, StoreError> {
        self.write(Touch::Nothing, |tx| {
            Ok(tx.execute(
                "UPDATE revocations SET attempts = attempts + 1, next_attempt_ms = ?3, \
                 last_error = ?4, lease_owner = NULL, lease_until = NULL \
                 WHERE id = ?1 AND lease_owner = ?2",
                params![id, owner, next_attempt_ms, error],
            )? > 0)
        })
    }

    pub(in crate::store) fn queued_revocations(&self) -> Result<Vec<QueuedRevocation>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM revocations ORDER BY id"))?;
            let rows = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }
}
