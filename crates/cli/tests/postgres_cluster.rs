//! Three `zonecert serve` processes (the built binary) on one PostgreSQL database, the
//! lifecycle on all three, many packs whose TXT records are in the loopback DNS, and one
//! node killed with SIGKILL in the middle of the run, while it holds claimed work
//! (testkit's `PgCluster`; `ZONECERT_SKIP_POSTGRES=1` skips this explicitly, a failure
//! otherwise). Checked: every pack ends active, issued once (one `pack.issued` each, the
//! key kept for its certificate), the killed node's packs claimed by the others about
//! one lease after the kill and finished within one more lease, every surviving node's deploy directory
//! holding every certificate (the deploy sync), the requests sent to the surviving nodes
//! all through the run answered 2xx, and the killed node, started again, catching up.
//!
//! `ZONECERT_CLUSTER_PACKS` changes the number of packs (default [`DEFAULT_PACKS`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use zonecert_server::clock::{Clock, SystemClock};
use zonecert_server::config::Config;
use zonecert_server::model::{CaChoice, DcvMethod, DcvRecord, Hostname, Pack, PackState};
use zonecert_server::store::{Store, WebhookEndpoint};
use zonecert_testkit::{DnsServer, HttpOrigin, PgCluster, ServeCommand, ServeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");

/// Packs in the run unless `ZONECERT_CLUSTER_PACKS` says otherwise: issue 14's 3,000.
/// With a debug build on a 2-core machine shared with other builds and benchmarks (load
/// 3-4), the whole test takes about a minute (all active 41 s after the nodes started),
/// once the test stopped polling through `psql` and keeping the nodes' directories on a
/// disk that is slow to empty (see [`Db`] and [`scratch_dir`]): 170 s before.
const DEFAULT_PACKS: usize = 3000;
/// Packs per zone (the default quota).
const PER_ZONE: usize = 100;
/// The nodes' lease: a dead node's packs are taken over after at most this long. Short,
/// so the takeover ends well before the run does, but not so short that what is left of
/// the dead node's work after the takeover (a check, an issuance and a deployment per
/// pack, each its own claim) cannot be done within it on a loaded 2-core machine with a
/// debug build: with 4 s it took 4.1-4.7 s after the takeover in 2 of 6 runs at 3,000
/// packs (load 4-8, other helpers' builds and benchmarks beside).
const LEASE_SECS: u64 = 8;
/// How much later than the lease's end the others may claim a dead node's packs: their
/// poll interval (200 ms), and their claim waiting behind the writes of the packs they
/// have in hand (measured before nodes bounded what they hold by their pace: 3.9-4.7 s
/// with 600 packs on a busy 2-core machine, 11 s with 3,000, where each node had a
/// thousand in hand).
const TAKEOVER_SLACK_SECS: u64 = 3;

fn pack_count() -> usize {
    std::env::var("ZONECERT_CLUSTER_PACKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_PACKS)
}

/// A node: `zonecert serve` on the shared database with its own data directory.
fn start_node(dir: &Path, url: &str, kek: &Path, dns: &DnsServer) -> ServeProcess {
    std::fs::create_dir_all(dir).unwrap();
    ServeCommand::new(BIN)
        .data_dir(dir)
        .resolvers([dns.addr()])
        .args([
            "--rate-limit",
            "off",
            "--lease",
            &format!("{LEASE_SECS}s"),
            "--poll-interval",
            "200ms",
            "--deploy-sync",
            "500ms",
            "--lifecycle-cpus",
            "all",
            "--database-pool",
            "8",
        ])
        .env("ZONECERT_DATABASE", url)
        .env("ZONECERT_SECRET_KEY_FILE", kek)
        .stderr_log(dir.with_extension("log"))
        .spawn()
}

/// Stores `n` one-host TXT packs in zones of [`PER_ZONE`] (directly in the database, as
/// an import would) and puts every pack's record in the DNS; returns the zones' ids.
async fn store_packs(store: &Store, dns: &DnsServer, n: usize) -> Vec<String> {
    let now = SystemClock.now();
    let config = Config::new(Path::new("unused"));
    let mut zones = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for z in 0..n.div_ceil(PER_ZONE) {
        let apex = format!("z{z:03}.cluster.test");
        let zone = zonecert_server::admin::create_zone(store, &apex, None, false, now)
            .await
            .unwrap();
        zones.push(zone.id.to_string());
        let mut packs = Vec::new();
        for h in 0..PER_ZONE.min(n - z * PER_ZONE) {
            let host = Hostname::parse(&format!("h{h:03}.{apex}")).unwrap();
            let pack = Pack::order(
                zone.id.clone(),
                vec![host],
                DcvMethod::Txt,
                90,
                CaChoice::LetsEncrypt,
                false,
                &config.dcv_suffix(&zone.id),
                now,
            );
            for host in &pack.hosts {
                let DcvRecord::Txt { name, value } = &host.record else {
                    panic!("not txt: {host:?}");
                };
                dns.set_txt(name, &[value]);
            }
            packs.push(pack);
        }
        let store = store.clone();
        tasks.spawn(async move {
            for pack in packs {
                store.insert_pack(&pack, PER_ZONE as u64).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    zones
}

/// What the requests sent during the run got.
#[derive(Debug, Default)]
struct Answers {
    sent: usize,
    failures: Vec<String>,
}

/// Sends requests to every node in `nodes` until `stop`: the verification view of each
/// zone in turn, a token check, and a zone created and read back (writes too).
async fn send_requests(
    nodes: Vec<String>,
    token: String,
    zones: Vec<String>,
    stop: Arc<AtomicBool>,
) -> Answers {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut answers = Answers::default();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        for (node, base) in nodes.iter().enumerate() {
            let zone = &zones[i % zones.len()];
            let requests = [
                http.get(format!("{base}/zones/{zone}/ssl/verification")),
                http.get(format!("{base}/user/tokens/verify")),
                http.post(format!("{base}/zones"))
                    .json(&serde_json::json!({"name": format!("w{i}-{node}.writes.test")})),
            ];
            for req in requests {
                let sent = req.bearer_auth(&token).send().await;
                answers.sent += 1;
                match sent {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => {
                        let status = r.status();
                        let body = r.text().await.unwrap_or_default();
                        answers.failures.push(format!("{base}: {status} {body}"));
                    }
                    Err(e) => answers.failures.push(format!("{base}: {e}")),
                }
            }
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answers
}

/// The test's own connection to the database, for the queries it polls with (several a
/// second for the whole run): `psql` costs a process, a login through `runuser` and a
/// forked backend per query (about 50 ms and 16 ms of client CPU each, measured on this
/// 2-core machine at load 4), which the nodes then lacked.
struct Db(tokio_postgres::Client);

impl Db {
    async fn connect(url: &str) -> Db {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        Db(client)
    }

    /// The one `bigint` the query answers.
    async fn count(&self, sql: &str) -> usize {
        let n: i64 = self.0.query_one(sql, &[]).await.unwrap().get(0);
        usize::try_from(n).unwrap()
    }

    /// The first column of every row, as text.
    async fn texts(&self, sql: &str) -> Vec<String> {
        self.0
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Every row, each column as text joined by `|` (for messages).
    async fn rows(&self, sql: &str) -> Vec<String> {
        self.0
            .simple_query(sql)
            .await
            .unwrap()
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or(""))
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_work_and_take_over_a_killed_ones() {
    let Some(cluster) = PgCluster::for_test() else {
        return;
    };
    let url = cluster.create_database().unwrap();
    let db = Db::connect(&url).await;
    let dns = DnsServer::start().await;
    let scratch = scratch_dir();
    let kek = scratch.path().join("secret.key");
    zonecert_server::keys::Kek::load_or_create(&kek).unwrap();
    let n = pack_count();
    let began = Instant::now();

    let store = Store::open_url(&url).unwrap();
    let zones = store_packs(&store, &dns, n).await;
    let token = zonecert_server::admin::create_token(
        &store,
        "cluster",
        &[
            "SSL and Certificates Read".to_string(),
            "Zone Write".to_string(),
        ],
        &[],
        SystemClock.now(),
    )
    .await
    .unwrap()
    .secret;
    eprintln!("{n} packs stored in {:.1} s", began.elapsed().as_secs_f64());
    // Issuance events are kept only for an endpoint that wants them (since d8f77b9): a
    // receiver that takes every delivery, so that each pack's `pack.issued` is written
    // with its certificate and counted below (and delivered across the nodes).
    let receiver = HttpOrigin::start().await;
    receiver.set_body("/hooks", 200, "ok");
    store
        .insert_webhook_endpoint(&WebhookEndpoint {
            id: "we_cluster".into(),
            url: format!("http://{}/hooks", receiver.addr()),
            zone_id: None,
            events: vec!["pack.issued".into(), "pack.renewed".into()],
            secret: zonecert_server::webhooks::sign::new_secret(),
            created_at: SystemClock.now(),
            allow_private: true,
        })
        .await
        .unwrap();

    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| scratch.path().join(format!("node{i}")))
        .collect();
    let started = Instant::now();
    // The node to be killed starts first, so that it surely holds work when it dies: the
    // first node to poll claims a batch of up to 512 packs, and with the third started
    // last the other two had claimed all 600 before it polled (seen in CI).
    let mut spawned: Vec<(usize, ServeProcess)> = [2, 0, 1]
        .into_iter()
        .map(|i| (i, start_node(&dirs[i], &url, &kek, &dns)))
        .collect();
    spawned.sort_by_key(|(i, _)| *i);
    let mut nodes: Vec<ServeProcess> = spawned.into_iter().map(|(_, node)| node).collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base_url().to_owned()).collect();
    // Requests to the two nodes that stay up, from the start to the end of the run.
    let stop = Arc::new(AtomicBool::new(false));
    let requests = tokio::spawn(send_requests(
        bases[..2].to_vec(),
        token.clone(),
        zones.clone(),
        stop.clone(),
    ));

    // Mid-run: once the third node has recorded a transition of its own (its log says
    // so), holds claimed work (packs leased to it) and packs are still pending, it is
    // killed (SIGKILL: no shutdown, no lease given back). Leases are given back after
    // each step, but a node holds what it claimed (at least what it runs at once, its
    // check and issuance slots) while it works through it, so that moment comes early in
    // the run.
    let owner = {
        let file = dirs[2].join("node-id");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let id = std::fs::read_to_string(&file).unwrap_or_default();
            if id.trim().len() == 32 {
                break format!("node-{}", id.trim());
            }
            assert!(
                Instant::now() < deadline,
                "no node id in {}",
                file.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let held_by_victim = format!(
        "SELECT id FROM packs WHERE lease_owner = '{owner}' \
         AND lease_until > extract(epoch from now())::bigint ORDER BY id"
    );
    let active = "SELECT count(*) FROM packs WHERE state = 'active'";
    let victim_log = dirs[2].with_extension("log");
    let deadline = Instant::now() + Duration::from_secs(120);
    // Once seen, the log need not be read again (it grows by a line per transition).
    let mut transitioned = false;
    loop {
        transitioned = transitioned
            || std::fs::read_to_string(&victim_log)
                .is_ok_and(|log| log.contains("pack transition"));
        if transitioned && db.count(active).await < n && !db.texts(&held_by_victim).await.is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the third node never recorded a transition while holding claimed work: {} active, \
             its log:\n{}",
            db.count(active).await,
            std::fs::read_to_string(&victim_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes[2].kill_9();
    let killed = Instant::now();
    // Its leases can no longer change (nor run out for a while: it renewed them every
    // third of a lease), so these are the packs it had claimed when it died.
    let orphaned: BTreeSet<String> = db.texts(&held_by_victim).await.into_iter().collect();
    let victim_transitions = std::fs::read_to_string(&victim_log)
        .unwrap_or_default()
        .matches("pack transition")
        .count();
    eprintln!(
        "killed the third node {:.1} s after the start, holding {} packs, after {victim_transitions} \
         transitions of its own ({} active of {n})",
        started.elapsed().as_secs_f64(),
        orphaned.len(),
        db.count(active).await
    );
    assert!(
        !orphaned.is_empty(),
        "the killed node held no claimed work when it died"
    );

    // Its packs are taken over by the others once its leases run out: active within
    // about one lease (plus the time the others need to get to them on a busy machine).
    let ids = orphaned
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    let orphans_active =
        format!("SELECT count(*) FROM packs WHERE state = 'active' AND id IN ({ids})");
    // Taken over: claimed by another node (the lease names it) or done.
    let orphans_taken = format!(
        "SELECT count(*) FROM packs WHERE id IN ({ids}) \
         AND (state = 'active' OR lease_owner IS DISTINCT FROM '{owner}')"
    );
    let mut claimed_again = None;
    let taken_over = loop {
        if claimed_again.is_none() && db.count(&orphans_taken).await == orphaned.len() {
            claimed_again = Some(killed.elapsed());
        }
        if db.count(&orphans_active).await == orphaned.len() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(120),
            "the killed node's packs are not all active {:.1} s after the kill: {:?}",
            killed.elapsed().as_secs_f64(),
            db.rows(&format!(
                "SELECT id, state, lease_owner FROM packs WHERE id IN ({ids}) AND state <> 'active'"
            ))
            .await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let claimed_again = claimed_again.unwrap_or(taken_over);
    eprintln!(
        "the killed node's {} packs claimed by the others {:.1} s and all active {:.1} s \
         after the kill (lease {LEASE_SECS} s)",
        orphaned.len(),
        claimed_again.as_secs_f64(),
        taken_over.as_secs_f64()
    );
    assert!(
        claimed_again <= Duration::from_secs(LEASE_SECS + TAKEOVER_SLACK_SECS),
        "the killed node's packs claimed again {claimed_again:?} after the kill, \
         more than one lease ({LEASE_SECS} s) and {TAKEOVER_SLACK_SECS} s"
    );
    // And finished within one lease of being taken over: no node holds more than it
    // gets through in a fraction of a lease, so they do not queue behind long backlogs.
    assert!(
        taken_over <= claimed_again + Duration::from_secs(LEASE_SECS),
        "the killed node's packs claimed again {claimed_again:?} after the kill but all \
         active only {taken_over:?} after it: more than one lease ({LEASE_SECS} s) later"
    );

    // Every pack ends active.
    let deadline = Instant::now() + Duration::from_secs(300);
    while db.count(active).await < n {
        assert!(
            Instant::now() < deadline,
            "not all active: {:?}",
            db.rows("SELECT state, count(*) FROM packs GROUP BY state")
                .await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_active = started.elapsed();
    eprintln!(
        "all {n} packs active {:.1} s after the nodes started",
        all_active.as_secs_f64()
    );

    // Each pack was issued exactly once: one `pack.issued` in the outbox (written in
    // the transaction that recorded the certificate), for the certificate it has.
    let issued = db
        .rows(
            "SELECT e.pack_id, count(*), bool_and(e.payload LIKE '%' || p.cert_id || '%') \
             FROM webhook_events e JOIN packs p ON p.id = e.pack_id \
             WHERE e.kind = 'pack.issued' GROUP BY e.pack_id",
        )
        .await;
    assert_eq!(issued.len(), n, "packs with a recorded issuance");
    let twice: Vec<&String> = issued.iter().filter(|r| !r.ends_with("|1|t")).collect();
    assert!(twice.is_empty(), "issued more than once: {twice:?}");
    // And no other certificate: no renewal, and the key kept for each pack is that of
    // the certificate it has.
    let issued_events =
        "SELECT count(*) FROM webhook_events WHERE kind IN ('pack.issued', 'pack.renewed')";
    assert_eq!(db.count(issued_events).await, n);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM certificate_keys k JOIN packs p ON p.id = k.pack_id \
             WHERE k.serial = p.cert_id"
        )
        .await,
        n
    );

    // Every surviving node's deploy directory holds every active certificate (the
    // packs the other nodes issued come through the deploy sync).
    let packs: Vec<Pack> = {
        let mut all = Vec::new();
        for zone in &zones {
            let zone = zonecert_server::model::ZoneId::parse(zone).unwrap();
            all.extend(store.packs_of_zone(&zone).await.unwrap());
        }
        all
    };
    assert_eq!(packs.len(), n);
    assert!(packs.iter().all(|p| p.state == PackState::Active));
    wait_for_deploy_dirs(&dirs[..2], &packs).await;
    eprintln!(
        "both surviving deploy dirs complete {:.1} s after the nodes started",
        started.elapsed().as_secs_f64()
    );

    stop.store(true, Ordering::Relaxed);
    let answers = requests.await.unwrap();
    eprintln!(
        "{} requests to the surviving nodes during the run, {} not 2xx",
        answers.sent,
        answers.failures.len()
    );
    assert!(answers.sent > 0);
    assert!(
        answers.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        answers.failures.len(),
        answers.sent,
        &answers.failures[..answers.failures.len().min(5)]
    );

    // The killed node, started again on its data directory, catches up: its deploy
    // directory gets every certificate the others issued after it died.
    let back = Instant::now();
    nodes[2] = start_node(&dirs[2], &url, &kek, &dns);
    wait_for_deploy_dirs(&dirs[2..], &packs).await;
    eprintln!(
        "the killed node, started again, holds every certificate {:.1} s after its start",
        back.elapsed().as_secs_f64()
    );
    // Nothing was issued again meanwhile.
    assert_eq!(db.count(issued_events).await, n);
    // No private key in any node's log (every node issued or deployed keys).
    for dir in &dirs {
        let log = std::fs::read_to_string(dir.with_extension("log")).unwrap();
        assert!(!log.contains("PRIVATE KEY"), "a key in {}", dir.display());
    }
    eprintln!("whole test {:.1} s", began.elapsed().as_secs_f64());
    drop(nodes);
    let removing = Instant::now();
    let place = scratch.path().parent().map(Path::to_owned);
    drop(scratch);
    eprintln!(
        "the nodes' directories removed from {place:?} in {:.1} s",
        removing.elapsed().as_secs_f64()
    );
}

/// Where the nodes' data directories go: tmpfs (`/dev/shm`) when it has room for them,
/// else the usual temporary folder. The three deploy directories end up holding every
/// certificate (a folder and two files each, written and fsynced by the nodes): 9,000
/// folders and 18,000 files at 3,000 packs, which took 75-87 s only to remove on this
/// 2-core machine's ext4 (mounted with `discard`: each freed extent is trimmed), more
/// than the rest of the test. The test is about the nodes, not the disk (PostgreSQL runs
/// with fsync off too).
fn scratch_dir() -> tempfile::TempDir {
    // Free space of /dev/shm in KiB, as `df -P` prints it (fourth column).
    let free_kib = std::process::Command::new("df")
        .args(["-P", "-k", "/dev/shm"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .nth(1)
                .and_then(|line| line.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|kib| kib.parse::<u64>().ok())
        .unwrap_or(0);
    // About 8 KiB a pack per node (two files of a page each, and the folder), and the
    // logs: 1 GiB leaves room to spare at 3,000 packs.
    if free_kib >= 1 << 20
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("zonecert-cluster-")
            .tempdir_in("/dev/shm")
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

/// Waits (a minute at most) until the deploy directory of every node in `dirs` holds the
/// chain of every pack in `packs` as the database records it.
async fn wait_for_deploy_dirs(dirs: &[PathBuf], packs: &[Pack]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing: BTreeMap<String, usize> = dirs
            .iter()
            .map(|dir| {
                let certs = dir.join("certs");
                let missing = packs
                    .iter()
                    .filter(|p| {
                        zonecert_server::issuance::deployed_chain(&certs, p.id.as_str()).as_ref()
                            != p.certificate.as_ref().map(|c| &c.chain_pem)
                    })
                    .count();
                (dir.display().to_string(), missing)
            })
            .collect();
        if missing.values().all(|m| *m == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "deploy dirs lack certificates (node -> missing): {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
