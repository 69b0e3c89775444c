//! Users (global API keys) and API tokens.

use super::{SqliteStore, corrupt, read_through};
use crate::model::{Permission, Token, User, ZoneId};
use crate::store::StoreError;
use crate::store::cache::Touch;
use rusqlite::{OptionalExtension, Row, params};
use std::sync::Arc;

impl SqliteStore {
    pub(in crate::store) fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        self.write(Touch::Credentials, |tx| {
            let taken: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM users WHERE email = ?1)",
                [&user.email],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::Duplicate(format!("user {}", user.email)));
            }
            tx.execute(
                "INSERT INTO users (id, email, key_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![user.id, user.email, &user.key_hash[..], user.created_at],
            )?;
            Ok(())
        })
    }

    /// `epoch`: from [`Self::cache_epoch`], once per request; `None` reads past the cache.
    pub(in crate::store) fn user_by_email(
        &self,
        epoch: Option<u64>,
        email: &str,
    ) -> Result<Option<Arc<User>>, StoreError> {
        read_through(
            epoch,
            || self.inner.cache.user(email),
            || {
                self.with_conn(|conn| {
                    let mut stmt = conn.prepare_cached(
                        "SELECT id, email, key_hash, created_at FROM users WHERE email = ?1",
                    )?;
                    stmt.query_row([email], user_from_row)
                        .optional()?
                        .transpose()
                })
            },
            |epoch, user| self.inner.cache.put_user(epoch, user),
        )
    }

    pub(in crate::store) fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, email, key_hash, created_at FROM users ORDER BY email",
            )?;
            let rows = stmt
                .query_map([], user_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().collect()
        })
    }

    pub(in crate::store) fn delete_user(&self, id_or_email: &str) -> Result<bool, StoreError> {
        self.write(Touch::Credentials, |tx| {
            Ok(tx.execute(
                "DELETE FROM users WHERE id = ?1 OR email = ?1",
                [id_or_email],
            )? > 0)
        })
    }

    pub(in crate::store) fn insert_token(&self, token: &Token) -> Result<(), StoreError> {
        let permissions: Vec<&str> = token.permissions.iter().map(|p| p.name()).collect();
        let permissions = serde_json::to_string(&permissions).map_err(super::encoding)?;
        let zones = token
            .zones
            .as_ref()
            .map(|zs| serde_json::to_string(&zs.iter().map(ZoneId::as_str).collect::<Vec<_>>()))
            .transpose()
            .map_err(super::encoding)?;
        self.write(Touch::Credentials, |tx| {
            tx.execute(
                "INSERT INTO tokens (id, name, secret_hash, permissions, zones, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    token.id,
                    token.name,
                    &token.secret_hash[..],
                    permissions,
                    zones,
                    token.created_at
                ],
            )?;
            Ok(())
        })
    }

    /// `epoch`: as for [`Self::user_by_email`].
    pub(in crate::store) fn token_by_hash(
        &self,
        epoch: Option<u64>,
        hash: &[u8; 32],
    ) -> Result<Option<Arc<Token>>, StoreError> {
        read_through(
            epoch,
            || self.inner.cache.token(hash),
            || {
                self.with_conn(|conn| {
                    let mut stmt = conn.prepare_cached(
                        "SELECT id, name, secret_hash, permissions, zones, created_at \
                         FROM tokens WHERE secret_hash = ?1",
                    )?;
                    stmt.query_row([&hash[..]], token_from_row)
                        .optional()?
                        .transpose()
                })
            },
            |epoch, token| self.inner.cache.put_token(epoch, token),
        )
    }

    pub(in crate::store) fn list_tokens(&self) -> Result<Vec<Token>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, name, secret_hash, permissions, zones, created_at \
                 FROM tokens ORDER BY created_at, id",
            )?;
            let rows = stmt
                .query_map([], token_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().collect()
        })
    }

    pub(in crate::store) fn delete_token(&self, id: &str) -> Result<bool, StoreError> {
        self.write(Touch::Credentials, |tx| {
            Ok(tx.execute("DELETE FROM tokens WHERE id = ?1", [id])? > 0)
        })
    }
}

fn hash_from_blob(blob: Vec<u8>) -> Result<[u8; 32], StoreError> {
    blob.try_into()
        .map_err(|_| StoreError::Corrupt("stored hash is not 32 bytes".into()))
}

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<Result<User, StoreError>> {
    let blob: Vec<u8> = r.get(2)?;
    Ok(Ok(User {
        id: r.get(0)?,
        email: r.get(1)?,
        key_hash: match hash_from_blob(blob) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        },
        created_at: r.get(3)?,
    }))
}

fn token_from_row(r: &Row<'_>) -> rusqlite::Result<Result<Token, StoreError>> {
    let id: String = r.get(0)?;
    let name: String = r.get(1)?;
    let blob: Vec<u8> = r.get(2)?;
    let permissions: String = r.get(3)?;
    let zones: Option<String> = r.get(4)?;
    let created_at: i64 = r.get(5)?;
    Ok((|| {
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
            id,
            name,
            secret_hash: hash_from_blob(blob)?,
            permissions,
            zones,
            created_at,
        })
    })())
}
