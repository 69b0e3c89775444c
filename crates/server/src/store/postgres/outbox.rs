//! Webhooks on PostgreSQL: the outbox, the endpoints and their deliveries (see
//! `store/webhooks.rs`). Nodes claim deliveries `FOR UPDATE SKIP LOCKED` under a lease,
//! so each delivery is attempted by one node at a time.

use super::{PgStore, clamp};
use crate::store::StoreError;
use crate::store::webhooks::{
    Delivery, DeliveryClaim, DeliveryOutcome, DeliveryResult, DeliveryState, OutboxEvent,
    WebhookEndpoint, wall_ms,
};
use tokio_postgres::{GenericClient, Row};

/// The outbox's part of the schema (version 3).
pub(super) const OUTBOX_SCHEMA: &str = include_str!("outbox.sql");

const DELIVERY_COLUMNS: &str = "d.event_seq, e.id, d.endpoint_id, e.kind, d.pack_id, e.payload, \
    d.state, d.attempts, d.next_attempt_ms, d.created_ms, d.last_error";

/// Writes `events` and one delivery per endpoint that wants each, inside the caller's
/// transaction. See [`insert_events_for`].
pub(super) async fn insert_events(
    tx: &tokio_postgres::Transaction<'_>,
    events: &[OutboxEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    insert_events_for(tx, &endpoints(tx).await?, events).await
}

/// [`insert_events`] with the endpoints already read (a lifecycle batch reads them once
/// for all its packs: one round trip instead of one per pack). An event whose `dedupe`
/// key was written before is dropped. An event no endpoint wants is not written at all:
/// nothing would ever deliver it, and the outbox would grow by a payload per transition
/// (its dedupe key is not taken either, so an endpoint added later hears of the next
/// such change).
pub(super) async fn insert_events_for(
    tx: &tokio_postgres::Transaction<'_>,
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
        let (insert, deliver) = match &statements {
            Some(statements) => statements,
            None => statements.insert((
                tx.prepare(
                    "INSERT INTO webhook_events (id, kind, zone_id, pack_id, occurred_at, payload, dedupe) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dedupe) DO NOTHING RETURNING seq",
                )
                .await?,
                tx.prepare(
                    "INSERT INTO webhook_deliveries (event_seq, endpoint_id, pack_id, state, \
                     next_attempt_ms, created_ms) VALUES ($1, $2, $3, 'pending', $4, $4)",
                )
                .await?,
            )),
        };
        let row = tx
            .query_opt(
                insert,
                &[
                    &event.id,
                    &event.kind,
                    &event.zone_id,
                    &event.pack_id,
                    &event.occurred_at,
                    &event.payload.make(),
                    &event.dedupe,
                ],
            )
            .await?;
        let Some(row) = row else { continue };
        let seq: i64 = row.try_get(0)?;
        for endpoint in wanting {
            tx.execute(deliver, &[&seq, &endpoint.id, &event.pack_id, &now])
                .await?;
        }
    }
    Ok(())
}

pub(super) async fn endpoints(
    client: &impl GenericClient,
) -> Result<Vec<WebhookEndpoint>, StoreError> {
    let rows = client
        .query(
            "SELECT id, url, zone_id, events, secret, created_at, allow_private FROM webhook_endpoints \
             ORDER BY created_at, id",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let events: String = r.try_get(3)?;
            Ok(WebhookEndpoint {
                id: r.try_get(0)?,
                url: r.try_get(1)?,
                zone_id: r.try_get(2)?,
                events: events
                    .split(',')
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect(),
                secret: r.try_get(4)?,
                created_at: r.try_get(5)?,
                allow_private: r.try_get(6)?,
            })
        })
        .collect()
}

fn delivery(r: &Row) -> Result<Delivery, StoreError> {
    let state: String = r.try_get(6)?;
    let attempts: i32 = r.try_get(7)?;
    Ok(Delivery {
        event_seq: r.try_get(0)?,
        event_id: r.try_get(1)?,
        endpoint_id: r.try_get(2)?,
        kind: r.try_get(3)?,
        pack_id: r.try_get(4)?,
        payload: r.try_get(5)?,
        state: DeliveryState::parse(&state)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_ms: r.try_get(8)?,
        created_ms: r.try_get(9)?,
        last_error: r.try_get(10)?,
    })
}

impl PgStore {
    pub(in crate::store) async fn insert_webhook_endpoint(
        &self,
        e: &WebhookEndpoint,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO webhook_endpoints (id, url, zone_id, events, secret, created_at, allow_private) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &e.id,
                    &e.url,
                    &e.zone_id,
                    &e.events.join(","),
                    &e.secret,
                    &e.created_at,
                    &e.allow_private,
                ],
            )
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn webhook_endpoints(
        &self,
    ) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let client = self.client().await?;
        endpoints(&**client).await
    }

    pub(in crate::store) async fn delete_webhook_endpoint(
        &self,
        id: &str,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        // The deliveries go with it (ON DELETE CASCADE).
        Ok(client
            .execute("DELETE FROM webhook_endpoints WHERE id = $1", &[&id])
            .await?
            > 0)
    }

    pub(in crate::store) async fn insert_events(
        &self,
        events: &[OutboxEvent],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        insert_events(&tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(in crate::store) async fn claim_deliveries(
        &self,
        claim: &DeliveryClaim<'_>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let client = self.client().await?;
        let until = claim.now_ms.saturating_add(claim.lease_ms);
        // The rows another node is claiming are skipped, not waited for; a row it leased
        // and committed meanwhile is read again as it is now, its lease checked again.
        let rows = client
            .query(
                &format!(
                    "WITH due AS ( \
                       SELECT d.event_seq, d.endpoint_id FROM webhook_deliveries d \
                       WHERE d.endpoint_id = $1 AND d.state = 'pending' \
                         AND d.next_attempt_ms <= $2 \
                         AND (d.lease_until IS NULL OR d.lease_until <= $2) \
                         AND NOT EXISTS (SELECT 1 FROM webhook_deliveries o \
                           WHERE o.endpoint_id = d.endpoint_id AND o.pack_id = d.pack_id \
                             AND o.state = 'pending' AND o.event_seq < d.event_seq) \
                       ORDER BY d.event_seq LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     UPDATE webhook_deliveries d SET lease_owner = $4, lease_until = $5 \
                     FROM due, webhook_events e \
                     WHERE d.event_seq = due.event_seq AND d.endpoint_id = due.endpoint_id \
                       AND e.seq = d.event_seq \
                     RETURNING {DELIVERY_COLUMNS}"
                ),
                &[
                    &claim.endpoint_id,
                    &claim.now_ms,
                    &clamp(claim.limit),
                    &claim.owner,
                    &until,
                ],
            )
            .await?;
        let mut found = rows.iter().map(delivery).collect::<Result<Vec<_>, _>>()?;
        found.sort_by_key(|d| d.event_seq);
        Ok(found)
    }

    pub(in crate::store) async fn record_deliveries(
        &self,
        owner: &str,
        results: &[DeliveryResult],
    ) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare(
                "UPDATE webhook_deliveries SET state = $3, attempts = attempts + 1, \
                 next_attempt_ms = $4, last_error = $5, lease_owner = NULL, lease_until = NULL \
                 WHERE event_seq = $1 AND endpoint_id = $2 AND state = 'pending' \
                   AND lease_owner = $6",
            )
            .await?;
        for r in results {
            let (state, at, error) = match &r.outcome {
                DeliveryOutcome::Delivered => (DeliveryState::Delivered, 0i64, None),
                DeliveryOutcome::Retry { at_ms, error } => {
                    (DeliveryState::Pending, *at_ms, Some(error.as_str()))
                }
                DeliveryOutcome::Failed { error } => {
                    (DeliveryState::Failed, 0, Some(error.as_str()))
                }
            };
            tx.execute(
                &stmt,
                &[
                    &r.event_seq,
                    &r.endpoint_id,
                    &state.as_str(),
                    &at,
                    &error,
                    &owner,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(in crate::store) async fn list_deliveries(
        &self,
        failed_only: bool,
        limit: u64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
                     JOIN webhook_events e ON e.seq = d.event_seq \
                     WHERE NOT $1::boolean OR d.state = 'failed' \
                     ORDER BY d.event_seq DESC, d.endpoint_id LIMIT $2"
                ),
                &[&failed_only, &clamp(limit)],
            )
            .await?;
        rows.iter().map(delivery).collect()
    }
}
