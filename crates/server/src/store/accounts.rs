//! ACME accounts shared by every node on one database: one per directory, its
//! credentials (key and URL) sealed under the KEK (`crate::keys`, the directory as
//! associated data), so that a certificate ordered by one node can be finished, renewed
//! and revoked by another as the account that ordered it.

use super::{Store, StoreError};

impl Store {
    /// The sealed credentials of the account kept for `directory`, if any.
    pub async fn acme_account(&self, directory: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Sqlite(s) => s.acme_account(directory),
            Store::Postgres(s) => s.acme_account(directory).await,
        }
    }

    /// Keeps `sealed` as the account of `directory` unless one is kept already; returns
    /// whether it was (the first node to publish its account wins, the others adopt it).
    pub async fn insert_acme_account(
        &self,
        directory: &str,
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.insert_acme_account(directory, sealed),
            Store::Postgres(s) => s.insert_acme_account(directory, sealed).await,
        }
    }

    /// Forgets the account of `directory` if it is still `sealed` (the CA no longer
    /// knows it); returns whether it was.
    pub async fn delete_acme_account(
        &self,
        directory: &str,
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.delete_acme_account(directory, sealed),
            Store::Postgres(s) => s.delete_acme_account(directory, sealed).await,
        }
    }

    /// Every kept account: (directory, sealed credentials), for a KEK rotation.
    pub async fn acme_accounts(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.acme_accounts(),
            Store::Postgres(s) => s.acme_accounts().await,
        }
    }

    /// Replaces the sealed credentials of `directory` if they are still `old` (a KEK
    /// rotation); returns whether they were.
    pub async fn reseal_acme_account(
        &self,
        directory: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.reseal_acme_account(directory, old, new),
            Store::Postgres(s) => s.reseal_acme_account(directory, old, new).await,
        }
    }
}
