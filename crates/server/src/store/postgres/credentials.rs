//! Users (global API keys) and API tokens.

use super::{PgStore, corrupt, is_unique_violation};
use crate::model::{Permission, Token, User, ZoneId};
use crate::store::StoreError;
use crate::store::cache::Touch;
use std::sync::Arc;
use tokio_postgres::Row;

const USER_COLUMNS: &str = "id, email, key_hash, created_at";
const TOKEN_COLUMNS: &str = "id, name, secret_hash, permissions, zones, created_at";

impl PgStore {
    pub(in crate::store) async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The unique index decides between two nodes inserting the same e-mail.
        tx.execute(
            "INSERT INTO users (id, email, key_hash, created_at) VALUES ($1, $2, $3, $4)",
            &[&user.id, &user.email, &&user.key_hash[..], &user.created_at],
        )
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Duplicate(format!("user {}", user.email))
            } else {
                e.into()
            }
        })?;
        self.commit(tx, Touch::Credentials).await
    }

    /// `epoch`: from [`PgStore::cache_epoch`], once per request; `None` reads past the
    /// cache.
    pub(in crate::store) async fn user_by_email(
        &self,
        epoch: Option<u64>,
        email: &str,
    ) -> Result<Option<Arc<User>>, StoreError> {
        let read = async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
                ))
                .await?;
            let row = client.query_opt(&statement, &[&email]).await?;
            row.as_ref().map(user).transpose()
        };
        Self::read_through(
            epoch,
            || self.inner.cache.user(email),
            read,
            |epoch, user| self.inner.cache.put_user(epoch, user),
        )
        .await
    }

    pub(in crate::store) async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {USER_COLUMNS} FROM users ORDER BY email"),
                &[],
            )
            .await?;
        rows.iter().map(user).collect()
    }

    pub(in crate::store) async fn delete_user(
        &self,
        id_or_email: &str,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let deleted = tx
            .execute(
                "DELETE FROM users WHERE id = $1 OR email = $1",
                &[&id_or_email],
            )
            .await?
            > 0;
        self.commit(tx, Touch::Credentials).await?;
        Ok(deleted)
    }

    pub(in crate::store) async fn insert_token(&self, token: &Token) -> Result<(), StoreError> {
        let permissions: Vec<&str> = token.permissions.iter().map(|p| p.name()).collect();
        let permissions = serde_json::to_string(&permissions)
            .map_err(|e| StoreError::Database(format!("encoding a JSON column: {e}")))?;
        let zones = token
            .zones
            .as_ref()
            .map(|zs| serde_json::to_string(&zs.iter().map(ZoneId::as_str).collect::<Vec<_>>()))
            .transpose()
            .map_err(|e| StoreError::Database(format!("encoding a JSON column: {e}")))?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO tokens (id, name, secret_hash, permissions, zones, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &token.id,
                &token.name,
                &&token.secret_hash[..],
                &permissions,
                &zones,
                &token.created_at,
            ],
        )
        .await?;
        self.commit(tx, Touch::Credentials).await
    }

    /// `epoch`: as for [`PgStore::user_by_email`].
    pub(in crate::store) async fn token_by_hash(
        &self,
        epoch: Option<u64>,
        hash: &[u8; 32],
    ) -> Result<Option<Arc<Token>>, StoreError> {
        let read = async {
            let client = self.client().await?;
            // Planned once per connection: every request reads here while the change
            // notices are not heard.
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE secret_hash = $1"
                ))
                .await?;
            let row = client.query_opt(&statement, &[&&hash[..]]).await?;
            row.as_ref().map(token).transpose()
        };
        Self::read_through(
            epoch,
            || self.inner.cache.token(hash),
            read,
            |epoch, token| self.inner.cache.put_token(epoch, token),
        )
        .await
    }

    pub(in crate::store) async fn list_tokens(&self) -> Result<Vec<Token>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id"),
                &[],
            )
            .await?;
        rows.iter().map(token).collect()
    }

    pub(in crate::store) async fn delete_token(&self, id: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let deleted = tx
            .execute("DELETE FROM tokens WHERE id = $1", &[&id])
            .await?
            > 0;
        self.commit(tx, Touch::Credentials).await?;
        Ok(deleted)
    }
}

fn hash(blob: Vec<u8>) -> Result<[u8; 32], StoreError> {
    blob.try_into()
        .map_err(|_| StoreError::Corrupt("stored hash is not 32 bytes".into()))
}

fn user(r: &Row) -> Result<User, StoreError> {
    Ok(User {
        id: r.try_get(0)?,
        email: r.try_get(1)?,
        key_hash: hash(r.try_get(2)?)?,
        created_at: r.try_get(3)?,
    })
}

fn token(r: &Row) -> Result<Token, StoreError> {
    let permissions: String = r.try_get(3)?;
    let zones: Option<String> = r.try_get(4)?;
    let names: Vec<String> =
        serde_json::from_str(&permissions).map_err(|_| corrupt("permissions", &permissions))?;
    let permissions = names
        .iter()
        .map(|n| Permission::parse(n).ok_or_else(|| corrupt("permission", n)))
        .collect::<Result<Vec<_>, _>>()?;
    let zones = match zones {
        None => None,
        Some(text) => {
            let ids: Vec<String> =
                serde_json::from_str(&text).map_err(|_| corrupt("token zones", &text))?;
            Some(
                ids.iter()
                    .map(|z| ZoneId::parse(z).map_err(|_| corrupt("zone id", z)))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        }
    };
    Ok(Token {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        secret_hash: hash(r.try_get(2)?)?,
        permissions,
        zones,
        created_at: r.try_get(5)?,
    })
}
