//! What the metrics read from the store when scraped, and the readiness probe's ping.

use super::{Store, StoreError};

/// How many packs have one status (in one zone, when counted per zone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackCount {
    /// The status (`active`, `pending_validation`, ...).
    pub status: String,
    /// The zone's name, when counted per zone.
    pub zone: Option<String>,
    /// How many.
    pub count: u64,
}

/// The stored state the metrics describe, read in one go at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitoringSnapshot {
    /// Packs by status (and zone).
    pub packs: Vec<PackCount>,
    /// Active packs with a certificate.
    pub active: u64,
    /// The earliest `not_after` of an active pack's certificate.
    pub earliest_expiry: Option<i64>,
    /// Active packs whose certificate expires within 7 days of `now`.
    pub expiring_7d: u64,
    /// Active packs whose certificate expires within 30 days of `now`.
    pub expiring_30d: u64,
    /// Packs with work due at `now` (a host's check, a deadline, an expiry) that are not
    /// under a live lease at `wall_now`: the lifecycle's queue.
    pub due_now: u64,
    /// Certificates of deleted packs waiting in the revocation queue
    /// (`--acme-revoke-on-delete`), due or waiting to be tried again.
    pub revocations_queued: u64,
}

/// Seconds in a day.
pub(super) const DAY: i64 = 86_400;

impl Store {
    /// The counts the metrics' gauges show, as of `now` (the lifecycle's clock) and
    /// `wall_now` (leases); `per_zone` counts packs per zone as well as per status.
    pub async fn monitoring(
        &self,
        now: i64,
        wall_now: i64,
        per_zone: bool,
    ) -> Result<MonitoringSnapshot, StoreError> {
        match self {
            Store::Sqlite(s) => s.monitoring(now, wall_now, per_zone),
            Store::Postgres(s) => s.monitoring(now, wall_now, per_zone).await,
        }
    }

    /// Whether the database answers (one trivial query).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.ping(),
            Store::Postgres(s) => s.ping().await,
        }
    }
}
