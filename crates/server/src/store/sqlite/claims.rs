//! The lifecycle's side: claiming due packs under a lease, renewing and releasing
//! leases, and writing a batch of outcomes in one transaction.

use super::packs::update_pack_row;
use super::{SqliteStore, clamp, corrupt};
use crate::model::{Pack, PackId, ZoneId};
use crate::store::cache::Touch;
use crate::store::webhooks::OutboxEvent;
use crate::store::{Claim, SealedKey, StoreError, WriteMode};
use rusqlite::params;
use std::sync::Arc;

/// Extends the live leases of one owner (?1) as of ?2 by ?3 seconds; found through the
/// `packs_by_lease_owner` index.
pub(super) const RENEW_LEASES: &str = "UPDATE packs SET lease_until = ?2 + ?3 \
                            WHERE lease_owner = ?1 AND lease_until > ?2";
impl SqliteStore {
    pub(in crate::store) fn renew_leases(
        &self,
        owner: &str,
        wall_now: i64,
        lease_secs: i64,
    ) -> Result<u64, StoreError> {
        self.write(Touch::Nothing, |tx| {
            let renewed = tx
                .prepare_cached(RENEW_LEASES)?
                .execute(params![owner, wall_now, lease_secs])?;
            Ok(renewed as u64)
        })
    }

    pub(in crate::store) fn claim_due(
        &self,
        claim: &Claim<'_>,
    ) -> Result<Vec<(ZoneId, PackId)>, StoreError> {
        // The due rows come from three index range scans (hosts by due time, pending packs by
        // deadline, active packs by expiry), so the cost follows the due work, not the
        // number of packs stored. Work past validation comes first, as on PostgreSQL (a
        // pack validated but not issued or deployed whose lease ran out).
        let skip = skip_list(claim.skip_cas);
        self.write(Touch::Nothing, |tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE packs SET lease_owner = ?1, lease_until = ?2 + ?3 \
                 WHERE id IN ( \
                   SELECT p.id FROM ( \
                       SELECT pack_id AS id, next_due_at AS due FROM pack_hosts \
                       WHERE next_due_at <= ?4 \
                     UNION ALL \
                       SELECT id, stage_deadline FROM packs \
                       WHERE state = 'pending_validation' AND stage_deadline <= ?4 \
                     UNION ALL \
                       SELECT id, cert_not_after FROM packs \
                       WHERE state = 'active' AND cert_not_after <= ?4 \
                   ) d JOIN packs p ON p.id = d.id \
                   WHERE (p.lease_until IS NULL OR p.lease_until <= ?2) \
                     AND p.brand_check = 0 \
                     AND (p.state = 'pending_validation' \
                          OR p.ca NOT IN (SELECT value FROM json_each(?6))) \
                     AND p.state IN ('initializing', 'pending_validation', 'pending_issuance', \
                                     'pending_deployment', 'active') \
                   GROUP BY p.id, p.state \
                   ORDER BY p.state IN ('pending_issuance', 'pending_deployment') DESC, \
                            MIN(d.due), MIN(p.seq) LIMIT ?5) \
                 RETURNING zone_id, id",
            )?;
            let rows = stmt.query_map(
                params![
                    claim.owner,
                    claim.wall_now,
                    claim.lease_secs,
                    claim.now,
                    clamp(claim.limit),
                    skip
                ],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (zone, id) = row?;
                out.push((
                    ZoneId::parse(&zone).map_err(|_| corrupt("zone id", &zone))?,
                    PackId::parse(&id).map_err(|_| corrupt("pack id", &id))?,
                ));
            }
            Ok(out)
        })
    }

    pub(in crate::store) fn release_leases_of(&self, owner: &str) -> Result<u64, StoreError> {
        self.write(Touch::Nothing, |tx| {
            Ok(tx.execute(
                "UPDATE packs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?1",
                [owner],
            )? as u64)
        })
    }

    pub(in crate::store) fn leased_elsewhere(
        &self,
        zone: &ZoneId,
        owner: Option<&str>,
        wall_now: i64,
    ) -> Result<Vec<PackId>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id FROM packs WHERE zone_id = ?1 AND lease_owner IS NOT NULL \
                 AND lease_until > ?2 AND (?3 IS NULL OR lease_owner != ?3)",
            )?;
            let ids = stmt
                .query_map(params![zone.as_str(), wall_now, owner], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            ids.iter()
                .map(|id| PackId::parse(id).map_err(|_| corrupt("pack id", id)))
                .collect()
        })
    }

    pub(in crate::store) fn write_lifecycle_batch(
        &self,
        owner: &str,
        updates: &mut [Pack],
        events: &[Vec<OutboxEvent>],
        modes: &[WriteMode],
        releases: &[PackId],
        keys: &[SealedKey],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        // Before the transaction that reads the endpoints: a change of them after this
        // epoch keeps what it read out of the cache.
        let epoch = self.cache_epoch();
        let mut endpoints_read = None;
        let (outcomes, _) = self.write_then(
            |tx| {
                let mut put_key = tx.prepare_cached(super::keys::PUT_KEY)?;
                for key in keys {
                    put_key.execute(params![key.pack.as_str(), key.serial, key.sealed])?;
                }
                let mut outcomes = Vec::with_capacity(updates.len());
                // The packs as now stored, for the cache's views.
                let mut written = Vec::with_capacity(updates.len());
                // The leases given up with their packs' writes.
                let mut released_with = Vec::new();
                // The webhook endpoints, read once for the whole batch.
                let endpoints = if events.iter().any(|e| !e.is_empty()) {
                    let read: Arc<[_]> = super::outbox::endpoints(tx)?.into();
                    endpoints_read = Some(Arc::clone(&read));
                    read
                } else {
                    Arc::from([])
                };
                for (i, pack) in updates.iter().enumerate() {
                    // A conflict or a deleted pack changed nothing: it fails alone. Any
                    // other error ends the transaction, rolling back the whole batch.
                    let mode = modes.get(i).copied().unwrap_or_default();
                    outcomes.push(match update_pack_row(tx, pack, !mode.hosts_unchanged) {
                        Ok(()) => {
                            // The transition's events, in the same transaction.
                            if let Some(events) = events.get(i) {
                                super::outbox::insert_events_for(tx, &endpoints, events)?;
                            }
                            if mode.release {
                                released_with.push(&pack.id);
                            }
                            let mut stored = pack.clone();
                            stored.version += 1;
                            written.push(stored);
                            Ok(())
                        }
                        Err(e @ (StoreError::Conflict | StoreError::NotFound)) => Err(e),
                        Err(e) => return Err(e),
                    });
                }
                let mut release = tx.prepare_cached(
                    "UPDATE packs SET lease_owner = NULL, lease_until = NULL \
                     WHERE id = ?1 AND lease_owner = ?2",
                )?;
                for id in releases.iter().chain(released_with) {
                    release.execute([id.as_str(), owner])?;
                }
                Ok((outcomes, written))
            },
            |(_, written)| Touch::Packs(std::mem::take(written)),
        )?;
        // Known now: the next transitions make no events when no endpoint could want them.
        if let (Some(epoch), Some(read)) = (epoch, endpoints_read) {
            self.inner.cache.put_webhook_endpoints(epoch, read);
        }
        for (pack, outcome) in updates.iter_mut().zip(&outcomes) {
            if outcome.is_ok() {
                pack.version += 1;
            }
        }
        Ok(outcomes)
    }
}

/// The authorities a claim skips, as the JSON array `json_each` reads.
fn skip_list(cas: &[crate::model::CaChoice]) -> String {
    serde_json::Value::from(cas.iter().map(|ca| ca.as_str()).collect::<Vec<_>>()).to_string()
}
