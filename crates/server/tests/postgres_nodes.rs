//! Several nodes on one PostgreSQL database, end to end: real servers in the test's
//! process, each with its own data directory, on one database of a PostgreSQL cluster
//! the test starts (testkit's `PgCluster`; `ZONECERT_SKIP_POSTGRES=1` skips these tests
//! explicitly, a failure otherwise), the testkit's loopback DNS for the DCV checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use zonecert_server::config::Config;
use zonecert_server::model::{DcvRecord, Pack, PackId, PackState, ZoneId};
use zonecert_testkit::{DnsServer, PgCluster, TestServer};

/// A node's settings: the database, the key-encryption key every node shares (next to
/// the hook log), a deploy hook that logs `PACK CHECKSUM-OF-CHAIN` to `hook_log`.
fn node_config(url: String, hook_log: &Path) -> impl FnOnce(&mut Config) + Send + 'static {
    let hook = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!(
            "echo \"$ZONECERT_PACK_ID $(cksum < \"$ZONECERT_CERT_PATH\")\" >> '{}'",
            hook_log.display()
        ),
    ];
    let kek = shared_kek(hook_log.parent().unwrap());
    move |c: &mut Config| {
        c.database = Some(url);
        c.secret_key_file = Some(kek);
        c.deploy_sync = Some(Duration::from_millis(200));
        c.dcv_allow_private_addresses = true;
        c.dcv_timeout = Duration::from_secs(2);
        c.poll_interval = Duration::from_millis(100);
        c.retry_coalesce = Duration::ZERO;
        c.deploy_hook = Some(hook);
    }
}

/// The key-encryption key file of the nodes whose scratch folder is `dir`.
fn shared_kek(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("secret.key");
    zonecert_server::keys::Kek::load_or_create(&path).unwrap();
    path
}

async fn node(dns: &DnsServer, url: &str, hook_log: &Path) -> TestServer {
    TestServer::builder()
        .lifecycle(true)
        .resolvers([dns.addr()])
        .dev_seed(false)
        .config(node_config(url.to_owned(), hook_log))
        .await
}

async fn call(
    node: &TestServer,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = node
        .http()
        .request(method, node.url(path))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Publishes every TXT record of the pack (values at the same name together).
fn publish_txt(dns: &DnsServer, packs: &[Pack]) {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in packs {
        for h in &p.hosts {
            let DcvRecord::Txt { name, value } = &h.record else {
                panic!("not txt: {h:?}");
            };
            by_name.entry(name.clone()).or_default().push(value.clone());
        }
    }
    for (name, values) in by_name {
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        dns.set_txt(&name, &refs);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_issue_each_pack_once() {
    let Some(cluster) = PgCluster::for_test() else {
        return;
    };
    let url = cluster.create_database().unwrap();
    let dns = DnsServer::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let logs = [
        scratch.path().join("a-deployments.log"),
        scratch.path().join("b-deployments.log"),
    ];
    let a = node(&dns, &url, &logs[0]).await;
    let b = node(&dns, &url, &logs[1]).await;
    assert_eq!(a.store().backend(), "postgres");

    // Zone and token made through node A, used through both.
    let zone = zonecert_server::admin::create_zone(a.store(), "example.com", None, false, 1)
        .await
        .unwrap();
    let token = zonecert_server::admin::create_token(
        a.store(),
        "test",
        &["SSL and Certificates Write".to_string()],
        &[],
        1,
    )
    .await
    .unwrap()
    .secret;
    let zone_path = format!("/zones/{}", zone.id.as_str());

    // Packs ordered on either node.
    let mut ids = Vec::new();
    for i in 0..8 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (status, v) = call(
            node,
            &token,
            reqwest::Method::POST,
            &format!("{zone_path}/ssl/certificate_packs/order"),
            Some(
                json!({"type": "advanced", "hosts": ["example.com", format!("h{i}.example.com")],
                "validation_method": "txt", "validity_days": 90,
                "certificate_authority": "google"}),
            ),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        ids.push(PackId::parse(v["result"]["id"].as_str().unwrap()).unwrap());
    }
    // Their records published, a retry through node B makes every host due now.
    let zone_id = ZoneId::parse(zone.id.as_str()).unwrap();
    let packs = b.store().packs_of_zone(&zone_id).await.unwrap();
    assert_eq!(packs.len(), ids.len());
    publish_txt(&dns, &packs);
    let (status, v) = call(
        &b,
        &token,
        reqwest::Method::GET,
        &format!("{zone_path}/ssl/verification?retry=true"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let packs = a.store().packs_of_zone(&zone_id).await.unwrap();
        if packs.iter().all(|p| p.state == PackState::Active) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all active: {:?}",
            packs
                .iter()
                .map(|p| (&p.id, p.state, &p.errors))
                .collect::<Vec<_>>()
        );
        // Hosts whose first check ran before their records existed wait a minute for
        // the next one: ask again (a retry makes a host checked 5 s ago or more due).
        call(
            &a,
            &token,
            reqwest::Method::GET,
            &format!("{zone_path}/ssl/verification?retry=true"),
            None,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both deploy directories catch up (the node that did not issue a pack syncs it
    // from the database); then let any duplicate work show up before counting.
    let kek = zonecert_server::keys::Kek::load(&shared_kek(scratch.path())).unwrap();
    let packs = a.store().packs_of_zone(&zone_id).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !packs.iter().all(|p| {
        [a.data_dir(), b.data_dir()].iter().all(|dir| {
            zonecert_server::issuance::deployed_chain(&dir.join("certs"), p.id.as_str()).as_ref()
                == p.certificate.as_ref().map(|c| &c.chain_pem)
        })
    }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deploy dirs incomplete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Each pack issued once (one certificate), deployed once on each node, each node's
    // files the database's chain and its key (sealed there, not in the clear).
    let mut by_node = [0, 0];
    for (n, log) in logs.iter().enumerate() {
        let log = std::fs::read_to_string(log).unwrap();
        let mut deployed: Vec<&str> = log.lines().map(|l| l.split_once(' ').unwrap().0).collect();
        deployed.sort();
        let mut expected: Vec<&str> = ids.iter().map(PackId::as_str).collect();
        expected.sort();
        assert_eq!(deployed, expected, "node {n}: one deployment per pack");
    }
    let checksums = |log: &Path| -> BTreeMap<String, String> {
        std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .map(|l| {
                let (p, c) = l.split_once(' ').unwrap();
                (p.to_owned(), c.to_owned())
            })
            .collect()
    };
    assert_eq!(
        checksums(&logs[0]),
        checksums(&logs[1]),
        "one certificate per pack"
    );
    for p in &packs {
        let chain = &p.certificate.as_ref().expect("issued").chain_pem;
        let key = a
            .store()
            .certificate_key(&p.id)
            .await
            .unwrap()
            .expect("key kept");
        assert_eq!(key.serial, p.certificate.as_ref().unwrap().id);
        assert!(!String::from_utf8_lossy(&key.sealed).contains("PRIVATE KEY"));
        let exported = zonecert_server::keys::export(b.store(), &kek, &p.id)
            .await
            .unwrap();
        assert_eq!(&exported.chain_pem, chain);
        for (n, dir) in [a.data_dir(), b.data_dir()].iter().enumerate() {
            let files = dir.join("certs").join(p.id.as_str());
            assert_eq!(
                &std::fs::read_to_string(files.join("fullchain.pem")).unwrap(),
                chain
            );
            assert_eq!(
                std::fs::read_to_string(files.join("privkey.pem")).unwrap(),
                exported.key_pem
            );
            by_node[n] += 1;
        }
    }
    eprintln!("packs in the deploy dirs of node A, B: {by_node:?}");

    // A pack deleted through node A leaves both deploy directories: A's at once, B's by
    // its deploy sync (the database no longer holds the pack).
    let gone = &packs[0].id;
    let (status, v) = call(
        &a,
        &token,
        reqwest::Method::DELETE,
        &format!("{zone_path}/ssl/certificate_packs/{}", gone.as_str()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while [a.data_dir(), b.data_dir()]
        .iter()
        .any(|dir| dir.join("certs").join(gone.as_str()).exists())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deleted pack's folder is still in a deploy dir"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The others stay.
    for p in &packs[1..] {
        for dir in [a.data_dir(), b.data_dir()] {
            assert!(dir.join("certs").join(p.id.as_str()).exists());
        }
    }

    // A renewal recorded in the database (a new certificate and its sealed key, as the
    // issuing node writes them) reaches both deploy directories through their sync.
    let mut renewed = a.store().pack_by_id(&packs[1].id).await.unwrap().unwrap();
    let hosts: Vec<String> = renewed
        .hosts
        .iter()
        .map(|h| h.hostname.as_str().to_owned())
        .collect();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(hosts)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut certificate = renewed.certificate.clone().expect("issued");
    certificate.id = "7e1e7ed".into();
    certificate.chain_pem = cert.pem();
    renewed.certificate = Some(certificate);
    a.store()
        .put_certificate_key(
            &renewed.id,
            "7e1e7ed",
            &kek.seal(renewed.id.as_str(), key.serialize_pem().as_bytes()),
        )
        .await
        .unwrap();
    a.store().update_pack(&mut renewed).await.unwrap();
    let files = |dir: &Path, name: &str| {
        std::fs::read_to_string(dir.join("certs").join(renewed.id.as_str()).join(name))
            .unwrap_or_default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while [a.data_dir(), b.data_dir()].iter().any(|dir| {
        files(dir, "fullchain.pem") != cert.pem()
            || files(dir, "privkey.pem") != key.serialize_pem()
    }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate is not in both deploy dirs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[track_caller]
fn refused((status, v): (u16, Value)) {
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["errors"][0]["code"], 10000, "{v}");
}

/// A token whose requests node `n` answered (so its read cache may hold it).
async fn known_token(
    cluster_node: &TestServer,
    on: &TestServer,
    name: &str,
    path: &str,
) -> (String, String) {
    let made = zonecert_server::admin::create_token(
        cluster_node.store(),
        name,
        &["SSL and Certificates Read".to_string()],
        &[],
        1,
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let (status, v) = call(on, &made.secret, reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{v}");
    }
    (made.token.id, made.secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_node_is_refused_by_the_other_at_once() {
    let Some(cluster) = PgCluster::for_test() else {
        return;
    };
    let url = cluster.create_database().unwrap();
    let dns = DnsServer::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let hook_log = scratch.path().join("deployments.log");
    let a = node(&dns, &url, &hook_log).await;
    let b = node(&dns, &url, &hook_log).await;
    let zone = zonecert_server::admin::create_zone(a.store(), "example.com", None, false, 1)
        .await
        .unwrap();
    let path = format!("/zones/{}/ssl/verification", zone.id.as_str());

    // Node B's read cache is in use: a token deleted behind zonecert's back (no change
    // notice) is still accepted there.
    let (quiet_id, quiet) = known_token(&a, &b, "quiet", &path).await;
    cluster
        .psql(&url, &format!("DELETE FROM tokens WHERE id = '{quiet_id}'"))
        .unwrap();
    let (status, v) = call(&b, &quiet, reqwest::Method::GET, &path, None).await;
    assert_eq!(status, 200, "served from B's cache: {v}");

    // Revoked through node A: the next request on B, started after A's commit, is
    // refused (and B forgot every credential, the quietly deleted one too).
    let (id, secret) = known_token(&a, &b, "ci", &path).await;
    assert!(a.store().delete_token(&id).await.unwrap());
    refused(call(&b, &secret, reqwest::Method::GET, &path, None).await);
    refused(call(&b, &quiet, reqwest::Method::GET, &path, None).await);

    // The notices' connection cut: B reads past its cache until it listens again, so a
    // change it cannot hear of is never served stale.
    let (cut_id, cut) = known_token(&a, &b, "cut", &path).await;
    cluster
        .psql(
            &url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'zonecert-listener'",
        )
        .unwrap();
    cluster
        .psql(&url, &format!("DELETE FROM tokens WHERE id = '{cut_id}'"))
        .unwrap();
    refused(call(&b, &cut, reqwest::Method::GET, &path, None).await);

    // B listens again by itself (both nodes' listeners are back), and hears A again.
    let listeners = "SELECT 'n=' || count(*) FROM pg_stat_activity \
                     WHERE application_name = 'zonecert-listener'";
    let by = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cluster.psql(&url, listeners).unwrap().contains("n=2") {
        assert!(
            std::time::Instant::now() < by,
            "B's listener did not come back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (id, secret) = known_token(&a, &b, "again", &path).await;
    assert!(a.store().delete_token(&id).await.unwrap());
    refused(call(&b, &secret, reqwest::Method::GET, &path, None).await);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
