//! The PostgreSQL backend: many nodes sharing one database.
//!
//! Connections come from a small pool (deadpool-postgres over tokio-postgres). Each
//! connection's I/O task runs on the store's own runtime (one thread, `zonecert-pg`), not
//! on the caller's: the server calls the store from the request runtime, the lifecycle's
//! runtime and its store thread, and tests from runtimes of their own, and a connection
//! whose task lived on a runtime that ended would be dead for every other caller. The
//! queries themselves run in the caller's task: a client talks to its connection's task
//! through channels, which work from any runtime.
//!
//! Writes are transactions with the same checks as SQLite's (optimistic `version`s,
//! quotas, unique names), made safe across nodes by row locks (`FOR UPDATE` of the zone
//! whose packs are counted, `FOR UPDATE SKIP LOCKED` for the lifecycle's claims) and a
//! transaction-scoped advisory lock where a rule spans rows that may not exist yet (a
//! zone nested in another).
//!
//! The request path's reads (credentials, a zone's view) go through the read cache, kept
//! exact across nodes by change notices (`changes.rs`): a write forgets what it touched
//! before it returns, and tells the other nodes, whose next request hears it before it
//! reads.

mod accounts;
mod changes;
mod claims;
mod copy;
mod credentials;
mod keys;
mod monitoring;
mod open;
mod outbox;
mod packs;
mod revocations;
mod rows;
mod tls;
mod zones;

use super::StoreError;
use super::cache::{ReadCache, Touch};
use deadpool_postgres::{Object, Pool, Transaction};
use std::sync::Arc;

pub use open::DEFAULT_POOL_SIZE;
pub(in crate::store) use open::SCHEMA_VERSION;

/// A handle on one PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("PgStore")
            .field("pool_size", &status.size)
            .field("pool_max", &status.max_size)
            .finish()
    }
}

struct Inner {
    pool: Pool,
    /// This store's name in change notices (its own are not applied twice).
    node: String,
    cache: Arc<ReadCache>,
    listener: changes::Listener,
    /// Runs the connections' I/O tasks (see the module's documentation); `None` only
    /// while it is being dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle may be dropped inside an async context, where dropping a
        // runtime (which waits for its threads) panics; this does not wait.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        // The server's message (`as_db_error`) says more than the driver's summary.
        let Some(db) = e.as_db_error() else {
            // No answer from the server: the connection failed or closed (the driver's
            // summary, then its causes: a TLS handshake's says which certificate check
            // failed).
            return StoreError::Unavailable(format!("PostgreSQL: {}", with_causes(&e)));
        };
        let message = format!("PostgreSQL: {}", db.message());
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            StoreError::Duplicate(format!("a row with that key ({message})"))
        } else if [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code)
        {
            StoreError::Busy(message)
        } else if [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::DISK_FULL,
            SqlState::READ_ONLY_SQL_TRANSACTION,
        ]
        .contains(code)
            || code.code().starts_with("08")
        {
            StoreError::Unavailable(message)
        } else if code.code().starts_with("XX") {
            StoreError::Corrupt(message)
        } else {
            StoreError::Database(message)
        }
    }
}

/// An error's message followed by its causes' (`a: b: c`).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("stored {what} {value:?} is not valid"))
}

/// Whether the error is a unique violation (a row with that key exists).
fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// PostgreSQL integers are signed: page arithmetic is clamped into them.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgStore {
    pub(super) fn read_cache(&self) -> &ReadCache {
        &self.inner.cache
    }

    /// Commits a write transaction that touched `touch`: with its change notice to the
    /// other nodes, and forgetting it from this node's cache before returning.
    async fn commit(&self, tx: Transaction<'_>, touch: Touch<'_>) -> Result<(), StoreError> {
        self.notify(&tx, &touch).await?;
        let committed = tx.commit().await;
        // Whether a failed COMMIT committed is unknown: forget in either case.
        self.inner.cache.forget(touch);
        Ok(committed?)
    }

    /// Reads through the cache: what `cached` holds when `epoch` allows it, else what
    /// `read` finds, kept with the epoch taken before the read (a fill that raced with a
    /// change is dropped; see the cache).
    async fn read_through<T>(
        epoch: Option<u64>,
        cached: impl FnOnce() -> Option<Arc<T>>,
        read: impl Future<Output = Result<Option<T>, StoreError>>,
        keep: impl FnOnce(u64, Arc<T>),
    ) -> Result<Option<Arc<T>>, StoreError> {
        if epoch.is_some()
            && let Some(hit) = cached()
        {
            return Ok(Some(hit));
        }
        let found = read.await?.map(Arc::new);
        if let (Some(epoch), Some(found)) = (epoch, &found) {
            keep(epoch, found.clone());
        }
        Ok(found)
    }

    /// A connection of the pool. Taken on the store's runtime, so that a connection the
    /// pool opens now has its I/O task there.
    async fn client(&self) -> Result<Object, StoreError> {
        let pool = self.inner.pool.clone();
        let runtime = self
            .inner
            .runtime
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("the store is closing".into()))?;
        runtime
            .spawn(async move { pool.get().await })
            .await
            .map_err(|e| StoreError::Unavailable(format!("the store's runtime stopped: {e}")))?
            .map_err(|e| {
                let why = match &e {
                    // Connecting failed: what the driver (or the server) said, whole.
                    deadpool_postgres::PoolError::Backend(e) => with_causes(e),
                    other => other.to_string(),
                };
                StoreError::Unavailable(format!("no PostgreSQL connection: {why}"))
            })
    }
}
