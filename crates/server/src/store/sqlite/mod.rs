//! The embedded SQLite backend.
//!
//! Each thread keeps its own connection to the database (owned by the store, per thread,
//! and closed with it), so reads on the request path never wait for a pool: SQLite in WAL mode lets
//! any number of readers run beside one writer. Writes open `BEGIN IMMEDIATE`
//! transactions, so two writers queue on the busy timeout instead of deadlocking.
//!
//! Writes of this process go through one writer connection, behind a mutex.
//!
//! Durability: WAL with `synchronous=NORMAL` survives a crash of the process (`kill -9`)
//! with every committed transaction; only a power loss may lose the last ones.
//!
//! The request path's reads (credentials, a zone's packs) go through the [`ReadCache`].
//! Writes of this process invalidate what they touched as they commit; writes of other
//! processes are noticed through the database's commit counter ([`WalWatch`]) and empty
//! it.

mod accounts;
mod checkpointer;
mod claims;
mod controls;
mod copy;
mod credentials;
mod keys;
mod monitoring;
mod open;
pub(in crate::store) use open::SCHEMA_VERSION;
mod outbox;
mod packs;
mod revocations;
mod rows;
mod wal_watch;
mod zones;

#[cfg(test)]
mod tests;

use super::StoreError;
use super::cache::{ReadCache, Touch};
use checkpointer::Checkpointer;
use rusqlite::{Connection, TransactionBehavior};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use thread_local::ThreadLocal;
use wal_watch::WalWatch;

/// Counts this database's write transactions that changed rows (see
/// [`SqliteStore::write_then`]).
const BUMP_WRITES: &str = "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'writes'";

/// A handle on one SQLite database file; cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Runs the WAL's checkpoints off the writer (`None` without `watch`: the writer
    /// then checkpoints as SQLite does by default). First, so it is dropped (its thread
    /// joined, its connection closed) before the writer connection closes.
    checkpointer: Option<Checkpointer>,
    /// Each thread's reader connection, opened on the thread's first read. The store
    /// owns them, so they close (with their page caches) when it is dropped; a
    /// process-wide thread-local kept them, one per store ever opened, for as long as
    /// their threads lived. A thread that ends leaves its connection to the next thread
    /// that takes its slot.
    readers: ThreadLocal<RefCell<Connection>>,
    path: PathBuf,
    /// The connection every write transaction of this process runs on. SQLite lets one
    /// writer in at a time anyway; queueing the others on this mutex wakes each as soon
    /// as the previous one commits, where SQLite's busy handler would sleep and poll (1,
    /// 2, 5, 10 ... ms), adding milliseconds to a request that collides with a lifecycle
    /// write. Writers in other processes still meet the busy timeout.
    /// Opened with the store and kept open: it also keeps the `-shm` file that `watch`
    /// reads from being deleted.
    writer: Mutex<Connection>,
    cache: ReadCache,
    /// `None` when the database is not in WAL mode (a file system without shared
    /// memory): then reads go past the cache.
    watch: Option<WalWatch>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let code = match &e {
            rusqlite::Error::SqliteFailure(failure, _) => Some(failure.code),
            _ => None,
        };
        let message = e.to_string();
        let extended = match &e {
            rusqlite::Error::SqliteFailure(failure, _) => failure.extended_code,
            _ => 0,
        };
        if extended == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || extended == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        {
            // The writes check the values users choose (zone names, e-mails) before they
            // insert; a key taken anyway is still a duplicate, not an engine failure.
            return StoreError::Duplicate(format!("a row with that key ({message})"));
        }
        match code {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy(message),
            Some(
                ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::PermissionDenied
                | ErrorCode::NoLargeFileSupport,
            ) => StoreError::Unavailable(message),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                StoreError::Corrupt(message)
            }
            _ => StoreError::Database(message),
        }
    }
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("stored {what} {value:?} is not valid"))
}

/// A value that could not be encoded as JSON for a column (not expected: the values are
/// strings).
fn encoding(e: serde_json::Error) -> StoreError {
    StoreError::Database(format!("encoding a JSON column: {e}"))
}

impl SqliteStore {
    /// Runs `f` on this thread's connection, opening it on first use.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self
            .inner
            .readers
            .get_or_try(|| connect(&self.inner.path).map(RefCell::new))?;
        f(&mut conn.borrow_mut())
    }

    /// Runs `f` in a write transaction on the writer connection, then forgets what it
    /// touched from the cache, before anyone can read past the commit through it.
    fn write<T>(
        &self,
        touch: Touch<'_>,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_then(f, |_| touch)
    }

    /// [`Self::write`], where what the write touched is known only from its outcome.
    fn write_then<'t, T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
        touched: impl FnOnce(&mut T) -> Touch<'t>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock leaves no state behind it: SQLite rolled back.
        match self.inner.writer.try_lock() {
            Ok(conn) => self.write_on(conn, f, touched),
            Err(TryLockError::Poisoned(poisoned)) => {
                self.write_on(poisoned.into_inner(), f, touched)
            }
            // Another write holds the connection: a lifecycle batch holds it for
            // milliseconds. A request thread that waited for it in place held up every
            // other request of its runtime worker meanwhile (the ACME benchmark's GET
            // samples spent 1-7 ms before their handler started while customers'
            // `retry=true` writes queued here), so the wait is handed over.
            Err(TryLockError::WouldBlock) => outside_the_workers(|| {
                let conn = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
                self.write_on(conn, f, touched)
            }),
        }
    }

    /// [`Self::write_then`] on the writer connection, held.
    fn write_on<'t, T>(
        &self,
        mut conn: MutexGuard<'_, Connection>,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
        touched: impl FnOnce(&mut T) -> Touch<'t>,
    ) -> Result<T, StoreError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Inside the write transaction no other connection can commit: the counter read
        // here is the one this commit moves on from.
        let wal = self.inner.watch.as_ref().and_then(WalWatch::state);
        let before = wal.map(|w| w.counter);
        let changes = tx.total_changes();
        let mut out = f(&tx)?;
        let wrote = tx.total_changes() != changes;
        if wrote {
            // Statements can change rows without changing a page: SQLite skips writing
            // a row whose new content equals the old (a lease renewed within the second
            // it was taken), and then the commit leaves the counter where it was. The
            // cache counts on one step per write that changed rows, so make it one.
            tx.prepare_cached(BUMP_WRITES)?.execute([])?;
        }
        self.inner.cache.committing(before, wrote);
        if let Err(e) = tx.commit() {
            self.inner.cache.commit_failed();
            return Err(e.into());
        }
        // Still holding the writer connection: the next write's cache update cannot
        // overtake this one's.
        let touch = touched(&mut out);
        self.inner.cache.committed(before, wrote, touch);
        if let (Some(wal), Some(checkpointer)) = (wal, &self.inner.checkpointer)
            && wal.frames_to_checkpoint >= checkpointer::CHECKPOINT_FRAMES
        {
            checkpointer.ask();
        }
        Ok(out)
    }

    /// The cache's epoch for a read that may use and fill it (emptying the cache first
    /// if another process committed since the last look), or `None` when the commit
    /// counter cannot be read: then the read goes past the cache.
    pub(super) fn cache_epoch(&self) -> Option<u64> {
        let watch = self.inner.watch.as_ref()?;
        self.inner.cache.epoch_with(|| watch.counter())
    }

    pub(super) fn read_cache(&self) -> &ReadCache {
        &self.inner.cache
    }
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
    )?;
    // 4 MiB of page cache per connection (the default is 2 MiB). Each thread has its own
    // connection, so this counts several times over. It was 16 MiB while the request
    // path read zones from SQLite (copying pages in from the OS was then the largest
    // single cost in profiles); the read cache now answers those reads, and with
    // 100,000 packs stored 16 MiB per connection took the server's peak RSS 20 MB
    // higher (lifecycle benchmark, memory phase).
    conn.execute_batch("PRAGMA cache_size = -4096;")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Runs `f`, which may wait for milliseconds, without holding up the other tasks of the
/// calling thread: on a worker of a multi-threaded tokio runtime (the request threads),
/// the worker's tasks move to another thread first (`block_in_place`). Elsewhere (the
/// lifecycle's store thread, a single-threaded runtime, no runtime) it simply runs.
fn outside_the_workers<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Reads through the cache: what `cached` holds when `epoch` allows it, else what `read`
/// finds, handed to `keep` with the epoch taken before the read (so a fill that raced with
/// a write is dropped; see [`ReadCache`]).
fn read_through<T>(
    epoch: Option<u64>,
    cached: impl FnOnce() -> Option<Arc<T>>,
    read: impl FnOnce() -> Result<Option<T>, StoreError>,
    keep: impl FnOnce(u64, Arc<T>),
) -> Result<Option<Arc<T>>, StoreError> {
    if epoch.is_some()
        && let Some(hit) = cached()
    {
        return Ok(Some(hit));
    }
    let found = read()?.map(Arc::new);
    if let (Some(epoch), Some(found)) = (epoch, &found) {
        keep(epoch, found.clone());
    }
    Ok(found)
}

/// SQLite integers are signed: page arithmetic is clamped into them.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn errors_json(errors: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(errors).map_err(encoding)
}

/// Runs `f` in one read transaction (one snapshot of the database). BEGIN and COMMIT are
/// cached statements: on the request path, re-preparing them showed in profiles.
fn read_snapshot<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let out = f(conn);
    let end = conn
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]));
    if end.is_err() {
        // Never leave the thread's connection inside a transaction (a stale snapshot).
        let _ = conn.execute_batch("ROLLBACK");
    }
    let out = out?;
    end?;
    Ok(out)
}
