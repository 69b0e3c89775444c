//! The lifecycle's side: claiming due packs under a lease (`FOR UPDATE SKIP LOCKED`, so
//! nodes claiming at once take different packs without waiting for each other), renewing
//! and releasing leases, and writing a batch of outcomes in one transaction.

use super::packs::{prepare_update, update_pack_row};
use super::{PgStore, clamp, corrupt};
use crate::model::{Pack, PackId, ZoneId};
use crate::store::cache::Touch;
use crate::store::webhooks::OutboxEvent;
use crate::store::{Claim, SealedKey, StoreError, WriteMode};

impl PgStore {
    pub(in crate::store) async fn renew_leases(
        &self,
        owner: &str,
        wall_now: i64,
        lease_secs: i64,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE packs SET lease_until = $2::bigint + $3::bigint \
                 WHERE lease_owner = $1 AND lease_until > $2::bigint",
                &[&owner, &wall_now, &lease_secs],
            )
            .await?)
    }

    pub(in crate::store) async fn claim_due(
        &self,
        claim: &Claim<'_>,
    ) -> Result<Vec<(ZoneId, PackId)>, StoreError> {
        let client = self.client().await?;
        let skip: Vec<&str> = claim.skip_cas.iter().map(|ca| ca.as_str()).collect();
        // `due` finds the due packs through the indexes on due times, as SQLite's claim
        // does; `locked` takes their rows, skipping the rows another node is claiming
        // right now, and checks the lease again on the row as it is then (a node that
        // claimed it since this statement's snapshot has committed a live lease). The
        // skipped packs are not lost: they are that node's, or due at the next claim.
        // Work past validation comes first (a pack validated but not issued or deployed
        // whose lease ran out: its node died), however long the packs still to validate
        // have been due, so that a dead node's work in progress does not wait behind a
        // whole queue of validations.
        let rows = client
            .query(
                "WITH due AS ( \
                   SELECT p.id FROM ( \
                       SELECT pack_id AS id, next_due_at AS due FROM pack_hosts \
                       WHERE next_due_at <= $4 \
                     UNION ALL \
                       SELECT id, stage_deadline FROM packs \
                       WHERE state = 'pending_validation' AND stage_deadline <= $4 \
                     UNION ALL \
                       SELECT id, cert_not_after FROM packs \
                       WHERE state = 'active' AND cert_not_after <= $4 \
                   ) d JOIN packs p ON p.id = d.id \
                   WHERE (p.lease_until IS NULL OR p.lease_until <= $2::bigint) \
                     AND NOT p.brand_check \
                     AND (p.state = 'pending_validation' OR NOT (p.ca = ANY($6::text[]))) \
                     AND p.state IN ('initializing', 'pending_validation', 'pending_issuance', \
                                     'pending_deployment', 'active') \
                   GROUP BY p.id, p.state \
                   ORDER BY p.state IN ('pending_issuance', 'pending_deployment') DESC, \
                            MIN(d.due), MIN(p.seq) LIMIT $5), \
                 locked AS ( \
                   SELECT packs.id FROM packs JOIN due ON due.id = packs.id \
                   WHERE packs.lease_until IS NULL OR packs.lease_until <= $2::bigint \
                   FOR UPDATE OF packs SKIP LOCKED) \
                 UPDATE packs SET lease_owner = $1, lease_until = $2::bigint + $3::bigint \
                 FROM locked WHERE packs.id = locked.id \
                 RETURNING packs.zone_id, packs.id",
                &[
                    &claim.owner,
                    &claim.wall_now,
                    &claim.lease_secs,
                    &claim.now,
                    &clamp(claim.limit),
                    &skip,
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let zone: &str = r.try_get(0)?;
                let id: &str = r.try_get(1)?;
                Ok((
                    ZoneId::parse(zone).map_err(|_| corrupt("zone id", zone))?,
                    PackId::parse(id).map_err(|_| corrupt("pack id", id))?,
                ))
            })
            .collect()
    }

    pub(in crate::store) async fn release_leases_of(&self, owner: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE packs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1",
                &[&owner],
            )
            .await?)
    }

    pub(in crate::store) async fn leased_elsewhere(
        &self,
        zone: &ZoneId,
        owner: Option<&str>,
        wall_now: i64,
    ) -> Result<Vec<PackId>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id FROM packs WHERE zone_id = $1 AND lease_owner IS NOT NULL \
                 AND lease_until > $2::bigint AND ($3::text IS NULL OR lease_owner != $3)",
                &[&zone.as_str(), &wall_now, &owner],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: &str = r.try_get(0)?;
                PackId::parse(id).map_err(|_| corrupt("pack id", id))
            })
            .collect()
    }

    pub(in crate::store) async fn write_lifecycle_batch(
        &self,
        owner: &str,
        updates: &mut [Pack],
        events: &[Vec<OutboxEvent>],
        modes: &[WriteMode],
        releases: &[PackId],
        keys: &[SealedKey],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if !keys.is_empty() {
            let put_key = tx.prepare(super::keys::PUT_KEY).await?;
            for key in keys {
                tx.execute(&put_key, &[&key.pack.as_str(), &key.serial, &key.sealed])
                    .await?;
            }
        }
        let update = prepare_update(&tx).await?;
        // The webhook endpoints, read once for the whole batch.
        let endpoints = if events.iter().any(|e| !e.is_empty()) {
            super::outbox::endpoints(&*tx).await?
        } else {
            Vec::new()
        };
        let mut outcomes = Vec::with_capacity(updates.len());
        // The packs as now stored, for the cache's views.
        let mut written = Vec::with_capacity(updates.len());
        // Every lease given up: `releases`, and those that go with their packs' writes.
        let mut released: Vec<&str> = releases.iter().map(PackId::as_str).collect();
        for (i, pack) in updates.iter().enumerate() {
            // A conflict or a deleted pack changed nothing: it fails alone. Any other
            // error ends the transaction (dropped uncommitted: rolled back).
            let mode = modes.get(i).copied().unwrap_or_default();
            outcomes.push(
                match update_pack_row(&tx, &update, pack, !mode.hosts_unchanged).await {
                    Ok(()) => {
                        // The transition's events, in the same transaction.
                        if let Some(events) = events.get(i) {
                            super::outbox::insert_events_for(&tx, &endpoints, events).await?;
                        }
                        if mode.release {
                            released.push(pack.id.as_str());
                        }
                        let mut stored = pack.clone();
                        stored.version += 1;
                        written.push(stored);
                        Ok(())
                    }
                    Err(e @ (StoreError::Conflict | StoreError::NotFound)) => Err(e),
                    Err(e) => return Err(e),
                },
            );
        }
        tx.execute(
            "UPDATE packs SET lease_owner = NULL, lease_until = NULL \
             WHERE id = ANY($1) AND lease_owner = $2",
            &[&released, &owner],
        )
        .await?;
        self.commit(tx, Touch::Packs(written)).await?;
        for (pack, outcome) in updates.iter_mut().zip(&outcomes) {
            if outcome.is_ok() {
                pack.version += 1;
            }
        }
        Ok(outcomes)
    }
}
