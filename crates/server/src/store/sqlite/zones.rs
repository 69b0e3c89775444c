//! Zones, and the zone views the read cache keeps (a zone with its packs).

use super::packs::packs_of_zone;
use super::rows::{HOST_COLUMNS, PACK_COLUMNS, read_packs};
use super::{SqliteStore, clamp, connect, corrupt, read_snapshot, read_through};
use crate::model::{Hostname, Zone, ZoneId};
use crate::store::cache::{Touch, ZoneView};
use crate::store::{Page, StoreError};
use rusqlite::{OptionalExtension, params};
use std::sync::Arc;

/// Zones per read transaction when warming the cache: short transactions, so the
/// requests and writes that interleave with warming wait little for the CPU and locks
/// (8 zones of 100 packs are 1,600 rows).
pub(super) const WARM_CHUNK: i64 = 8;
impl SqliteStore {
    pub(in crate::store) fn insert_zone(
        &self,
        zone: &Zone,
        allow_nested: bool,
    ) -> Result<(), StoreError> {
        self.write(Touch::Zone(&zone.id), |tx| {
            let taken: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM zones WHERE name = ?1 OR id = ?2)",
                params![zone.name.as_str(), zone.id.as_str()],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::Duplicate(format!("zone {}", zone.name)));
            }
            if !allow_nested {
                // Zones above it through the name index (one lookup per ancestor), zones
                // below it by a scan of names: host names hold no LIKE wildcards.
                let name = zone.name.as_str();
                let ancestors: Vec<&str> = name
                    .match_indices('.')
                    .map(|(i, _)| &name[i + 1..])
                    .collect();
                let other: Option<String> = tx
                    .query_row(
                        "SELECT name FROM zones WHERE name IN (SELECT value FROM json_each(?1)) \
                         OR name LIKE '%.' || ?2 LIMIT 1",
                        params![
                            serde_json::to_string(&ancestors).map_err(super::encoding)?,
                            name
                        ],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(other) = other {
                    return Err(StoreError::Nested {
                        zone: name.to_owned(),
                        other,
                    });
                }
            }
            tx.execute(
                "INSERT INTO zones (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![zone.id.as_str(), zone.name.as_str(), zone.created_at],
            )?;
            Ok(())
        })
    }

    pub(in crate::store) fn zone(&self, id: &ZoneId) -> Result<Option<Zone>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id, name, created_at FROM zones WHERE id = ?1")?;
            let row = stmt
                .query_row([id.as_str()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                })
                .optional()?;
            row.map(zone_from_parts).transpose()
        })
    }

    pub(in crate::store) fn list_zones(
        &self,
        name: Option<&str>,
        only: Option<&[ZoneId]>,
        offset: u64,
        limit: u64,
    ) -> Result<Page<Zone>, StoreError> {
        self.with_conn(|conn| {
            let only_json = only
                .map(|ids| {
                    serde_json::to_string(&ids.iter().map(ZoneId::as_str).collect::<Vec<_>>())
                })
                .transpose()
                .map_err(super::encoding)?;
            let filter = "(?1 IS NULL OR name = ?1) \
                 AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2)))";
            let total: i64 = conn.query_row(
                &format!("SELECT COUNT(*) FROM zones WHERE {filter}"),
                params![name, only_json],
                |r| r.get(0),
            )?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT id, name, created_at FROM zones WHERE {filter} \
                 ORDER BY name LIMIT ?3 OFFSET ?4"
            ))?;
            let rows = stmt
                .query_map(params![name, only_json, clamp(limit), clamp(offset)], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Page {
                items: rows
                    .into_iter()
                    .map(zone_from_parts)
                    .collect::<Result<_, _>>()?,
                total: total.max(0) as u64,
            })
        })
    }

    pub(in crate::store) fn delete_zone(&self, id: &ZoneId) -> Result<bool, StoreError> {
        self.write(Touch::Zone(id), |tx| {
            super::revocations::record(tx, id, None)?;
            Ok(tx.execute("DELETE FROM zones WHERE id = ?1", [id.as_str()])? > 0)
        })
    }

    /// `epoch`: as for [`Self::user_by_email`].
    pub(in crate::store) fn zone_with_packs(
        &self,
        epoch: Option<u64>,
        id: &ZoneId,
    ) -> Result<Option<Arc<ZoneView>>, StoreError> {
        read_through(
            epoch,
            || self.inner.cache.zone(id),
            || {
                self.with_conn(|conn| {
                    // One read transaction: one snapshot, and one lock round-trip instead
                    // of two.
                    read_snapshot(conn, |tx| {
                        let zone = tx
                            .prepare_cached("SELECT id, name, created_at FROM zones WHERE id = ?1")?
                            .query_row([id.as_str()], |r| {
                                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                            })
                            .optional()?;
                        let Some(zone) = zone else {
                            return Ok(None);
                        };
                        let packs = packs_of_zone(tx, id)?;
                        Ok(Some(ZoneView::new(zone_from_parts(zone)?, packs)))
                    })
                })
            },
            |epoch, view| self.inner.cache.put_zone(epoch, view),
        )
    }

    /// Reads zones' views into the read cache, [`WARM_CHUNK`] zones per read
    /// transaction, until it holds `share` of its budget or every zone; returns how many
    /// views it put in. Runs on a connection of its own, closed at the end (a thread's
    /// connection would keep its page cache as long as the store).
    pub(in crate::store) fn warm_cache(&self, share: f64) -> Result<usize, StoreError> {
        let conn = connect(&self.inner.path)?;
        // One pass over the tables: a page cache larger than this would only raise the
        // peak memory.
        conn.execute_batch("PRAGMA cache_size = -1024;")?;
        let mut after = String::new();
        let mut warmed = 0;
        loop {
            let Some(epoch) = self.cache_epoch() else {
                return Ok(warmed);
            };
            let views = read_snapshot(&conn, |tx| {
                let zones = tx
                    .prepare_cached(
                        "SELECT id, name, created_at FROM zones WHERE id > ?1 ORDER BY id LIMIT ?2",
                    )?
                    .query_map(params![after, WARM_CHUNK], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let (Some(first), Some(last)) = (zones.first(), zones.last()) else {
                    return Ok(Vec::new());
                };
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
                     JOIN pack_hosts h ON h.pack_id = p.id \
                     WHERE p.zone_id BETWEEN ?1 AND ?2 ORDER BY p.zone_id, p.seq, h.position"
                ))?;
                let mut packs = read_packs(stmt.query([&first.0, &last.0])?)?
                    .into_iter()
                    .peekable();
                let mut views = Vec::with_capacity(zones.len());
                for parts in zones {
                    let zone = zone_from_parts(parts)?;
                    let mut own = Vec::new();
                    while let Some(pack) = packs.next_if(|p| p.zone_id == zone.id) {
                        own.push(pack);
                    }
                    views.push(Arc::new(ZoneView::new(zone, own)));
                }
                Ok(views)
            })?;
            let Some(last) = views.last() else {
                return Ok(warmed);
            };
            after = last.zone.id.as_str().to_owned();
            let read = views.len();
            let (put, room) = self.inner.cache.warm_zones(epoch, views, share);
            warmed += put;
            if !room || read < WARM_CHUNK as usize {
                return Ok(warmed);
            }
        }
    }
}

fn zone_from_parts((id, name, created_at): (String, String, i64)) -> Result<Zone, StoreError> {
    Ok(Zone {
        id: ZoneId::parse(&id).map_err(|_| corrupt("zone id", &id))?,
        name: Hostname::parse(&name).map_err(|_| corrupt("zone name", &name))?,
        created_at,
    })
}
