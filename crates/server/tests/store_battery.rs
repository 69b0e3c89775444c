//! The store's behaviour, written once and run against both backends: the embedded
//! SQLite database and a real PostgreSQL cluster started by the test (testkit's
//! `PgCluster`: skipped only when `ZONECERT_SKIP_POSTGRES=1` says so, a failure
//! otherwise). Each case gets a fresh database.

use std::collections::HashSet;
use zonecert_server::model::*;
use zonecert_server::store::{Claim, PackFilter, SealedKey, Store, StoreError, WriteMode};
use zonecert_testkit::PgCluster;

/// The cases, in order; each line names the case and the backend before it runs, so a
/// failure says which.
macro_rules! battery {
    ($($case:ident),* $(,)?) => {
        async fn run_battery(backend: &str, mut open: impl FnMut() -> Store) {
            $(
                eprintln!("store battery: {} on {backend}", stringify!($case));
                $case(open()).await;
            )*
        }
    };
}

battery!(
    packs_round_trip,
    zones_are_unique_and_do_not_nest,
    zones_are_listed_by_name_and_filtered,
    quota_is_enforced,
    quota_holds_under_concurrent_inserts,
    updates_detect_concurrent_changes,
    of_concurrent_updates_of_one_version_exactly_one_wins,
    an_update_of_a_deleted_pack_is_not_found,
    listing_pages_and_filters,
    held_packs_are_listed_for_the_operator,
    claims_take_the_longest_due_first_and_respect_leases,
    work_past_validation_is_claimed_before_new_work,
    packs_waiting_for_their_acme_order_are_claimed,
    a_claim_skips_the_cas_it_is_told_to_but_not_their_validations,
    renewal_extends_only_the_owners_live_leases,
    concurrent_claims_never_take_a_pack_twice,
    lifecycle_batches_write_each_pack_alone_and_release_leases,
    a_write_that_releases_its_lease_releases_it_only_when_written,
    a_write_with_the_same_hosts_keeps_their_rows,
    leases_held_elsewhere_are_seen_and_a_node_takes_back_its_own,
    users_and_tokens_are_found_by_their_credentials_until_deleted,
    a_zone_view_holds_the_zone_and_its_packs,
    deleting_a_zone_deletes_its_packs,
    outbox_events_go_with_the_pack_and_arrive_in_order,
    an_event_no_endpoint_wants_is_not_kept,
    deliveries_are_leased_retried_and_failed,
    only_the_lease_holder_records_an_outcome,
    delegated_hosts_are_found_by_their_cname_target,
    certificate_keys_are_kept_per_pack_and_listed_while_active,
    deletions_queue_their_certificates_for_revocation,
    revocations_are_leased_retried_and_finished_by_their_holder,
    concurrent_revocation_claims_never_take_one_twice,
    a_shared_acme_account_is_published_once,
);

#[path = "store_battery/outbox.rs"]
mod outbox;
use outbox::*;

#[path = "store_battery/revocations.rs"]
mod revocations;
use revocations::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn battery_on_sqlite() {
    let mut dirs = Vec::new();
    run_battery("sqlite", || {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store =
            Store::open_url(&dir.path().join("z.db").display().to_string()).expect("open SQLite");
        dirs.push(dir);
        store
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn battery_on_postgres() {
    let Some(cluster) = PgCluster::for_test() else {
        return;
    };
    run_battery("postgres", || {
        let url = cluster.create_database().expect("create a database");
        Store::open_url(&url).expect("open PostgreSQL")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_schema_is_migrated_once_when_nodes_start_together() {
    let Some(cluster) = PgCluster::for_test() else {
        return;
    };
    let url = cluster.create_database().expect("create a database");
    // Administration does not set up a database by accident.
    let refused = Store::open_existing(std::path::Path::new("."), Some(&url));
    assert!(
        matches!(&refused, Err(StoreError::Unavailable(m)) if m.contains("no zonecert schema")),
        "{refused:?}"
    );
    // Four nodes start at once on the empty database: the advisory lock lets one
    // migrate; the others wait, then find the schema current.
    let opened: Vec<Result<Store, StoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| Store::open_url(&url)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("open thread"))
            .collect()
    });
    for store in &opened {
        let store = store.as_ref().expect("every node opens the database");
        assert_eq!(store.backend(), "postgres");
    }
    let Ok(Store::Postgres(pg)) = &opened[0] else {
        panic!("not a PostgreSQL store");
    };
    assert_eq!(pg.schema_version().await.expect("version"), 8);
    let store = Store::open_existing(std::path::Path::new("."), Some(&url)).expect("reopen");
    let z = zone(&store, "example.com").await;
    assert_eq!(store.zone(&z.id).await.expect("read").as_ref(), Some(&z));
}

/// Nodes upgraded in place find a database of an older schema: the previous one (7,
/// before each certificate named the ACME directory that ordered it) and the first are
/// migrated when a node opens them, and keep their data. Each database is made by this
/// build, then taken back to the older version by undoing the later steps (as SQLite's
/// `a_version_1_database_is_migrated_and_keeps_its_packs` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_older_schemas_are_migrated_and_keep_their_data() {
    let Some(cluster) = PgCluster::for_test() else {
        return;
    };
    let undo_to_7 = "ALTER TABLE packs DROP COLUMN cert_acme_directory; \
                     ALTER TABLE revocations DROP COLUMN directory; \
                     DELETE FROM zonecert_schema_versions WHERE version > 7";
    let undo_to_1 = "ALTER TABLE packs DROP COLUMN cert_acme_directory, \
                     DROP COLUMN cert_renew_at, DROP COLUMN order_ref; \
                     DROP TABLE acme_accounts, revocations, certificate_keys, \
                     webhook_deliveries, webhook_endpoints, webhook_events; \
                     DELETE FROM zonecert_schema_versions WHERE version > 1";
    for (version, undo) in [(7, undo_to_7), (1, undo_to_1)] {
        let url = cluster.create_database().expect("create a database");
        let store = Store::open_url(&url).expect("open");
        let z = zone(&store, "example.com").await;
        // An issued pack, its certificate from an ACME CA (not the built-in one).
        let mut p = pack(&z);
        store.insert_pack(&p, 10).await.expect("insert");
        p.state = PackState::Active;
        p.certificate = Some(IssuedCertificate {
            id: "c1".into(),
            chain_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
            not_before: 10,
            not_after: 4_000_000_000,
            issuer: "(STAGING) Let's Encrypt".into(),
            signature: "ECDSAWithSHA256".into(),
            issued_at: 11,
            renew_at: Some(15),
            acme_directory: Some("https://acme.test/directory".into()),
        });
        store.update_pack(&mut p).await.expect("update");
        store
            .put_certificate_key(&p.id, "c1", b"sealed")
            .await
            .expect("put");
        drop(store);
        cluster.psql(&url, undo).expect("undo the later steps");
        let versions = "SELECT max(version) FROM zonecert_schema_versions";
        assert_eq!(
            cluster.query(&url, versions).expect("psql"),
            [version.to_string()]
        );

        let store = Store::open_url(&url).expect("open the older schema");
        let Store::Postgres(pg) = &store else {
            panic!("not a PostgreSQL store");
        };
        assert_eq!(
            pg.schema_version().await.expect("version"),
            8,
            "from {version}"
        );
        let back = store
            .pack(&z.id, &p.id)
            .await
            .expect("read")
            .expect("the pack is kept");
        let cert = back.certificate.as_ref().expect("its certificate is kept");
        assert_eq!(
            (back.state, cert.id.as_str(), cert.not_after),
            (PackState::Active, "c1", 4_000_000_000),
            "from {version}"
        );
        // Schema 8's backfill: an ACME certificate recorded before it names no directory.
        assert_eq!(cert.acme_directory.as_deref(), Some(""), "from {version}");
        if version == 1 {
            // Versions 2 and 4's columns were added, empty; 5's table too, and in use.
            assert_eq!((back.order_ref, cert.renew_at), (None, None));
            assert!(store.certificate_key(&p.id).await.expect("read").is_none());
            store
                .put_certificate_key(&p.id, "c1", b"sealed")
                .await
                .expect("put");
        } else {
            assert_eq!(cert.renew_at, Some(15));
        }
        let key = store.certificate_key(&p.id).await.expect("read");
        assert_eq!(
            key.map(|k| k.sealed),
            Some(b"sealed".to_vec()),
            "from {version}"
        );
        // The queue of version 6 (and its column of 8) works.
        assert!(store.delete_pack(&z.id, &p.id).await.expect("delete"));
        let queued = store.queued_revocations().await.expect("queue");
        assert_eq!(queued.len(), 1, "from {version}: {queued:?}");
        assert_eq!(queued[0].directory.as_deref(), Some(""), "from {version}");
    }
}

/// `--database-pool` bounds a node's connections: 40 inserts at once into one zone (each
/// holding its connection while it waits for the zone's row lock) all succeed through
/// a pool of 3, and PostgreSQL sees at most 3 connections of the node besides its
/// listening one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_stay_within_the_pool_size() {
    let Some(cluster) = PgCluster::for_test() else {
        return;
    };
    let url = cluster.create_database().expect("create a database");
    let store = Store::open_url_with_pool(&url, 3).expect("open");
    let z = zone(&store, "example.com").await;
    let mut inserts = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (store, p) = (store.clone(), pack(&z));
        inserts.spawn(async move { store.insert_pack(&p, 100).await });
    }
    while let Some(done) = inserts.join_next().await {
        done.expect("insert task").expect("insert");
    }
    assert_eq!(store.packs_of_zone(&z.id).await.expect("read").len(), 40);
    let name = url.rsplit('/').next().expect("a database name");
    let open = cluster
        .query(
            &url,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}' \
                 AND pid <> pg_backend_pid() AND application_name <> 'zonecert-listener'"
            ),
        )
        .expect("psql");
    let open: usize = open[0].parse().expect("a count");
    assert!(
        (1..=3).contains(&open),
        "{open} connections for a pool of 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_newer_schema_and_a_bad_url_without_showing_the_password() {
    let Some(cluster) = PgCluster::for_test() else {
        return;
    };
    let url = cluster.create_database().expect("create a database");
    let store = Store::open_url(&url).expect("open");
    drop(store);
    cluster
        .psql(
            &url,
            "INSERT INTO zonecert_schema_versions (version) VALUES (99)",
        )
        .expect("psql");
    let newer = Store::open_url(&url);
    assert!(
        matches!(&newer, Err(StoreError::Unsupported(m)) if m.contains("newer than this zonecert")),
        "{newer:?}"
    );
    let bad = Store::open_url("postgres://zc:s3cret@127.0.0.1:notaport/db");
    let Err(StoreError::Unsupported(message)) = bad else {
        panic!("a bad URL opened: {bad:?}");
    };
    assert!(!message.contains("s3cret"), "{message}");
}

// ---- the cases ----

async fn zone(s: &Store, name: &str) -> Zone {
    let z = Zone {
        id: ZoneId::generate(),
        name: Hostname::parse(name).expect("zone name"),
        created_at: 1,
    };
    s.insert_zone(&z, false).await.expect("insert zone");
    z
}

fn pack(z: &Zone) -> Pack {
    Pack::order(
        z.id.clone(),
        vec![
            Hostname::parse(z.name.as_str()).expect("host"),
            Hostname::parse(&format!("*.{}", z.name.as_str())).expect("host"),
        ],
        DcvMethod::Txt,
        90,
        CaChoice::LetsEncrypt,
        false,
        "x.dcv.test",
        100,
    )
}

fn claim(owner: &str, now: i64, wall_now: i64, limit: u64) -> Claim<'_> {
    Claim {
        owner,
        now,
        wall_now,
        lease_secs: 60,
        limit,
        skip_cas: &[],
    }
}

fn sorted_ids(claimed: &[(ZoneId, PackId)]) -> Vec<String> {
    let mut ids: Vec<String> = claimed.iter().map(|(_, id)| id.to_string()).collect();
    ids.sort();
    ids
}

async fn packs_round_trip(s: Store) {
    let z = zone(&s, "example.com").await;
    let mut p = pack(&z);
    p.hosts[1].check.verified = Some(false);
    p.hosts[1].check.reason = Some("no TXT record".into());
    p.hosts[1].check.last_checked_at = Some(5);
    p.hosts[1].check.attempts = 3;
    p.errors = vec!["CAA forbids".into()];
    // An ACME pack's order (issue 13) comes back as written.
    p.order_ref = Some("{\"issuer\":\"acme\",\"order_url\":\"https://ca/order/1\"}".into());
    s.insert_pack(&p, 10).await.expect("insert");
    assert_eq!(s.pack(&z.id, &p.id).await.expect("read"), Some(p.clone()));
    assert_eq!(s.pack_by_id(&p.id).await.expect("read"), Some(p.clone()));
    assert_eq!(s.packs_of_zone(&z.id).await.expect("read"), vec![p.clone()]);
    // Another zone's id does not find it.
    let other = zone(&s, "example.org").await;
    assert_eq!(s.pack(&other.id, &p.id).await.expect("read"), None);
    // Issued: the certificate's fields come back as written.
    let mut issued = p.clone();
    issued.state = PackState::Active;
    issued.certificate = Some(IssuedCertificate {
        id: "c1".into(),
        chain_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
        not_before: 10,
        not_after: 20,
        issuer: "zonecert".into(),
        signature: "ECDSAWithSHA256".into(),
        issued_at: 11,
        renew_at: Some(15),
        acme_directory: Some("https://acme.example/dir".into()),
    });
    issued.order_ref = None;
    s.update_pack(&mut issued).await.expect("update");
    assert_eq!(issued.version, 1);
    assert_eq!(s.pack(&z.id, &p.id).await.expect("read"), Some(issued));
}

async fn zones_are_unique_and_do_not_nest(s: Store) {
    let z = zone(&s, "example.com").await;
    let same_name = Zone {
        id: ZoneId::generate(),
        ..z.clone()
    };
    assert!(matches!(
        s.insert_zone(&same_name, false).await,
        Err(StoreError::Duplicate(_))
    ));
    let inside = Zone {
        id: ZoneId::generate(),
        name: Hostname::parse("a.example.com").expect("name"),
        created_at: 1,
    };
    assert!(matches!(
        s.insert_zone(&inside, false).await,
        Err(StoreError::Nested { other, .. }) if other == "example.com"
    ));
    let above = Zone {
        id: ZoneId::generate(),
        name: Hostname::parse("b.c.example.org").expect("name"),
        created_at: 1,
    };
    s.insert_zone(&above, false).await.expect("unrelated zone");
    let parent = Zone {
        id: ZoneId::generate(),
        name: Hostname::parse("example.org").expect("name"),
        created_at: 1,
    };
    assert!(matches!(
        s.insert_zone(&parent, false).await,
        Err(StoreError::Nested { other, .. }) if other == "b.c.example.org"
    ));
    s.insert_zone(&inside, true)
        .await
        .expect("nested when allowed");
}

async fn zones_are_listed_by_name_and_filtered(s: Store) {
    let b = zone(&s, "b.test").await;
    let a = zone(&s, "a.test").await;
    let c = zone(&s, "c.test").await;
    let all = s.list_zones(None, None, 0, 10).await.expect("list");
    assert_eq!(all.total, 3);
    assert_eq!(all.items, vec![a.clone(), b.clone(), c.clone()]);
    let page = s.list_zones(None, None, 1, 1).await.expect("list");
    assert_eq!((page.total, page.items), (3, vec![b.clone()]));
    let named = s
        .list_zones(Some("c.test"), None, 0, 10)
        .await
        .expect("list");
    assert_eq!((named.total, named.items), (1, vec![c.clone()]));
    let only = [a.id.clone(), c.id.clone()];
    let scoped = s.list_zones(None, Some(&only), 0, 10).await.expect("list");
    assert_eq!(
        (scoped.total, scoped.items),
        (2, vec![a.clone(), c.clone()])
    );
    let none = s.list_zones(None, Some(&[]), 0, 10).await.expect("list");
    assert_eq!(none.total, 0);
    assert!(s.delete_zone(&b.id).await.expect("delete"));
    assert_eq!(s.zone(&b.id).await.expect("read"), None);
    assert_eq!(s.zone(&a.id).await.expect("read"), Some(a));
}

async fn quota_is_enforced(s: Store) {
    let z = zone(&s, "example.com").await;
    s.insert_pack(&pack(&z), 2).await.expect("1st");
    s.insert_pack(&pack(&z), 2).await.expect("2nd");
    assert!(matches!(
        s.insert_pack(&pack(&z), 2).await,
        Err(StoreError::QuotaExceeded { allocated: 2 })
    ));
    assert_eq!(s.count_packs(&z.id).await.expect("count"), 2);
}

async fn quota_holds_under_concurrent_inserts(s: Store) {
    let z = zone(&s, "example.com").await;
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let (s, p) = (s.clone(), pack(&z));
            tokio::spawn(async move { s.insert_pack(&p, 5).await })
        })
        .collect();
    let mut inserted = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => inserted += 1,
            Err(StoreError::QuotaExceeded { allocated: 5 }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(inserted, 5);
    assert_eq!(s.count_packs(&z.id).await.expect("count"), 5);
}

async fn updates_detect_concurrent_changes(s: Store) {
    let z = zone(&s, "example.com").await;
    let p = pack(&z);
    s.insert_pack(&p, 10).await.expect("insert");
    let mut a = s.pack(&z.id, &p.id).await.expect("read").expect("pack");
    let mut b = a.clone();
    a.hosts[0].check.attempts = 1;
    s.update_pack(&mut a).await.expect("update");
    b.hosts[0].check.attempts = 5;
    assert!(matches!(
        s.update_pack(&mut b).await,
        Err(StoreError::Conflict)
    ));
    let back = s.pack(&z.id, &p.id).await.expect("read").expect("pack");
    assert_eq!(back.hosts[0].check.attempts, 1);
    assert_eq!(back.version, 1);
}

async fn of_concurrent_updates_of_one_version_exactly_one_wins(s: Store) {
    let z = zone(&s, "example.com").await;
    let p = pack(&z);
    s.insert_pack(&p, 10).await.expect("insert");
    let tasks: Vec<_> = (0..8u32)
        .map(|i| {
            let (s, mut p) = (s.clone(), p.clone());
            tokio::spawn(async move {
                p.hosts[0].check.attempts = i + 1;
                s.update_pack(&mut p).await.map(|()| i + 1)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(attempts) => winners.push(attempts),
            Err(StoreError::Conflict) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let back = s.pack(&z.id, &p.id).await.expect("read").expect("pack");
    assert_eq!(
        (back.version, back.hosts[0].check.attempts),
        (1, winners[0])
    );
}

async fn an_update_of_a_deleted_pack_is_not_found(s: Store) {
    let z = zone(&s, "example.com").await;
    let mut p = pack(&z);
    s.insert_pack(&p, 10).await.expect("insert");
    assert!(s.delete_pack(&z.id, &p.id).await.expect("delete"));
    assert!(!s.delete_pack(&z.id, &p.id).await.expect("delete again"));
    assert!(matches!(
        s.update_pack(&mut p).await,
        Err(StoreError::NotFound)
    ));
}

async fn listing_pages_and_filters(s: Store) {
    let z = zone(&s, "example.com").await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        let p = pack(&z);
        ids.push(p.id.clone());
        s.insert_pack(&p, 100).await.expect("insert");
    }
    let page = s
        .list_packs(&z.id, PackFilter::All, 5, 5)
        .await
        .expect("list");
    assert_eq!(page.total, 7);
    assert_eq!(
        page.items.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        ids[5..]
    );
    let active = s
        .list_packs(&z.id, PackFilter::Active, 0, 5)
        .await
        .expect("list");
    assert_eq!((active.total, active.items.len()), (0, 0));
    let mut third = s.pack(&z.id, &ids[2]).await.expect("read").expect("pack");
    third.state = PackState::Active;
    s.update_pack(&mut third).await.expect("update");
    let active = s
        .list_packs(&z.id, PackFilter::Active, 0, 5)
        .await
        .expect("list");
    assert_eq!((active.total, active.items), (1, vec![third]));
    let past = s
        .list_packs(&z.id, PackFilter::All, 100, 5)
        .await
        .expect("list");
    assert!(past.items.is_empty());
}

async fn held_packs_are_listed_for_the_operator(s: Store) {
    let z = zone(&s, "example.com").await;
    let plain = pack(&z);
    let mut held = pack(&z);
    held.brand_check = true;
    s.insert_pack(&plain, 10).await.expect("insert");
    s.insert_pack(&held, 10).await.expect("insert");
    let all = s.all_packs(false).await.expect("all");
    assert_eq!(
        all.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        vec![plain.id.clone(), held.id.clone()]
    );
    assert_eq!(s.all_packs(true).await.expect("held"), vec![held.clone()]);
    // A held pack is never claimed.
    let claimed = s
        .claim_due(&claim("worker-a", 1_000, 1_000, 10))
        .await
        .expect("claim");
    assert_eq!(sorted_ids(&claimed), vec![plain.id.to_string()]);
}

async fn claims_take_the_longest_due_first_and_respect_leases(s: Store) {
    let z = zone(&s, "example.com").await;
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
        s.insert_pack(p, 10).await.expect("insert");
    }
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let take = |now, wall_now, limit| {
        let s = s.clone();
        async move {
            s.claim_due(&claim("worker-a", now, wall_now, limit))
                .await
                .expect("claim")
        }
    };
    assert!(take(100, 1_000, 10).await.is_empty());
    assert_eq!(
        sorted_ids(&take(1_000, 1_000, 2).await),
        sorted(vec![early.id.to_string(), overdue.id.to_string()])
    );
    assert_eq!(
        sorted_ids(&take(1_000, 1_000, 10).await),
        [late.id.to_string()]
    );
    // Everything is leased now; a lapsed lease is claimable again.
    assert!(take(1_000, 1_000, 10).await.is_empty());
    assert_eq!(take(1_000, 1_061, 10).await.len(), 3);
}

/// A pack validated but not yet issued or deployed, whose lease ran out (its node died,
/// or restarted), is claimed before packs still to validate however long those have been
/// due: it is work in progress, and the validations of a long queue would otherwise keep
/// it waiting (3,000 packs on three nodes: a dead node's validated packs were claimed
/// back only after the other 2,500 had been).
async fn work_past_validation_is_claimed_before_new_work(s: Store) {
    let z = zone(&s, "example.com").await;
    let (mut waiting, mut validated, mut deploying) = (pack(&z), pack(&z), pack(&z));
    for h in &mut waiting.hosts {
        h.check.next_due_at = 200;
    }
    validated.state = PackState::PendingIssuance;
    deploying.state = PackState::PendingDeployment;
    for p in [&mut validated, &mut deploying] {
        for h in &mut p.hosts {
            h.check.next_due_at = 400;
        }
    }
    for p in [&waiting, &validated, &deploying] {
        s.insert_pack(p, 10).await.expect("insert");
    }
    let first = s
        .claim_due(&claim("worker-a", 1_000, 1_000, 2))
        .await
        .expect("claim");
    let mut want = vec![validated.id.to_string(), deploying.id.to_string()];
    want.sort();
    assert_eq!(sorted_ids(&first), want);
    let then = s
        .claim_due(&claim("worker-a", 1_000, 1_000, 2))
        .await
        .expect("claim");
    assert_eq!(sorted_ids(&then), [waiting.id.to_string()]);
}

/// An ACME pack waits in `initializing` until the worker places its order with the CA:
/// if the claim skipped that state, the pack would never get its CA's records.
async fn packs_waiting_for_their_acme_order_are_claimed(s: Store) {
    let z = zone(&s, "example.com").await;
    let mut waiting = pack(&z);
    waiting.await_order();
    for h in &mut waiting.hosts {
        h.check.next_due_at = 500;
    }
    // Its order failed and is retried later: not claimed before then.
    let mut later = pack(&z);
    later.await_order();
    for h in &mut later.hosts {
        h.check.next_due_at = 5_000;
    }
    for p in [&waiting, &later] {
        s.insert_pack(p, 10).await.expect("insert");
    }
    assert_eq!(
        s.pack(&z.id, &waiting.id)
            .await
            .expect("read")
            .expect("stored")
            .state,
        PackState::Initializing
    );
    let claimed = s
        .claim_due(&claim("worker-a", 1_000, 1_000, 10))
        .await
        .expect("claim");
    assert_eq!(sorted_ids(&claimed), vec![waiting.id.to_string()]);
}

/// A worker holding as many packs waiting for a CA as it will (`worker/hand.rs`) claims
/// none of that CA's packs that would wait for it again (placing an order, finishing
/// one, a renewal), but still those pending validation (zonecert's own checks), and
/// every other CA's.
async fn a_claim_skips_the_cas_it_is_told_to_but_not_their_validations(s: Store) {
    let z = zone(&s, "example.com").await;
    let from = |ca| {
        let mut p = pack(&z);
        p.ca = ca;
        p
    };
    let mut ordering = from(CaChoice::Google);
    ordering.await_order();
    let mut issuing = from(CaChoice::Google);
    issuing.state = PackState::PendingIssuance;
    let validating = from(CaChoice::Google);
    let mut other = from(CaChoice::LetsEncrypt);
    other.await_order();
    for p in [&ordering, &issuing, &validating, &other] {
        s.insert_pack(p, 10).await.expect("insert");
    }
    let mut skipping = claim("worker-a", 1_000, 1_000, 10);
    skipping.skip_cas = &[CaChoice::Google, CaChoice::SslCom];
    let claimed = s.claim_due(&skipping).await.expect("claim");
    let mut want = vec![validating.id.to_string(), other.id.to_string()];
    want.sort();
    assert_eq!(sorted_ids(&claimed), want);
    // Not skipped: the rest.
    let rest = s
        .claim_due(&claim("worker-a", 1_000, 1_000, 10))
        .await
        .expect("claim");
    let mut want = vec![ordering.id.to_string(), issuing.id.to_string()];
    want.sort();
    assert_eq!(sorted_ids(&rest), want);
}

async fn renewal_extends_only_the_owners_live_leases(s: Store) {
    let z = zone(&s, "example.com").await;
    for _ in 0..3 {
        s.insert_pack(&pack(&z), 10).await.expect("insert");
    }
    // worker-a holds one pack until 1_060 and one until 1_010; worker-b one until 1_060.
    let claim_one = |owner: &'static str, lease_secs| {
        let s = s.clone();
        async move {
            s.claim_due(&Claim {
                owner,
                now: 1_000,
                wall_now: 1_000,
                lease_secs,
                limit: 1,
                skip_cas: &[],
            })
            .await
            .expect("claim")
        }
    };
    assert_eq!(claim_one("worker-a", 60).await.len(), 1);
    assert_eq!(claim_one("worker-a", 10).await.len(), 1);
    assert_eq!(claim_one("worker-b", 60).await.len(), 1);
    // At 1_030 only worker-a's live lease is extended, to 1_090.
    assert_eq!(
        s.renew_leases("worker-a", 1_030, 60).await.expect("renew"),
        1
    );
    let claimable_at = |wall_now| {
        let s = s.clone();
        async move {
            s.claim_due(&claim("worker-c", 1_000, wall_now, 10))
                .await
                .expect("claim")
                .len()
        }
    };
    assert_eq!(claimable_at(1_030).await, 1);
    assert_eq!(claimable_at(1_070).await, 1);
    assert_eq!(claimable_at(1_089).await, 0);
    assert_eq!(claimable_at(1_090).await, 2);
    assert_eq!(
        s.renew_leases("worker-a", 1_091, 60).await.expect("renew"),
        0
    );
}

async fn concurrent_claims_never_take_a_pack_twice(s: Store) {
    let z = zone(&s, "example.com").await;
    let mut all = HashSet::new();
    for _ in 0..40 {
        let p = pack(&z);
        all.insert(p.id.to_string());
        s.insert_pack(&p, 100).await.expect("insert");
    }
    // Four workers claim at once, again and again, until nothing is left.
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let owner = format!("worker-{w}");
                let mut mine = Vec::new();
                loop {
                    let got = s
                        .claim_due(&claim(&owner, 1_000, 1_000, 3))
                        .await
                        .expect("claim");
                    if got.is_empty() {
                        // Skipped rows may be another worker's claim in flight: look
                        // once more after it had time to commit.
                        tokio::task::yield_now().await;
                        let again = s
                            .claim_due(&claim(&owner, 1_000, 1_000, 3))
                            .await
                            .expect("claim");
                        if again.is_empty() {
                            return mine;
                        }
                        mine.extend(again);
                    } else {
                        mine.extend(got);
                    }
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for task in tasks {
        for (_, id) in task.await.expect("task") {
            assert!(seen.insert(id.to_string()), "{id} claimed twice");
        }
    }
    // Whatever a worker's last look skipped, a claim now finds: nothing is lost.
    let rest = s
        .claim_due(&claim("worker-z", 1_000, 1_000, 100))
        .await
        .expect("claim");
    for (_, id) in rest {
        assert!(seen.insert(id.to_string()), "{id} claimed twice");
    }
    assert_eq!(seen, all);
}

async fn lifecycle_batches_write_each_pack_alone_and_release_leases(s: Store) {
    let z = zone(&s, "example.com").await;
    let (a, b) = (pack(&z), pack(&z));
    s.insert_pack(&a, 10).await.expect("insert");
    s.insert_pack(&b, 10).await.expect("insert");
    assert_eq!(
        s.claim_due(&claim("worker-a", 1_000, 1_000, 10))
            .await
            .expect("claim")
            .len(),
        2
    );
    let mut fresh_a = s.pack(&z.id, &a.id).await.expect("read").expect("pack");
    fresh_a.hosts[0].check.attempts = 3;
    let stale_b = s.pack(&z.id, &b.id).await.expect("read").expect("pack");
    let mut newer_b = stale_b.clone();
    newer_b.hosts[0].check.attempts = 7;
    s.update_pack(&mut newer_b).await.expect("update");

    let mut batch = vec![fresh_a.clone(), stale_b];
    let key = SealedKey {
        pack: a.id.clone(),
        serial: "c1".into(),
        sealed: b"sealed-1".to_vec(),
    };
    let outcomes = s
        .write_lifecycle_batch(
            "worker-a",
            &mut batch,
            &[],
            &[],
            &[a.id.clone(), b.id.clone()],
            std::slice::from_ref(&key),
        )
        .await
        .expect("batch");
    // The key was kept in the batch's transaction.
    let kept = s.certificate_key(&a.id).await.expect("read").expect("kept");
    assert_eq!((kept.serial, kept.sealed), (key.serial, key.sealed));
    assert!(outcomes[0].is_ok());
    assert!(matches!(outcomes[1], Err(StoreError::Conflict)));
    assert_eq!(batch[0].version, fresh_a.version + 1);
    assert_eq!(
        s.pack(&z.id, &a.id).await.expect("read"),
        Some(batch[0].clone())
    );
    let b_now = s.pack(&z.id, &b.id).await.expect("read").expect("pack");
    assert_eq!(b_now.hosts[0].check.attempts, 7);
    // Both leases were given up in the same transaction.
    assert_eq!(
        s.claim_due(&claim("worker-b", 1_000, 1_000, 10))
            .await
            .expect("claim")
            .len(),
        2
    );
}

async fn a_write_that_releases_its_lease_releases_it_only_when_written(s: Store) {
    let z = zone(&s, "example.com").await;
    let (a, b) = (pack(&z), pack(&z));
    s.insert_pack(&a, 10).await.expect("insert");
    s.insert_pack(&b, 10).await.expect("insert");
    let claimed = s
        .claim_due(&claim("worker-a", 1_000, 1_000, 10))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    let fresh_a = s.pack(&z.id, &a.id).await.expect("read").expect("pack");
    let stale_b = s.pack(&z.id, &b.id).await.expect("read").expect("pack");
    let mut newer_b = stale_b.clone();
    s.update_pack(&mut newer_b).await.expect("update");

    // Both writes would give their leases up; b's conflicts, so b stays leased.
    let releasing = WriteMode {
        release: true,
        hosts_unchanged: false,
    };
    let mut batch = vec![fresh_a, stale_b];
    let outcomes = s
        .write_lifecycle_batch("worker-a", &mut batch, &[], &[releasing; 2], &[], &[])
        .await
        .expect("batch");
    assert!(outcomes[0].is_ok());
    assert!(matches!(outcomes[1], Err(StoreError::Conflict)));
    let again = s
        .claim_due(&claim("worker-b", 1_000, 1_000, 10))
        .await
        .expect("claim");
    assert_eq!(
        again.iter().map(|(_, id)| id).collect::<Vec<_>>(),
        [&a.id],
        "only the written pack's lease was given up"
    );
}

async fn a_write_with_the_same_hosts_keeps_their_rows(s: Store) {
    let z = zone(&s, "example.com").await;
    let p = pack(&z);
    s.insert_pack(&p, 10).await.expect("insert");
    let write = |pack: Pack, hosts_unchanged: bool| {
        let s = s.clone();
        async move {
            let mut batch = vec![pack];
            let mode = WriteMode {
                release: false,
                hosts_unchanged,
            };
            let outcomes = s
                .write_lifecycle_batch("worker-a", &mut batch, &[], &[mode], &[], &[])
                .await
                .expect("batch");
            assert!(outcomes[0].is_ok());
        }
    };
    // The pack's own columns are written either way; the host rows only when told they
    // changed (the writer compares them with the version it replaces).
    let mut changed = s.pack(&z.id, &p.id).await.expect("read").expect("pack");
    changed.hosts[0].check.attempts = 4;
    changed.errors.push("kept".into());
    write(changed.clone(), true).await;
    let stored = s.pack(&z.id, &p.id).await.expect("read").expect("pack");
    assert_eq!(stored.errors, ["kept"]);
    assert_eq!(stored.version, changed.version + 1);
    assert_eq!(stored.hosts, p.hosts, "the host rows were kept");
    let mut again = changed;
    again.version = stored.version;
    write(again, false).await;
    let stored = s.pack(&z.id, &p.id).await.expect("read").expect("pack");
    assert_eq!(
        stored.hosts[0].check.attempts, 4,
        "the host rows were written"
    );
}

async fn leases_held_elsewhere_are_seen_and_a_node_takes_back_its_own(s: Store) {
    let z = zone(&s, "example.com").await;
    let (a, b) = (pack(&z), pack(&z));
    s.insert_pack(&a, 10).await.expect("insert");
    s.insert_pack(&b, 10).await.expect("insert");
    let by_a = s
        .claim_due(&claim("node-a", 1_000, 1_000, 1))
        .await
        .expect("claim");
    assert_eq!(by_a.len(), 1);
    let elsewhere = s
        .leased_elsewhere(&z.id, Some("node-b"), 1_000)
        .await
        .expect("leased");
    assert_eq!(elsewhere, vec![by_a[0].1.clone()]);
    assert!(
        s.leased_elsewhere(&z.id, Some("node-a"), 1_000)
            .await
            .expect("leased")
            .is_empty()
    );
    assert_eq!(
        s.leased_elsewhere(&z.id, None, 1_000)
            .await
            .expect("leased")
            .len(),
        1
    );
    // Past the lease nobody holds it.
    assert!(
        s.leased_elsewhere(&z.id, Some("node-b"), 1_060)
            .await
            .expect("leased")
            .is_empty()
    );
    assert_eq!(s.release_leases_of("node-a").await.expect("release"), 1);
    assert!(
        s.leased_elsewhere(&z.id, None, 1_000)
            .await
            .expect("leased")
            .is_empty()
    );
}

async fn users_and_tokens_are_found_by_their_credentials_until_deleted(s: Store) {
    let user = User {
        id: "u1".into(),
        email: "ops@example.com".into(),
        key_hash: [7; 32],
        created_at: 3,
    };
    s.insert_user(&user).await.expect("insert user");
    let twin = User {
        id: "u2".into(),
        key_hash: [8; 32],
        ..user.clone()
    };
    assert!(matches!(
        s.insert_user(&twin).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(
        s.user_by_email("ops@example.com")
            .await
            .expect("read")
            .as_deref(),
        Some(&user)
    );
    assert_eq!(s.list_users().await.expect("list"), vec![user.clone()]);
    let z = zone(&s, "example.com").await;
    let scoped = Token {
        id: "t1".into(),
        name: "ci".into(),
        secret_hash: [1; 32],
        permissions: vec![Permission::SslRead, Permission::ZoneRead],
        zones: Some(vec![z.id.clone()]),
        created_at: 4,
    };
    let global = Token {
        id: "t2".into(),
        name: "all".into(),
        secret_hash: [2; 32],
        permissions: vec![Permission::SslWrite],
        zones: None,
        created_at: 5,
    };
    s.insert_token(&scoped).await.expect("insert token");
    s.insert_token(&global).await.expect("insert token");
    assert_eq!(
        s.reads()
            .token_by_hash(&[1; 32])
            .await
            .expect("read")
            .as_deref(),
        Some(&scoped)
    );
    assert_eq!(
        s.list_tokens().await.expect("list"),
        vec![scoped.clone(), global.clone()]
    );
    assert!(s.delete_token("t1").await.expect("revoke"));
    assert!(!s.delete_token("t1").await.expect("revoke again"));
    // A request that starts after the revocation does not find it.
    assert_eq!(s.reads().token_by_hash(&[1; 32]).await.expect("read"), None);
    assert!(s.delete_user("ops@example.com").await.expect("delete"));
    assert_eq!(
        s.user_by_email("ops@example.com").await.expect("read"),
        None
    );
}

async fn a_zone_view_holds_the_zone_and_its_packs(s: Store) {
    let z = zone(&s, "example.com").await;
    let (a, b) = (pack(&z), pack(&z));
    s.insert_pack(&a, 10).await.expect("insert");
    s.insert_pack(&b, 10).await.expect("insert");
    let view = s
        .reads()
        .zone_with_packs(&z.id)
        .await
        .expect("read")
        .expect("view");
    assert_eq!(view.zone, z);
    let packs: Vec<Pack> = view.packs.iter().map(|p| (**p).clone()).collect();
    assert_eq!(packs, vec![a.clone(), b]);
    // A request after a write sees the write.
    assert!(s.delete_pack(&z.id, &a.id).await.expect("delete"));
    let view = s
        .reads()
        .zone_with_packs(&z.id)
        .await
        .expect("read")
        .expect("view");
    assert_eq!(view.packs.len(), 1);
    assert!(
        s.reads()
            .zone_with_packs(&ZoneId::generate())
            .await
            .expect("read")
            .is_none()
    );
    // A zone without packs.
    let empty = zone(&s, "empty.example").await;
    let view = s
        .reads()
        .zone_with_packs(&empty.id)
        .await
        .expect("read")
        .expect("view");
    assert_eq!(view.zone, empty);
    assert!(view.packs.is_empty());
}

async fn deleting_a_zone_deletes_its_packs(s: Store) {
    let z = zone(&s, "example.com").await;
    let p = pack(&z);
    s.insert_pack(&p, 10).await.expect("insert");
    assert!(s.delete_zone(&z.id).await.expect("delete"));
    assert!(s.pack(&z.id, &p.id).await.expect("read").is_none());
    assert!(s.pack_by_id(&p.id).await.expect("read").is_none());
    assert!(!s.delete_zone(&z.id).await.expect("delete again"));
}

/// What the DNS responder asks: the packs delegating to a name, and whether any
/// delegates to a name under another.
async fn delegated_hosts_are_found_by_their_cname_target(s: Store) {
    let z = zone(&s, "cname.example").await;
    let mut p = pack(&z);
    p.switch_method(DcvMethod::Cname, "x.dcv.test", 10);
    s.insert_pack(&p, 10).await.expect("insert");
    let target = "cname.example.x.dcv.test";
    let found = s.packs_with_cname_target(target).await.expect("read");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, p.id);
    // Both hosts (apex and wildcard) share the target and come with the pack.
    assert_eq!(found[0].hosts.len(), 2);
    assert!(
        s.packs_with_cname_target("other.x.dcv.test")
            .await
            .expect("read")
            .is_empty()
    );
    for above in ["example.x.dcv.test", "x.dcv.test", "dcv.test"] {
        assert!(
            s.has_cname_target_under(above).await.expect("read"),
            "{above}"
        );
    }
    for not_above in [
        target,
        "ample.x.dcv.test",
        "y.dcv.test",
        "cname.example.x.dcv.test.z",
    ] {
        assert!(
            !s.has_cname_target_under(not_above).await.expect("read"),
            "{not_above}"
        );
    }
    // A txt pack's values are not CNAME targets.
    let z2 = zone(&s, "txt.example").await;
    s.insert_pack(&pack(&z2), 10).await.expect("insert");
    assert!(!s.has_cname_target_under("txt.example").await.expect("read"));
}

async fn certificate_keys_are_kept_per_pack_and_listed_while_active(s: Store) {
    let z = zone(&s, "example.com").await;
    let mut p = pack(&z);
    s.insert_pack(&p, 10).await.expect("insert");
    assert!(s.certificate_key(&p.id).await.expect("read").is_none());
    s.put_certificate_key(&p.id, "c1", b"sealed-1")
        .await
        .expect("put");
    let kept = s.certificate_key(&p.id).await.expect("read").expect("kept");
    assert_eq!(
        (kept.serial.as_str(), &kept.sealed[..]),
        ("c1", &b"sealed-1"[..])
    );
    // Listed for the deploy directories only once the pack is active with that
    // certificate.
    assert!(s.active_certificate_keys().await.expect("list").is_empty());
    p.state = PackState::Active;
    p.certificate = Some(IssuedCertificate {
        id: "c1".into(),
        chain_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
        not_before: 10,
        not_after: 20,
        issuer: "zonecert".into(),
        signature: "ECDSAWithSHA256".into(),
        issued_at: 11,
        renew_at: None,
        acme_directory: None,
    });
    s.update_pack(&mut p).await.expect("update");
    assert_eq!(
        s.active_certificate_keys().await.expect("list"),
        vec![(p.id.clone(), "c1".to_string())]
    );
    // A renewal's key replaces it; the certificate it belongs to is not recorded yet.
    s.put_certificate_key(&p.id, "c2", b"sealed-2")
        .await
        .expect("put");
    assert!(s.active_certificate_keys().await.expect("list").is_empty());
    // Resealing what was read before that replacement changes nothing.
    assert!(
        !s.reseal_certificate_key(&kept, b"resealed")
            .await
            .expect("reseal")
    );
    let current = s.certificate_key(&p.id).await.expect("read").expect("kept");
    assert!(
        s.reseal_certificate_key(&current, b"resealed")
            .await
            .expect("reseal")
    );
    assert_eq!(s.certificate_keys().await.expect("all").len(), 1);
    // Deleting the pack deletes its key.
    assert!(s.delete_pack(&z.id, &p.id).await.expect("delete"));
    assert!(s.certificate_key(&p.id).await.expect("read").is_none());
}
