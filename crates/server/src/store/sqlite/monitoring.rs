//! The metrics' counts (see `store::monitoring`) and the readiness ping.

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::monitoring::{DAY, MonitoringSnapshot, PackCount};
use rusqlite::params;

/// Packs with due work not under a live lease: the claim's due sets (see `claims.rs`),
/// counted.
const DUE_NOW: &str = "SELECT COUNT(*) FROM ( \
       SELECT p.id FROM ( \
           SELECT pack_id AS id FROM pack_hosts WHERE next_due_at <= ?1 \
         UNION ALL \
           SELECT id FROM packs WHERE state = 'pending_validation' AND stage_deadline <= ?1 \
         UNION ALL \
           SELECT id FROM packs WHERE state = 'active' AND cert_not_after <= ?1 \
       ) d JOIN packs p ON p.id = d.id \
       WHERE (p.lease_until IS NULL OR p.lease_until <= ?2) \
         AND p.brand_check = 0 \
         AND p.state IN ('initializing', 'pending_validation', 'pending_issuance', \
                         'pending_deployment', 'active') \
       GROUP BY p.id)";

impl SqliteStore {
    pub(in crate::store) fn monitoring(
        &self,
        now: i64,
        wall_now: i64,
        per_zone: bool,
    ) -> Result<MonitoringSnapshot, StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            let mut packs = Vec::new();
            if per_zone {
                let mut stmt = tx.prepare_cached(
                    "SELECT p.state, z.name, COUNT(*) FROM packs p JOIN zones z ON z.id = p.zone_id \
                     GROUP BY p.state, z.name",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(PackCount {
                        status: r.get(0)?,
                        zone: Some(r.get(1)?),
                        count: r.get::<_, i64>(2)?.max(0) as u64,
                    })
                })?;
                for row in rows {
                    packs.push(row?);
                }
            } else {
                let mut stmt =
                    tx.prepare_cached("SELECT state, COUNT(*) FROM packs GROUP BY state")?;
                let rows = stmt.query_map([], |r| {
                    Ok(PackCount {
                        status: r.get(0)?,
                        zone: None,
                        count: r.get::<_, i64>(1)?.max(0) as u64,
                    })
                })?;
                for row in rows {
                    packs.push(row?);
                }
            }
            let (active, earliest, within_7, within_30) = tx
                .prepare_cached(
                    "SELECT COUNT(*), MIN(cert_not_after), \
                     COALESCE(SUM(cert_not_after <= ?1), 0), COALESCE(SUM(cert_not_after <= ?2), 0) \
                     FROM packs WHERE state = 'active' AND cert_not_after IS NOT NULL",
                )?
                .query_row(params![now + 7 * DAY, now + 30 * DAY], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?;
            let due: i64 = tx
                .prepare_cached(DUE_NOW)?
                .query_row(params![now, wall_now], |r| r.get(0))?;
            let revocations: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM revocations")?
                .query_row([], |r| r.get(0))?;
            Ok(MonitoringSnapshot {
                packs,
                active: active.max(0) as u64,
                earliest_expiry: earliest,
                expiring_7d: within_7.max(0) as u64,
                expiring_30d: within_30.max(0) as u64,
                due_now: due.max(0) as u64,
                revocations_queued: revocations.max(0) as u64,
            })
        })
    }

    pub(in crate::store) fn ping(&self) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            conn.prepare_cached("SELECT 1")?
                .query_row([], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
    }
}
