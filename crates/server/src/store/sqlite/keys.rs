//! Certificates' private keys, sealed (see `crate::keys`): no cache holds them.

use super::SqliteStore;
use crate::model::PackId;
use crate::store::cache::Touch;
use crate::store::{SealedKey, StoreError};
use rusqlite::{OptionalExtension, params};

/// Keeps a pack's sealed key, replacing the one of its previous certificate.
pub(super) const PUT_KEY: &str = "INSERT INTO certificate_keys (pack_id, serial, sealed) \
     VALUES (?1, ?2, ?3) ON CONFLICT (pack_id) DO UPDATE SET serial = excluded.serial, \
     sealed = excluded.sealed";

impl SqliteStore {
    pub(in crate::store) fn put_certificate_key(
        &self,
        pack: &PackId,
        serial: &str,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        self.write(Touch::Nothing, |tx| {
            tx.execute(PUT_KEY, params![pack.as_str(), serial, sealed])
                .map(drop)
                .map_err(Into::into)
        })
    }

    pub(in crate::store) fn certificate_key(
        &self,
        pack: &PackId,
    ) -> Result<Option<SealedKey>, StoreError> {
        self.with_conn(|conn| {
            conn.query_row(
                "SELECT serial, sealed FROM certificate_keys WHERE pack_id = ?1",
                [pack.as_str()],
                |r| {
                    Ok(SealedKey {
                        pack: pack.clone(),
                        serial: r.get(0)?,
                        sealed: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(Into::into)
        })
    }

    pub(in crate::store) fn certificate_keys(&self) -> Result<Vec<SealedKey>, StoreError> {
        let rows: Vec<(String, String, Vec<u8>)> = self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT pack_id, serial, sealed FROM certificate_keys ORDER BY pack_id",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })?;
        crate::store::sealed_keys(rows)
    }

    pub(in crate::store) fn active_certificate_keys(
        &self,
    ) -> Result<Vec<(PackId, String)>, StoreError> {
        let rows: Vec<(String, String)> = self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT k.pack_id, k.serial FROM certificate_keys k JOIN packs p ON p.id = k.pack_id WHERE p.state = 'active' AND p.cert_id = k.serial ORDER BY k.pack_id",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })?;
        crate::store::pack_serials(rows)
    }

    pub(in crate::store) fn reseal_certificate_key(
        &self,
        key: &SealedKey,
        resealed: &[u8],
    ) -> Result<bool, StoreError> {
        self.write(Touch::Nothing, |tx| {
            Ok(tx.execute(
                "UPDATE certificate_keys SET sealed = ?1 \
                 WHERE pack_id = ?2 AND serial = ?3 AND sealed = ?4",
                params![resealed, key.pack.as_str(), key.serial, key.sealed],
            )? > 0)
        })
    }
}
