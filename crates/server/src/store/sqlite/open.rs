//! Opening a database: creating its file, checking and migrating its schema, and
//! explaining why it cannot be opened.

use super::checkpointer::{self, Checkpointer};
use super::wal_watch::WalWatch;
use super::{Inner, SqliteStore, connect};
use crate::store::StoreError;
use crate::store::cache::ReadCache;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Mutex};
use thread_local::ThreadLocal;

const SCHEMA: &str = include_str!("schema.sql");
pub(in crate::store) const SCHEMA_VERSION: &str = "9";

/// The steps from each older schema version to the next, run in order on open. Version 2
/// gave `packs.validation_deadline` its true name, `stage_deadline`: it holds the
/// issuance and deployment deadline too. (Its index keeps its name: it covers the
/// validation stage only.)
const MIGRATIONS: &[Migration] = &[
    Migration {
        from: "1",
        to: "2",
        sql: "ALTER TABLE packs RENAME COLUMN validation_deadline TO stage_deadline;",
    },
    // The ACME order of a pack (issue 13).
    Migration {
        from: "2",
        to: "3",
        sql: "ALTER TABLE packs ADD COLUMN order_ref TEXT;",
    },
    // Webhooks' outbox, endpoints and deliveries (issue 15).
    Migration {
        from: "3",
        to: "4",
        sql: super::outbox::OUTBOX_SCHEMA,
    },
    // When the CA suggests renewing a pack's certificate (ACME Renewal Information,
    // issue 13).
    Migration {
        from: "4",
        to: "5",
        sql: "ALTER TABLE packs ADD COLUMN cert_renew_at INTEGER;",
    },
    // Certificates' private keys, sealed under the KEK (issue 14).
    Migration {
        from: "5",
        to: "6",
        sql: "CREATE TABLE IF NOT EXISTS certificate_keys (
    pack_id TEXT PRIMARY KEY REFERENCES packs(id) ON DELETE CASCADE,
    serial  TEXT NOT NULL,
    sealed  BLOB NOT NULL
);",
    },
    // The certificates of deleted packs waiting to be revoked (issue 13).
    Migration {
        from: "6",
        to: "7",
        sql: super::revocations::REVOCATIONS_SCHEMA,
    },
    // ACME accounts shared by the nodes of one database, sealed (issue 13).
    Migration {
        from: "7",
        to: "8",
        sql: super::accounts::ACCOUNTS_SCHEMA,
    },
    // The ACME directory that ordered each certificate, which the revocation queue's rows
    // name (issue 13). Certificates recorded before it that the built-in CA did not sign
    // get '': an ACME CA's, its directory unknown (the queue then goes by the CA's name).
    Migration {
        from: "8",
        to: "9",
        sql: "ALTER TABLE packs ADD COLUMN cert_acme_directory TEXT; \
              UPDATE packs SET cert_acme_directory = '' WHERE cert_id IS NOT NULL \
              AND cert_issuer NOT LIKE 'zonecert built-in %'; \
              ALTER TABLE revocations ADD COLUMN directory TEXT;",
    },
];

/// One step of [`MIGRATIONS`].
struct Migration {
    from: &'static str,
    to: &'static str,
    sql: &'static str,
}

/// The tables of the current schema. A migration that adds a table creates it itself, so
/// after the migrations every one of these exists in a database that has a version.
const EXPECTED_TABLES: &[&str] = &[
    "meta",
    "zones",
    "users",
    "tokens",
    "packs",
    "pack_hosts",
    "webhook_events",
    "webhook_endpoints",
    "webhook_deliveries",
    "certificate_keys",
    "revocations",
    "acme_accounts",
];
impl SqliteStore {
    /// Opens the database at `path`, creating it (mode 0600) and its folder (mode 0700)
    /// if needed, and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, true, true)
    }

    /// Opens the database at `path`, creating it if needed, without migrating its
    /// schema: a database at another version than this build's is refused (`serve
    /// --migrate false`), and so is a new one.
    pub fn open_current(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, true, false)
    }

    /// Opens the database at `path` only if it exists ([`StoreError::NoDatabase`]
    /// otherwise): administration run from the wrong folder must not create an empty
    /// database that a server would then serve.
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, false, true)
    }

    fn open_with(path: &Path, create: bool, migrate: bool) -> Result<Self, StoreError> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Err(StoreError::NoDatabase(path.to_owned()));
                }
                create_database_file(path)?;
            }
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "looking up {}: {e}",
                    path.display()
                )));
            }
        }
        Self::open_file(path, migrate).map_err(|e| explain_open_failure(path, e))
    }

    fn open_file(path: &Path, migrate: bool) -> Result<Self, StoreError> {
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
        // Not migrating: an older schema (or none) stops here; a newer one is refused
        // below as always.
        let older = match version.as_deref() {
            None => true,
            Some(v) => v.parse::<u32>().ok() < SCHEMA_VERSION.parse::<u32>().ok(),
        };
        if !migrate && older {
            return Err(StoreError::Unsupported(match &version {
                Some(v) => format!(
                    "database schema version {v} is older than this zonecert's ({SCHEMA_VERSION}), \
                     and migrations at start are off (--migrate false): run `zonecert db \
                     migrate` first"
                ),
                None => format!(
                    "{} holds no zonecert schema, and migrations at start are off \
                     (--migrate false): run `zonecert db migrate` first",
                    path.display()
                ),
            }));
        }
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
                    return Err(StoreError::Corrupt(format!(
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
                return Err(StoreError::Corrupt(format!(
                    "{} holds tables ({}) but no zonecert schema version: it is not a \
                     zonecert database, or a damaged one",
                    path.display(),
                    tables.join(", ")
                )));
            }
            None => {}
        }
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(super::outbox::OUTBOX_SCHEMA)?;
        tx.execute_batch(super::revocations::REVOCATIONS_SCHEMA)?;
        tx.execute_batch(super::accounts::ACCOUNTS_SCHEMA)?;
        match version.as_deref() {
            None => {
                // The queue's table is schema 7's (its migration); schema 9's column.
                tx.execute_batch(super::revocations::DIRECTORY_COLUMN)?;
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Unsupported(format!(
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
                readers: ThreadLocal::new(),
                path: path.to_owned(),
                writer: Mutex::new(writer),
                cache: ReadCache::default(),
                watch,
                checkpointer,
            }),
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
    StoreError::Unavailable(format!("{action} {}: {e}{hint}", path.display()))
}

/// SQLite reports a folder it cannot write as "unable to open database file" (it needs
/// to create the `-wal` and `-shm` files beside the database): find out which of the
/// folder and the file is read-only, and say so with the path.
fn explain_open_failure(path: &Path, e: StoreError) -> StoreError {
    let (StoreError::Unavailable(reason) | StoreError::Database(reason)) = &e else {
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
            return StoreError::Unavailable(format!(
                "the data directory {} is read-only ({io}): zonecert must create its \
                 database's journal files there; make it writable or choose another \
                 data directory ({reason})",
                dir.display()
            ));
        }
        Err(_) => return e,
    }
    match std::fs::OpenOptions::new().write(true).open(path) {
        Err(io) if is_read_only(&io) => StoreError::Unavailable(format!(
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
