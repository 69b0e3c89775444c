//! `zonecert serve` and the administration commands on PostgreSQL: the built binary
//! against a cluster the test starts (testkit's `PgCluster`; `ZONECERT_SKIP_POSTGRES=1`
//! skips this explicitly, a failure otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::io::BufRead;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use zonecert_testkit::{PgCluster, ServeCommand};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");

/// Runs `zonecert ARGS` with the database in `ZONECERT_DATABASE`, as README.md shows.
fn zonecert(url: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ZONECERT_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .env("ZONECERT_DATABASE", url)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_administration_share_a_postgres_database() {
    let Some(cluster) = PgCluster::for_test() else {
        return;
    };
    let url = cluster.create_database().unwrap();
    // Administration never sets up a database by accident.
    let refused = zonecert(&url, &["zone", "create", "example.org"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no zonecert schema"), "{stderr}");
    // sslmode=require against a server without TLS: refused, saying so (the TLS modes
    // themselves: the server crate's postgres_tls test).
    let tls = zonecert(
        &format!("{url}?sslmode=require"),
        &["zone", "create", "example.org"],
    );
    assert!(!tls.status.success());
    let stderr = String::from_utf8_lossy(&tls.stderr);
    assert!(
        stderr.contains("server does not support TLS") && stderr.contains("sslmode=require"),
        "{stderr}"
    );

    // PostgreSQL needs the key-encryption key every node shares: never made up.
    let scratch = tempfile::tempdir().unwrap();
    let no_key = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(scratch.path().join("data"))
        .env("ZONECERT_DATABASE", &url)
        .env_remove("ZONECERT_SECRET_KEY_FILE")
        .output()
        .unwrap();
    assert!(!no_key.status.success());
    let stderr = String::from_utf8_lossy(&no_key.stderr);
    assert!(stderr.contains("--secret-key-file"), "{stderr}");
    assert!(!scratch.path().join("data").join("secret.key").exists());
    let kek = scratch.path().join("secret.key");
    zonecert_server::keys::Kek::load_or_create(&kek).unwrap();

    let mut serve = ServeCommand::new(BIN)
        .env("ZONECERT_DATABASE", &url)
        .env("ZONECERT_SECRET_KEY_FILE", kek.to_str().unwrap())
        .keep_stdout()
        .spawn();
    // The hint for a database without credentials names the variable, never the URL
    // (it holds the password).
    let mut hint = String::new();
    for _ in 0..3 {
        serve.stdout().read_line(&mut hint).unwrap();
    }
    assert!(hint.contains("--database \"$ZONECERT_DATABASE\""), "{hint}");
    assert!(!hint.contains(&url), "{hint}");

    let zone = zonecert(&url, &["zone", "create", "example.org", "--output", "json"]);
    assert!(
        zone.status.success(),
        "{}",
        String::from_utf8_lossy(&zone.stderr)
    );
    let zone: Value = serde_json::from_slice(&zone.stdout).unwrap();
    let token = zonecert(
        &url,
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--permission",
            "Zone Read",
            "--output",
            "json",
        ],
    );
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token: Value = serde_json::from_slice(&token.stdout).unwrap();
    // The server sees at once what the commands wrote.
    let resp = reqwest::Client::new()
        .get(format!("{}/zones", serve.base_url()))
        .bearer_auth(token["secret"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"][0]["id"], zone["id"], "{body}");
    assert_eq!(body["result"][0]["name"], "example.org", "{body}");
}

/// Runs `zonecert ARGS` with only the `ZONECERT_*` variables given.
fn zonecert_with(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ZONECERT_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args).envs(env.iter().copied()).output().unwrap()
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The database name at the end of a cluster URL.
fn database_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_answer_503_while_postgres_is_down_and_recover_with_nothing_lost() {
    let Some(cluster) = PgCluster::for_test() else {
        return;
    };
    let url = cluster.create_database().unwrap();
    // Commits are durable here (the test clusters run without synchronous commit, which
    // a crash may cost the last commits of; production keeps PostgreSQL's default).
    cluster
        .psql(
            &url,
            &format!(
                "ALTER DATABASE {} SET synchronous_commit = on",
                database_name(&url)
            ),
        )
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let kek = scratch.path().join("secret.key");
    zonecert_server::keys::Kek::load_or_create(&kek).unwrap();
    let store = zonecert_server::store::Store::open_url(&url).unwrap();
    let token = zonecert_server::admin::create_token(
        &store,
        "ops",
        &["Zone Read".to_string(), "Zone Write".to_string()],
        &[],
        1,
    )
    .await
    .unwrap()
    .secret;
    // Lifecycle work across the outage too: packs whose records are in the DNS, each
    // answer held back 1.5 s (the resolver gives up on a query after 2.5 s), so their
    // first checks are still in flight when PostgreSQL stops.
    let dns = zonecert_testkit::DnsServer::start().await;
    let packs = ordered_packs(&store, &dns, "work.restart.test", 30).await;
    for pack in &packs {
        for host in &pack.hosts {
            if let zonecert_server::model::DcvRecord::Txt { name, .. } = &host.record {
                dns.set_delay(name, Duration::from_millis(1500));
            }
        }
    }
    let active = "SELECT count(*) FROM packs WHERE state = 'active'";
    drop(store);
    let serve = ServeCommand::new(BIN)
        .resolvers([dns.addr()])
        .args(["--rate-limit", "off", "--poll-interval", "200ms"])
        .env("ZONECERT_DATABASE", &url)
        .env("ZONECERT_SECRET_KEY_FILE", kek.to_str().unwrap())
        .stderr_log(scratch.path().join("serve.log"))
        .spawn();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base = serve.base_url().to_owned();
    // A zone created: (status, seconds the answer took, body).
    let create = |i: usize| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            let at = Instant::now();
            let resp = http
                .post(format!("{base}/zones"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"name": format!("z{i}.restart.test")}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let retry_after = resp.headers().get("retry-after").cloned();
            let body: Value = resp.json().await.unwrap();
            (status, at.elapsed(), body, retry_after)
        }
    };
    let mut acknowledged = Vec::new();
    let mut i = 0;
    for _ in 0..20 {
        let (status, _, body, _) = create(i).await;
        assert_eq!(status, 200, "{body}");
        acknowledged.push(format!("z{i}.restart.test"));
        i += 1;
    }

    let active_before = cluster.query(&url, active).unwrap();
    cluster.stop().unwrap();
    let down = Instant::now();
    let mut refused = 0;
    while down.elapsed() < Duration::from_secs(4) {
        let (status, took, body, retry_after) = create(i).await;
        i += 1;
        // Never a hang, never a 500: at once, the envelope, a reason, when to retry.
        assert!(took < Duration::from_secs(5), "took {took:?}");
        if status == 200 {
            // Only possible for a request that reached the database before it stopped.
            assert!(refused == 0, "a 200 while PostgreSQL is down: {body}");
            acknowledged.push(format!("z{}.restart.test", i - 1));
            continue;
        }
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["success"], false, "{body}");
        assert_eq!(body["result"], Value::Null, "{body}");
        assert_eq!(body["errors"][0]["code"], 1013, "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("database is unavailable"),
            "{body}"
        );
        assert!(retry_after.is_some());
        refused += 1;
        // Reads too (the token's check reads past the cache while its notices are off).
        let read = http
            .get(format!("{base}/zones"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused > 5, "{refused} refusals");

    cluster.start_again().unwrap();
    let up = Instant::now();
    // Back by itself: no restart of zonecert.
    let recovered = loop {
        let (status, took, body, _) = create(i).await;
        i += 1;
        assert!(took < Duration::from_secs(5), "took {took:?}");
        if status == 200 {
            acknowledged.push(format!("z{}.restart.test", i - 1));
            break up.elapsed();
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            up.elapsed() < Duration::from_secs(20),
            "not recovered: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "PostgreSQL down {:.1} s: {refused} writes answered 503; recovered {:.2} s after it was back",
        up.duration_since(down).as_secs_f64(),
        recovered.as_secs_f64()
    );
    for _ in 0..5 {
        let (status, _, body, _) = create(i).await;
        assert_eq!(status, 200, "{body}");
        acknowledged.push(format!("z{i}.restart.test"));
        i += 1;
    }
    // Every acknowledged zone is there, through the API and in the database.
    assert!(acknowledged.len() <= 50, "one page holds them");
    let listed: Value = http
        .get(format!("{base}/zones?per_page=50"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: std::collections::BTreeSet<&str> = listed["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["name"].as_str().unwrap())
        .collect();
    for name in &acknowledged {
        assert!(names.contains(name.as_str()), "{name} lost: {listed}");
    }
    let stored = cluster
        .query(&url, "SELECT name FROM zones ORDER BY name")
        .unwrap();
    for name in &acknowledged {
        assert!(stored.contains(name), "{name} not stored");
    }
    let ready = http
        .get(format!("http://{}/readyz", serve.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // The lifecycle carried on by itself: every pack issued and deployed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.query(&url, active).unwrap() != [packs.len().to_string()] {
        assert!(
            Instant::now() < deadline,
            "not all active after the restart: {:?}, {:?}; the node's log:\n{}",
            cluster
                .query(&url, "SELECT state, count(*) FROM packs GROUP BY state")
                .unwrap(),
            cluster
                .query(
                    &url,
                    "SELECT h.attempts, h.next_due_at - extract(epoch from now())::bigint, \
                     h.reason, p.lease_owner FROM pack_hosts h JOIN packs p ON p.id = h.pack_id LIMIT 3"
                )
                .unwrap(),
            std::fs::read_to_string(scratch.path().join("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let store = zonecert_server::store::Store::open_url(&url).unwrap();
    let certs = serve.data_dir().join("certs");
    for pack in &packs {
        let stored = store.pack_by_id(&pack.id).await.unwrap().unwrap();
        let chain = stored.certificate.map(|c| c.chain_pem);
        assert!(chain.is_some(), "{} has no certificate", pack.id);
        assert_eq!(
            zonecert_server::issuance::deployed_chain(&certs, pack.id.as_str()),
            chain,
            "{} deployed",
            pack.id
        );
    }
    eprintln!(
        "{} packs ({} active when PostgreSQL stopped) all active and deployed after the restart",
        packs.len(),
        active_before[0]
    );
}

/// Orders `n` one-host TXT packs in a new zone `apex` (directly in the database, as an
/// import would) and puts their records in `dns`.
async fn ordered_packs(
    store: &zonecert_server::store::Store,
    dns: &zonecert_testkit::DnsServer,
    apex: &str,
    n: usize,
) -> Vec<zonecert_server::model::Pack> {
    use zonecert_server::model::{CaChoice, DcvMethod, DcvRecord, Hostname, Pack};
    let config = zonecert_server::config::Config::new(std::path::Path::new("unused"));
    let zone = zonecert_server::admin::create_zone(store, apex, None, false, 1)
        .await
        .unwrap();
    let mut packs = Vec::new();
    for h in 0..n {
        let host = Hostname::parse(&format!("h{h:03}.{apex}")).unwrap();
        let pack = Pack::order(
            zone.id.clone(),
            vec![host],
            DcvMethod::Txt,
            90,
            CaChoice::LetsEncrypt,
            false,
            &config.dcv_suffix(&zone.id),
            zonecert_server::clock::Clock::now(&zonecert_server::clock::SystemClock),
        );
        for host in &pack.hosts {
            if let DcvRecord::Txt { name, value } = &host.record {
                dns.set_txt(name, &[value]);
            }
        }
        store.insert_pack(&pack, 100).await.unwrap();
        packs.push(pack);
    }
    packs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_copy_moves_a_sqlite_installation_to_postgres_with_the_same_answers() {
    let Some(cluster) = PgCluster::for_test() else {
        return;
    };
    let dns = zonecert_testkit::DnsServer::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("single");
    let dir = data.to_str().unwrap();
    let env_dir = [("ZONECERT_DATA_DIR", dir)];
    assert!(zonecert_with(&env_dir, &["init"]).status.success());
    let admin = ok_json(&zonecert_with(
        &env_dir,
        &[
            "token",
            "create",
            "--name",
            "admin",
            "--permission",
            "Zone Read",
            "--permission",
            "Zone Write",
            "--permission",
            "SSL and Certificates Read",
            "--permission",
            "SSL and Certificates Write",
            "--output",
            "json",
        ],
    ));
    let token = admin["secret"].as_str().unwrap().to_owned();

    // The single node on SQLite: zones, packs (issued, their keys kept), tokens and a
    // webhook, made through the API and the commands.
    // The webhook first: only the events an endpoint wants are written, and the copy
    // must carry events and their deliveries.
    assert!(
        zonecert_with(
            &env_dir,
            &[
                "webhook",
                "add",
                "http://127.0.0.1:9/hook",
                "--allow-private"
            ],
        )
        .status
        .success()
    );
    let single = ServeCommand::new(BIN)
        .data_dir(&data)
        .resolvers([dns.addr()])
        .args(["--rate-limit", "off", "--poll-interval", "100ms"])
        .stderr_log(scratch.path().join("single.log"))
        .spawn();
    let http = reqwest::Client::new();
    let call = |base: String, method: reqwest::Method, path: String, body: Option<Value>| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let mut req = http
                .request(method, format!("{base}{path}"))
                .bearer_auth(&token);
            if let Some(body) = body {
                req = req.json(&body);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let base = single.base_url().to_owned();
    let mut zones = Vec::new();
    let mut packs = Vec::new();
    for name in ["one.example", "two.example"] {
        let (status, zone) = call(
            base.clone(),
            reqwest::Method::POST,
            "/zones".into(),
            Some(serde_json::json!({ "name": name })),
        )
        .await;
        assert_eq!(status, 200, "{zone}");
        let zone = zone["result"]["id"].as_str().unwrap().to_owned();
        let mut records: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for hosts in [
            vec![name.to_string()],
            vec![name.to_string(), format!("www.{name}")],
        ] {
            let (status, pack) = call(
                base.clone(),
                reqwest::Method::POST,
                format!("/zones/{zone}/ssl/certificate_packs/order"),
                Some(serde_json::json!({"type": "advanced", "hosts": hosts,
                    "validation_method": "txt", "validity_days": 90,
                    "certificate_authority": "lets_encrypt"})),
            )
            .await;
            assert_eq!(status, 200, "{pack}");
            for record in pack["result"]["validation_records"].as_array().unwrap() {
                records
                    .entry(record["txt_name"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(record["txt_value"].as_str().unwrap().to_owned());
            }
            packs.push((
                zone.clone(),
                pack["result"]["id"].as_str().unwrap().to_owned(),
            ));
        }
        for (name, values) in &records {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            dns.set_txt(name, &values);
        }
        zones.push(zone);
    }
    // One pack stays pending (its record never published): copied as it is.
    let (status, pending) = call(
        base.clone(),
        reqwest::Method::POST,
        format!("/zones/{}/ssl/certificate_packs/order", zones[1]),
        Some(
            serde_json::json!({"type": "advanced", "hosts": ["two.example", "*.two.example"],
            "validation_method": "txt", "validity_days": 90,
            "certificate_authority": "google"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{pending}");
    let deadline = Instant::now() + Duration::from_secs(60);
    for zone in &zones {
        loop {
            let (_, view) = call(
                base.clone(),
                reqwest::Method::GET,
                format!("/zones/{zone}/ssl/certificate_packs"),
                None,
            )
            .await;
            let active = view["result"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["status"] == "active")
                .count();
            if active == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "not active: {view}");
            let _ = call(
                base.clone(),
                reqwest::Method::GET,
                format!("/zones/{zone}/ssl/verification?retry=true"),
                None,
            )
            .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let reader = ok_json(&zonecert_with(
        &env_dir,
        &[
            "token",
            "create",
            "--name",
            "reader",
            "--permission",
            "SSL and Certificates Read",
            "--zone",
            &zones[0],
            "--output",
            "json",
        ],
    ))["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    // What the single node answers, and what its commands print.
    let answers = |base: String| {
        let zones = zones.clone();
        let packs = packs.clone();
        let reader = reader.clone();
        let http = http.clone();
        async move {
            let mut seen = Vec::new();
            seen.push(call(base.clone(), reqwest::Method::GET, "/zones".into(), None).await);
            for zone in &zones {
                for path in [
                    format!("/zones/{zone}"),
                    format!("/zones/{zone}/ssl/certificate_packs"),
                    format!("/zones/{zone}/ssl/verification"),
                ] {
                    seen.push(call(base.clone(), reqwest::Method::GET, path, None).await);
                }
            }
            for (zone, pack) in &packs {
                seen.push(
                    call(
                        base.clone(),
                        reqwest::Method::GET,
                        format!("/zones/{zone}/ssl/certificate_packs/{pack}"),
                        None,
                    )
                    .await,
                );
            }
            let resp = http
                .get(format!("{base}/zones/{}/ssl/certificate_packs", zones[0]))
                .bearer_auth(&reader)
                .send()
                .await
                .unwrap();
            seen.push((resp.status().as_u16(), resp.json().await.unwrap()));
            let resp = http
                .get(format!("{base}/zones/{}/ssl/certificate_packs", zones[1]))
                .bearer_auth(&reader)
                .send()
                .await
                .unwrap();
            seen.push((resp.status().as_u16(), resp.json().await.unwrap()));
            seen
        }
    };
    let before = answers(base.clone()).await;
    assert!(
        before.iter().take(before.len() - 1).all(|(s, _)| *s == 200),
        "{before:?}"
    );
    assert_eq!(before.last().unwrap().0, 403, "the reader's scope");
    let listings = |env: &[(&str, &str)]| {
        ["zone", "token", "webhook"]
            .map(|what| ok_json(&zonecert_with(env, &[what, "list", "--output", "json"])))
    };
    let lists_before = listings(&env_dir);
    let exported_before = zonecert_with(&env_dir, &["certs", "export", &packs[0].1]);
    assert!(exported_before.status.success());
    drop(single);

    // A target that is not empty is refused, and left as it was.
    let foreign = cluster.create_database().unwrap();
    cluster
        .psql(&foreign, "CREATE TABLE theirs (x int)")
        .unwrap();
    let refused = zonecert_with(&[], &["db", "copy", "--from", dir, "--to", &foreign]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not empty") && stderr.contains("theirs"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&foreign),
        "the URL (and its password) is not shown: {stderr}"
    );
    assert_eq!(
        cluster
            .query(
                &foreign,
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            )
            .unwrap(),
        ["1"]
    );

    // The copy: counts and a checksum per table.
    let url = cluster.create_database().unwrap();
    let copied = zonecert_with(
        &[("ZONECERT_DATABASE", &url)],
        &["db", "copy", "--from", dir],
    );
    let stdout = String::from_utf8_lossy(&copied.stdout).into_owned();
    assert!(
        copied.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let rows: std::collections::BTreeMap<&str, u64> = stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (table, rows, sum) = (words.next()?, words.next()?, words.next()?);
            (sum.len() == 64).then(|| (table, rows.parse().unwrap()))
        })
        .collect();
    assert_eq!(rows["zones"], 2, "{stdout}");
    assert_eq!(rows["packs"], 5, "{stdout}");
    assert_eq!(rows["pack_hosts"], 8, "{stdout}");
    assert_eq!(rows["certificate_keys"], 4, "{stdout}");
    assert_eq!(rows["tokens"], 2, "{stdout}");
    assert_eq!(rows["webhook_endpoints"], 1, "{stdout}");
    assert!(rows["webhook_events"] >= 8, "{stdout}");
    assert!(rows.contains_key("revocations"), "{stdout}");
    assert_eq!(rows.len(), 11, "every table: {stdout}");
    // Analyzed at once, so the first reads are planned with statistics (without them a
    // zone's view was a scan of every pack's hosts until autovacuum came by).
    let unanalyzed = cluster
        .query(
            &url,
            "SELECT relname FROM pg_stat_user_tables \
             WHERE last_analyze IS NULL AND last_autoanalyze IS NULL ORDER BY 1",
        )
        .unwrap();
    let unanalyzed: Vec<&String> = unanalyzed
        .iter()
        .filter(|t| rows.contains_key(t.as_str()))
        .collect();
    assert!(unanalyzed.is_empty(), "not analyzed: {unanalyzed:?}");
    // Copying again is refused: the target holds zonecert's data now.
    let again = zonecert_with(
        &[("ZONECERT_DATABASE", &url)],
        &["db", "copy", "--from", dir],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // A node on PostgreSQL (its own data directory, the single node's key file) answers
    // the same, and the commands print the same.
    let kek = data.join("secret.key");
    let node = ServeCommand::new(BIN)
        .args(["--rate-limit", "off", "--lifecycle", "false"])
        .env("ZONECERT_DATABASE", &url)
        .env("ZONECERT_SECRET_KEY_FILE", kek.to_str().unwrap())
        .stderr_log(scratch.path().join("node.log"))
        .spawn();
    let after = answers(node.base_url().to_owned()).await;
    assert_eq!(before, after);
    let env_pg = [("ZONECERT_DATABASE", url.as_str())];
    assert_eq!(lists_before, listings(&env_pg));
    let exported_after = zonecert_with(
        &[
            ("ZONECERT_DATABASE", url.as_str()),
            ("ZONECERT_SECRET_KEY_FILE", kek.to_str().unwrap()),
        ],
        &["certs", "export", &packs[0].1],
    );
    assert!(
        exported_after.status.success(),
        "{}",
        String::from_utf8_lossy(&exported_after.stderr)
    );
    assert_eq!(exported_before.stdout, exported_after.stdout);
    // Rotating the key-encryption key on PostgreSQL: every kept key resealed under the
    // new file; the old one opens none of them any more, the new one gives the same key.
    let new_kek = scratch.path().join("secret.key.new");
    let rotated = zonecert_with(
        &[
            ("ZONECERT_DATABASE", url.as_str()),
            ("ZONECERT_SECRET_KEY_FILE", kek.to_str().unwrap()),
        ],
        &[
            "certs",
            "rotate-key",
            "--new-key-file",
            new_kek.to_str().unwrap(),
        ],
    );
    let said = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success()
            && said.starts_with("resealed 4 ")
            && said.contains("(0 already were"),
        "{said}{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let with_old = zonecert_with(
        &[
            ("ZONECERT_DATABASE", url.as_str()),
            ("ZONECERT_SECRET_KEY_FILE", kek.to_str().unwrap()),
        ],
        &["certs", "export", &packs[0].1],
    );
    let why = String::from_utf8_lossy(&with_old.stderr);
    assert!(
        !with_old.status.success() && why.contains("sealed under key-encryption key"),
        "{why}"
    );
    let with_new = zonecert_with(
        &[
            ("ZONECERT_DATABASE", url.as_str()),
            ("ZONECERT_SECRET_KEY_FILE", new_kek.to_str().unwrap()),
        ],
        &["certs", "export", &packs[0].1],
    );
    assert_eq!(exported_before.stdout, with_new.stdout);
    // New rows continue after the copied ones (the sequences moved past them).
    let (status, more) = call(
        node.base_url().to_owned(),
        reqwest::Method::POST,
        format!("/zones/{}/ssl/certificate_packs/order", zones[0]),
        Some(
            serde_json::json!({"type": "advanced", "hosts": ["one.example", "new.one.example"],
            "validation_method": "txt", "validity_days": 90,
            "certificate_authority": "google"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{more}");
    let (_, listed) = call(
        node.base_url().to_owned(),
        reqwest::Method::GET,
        format!("/zones/{}/ssl/certificate_packs?status=all", zones[0]),
        None,
    )
    .await;
    assert_eq!(listed["result"].as_array().unwrap().len(), 3, "{listed}");
}

/// Runs `serve` (built by `builder`, on `data`) expecting it to refuse to start; returns
/// its stderr. A server that starts instead (it prints where it listens) is stopped and
/// the test fails.
fn serve_refused(builder: ServeCommand, data: &std::path::Path) -> String {
    let mut child = builder
        .command_in(data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    if first.starts_with("listening on") {
        child.kill().unwrap();
        child.wait().unwrap();
        panic!("the server started: {first}");
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Migrating as a step of its own: `serve --migrate false` leaves the schema alone, so a
/// database without it, or of the previous version, stops the start with the command
/// to run; `zonecert db migrate` brings it to this version's, and the same node then
/// starts. On PostgreSQL and on SQLite's data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_migrate_is_a_step_of_its_own_when_serve_does_not_migrate() {
    let Some(cluster) = PgCluster::for_test() else {
        return;
    };
    let url = cluster.create_database().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let kek = scratch.path().join("secret.key");
    zonecert_server::keys::Kek::load_or_create(&kek).unwrap();
    let node = scratch.path().join("node");
    std::fs::create_dir_all(&node).unwrap();
    let serve = || {
        ServeCommand::new(BIN)
            .args([
                "--rate-limit",
                "off",
                "--lifecycle",
                "false",
                "--migrate",
                "false",
            ])
            .env("ZONECERT_DATABASE", &url)
            .env("ZONECERT_SECRET_KEY_FILE", &kek)
    };
    let versions = "SELECT count(*) FROM information_schema.tables \
                    WHERE table_name = 'zonecert_schema_versions'";

    // An empty database: refused, and left empty.
    let why = serve_refused(serve(), &node);
    assert!(
        why.contains("no zonecert schema") && why.contains("zonecert db migrate"),
        "{why}"
    );
    assert_eq!(cluster.query(&url, versions).unwrap(), ["0"]);
    let migrate = |env: &[(&str, &str)]| {
        let out = zonecert_with(env, &["db", "migrate"]);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said
    };
    let said = migrate(&[("ZONECERT_DATABASE", url.as_str())]);
    assert!(
        said.contains("at version 8, this zonecert's (postgres)"),
        "{said}"
    );

    // The previous version (7: before each certificate named its ACME directory).
    cluster
        .psql(
            &url,
            "ALTER TABLE packs DROP COLUMN cert_acme_directory; \
             ALTER TABLE revocations DROP COLUMN directory; \
             DELETE FROM zonecert_schema_versions WHERE version > 7",
        )
        .unwrap();
    let why = serve_refused(serve(), &node);
    assert!(
        why.contains("version 7 is older than this zonecert's (8)")
            && why.contains("zonecert db migrate"),
        "{why}"
    );
    let max = "SELECT max(version) FROM zonecert_schema_versions";
    assert_eq!(cluster.query(&url, max).unwrap(), ["7"], "left as it was");
    migrate(&[("ZONECERT_DATABASE", url.as_str())]);
    assert_eq!(cluster.query(&url, max).unwrap(), ["8"]);
    assert_eq!(
        cluster
            .query(
                &url,
                "SELECT count(*) FROM information_schema.columns \
                 WHERE table_name = 'packs' AND column_name = 'cert_acme_directory'"
            )
            .unwrap(),
        ["1"]
    );
    let running = serve().data_dir(&node).spawn();
    let ready = reqwest::get(format!("http://{}/readyz", running.addr()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    drop(running);

    // SQLite: a data directory of the previous version (8).
    let data = scratch.path().join("single");
    let dir = data.to_str().unwrap();
    assert!(
        zonecert_with(&[("ZONECERT_DATA_DIR", dir)], &["init"])
            .status
            .success()
    );
    {
        let db = rusqlite::Connection::open(data.join("zonecert.db")).unwrap();
        db.execute_batch(
            "ALTER TABLE packs DROP COLUMN cert_acme_directory; \
             ALTER TABLE revocations DROP COLUMN directory; \
             UPDATE meta SET value = '8' WHERE key = 'schema_version';",
        )
        .unwrap();
    }
    let single = || {
        ServeCommand::new(BIN).args([
            "--rate-limit",
            "off",
            "--lifecycle",
            "false",
            "--migrate",
            "false",
        ])
    };
    let why = serve_refused(single(), &data);
    assert!(
        why.contains("version 8 is older than this zonecert's (9)")
            && why.contains("zonecert db migrate"),
        "{why}"
    );
    let said = migrate(&[("ZONECERT_DATA_DIR", dir)]);
    assert!(
        said.contains("at version 9, this zonecert's (sqlite)"),
        "{said}"
    );
    let running = single().data_dir(&data).spawn();
    let ready = reqwest::get(format!("http://{}/readyz", running.addr()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}
