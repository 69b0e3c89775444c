//! Zones, and a zone's view (the zone with its packs, read in one snapshot).

use super::rows::{HOST_COLUMNS, PACK_COLUMNS, ZONE_COLUMNS, read_packs, zone, zone_at};
use super::{PgStore, clamp, is_unique_violation};
use crate::model::{Zone, ZoneId};
use crate::store::cache::{Touch, ZoneView};
use crate::store::{Page, StoreError};
use std::sync::{Arc, LazyLock};

/// The transaction-scoped advisory lock zone inserts take: whether a new zone nests in
/// another depends on rows that may not exist yet, which no row lock covers, so two
/// nodes inserting `a.example.com` and `example.com` at once would both pass the check.
const ZONE_INSERT_LOCK: i64 = 0x7a6f_6e65_7a6f_6e65;

impl PgStore {
    pub(in crate::store) async fn insert_zone(
        &self,
        new: &Zone,
        allow_nested: bool,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ZONE_INSERT_LOCK])
            .await?;
        let name = new.name.as_str();
        let taken: bool = tx
            .query_one(
                "SELECT EXISTS(SELECT 1 FROM zones WHERE name = $1 OR id = $2)",
                &[&name, &new.id.as_str()],
            )
            .await?
            .try_get(0)?;
        if taken {
            return Err(StoreError::Duplicate(format!("zone {}", new.name)));
        }
        if !allow_nested {
            let ancestors: Vec<&str> = name
                .match_indices('.')
                .map(|(i, _)| &name[i + 1..])
                .collect();
            // Host names hold no LIKE wildcards (`%`, `_` are not valid in them).
            let other = tx
                .query_opt(
                    "SELECT name FROM zones WHERE name = ANY($1) OR name LIKE '%.' || $2 LIMIT 1",
                    &[&ancestors, &name],
                )
                .await?;
            if let Some(row) = other {
                return Err(StoreError::Nested {
                    zone: name.to_owned(),
                    other: row.try_get(0)?,
                });
            }
        }
        tx.execute(
            "INSERT INTO zones (id, name, created_at) VALUES ($1, $2, $3)",
            &[&new.id.as_str(), &name, &new.created_at],
        )
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Duplicate(format!("zone {}", new.name))
            } else {
                e.into()
            }
        })?;
        self.commit(tx, Touch::Zone(&new.id)).await
    }

    pub(in crate::store) async fn zone(&self, id: &ZoneId) -> Result<Option<Zone>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {ZONE_COLUMNS} FROM zones WHERE id = $1"),
                &[&id.as_str()],
            )
            .await?;
        row.as_ref().map(zone).transpose()
    }

    pub(in crate::store) async fn list_zones(
        &self,
        name: Option<&str>,
        only: Option<&[ZoneId]>,
        offset: u64,
        limit: u64,
    ) -> Result<Page<Zone>, StoreError> {
        let only: Option<Vec<&str>> = only.map(|ids| ids.iter().map(ZoneId::as_str).collect());
        let filter = "($1::text IS NULL OR name = $1) AND ($2::text[] IS NULL OR id = ANY($2))";
        let client = self.client().await?;
        let total: i64 = client
            .query_one(
                &format!("SELECT COUNT(*) FROM zones WHERE {filter}"),
                &[&name, &only],
            )
            .await?
            .try_get(0)?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ZONE_COLUMNS} FROM zones WHERE {filter} \
                     ORDER BY name LIMIT $3 OFFSET $4"
                ),
                &[&name, &only, &clamp(limit), &clamp(offset)],
            )
            .await?;
        Ok(Page {
            items: rows.iter().map(zone).collect::<Result<_, _>>()?,
            total: total.max(0) as u64,
        })
    }

    pub(in crate::store) async fn delete_zone(&self, id: &ZoneId) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        super::revocations::record(&tx, id, None).await?;
        let deleted = tx
            .execute("DELETE FROM zones WHERE id = $1", &[&id.as_str()])
            .await?
            > 0;
        self.commit(tx, Touch::Zone(id)).await?;
        Ok(deleted)
    }

    /// `epoch`: from [`PgStore::cache_epoch`], once per request; `None` reads past the
    /// cache.
    pub(in crate::store) async fn zone_with_packs(
        &self,
        epoch: Option<u64>,
        id: &ZoneId,
    ) -> Result<Option<Arc<ZoneView>>, StoreError> {
        Self::read_through(
            epoch,
            || self.inner.cache.zone(id),
            self.read_zone_view(id),
            |epoch, view| self.inner.cache.put_zone(epoch, view),
        )
        .await
    }

    async fn read_zone_view(&self, id: &ZoneId) -> Result<Option<ZoneView>, StoreError> {
        // One statement, so one snapshot of the zone and its packs (as SQLite's read
        // transaction gives) in one round trip, planned once per connection: this is
        // what a request whose zone is not in the cache waits for (every zone once after
        // a start, and every request while the change notices are not heard). It was a
        // transaction of two statements, each parsed and planned anew: six round trips.
        static ZONE_VIEW: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {PACK_COLUMNS}, {HOST_COLUMNS}, z.id, z.name, z.created_at \
                 FROM zones z LEFT JOIN (packs p JOIN pack_hosts h ON h.pack_id = p.id) \
                 ON p.zone_id = z.id WHERE z.id = $1 ORDER BY p.seq, h.position"
            )
        });
        let client = self.client().await?;
        let statement = client.prepare_cached(&ZONE_VIEW).await?;
        let rows = client.query(&statement, &[&id.as_str()]).await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        // The zone's columns come last; a zone without packs is one row with no pack.
        let found = zone_at(first, first.len().saturating_sub(3))?;
        let packs = match first.try_get::<_, Option<&str>>(0)? {
            Some(_) => read_packs(&rows)?,
            None => Vec::new(),
        };
        Ok(Some(ZoneView::new(found, packs)))
    }
}
