//! The embedded SQLite backend.
//!
//! Each thread keeps its own connection to the database (a thread-local map keyed by
//! store), so reads on the request path never wait for a pool: SQLite in WAL mode lets
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

use super::cache::{ReadCache, Touch, ZoneView};
use super::checkpointer::{self, Checkpointer};
use super::wal_watch::WalWatch;
use super::{Claim, PackFilter, Page, StoreError};
use crate::model::{
    CaChoice, DcvMethod, DcvRecord, HostCheck, Hostname, IssuedCertificate, Pack, PackHost, PackId,
    PackState, Permission, Token, User, Zone, ZoneId,
};
use rusqlite::{
    Connection, OptionalExtension, Row, ToSql, TransactionBehavior, params, params_from_iter,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const SCHEMA: &str = include_str!("schema.sql");
const SCHEMA_VERSION: &str = "2";

/// The steps from each older schema version to the next, run in order on open. Version 2
/// gave `packs.validation_deadline` its true name, `stage_deadline`: it holds the
/// issuance and deployment deadline too. (Its index keeps its name: it covers the
/// validation stage only.)
const MIGRATIONS: &[Migration] = &[Migration {
    from: "1",
    to: "2",
    sql: "ALTER TABLE packs RENAME COLUMN validation_deadline TO stage_deadline;",
}];

/// One step of [`MIGRATIONS`].
struct Migration {
    from: &'static str,
    to: &'static str,
    sql: &'static str,
}

/// The tables of the current schema. A migration that adds a table creates it itself, so
/// after the migrations every one of these exists in a database that has a version.
const EXPECTED_TABLES: &[&str] = &["meta", "zones", "users", "tokens", "packs", "pack_hosts"];

/// Extends the live leases of one owner (?1) as of ?2 by ?3 seconds; found through the
/// `packs_by_lease_owner` index.
const RENEW_LEASES: &str = "UPDATE packs SET lease_until = ?2 + ?3 \
                            WHERE lease_owner = ?1 AND lease_until > ?2";

/// Zones per read transaction when warming the cache: short transactions, so the
/// requests and writes that interleave with warming wait little for the CPU and locks
/// (8 zones of 100 packs are 1,600 rows).
const WARM_CHUNK: i64 = 8;

/// Counts this database's write transactions that changed rows (see
/// [`SqliteStore::write_then`]).
const BUMP_WRITES: &str = "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'writes'";

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's connections, one per open store.
    static CONNECTIONS: RefCell<HashMap<u64, Connection>> = RefCell::new(HashMap::new());
}

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
    id: u64,
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
        StoreError::Backend(e.to_string())
    }
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Backend(format!("stored {what} {value:?} is not valid"))
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (mode 0600) and its folder (mode 0700)
    /// if needed, and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, true)
    }

    /// Opens the database at `path` only if it exists ([`StoreError::NoDatabase`]
    /// otherwise): administration run from the wrong folder must not create an empty
    /// database that a server would then serve.
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, create: bool) -> Result<Self, StoreError> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Err(StoreError::NoDatabase(path.to_owned()));
                }
                create_database_file(path)?;
            }
            Err(e) => {
                return Err(StoreError::Backend(format!(
                    "looking up {}: {e}",
                    path.display()
                )));
            }
        }
        Self::open_file(path).map_err(|e| explain_open_failure(path, e))
    }

    fn open_file(path: &Path) -> Result<Self, StoreError> {
        let mut writer = connect(path)?;
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // An older database is migrated before the schema's `IF NOT EXISTS` statements
        // run against it, all in this one transaction.
        let has_meta = tx
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                [],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        let mut version: Option<String> = if has_meta {
            tx.query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?
        } else {
            None
        };
        for step in MIGRATIONS {
            if version.as_deref() == Some(step.from) {
                tx.execute_batch(step.sql)?;
                tx.execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                    [step.to],
                )?;
                tracing::info!(from = step.from, to = step.to, "database schema migrated");
                version = Some(step.to.to_owned());
            }
        }
        // `SCHEMA` creates what is missing, which is right for a new database only: in an
        // existing one a missing table is damage (or a hand edit) to report, not to paper
        // over with an empty table that would silently lose its rows.
        let tables = user_tables(&tx)?;
        match version.as_deref() {
            Some(_) => {
                let missing: Vec<&str> = EXPECTED_TABLES
                    .iter()
                    .copied()
                    .filter(|t| !tables.iter().any(|have| have == t))
                    .collect();
                if !missing.is_empty() {
                    return Err(StoreError::Backend(format!(
                        "the database {} lacks the table{} {}: it is damaged or was edited by \
                         hand; restore it from a backup (zonecert does not recreate tables, \
                         that would lose their rows silently)",
                        path.display(),
                        if missing.len() == 1 { "" } else { "s" },
                        missing.join(", ")
                    )));
                }
            }
            None if !tables.is_empty() => {
                return Err(StoreError::Backend(format!(
                    "{} holds tables ({}) but no zonecert schema version: it is not a \
                     zonecert database, or a damaged one",
                    path.display(),
                    tables.join(", ")
                )));
            }
            None => {}
        }
        tx.execute_batch(SCHEMA)?;
        match version.as_deref() {
            None => {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Backend(format!(
                    "database schema version {other} is newer than this zonecert ({SCHEMA_VERSION})"
                )));
            }
        }
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('writes', '0')",
            [],
        )?;
        tx.commit()?;
        let watch = match WalWatch::open(path) {
            Ok(watch) => Some(watch),
            Err(e) => {
                tracing::warn!(error = %e, "no WAL index to watch: the read cache is off");
                None
            }
        };
        let checkpointer = match watch {
            Some(_) => {
                writer.execute_batch(&format!(
                    "PRAGMA wal_autocheckpoint = {};",
                    checkpointer::BACKSTOP_PAGES
                ))?;
                Some(Checkpointer::start(path)?)
            }
            None => None,
        };
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
                path: path.to_owned(),
                writer: Mutex::new(writer),
                cache: ReadCache::default(),
                watch,
                checkpointer,
            }),
        })
    }

    /// Runs `f` on this thread's connection, opening it on first use.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        CONNECTIONS.with(|cell| {
            let mut map = cell.borrow_mut();
            let conn = match map.entry(self.inner.id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(connect(&self.inner.path)?)
                }
            };
            f(conn)
        })
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
        let mut conn = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
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

    // ---- zones ----

    pub(super) fn insert_zone(&self, zone: &Zone, allow_nested: bool) -> Result<(), StoreError> {
        self.write(Touch::Zone(&zone.id), |tx| {
            let taken: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM zones WHERE name = ?1 OR id = ?2)",
                params![zone.name.as_str(), zone.id.as_str()],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::Duplicate(format!("zone {}", zone.name)));
            }
            if !allow_nested {
                // Zones above it through the name index (one lookup per ancestor), zones
                // below it by a scan of names: host names hold no LIKE wildcards.
                let name = zone.name.as_str();
                let ancestors: Vec<&str> = name
                    .match_indices('.')
                    .map(|(i, _)| &name[i + 1..])
                    .collect();
                let other: Option<String> = tx
                    .query_row(
                        "SELECT name FROM zones WHERE name IN (SELECT value FROM json_each(?1)) \
                         OR name LIKE '%.' || ?2 LIMIT 1",
                        params![
                            serde_json::to_string(&ancestors)
                                .map_err(|e| StoreError::Backend(e.to_string()))?,
                            name
                        ],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(other) = other {
                    return Err(StoreError::Nested {
                        zone: name.to_owned(),
                        other,
                    });
                }
            }
            tx.execute(
                "INSERT INTO zones (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![zone.id.as_str(), zone.name.as_str(), zone.created_at],
            )?;
            Ok(())
        })
    }

    pub(super) fn zone(&self, id: &ZoneId) -> Result<Option<Zone>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id, name, created_at FROM zones WHERE id = ?1")?;
            let row = stmt
                .query_row([id.as_str()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                })
                .optional()?;
            row.map(zone_from_parts).transpose()
        })
    }

    pub(super) fn list_zones(
        &self,
        name: Option<&str>,
        only: Option<&[ZoneId]>,
        offset: u64,
        limit: u64,
    ) -> Result<Page<Zone>, StoreError> {
        self.with_conn(|conn| {
            let only_json = only
                .map(|ids| {
                    serde_json::to_string(&ids.iter().map(ZoneId::as_str).collect::<Vec<_>>())
                })
                .transpose()
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            let filter = "(?1 IS NULL OR name = ?1) \
                 AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2)))";
            let total: i64 = conn.query_row(
                &format!("SELECT COUNT(*) FROM zones WHERE {filter}"),
                params![name, only_json],
                |r| r.get(0),
            )?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT id, name, created_at FROM zones WHERE {filter} \
                 ORDER BY name LIMIT ?3 OFFSET ?4"
            ))?;
            let rows = stmt
                .query_map(params![name, only_json, clamp(limit), clamp(offset)], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Page {
                items: rows
                    .into_iter()
                    .map(zone_from_parts)
                    .collect::<Result<_, _>>()?,
                total: total.max(0) as u64,
            })
        })
    }

    pub(super) fn delete_zone(&self, id: &ZoneId) -> Result<bool, StoreError> {
        self.write(Touch::Zone(id), |tx| {
            Ok(tx.execute("DELETE FROM zones WHERE id = ?1", [id.as_str()])? > 0)
        })
    }

    // ---- users and tokens ----

    pub(super) fn insert_user(&self, user: &User) -> Result<(), StoreError> {
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
    pub(super) fn user_by_email(
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

    pub(super) fn list_users(&self) -> Result<Vec<User>, StoreError> {
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

    pub(super) fn delete_user(&self, id_or_email: &str) -> Result<bool, StoreError> {
        self.write(Touch::Credentials, |tx| {
            Ok(tx.execute(
                "DELETE FROM users WHERE id = ?1 OR email = ?1",
                [id_or_email],
            )? > 0)
        })
    }

    pub(super) fn insert_token(&self, token: &Token) -> Result<(), StoreError> {
        let permissions: Vec<&str> = token.permissions.iter().map(|p| p.name()).collect();
        let permissions =
            serde_json::to_string(&permissions).map_err(|e| StoreError::Backend(e.to_string()))?;
        let zones = token
            .zones
            .as_ref()
            .map(|zs| serde_json::to_string(&zs.iter().map(ZoneId::as_str).collect::<Vec<_>>()))
            .transpose()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
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
    pub(super) fn token_by_hash(
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

    pub(super) fn list_tokens(&self) -> Result<Vec<Token>, StoreError> {
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

    pub(super) fn delete_token(&self, id: &str) -> Result<bool, StoreError> {
        self.write(Touch::Credentials, |tx| {
            Ok(tx.execute("DELETE FROM tokens WHERE id = ?1", [id])? > 0)
        })
    }

    // ---- packs ----

    pub(super) fn insert_pack(&self, pack: &Pack, allocated: u64) -> Result<(), StoreError> {
        self.write(Touch::Zone(&pack.zone_id), |tx| {
            let used: i64 = tx.query_row(
                "SELECT COUNT(*) FROM packs WHERE zone_id = ?1",
                [pack.zone_id.as_str()],
                |r| r.get(0),
            )?;
            if used.max(0) as u64 >= allocated {
                return Err(StoreError::QuotaExceeded { allocated });
            }
            let changes = PackChanges::of(pack)?;
            let leading: [&dyn ToSql; 5] = [
                &pack.id.as_str(),
                &pack.zone_id.as_str(),
                &pack.validity_days,
                &pack.ca.as_str(),
                &pack.created_at,
            ];
            tx.execute(
                "INSERT INTO packs (id, zone_id, validity_days, ca, created_at, state, method, \
                 cloudflare_branding, brand_check, errors, updated_at, stage_deadline, \
                 cert_id, cert_chain_pem, cert_not_before, cert_not_after, cert_issuer, \
                 cert_signature, cert_issued_at, version) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, ?18, ?19, 0)",
                params_from_iter(leading.into_iter().chain(changes.params())),
            )?;
            insert_hosts(tx, pack)?;
            Ok(())
        })
    }

    pub(super) fn update_pack(&self, pack: &mut Pack) -> Result<(), StoreError> {
        self.write(Touch::Zone(&pack.zone_id), |tx| update_pack_row(tx, pack))?;
        pack.version += 1;
        Ok(())
    }

    pub(super) fn pack(&self, zone: &ZoneId, id: &PackId) -> Result<Option<Pack>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
                 JOIN pack_hosts h ON h.pack_id = p.id \
                 WHERE p.zone_id = ?1 AND p.id = ?2 ORDER BY h.position"
            ))?;
            Ok(read_packs(stmt.query([zone.as_str(), id.as_str()])?)?.pop())
        })
    }

    /// `epoch`: as for [`Self::user_by_email`].
    pub(super) fn zone_with_packs(
        &self,
        epoch: Option<u64>,
        id: &ZoneId,
    ) -> Result<Option<Arc<ZoneView>>, StoreError> {
        read_through(
            epoch,
            || self.inner.cache.zone(id),
            || {
                self.with_conn(|conn| {
                    // One read transaction: one snapshot, and one lock round-trip instead
                    // of two.
                    read_snapshot(conn, |tx| {
                        let zone = tx
                            .prepare_cached("SELECT id, name, created_at FROM zones WHERE id = ?1")?
                            .query_row([id.as_str()], |r| {
                                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                            })
                            .optional()?;
                        let Some(zone) = zone else {
                            return Ok(None);
                        };
                        let packs = packs_of_zone(tx, id)?;
                        Ok(Some(ZoneView::new(zone_from_parts(zone)?, packs)))
                    })
                })
            },
            |epoch, view| self.inner.cache.put_zone(epoch, view),
        )
    }

    /// Reads zones' views into the read cache, [`WARM_CHUNK`] zones per read
    /// transaction, until it holds `share` of its budget or every zone; returns how many
    /// views it put in. Runs on a connection of its own, closed at the end (a thread's
    /// connection would keep its page cache for good).
    pub(super) fn warm_cache(&self, share: f64) -> Result<usize, StoreError> {
        let conn = connect(&self.inner.path)?;
        // One pass over the tables: a page cache larger than this would only raise the
        // peak memory.
        conn.execute_batch("PRAGMA cache_size = -1024;")?;
        let mut after = String::new();
        let mut warmed = 0;
        loop {
            let Some(epoch) = self.cache_epoch() else {
                return Ok(warmed);
            };
            let views = read_snapshot(&conn, |tx| {
                let zones = tx
                    .prepare_cached(
                        "SELECT id, name, created_at FROM zones WHERE id > ?1 ORDER BY id LIMIT ?2",
                    )?
                    .query_map(params![after, WARM_CHUNK], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let (Some(first), Some(last)) = (zones.first(), zones.last()) else {
                    return Ok(Vec::new());
                };
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
                     JOIN pack_hosts h ON h.pack_id = p.id \
                     WHERE p.zone_id BETWEEN ?1 AND ?2 ORDER BY p.zone_id, p.seq, h.position"
                ))?;
                let mut packs = read_packs(stmt.query([&first.0, &last.0])?)?
                    .into_iter()
                    .peekable();
                let mut views = Vec::with_capacity(zones.len());
                for parts in zones {
                    let zone = zone_from_parts(parts)?;
                    let mut own = Vec::new();
                    while let Some(pack) = packs.next_if(|p| p.zone_id == zone.id) {
                        own.push(pack);
                    }
                    views.push(Arc::new(ZoneView::new(zone, own)));
                }
                Ok(views)
            })?;
            let Some(last) = views.last() else {
                return Ok(warmed);
            };
            after = last.zone.id.as_str().to_owned();
            let read = views.len();
            let (put, room) = self.inner.cache.warm_zones(epoch, views, share);
            warmed += put;
            if !room || read < WARM_CHUNK as usize {
                return Ok(warmed);
            }
        }
    }

    pub(super) fn packs_of_zone(&self, zone: &ZoneId) -> Result<Vec<Pack>, StoreError> {
        self.with_conn(|conn| packs_of_zone(conn, zone))
    }

    pub(super) fn list_packs(
        &self,
        zone: &ZoneId,
        filter: PackFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<Pack>, StoreError> {
        let only_active = filter == PackFilter::Active;
        self.with_conn(|conn| {
            let total: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM packs WHERE zone_id = ?1 AND (?2 = 0 OR state = 'active')",
                )?
                .query_row(params![zone.as_str(), only_active], |r| r.get(0))?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM \
                 (SELECT * FROM packs WHERE zone_id = ?1 AND (?2 = 0 OR state = 'active') \
                  ORDER BY seq LIMIT ?3 OFFSET ?4) p \
                 JOIN pack_hosts h ON h.pack_id = p.id ORDER BY p.seq, h.position"
            ))?;
            let rows = stmt.query(params![
                zone.as_str(),
                only_active,
                clamp(limit),
                clamp(offset)
            ])?;
            Ok(Page {
                items: read_packs(rows)?,
                total: total.max(0) as u64,
            })
        })
    }

    pub(super) fn count_packs(&self, zone: &ZoneId) -> Result<u64, StoreError> {
        self.with_conn(|conn| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM packs WHERE zone_id = ?1")?
                .query_row([zone.as_str()], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
    }

    pub(super) fn pack_by_id(&self, id: &PackId) -> Result<Option<Pack>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
                 JOIN pack_hosts h ON h.pack_id = p.id \
                 WHERE p.id = ?1 ORDER BY h.position"
            ))?;
            Ok(read_packs(stmt.query([id.as_str()])?)?.pop())
        })
    }

    pub(super) fn all_packs(&self, held_only: bool) -> Result<Vec<Pack>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
                 JOIN pack_hosts h ON h.pack_id = p.id \
                 WHERE ?1 = 0 OR (p.state = 'pending_validation' \
                                  AND (p.brand_check = 1 OR p.method = 'email')) \
                 ORDER BY p.seq, h.position"
            ))?;
            read_packs(stmt.query([held_only])?)
        })
    }

    pub(super) fn renew_leases(
        &self,
        owner: &str,
        wall_now: i64,
        lease_secs: i64,
    ) -> Result<u64, StoreError> {
        self.write(Touch::Nothing, |tx| {
            let renewed = tx
                .prepare_cached(RENEW_LEASES)?
                .execute(params![owner, wall_now, lease_secs])?;
            Ok(renewed as u64)
        })
    }

    pub(super) fn claim_due(&self, claim: &Claim<'_>) -> Result<Vec<(ZoneId, PackId)>, StoreError> {
        // The due rows come from three index range scans (hosts by due time, pending packs by
        // deadline, active packs by expiry), so the cost follows the due work, not the
        // number of packs stored.
        self.write(Touch::Nothing, |tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE packs SET lease_owner = ?1, lease_until = ?2 + ?3 \
                 WHERE id IN ( \
                   SELECT p.id FROM ( \
                       SELECT pack_id AS id, next_due_at AS due FROM pack_hosts \
                       WHERE next_due_at <= ?4 \
                     UNION ALL \
                       SELECT id, stage_deadline FROM packs \
                       WHERE state = 'pending_validation' AND stage_deadline <= ?4 \
                     UNION ALL \
                       SELECT id, cert_not_after FROM packs \
                       WHERE state = 'active' AND cert_not_after <= ?4 \
                   ) d JOIN packs p ON p.id = d.id \
                   WHERE (p.lease_until IS NULL OR p.lease_until <= ?2) \
                     AND p.brand_check = 0 \
                     AND p.state IN ('pending_validation', 'pending_issuance', \
                                     'pending_deployment', 'active') \
                   GROUP BY p.id ORDER BY MIN(d.due), MIN(p.seq) LIMIT ?5) \
                 RETURNING zone_id, id",
            )?;
            let rows = stmt.query_map(
                params![
                    claim.owner,
                    claim.wall_now,
                    claim.lease_secs,
                    claim.now,
                    clamp(claim.limit)
                ],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (zone, id) = row?;
                out.push((
                    ZoneId::parse(&zone).map_err(|_| corrupt("zone id", &zone))?,
                    PackId::parse(&id).map_err(|_| corrupt("pack id", &id))?,
                ));
            }
            Ok(out)
        })
    }

    pub(super) fn release_leases_of(&self, owner: &str) -> Result<u64, StoreError> {
        self.write(Touch::Nothing, |tx| {
            Ok(tx.execute(
                "UPDATE packs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?1",
                [owner],
            )? as u64)
        })
    }

    pub(super) fn leased_elsewhere(
        &self,
        zone: &ZoneId,
        owner: Option<&str>,
        wall_now: i64,
    ) -> Result<Vec<PackId>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id FROM packs WHERE zone_id = ?1 AND lease_owner IS NOT NULL \
                 AND lease_until > ?2 AND (?3 IS NULL OR lease_owner != ?3)",
            )?;
            let ids = stmt
                .query_map(params![zone.as_str(), wall_now, owner], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            ids.iter()
                .map(|id| PackId::parse(id).map_err(|_| corrupt("pack id", id)))
                .collect()
        })
    }

    pub(super) fn write_lifecycle_batch(
        &self,
        owner: &str,
        updates: &mut [Pack],
        releases: &[PackId],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let (outcomes, _) = self.write_then(
            |tx| {
                let mut outcomes = Vec::with_capacity(updates.len());
                // The packs as now stored, for the cache's views.
                let mut written = Vec::with_capacity(updates.len());
                for pack in updates.iter() {
                    // A conflict or a deleted pack changed nothing: it fails alone. Any
                    // other error ends the transaction, rolling back the whole batch.
                    outcomes.push(match update_pack_row(tx, pack) {
                        Ok(()) => {
                            let mut stored = pack.clone();
                            stored.version += 1;
                            written.push(stored);
                            Ok(())
                        }
                        Err(e @ (StoreError::Conflict | StoreError::NotFound)) => Err(e),
                        Err(e) => return Err(e),
                    });
                }
                let mut release = tx.prepare_cached(
                    "UPDATE packs SET lease_owner = NULL, lease_until = NULL \
                     WHERE id = ?1 AND lease_owner = ?2",
                )?;
                for id in releases {
                    release.execute([id.as_str(), owner])?;
                }
                Ok((outcomes, written))
            },
            |(_, written)| Touch::Packs(std::mem::take(written)),
        )?;
        for (pack, outcome) in updates.iter_mut().zip(&outcomes) {
            if outcome.is_ok() {
                pack.version += 1;
            }
        }
        Ok(outcomes)
    }

    pub(super) fn delete_pack(&self, zone: &ZoneId, id: &PackId) -> Result<bool, StoreError> {
        self.write(Touch::Zone(zone), |tx| {
            Ok(tx.execute(
                "DELETE FROM packs WHERE zone_id = ?1 AND id = ?2",
                [zone.as_str(), id.as_str()],
            )? > 0)
        })
    }
}

/// The names of the database's own tables (not SQLite's internal ones), sorted.
fn user_tables(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

/// Creates an empty database file with mode 0600, and its folder with mode 0700 if it
/// does not exist: the database holds credential hashes and the folder private keys.
/// SQLite gives the `-wal` and `-shm` files the database file's mode. Folders and files
/// that exist keep the mode their owner gave them.
fn create_database_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| storage_error("creating the folder", dir, &e))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        // Another process created it meanwhile: open that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(storage_error("creating the database", path, &e)),
    }
}

/// An I/O failure on the database's files, saying what to do when the cause is one an
/// operator meets (a read-only folder or file system).
fn storage_error(action: &str, path: &Path, e: &std::io::Error) -> StoreError {
    let hint = match e.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem => {
            ": the file system is read-only; give zonecert a data directory it can write"
        }
        std::io::ErrorKind::PermissionDenied => {
            ": permission denied; give the user running zonecert write access, or choose \
             another data directory"
        }
        _ => "",
    };
    StoreError::Backend(format!("{action} {}: {e}{hint}", path.display()))
}

/// SQLite reports a folder it cannot write as "unable to open database file" (it needs
/// to create the `-wal` and `-shm` files beside the database): find out which of the
/// folder and the file is read-only, and say so with the path.
fn explain_open_failure(path: &Path, e: StoreError) -> StoreError {
    let StoreError::Backend(reason) = &e else {
        return e;
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let probe = dir.join(format!(
        ".zonecert-write-probe-{:016x}",
        rand::random::<u64>()
    ));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(io) if is_read_only(&io) => {
            return StoreError::Backend(format!(
                "the data directory {} is read-only ({io}): zonecert must create its \
                 database's journal files there; make it writable or choose another \
                 data directory ({reason})",
                dir.display()
            ));
        }
        Err(_) => return e,
    }
    match std::fs::OpenOptions::new().write(true).open(path) {
        Err(io) if is_read_only(&io) => StoreError::Backend(format!(
            "the database {} is read-only ({io}): make it writable by the user running \
             zonecert ({reason})",
            path.display()
        )),
        _ => e,
    }
}

fn is_read_only(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    )
}

pub(super) fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
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

/// Every pack of a zone with its hosts, in order of creation.
fn packs_of_zone(conn: &Connection, zone: &ZoneId) -> Result<Vec<Pack>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
         JOIN pack_hosts h ON h.pack_id = p.id \
         WHERE p.zone_id = ?1 ORDER BY p.seq, h.position"
    ))?;
    read_packs(stmt.query([zone.as_str()])?)
}

/// SQLite integers are signed: page arithmetic is clamped into them.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn errors_json(errors: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(errors).map_err(|e| StoreError::Backend(e.to_string()))
}

/// Writes a changed pack back if its `version` is still the stored one (the caller bumps
/// its copy's version on success).
fn update_pack_row(tx: &rusqlite::Transaction<'_>, pack: &Pack) -> Result<(), StoreError> {
    let changes = PackChanges::of(pack)?;
    let leading: [&dyn ToSql; 2] = [&pack.id.as_str(), &pack.version];
    // Cached statements: the lifecycle writes packs in batches of hundreds.
    let changed = tx
        .prepare_cached(
            "UPDATE packs SET state = ?3, method = ?4, cloudflare_branding = ?5, \
         brand_check = ?6, errors = ?7, updated_at = ?8, stage_deadline = ?9, \
         cert_id = ?10, cert_chain_pem = ?11, cert_not_before = ?12, \
         cert_not_after = ?13, cert_issuer = ?14, cert_signature = ?15, \
         cert_issued_at = ?16, version = version + 1 \
         WHERE id = ?1 AND version = ?2",
        )?
        .execute(params_from_iter(
            leading.into_iter().chain(changes.params()),
        ))?;
    if changed == 0 {
        let exists: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM packs WHERE id = ?1)",
            [pack.id.as_str()],
            |r| r.get(0),
        )?;
        return Err(if exists {
            StoreError::Conflict
        } else {
            StoreError::NotFound
        });
    }
    tx.prepare_cached("DELETE FROM pack_hosts WHERE pack_id = ?1")?
        .execute([pack.id.as_str()])?;
    insert_hosts(tx, pack)?;
    Ok(())
}

/// The columns of a pack that change over its life, bound in this order by both the INSERT
/// and the UPDATE of a pack, after their own leading columns.
struct PackChanges<'a> {
    state: &'a str,
    method: &'a str,
    cloudflare_branding: bool,
    brand_check: bool,
    errors: String,
    updated_at: i64,
    stage_deadline: i64,
    cert_id: Option<&'a str>,
    cert_chain_pem: Option<&'a str>,
    cert_not_before: Option<i64>,
    cert_not_after: Option<i64>,
    cert_issuer: Option<&'a str>,
    cert_signature: Option<&'a str>,
    cert_issued_at: Option<i64>,
}

impl<'a> PackChanges<'a> {
    fn of(pack: &'a Pack) -> Result<Self, StoreError> {
        let cert = pack.certificate.as_ref();
        Ok(PackChanges {
            state: pack.state.as_str(),
            method: pack.method.as_str(),
            cloudflare_branding: pack.cloudflare_branding,
            brand_check: pack.brand_check,
            errors: errors_json(&pack.errors)?,
            updated_at: pack.updated_at,
            stage_deadline: pack.stage_deadline,
            cert_id: cert.map(|c| c.id.as_str()),
            cert_chain_pem: cert.map(|c| c.chain_pem.as_str()),
            cert_not_before: cert.map(|c| c.not_before),
            cert_not_after: cert.map(|c| c.not_after),
            cert_issuer: cert.map(|c| c.issuer.as_str()),
            cert_signature: cert.map(|c| c.signature.as_str()),
            cert_issued_at: cert.map(|c| c.issued_at),
        })
    }

    fn params(&self) -> [&dyn ToSql; 14] {
        [
            &self.state,
            &self.method,
            &self.cloudflare_branding,
            &self.brand_check,
            &self.errors,
            &self.updated_at,
            &self.stage_deadline,
            &self.cert_id,
            &self.cert_chain_pem,
            &self.cert_not_before,
            &self.cert_not_after,
            &self.cert_issuer,
            &self.cert_signature,
            &self.cert_issued_at,
        ]
    }
}

fn insert_hosts(tx: &rusqlite::Transaction<'_>, pack: &Pack) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO pack_hosts (pack_id, position, hostname, record_kind, record_name, \
         record_value, verified, last_checked_at, reason, attempts, next_due_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for (position, host) in pack.hosts.iter().enumerate() {
        let (name, value) = match &host.record {
            DcvRecord::Txt { name, value } => (name.clone(), value.clone()),
            DcvRecord::Http { url, body } => (url.clone(), body.clone()),
            DcvRecord::Cname { name, target } => (name.clone(), target.clone()),
            DcvRecord::Email { emails } => (String::new(), emails.join(",")),
        };
        stmt.execute(params![
            pack.id.as_str(),
            position as i64,
            host.hostname.as_str(),
            host.record.method().as_str(),
            name,
            value,
            host.check.verified,
            host.check.last_checked_at,
            host.check.reason,
            host.check.attempts,
            host.check.next_due_at,
        ])?;
    }
    Ok(())
}

fn zone_from_parts((id, name, created_at): (String, String, i64)) -> Result<Zone, StoreError> {
    Ok(Zone {
        id: ZoneId::parse(&id).map_err(|_| corrupt("zone id", &id))?,
        name: Hostname::parse(&name).map_err(|_| corrupt("zone name", &name))?,
        created_at,
    })
}

fn hash_from_blob(blob: Vec<u8>) -> Result<[u8; 32], StoreError> {
    blob.try_into()
        .map_err(|_| StoreError::Backend("stored hash is not 32 bytes".into()))
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

const PACK_COLUMNS: &str = "p.id, p.zone_id, p.state, p.method, p.validity_days, p.ca, \
    p.cloudflare_branding, p.brand_check, p.errors, p.created_at, p.updated_at, \
    p.stage_deadline, p.cert_id, p.cert_chain_pem, p.cert_not_before, p.cert_not_after, \
    p.cert_issuer, p.cert_signature, p.cert_issued_at, p.version";
const HOST_COLUMNS: &str = "h.hostname, h.record_kind, h.record_name, h.record_value, \
    h.verified, h.last_checked_at, h.reason, h.attempts, h.next_due_at";

struct RawPack {
    id: String,
    zone_id: String,
    state: String,
    method: String,
    validity_days: u32,
    ca: String,
    cloudflare_branding: bool,
    brand_check: bool,
    errors: String,
    created_at: i64,
    updated_at: i64,
    stage_deadline: i64,
    cert_id: Option<String>,
    cert_chain_pem: Option<String>,
    cert_not_before: Option<i64>,
    cert_not_after: Option<i64>,
    cert_issuer: Option<String>,
    cert_signature: Option<String>,
    cert_issued_at: Option<i64>,
    version: i64,
}

struct RawHost {
    hostname: String,
    kind: String,
    name: String,
    value: String,
    verified: Option<bool>,
    last_checked_at: Option<i64>,
    reason: Option<String>,
    attempts: u32,
    next_due_at: i64,
}

/// The pack columns (`PACK_COLUMNS`, first) of a joined row.
fn raw_pack(r: &Row<'_>) -> rusqlite::Result<RawPack> {
    Ok(RawPack {
        id: r.get(0)?,
        zone_id: r.get(1)?,
        state: r.get(2)?,
        method: r.get(3)?,
        validity_days: r.get(4)?,
        ca: r.get(5)?,
        cloudflare_branding: r.get(6)?,
        brand_check: r.get(7)?,
        errors: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        stage_deadline: r.get(11)?,
        cert_id: r.get(12)?,
        cert_chain_pem: r.get(13)?,
        cert_not_before: r.get(14)?,
        cert_not_after: r.get(15)?,
        cert_issuer: r.get(16)?,
        cert_signature: r.get(17)?,
        cert_issued_at: r.get(18)?,
        version: r.get(19)?,
    })
}

/// The host columns (`HOST_COLUMNS`, after the pack's) of a joined row.
fn raw_host(r: &Row<'_>) -> rusqlite::Result<RawHost> {
    Ok(RawHost {
        hostname: r.get(20)?,
        kind: r.get(21)?,
        name: r.get(22)?,
        value: r.get(23)?,
        verified: r.get(24)?,
        last_checked_at: r.get(25)?,
        reason: r.get(26)?,
        attempts: r.get(27)?,
        next_due_at: r.get(28)?,
    })
}

/// Folds joined rows (ordered by pack, then host) into packs. A pack's own columns
/// repeat on each of its host rows; they are decoded once, on its first row.
fn read_packs(mut rows: rusqlite::Rows<'_>) -> Result<Vec<Pack>, StoreError> {
    let mut packs: Vec<Pack> = Vec::new();
    while let Some(row) = rows.next()? {
        let continues = match (packs.last(), row.get_ref(0)?.as_str()) {
            (Some(last), Ok(id)) => last.id.as_str() == id,
            _ => false,
        };
        if !continues {
            packs.push(pack_from_raw(raw_pack(row)?)?);
        }
        let host = host_from_raw(raw_host(row)?)?;
        if let Some(pack) = packs.last_mut() {
            pack.hosts.push(host);
        }
    }
    Ok(packs)
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

fn pack_from_raw(p: RawPack) -> Result<Pack, StoreError> {
    let certificate = match (
        p.cert_id,
        p.cert_chain_pem,
        p.cert_not_before,
        p.cert_not_after,
    ) {
        (Some(id), Some(chain_pem), Some(not_before), Some(not_after)) => Some(IssuedCertificate {
            id,
            chain_pem,
            not_before,
            not_after,
            issuer: p.cert_issuer.unwrap_or_default(),
            signature: p.cert_signature.unwrap_or_default(),
            issued_at: p.cert_issued_at.unwrap_or(not_before),
        }),
        _ => None,
    };
    Ok(Pack {
        id: PackId::parse(&p.id).map_err(|_| corrupt("pack id", &p.id))?,
        zone_id: ZoneId::parse(&p.zone_id).map_err(|_| corrupt("zone id", &p.zone_id))?,
        state: PackState::parse(&p.state).ok_or_else(|| corrupt("pack state", &p.state))?,
        method: DcvMethod::parse(&p.method).ok_or_else(|| corrupt("method", &p.method))?,
        validity_days: p.validity_days,
        ca: CaChoice::parse(&p.ca).ok_or_else(|| corrupt("certificate authority", &p.ca))?,
        cloudflare_branding: p.cloudflare_branding,
        brand_check: p.brand_check,
        hosts: Vec::new(),
        errors: serde_json::from_str(&p.errors).map_err(|_| corrupt("pack errors", &p.errors))?,
        created_at: p.created_at,
        updated_at: p.updated_at,
        stage_deadline: p.stage_deadline,
        certificate,
        version: p.version,
    })
}

fn host_from_raw(h: RawHost) -> Result<PackHost, StoreError> {
    let method = DcvMethod::parse(&h.kind).ok_or_else(|| corrupt("record kind", &h.kind))?;
    let record = match method {
        DcvMethod::Txt => DcvRecord::Txt {
            name: h.name,
            value: h.value,
        },
        DcvMethod::Http => DcvRecord::Http {
            url: h.name,
            body: h.value,
        },
        DcvMethod::Cname => DcvRecord::Cname {
            name: h.name,
            target: h.value,
        },
        DcvMethod::Email => DcvRecord::Email {
            emails: h.value.split(',').map(str::to_owned).collect(),
        },
    };
    Ok(PackHost {
        hostname: Hostname::parse(&h.hostname).map_err(|_| corrupt("host", &h.hostname))?,
        record,
        check: HostCheck {
            verified: h.verified,
            last_checked_at: h.last_checked_at,
            reason: h.reason,
            attempts: h.attempts,
            next_due_at: h.next_due_at,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("z.db")).unwrap();
        (dir, s)
    }

    fn zone(s: &SqliteStore) -> Zone {
        let z = Zone {
            id: ZoneId::generate(),
            name: Hostname::parse("example.com").unwrap(),
            created_at: 1,
        };
        s.insert_zone(&z, false).unwrap();
        z
    }

    fn pack(z: &Zone) -> Pack {
        Pack::order(
            z.id.clone(),
            vec![
                Hostname::parse("example.com").unwrap(),
                Hostname::parse("*.example.com").unwrap(),
            ],
            DcvMethod::Txt,
            90,
            CaChoice::LetsEncrypt,
            false,
            "x.dcv.test",
            100,
        )
    }

    #[test]
    fn packs_round_trip() {
        let (_d, s) = store();
        let z = zone(&s);
        let p = pack(&z);
        s.insert_pack(&p, 10).unwrap();
        let back = s.pack(&z.id, &p.id).unwrap().unwrap();
        assert_eq!(back, p);
        assert_eq!(s.packs_of_zone(&z.id).unwrap(), vec![p]);
    }

    #[test]
    fn quota_is_enforced_atomically() {
        let (_d, s) = store();
        let z = zone(&s);
        s.insert_pack(&pack(&z), 2).unwrap();
        s.insert_pack(&pack(&z), 2).unwrap();
        assert!(matches!(
            s.insert_pack(&pack(&z), 2),
            Err(StoreError::QuotaExceeded { allocated: 2 })
        ));
        assert_eq!(s.count_packs(&z.id).unwrap(), 2);
    }

    #[test]
    fn updates_detect_concurrent_changes() {
        let (_d, s) = store();
        let z = zone(&s);
        let p = pack(&z);
        s.insert_pack(&p, 10).unwrap();
        let mut a = s.pack(&z.id, &p.id).unwrap().unwrap();
        let mut b = a.clone();
        a.hosts[0].check.attempts = 1;
        s.update_pack(&mut a).unwrap();
        b.hosts[0].check.attempts = 5;
        assert!(matches!(s.update_pack(&mut b), Err(StoreError::Conflict)));
        let back = s.pack(&z.id, &p.id).unwrap().unwrap();
        assert_eq!(back.hosts[0].check.attempts, 1);
        assert_eq!(back.version, 1);
    }

    #[test]
    fn listing_pages_and_filters() {
        let (_d, s) = store();
        let z = zone(&s);
        let mut ids = Vec::new();
        for _ in 0..7 {
            let p = pack(&z);
            ids.push(p.id.clone());
            s.insert_pack(&p, 100).unwrap();
        }
        let page = s.list_packs(&z.id, PackFilter::All, 5, 5).unwrap();
        assert_eq!(page.total, 7);
        assert_eq!(
            page.items.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
            ids[5..]
        );
        let active = s.list_packs(&z.id, PackFilter::Active, 0, 5).unwrap();
        assert_eq!((active.total, active.items.len()), (0, 0));
        let past = s.list_packs(&z.id, PackFilter::All, 100, 5).unwrap();
        assert!(past.items.is_empty());
    }

    fn claim(now: i64, limit: u64) -> Claim<'static> {
        Claim {
            owner: "worker-a",
            now,
            wall_now: 1_000,
            lease_secs: 60,
            limit,
        }
    }

    #[test]
    fn soonest_claims_take_the_longest_due_first_and_respect_leases() {
        let (_d, s) = store();
        let z = zone(&s);
        let (mut late, mut early, mut overdue) = (pack(&z), pack(&z), pack(&z));
        for h in &mut late.hosts {
            h.check.next_due_at = 500;
        }
        for h in &mut early.hosts {
            h.check.next_due_at = 200;
        }
        // No host due, but past its validation deadline: due through the deadline.
        overdue.stage_deadline = 300;
        for h in &mut overdue.hosts {
            h.check.next_due_at = 10_000;
        }
        for p in [&late, &early, &overdue] {
            s.insert_pack(p, 10).unwrap();
        }
        // As a sorted list: the claim chooses by due time, RETURNING lists in table order.
        let ids = |claimed: Vec<(ZoneId, PackId)>| -> Vec<String> {
            let mut ids: Vec<String> = claimed.into_iter().map(|(_, id)| id.to_string()).collect();
            ids.sort();
            ids
        };
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        assert!(s.claim_due(&claim(100, 10)).unwrap().is_empty());
        assert_eq!(
            ids(s.claim_due(&claim(1_000, 2)).unwrap()),
            sorted(vec![early.id.to_string(), overdue.id.to_string()])
        );
        assert_eq!(
            ids(s.claim_due(&claim(1_000, 10)).unwrap()),
            [late.id.to_string()]
        );
        // Everything is leased now; a lapsed lease is claimable again.
        assert!(s.claim_due(&claim(1_000, 10)).unwrap().is_empty());
        let mut later = claim(1_000, 10);
        later.wall_now = 1_061;
        assert_eq!(s.claim_due(&later).unwrap().len(), 3);
    }

    #[test]
    fn renewal_extends_only_the_owners_live_leases() {
        let (_d, s) = store();
        let z = zone(&s);
        let (mine, lapsed, theirs) = (pack(&z), pack(&z), pack(&z));
        for p in [&mine, &lapsed, &theirs] {
            s.insert_pack(p, 10).unwrap();
        }
        // worker-a holds `mine` until 1_060 and `lapsed` until 1_010; worker-b `theirs`.
        let claim_one = |owner, wall_now, lease_secs| {
            s.claim_due(&Claim {
                owner,
                now: 1_000,
                wall_now,
                lease_secs,
                limit: 1,
            })
            .unwrap()
        };
        assert_eq!(claim_one("worker-a", 1_000, 60).len(), 1);
        assert_eq!(claim_one("worker-a", 1_000, 10).len(), 1);
        assert_eq!(claim_one("worker-b", 1_000, 60).len(), 1);

        // At 1_030 only worker-a's live lease is extended, to 1_090.
        assert_eq!(s.renew_leases("worker-a", 1_030, 60).unwrap(), 1);
        let claimable_at = |wall_now| {
            let mut c = claim(1_000, 10);
            c.owner = "worker-c";
            c.wall_now = wall_now;
            s.claim_due(&c).unwrap().len()
        };
        // worker-c (leases of 60 s) gets the lapsed one at 1_030, worker-b's at 1_070 and
        // worker-a's only at 1_090 (with the lapsed one again).
        assert_eq!(claimable_at(1_030), 1);
        assert_eq!(claimable_at(1_070), 1);
        assert_eq!(claimable_at(1_089), 0);
        assert_eq!(claimable_at(1_090), 2);
        // worker-a's lease is worker-c's now: nothing of worker-a's to renew.
        assert_eq!(s.renew_leases("worker-a", 1_091, 60).unwrap(), 0);
    }

    #[test]
    fn renewal_finds_the_owners_packs_through_the_lease_owner_index() {
        let (_d, s) = store();
        let plan = s
            .with_conn(|conn| {
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {RENEW_LEASES}"))?;
                let rows =
                    stmt.query_map(params!["worker-a", 1_000, 60], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .unwrap();
        assert!(
            plan.iter().any(|d| d.contains("packs_by_lease_owner")),
            "{plan:?}"
        );
    }

    #[test]
    fn lifecycle_batches_write_each_pack_alone_and_release_leases() {
        let (_d, s) = store();
        let z = zone(&s);
        let (a, b) = (pack(&z), pack(&z));
        s.insert_pack(&a, 10).unwrap();
        s.insert_pack(&b, 10).unwrap();
        assert_eq!(s.claim_due(&claim(1_000, 10)).unwrap().len(), 2);

        let mut fresh_a = s.pack(&z.id, &a.id).unwrap().unwrap();
        fresh_a.hosts[0].check.attempts = 3;
        let stale_b = s.pack(&z.id, &b.id).unwrap().unwrap();
        let mut newer_b = stale_b.clone();
        newer_b.hosts[0].check.attempts = 7;
        s.update_pack(&mut newer_b).unwrap();

        let mut batch = vec![fresh_a.clone(), stale_b];
        let outcomes = s
            .write_lifecycle_batch("worker-a", &mut batch, &[a.id.clone(), b.id.clone()])
            .unwrap();
        assert!(outcomes[0].is_ok());
        assert!(matches!(outcomes[1], Err(StoreError::Conflict)));
        assert_eq!(batch[0].version, fresh_a.version + 1);
        assert_eq!(s.pack(&z.id, &a.id).unwrap().unwrap(), batch[0]);
        assert_eq!(
            s.pack(&z.id, &b.id).unwrap().unwrap().hosts[0]
                .check
                .attempts,
            7
        );
        // Both leases were given up in the same transaction.
        assert_eq!(s.claim_due(&claim(1_000, 10)).unwrap().len(), 2);
    }

    #[test]
    fn a_lifecycle_batch_updates_cached_zone_views_in_place() {
        let (_d, s) = store();
        let z = zone(&s);
        let (a, b) = (pack(&z), pack(&z));
        s.insert_pack(&a, 10).unwrap();
        s.insert_pack(&b, 10).unwrap();
        let before = s.zone_with_packs(s.cache_epoch(), &z.id).unwrap().unwrap();

        let mut changed = s.pack(&z.id, &a.id).unwrap().unwrap();
        changed.hosts[0].check.attempts = 5;
        changed
            .errors
            .push("TXT _acme-challenge.example.com has 1 value".into());
        let mut batch = vec![changed];
        s.write_lifecycle_batch("worker-a", &mut batch, &[])
            .unwrap();

        // The cache holds a new view at once, before any read could fill it again.
        let cached = s
            .inner
            .cache
            .zone(&z.id)
            .expect("the zone's view was updated, not forgotten");
        assert!(!Arc::ptr_eq(&before, &cached), "the old view is gone");
        let again = s.zone_with_packs(s.cache_epoch(), &z.id).unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&cached, &again),
            "requests are served the new view"
        );
        // It is what a read past the cache finds.
        let stored = s.zone_with_packs(None, &z.id).unwrap().unwrap();
        assert_eq!(cached.packs, stored.packs);
        assert_eq!(*cached.packs[0], batch[0]);
        assert_eq!(cached.packs[1], before.packs[1]);
        assert!(
            cached.rendered.get().is_none(),
            "rendered again from the new packs"
        );
    }

    #[test]
    fn a_write_that_changes_rows_to_what_they_were_keeps_the_cache() {
        let (_d, s) = store();
        let z = zone(&s);
        s.insert_pack(&pack(&z), 10).unwrap();
        assert_eq!(s.claim_due(&claim(10_000, 10)).unwrap().len(), 1);
        s.zone_with_packs(s.cache_epoch(), &z.id).unwrap().unwrap();
        assert!(s.inner.cache.zone(&z.id).is_some());
        // Renewed in the second the claim was taken: the same lease, rows "changed".
        assert_eq!(s.renew_leases("worker-a", 1_000, 60).unwrap(), 1);
        s.cache_epoch();
        assert!(s.inner.cache.zone(&z.id).is_some(), "the cache was emptied");
    }

    /// Inserts `n` zones, each in a commit of its own (of at least one WAL frame).
    fn commit_zones(s: &SqliteStore, n: u32) {
        for i in 0..n {
            s.insert_zone(
                &Zone {
                    id: ZoneId::generate(),
                    name: Hostname::parse(&format!("z{i}.example.com")).unwrap(),
                    created_at: 1,
                },
                false,
            )
            .unwrap();
        }
    }

    #[test]
    fn the_checkpointer_keeps_the_wal_short() {
        let (_d, s) = store();
        let watch = s.inner.watch.as_ref().unwrap();
        commit_zones(&s, checkpointer::CHECKPOINT_FRAMES + 200);
        // The writer's own checkpoint is only a backstop far above this: without the
        // checkpointer, these frames would stay.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while watch.state().unwrap().frames_to_checkpoint >= checkpointer::CHECKPOINT_FRAMES {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint in 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_packs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.db");
        let (z, p) = {
            let s = SqliteStore::open(&path).unwrap();
            let z = zone(&s);
            let mut p = pack(&z);
            p.stage_deadline = 4242;
            s.insert_pack(&p, 10).unwrap();
            (z, p)
        };
        // Version 1's layout: the same but for the deadline column's name.
        let column = |conn: &Connection| -> Vec<String> {
            conn.prepare("SELECT name FROM pragma_table_info('packs') WHERE name LIKE '%deadline'")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "ALTER TABLE packs RENAME COLUMN stage_deadline TO validation_deadline; \
                 UPDATE meta SET value = '1' WHERE key = 'schema_version';",
            )
            .unwrap();
            assert_eq!(column(&conn), ["validation_deadline"]);
        }
        let s = SqliteStore::open(&path).unwrap();
        let back = s.pack(&z.id, &p.id).unwrap().unwrap();
        assert_eq!(back.stage_deadline, 4242);
        let conn = Connection::open(&path).unwrap();
        assert_eq!(column(&conn), ["stage_deadline"]);
        let version: String = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        // The validation-deadline index followed the column.
        let index: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'packs_validation_deadline'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(index.contains("stage_deadline"), "{index}");
        // A database newer than this zonecert is refused, not rewritten.
        conn.execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
        drop(s);
        assert!(SqliteStore::open(&path).is_err());
    }

    #[test]
    fn dropping_the_store_closes_every_connection_it_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.db");
        let s = SqliteStore::open(&path).unwrap();
        commit_zones(&s, checkpointer::CHECKPOINT_FRAMES + 10);
        // The last ask is likely still pending or running. SQLite removes the WAL when
        // the last connection closes: if the checkpointer's outlived the store, it is
        // still there (and a checkpoint ran on beside a closing database).
        drop(s);
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        assert!(!Path::new(&wal).exists(), "a connection outlived the store");
    }

    #[test]
    fn warming_reads_every_zone_view_as_a_request_would() {
        let (_d, s) = store();
        // More zones than one chunk, some without packs, some with two.
        let mut zones = Vec::new();
        for i in 0..(WARM_CHUNK * 2 + 5) {
            let z = Zone {
                id: ZoneId::generate(),
                name: Hostname::parse(&format!("z{i}.example.com")).unwrap(),
                created_at: 1,
            };
            s.insert_zone(&z, false).unwrap();
            for _ in 0..(i % 3) {
                s.insert_pack(&pack(&z), 10).unwrap();
            }
            zones.push(z);
        }
        assert_eq!(s.warm_cache(1.0).unwrap(), zones.len());
        for z in &zones {
            let cached = s.inner.cache.zone(&z.id).expect("warmed");
            let read = s.zone_with_packs(None, &z.id).unwrap().unwrap();
            assert_eq!((&cached.zone, &cached.packs), (&read.zone, &read.packs));
        }
        // A share too small for one view warms nothing and says so.
        let (_d2, t) = store();
        let z = zone(&t);
        t.insert_pack(&pack(&z), 10).unwrap();
        assert_eq!(t.warm_cache(0.0).unwrap(), 0);
        assert!(t.inner.cache.zone(&z.id).is_none());
    }

    #[test]
    fn deleting_a_zone_deletes_its_packs() {
        let (_d, s) = store();
        let z = zone(&s);
        let p = pack(&z);
        s.insert_pack(&p, 10).unwrap();
        assert!(s.delete_zone(&z.id).unwrap());
        assert!(s.pack(&z.id, &p.id).unwrap().is_none());
        assert!(!s.delete_zone(&z.id).unwrap());
    }
}
