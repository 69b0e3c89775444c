//! Storage: the one seam between the server and its database.
//!
//! Every SQL statement of the server lives below this folder. The rest of the server
//! sees [`Store`], whose methods take and return model types. Two backends, each a
//! folder of files by concern: SQLite (`sqlite/`, embedded, the default) and PostgreSQL
//! (`postgres/`, many nodes sharing one database), with the same methods and guarantees.
//!
//! The methods are `async` although SQLite answers synchronously: the PostgreSQL
//! backend awaits its pool.

mod accounts;
mod apply;
mod cache;
mod copy;
mod monitoring;
mod postgres;
mod revocations;
mod sqlite;
mod webhooks;

use crate::model::{CaChoice, Pack, PackId, Token, User, Zone, ZoneId};
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;

pub use apply::{Applied, MAX_ATTEMPTS, PackAccess, apply_transition};
pub use cache::ZoneView;
pub use copy::TableCopy;
pub use monitoring::{MonitoringSnapshot, PackCount};
pub use postgres::{DEFAULT_POOL_SIZE, PgStore};
pub use revocations::{QueuedRevocation, RevocationClaim};
pub use sqlite::SqliteStore;
pub use webhooks::{
    Delivery, DeliveryClaim, DeliveryOutcome, DeliveryResult, DeliveryState, OutboxEvent, Payload,
    WebhookEndpoint, wall_ms,
};

/// A certificate's private key as stored: sealed under a KEK (`crate::keys`), for the
/// pack's certificate `serial`.
#[derive(Clone)]
pub struct SealedKey {
    /// The pack.
    pub pack: PackId,
    /// The certificate's serial (its id) the key belongs to.
    pub serial: String,
    /// The sealed bytes.
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedKey({}, {})", self.pack.as_str(), self.serial)
    }
}

/// Rows of (pack id, serial).
fn pack_serials(rows: Vec<(String, String)>) -> Result<Vec<(PackId, String)>, StoreError> {
    rows.into_iter()
        .map(|(pack, serial)| {
            PackId::parse(&pack)
                .map(|id| (id, serial))
                .map_err(|_| StoreError::Corrupt(format!("stored pack id {pack:?} is not valid")))
        })
        .collect()
}

/// Rows of `certificate_keys` as keys.
fn sealed_keys(rows: Vec<(String, String, Vec<u8>)>) -> Result<Vec<SealedKey>, StoreError> {
    rows.into_iter()
        .map(|(pack, serial, sealed)| {
            let pack = PackId::parse(&pack).map_err(|_| {
                StoreError::Corrupt(format!("stored pack id {pack:?} is not valid"))
            })?;
            Ok(SealedKey {
                pack,
                serial,
                sealed,
            })
        })
        .collect()
}

/// Why a storage operation failed: kinds a caller can match (retry when busy, tell the
/// operator when unavailable or damaged); the message for a person is made where it is
/// shown (`http::error`, the CLI).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique value (zone name, e-mail) is taken.
    #[error("{0} already exists")]
    Duplicate(String),
    /// The zone's quota of packs is used up.
    #[error("quota of {allocated} certificate packs is used up")]
    QuotaExceeded {
        /// The zone's allocation.
        allocated: u64,
    },
    /// A pack changed since it was read (optimistic concurrency).
    #[error("the pack changed concurrently")]
    Conflict,
    /// The row to change does not exist (any more).
    #[error("not found")]
    NotFound,
    /// Another writer held the database's lock past the busy timeout: worth retrying.
    #[error("the database is busy: {0}")]
    Busy(String),
    /// The database cannot be opened, read or written (a missing or read-only file or
    /// folder, a full disk, an I/O error, the lifecycle's store thread stopped).
    #[error("{0}")]
    Unavailable(String),
    /// The database holds something zonecert cannot read back (a damaged file, a value
    /// the model refuses, a schema it does not know).
    #[error("{0}")]
    Corrupt(String),
    /// Asked for something this store does not do (a database URL it cannot use, a
    /// schema newer than this zonecert).
    #[error("{0}")]
    Unsupported(String),
    /// Any other failure of the database engine.
    #[error("database error: {0}")]
    Database(String),
    /// A new zone would lie inside another zone, or another zone inside it.
    #[error("the zone {zone} overlaps the zone {other}: one lies inside the other")]
    Nested {
        /// The zone being created.
        zone: String,
        /// The existing zone above or below it.
        other: String,
    },
    /// There is no database at this path, and the caller may not create one
    /// ([`Store::open_existing`]).
    #[error("no zonecert database at {}", .0.display())]
    NoDatabase(std::path::PathBuf),
}

/// Which packs a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackFilter {
    /// Only active packs (Cloudflare's default for the list endpoint).
    Active,
    /// Packs of every status (`status=all`).
    All,
}

/// A page of results and the total across pages.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items of the page.
    pub items: Vec<T>,
    /// How many items all pages hold.
    pub total: u64,
}

/// How a lifecycle batch writes one pack ([`Store::write_lifecycle_batch`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteMode {
    /// Give the pack's lease up with the write, if it is written.
    pub release: bool,
    /// The pack's hosts are those of the version it replaces: their rows stay as they
    /// are (rewriting them was a third of a write's cost, for an issuance or a
    /// deployment that changes none).
    pub hosts_unchanged: bool,
}

/// A lifecycle worker's request for due work.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// Who claims: unique per worker process.
    pub owner: &'a str,
    /// The lifecycle's now (Unix seconds), compared with due times, deadlines and expiry.
    pub now: i64,
    /// The wall clock's now (Unix seconds), for leases: a lease measures a server's
    /// liveness, not the lifecycle's (possibly simulated) time.
    pub wall_now: i64,
    /// How long the lease lasts.
    pub lease_secs: i64,
    /// At most this many packs.
    pub limit: u64,
    /// Packs of these certificate authorities are left for later (or another node),
    /// but those pending validation (checked here, not at the CA): the worker holds as
    /// many of theirs waiting for the CA as it will (`lifecycle/worker/hand.rs`).
    pub skip_cas: &'a [CaChoice],
}

/// What a database URL names.
enum DatabaseUrl<'a> {
    Postgres(&'a str),
    Sqlite(&'a Path),
}

impl<'a> DatabaseUrl<'a> {
    fn parse(url: &'a str) -> DatabaseUrl<'a> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            DatabaseUrl::Postgres(url)
        } else {
            DatabaseUrl::Sqlite(Path::new(url.strip_prefix("sqlite://").unwrap_or(url)))
        }
    }
}

/// The server's storage.
#[derive(Debug, Clone)]
pub enum Store {
    /// The embedded SQLite database.
    Sqlite(SqliteStore),
    /// A PostgreSQL database, shared by any number of nodes.
    Postgres(PgStore),
}

/// One request's reads of what the request path reads most (credentials, a zone's
/// view), through the read cache. Made when the request starts: making it checks once
/// that the cache holds every commit made so far (for SQLite, one look at the commit
/// counter), which then covers all of the request's reads.
#[derive(Debug)]
pub struct Reads<'a> {
    store: &'a Store,
    /// Where the cache stood at the check; `None`: read past the cache.
    epoch: Option<u64>,
    /// PostgreSQL's check, made at the request's first read: it is a round trip (see
    /// `postgres/changes.rs`), which `Store::reads` (not async) cannot make.
    pg_epoch: tokio::sync::OnceCell<Option<u64>>,
}

/// The PostgreSQL branches of the reads below are boxed: an `async fn`'s future is as
/// large as its largest branch, and theirs (a pool's checkout, a prepared statement, a
/// round trip) made every request's future kilobytes large on SQLite too, copied
/// whenever it moved (`memcpy`, about 700 instructions of a GET verification, callgrind).
/// On PostgreSQL an allocation is next to nothing beside the round trip.
impl Reads<'_> {
    /// The request's epoch on PostgreSQL, checked once.
    async fn pg_epoch(&self, s: &PgStore) -> Option<u64> {
        *self.pg_epoch.get_or_init(|| s.cache_epoch()).await
    }

    /// The user with that e-mail (lower case).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<Arc<User>>, StoreError> {
        match self.store {
            Store::Sqlite(s) => s.user_by_email(self.epoch, email),
            Store::Postgres(s) => {
                Box::pin(async { s.user_by_email(self.pg_epoch(s).await, email).await }).await
            }
        }
    }

    /// The token whose secret hashes to `hash`.
    pub async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<Arc<Token>>, StoreError> {
        match self.store {
            Store::Sqlite(s) => s.token_by_hash(self.epoch, hash),
            Store::Postgres(s) => {
                Box::pin(async { s.token_by_hash(self.pg_epoch(s).await, hash).await }).await
            }
        }
    }

    /// A zone and all its packs, read in one snapshot (the verification view's path).
    /// Shared with the read cache: clone what must change.
    pub async fn zone_with_packs(&self, id: &ZoneId) -> Result<Option<Arc<ZoneView>>, StoreError> {
        match self.store {
            Store::Sqlite(s) => s.zone_with_packs(self.epoch, id),
            Store::Postgres(s) => {
                Box::pin(async { s.zone_with_packs(self.pg_epoch(s).await, id).await }).await
            }
        }
    }

    /// What `render` makes of a zone's view (the API's one answer built from a whole
    /// view: GET verification's), kept in the read cache beside the view until the zone
    /// changes: a zone's next request gets the same bytes without rendering, and without
    /// reading the view (see `cache::CachedZone`). `None` when the zone does not exist.
    pub async fn zone_answer<E: From<StoreError>>(
        &self,
        id: &ZoneId,
        render: impl FnOnce(&ZoneView) -> Result<Vec<u8>, E>,
    ) -> Result<Option<Bytes>, E> {
        let (cache, cached) = match self.store {
            Store::Sqlite(s) => (s.read_cache(), self.epoch.is_some()),
            Store::Postgres(s) => (s.read_cache(), Box::pin(self.pg_epoch(s)).await.is_some()),
        };
        if cached && let Some(answer) = cache.answer(id) {
            return Ok(Some(answer));
        }
        let Some(view) = self.zone_with_packs(id).await? else {
            return Ok(None);
        };
        let answer = Bytes::from(render(&view)?);
        if cached {
            cache.keep_answer(&view, answer.clone());
        }
        Ok(Some(answer))
    }
}

impl Store {
    /// Starts a request's reads: see [`Reads`].
    pub fn reads(&self) -> Reads<'_> {
        Reads {
            store: self,
            epoch: match self {
                Store::Sqlite(s) => s.cache_epoch(),
                Store::Postgres(_) => None,
            },
            pg_epoch: tokio::sync::OnceCell::new(),
        }
    }

    /// Opens (creating if needed) the SQLite database in `data_dir`.
    pub fn open_sqlite(data_dir: &Path) -> Result<Store, StoreError> {
        Self::open_sqlite_with(data_dir, true)
    }

    /// [`Store::open_sqlite`]; with `migrate` false (`serve --migrate false`) its schema
    /// is left alone: a database without it or at an older version is refused, naming
    /// `zonecert db migrate`.
    pub fn open_sqlite_with(data_dir: &Path, migrate: bool) -> Result<Store, StoreError> {
        let path = Self::sqlite_path(data_dir);
        Ok(Store::Sqlite(if migrate {
            SqliteStore::open(&path)?
        } else {
            SqliteStore::open_current(&path)?
        }))
    }

    /// The embedded database's file in `data_dir`.
    pub fn sqlite_path(data_dir: &Path) -> std::path::PathBuf {
        data_dir.join("zonecert.db")
    }

    /// Opens the database named by `url` (see [`Store::open_url`]), or else the embedded
    /// one in `data_dir`, only if it exists: [`StoreError::NoDatabase`] otherwise (for
    /// PostgreSQL: an error when the database holds no zonecert schema). For
    /// administration, which must never create a database by accident (run from the
    /// wrong folder, it would, and the server would not see what it did).
    pub fn open_existing(data_dir: &Path, url: Option<&str>) -> Result<Store, StoreError> {
        match url.map(DatabaseUrl::parse) {
            Some(DatabaseUrl::Postgres(url)) => Ok(Store::Postgres(PgStore::open(
                url,
                DEFAULT_POOL_SIZE,
                false,
            )?)),
            Some(DatabaseUrl::Sqlite(path)) => Ok(Store::Sqlite(SqliteStore::open_existing(path)?)),
            None => Ok(Store::Sqlite(SqliteStore::open_existing(
                &Self::sqlite_path(data_dir),
            )?)),
        }
    }

    /// Opens the database named by a URL, creating or migrating its schema:
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` (or `postgresql://`), or `sqlite://PATH`
    /// (or a plain path).
    pub fn open_url(url: &str) -> Result<Store, StoreError> {
        Self::open_url_with_pool(url, DEFAULT_POOL_SIZE)
    }

    /// [`Store::open_url`] with at most `pool_size` connections to PostgreSQL (SQLite
    /// has no pool: it ignores it).
    pub fn open_url_with_pool(url: &str, pool_size: usize) -> Result<Store, StoreError> {
        Self::open_url_with(url, pool_size, true)
    }

    /// [`Store::open_url_with_pool`]; with `migrate` false (`serve --migrate false`,
    /// for installations that migrate in a step of their own) the schema is neither
    /// created nor migrated: a database without it or at an older version is refused,
    /// naming `zonecert db migrate`.
    pub fn open_url_with(url: &str, pool_size: usize, migrate: bool) -> Result<Store, StoreError> {
        match (DatabaseUrl::parse(url), migrate) {
            (DatabaseUrl::Postgres(url), true) => {
                Ok(Store::Postgres(PgStore::open(url, pool_size, true)?))
            }
            (DatabaseUrl::Postgres(url), false) => {
                Ok(Store::Postgres(PgStore::open_current(url, pool_size)?))
            }
            (DatabaseUrl::Sqlite(path), true) => Ok(Store::Sqlite(SqliteStore::open(path)?)),
            (DatabaseUrl::Sqlite(path), false) => {
                Ok(Store::Sqlite(SqliteStore::open_current(path)?))
            }
        }
    }

    /// The schema version this build writes on the store's backend (the database holds
    /// it once opened with migrations).
    pub fn written_schema_version(&self) -> String {
        match self {
            Store::Sqlite(_) => sqlite::SCHEMA_VERSION.to_owned(),
            Store::Postgres(_) => postgres::SCHEMA_VERSION.to_string(),
        }
    }

    /// Opens the PostgreSQL database at `url` as the target of [`Store::copy_into`]:
    /// one without tables (its schema is created) or with zonecert's tables all empty.
    pub fn open_copy_target(url: &str) -> Result<Store, StoreError> {
        match DatabaseUrl::parse(url) {
            DatabaseUrl::Postgres(url) => Ok(Store::Postgres(PgStore::open_empty(
                url,
                DEFAULT_POOL_SIZE,
            )?)),
            DatabaseUrl::Sqlite(_) => Err(StoreError::Unsupported(
                "db copy copies into PostgreSQL: --to takes a postgres:// URL".into(),
            )),
        }
    }

    /// Copies this (SQLite) database into `target` (PostgreSQL, from
    /// [`Store::open_copy_target`]) in one transaction: every table's rows, counted and
    /// checksummed on both sides (see [`TableCopy`]).
    pub async fn copy_into(&self, target: &Store) -> Result<Vec<TableCopy>, StoreError> {
        match (self, target) {
            (Store::Sqlite(source), Store::Postgres(target)) => {
                copy::copy_sqlite_to_postgres(source, target).await
            }
            _ => Err(StoreError::Unsupported(
                "db copy copies a SQLite database into PostgreSQL".into(),
            )),
        }
    }

    /// Which backend the store runs on: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Fills the read cache with zones' views, up to `share` (0 to 1) of its budget,
    /// returning how many it read: after a restart, a zone's first request then costs no
    /// more than its later ones. Synchronous, and it takes a while (about 20 µs a zone
    /// of one pack): run it on a thread that may block, beside the serving. Safe beside
    /// writes: a view that a write changes while it is read is not kept.
    pub fn warm_cache(&self, share: f64) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => s.warm_cache(share),
            // Not cached yet (see `postgres/mod.rs`): nothing to warm.
            Store::Postgres(_) => Ok(0),
        }
    }

    // ---- zones ----

    /// Inserts a zone; its name must be unique and, unless `allow_nested`, neither
    /// inside another zone nor above one ([`StoreError::Nested`]).
    pub async fn insert_zone(&self, zone: &Zone, allow_nested: bool) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.insert_zone(zone, allow_nested),
            Store::Postgres(s) => s.insert_zone(zone, allow_nested).await,
        }
    }

    /// The zone with `id`.
    pub async fn zone(&self, id: &ZoneId) -> Result<Option<Zone>, StoreError> {
        match self {
            Store::Sqlite(s) => s.zone(id),
            Store::Postgres(s) => s.zone(id).await,
        }
    }

    /// Zones by name, optionally only those named `name` or with ids in `only`.
    pub async fn list_zones(
        &self,
        name: Option<&str>,
        only: Option<&[ZoneId]>,
        offset: u64,
        limit: u64,
    ) -> Result<Page<Zone>, StoreError> {
        match self {
            Store::Sqlite(s) => s.list_zones(name, only, offset, limit),
            Store::Postgres(s) => s.list_zones(name, only, offset, limit).await,
        }
    }

    /// Deletes a zone and its packs; `false` when there was none.
    pub async fn delete_zone(&self, id: &ZoneId) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.delete_zone(id),
            Store::Postgres(s) => s.delete_zone(id).await,
        }
    }

    // ---- users and tokens ----

    /// Inserts a user; the e-mail must be unique.
    pub async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.insert_user(user),
            Store::Postgres(s) => s.insert_user(user).await,
        }
    }

    /// The user with that e-mail (lower case).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<Arc<User>>, StoreError> {
        self.reads().user_by_email(email).await
    }

    /// Every user.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        match self {
            Store::Sqlite(s) => s.list_users(),
            Store::Postgres(s) => s.list_users().await,
        }
    }

    /// Deletes a user by id or e-mail; `false` when there was none.
    pub async fn delete_user(&self, id_or_email: &str) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.delete_user(id_or_email),
            Store::Postgres(s) => s.delete_user(id_or_email).await,
        }
    }

    /// Inserts a token.
    pub async fn insert_token(&self, token: &Token) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.insert_token(token),
            Store::Postgres(s) => s.insert_token(token).await,
        }
    }

    /// Every token.
    pub async fn list_tokens(&self) -> Result<Vec<Token>, StoreError> {
        match self {
            Store::Sqlite(s) => s.list_tokens(),
            Store::Postgres(s) => s.list_tokens().await,
        }
    }

    /// Revokes (deletes) a token; `false` when there was none.
    pub async fn delete_token(&self, id: &str) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.delete_token(id),
            Store::Postgres(s) => s.delete_token(id).await,
        }
    }

    // ---- certificates' keys ----

    /// Keeps the sealed private key of the pack's certificate `serial` (replacing the
    /// pack's previous one).
    pub async fn put_certificate_key(
        &self,
        pack: &PackId,
        serial: &str,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.put_certificate_key(pack, serial, sealed),
            Store::Postgres(s) => s.put_certificate_key(pack, serial, sealed).await,
        }
    }

    /// The pack's sealed key, if one is kept.
    pub async fn certificate_key(&self, pack: &PackId) -> Result<Option<SealedKey>, StoreError> {
        match self {
            Store::Sqlite(s) => s.certificate_key(pack),
            Store::Postgres(s) => s.certificate_key(pack).await,
        }
    }

    /// Every sealed key kept.
    pub async fn certificate_keys(&self) -> Result<Vec<SealedKey>, StoreError> {
        match self {
            Store::Sqlite(s) => s.certificate_keys(),
            Store::Postgres(s) => s.certificate_keys().await,
        }
    }

    /// The active packs whose certificate's key is kept, with that certificate's serial:
    /// what every node's deploy directory holds.
    pub async fn active_certificate_keys(&self) -> Result<Vec<(PackId, String)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.active_certificate_keys(),
            Store::Postgres(s) => s.active_certificate_keys().await,
        }
    }

    /// Replaces `key`'s sealed bytes with `resealed` (the same key under another KEK),
    /// unless the pack's key changed since `key` was read (then `false`).
    pub async fn reseal_certificate_key(
        &self,
        key: &SealedKey,
        resealed: &[u8],
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.reseal_certificate_key(key, resealed),
            Store::Postgres(s) => s.reseal_certificate_key(key, resealed).await,
        }
    }

    // ---- packs ----

    /// Inserts a new pack unless its zone already holds `allocated` packs.
    pub async fn insert_pack(&self, pack: &Pack, allocated: u64) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.insert_pack(pack, allocated),
            Store::Postgres(s) => s.insert_pack(pack, allocated).await,
        }
    }

    /// Writes a changed pack back. Fails with [`StoreError::Conflict`] if it changed
    /// since it was read (its `version` moved); bumps `pack.version` on success.
    pub async fn update_pack(&self, pack: &mut Pack) -> Result<(), StoreError> {
        self.update_pack_with_events(pack, &[]).await
    }

    /// [`Store::update_pack`], writing the transition's webhook `events` (and their
    /// deliveries) in the same transaction.
    pub async fn update_pack_with_events(
        &self,
        pack: &mut Pack,
        events: &[OutboxEvent],
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.update_pack(pack, events),
            Store::Postgres(s) => s.update_pack(pack, events).await,
        }
    }

    /// The pack `id` of `zone`.
    pub async fn pack(&self, zone: &ZoneId, id: &PackId) -> Result<Option<Pack>, StoreError> {
        match self {
            Store::Sqlite(s) => s.pack(zone, id),
            Store::Postgres(s) => s.pack(zone, id).await,
        }
    }

    /// Every pack of a zone, in order of creation (the verification view).
    pub async fn packs_of_zone(&self, zone: &ZoneId) -> Result<Vec<Pack>, StoreError> {
        match self {
            Store::Sqlite(s) => s.packs_of_zone(zone),
            Store::Postgres(s) => s.packs_of_zone(zone).await,
        }
    }

    /// A page of a zone's packs, in order of creation.
    pub async fn list_packs(
        &self,
        zone: &ZoneId,
        filter: PackFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<Pack>, StoreError> {
        match self {
            Store::Sqlite(s) => s.list_packs(zone, filter, offset, limit),
            Store::Postgres(s) => s.list_packs(zone, filter, offset, limit).await,
        }
    }

    /// How many packs the zone holds (the quota's `used`).
    pub async fn count_packs(&self, zone: &ZoneId) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.count_packs(zone),
            Store::Postgres(s) => s.count_packs(zone).await,
        }
    }

    /// The pack `id`, whatever its zone (operator commands).
    pub async fn pack_by_id(&self, id: &PackId) -> Result<Option<Pack>, StoreError> {
        match self {
            Store::Sqlite(s) => s.pack_by_id(id),
            Store::Postgres(s) => s.pack_by_id(id).await,
        }
    }

    /// The packs with a host delegated (cname) to `target`, the name under the service
    /// domain where zonecert's DNS responder publishes the host's challenge.
    pub async fn packs_with_cname_target(&self, target: &str) -> Result<Vec<Pack>, StoreError> {
        match self {
            Store::Sqlite(s) => s.packs_with_cname_target(target),
            Store::Postgres(s) => s.packs_with_cname_target(target).await,
        }
    }

    /// Whether some pack has a host delegated (cname) to a name under `name` (which the
    /// DNS responder then answers as an empty non-terminal, not NXDOMAIN).
    pub async fn has_cname_target_under(&self, name: &str) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.has_cname_target_under(name),
            Store::Postgres(s) => s.has_cname_target_under(name).await,
        }
    }

    /// Every pack of every zone in order of creation (administration), or with
    /// `held_only` those waiting for an operator's `pack approve|reject`: held by the
    /// brand check, or pending e-mail validation.
    pub async fn all_packs(&self, held_only: bool) -> Result<Vec<Pack>, StoreError> {
        match self {
            Store::Sqlite(s) => s.all_packs(held_only),
            Store::Postgres(s) => s.all_packs(held_only).await,
        }
    }

    /// Leases up to `claim.limit` packs that have lifecycle work due and are not leased
    /// by a live worker, the packs whose work has been due longest first, returning them.
    /// Due work: a pending_validation pack with a host due (or past its validation
    /// deadline), a pending_issuance or pending_deployment pack with a host due (its retry
    /// time), an active pack with a host due (renewal) or past its certificate's
    /// `not_after`. Packs held for brand check are never due. Selecting and leasing is one
    /// transaction, so two servers on one database never claim the same pack; an expired
    /// lease (a crashed server) is claimable again. It finds the due work
    /// through indexes on due times, so its cost follows the amount of due work rather
    /// than the number of packs stored: the lifecycle calls it whenever it has room.
    /// Packs of the authorities in `skip_cas` are not claimed, but for those pending
    /// validation.
    pub async fn claim_due(&self, claim: &Claim<'_>) -> Result<Vec<(ZoneId, PackId)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.claim_due(claim),
            Store::Postgres(s) => s.claim_due(claim).await,
        }
    }

    /// Extends every lease `owner` holds that has not run out as of `wall_now` (wall-clock
    /// Unix seconds) to `wall_now + lease_secs`, in one statement; returns how many. A
    /// lease that already ran out is left alone: another server may have claimed the
    /// pack, and `owner` must treat it as lost.
    pub async fn renew_leases(
        &self,
        owner: &str,
        wall_now: i64,
        lease_secs: i64,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.renew_leases(owner, wall_now, lease_secs),
            Store::Postgres(s) => s.renew_leases(owner, wall_now, lease_secs).await,
        }
    }

    /// Writes a batch of lifecycle changes in one transaction: each pack of `updates` as
    /// [`Store::update_pack`] would (bumping its `version`), then gives up `owner`'s leases
    /// on `releases`, and on each `updates[i]` written whose `modes[i].release` is set
    /// (the step's last write: its lease goes with it, not in a transaction of its own).
    /// `modes[i].hosts_unchanged` says the pack's hosts are those of the version it
    /// replaces: their rows are kept as they are.
    /// `events[i]` are the webhook events of `updates[i]`'s transition, written only if
    /// it is. `keys` are kept first, as [`Store::put_certificate_key`]
    /// would: a worker saves a certificate's key in one batch and records the certificate
    /// in a later one, and a transaction of its own per key (one more commit and sync on
    /// the lifecycle's one store thread per issuance) halved the issuance rate.
    /// Returns one outcome per update, in order: a conflict or a pack deleted meanwhile
    /// fails only that update. `Err` means nothing was written.
    pub async fn write_lifecycle_batch(
        &self,
        owner: &str,
        updates: &mut [Pack],
        events: &[Vec<OutboxEvent>],
        modes: &[WriteMode],
        releases: &[PackId],
        keys: &[SealedKey],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                s.write_lifecycle_batch(owner, updates, events, modes, releases, keys)
            }
            Store::Postgres(s) => {
                s.write_lifecycle_batch(owner, updates, events, modes, releases, keys)
                    .await
            }
        }
    }

    /// Gives up every lease `owner` holds, live or not (a restarted node taking back its
    /// own packs); returns how many.
    pub async fn release_leases_of(&self, owner: &str) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.release_leases_of(owner),
            Store::Postgres(s) => s.release_leases_of(owner).await,
        }
    }

    /// The packs of `zone` under a live lease (as of `wall_now`, wall-clock seconds) of an
    /// owner other than `owner`: another server is working on them.
    pub async fn leased_elsewhere(
        &self,
        zone: &ZoneId,
        owner: Option<&str>,
        wall_now: i64,
    ) -> Result<Vec<PackId>, StoreError> {
        match self {
            Store::Sqlite(s) => s.leased_elsewhere(zone, owner, wall_now),
            Store::Postgres(s) => s.leased_elsewhere(zone, owner, wall_now).await,
        }
    }

    // ---- test controls ----

    /// A value of the database's `meta` table (the test controls' clock offset).
    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Sqlite(s) => s.setting(key),
            Store::Postgres(_) => Err(controls_need_sqlite()),
        }
    }

    /// Sets (or with `None` removes) a value of the `meta` table.
    pub async fn set_setting(&self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.set_setting(key, value),
            Store::Postgres(_) => Err(controls_need_sqlite()),
        }
    }

    /// Deletes every zone, pack, user, token and webhook (endpoints, the outbox and its
    /// deliveries), and the `meta` values named in
    /// `settings`, in one transaction (the test controls' reset); returns the ids of the
    /// packs deleted, whose deployed files the caller removes.
    pub async fn wipe(&self, settings: &[&str]) -> Result<Vec<PackId>, StoreError> {
        match self {
            Store::Sqlite(s) => s.wipe(settings),
            Store::Postgres(_) => Err(controls_need_sqlite()),
        }
    }

    /// Deletes a pack; `false` when there was none.
    pub async fn delete_pack(&self, zone: &ZoneId, id: &PackId) -> Result<bool, StoreError> {
        self.delete_pack_with_events(zone, id, &[]).await
    }

    /// [`Store::delete_pack`], writing webhook `events` (`pack.deleted`) in the same
    /// transaction if the pack was there.
    pub async fn delete_pack_with_events(
        &self,
        zone: &ZoneId,
        id: &PackId,
        events: &[OutboxEvent],
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.delete_pack(zone, id, events),
            Store::Postgres(s) => s.delete_pack(zone, id, events).await,
        }
    }
}

/// The test controls keep their clock in SQLite's `meta` table and reset by emptying its
/// tables; on PostgreSQL (shared by nodes that would all be reset and moved) they are not
/// offered yet.
fn controls_need_sqlite() -> StoreError {
    StoreError::Unsupported(
        "the test controls (--dev, --test-controls) need the embedded SQLite database; \
         PostgreSQL does not offer them yet"
            .into(),
    )
}
