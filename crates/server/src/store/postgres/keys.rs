//! Certificates' private keys, sealed (see `crate::keys`): no cache holds them, so the
//! writes send no change notice.

use super::PgStore;
use crate::model::PackId;
use crate::store::{SealedKey, StoreError};

/// Keeps a pack's sealed key, replacing the one of its previous certificate.
pub(super) const PUT_KEY: &str = "INSERT INTO certificate_keys (pack_id, serial, sealed) \
     VALUES ($1, $2, $3) ON CONFLICT (pack_id) DO UPDATE SET serial = excluded.serial, \
     sealed = excluded.sealed";

impl PgStore {
    pub(in crate::store) async fn put_certificate_key(
        &self,
        pack: &PackId,
        serial: &str,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(PUT_KEY, &[&pack.as_str(), &serial, &sealed])
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn certificate_key(
        &self,
        pack: &PackId,
    ) -> Result<Option<SealedKey>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT serial, sealed FROM certificate_keys WHERE pack_id = $1",
                &[&pack.as_str()],
            )
            .await?;
        row.map(|r| {
            Ok(SealedKey {
                pack: pack.clone(),
                serial: r.try_get(0)?,
                sealed: r.try_get(1)?,
            })
        })
        .transpose()
    }

    pub(in crate::store) async fn certificate_keys(&self) -> Result<Vec<SealedKey>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT pack_id, serial, sealed FROM certificate_keys ORDER BY pack_id",
                &[],
            )
            .await?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<(String, String, Vec<u8>)>, StoreError>>()?;
        crate::store::sealed_keys(rows)
    }

    pub(in crate::store) async fn active_certificate_keys(
        &self,
    ) -> Result<Vec<(PackId, String)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT k.pack_id, k.serial FROM certificate_keys k JOIN packs p ON p.id = k.pack_id WHERE p.state = 'active' AND p.cert_id = k.serial ORDER BY k.pack_id",
                &[],
            )
            .await?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(String, String)>, StoreError>>()?;
        crate::store::pack_serials(rows)
    }

    pub(in crate::store) async fn reseal_certificate_key(
        &self,
        key: &SealedKey,
        resealed: &[u8],
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE certificate_keys SET sealed = $1 \
                 WHERE pack_id = $2 AND serial = $3 AND sealed = $4",
                &[&resealed, &key.pack.as_str(), &key.serial, &key.sealed],
            )
            .await?
            > 0)
    }
}
