//! Shared ACME accounts on SQLite (see `store/accounts.rs`).

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::cache::Touch;
use crate::store::wall_ms;
use rusqlite::{OptionalExtension, params};

/// The accounts' part of the schema (version 8).
pub(super) const ACCOUNTS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS acme_accounts (
    directory  TEXT PRIMARY KEY,
    sealed     BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);";

impl SqliteStore {
    pub(in crate::store) fn acme_account(
        &self,
        directory: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_conn(|conn| {
            Ok(conn
                .query_row(
                    "SELECT sealed FROM acme_accounts WHERE directory = ?1",
                    [directory],
                    |r| r.get(0),
                )
                .optional()?)
        })
    }

    pub(in crate::store) fn insert_acme_account(
        &self,
        directory: &str,
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        self.write(Touch::Nothing, |tx| {
            Ok(tx.execute(
                "INSERT INTO acme_accounts (directory, sealed, created_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (directory) DO NOTHING",
                params![directory, sealed, wall_ms()],
            )? > 0)
        })
    }

    pub(in crate::store) fn delete_acme_account(
        &self,
        directory: &str,
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        self.write(Touch::Nothing, |tx| {
            Ok(tx.execute(
                "DELETE FROM acme_accounts WHERE directory = ?1 AND sealed = ?2",
                params![directory, sealed],
            )? > 0)
        })
    }

    pub(in crate::store) fn acme_accounts(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT directory, sealed FROM acme_accounts ORDER BY directory")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    pub(in crate::store) fn reseal_acme_account(
        &self,
        directory: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.write(Touch::Nothing, |tx| {
            Ok(tx.execute(
                "UPDATE acme_accounts SET sealed = ?3 WHERE directory = ?1 AND sealed = ?2",
                params![directory, old, new],
            )? > 0)
        })
    }
}
