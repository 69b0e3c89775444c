//! The revocation queue (`--acme-revoke-on-delete`): written by the deletions' own
//! transactions, claimed under a lease, outcomes recorded by the lease holder only.

use zonecert_server::model::*;
use zonecert_server::store::{RevocationClaim, Store};

/// The ACME directory the battery's certificates were ordered from.
const DIRECTORY: &str = "https://acme.example/dir";

/// A pack of `z` stored with a certificate of serial `serial` from [`DIRECTORY`].
async fn issued_pack(s: &Store, z: &Zone, serial: &str) -> Pack {
    issued_pack_from(s, z, serial, Some(DIRECTORY)).await
}

/// A pack of `z` stored with a certificate of serial `serial` ordered from the ACME
/// directory `directory` (`None`: the built-in CA's).
async fn issued_pack_from(s: &Store, z: &Zone, serial: &str, directory: Option<&str>) -> Pack {
    let mut p = super::pack(z);
    s.insert_pack(&p, 10).await.expect("insert");
    p.state = PackState::Active;
    p.certificate = Some(IssuedCertificate {
        id: serial.into(),
        chain_pem: format!("-----BEGIN CERTIFICATE-----\n{serial}"),
        not_before: 10,
        not_after: 4_000_000_000,
        issuer: "Pebble".into(),
        signature: "ECDSAWithSHA256".into(),
        issued_at: 11,
        renew_at: None,
        acme_directory: directory.map(str::to_owned),
    });
    p.order_ref = None;
    s.update_pack(&mut p).await.expect("update");
    p
}

fn claim(owner: &str, now_ms: i64) -> RevocationClaim<'_> {
    RevocationClaim {
        owner,
        now_ms,
        lease_until_ms: now_ms + 60_000,
        limit: 10,
    }
}

pub(super) async fn deletions_queue_their_certificates_for_revocation(s: Store) {
    let z = super::zone(&s, "example.com").await;
    let one = issued_pack(&s, &z, "0a01").await;
    // A pack without a certificate leaves nothing to revoke.
    let bare = super::pack(&z);
    s.insert_pack(&bare, 10).await.expect("insert");
    // Nor does a certificate of the built-in CA (no ACME CA could revoke it).
    let builtin = issued_pack_from(&s, &z, "0c01", None).await;
    assert!(s.queued_revocations().await.expect("read").is_empty());
    let gauge = |snapshot: zonecert_server::store::MonitoringSnapshot| snapshot.revocations_queued;
    assert_eq!(gauge(s.monitoring(0, 0, false).await.expect("count")), 0);
    assert!(s.delete_pack(&z.id, &one.id).await.expect("delete"));
    assert!(s.delete_pack(&z.id, &bare.id).await.expect("delete"));
    assert!(s.delete_pack(&z.id, &builtin.id).await.expect("delete"));
    let queued = s.queued_revocations().await.expect("read");
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].pack_id, one.id.as_str());
    assert_eq!(queued[0].zone_id, z.id.as_str());
    assert_eq!(queued[0].ca, "lets_encrypt");
    // The directory names the account that ordered it, whatever the name points at now.
    assert_eq!(queued[0].directory.as_deref(), Some(DIRECTORY));
    assert_eq!(queued[0].serial, "0a01");
    assert_eq!(queued[0].not_after, 4_000_000_000);
    assert_eq!(queued[0].attempts, 0);
    // A zone's deletion queues every certificate of its packs.
    let other = super::zone(&s, "example.org").await;
    issued_pack(&s, &other, "0b01").await;
    issued_pack(&s, &other, "0b02").await;
    assert!(s.delete_zone(&other.id).await.expect("delete"));
    let serials: Vec<_> = s
        .queued_revocations()
        .await
        .expect("read")
        .into_iter()
        .map(|r| r.serial)
        .collect();
    assert_eq!(serials, ["0a01", "0b01", "0b02"]);
    // The metrics' gauge counts the queue.
    assert_eq!(gauge(s.monitoring(0, 0, false).await.expect("count")), 3);
}

pub(super) async fn revocations_are_leased_retried_and_finished_by_their_holder(s: Store) {
    let z = super::zone(&s, "example.com").await;
    let p = issued_pack(&s, &z, "0c01").await;
    assert!(s.delete_pack(&z.id, &p.id).await.expect("delete"));
    let now = zonecert_server::store::wall_ms();
    let a = s
        .claim_revocations(&claim("node-a", now))
        .await
        .expect("claim");
    assert_eq!(a.len(), 1);
    // Leased to A: B gets nothing, and cannot record an outcome.
    assert!(
        s.claim_revocations(&claim("node-b", now))
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(
        !s.finish_revocation(a[0].id, "node-b")
            .await
            .expect("finish")
    );
    assert!(
        !s.retry_revocation(a[0].id, "node-b", now, "no")
            .await
            .expect("retry")
    );
    // A restarted A takes its own lease back at once.
    assert_eq!(
        s.claim_revocations(&claim("node-a", now))
            .await
            .expect("claim")
            .len(),
        1
    );
    // A failed attempt: not due before its time, then claimable by anyone.
    assert!(
        s.retry_revocation(a[0].id, "node-a", now + 5_000, "CA down")
            .await
            .expect("retry")
    );
    assert!(
        s.claim_revocations(&claim("node-b", now + 4_000))
            .await
            .expect("claim")
            .is_empty()
    );
    let b = s
        .claim_revocations(&claim("node-b", now + 5_000))
        .await
        .expect("claim");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].attempts, 1);
    assert_eq!(b[0].last_error.as_deref(), Some("CA down"));
    // A's lease ran out when B claimed: only B finishes it.
    assert!(
        !s.finish_revocation(b[0].id, "node-a")
            .await
            .expect("finish")
    );
    assert!(
        s.finish_revocation(b[0].id, "node-b")
            .await
            .expect("finish")
    );
    assert!(s.queued_revocations().await.expect("read").is_empty());
    // A lease that ran out is claimed by another node.
    let q = issued_pack(&s, &z, "0c02").await;
    assert!(s.delete_pack(&z.id, &q.id).await.expect("delete"));
    let now = zonecert_server::store::wall_ms();
    assert_eq!(
        s.claim_revocations(&claim("node-a", now))
            .await
            .expect("claim")
            .len(),
        1
    );
    assert!(
        s.claim_revocations(&claim("node-b", now + 59_000))
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(
        s.claim_revocations(&claim("node-b", now + 60_000))
            .await
            .expect("claim")
            .len(),
        1
    );
}

/// Nodes claiming at once never take one revocation twice.
pub(super) async fn concurrent_revocation_claims_never_take_one_twice(s: Store) {
    let z = super::zone(&s, "example.com").await;
    for i in 0..40 {
        let p = issued_pack(&s, &z, &format!("0d{i:02}")).await;
        assert!(s.delete_pack(&z.id, &p.id).await.expect("delete"));
    }
    let now = zonecert_server::store::wall_ms();
    let mut tasks = Vec::new();
    for node in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            // One claim each (a node takes its own leases back, so it does not claim
            // again while it holds them).
            let owner = format!("node-{node}");
            let claimed = s
                .claim_revocations(&claim(&owner, now))
                .await
                .expect("claim");
            claimed.into_iter().map(|r| r.id).collect::<Vec<_>>()
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count, "a revocation was claimed twice");
    assert_eq!(count, 40);
}

/// The ACME accounts the nodes share: the first published stays, removed or resealed
/// only while it is still the one the caller saw.
pub(super) async fn a_shared_acme_account_is_published_once(s: Store) {
    let dir = "https://ca.test/dir";
    assert_eq!(s.acme_account(dir).await.expect("read"), None);
    assert!(s.insert_acme_account(dir, b"first").await.expect("insert"));
    assert!(!s.insert_acme_account(dir, b"second").await.expect("insert"));
    assert_eq!(
        s.acme_account(dir).await.expect("read").as_deref(),
        Some(&b"first"[..])
    );
    assert!(
        !s.reseal_acme_account(dir, b"second", b"third")
            .await
            .expect("reseal")
    );
    assert!(
        s.reseal_acme_account(dir, b"first", b"third")
            .await
            .expect("reseal")
    );
    assert_eq!(
        s.acme_accounts().await.expect("list"),
        vec![(dir.to_owned(), b"third".to_vec())]
    );
    assert!(!s.delete_acme_account(dir, b"first").await.expect("delete"));
    assert!(s.delete_acme_account(dir, b"third").await.expect("delete"));
    assert_eq!(s.acme_account(dir).await.expect("read"), None);
}
