//! Webhooks on SQLite: the outbox, the endpoints and their deliveries (see
//! `store/webhooks.rs`).

use super::{SqliteStore, clamp};
use crate::store::StoreError;
use crate::store::cache::Touch;
use crate::store::webhooks::{
    Delivery, DeliveryClaim, DeliveryOutcome, DeliveryResult, DeliveryState, OutboxEvent,
    WebhookEndpoint, wall_ms,
};
use rusqlite::{OptionalExtension, Row, Transaction, params};
use std::sync::Arc;

/// The outbox's part of the schema (version 4).
pub(super) const OUTBOX_SCHEMA: &str = include_str!("outbox.sql");

const DELIVERY_COLUMNS: &str = "d.event_seq, e.id, d.endpoint_id, e.kind, d.pack_id, e.payload, \
    d.state, d.attempts, d.next_attempt_ms, d.created_ms, d.last_error";

/// Writes `events` and one delivery per endpoint that wants each, inside the caller's
/// transaction (a pack's write, a deletion). See [`insert_events_for`].
pub(super) fn insert_events(
    tx: &Transaction<'_>,
    events: &[OutboxEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    insert_events_for(tx, &endpoints(tx)?, events)
}

/// [`insert_events`] with the endpoints already read (a lifecycle batch reads them once
/// for all its packs). An event whose `dedupe` key was written before is dropped. An
/// event no endpoint wants is not written at all: nothing would ever deliver it, and
/// the outbox would grow by a payload per transition (its dedupe key is not taken
/// either, so an endpoint added later hears of the next such change).
pub(super) fn insert_events_for(
    tx: &Transaction<'_>,
    endpoints: &[WebhookEndpoint],
    events: &[OutboxEvent],
) -> Result<(), StoreError> {
    let mut statements = None;
    let now = wall_ms();
    for event in events {
        let wanting: Vec<&WebhookEndpoint> = endpoints
            .iter()
            .filter(|e| e.wants(&event.kind, &event.zone_id))
            .collect();
        if wanting.is_empty() {
            continue;
        }
        let (insert, deliver) = match &mut statements {
            Some(statements) => statements,
            None => statements.insert((
                tx.prepare_cached(
                    "INSERT INTO webhook_events (id, kind, zone_id, pack_id, occurred_at, payload, dedupe) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (dedupe) DO NOTHING RETURNING seq",
                )?,
                tx.prepare_cached(
                    "INSERT INTO webhook_deliveries (event_seq, endpoint_id, pack_id, state, \
                     next_attempt_ms, created_ms) VALUES (?1, ?2, ?3, 'pending', ?4, ?4)",
                )?,
            )),
        };
        let seq: Option<i64> = insert
            .query_row(
                params![
                    event.id,
                    event.kind,
                    event.zone_id,
                    event.pack_id,
                    event.occurred_at,
                    event.payload.make(),
                    event.dedupe
                ],
                |r| r.get(0),
            )
            .optional()?;
        let Some(seq) = seq else { continue };
        for endpoint in wanting {
            deliver.execute(params![seq, endpoint.id, event.pack_id, now])?;
        }
    }
    Ok(())
}

pub(super) fn endpoints(conn: &rusqlite::Connection) -> Result<Vec<WebhookEndpoint>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, url, zone_id, events, secret, created_at, allow_private FROM webhook_endpoints \
         ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map([], |r| {
        let events: String = r.get(3)?;
        Ok(WebhookEndpoint {
            id: r.get(0)?,
            url: r.get(1)?,
            zone_id: r.get(2)?,
            events: events
                .split(',')
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect(),
            secret: r.get(4)?,
            created_at: r.get(5)?,
            allow_private: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn delivery(r: &Row<'_>) -> Result<Delivery, StoreError> {
    let state: String = r.get(6)?;
    Ok(Delivery {
        event_seq: r.get(0)?,
        event_id: r.get(1)?,
        endpoint_id: r.get(2)?,
        kind: r.get(3)?,
        pack_id: r.get(4)?,
        payload: r.get(5)?,
        state: DeliveryState::parse(&state)?,
        attempts: r.get(7)?,
        next_attempt_ms: r.get(8)?,
        created_ms: r.get(9)?,
        last_error: r.get(10)?,
    })
}

impl SqliteStore {
    pub(in crate::store) fn insert_webhook_endpoint(
        &self,
        e: &WebhookEndpoint,
    ) -> Result<(), StoreError> {
        self.write(Touch::Webhooks, |tx| {
            tx.execute(
                "INSERT INTO webhook_endpoints (id, url, zone_id, events, secret, created_at, allow_private) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    e.id,
                    e.url,
                    e.zone_id,
                    e.events.join(","),
                    e.secret,
                    e.created_at,
                    e.allow_private
                ],
            )?;
            Ok(())
        })
    }

    pub(in crate::store) fn webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        self.with_conn(|conn| endpoints(conn))
    }

    /// The webhook endpoints as the cache knows them, without reading the database;
    /// `None` when it does not (first look, or another process wrote since).
    pub(in crate::store) fn known_webhook_endpoints(&self) -> Option<Arc<[WebhookEndpoint]>> {
        // Empties the cache first if another process committed (it may have added one).
        self.cache_epoch()?;
        self.inner.cache.webhook_endpoints()
    }

    pub(in crate::store) fn delete_webhook_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        self.write(Touch::Webhooks, |tx| {
            tx.execute(
                "DELETE FROM webhook_deliveries WHERE endpoint_id = ?1",
                [id],
            )?;
            Ok(tx.execute("DELETE FROM webhook_endpoints WHERE id = ?1", [id])? > 0)
        })
    }

    pub(in crate::store) fn insert_events(&self, events: &[OutboxEvent]) -> Result<(), StoreError> {
        self.write(Touch::Nothing, |tx| insert_events(tx, events))
    }

    pub(in crate::store) fn claim_deliveries(
        &self,
        claim: &DeliveryClaim<'_>,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.write(Touch::Nothing, |tx| {
            let found = {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
                     JOIN webhook_events e ON e.seq = d.event_seq \
                     WHERE d.endpoint_id = ?1 AND d.state = 'pending' \
                       AND d.next_attempt_ms <= ?2 \
                       AND (d.lease_until IS NULL OR d.lease_until <= ?2) \
                       AND NOT EXISTS (SELECT 1 FROM webhook_deliveries o \
                         WHERE o.endpoint_id = d.endpoint_id AND o.pack_id = d.pack_id \
                           AND o.state = 'pending' AND o.event_seq < d.event_seq) \
                     ORDER BY d.event_seq LIMIT ?3"
                ))?;
                let mut rows =
                    stmt.query(params![claim.endpoint_id, claim.now_ms, clamp(claim.limit)])?;
                let mut found = Vec::new();
                while let Some(r) = rows.next()? {
                    found.push(delivery(r)?);
                }
                found
            };
            let mut lease = tx.prepare_cached(
                "UPDATE webhook_deliveries SET lease_owner = ?1, lease_until = ?2 \
                 WHERE event_seq = ?3 AND endpoint_id = ?4",
            )?;
            for d in &found {
                lease.execute(params![
                    claim.owner,
                    claim.now_ms.saturating_add(claim.lease_ms),
                    d.event_seq,
                    d.endpoint_id
                ])?;
            }
            Ok(found)
        })
    }

    pub(in crate::store) fn record_deliveries(
        &self,
        owner: &str,
        results: &[DeliveryResult],
    ) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        self.write(Touch::Nothing, |tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE webhook_deliveries SET state = ?3, attempts = attempts + 1, \
                 next_attempt_ms = ?4, last_error = ?5, lease_owner = NULL, lease_until = NULL \
                 WHERE event_seq = ?1 AND endpoint_id = ?2 AND state = 'pending' \
                   AND lease_owner = ?6",
            )?;
            for r in results {
                let (state, at, error) = match &r.outcome {
                    DeliveryOutcome::Delivered => (DeliveryState::Delivered, 0, None),
                    DeliveryOutcome::Retry { at_ms, error } => {
                        (DeliveryState::Pending, *at_ms, Some(error.as_str()))
                    }
                    DeliveryOutcome::Failed { error } => {
                        (DeliveryState::Failed, 0, Some(error.as_str()))
                    }
                };
                stmt.execute(params![
                    r.event_seq,
                    r.endpoint_id,
                    state.as_str(),
                    at,
                    error,
                    owner
                ])?;
            }
            Ok(())
        })
    }

    pub(in crate::store) fn list_deliveries(
        &self,
        failed_only: bool,
        limit: u64,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
                 JOIN webhook_events e ON e.seq = d.event_seq \
                 WHERE (?1 = 0 OR d.state = 'failed') \
                 ORDER BY d.event_seq DESC, d.endpoint_id LIMIT ?2"
            ))?;
            let mut rows = stmt.query(params![failed_only, clamp(limit)])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(delivery(r)?);
            }
            Ok(out)
        })
    }
}
