//! Opening a database: the pool, its runtime, and the schema's migrations, run under an
//! advisory lock so that nodes starting together migrate once.

use super::{Inner, PgStore};
use crate::store::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::Arc;
use std::time::Duration;

/// Connections per node unless told otherwise (`--database-pool`, whose default is the
/// same).
pub const DEFAULT_POOL_SIZE: usize = 16;

/// The key of the advisory lock taken while migrating ("zonecert" in ASCII): a node that
/// starts while another migrates waits for it, then finds the schema current.
const MIGRATION_LOCK: i64 = 0x7a6f_6e65_6365_7274;

/// The schema's versions in order: each step's SQL brings the previous version to its
/// own. A database records the versions applied in `zonecert_schema_versions`.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("schema_v1.sql"),
    },
    // The ACME order of a pack (issue 13), as SQLite's schema 3.
    Migration {
        version: 2,
        sql: "ALTER TABLE packs ADD COLUMN order_ref TEXT;",
    },
    // Webhooks' outbox, endpoints and deliveries (issue 15), as SQLite's schema 4.
    Migration {
        version: 3,
        sql: super::outbox::OUTBOX_SCHEMA,
    },
    // When the CA suggests renewing a pack's certificate (ACME Renewal Information,
    // issue 13), as SQLite's schema 5.
    Migration {
        version: 4,
        sql: "ALTER TABLE packs ADD COLUMN cert_renew_at BIGINT;",
    },
    // Certificates' private keys, sealed under the KEK, as SQLite's schema 6.
    Migration {
        version: 5,
        sql: "CREATE TABLE certificate_keys ( \
              pack_id TEXT PRIMARY KEY REFERENCES packs(id) ON DELETE CASCADE, \
              serial TEXT NOT NULL, sealed BYTEA NOT NULL);",
    },
    // The certificates of deleted packs waiting to be revoked (issue 13), as SQLite's
    // schema 7.
    Migration {
        version: 6,
        sql: super::revocations::REVOCATIONS_SCHEMA,
    },
    // ACME accounts shared by the nodes, sealed (issue 13), as SQLite's schema 8.
    Migration {
        version: 7,
        sql: super::accounts::ACCOUNTS_SCHEMA,
    },
    // The ACME directory that ordered each certificate, which the revocation queue's rows
    // name (issue 13), as SQLite's schema 9 (its backfill too).
    Migration {
        version: 8,
        sql: "ALTER TABLE packs ADD COLUMN cert_acme_directory TEXT; \
              UPDATE packs SET cert_acme_directory = '' WHERE cert_id IS NOT NULL \
              AND cert_issuer NOT LIKE 'zonecert built-in %'; \
              ALTER TABLE revocations ADD COLUMN directory TEXT;",
    },
];

/// What opening does about the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    /// Creates or migrates it.
    Create,
    /// Neither: a database whose schema is not this build's version is refused (`serve
    /// --migrate false`, for installations that migrate in a step of their own).
    Current,
    /// Migrates it; a database without it is refused.
    Existing,
    /// Creates it in a database without tables, or migrates it when every table of
    /// zonecert's is empty; refuses any other database.
    CreateIntoEmpty,
}

/// One step of [`MIGRATIONS`].
struct Migration {
    version: i64,
    sql: &'static str,
}

/// The version this build writes.
pub(in crate::store) const SCHEMA_VERSION: i64 = 8;

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, with
    /// libpq's `sslmode` and `sslrootcert` among its parameters: see `tls.rs`) with a pool of up to `pool_size` connections, and brings
    /// its schema up to date. With `create` false, a database without zonecert's schema
    /// is refused instead (administration must not set one up by accident).
    pub fn open(url: &str, pool_size: usize, create: bool) -> Result<PgStore, StoreError> {
        let schema = if create {
            Schema::Create
        } else {
            Schema::Existing
        };
        Self::open_with(url, pool_size, schema)
    }

    /// Connects to the database at `url` without creating or migrating its schema: one
    /// at another version than this build's is refused, with the command that migrates.
    pub fn open_current(url: &str, pool_size: usize) -> Result<PgStore, StoreError> {
        Self::open_with(url, pool_size, Schema::Current)
    }

    /// Opens the target of `zonecert db copy`: a database with no table (its schema is
    /// created then), or with zonecert's tables all empty; refused otherwise.
    pub(in crate::store) fn open_empty(url: &str, pool_size: usize) -> Result<PgStore, StoreError> {
        Self::open_with(url, pool_size, Schema::CreateIntoEmpty)
    }

    fn open_with(url: &str, pool_size: usize, schema: Schema) -> Result<PgStore, StoreError> {
        // The URL holds the password: errors never repeat it.
        let connect = super::tls::Connect::parse(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("zonecert-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("starting the store's runtime: {e}")))?;
        let manager = Manager::from_config(
            connect.config.clone(),
            connect.tls.clone(),
            ManagerConfig {
                // A connection that broke (the server restarted) is replaced when taken.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("building the connection pool: {e}")))?;
        let store = PgStore {
            inner: Arc::new(Inner {
                pool,
                node: uuid::Uuid::new_v4().simple().to_string(),
                cache: Arc::default(),
                listener: Default::default(),
                runtime: Some(runtime),
            }),
        };
        // `open` is synchronous and may be called inside an async context, where
        // blocking on a runtime panics: the migration runs on a thread of its own.
        let handle = store
            .inner
            .runtime
            .as_ref()
            .map(|r| r.handle().clone())
            .ok_or_else(|| StoreError::Unavailable("the store's runtime is gone".into()))?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| handle.block_on(store.migrate(schema)))
                .join()
                .unwrap_or_else(|_| Err(StoreError::Database("migrating panicked".into())))
        })
        .map_err(|e| match e {
            // A connection that failed: say how TLS was set up (a refused certificate, a
            // server that wants TLS with sslmode=disable).
            StoreError::Unavailable(m) => {
                let hint = if m.contains("UnknownIssuer") {
                    ": the server's certificate is not signed by a CA of sslrootcert"
                } else {
                    ""
                };
                StoreError::Unavailable(format!("{m} (TLS: {}{hint})", connect.described))
            }
            other => other,
        })?;
        store.start_listening(connect.config, connect.tls);
        // Requests use the cache only once the store hears the other nodes' changes:
        // wait (briefly) for that, so a node serves from its cache from the start.
        let listening_by = std::time::Instant::now() + Duration::from_secs(5);
        while !store.listening() && std::time::Instant::now() < listening_by {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !store.listening() {
            tracing::warn!(
                "PostgreSQL change notices: not listening yet; requests read past the cache until then"
            );
        }
        Ok(store)
    }

    /// Applies the migrations the database lacks, in one transaction holding the
    /// migration lock.
    async fn migrate(&self, schema: Schema) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let exists: bool = tx
            .query_one(
                "SELECT to_regclass('zonecert_schema_versions') IS NOT NULL",
                &[],
            )
            .await?
            .try_get(0)?;
        if schema == Schema::CreateIntoEmpty && !exists {
            let tables: Vec<String> = tx
                .query(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = current_schema() ORDER BY 1",
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            if !tables.is_empty() {
                return Err(StoreError::Unsupported(format!(
                    "the target database is not empty: it holds tables that are not \
                     zonecert's ({}); give db copy an empty database",
                    tables.join(", ")
                )));
            }
        }
        if !exists && schema == Schema::Current {
            return Err(StoreError::Unsupported(format!(
                "the PostgreSQL database holds no zonecert schema, and migrations at start \
                 are off (--migrate false): run `zonecert db migrate` (version \
                 {SCHEMA_VERSION}) first"
            )));
        }
        if !exists && schema == Schema::Existing {
            return Err(StoreError::Unavailable(
                "the PostgreSQL database holds no zonecert schema: run `zonecert init` or \
                 `zonecert serve` with this --database first"
                    .into(),
            ));
        }
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS zonecert_schema_versions ( \
                 version    BIGINT PRIMARY KEY, \
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
        let current: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM zonecert_schema_versions",
                &[],
            )
            .await?
            .try_get(0)?;
        if current > SCHEMA_VERSION {
            return Err(StoreError::Unsupported(format!(
                "database schema version {current} is newer than this zonecert ({SCHEMA_VERSION})"
            )));
        }
        if schema == Schema::Current && current < SCHEMA_VERSION {
            return Err(StoreError::Unsupported(format!(
                "database schema version {current} is older than this zonecert's \
                 ({SCHEMA_VERSION}), and migrations at start are off (--migrate false): run \
                 `zonecert db migrate` first"
            )));
        }
        for step in MIGRATIONS.iter().filter(|m| m.version > current) {
            tx.batch_execute(step.sql).await?;
            tx.execute(
                "INSERT INTO zonecert_schema_versions (version) VALUES ($1)",
                &[&step.version],
            )
            .await?;
            tracing::info!(version = step.version, "PostgreSQL schema migrated");
        }
        if schema == Schema::CreateIntoEmpty {
            for table in crate::store::copy::TABLES {
                let any: bool = tx
                    .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])
                    .await?
                    .try_get(0)?;
                if any {
                    return Err(StoreError::Unsupported(format!(
                        "the target database is not empty: its {table} table holds rows; \
                         db copy only fills an empty database"
                    )));
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The schema version the database records (tests).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM zonecert_schema_versions",
                &[],
            )
            .await?
            .try_get(0)?)
    }
}
