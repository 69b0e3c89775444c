use super::checkpointer;
use super::claims::RENEW_LEASES;
use super::open::SCHEMA_VERSION;
use super::zones::WARM_CHUNK;
use super::*;
use crate::model::*;
use crate::store::{Claim, PackFilter};
use rusqlite::params;

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("z.db")).unwrap();
    (dir, s)
}

fn zone(s: &SqliteStore) -> Zone {
    let z = Zone {
        id: ZoneId::generate(),
        name: Hostname::parse("example.com").unwrap(),
        created_at: 1,
    };
    s.insert_zone(&z, false).unwrap();
    z
}

fn pack(z: &Zone) -> Pack {
    Pack::order(
        z.id.clone(),
        vec![
            Hostname::parse("example.com").unwrap(),
            Hostname::parse("*.example.com").unwrap(),
        ],
        DcvMethod::Txt,
        90,
        CaChoice::LetsEncrypt,
        false,
        "x.dcv.test",
        100,
    )
}

#[test]
fn packs_round_trip() {
    let (_d, s) = store();
    let z = zone(&s);
    let p = pack(&z);
    s.insert_pack(&p, 10).unwrap();
    let back = s.pack(&z.id, &p.id).unwrap().unwrap();
    assert_eq!(back, p);
    assert_eq!(s.packs_of_zone(&z.id).unwrap(), vec![p]);
}

#[test]
fn quota_is_enforced_atomically() {
    let (_d, s) = store();
    let z = zone(&s);
    s.insert_pack(&pack(&z), 2).unwrap();
    s.insert_pack(&pack(&z), 2).unwrap();
    assert!(matches!(
        s.insert_pack(&pack(&z), 2),
        Err(StoreError::QuotaExceeded { allocated: 2 })
    ));
    assert_eq!(s.count_packs(&z.id).unwrap(), 2);
}

#[test]
fn updates_detect_concurrent_changes() {
    let (_d, s) = store();
    let z = zone(&s);
    let p = pack(&z);
    s.insert_pack(&p, 10).unwrap();
    let mut a = s.pack(&z.id, &p.id).unwrap().unwrap();
    let mut b = a.clone();
    a.hosts[0].check.attempts = 1;
    s.update_pack(&mut a, &[]).unwrap();
    b.hosts[0].check.attempts = 5;
    assert!(matches!(
        s.update_pack(&mut b, &[]),
        Err(StoreError::Conflict)
    ));
    let back = s.pack(&z.id, &p.id).unwrap().unwrap();
    assert_eq!(back.hosts[0].check.attempts, 1);
    assert_eq!(back.version, 1);
}

#[test]
fn listing_pages_and_filters() {
    let (_d, s) = store();
    let z = zone(&s);
    let mut ids = Vec::new();
    for _ in 0..7 {
        let p = pack(&z);
        ids.push(p.id.clone());
        s.insert_pack(&p, 100).unwrap();
    }
    let page = s.list_packs(&z.id, PackFilter::All, 5, 5).unwrap();
    assert_eq!(page.total, 7);
    assert_eq!(
        page.items.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        ids[5..]
    );
    let active = s.list_packs(&z.id, PackFilter::Active, 0, 5).unwrap();
    assert_eq!((active.total, active.items.len()), (0, 0));
    let past = s.list_packs(&z.id, PackFilter::All, 100, 5).unwrap();
    assert!(past.items.is_empty());
}

fn claim(now: i64, limit: u64) -> Claim<'static> {
    Claim {
        owner: "worker-a",
        now,
        wall_now: 1_000,
        lease_secs: 60,
        limit,
        skip_cas: &[],
    }
}

#[test]
fn soonest_claims_take_the_longest_due_first_and_respect_leases() {
    let (_d, s) = store();
    let z = zone(&s);
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
        s.insert_pack(p, 10).unwrap();
    }
    // As a sorted list: the claim chooses by due time, RETURNING lists in table order.
    let ids = |claimed: Vec<(ZoneId, PackId)>| -> Vec<String> {
        let mut ids: Vec<String> = claimed.into_iter().map(|(_, id)| id.to_string()).collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert!(s.claim_due(&claim(100, 10)).unwrap().is_empty());
    assert_eq!(
        ids(s.claim_due(&claim(1_000, 2)).unwrap()),
        sorted(vec![early.id.to_string(), overdue.id.to_string()])
    );
    assert_eq!(
        ids(s.claim_due(&claim(1_000, 10)).unwrap()),
        [late.id.to_string()]
    );
    // Everything is leased now; a lapsed lease is claimable again.
    assert!(s.claim_due(&claim(1_000, 10)).unwrap().is_empty());
    let mut later = claim(1_000, 10);
    later.wall_now = 1_061;
    assert_eq!(s.claim_due(&later).unwrap().len(), 3);
}

#[test]
fn renewal_extends_only_the_owners_live_leases() {
    let (_d, s) = store();
    let z = zone(&s);
    let (mine, lapsed, theirs) = (pack(&z), pack(&z), pack(&z));
    for p in [&mine, &lapsed, &theirs] {
        s.insert_pack(p, 10).unwrap();
    }
    // worker-a holds `mine` until 1_060 and `lapsed` until 1_010; worker-b `theirs`.
    let claim_one = |owner, wall_now, lease_secs| {
        s.claim_due(&Claim {
            owner,
            now: 1_000,
            wall_now,
            lease_secs,
            limit: 1,
            skip_cas: &[],
        })
        .unwrap()
    };
    assert_eq!(claim_one("worker-a", 1_000, 60).len(), 1);
    assert_eq!(claim_one("worker-a", 1_000, 10).len(), 1);
    assert_eq!(claim_one("worker-b", 1_000, 60).len(), 1);

    // At 1_030 only worker-a's live lease is extended, to 1_090.
    assert_eq!(s.renew_leases("worker-a", 1_030, 60).unwrap(), 1);
    let claimable_at = |wall_now| {
        let mut c = claim(1_000, 10);
        c.owner = "worker-c";
        c.wall_now = wall_now;
        s.claim_due(&c).unwrap().len()
    };
    // worker-c (leases of 60 s) gets the lapsed one at 1_030, worker-b's at 1_070 and
    // worker-a's only at 1_090 (with the lapsed one again).
    assert_eq!(claimable_at(1_030), 1);
    assert_eq!(claimable_at(1_070), 1);
    assert_eq!(claimable_at(1_089), 0);
    assert_eq!(claimable_at(1_090), 2);
    // worker-a's lease is worker-c's now: nothing of worker-a's to renew.
    assert_eq!(s.renew_leases("worker-a", 1_091, 60).unwrap(), 0);
}

#[test]
fn renewal_finds_the_owners_packs_through_the_lease_owner_index() {
    let (_d, s) = store();
    let plan = s
        .with_conn(|conn| {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {RENEW_LEASES}"))?;
            let rows = stmt.query_map(params!["worker-a", 1_000, 60], |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .unwrap();
    assert!(
        plan.iter().any(|d| d.contains("packs_by_lease_owner")),
        "{plan:?}"
    );
}

#[test]
fn lifecycle_batches_write_each_pack_alone_and_release_leases() {
    let (_d, s) = store();
    let z = zone(&s);
    let (a, b) = (pack(&z), pack(&z));
    s.insert_pack(&a, 10).unwrap();
    s.insert_pack(&b, 10).unwrap();
    assert_eq!(s.claim_due(&claim(1_000, 10)).unwrap().len(), 2);

    let mut fresh_a = s.pack(&z.id, &a.id).unwrap().unwrap();
    fresh_a.hosts[0].check.attempts = 3;
    let stale_b = s.pack(&z.id, &b.id).unwrap().unwrap();
    let mut newer_b = stale_b.clone();
    newer_b.hosts[0].check.attempts = 7;
    s.update_pack(&mut newer_b, &[]).unwrap();

    let mut batch = vec![fresh_a.clone(), stale_b];
    let outcomes = s
        .write_lifecycle_batch(
            "worker-a",
            &mut batch,
            &[],
            &[],
            &[a.id.clone(), b.id.clone()],
            &[],
        )
        .unwrap();
    assert!(outcomes[0].is_ok());
    assert!(matches!(outcomes[1], Err(StoreError::Conflict)));
    assert_eq!(batch[0].version, fresh_a.version + 1);
    assert_eq!(s.pack(&z.id, &a.id).unwrap().unwrap(), batch[0]);
    assert_eq!(
        s.pack(&z.id, &b.id).unwrap().unwrap().hosts[0]
            .check
            .attempts,
        7
    );
    // Both leases were given up in the same transaction.
    assert_eq!(s.claim_due(&claim(1_000, 10)).unwrap().len(), 2);
}

#[test]
fn a_lifecycle_batch_updates_cached_zone_views_in_place() {
    let (_d, s) = store();
    let z = zone(&s);
    let (a, b) = (pack(&z), pack(&z));
    s.insert_pack(&a, 10).unwrap();
    s.insert_pack(&b, 10).unwrap();
    let before = s.zone_with_packs(s.cache_epoch(), &z.id).unwrap().unwrap();
    s.inner
        .cache
        .keep_answer(&before, bytes::Bytes::from_static(b"rendered from before"));
    assert!(s.inner.cache.answer(&z.id).is_some());

    let mut changed = s.pack(&z.id, &a.id).unwrap().unwrap();
    changed.hosts[0].check.attempts = 5;
    changed
        .errors
        .push("TXT _acme-challenge.example.com has 1 value".into());
    let mut batch = vec![changed];
    s.write_lifecycle_batch("worker-a", &mut batch, &[], &[], &[], &[])
        .unwrap();

    // The cache holds a new view at once, before any read could fill it again.
    let cached = s
        .inner
        .cache
        .zone(&z.id)
        .expect("the zone's view was updated, not forgotten");
    assert!(!Arc::ptr_eq(&before, &cached), "the old view is gone");
    let again = s.zone_with_packs(s.cache_epoch(), &z.id).unwrap().unwrap();
    assert!(
        Arc::ptr_eq(&cached, &again),
        "requests are served the new view"
    );
    // It is what a read past the cache finds.
    let stored = s.zone_with_packs(None, &z.id).unwrap().unwrap();
    assert_eq!(cached.packs, stored.packs);
    assert_eq!(*cached.packs[0], batch[0]);
    assert_eq!(cached.packs[1], before.packs[1]);
    assert!(
        s.inner.cache.answer(&z.id).is_none(),
        "rendered again from the new packs"
    );
}

#[test]
fn a_write_that_changes_rows_to_what_they_were_keeps_the_cache() {
    let (_d, s) = store();
    let z = zone(&s);
    s.insert_pack(&pack(&z), 10).unwrap();
    assert_eq!(s.claim_due(&claim(10_000, 10)).unwrap().len(), 1);
    s.zone_with_packs(s.cache_epoch(), &z.id).unwrap().unwrap();
    assert!(s.inner.cache.zone(&z.id).is_some());
    // Renewed in the second the claim was taken: the same lease, rows "changed".
    assert_eq!(s.renew_leases("worker-a", 1_000, 60).unwrap(), 1);
    s.cache_epoch();
    assert!(s.inner.cache.zone(&z.id).is_some(), "the cache was emptied");
}

/// Inserts `n` zones, each in a commit of its own (of at least one WAL frame).
fn commit_zones(s: &SqliteStore, n: u32) {
    for i in 0..n {
        s.insert_zone(
            &Zone {
                id: ZoneId::generate(),
                name: Hostname::parse(&format!("z{i}.example.com")).unwrap(),
                created_at: 1,
            },
            false,
        )
        .unwrap();
    }
}

#[test]
fn the_checkpointer_keeps_the_wal_short() {
    let (_d, s) = store();
    let watch = s.inner.watch.as_ref().unwrap();
    commit_zones(&s, checkpointer::CHECKPOINT_FRAMES + 200);
    // The writer's own checkpoint is only a backstop far above this: without the
    // checkpointer, these frames would stay.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while watch.state().unwrap().frames_to_checkpoint >= checkpointer::CHECKPOINT_FRAMES {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint in 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Schema 9 keeps which ACME directory ordered a certificate, and only those are queued
/// for revocation. A schema-8 database's certificates: the built-in CA's stay unmarked
/// (never queued), any other CA's are marked '' (queued, found by the CA's name).
#[test]
fn a_version_8_database_marks_its_acme_certificates_and_queues_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.db");
    let z = {
        let s = SqliteStore::open(&path).unwrap();
        let z = zone(&s);
        for (id, issuer) in [
            (
                "00000000-0000-4000-8000-00000000000a",
                "Pebble Intermediate CA 1e2f",
            ),
            (
                "00000000-0000-4000-8000-00000000000b",
                "zonecert built-in CA (0a1b2c3d)",
            ),
        ] {
            let mut p = pack(&z);
            p.id = PackId::parse(id).unwrap();
            p.certificate = Some(IssuedCertificate {
                id: id[id.len() - 2..].into(),
                chain_pem: "-----BEGIN CERTIFICATE-----".into(),
                not_before: 1,
                not_after: 4_000_000_000,
                issuer: issuer.into(),
                signature: "ECDSAWithSHA256".into(),
                issued_at: 1,
                renew_at: None,
                acme_directory: None,
            });
            s.insert_pack(&p, 10).unwrap();
        }
        z
    };
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "ALTER TABLE packs DROP COLUMN cert_acme_directory; \
             ALTER TABLE revocations DROP COLUMN directory; \
             UPDATE meta SET value = '8' WHERE key = 'schema_version';",
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let directory = |id: &str| {
        let id = PackId::parse(id).unwrap();
        s.pack(&z.id, &id)
            .unwrap()
            .unwrap()
            .certificate
            .unwrap()
            .acme_directory
    };
    assert_eq!(
        directory("00000000-0000-4000-8000-00000000000a"),
        Some(String::new())
    );
    assert_eq!(directory("00000000-0000-4000-8000-00000000000b"), None);
    assert!(s.delete_zone(&z.id).unwrap());
    let queued = s.queued_revocations().unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].serial, "0a");
    assert_eq!(queued[0].directory.as_deref(), Some(""));
}

#[test]
fn a_version_1_database_is_migrated_and_keeps_its_packs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.db");
    let (z, p) = {
        let s = SqliteStore::open(&path).unwrap();
        let z = zone(&s);
        let mut p = pack(&z);
        p.stage_deadline = 4242;
        s.insert_pack(&p, 10).unwrap();
        (z, p)
    };
    // Version 1's layout: the same but for the deadline column's name.
    let column = |conn: &Connection| -> Vec<String> {
        conn.prepare("SELECT name FROM pragma_table_info('packs') WHERE name LIKE '%deadline'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "ALTER TABLE packs RENAME COLUMN stage_deadline TO validation_deadline; \
             ALTER TABLE packs DROP COLUMN order_ref; \
             ALTER TABLE packs DROP COLUMN cert_renew_at; \
             ALTER TABLE packs DROP COLUMN cert_acme_directory; \
             DROP TABLE certificate_keys; \
             DROP TABLE revocations; \
             UPDATE meta SET value = '1' WHERE key = 'schema_version';",
        )
        .unwrap();
        assert_eq!(column(&conn), ["validation_deadline"]);
    }
    let s = SqliteStore::open(&path).unwrap();
    let back = s.pack(&z.id, &p.id).unwrap().unwrap();
    assert_eq!(back.stage_deadline, 4242);
    // Version 3's and 5's columns were added, empty; version 6's table too, and in use.
    assert_eq!(back.order_ref, None);
    assert_eq!(back.certificate.and_then(|c| c.renew_at), None);
    assert!(s.certificate_key(&p.id).unwrap().is_none());
    s.put_certificate_key(&p.id, "01", b"sealed").unwrap();
    assert_eq!(s.certificate_key(&p.id).unwrap().unwrap().sealed, b"sealed");
    let conn = Connection::open(&path).unwrap();
    assert_eq!(column(&conn), ["stage_deadline"]);
    let version: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    // Version 7's revocation queue was created.
    assert!(s.queued_revocations().unwrap().is_empty());
    // The validation-deadline index followed the column.
    let index: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'packs_validation_deadline'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(index.contains("stage_deadline"), "{index}");
    // A database newer than this zonecert is refused, not rewritten.
    conn.execute(
        "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
        [],
    )
    .unwrap();
    drop(s);
    assert!(SqliteStore::open(&path).is_err());
}

#[test]
fn dropping_the_store_closes_every_connection_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.db");
    let s = SqliteStore::open(&path).unwrap();
    commit_zones(&s, checkpointer::CHECKPOINT_FRAMES + 10);
    // The last ask is likely still pending or running. SQLite removes the WAL when
    // the last connection closes: if the checkpointer's outlived the store, it is
    // still there (and a checkpoint ran on beside a closing database).
    drop(s);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    assert!(!Path::new(&wal).exists(), "a connection outlived the store");
}

#[test]
fn warming_reads_every_zone_view_as_a_request_would() {
    let (_d, s) = store();
    // More zones than one chunk, some without packs, some with two.
    let mut zones = Vec::new();
    for i in 0..(WARM_CHUNK * 2 + 5) {
        let z = Zone {
            id: ZoneId::generate(),
            name: Hostname::parse(&format!("z{i}.example.com")).unwrap(),
            created_at: 1,
        };
        s.insert_zone(&z, false).unwrap();
        for _ in 0..(i % 3) {
            s.insert_pack(&pack(&z), 10).unwrap();
        }
        zones.push(z);
    }
    assert_eq!(s.warm_cache(1.0).unwrap(), zones.len());
    for z in &zones {
        let cached = s.inner.cache.zone(&z.id).expect("warmed");
        let read = s.zone_with_packs(None, &z.id).unwrap().unwrap();
        assert_eq!((&cached.zone, &cached.packs), (&read.zone, &read.packs));
    }
    // A share too small for one view warms nothing and says so.
    let (_d2, t) = store();
    let z = zone(&t);
    t.insert_pack(&pack(&z), 10).unwrap();
    assert_eq!(t.warm_cache(0.0).unwrap(), 0);
    assert!(t.inner.cache.zone(&z.id).is_none());
}

#[test]
fn deleting_a_zone_deletes_its_packs() {
    let (_d, s) = store();
    let z = zone(&s);
    let p = pack(&z);
    s.insert_pack(&p, 10).unwrap();
    assert!(s.delete_zone(&z.id).unwrap());
    assert!(s.pack(&z.id, &p.id).unwrap().is_none());
    assert!(!s.delete_zone(&z.id).unwrap());
}

/// How many descriptors of this process are open on files below `dir`.
fn open_files_below(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[test]
fn dropping_a_store_closes_the_reader_connection_of_every_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.db");
    for _ in 0..20 {
        let s = SqliteStore::open(&path).unwrap();
        // A read on this thread and one on another: each opens that thread's
        // connection, with its file descriptors and its page cache.
        assert!(s.zone(&ZoneId::generate()).unwrap().is_none());
        std::thread::scope(|threads| {
            threads.spawn(|| assert!(s.zone(&ZoneId::generate()).unwrap().is_none()));
        });
        drop(s);
        // The thread that read lives on (this one): its connection must not.
        assert_eq!(
            open_files_below(dir.path()),
            0,
            "a reader connection outlived its store"
        );
    }
}

#[test]
fn a_packs_order_reference_is_kept() {
    let (_dir, s) = store();
    let z = zone(&s);
    let mut p = pack(&z);
    p.order_ref = Some("{\"issuer\":\"acme\"}".to_owned());
    s.insert_pack(&p, 10).unwrap();
    let mut back = s.pack(&z.id, &p.id).unwrap().unwrap();
    assert_eq!(back.order_ref, p.order_ref);
    back.order_ref = None;
    s.update_pack(&mut back, &[]).unwrap();
    assert_eq!(s.pack(&z.id, &p.id).unwrap().unwrap().order_ref, None);
}

#[test]
fn engine_errors_become_kinds_a_caller_can_match() {
    use rusqlite::ffi;
    let failure = |code| rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
    assert!(matches!(
        StoreError::from(failure(ffi::SQLITE_BUSY)),
        StoreError::Busy(_)
    ));
    assert!(matches!(
        StoreError::from(failure(ffi::SQLITE_LOCKED)),
        StoreError::Busy(_)
    ));
    for code in [
        ffi::SQLITE_CANTOPEN,
        ffi::SQLITE_READONLY,
        ffi::SQLITE_FULL,
        ffi::SQLITE_IOERR,
    ] {
        assert!(matches!(
            StoreError::from(failure(code)),
            StoreError::Unavailable(_)
        ));
    }
    assert!(matches!(
        StoreError::from(failure(ffi::SQLITE_CORRUPT)),
        StoreError::Corrupt(_)
    ));
    assert!(matches!(
        StoreError::from(failure(ffi::SQLITE_CONSTRAINT_UNIQUE)),
        StoreError::Duplicate(_)
    ));
    assert!(matches!(
        StoreError::from(rusqlite::Error::InvalidQuery),
        StoreError::Database(_)
    ));
}

#[test]
fn a_key_taken_under_a_unique_index_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY); INSERT INTO t VALUES ('a');")
        .unwrap();
    let taken = conn.execute("INSERT INTO t VALUES ('a')", []).unwrap_err();
    assert!(matches!(StoreError::from(taken), StoreError::Duplicate(_)));
}

/// A lifecycle batch writing an event learns the webhook endpoints; an endpoint added by
/// this process or by another one makes them unknown again, so the next transition makes
/// its events and the next batch reads them.
#[test]
fn webhook_endpoints_are_known_from_a_batch_until_they_may_have_changed() {
    use crate::store::{OutboxEvent, WebhookEndpoint};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.db");
    let s = SqliteStore::open(&path).unwrap();
    let z = zone(&s);
    let p = pack(&z);
    s.insert_pack(&p, 10).unwrap();
    let endpoint = |id: &str| WebhookEndpoint {
        id: id.into(),
        url: "https://hooks.example.net/".into(),
        zone_id: None,
        events: vec![],
        secret: "whsec_x".into(),
        created_at: 1,
        allow_private: false,
    };
    let sent = std::cell::Cell::new(0);
    let event = || OutboxEvent {
        id: {
            sent.set(sent.get() + 1);
            format!("msg_{}", sent.get())
        },
        kind: "pack.validated".into(),
        zone_id: z.id.as_str().into(),
        pack_id: p.id.as_str().into(),
        occurred_at: 1,
        payload: String::from("{}").into(),
        dedupe: None,
    };
    let write = |s: &SqliteStore| {
        let mut batch = vec![s.pack(&z.id, &p.id).unwrap().unwrap()];
        s.write_lifecycle_batch("worker-a", &mut batch, &[vec![event()]], &[], &[], &[])
            .unwrap();
    };
    assert!(s.known_webhook_endpoints().is_none(), "nothing read yet");
    write(&s);
    assert_eq!(s.known_webhook_endpoints().as_deref(), Some(&[][..]));

    s.insert_webhook_endpoint(&endpoint("we_1")).unwrap();
    assert!(
        s.known_webhook_endpoints().is_none(),
        "this process added one"
    );
    write(&s);
    assert_eq!(s.known_webhook_endpoints().unwrap().len(), 1);

    let other = SqliteStore::open(&path).unwrap();
    other.insert_webhook_endpoint(&endpoint("we_2")).unwrap();
    assert!(
        s.known_webhook_endpoints().is_none(),
        "another process added one"
    );
    write(&s);
    assert_eq!(s.known_webhook_endpoints().unwrap().len(), 2);
}

#[test]
fn a_write_waiting_for_the_writer_connection_leaves_its_worker_to_other_tasks() {
    let (_d, s) = store();
    let z = zone(&s);
    // One worker: a task that blocked it in place would stop every other task.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Held as a lifecycle batch holds it.
    let batch = s.inner.writer.lock().unwrap();
    rt.block_on(async {
        let (started, mut writing) = tokio::sync::mpsc::unbounded_channel();
        let write = {
            let (s, p) = (s.clone(), pack(&z));
            tokio::spawn(async move {
                let _ = started.send(());
                s.insert_pack(&p, 10)
            })
        };
        writing.recv().await.unwrap();
        // Time for the write to reach the lock and wait there. The waits here block this
        // thread, not the runtime's: with the worker stuck, its timers would never fire
        // and the test would hang instead of failing.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (answer, answered) = std::sync::mpsc::channel();
        tokio::spawn(async move { answer.send("answered") });
        assert_eq!(
            answered.recv_timeout(std::time::Duration::from_secs(10)),
            Ok("answered"),
            "another task ran while the write waited"
        );
        drop(batch);
        write.await.unwrap().unwrap();
    });
    assert_eq!(s.packs_of_zone(&z.id).unwrap().len(), 1);
}
