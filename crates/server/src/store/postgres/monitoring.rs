//! The metrics' counts (see `store::monitoring`) and the readiness ping.

use super::PgStore;
use crate::store::StoreError;
use crate::store::monitoring::{DAY, MonitoringSnapshot, PackCount};

impl PgStore {
    pub(in crate::store) async fn monitoring(
        &self,
        now: i64,
        wall_now: i64,
        per_zone: bool,
    ) -> Result<MonitoringSnapshot, StoreError> {
        let client = self.client().await?;
        let packs = if per_zone {
            client
                .query(
                    "SELECT p.state, z.name, COUNT(*)::bigint FROM packs p \
                     JOIN zones z ON z.id = p.zone_id GROUP BY p.state, z.name",
                    &[],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(PackCount {
                        status: r.try_get(0)?,
                        zone: Some(r.try_get(1)?),
                        count: r.try_get::<_, i64>(2)?.max(0) as u64,
                    })
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()?
        } else {
            client
                .query(
                    "SELECT state, COUNT(*)::bigint FROM packs GROUP BY state",
                    &[],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(PackCount {
                        status: r.try_get(0)?,
                        zone: None,
                        count: r.try_get::<_, i64>(1)?.max(0) as u64,
                    })
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()?
        };
        let row = client
            .query_one(
                "SELECT COUNT(*)::bigint, MIN(cert_not_after), \
                 COUNT(*) FILTER (WHERE cert_not_after <= $1::bigint)::bigint, \
                 COUNT(*) FILTER (WHERE cert_not_after <= $2::bigint)::bigint \
                 FROM packs WHERE state = 'active' AND cert_not_after IS NOT NULL",
                &[&(now + 7 * DAY), &(now + 30 * DAY)],
            )
            .await?;
        let due = client
            .query_one(
                "SELECT COUNT(*)::bigint FROM ( \
                   SELECT p.id FROM ( \
                       SELECT pack_id AS id FROM pack_hosts WHERE next_due_at <= $1::bigint \
                     UNION ALL \
                       SELECT id FROM packs \
                       WHERE state = 'pending_validation' AND stage_deadline <= $1::bigint \
                     UNION ALL \
                       SELECT id FROM packs WHERE state = 'active' AND cert_not_after <= $1::bigint \
                   ) d JOIN packs p ON p.id = d.id \
                   WHERE (p.lease_until IS NULL OR p.lease_until <= $2::bigint) \
                     AND NOT p.brand_check \
                     AND p.state IN ('initializing', 'pending_validation', 'pending_issuance', \
                                     'pending_deployment', 'active') \
                   GROUP BY p.id) due",
                &[&now, &wall_now],
            )
            .await?;
        let revocations = client
            .query_one("SELECT COUNT(*)::bigint FROM revocations", &[])
            .await?;
        Ok(MonitoringSnapshot {
            packs,
            active: row.try_get::<_, i64>(0)?.max(0) as u64,
            earliest_expiry: row.try_get(1)?,
            expiring_7d: row.try_get::<_, i64>(2)?.max(0) as u64,
            expiring_30d: row.try_get::<_, i64>(3)?.max(0) as u64,
            due_now: due.try_get::<_, i64>(0)?.max(0) as u64,
            revocations_queued: revocations.try_get::<_, i64>(0)?.max(0) as u64,
        })
    }

    pub(in crate::store) async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok(())
    }
}
