//! The README's walk-through with the real binary, as a user runs it: `zonecert serve --dev`
//! checking against a loopback DNS server, `ssl packs order`, `ssl verification watch`
//! showing the record to create, the record created, the pack active, the certificate on
//! disk chaining to the CA `zonecert ca export` prints. And the same lifecycle surviving a
//! `kill -9` in the middle of validation.
//!
//! The server is always given `--dcv-resolvers` pointing at the test's DNS server: it never
//! asks the system's resolvers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use zonecert_server::model::{DcvRecord, Pack, PackState, ZoneId};
use zonecert_server::store::Store;
use zonecert_testkit::{DnsServer, ServeCommand, ServeProcess, line_reader};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");

/// `zonecert serve --dev` on port 0 with its DCV checks sent to `dns`; SIGKILLed when dropped.
struct RealServer {
    process: ServeProcess,
    base_url: String,
    token: String,
    data_dir: PathBuf,
    log: PathBuf,
}

impl RealServer {
    fn start(data_dir: &Path, dns: &DnsServer, extra: &[&str]) -> RealServer {
        let log = data_dir.with_extension(format!("{}.log", std::process::id()));
        let process = ServeCommand::new(BIN)
            .dev()
            .data_dir(data_dir)
            .args(["--rate-limit", "off"])
            .resolvers([dns.addr()])
            .args(extra)
            .env(
                "ZONECERT_LOG",
                std::env::var("TEST_ZONECERT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stderr_log(&log)
            .spawn();
        RealServer {
            base_url: process.base_url().to_owned(),
            token: process.token().to_owned(),
            process,
            data_dir: data_dir.to_owned(),
            log,
        }
    }

    /// `zonecert ARGS` with the client environment pointing at this server.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("CLOUDFLARE_API_KEY")
            .env_remove("CLOUDFLARE_EMAIL")
            .env_remove("CLOUDFLARE_ZONE_ID")
            .env_remove("ZONECERT_DATA_DIR")
            .env("CLOUDFLARE_BASE_URL", &self.base_url)
            .env("CLOUDFLARE_API_TOKEN", &self.token);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "zonecert {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        out
    }

    /// `zonecert zone create NAME` on the server's database, as an operator would.
    fn create_zone(&self, name: &str) -> String {
        let data_dir = self.data_dir.to_str().unwrap();
        let out = self.run(&[
            "zone",
            "create",
            name,
            "--data-dir",
            data_dir,
            "--output",
            "json",
        ]);
        let zone: Value = serde_json::from_slice(&out.stdout).unwrap();
        zone["id"].as_str().unwrap().to_owned()
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`.
    fn kill(mut self) {
        self.process.kill_9();
    }
}

/// The records `watch` tells the user to create in one output block: TXT name -> value,
/// and the reasons it gives for the last failed checks.
#[derive(Debug, Default)]
struct WatchBlock {
    records: BTreeMap<String, String>,
    reasons: Vec<String>,
}

fn parse_watch_block(lines: &[String]) -> WatchBlock {
    let mut block = WatchBlock::default();
    let mut pending_name: Option<String> = None;
    for line in lines {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("create DNS record: ") {
            pending_name = rest.strip_suffix(" TXT").map(str::to_owned);
        } else if let Some(value) = line.strip_prefix("value: ") {
            if let Some(name) = pending_name.take() {
                block.records.insert(name, value.to_owned());
            }
        } else if let Some(reason) = line.strip_prefix("last check: ") {
            block.reasons.push(reason.to_owned());
        }
    }
    block
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pem_blocks(pem: &str) -> Vec<Vec<u8>> {
    let (mut blocks, mut rest) = (Vec::new(), pem.as_bytes());
    while let Ok((remaining, block)) = x509_parser::pem::parse_x509_pem(rest) {
        blocks.push(block.contents);
        rest = remaining;
        if rest.iter().all(u8::is_ascii_whitespace) {
            break;
        }
    }
    blocks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_watch_add_the_record_and_find_the_certificate() {
    let dns = DnsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = RealServer::start(&data_dir, &dns, &["--poll-interval", "1"]);
    let zone = server.create_zone("walk.test");

    // Order, as the README shows.
    let out = server.run(&[
        "ssl",
        "packs",
        "order",
        "--zone-id",
        &zone,
        "--host",
        "walk.test",
        "--host",
        "www.walk.test",
        "--method",
        "txt",
        "--output",
        "json",
    ]);
    let ordered: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pack_id = ordered["id"].as_str().unwrap().to_owned();

    // Watch, until it shows what to create and why the last check failed.
    let mut watch = server
        .command(&[
            "ssl",
            "verification",
            "watch",
            "--zone-id",
            &zone,
            "--timeout",
            "20s",
            "--interval",
            "1s",
            "--recheck",
            "1s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_reader(&mut watch);
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("watch never showed both records with a reason:\n{seen:#?}"),
        }
        // Each progress block starts with the elapsed time in brackets.
        let start = seen.iter().rposition(|l| l.starts_with('[')).unwrap_or(0);
        let block = parse_watch_block(&seen[start..]);
        if block.records.len() == 2 && block.reasons.len() == 2 {
            break block;
        }
    };
    for reason in &shown.reasons {
        assert!(
            reason.starts_with("no TXT record at _acme-challenge.") && reason.contains("NXDOMAIN"),
            "the reason of the failed check: {reason:?}\n{seen:#?}"
        );
    }

    // What watch shows is exactly what the server checks for.
    let store = Store::open_sqlite(&data_dir).unwrap();
    let zone_id = ZoneId::parse(&zone).unwrap();
    let packs = store.packs_of_zone(&zone_id).await.unwrap();
    let [pack] = packs.as_slice() else {
        panic!("one pack in the zone: {packs:?}")
    };
    let expected: BTreeMap<String, String> = pack
        .hosts
        .iter()
        .map(|h| match &h.record {
            DcvRecord::Txt { name, value } => (name.clone(), value.clone()),
            other => panic!("a txt pack has TXT records: {other:?}"),
        })
        .collect();
    assert_eq!(shown.records, expected);
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        ["_acme-challenge.walk.test", "_acme-challenge.www.walk.test"]
    );

    // Create the records, as the user copies them from watch's output.
    for (name, value) in &shown.records {
        dns.set_txt(name, &[value]);
    }
    let status = wait_exit(&mut watch, Duration::from_secs(20));
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
        seen.push(line);
    }
    let mut stderr = String::new();
    if let Some(mut err) = watch.stderr.take() {
        std::io::Read::read_to_string(&mut err, &mut stderr).unwrap();
    }
    assert!(
        status.success(),
        "watch: {status}\n{seen:#?}\n{stderr}\n{}",
        server.server_log()
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("all 1 certificate packs are active"),
        "{seen:#?}"
    );

    // The pack says active and carries its certificate.
    let out = server.run(&[
        "ssl",
        "packs",
        "get",
        "--zone-id",
        &zone,
        "--pack-id",
        &pack_id,
        "--output",
        "json",
    ]);
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["status"], "active", "{got:#}");
    assert_eq!(
        got["certificates"].as_array().map(Vec::len),
        Some(1),
        "{got:#}"
    );

    // The certificate and key are deployed.
    let deployed = data_dir.join("certs").join(&pack_id);
    let fullchain = std::fs::read_to_string(deployed.join("fullchain.pem")).unwrap();
    let key_meta = std::fs::metadata(deployed.join("privkey.pem")).unwrap();
    assert_eq!(key_meta.permissions().mode() & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(deployed.join("privkey.pem"))
            .unwrap()
            .contains("PRIVATE KEY")
    );

    // The database keeps the key too, sealed under the data directory's key-encryption
    // key (made on first start, 0600): `certs export` prints chain and key as deployed.
    let dir_arg = data_dir.to_str().unwrap();
    let kek_meta = std::fs::metadata(data_dir.join("secret.key")).unwrap();
    assert_eq!(kek_meta.permissions().mode() & 0o777, 0o600);
    let key = std::fs::read_to_string(deployed.join("privkey.pem")).unwrap();
    let out = server.run(&["certs", "export", &pack_id, "--data-dir", dir_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n{}\n", fullchain.trim_end(), key.trim_end())
    );
    // A new key-encryption key: every key resealed (this pack's and the dev pack's); the
    // old one no longer opens them.
    let new_kek = data_dir.join("secret.key.new");
    let out = server.run(&[
        "certs",
        "rotate-key",
        "--new-key-file",
        new_kek.to_str().unwrap(),
        "--data-dir",
        dir_arg,
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && said.starts_with("resealed ")
            && said.contains("(0 already were, 0 changed"),
        "{said}"
    );
    let old = server
        .command(&["certs", "export", &pack_id, "--data-dir", dir_arg])
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&old.stderr);
    assert!(
        !old.status.success() && why.contains("sealed under key-encryption key"),
        "{why}"
    );
    let new = server.run(&[
        "certs",
        "export",
        &pack_id,
        "--data-dir",
        dir_arg,
        "--secret-key-file",
        new_kek.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&new.stdout).ends_with(&format!("{}\n", key.trim_end())));

    // ... and the leaf chains to the CA `zonecert ca export` prints, for the ordered hosts.
    let out = server.run(&["ca", "export", "--data-dir", data_dir.to_str().unwrap()]);
    let ca_pem = String::from_utf8(out.stdout).unwrap();
    let ca_der = pem_blocks(&ca_pem);
    assert_eq!(ca_der.len(), 1, "one root certificate: {ca_pem}");
    let (_, ca) = X509Certificate::from_der(&ca_der[0]).unwrap();
    assert!(ca.is_ca());
    let chain = pem_blocks(&fullchain);
    assert!(chain.len() >= 2, "leaf and CA: {fullchain}");
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    leaf.verify_signature(Some(ca.public_key()))
        .expect("the leaf is signed by the exported root");
    assert_eq!(leaf.issuer(), ca.subject());
    assert_eq!(
        chain.last().unwrap(),
        &ca_der[0],
        "the chain ends in the root"
    );
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let mut names: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(*d),
            _ => None,
        })
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["walk.test", "www.walk.test"]);
    assert_eq!(
        format!("{:x}", leaf.serial).trim_start_matches('0'),
        got["certificates"][0]["id"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase()
            .trim_start_matches('0'),
        "the pack reports the deployed certificate"
    );
}

/// Every host's attempt counter, by (pack, host).
fn attempts(packs: &[Pack]) -> BTreeMap<(String, String), u32> {
    packs
        .iter()
        .flat_map(|p| {
            p.hosts
                .iter()
                .map(|h| ((p.id.to_string(), h.hostname.to_string()), h.check.attempts))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_validation_loses_no_check() {
    const LEASE: &[&str] = &["--lease", "2", "--poll-interval", "1"];
    let dns = DnsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = RealServer::start(&data_dir, &dns, LEASE);
    let zone = server.create_zone("crash.test");
    let zone_id = ZoneId::parse(&zone).unwrap();
    let http = reqwest::Client::new();
    for host in ["a.crash.test", "b.crash.test", "c.crash.test"] {
        let resp = http
            .post(format!(
                "{}/zones/{zone}/ssl/certificate_packs/order",
                server.base_url
            ))
            .bearer_auth(&server.token)
            .json(&json!({"type": "advanced", "hosts": ["crash.test", host],
                "validation_method": "txt", "validity_days": 90,
                "certificate_authority": "lets_encrypt"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    // The first checks run at once and fail: no record yet.
    let store = Store::open_sqlite(&data_dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let packs = store.packs_of_zone(&zone_id).await.unwrap();
        let counts = attempts(&packs);
        if counts.len() == 6 && counts.values().all(|n| *n >= 1) {
            break counts;
        }
        assert!(Instant::now() < deadline, "first checks: {packs:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let packs = store.packs_of_zone(&zone_id).await.unwrap();
    let names: Vec<String> = packs
        .iter()
        .flat_map(|p| &p.hosts)
        .map(|h| match &h.record {
            DcvRecord::Txt { name, .. } => name.clone(),
            other => panic!("txt records: {other:?}"),
        })
        .collect();

    // The hosts' checks so far were the lifecycle's own (no retry asked for them), so
    // retry=true makes every host due at once.
    // Every answer now takes 3 s; retry=true makes every host due and the server's worker
    // claims the packs (a 2 s lease) and starts checking. It is killed mid-check.
    for name in &names {
        dns.set_delay(name, Duration::from_secs(3));
    }
    let queries_before = dns.query_count();
    let retry = tokio::spawn({
        let (http, base, token) = (http.clone(), server.base_url.clone(), server.token.clone());
        async move {
            let _ = http
                .get(format!("{base}/zones/{zone}/ssl/verification?retry=true"))
                .bearer_auth(token)
                .send()
                .await;
        }
    });
    // The resolver sends one query per distinct name (the apex's name is shared by the
    // three packs), so the checks are in flight once each name was asked for.
    let mut distinct = names.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while dns.query_count() < queries_before + distinct.len() as u64 {
        assert!(Instant::now() < deadline, "the rechecks never reached DNS");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = server.process.id();
    server.kill();
    let _ = retry.await;
    let at_kill = attempts(&store.packs_of_zone(&zone_id).await.unwrap());
    assert_eq!(
        at_kill, first,
        "the checks in flight at the kill wrote nothing (pid {pid})"
    );

    // Restart on the same data; the records are there now, answered at once.
    for p in &packs {
        for h in &p.hosts {
            let DcvRecord::Txt { name, .. } = &h.record else {
                unreachable!()
            };
            dns.set_delay(name, Duration::ZERO);
        }
    }
    let mut values: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for h in packs.iter().flat_map(|p| &p.hosts) {
        if let DcvRecord::Txt { name, value } = &h.record {
            values.entry(name).or_default().push(value);
        }
    }
    for (name, values) in &values {
        dns.set_txt(name, values);
    }
    let restarted = RealServer::start(&data_dir, &dns, LEASE);

    // Nobody asks for a retry: the restarted server is the same node (its identity is
    // in the data directory), so it takes back the killed server's claims at once rather
    // than after their lease (another server's leases are respected: the lifecycle
    // suite's crashed-server test). Counters only ever grow.
    let mut last = at_kill.clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let packs = store.packs_of_zone(&zone_id).await.unwrap();
        let now = attempts(&packs);
        for (key, n) in &now {
            assert!(
                *n >= last[key],
                "attempts of {key:?} went back from {} to {n}",
                last[key]
            );
        }
        last = now;
        if packs.iter().all(|p| p.state == PackState::Active) {
            for (key, n) in &last {
                assert!(
                    *n > at_kill[key],
                    "{key:?} was checked again after the restart"
                );
            }
            for p in &packs {
                assert!(p.hosts.iter().all(|h| h.check.verified == Some(true)));
                assert!(p.certificate.is_some());
                assert!(
                    data_dir
                        .join("certs")
                        .join(p.id.as_str())
                        .join("fullchain.pem")
                        .is_file()
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every pack became active after the restart: {:#?}\n{}",
            packs
                .iter()
                .map(|p| (p.id.to_string(), p.state, p.errors.clone()))
                .collect::<Vec<_>>(),
            restarted.server_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pack whose hosts include `host`, read from the database.
async fn pack_with(store: &Store, zone: &ZoneId, host: &str) -> Pack {
    let packs = store.packs_of_zone(zone).await.unwrap();
    packs
        .into_iter()
        .find(|p| p.hosts.iter().any(|h| h.hostname.as_str() == host))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_takes_back_its_packs_at_once() {
    // A lease far longer than the test's bound: a pack active after the restart was taken
    // back by the restarted node, not claimed after its lease ran out.
    const LONG_LEASE: &[&str] = &["--lease", "600", "--poll-interval", "1"];
    let dns = DnsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    // The hook holds the deployment of hold.test (and so its lease) until killed.
    let mark = dir.path().join("hook.pid");
    let hook = dir.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncase \"$ZONECERT_HOSTS\" in *hold.test*) echo $$ > {}.tmp; mv {}.tmp {}; exec sleep 300;; esac\n",
            mark.display(),
            mark.display(),
            mark.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut args = LONG_LEASE.to_vec();
    let hook_arg = hook.to_str().unwrap();
    args.extend(["--deploy-hook", hook_arg]);
    let server = RealServer::start(&data_dir, &dns, &args);
    let zone = server.create_zone("hold.test");
    let zone_id = ZoneId::parse(&zone).unwrap();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!(
            "{}/zones/{zone}/ssl/certificate_packs/order",
            server.base_url
        ))
        .bearer_auth(&server.token)
        .json(&json!({"type": "advanced", "hosts": ["hold.test"],
            "validation_method": "txt", "validity_days": 90,
            "certificate_authority": "lets_encrypt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let store = Store::open_sqlite(&data_dir).unwrap();
    let pack = pack_with(&store, &zone_id, "hold.test").await;
    let DcvRecord::Txt { name, value } = &pack.hosts[0].record else {
        panic!("a txt record: {pack:?}")
    };
    dns.set_txt(name, &[value]);
    let verification = format!(
        "{}/zones/{zone}/ssl/verification?retry=true",
        server.base_url
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mark.exists() {
        assert!(
            Instant::now() < deadline,
            "the hook never ran: {}",
            server.server_log()
        );
        // Retried as a client would: retry=true checks a host again only once its last
        // check is 5 s old.
        http.get(&verification)
            .bearer_auth(&server.token)
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // kill -9 in the middle of the deployment; the hook goes too.
    server.kill();
    let hook_pid = std::fs::read_to_string(&mark).unwrap();
    let _ = Command::new("kill").args(["-9", hook_pid.trim()]).status();
    let held = pack_with(&store, &zone_id, "hold.test").await;
    assert_eq!(held.state, PackState::PendingDeployment);

    let server = RealServer::start(&data_dir, &dns, LONG_LEASE);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pack = pack_with(&store, &zone_id, "hold.test").await;
        if pack.state == PackState::Active {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after the restart (its lease is 600 s): {}",
            pack.state.as_str(),
            server.server_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
