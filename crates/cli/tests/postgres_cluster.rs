//! Three `zonecert serve` processes (the built binary) on one PostgreSQL database, the
//! lifecycle on all three, many packs whose TXT records are in the loopback DNS, and one
//! node killed with SIGKILL in the middle of the run (testkit's `PgCluster`;
//! `ZONECERT_SKIP_POSTGRES=1` skips this explicitly, a failure otherwise).
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
use zonecert_server::store::Store;
use zonecert_testkit::{DnsServer, PgCluster, ServeCommand, ServeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");

/// Packs in the run unless `ZONECERT_CLUSTER_PACKS` says otherwise: chosen so that the
/// test stays within about a minute on CI's 2 cores with a debug build (see the README's
/// "Running several nodes").
const DEFAULT_PACKS: usize = 600;
/// Packs per zone (the default quota).
const PER_ZONE: usize = 100;
/// The nodes' lease: a dead node's packs are taken over after at most this long.
const LEASE_SECS: u64 = 4;

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

fn count(cluster: &PgCluster, url: &str, sql: &str) -> usize {
    cluster.query(url, sql).unwrap()[0].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_work_and_take_over_a_killed_ones() {
    let Some(cluster) = PgCluster::for_test() else {
        return;
    };
    let url = cluster.create_database().unwrap();
    let dns = DnsServer::start().await;
    let scratch = tempfile::tempdir().unwrap();
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

    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| scratch.path().join(format!("node{i}")))
        .collect();
    let started = Instant::now();
    let mut nodes: Vec<ServeProcess> = dirs
        .iter()
        .map(|d| start_node(d, &url, &kek, &dns))
        .collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base_url().to_owned()).collect();
    // Requests to the two nodes that stay up, from the start to the end of the run.
    let stop = Arc::new(AtomicBool::new(false));
    let requests = tokio::spawn(send_requests(
        bases[..2].to_vec(),
        token.clone(),
        zones.clone(),
        stop.clone(),
    ));

    // Mid-run: once a third of the packs are active and the third node holds leases,
    // it is killed (SIGKILL: no shutdown, no lease given back).
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
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = count(&cluster, &url, active);
        if done >= n / 3 && !cluster.query(&url, &held_by_victim).unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no third of the packs active with the third node working: {done} active"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes[2].child().kill().unwrap();
    nodes[2].child().wait().unwrap();
    let killed = Instant::now();
    let orphaned: BTreeSet<String> = cluster
        .query(&url, &held_by_victim)
        .unwrap()
        .into_iter()
        .collect();
    eprintln!(
        "killed the third node {:.1} s after the start, holding {} packs ({} active)",
        started.elapsed().as_secs_f64(),
        orphaned.len(),
        count(&cluster, &url, active)
    );
    assert!(!orphaned.is_empty());

    // Its packs are taken over by the others once its leases run out: active within
    // about one lease (plus the time the others need to get to them on a busy machine).
    let ids = orphaned
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    let orphans_active =
        format!("SELECT count(*) FROM packs WHERE state = 'active' AND id IN ({ids})");
    let taken_over = loop {
        if count(&cluster, &url, &orphans_active) == orphaned.len() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(LEASE_SECS * 5),
            "the killed node's packs are not all active {:.1} s after the kill: {:?}",
            killed.elapsed().as_secs_f64(),
            cluster
                .query(&url, &format!("SELECT id, state, lease_owner FROM packs WHERE id IN ({ids}) AND state <> 'active'"))
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "the killed node's {} packs active {:.1} s after the kill (lease {LEASE_SECS} s)",
        orphaned.len(),
        taken_over.as_secs_f64()
    );
    assert!(
        taken_over <= Duration::from_secs(LEASE_SECS * 2),
        "taken over in {taken_over:?}, more than about one lease ({LEASE_SECS} s)"
    );

    // Every pack ends active.
    let deadline = Instant::now() + Duration::from_secs(300);
    while count(&cluster, &url, active) < n {
        assert!(
            Instant::now() < deadline,
            "not all active: {:?}",
            cluster
                .query(&url, "SELECT state, count(*) FROM packs GROUP BY state")
                .unwrap()
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
    let issued = cluster
        .query(
            &url,
            "SELECT e.pack_id, count(*), bool_and(e.payload LIKE '%' || p.cert_id || '%') \
             FROM webhook_events e JOIN packs p ON p.id = e.pack_id \
             WHERE e.kind = 'pack.issued' GROUP BY e.pack_id",
        )
        .unwrap();
    assert_eq!(issued.len(), n, "packs with a recorded issuance");
    let twice: Vec<&String> = issued.iter().filter(|r| !r.ends_with("|1|t")).collect();
    assert!(twice.is_empty(), "issued more than once: {twice:?}");

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
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing: BTreeMap<usize, usize> = (0..2)
            .map(|i| {
                let certs = dirs[i].join("certs");
                let missing = packs
                    .iter()
                    .filter(|p| {
                        zonecert_server::issuance::deployed_chain(&certs, p.id.as_str()).as_ref()
                            != p.certificate.as_ref().map(|c| &c.chain_pem)
                    })
                    .count();
                (i, missing)
            })
            .collect();
        if missing.values().all(|m| *m == 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deploy dirs lack certificates (node -> missing): {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    eprintln!("whole test {:.1} s", began.elapsed().as_secs_f64());
}
