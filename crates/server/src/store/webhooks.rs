//! Webhooks in the store: the outbox of events (written in the transaction of the
//! transition that caused them), the endpoints, and each endpoint's deliveries.
//!
//! An event is written once, with one delivery per endpoint that wants it (its zone and
//! event filters), in the same transaction as the pack's write: a crash never loses an
//! event whose transition committed, nor keeps one whose transition rolled back. The
//! delivery worker (`crate::webhooks`) claims due deliveries of one endpoint at a time
//! under a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so nodes deliver each once,
//! and records each attempt's outcome.

use super::{Store, StoreError};
use std::sync::Arc;

/// Unix milliseconds of the wall clock: deliveries are retried in real time, whatever
/// the lifecycle's clock says.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An event as written to the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// The message id (`webhook-id`), the same for every endpoint and attempt.
    pub id: String,
    /// The event type (`pack.issued`, ...).
    pub kind: String,
    /// The pack's zone.
    pub zone_id: String,
    /// The pack.
    pub pack_id: String,
    /// Unix seconds (the lifecycle's clock) when it happened.
    pub occurred_at: i64,
    /// The JSON body delivered, whole, made only if an endpoint wants the event.
    pub payload: Payload,
    /// An event written at most once: a second event with the same key is dropped
    /// (`pack.expiring` for one certificate and threshold).
    pub dedupe: Option<String>,
}

/// An event's JSON body, made when the event is written and only if an endpoint wants
/// it. Most transitions have no endpoint listening (the outbox keeps only events some
/// endpoint wants), and the body (the pack as the API shows it) costs more to make than
/// the transition itself: made eagerly, it was most of the lifecycle's added cost.
#[derive(Clone)]
pub struct Payload(Arc<dyn Fn() -> String + Send + Sync>);

impl Payload {
    /// A body made by `make` when it is first needed (each call makes it anew: it is
    /// needed at most once, when the event is written).
    pub fn deferred(make: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Payload(Arc::new(make))
    }

    /// The body.
    pub fn make(&self) -> String {
        (self.0)()
    }
}

impl From<String> for Payload {
    fn from(body: String) -> Self {
        let body: Arc<str> = body.into();
        Payload::deferred(move || body.to_string())
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Payload(..)")
    }
}

/// A webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// Its id (`we_...`).
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Only this zone's events, if set.
    pub zone_id: Option<String>,
    /// Only these event types; empty: every type.
    pub events: Vec<String>,
    /// The signing secret, `whsec_<base64>`. Kept in clear: signing needs it.
    pub secret: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Deliveries may go to loopback and private addresses (labs, tests, a receiver on
    /// the operator's own network); otherwise only to public ones, as HTTP DCV.
    pub allow_private: bool,
}

impl WebhookEndpoint {
    /// Whether the endpoint wants an event of this type and zone.
    pub fn wants(&self, kind: &str, zone_id: &str) -> bool {
        self.wants_zone(zone_id)
            && (self.events.is_empty() || self.events.iter().any(|e| e == kind))
    }

    /// Whether the endpoint wants any event of this zone.
    pub fn wants_zone(&self, zone_id: &str) -> bool {
        self.zone_id.as_deref().is_none_or(|z| z == zone_id)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not delivered yet; retried until delivered or given up.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Given up (24 hours of retries).
    Failed,
}

impl DeliveryState {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    /// From what is stored.
    pub fn parse(s: &str) -> Result<DeliveryState, StoreError> {
        match s {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "failed" => Ok(DeliveryState::Failed),
            other => Err(StoreError::Corrupt(format!(
                "stored delivery state {other:?} is not valid"
            ))),
        }
    }
}

/// One event to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The event's position in the outbox (delivery order per pack).
    pub event_seq: i64,
    /// The event's id (`webhook-id`).
    pub event_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The event type.
    pub kind: String,
    /// The pack.
    pub pack_id: String,
    /// The JSON body.
    pub payload: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// Unix milliseconds (wall clock) of the next attempt, while pending.
    pub next_attempt_ms: i64,
    /// Unix milliseconds (wall clock) when it was written: retries stop 24 hours later.
    pub created_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// A delivery worker's request for due deliveries of one endpoint.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryClaim<'a> {
    /// Who claims (unique per process).
    pub owner: &'a str,
    /// The endpoint.
    pub endpoint_id: &'a str,
    /// Unix milliseconds, wall clock.
    pub now_ms: i64,
    /// How long the claim holds the deliveries.
    pub lease_ms: i64,
    /// At most this many.
    pub limit: u64,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Delivered.
    Delivered,
    /// Failed; tried again at `at_ms`.
    Retry {
        /// Unix milliseconds.
        at_ms: i64,
        /// Why it failed.
        error: String,
    },
    /// Failed for good.
    Failed {
        /// Why the last attempt failed.
        error: String,
    },
}

/// An attempt's outcome, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryResult {
    /// The event.
    pub event_seq: i64,
    /// The endpoint.
    pub endpoint_id: String,
    /// The outcome.
    pub outcome: DeliveryOutcome,
}

impl Store {
    /// Adds a webhook endpoint.
    pub async fn insert_webhook_endpoint(&self, e: &WebhookEndpoint) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.insert_webhook_endpoint(e),
            Store::Postgres(s) => s.insert_webhook_endpoint(e).await,
        }
    }

    /// The webhook endpoints as this process knows them without asking the database, or
    /// `None` when it does not (then they must be read). SQLite's read cache keeps them
    /// (emptied when another process commits); PostgreSQL's lifecycle reads them with
    /// each batch, as before.
    pub fn known_webhook_endpoints(&self) -> Option<Arc<[WebhookEndpoint]>> {
        match self {
            Store::Sqlite(s) => s.known_webhook_endpoints(),
            Store::Postgres(_) => None,
        }
    }

    /// Every webhook endpoint, oldest first.
    pub async fn webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        match self {
            Store::Sqlite(s) => s.webhook_endpoints(),
            Store::Postgres(s) => s.webhook_endpoints().await,
        }
    }

    /// Removes an endpoint and its deliveries; `false` when there was none.
    pub async fn delete_webhook_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.delete_webhook_endpoint(id),
            Store::Postgres(s) => s.delete_webhook_endpoint(id).await,
        }
    }

    /// Writes events (and their deliveries) outside a pack's write: `pack.expiring`
    /// notices, a test event. Events whose `dedupe` key was written before are dropped.
    pub async fn insert_events(&self, events: &[OutboxEvent]) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.insert_events(events),
            Store::Postgres(s) => s.insert_events(events).await,
        }
    }

    /// Leases up to `claim.limit` due deliveries of one endpoint: per pack only the
    /// oldest pending one (so a pack's events arrive in order), oldest first.
    pub async fn claim_deliveries(
        &self,
        claim: &DeliveryClaim<'_>,
    ) -> Result<Vec<Delivery>, StoreError> {
        match self {
            Store::Sqlite(s) => s.claim_deliveries(claim),
            Store::Postgres(s) => s.claim_deliveries(claim).await,
        }
    }

    /// Records attempts' outcomes (and ends `owner`'s leases on them), in one transaction.
    pub async fn record_deliveries(
        &self,
        owner: &str,
        results: &[DeliveryResult],
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.record_deliveries(owner, results),
            Store::Postgres(s) => s.record_deliveries(owner, results).await,
        }
    }

    /// The newest deliveries (up to `limit`), only failed ones if `failed_only`.
    pub async fn list_deliveries(
        &self,
        failed_only: bool,
        limit: u64,
    ) -> Result<Vec<Delivery>, StoreError> {
        match self {
            Store::Sqlite(s) => s.list_deliveries(failed_only, limit),
            Store::Postgres(s) => s.list_deliveries(failed_only, limit).await,
        }
    }
}
