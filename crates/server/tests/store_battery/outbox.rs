//! The webhook outbox's cases of the store battery (both backends).

use super::{pack, zone};
use zonecert_server::store::{
    DeliveryClaim, DeliveryOutcome, DeliveryResult, DeliveryState, OutboxEvent, Store, StoreError,
    WebhookEndpoint, wall_ms,
};

fn endpoint(id: &str, zone: Option<&str>, events: &[&str]) -> WebhookEndpoint {
    WebhookEndpoint {
        id: id.into(),
        url: format!("http://127.0.0.1:9/{id}"),
        zone_id: zone.map(str::to_owned),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        secret: "whsec_AAAA".into(),
        created_at: 1,
        allow_private: true,
    }
}

fn event(kind: &str, zone: &str, pack: &str, dedupe: Option<&str>) -> OutboxEvent {
    OutboxEvent {
        id: format!("msg_{}", uuid_like()),
        kind: kind.into(),
        zone_id: zone.into(),
        pack_id: pack.into(),
        occurred_at: 100,
        payload: format!("{{\"type\":\"{kind}\"}}").into(),
        dedupe: dedupe.map(str::to_owned),
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:032x}",
        N.fetch_add(1, Ordering::Relaxed) + (wall_ms() as u64) * 1000
    )
}

fn claim<'a>(owner: &'a str, endpoint: &'a str, now_ms: i64) -> DeliveryClaim<'a> {
    DeliveryClaim {
        owner,
        endpoint_id: endpoint,
        now_ms,
        lease_ms: 60_000,
        limit: 100,
    }
}

fn delivered(seq: i64, endpoint: &str) -> DeliveryResult {
    DeliveryResult {
        event_seq: seq,
        endpoint_id: endpoint.into(),
        outcome: DeliveryOutcome::Delivered,
    }
}

/// Events are written with the pack's update, fanned out to the endpoints that want
/// them, and a pack's next event is held back until the one before it is delivered.
pub(super) async fn outbox_events_go_with_the_pack_and_arrive_in_order(s: Store) {
    let z = zone(&s, "example.com").await;
    let mut p = pack(&z);
    s.insert_pack(&p, 10).await.expect("insert");
    s.insert_webhook_endpoint(&endpoint("we_all", None, &[]))
        .await
        .expect("endpoint");
    s.insert_webhook_endpoint(&endpoint("we_other_zone", Some("0000"), &[]))
        .await
        .expect("endpoint");
    s.insert_webhook_endpoint(&endpoint("we_issued", None, &["pack.issued"]))
        .await
        .expect("endpoint");
    let (zid, pid) = (z.id.as_str(), p.id.as_str().to_owned());
    let events = [
        event("pack.validated", zid, &pid, None),
        event("pack.issued", zid, &pid, None),
    ];
    s.update_pack_with_events(&mut p, &events)
        .await
        .expect("update");
    let now = wall_ms() + 1;
    let first = s
        .claim_deliveries(&claim("a", "we_all", now))
        .await
        .expect("claim");
    assert_eq!(first.len(), 1, "only the pack's first event: {first:?}");
    assert_eq!(first[0].kind, "pack.validated");
    assert_eq!(first[0].event_id, events[0].id);
    assert_eq!(first[0].payload, events[0].payload.make());
    assert!(
        s.claim_deliveries(&claim("a", "we_other_zone", now))
            .await
            .expect("claim")
            .is_empty()
    );
    let issued = s
        .claim_deliveries(&claim("a", "we_issued", now))
        .await
        .expect("claim");
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].kind, "pack.issued");
    // While the first is leased, nothing more of the pack.
    assert!(
        s.claim_deliveries(&claim("b", "we_all", now))
            .await
            .expect("claim")
            .is_empty()
    );
    s.record_deliveries("a", &[delivered(first[0].event_seq, "we_all")])
        .await
        .expect("record");
    let second = s
        .claim_deliveries(&claim("a", "we_all", now))
        .await
        .expect("claim");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].kind, "pack.issued");
    assert!(second[0].event_seq > first[0].event_seq);

    // A stale write writes neither the pack nor its events.
    let mut stale = p.clone();
    stale.version -= 1;
    let lost = [event("pack.active", zid, &pid, None)];
    assert!(matches!(
        s.update_pack_with_events(&mut stale, &lost).await,
        Err(StoreError::Conflict)
    ));
    let all = s.list_deliveries(false, 100).await.expect("list");
    assert!(all.iter().all(|d| d.kind != "pack.active"), "{all:?}");
    assert_eq!(all.len(), 3);
    // A lifecycle batch writes the events of the packs it writes only.
    let mut batch = vec![stale, p.clone()];
    let outcomes = s
        .write_lifecycle_batch(
            "w",
            &mut batch,
            &[lost.to_vec(), vec![event("pack.expired", zid, &pid, None)]],
            &[],
            &[],
            &[],
        )
        .await
        .expect("batch");
    assert!(outcomes[0].is_err() && outcomes[1].is_ok());
    let kinds: Vec<String> = s
        .list_deliveries(false, 100)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.kind)
        .collect();
    assert!(kinds.contains(&"pack.expired".to_owned()), "{kinds:?}");
    assert!(!kinds.contains(&"pack.active".to_owned()), "{kinds:?}");
}

/// An event no endpoint wants is not written (nothing would deliver it; the outbox
/// would only grow), in a pack's write and in a lifecycle batch alike, and its dedupe
/// key stays free: an endpoint added later gets the next event with that key.
pub(super) async fn an_event_no_endpoint_wants_is_not_kept(s: Store) {
    let z = zone(&s, "example.com").await;
    let mut p = pack(&z);
    s.insert_pack(&p, 10).await.expect("insert");
    let (zid, pid) = (z.id.as_str(), p.id.as_str().to_owned());
    s.insert_webhook_endpoint(&endpoint("we_other_zone", Some("0000"), &[]))
        .await
        .expect("endpoint");
    s.insert_webhook_endpoint(&endpoint("we_issued", None, &["pack.issued"]))
        .await
        .expect("endpoint");
    s.update_pack_with_events(
        &mut p,
        &[event("pack.expiring", zid, &pid, Some("expiring-30"))],
    )
    .await
    .expect("update");
    let mut batch = vec![p.clone()];
    s.write_lifecycle_batch(
        "w",
        &mut batch,
        &[vec![
            event("pack.validated", zid, &pid, None),
            event("pack.issued", zid, &pid, None),
        ]],
        &[],
        &[],
        &[],
    )
    .await
    .expect("batch");
    let kinds = |list: Vec<zonecert_server::store::Delivery>| {
        list.into_iter()
            .map(|d| (d.endpoint_id, d.kind))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kinds(s.list_deliveries(false, 100).await.expect("list")),
        [("we_issued".to_owned(), "pack.issued".to_owned())]
    );
    // The event nobody wanted was not written: its dedupe key is still free.
    s.insert_webhook_endpoint(&endpoint("we_all", None, &[]))
        .await
        .expect("endpoint");
    let mut p = batch.remove(0);
    s.update_pack_with_events(
        &mut p,
        &[event("pack.expiring", zid, &pid, Some("expiring-30"))],
    )
    .await
    .expect("update");
    assert!(
        kinds(s.list_deliveries(false, 100).await.expect("list"))
            .contains(&("we_all".to_owned(), "pack.expiring".to_owned()))
    );
}

/// Leases, retries at their time, failures listed, at-most-once keys, deletions.
pub(super) async fn deliveries_are_leased_retried_and_failed(s: Store) {
    let z = zone(&s, "example.com").await;
    let p = pack(&z);
    s.insert_pack(&p, 10).await.expect("insert");
    s.insert_webhook_endpoint(&endpoint("we_1", None, &[]))
        .await
        .expect("endpoint");
    let (zid, pid) = (z.id.as_str(), p.id.as_str().to_owned());
    let once = event("pack.expiring", zid, &pid, Some("expiring:x:30"));
    s.insert_events(std::slice::from_ref(&once))
        .await
        .expect("events");
    let mut again = once.clone();
    again.id = "msg_again".into();
    s.insert_events(&[again]).await.expect("events");
    assert_eq!(s.list_deliveries(false, 10).await.expect("list").len(), 1);

    let now = wall_ms() + 1;
    let got = s
        .claim_deliveries(&claim("a", "we_1", now))
        .await
        .expect("claim");
    assert_eq!(got.len(), 1);
    // Another node sees it leased; once the lease ran out, it is claimed again.
    assert!(
        s.claim_deliveries(&claim("b", "we_1", now))
            .await
            .expect("claim")
            .is_empty()
    );
    let later = s
        .claim_deliveries(&claim("b", "we_1", now + 60_001))
        .await
        .expect("claim");
    assert_eq!(later.len(), 1);
    // A retry waits for its time.
    s.record_deliveries(
        "b",
        &[DeliveryResult {
            event_seq: got[0].event_seq,
            endpoint_id: "we_1".into(),
            outcome: DeliveryOutcome::Retry {
                at_ms: now + 120_000,
                error: "the endpoint answered 503".into(),
            },
        }],
    )
    .await
    .expect("record");
    assert!(
        s.claim_deliveries(&claim("a", "we_1", now + 119_000))
            .await
            .expect("claim")
            .is_empty()
    );
    let retried = s
        .claim_deliveries(&claim("a", "we_1", now + 120_000))
        .await
        .expect("claim");
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].attempts, 1);
    assert_eq!(
        retried[0].last_error.as_deref(),
        Some("the endpoint answered 503")
    );
    s.record_deliveries(
        "a",
        &[DeliveryResult {
            event_seq: got[0].event_seq,
            endpoint_id: "we_1".into(),
            outcome: DeliveryOutcome::Failed {
                error: "gave up".into(),
            },
        }],
    )
    .await
    .expect("record");
    let failed = s.list_deliveries(true, 10).await.expect("list");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].state, DeliveryState::Failed);
    assert_eq!(failed[0].attempts, 2);
    assert!(
        s.claim_deliveries(&claim("a", "we_1", now + 10_000_000))
            .await
            .expect("claim")
            .is_empty()
    );

    // A deletion writes its event only when the pack was there.
    let gone = event("pack.deleted", zid, &pid, None);
    assert!(
        s.delete_pack_with_events(&z.id, &p.id, std::slice::from_ref(&gone))
            .await
            .expect("delete")
    );
    let twice = event("pack.deleted", zid, &pid, None);
    assert!(
        !s.delete_pack_with_events(&z.id, &p.id, &[twice])
            .await
            .expect("delete")
    );
    let deleted: Vec<_> = s
        .list_deliveries(false, 10)
        .await
        .expect("list")
        .into_iter()
        .filter(|d| d.kind == "pack.deleted")
        .collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].event_id, gone.id);

    // Removing an endpoint removes its deliveries.
    assert_eq!(s.webhook_endpoints().await.expect("endpoints").len(), 1);
    assert!(s.delete_webhook_endpoint("we_1").await.expect("delete"));
    assert!(!s.delete_webhook_endpoint("we_1").await.expect("delete"));
    assert!(s.list_deliveries(false, 10).await.expect("list").is_empty());
}

/// An outcome is recorded only by the holder of the delivery's lease: a node whose lease
/// ran out while it was sending (another node claimed the delivery since) records
/// nothing, so the delivery is not counted twice, nor its new holder's lease ended under
/// it (a third node would send it once more).
pub(super) async fn only_the_lease_holder_records_an_outcome(s: Store) {
    let z = zone(&s, "example.com").await;
    let p = pack(&z);
    s.insert_pack(&p, 10).await.expect("insert");
    s.insert_webhook_endpoint(&endpoint("we_1", None, &[]))
        .await
        .expect("endpoint");
    s.insert_events(&[event("pack.issued", z.id.as_str(), p.id.as_str(), None)])
        .await
        .expect("events");
    let now = wall_ms() + 1;
    let by_a = s
        .claim_deliveries(&claim("a", "we_1", now))
        .await
        .expect("claim");
    assert_eq!(by_a.len(), 1);
    // a's lease runs out while it sends; b claims the delivery.
    let by_b = s
        .claim_deliveries(&claim("b", "we_1", now + 60_001))
        .await
        .expect("claim");
    assert_eq!(by_b.len(), 1);
    // a's late outcome changes nothing: b's lease holds, no attempt is counted.
    let seq = by_a[0].event_seq;
    s.record_deliveries(
        "a",
        &[DeliveryResult {
            event_seq: seq,
            endpoint_id: "we_1".into(),
            outcome: DeliveryOutcome::Retry {
                at_ms: now + 60_002,
                error: "timed out".into(),
            },
        }],
    )
    .await
    .expect("record");
    assert!(
        s.claim_deliveries(&claim("c", "we_1", now + 60_003))
            .await
            .expect("claim")
            .is_empty(),
        "b's lease was ended by a's outcome"
    );
    let listed = s.list_deliveries(false, 10).await.expect("list");
    assert_eq!(
        (listed[0].state, listed[0].attempts),
        (DeliveryState::Pending, 0)
    );
    // b's outcome is recorded, once.
    s.record_deliveries("b", &[delivered(seq, "we_1")])
        .await
        .expect("record");
    s.record_deliveries("a", &[delivered(seq, "we_1")])
        .await
        .expect("record");
    let listed = s.list_deliveries(false, 10).await.expect("list");
    assert_eq!(
        (listed[0].state, listed[0].attempts),
        (DeliveryState::Delivered, 1)
    );
}
