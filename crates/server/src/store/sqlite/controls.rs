//! What the test controls keep in the database: the clock's offset (in `meta`, so it
//! survives a restart) and the reset that empties the database.

use super::SqliteStore;
use crate::model::PackId;
use crate::store::StoreError;
use crate::store::cache::Touch;
use rusqlite::OptionalExtension;

impl SqliteStore {
    pub(in crate::store) fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with_conn(|conn| {
            Ok(conn
                .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?)
        })
    }

    pub(in crate::store) fn set_setting(
        &self,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), StoreError> {
        // `meta` holds nothing the read cache keeps.
        self.write(Touch::Nothing, |tx| {
            match value {
                Some(value) => tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [key, value],
                )?,
                None => tx.execute("DELETE FROM meta WHERE key = ?1", [key])?,
            };
            Ok(())
        })
    }

    pub(in crate::store) fn wipe(&self, settings: &[&str]) -> Result<Vec<PackId>, StoreError> {
        self.write(Touch::Everything, |tx| {
            let ids: Vec<String> = tx
                .prepare("SELECT id FROM packs")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            // Hosts go with their packs and packs with their zones (ON DELETE CASCADE);
            // spelled out so that the order does not depend on the foreign-key pragma.
            // The webhooks go too: endpoints, the outbox and its deliveries (the seed
            // state has none).
            for table in [
                "revocations",
                "webhook_deliveries",
                "webhook_events",
                "webhook_endpoints",
                "pack_hosts",
                "packs",
                "zones",
                "tokens",
                "users",
            ] {
                tx.execute(&format!("DELETE FROM {table}"), [])?;
            }
            for key in settings {
                tx.execute("DELETE FROM meta WHERE key = ?1", [key])?;
            }
            ids.iter()
                .map(|id| PackId::parse(id).map_err(|e| StoreError::Corrupt(e.0)))
                .collect()
        })
    }
}
