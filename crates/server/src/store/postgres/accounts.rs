//! Shared ACME accounts on PostgreSQL (see `store/accounts.rs`).

use super::PgStore;
use crate::store::StoreError;
use crate::store::wall_ms;

/// The accounts' part of the schema (version 7, as SQLite's 8).
pub(super) const ACCOUNTS_SCHEMA: &str = "CREATE TABLE acme_accounts ( \
    directory TEXT PRIMARY KEY, sealed BYTEA NOT NULL, created_ms BIGINT NOT NULL);";

impl PgStore {
    pub(in crate::store) async fn acme_account(
        &self,
        directory: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT sealed FROM acme_accounts WHERE directory = $1",
                &[&directory],
            )
            .await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }

    pub(in crate::store) async fn insert_acme_account(
        &self,
        directory: &str,
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "INSERT INTO acme_accounts (directory, sealed, created_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (directory) DO NOTHING",
                &[&directory, &sealed, &wall_ms()],
            )
            .await?
            > 0)
    }

    pub(in crate::store) async fn delete_acme_account(
        &self,
        directory: &str,
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "DELETE FROM acme_accounts WHERE directory = $1 AND sealed = $2",
                &[&directory, &sealed],
            )
            .await?
            > 0)
    }

    pub(in crate::store) async fn acme_accounts(
        &self,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT directory, sealed FROM acme_accounts ORDER BY directory",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    pub(in crate::store) async fn reseal_acme_account(
        &self,
        directory: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE acme_accounts SET sealed = $3 WHERE directory = $1 AND sealed = $2",
                &[&directory, &old, &new],
            )
            .await?
            > 0)
    }
}
