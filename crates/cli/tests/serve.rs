//! `zonecert serve` as a user runs it: configuration precedence (flags > `ZONECERT_*` >
//! TOML file > defaults), graceful shutdown on SIGTERM, and the admin commands.
#![allow(clippy::unwrap_used)] // test harness: a failed setup should panic loudly

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use zonecert_testkit::{ServeCommand, ServeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");

/// Starts the server with extra args and environment, returns it and its base URL.
fn serve(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (ServeProcess, String) {
    let mut command = ServeCommand::new(BIN).data_dir(data_dir).args(args);
    for (k, v) in env {
        command = command.env(k, v);
    }
    let server = command.spawn();
    let base = server.base_url().to_owned();
    (server, base)
}

fn admin(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--output", "json"])
        .output()
        .unwrap()
}

fn admin_json(data_dir: &Path, args: &[&str]) -> Value {
    let out = admin(data_dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn quota(base: &str, token: &str, zone: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/zones/{zone}/ssl/certificate_packs/quota"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn stop(mut server: ServeProcess) {
    server.kill_9();
}

#[tokio::test]
async fn flags_beat_environment_beat_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(init.status.success());
    let zone = admin_json(&data, &["zone", "create", "precedence.example"]);
    let zone = zone["id"].as_str().unwrap().to_owned();
    let token = admin_json(
        &data,
        &[
            "token",
            "create",
            "--name",
            "t",
            "--permission",
            "SSL and Certificates Read",
            "--zone",
            &zone,
        ],
    );
    let token = token["secret"].as_str().unwrap().to_owned();
    let file = dir.path().join("zonecert.toml");
    std::fs::write(&file, "quota_advanced = 5\nrate_limit = \"off\"\n").unwrap();
    let config = file.to_str().unwrap();

    let allocated = |v: Value| v["result"]["advanced"]["allocated"].as_u64().unwrap();
    let (child, base) = serve(&data, &["--config", config], &[]);
    assert_eq!(
        allocated(quota(&base, &token, &zone).await),
        5,
        "from the file"
    );
    stop(child);
    let (child, base) = serve(
        &data,
        &["--config", config],
        &[("ZONECERT_QUOTA_ADVANCED", "7")],
    );
    assert_eq!(
        allocated(quota(&base, &token, &zone).await),
        7,
        "the environment beats the file"
    );
    stop(child);
    let (child, base) = serve(
        &data,
        &["--config", config, "--quota-advanced", "9"],
        &[("ZONECERT_QUOTA_ADVANCED", "7")],
    );
    assert_eq!(
        allocated(quota(&base, &token, &zone).await),
        9,
        "a flag beats both"
    );
    stop(child);
    let (child, base) = serve(&data, &[], &[]);
    assert_eq!(
        allocated(quota(&base, &token, &zone).await),
        100,
        "the default"
    );
    stop(child);

    std::fs::write(&file, "quota = 5\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config,
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an unknown key in the file is an error"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("quota"));
}

#[tokio::test]
async fn sigterm_stops_the_server_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, base) = serve(dir.path(), &[], &[]);
    let health = base.replace("/client/v4", "/healthz");
    assert_eq!(reqwest::get(&health).await.unwrap().status(), 200);
    let kill = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let started = Instant::now();
    loop {
        if let Some(status) = server.child().try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the server did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn admin_commands_manage_zones_users_and_tokens_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (child, base) = serve(data, &[], &[]);
    let user = admin_json(data, &["user", "create", "ops@admin.example"]);
    let key = user["key"].as_str().unwrap();
    assert_eq!(key.len(), 37);
    let zone = admin_json(data, &["zone", "create", "admin.example"]);
    let zone_id = zone["id"].as_str().unwrap();
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{base}/zones/{zone_id}/ssl/verification"))
        .header("X-Auth-Email", "ops@admin.example")
        .header("X-Auth-Key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "a user created while the server runs can call it"
    );

    let token = admin_json(
        data,
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--permission",
            "SSL and Certificates Read",
        ],
    );
    let (id, secret) = (
        token["id"].as_str().unwrap(),
        token["secret"].as_str().unwrap(),
    );
    let listed = admin_json(data, &["token", "list"]);
    assert_eq!(listed[0]["id"], id);
    assert!(
        !listed.to_string().contains(secret),
        "secrets are never listed"
    );
    let verify = |secret: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            http.get(format!("{base}/user/tokens/verify"))
                .bearer_auth(secret)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(verify(secret.to_owned()).await, 200);
    admin_json(data, &["token", "revoke", id]);
    assert_eq!(
        verify(secret.to_owned()).await,
        403,
        "a revoked token stops working at once"
    );

    let bad = admin(
        data,
        &[
            "token",
            "create",
            "--name",
            "x",
            "--permission",
            "Everything",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("SSL and Certificates Read"),
        "lists the known groups"
    );
    let dup = admin(data, &["zone", "create", "admin.example"]);
    assert!(!dup.status.success());
    // The server keeps the zone's view and the user in memory between requests; a
    // change by another process (this CLI) must still show in the very next request.
    let view = |key: String| {
        let http = http.clone();
        let url = format!("{base}/zones/{zone_id}/ssl/verification");
        async move {
            http.get(url)
                .header("X-Auth-Email", "ops@admin.example")
                .header("X-Auth-Key", key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(view(key.to_owned()).await, 200);
    assert_eq!(view(key.to_owned()).await, 200);
    admin_json(data, &["zone", "delete", zone_id]);
    assert_eq!(
        view(key.to_owned()).await,
        404,
        "a zone deleted by another process is gone at once"
    );
    assert_eq!(admin_json(data, &["zone", "list"]), serde_json::json!([]));
    let gone = admin(data, &["user", "delete", "ops@admin.example"]);
    assert!(gone.status.success());
    assert_eq!(
        view(key.to_owned()).await,
        403,
        "a user deleted by another process is refused at once"
    );
    stop(child);
}

#[test]
fn a_lifecycle_that_cannot_start_stops_the_server_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // A CA whose files are not a CA: the server must refuse it, never replace it.
    std::fs::create_dir_all(data.join("ca")).unwrap();
    std::fs::write(data.join("ca/ca.pem"), "not a certificate").unwrap();
    std::fs::write(data.join("ca/ca-key.pem"), "not a key").unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--lifecycle", "true"])
        .args(["--dcv-resolvers", "127.0.0.1:9", "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("the server kept running without its lifecycle");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "exit status {status}");
    assert!(stderr.contains("ca.pem"), "names the bad file: {stderr}");
    assert_eq!(
        std::fs::read_to_string(data.join("ca/ca.pem")).unwrap(),
        "not a certificate",
        "the operator's file is left alone"
    );
}

/// The CPUs a thread may run on, from `/proc/PID/task/TID/status`.
fn allowed_cpus(task: &Path) -> String {
    let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// The CPUs of a list as `Cpus_allowed_list` gives it (`0-2,5`).
fn cpu_list(list: &str) -> Vec<usize> {
    list.split(',')
        .filter(|p| !p.is_empty())
        .flat_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            a.trim().parse::<usize>().unwrap()..=b.trim().parse::<usize>().unwrap()
        })
        .collect()
}

/// `serve FLAG LIST` stops before anything starts, saying `says`, for each case: lists
/// the kernel could never honour.
fn refuses_cpu_lists(dir: &Path, flag: &str, cases: &[(&str, &str)]) {
    for (list, says) in cases {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", flag, list, "--data-dir"])
            .arg(dir.join("refused"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {list} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{flag} {list}: {stderr}");
    }
}

/// Starts the server with its lifecycle and `FLAG LIST`, waits for the lifecycle's store
/// thread, and gives each thread's name and CPUs, with the server still running.
fn threads_with(
    dir: &Path,
    flag: &str,
    list: &str,
) -> (Vec<(String, Vec<usize>)>, ServeProcess, String) {
    let (child, base) = serve(
        dir,
        &[
            "--lifecycle",
            "true",
            flag,
            list,
            "--dcv-resolvers",
            "127.0.0.1:9",
        ],
        &[],
    );
    let tasks = PathBuf::from(format!("/proc/{}/task", child.id()));
    // The lifecycle starts beside the serving: wait for its store thread.
    let deadline = Instant::now() + Duration::from_secs(10);
    let threads = loop {
        let threads: Vec<(String, Vec<usize>)> = std::fs::read_dir(&tasks)
            .unwrap()
            .filter_map(Result::ok)
            .map(|t| {
                let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                (comm.trim().to_owned(), cpu_list(&allowed_cpus(&t.path())))
            })
            .collect();
        if threads.iter().any(|(name, _)| name == "zonecert-lc-sto") || Instant::now() > deadline {
            break threads;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (threads, child, base)
}

/// Asserts that every thread whose name starts with each kind runs on that kind's CPUs.
fn assert_placed(threads: &[(String, Vec<usize>)], expected: &[(&str, Vec<usize>)]) {
    for (kind, cpus) in expected {
        let found: Vec<&Vec<usize>> = threads
            .iter()
            .filter(|(n, _)| n.starts_with(kind))
            .map(|(_, c)| c)
            .collect();
        assert!(!found.is_empty(), "no {kind} thread among {threads:?}");
        assert!(
            found.iter().all(|c| *c == cpus),
            "{kind} on {found:?}, not {cpus:?}"
        );
    }
}

#[test]
fn lifecycle_threads_run_on_their_cpus_and_requests_on_all() {
    let dir = tempfile::tempdir().unwrap();
    refuses_cpu_lists(
        dir.path(),
        "--lifecycle-cpus",
        &[("x", "CPU list"), ("1000", "none of the lifecycle CPUs")],
    );
    let ours = cpu_list(&allowed_cpus(Path::new("/proc/self")));
    if ours.len() < 2 {
        eprintln!("one CPU ({ours:?}): nothing to keep apart");
        return;
    }
    // The last CPU of the test's own list, as a list of one.
    let last = ours[ours.len() - 1];
    let (threads, child, _base) = threads_with(dir.path(), "--lifecycle-cpus", &last.to_string());
    stop(child);
    assert_placed(
        &threads,
        &[
            ("zonecert-lifecy", vec![last]),
            ("zonecert-lc-sto", vec![last]),
            ("zonecert-ckpt", vec![last]),
            ("zonecert-webhoo", vec![last]),
            ("tokio-rt-worker", ours.clone()),
        ],
    );
}

#[test]
fn request_threads_run_on_their_cpus_apart_from_the_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    refuses_cpu_lists(
        dir.path(),
        "--request-cpus",
        &[
            ("x", "CPU list"),
            ("auto", "CPU list"),
            ("1000", "none of the request CPUs"),
        ],
    );
    let ours = cpu_list(&allowed_cpus(Path::new("/proc/self")));
    if ours.len() < 2 {
        eprintln!("one CPU ({ours:?}): nothing to keep apart");
        return;
    }
    // Requests on the first CPU; the lifecycle's `auto` (every CPU but the first)
    // resolves against all of the process's CPUs, not against the requests' one.
    let first = ours[0];
    let (threads, child, base) = threads_with(dir.path(), "--request-cpus", &first.to_string());
    // The confined request threads still serve.
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches("/client/v4")
        .to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut conn, b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut conn, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    stop(child);
    assert_placed(
        &threads,
        &[
            ("tokio-rt-worker", vec![first]),
            ("zonecert-lifecy", ours[1..].to_vec()),
            ("zonecert-lc-sto", ours[1..].to_vec()),
            ("zonecert-ckpt", ours[1..].to_vec()),
            ("zonecert-webhoo", ours[1..].to_vec()),
        ],
    );
}

/// The settings README.md's configuration table documents (`--flag` names).
fn documented_flags() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `--"))
        .map(|l| l.split('`').next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_config_file_takes_every_documented_key_by_the_flags_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = dir.path().join("elsewhere/zonecert.db");
    let certs = dir.path().join("certs");
    let file = dir.path().join("zonecert.toml");
    // A root the ACME client trusts besides the platform's: any certificate will do.
    let acme_root = dir.path().join("acme-root.pem");
    let root_key = rcgen::KeyPair::generate().unwrap();
    let root = rcgen::CertificateParams::new(vec!["root.test".to_owned()])
        .unwrap()
        .self_signed(&root_key)
        .unwrap();
    std::fs::write(&acme_root, root.pem()).unwrap();
    // One value for every documented key, in the forms README.md names: durations in
    // human form, lists as an array or a comma string.
    let keys = [
        ("listen", "\"127.0.0.1:0\"".to_owned()),
        ("data_dir", format!("{:?}", data.to_str().unwrap())),
        ("database", format!("\"sqlite://{}\"", db.to_str().unwrap())),
        ("database_pool", "8".to_owned()),
        ("migrate", "true".to_owned()),
        (
            "secret_key_file",
            format!("{:?}", dir.path().join("kek").to_str().unwrap()),
        ),
        ("dev", "false".to_owned()),
        ("rate_limit", "\"600/60\"".to_owned()),
        ("quota_advanced", "7".to_owned()),
        ("verification_form", "\"live\"".to_owned()),
        ("service_domain", "\"dcv.test\"".to_owned()),
        ("lifecycle", "true".to_owned()),
        ("dcv_resolvers", "\"127.0.0.1:1, 127.0.0.1:2\"".to_owned()),
        ("dcv_http_port", "8080".to_owned()),
        ("dcv_allow_private_addresses", "true".to_owned()),
        ("check_concurrency", "4".to_owned()),
        ("poll_interval", "\"10s\"".to_owned()),
        ("lease", "\"2m\"".to_owned()),
        ("issuance_timeout", "\"1h 30m\"".to_owned()),
        ("deploy_dir", format!("{:?}", certs.to_str().unwrap())),
        ("deploy_hook", "[\"/bin/true\", \"deployed\"]".to_owned()),
        ("deploy_sync", "\"30s\"".to_owned()),
        ("key_type", "\"rsa-2048\"".to_owned()),
        ("brand_keywords", "[\"paypal\", \"bank\"]".to_owned()),
        ("lifecycle_cpus", "\"all\"".to_owned()),
        ("request_cpus", "\"all\"".to_owned()),
        ("header_read_timeout", "\"10s\"".to_owned()),
        ("body_read_timeout", "\"30s\"".to_owned()),
        ("idle_timeout", "\"1m\"".to_owned()),
        ("max_connections", "64".to_owned()),
        ("shutdown_timeout", "\"10s\"".to_owned()),
        ("log_json", "true".to_owned()),
        // The ACME options as flat keys (`[acme.NAME]` tables are the other form, see
        // config.rs's tests). A directory that is never asked: no pack orders from it.
        (
            "acme",
            "[\"lets_encrypt=https://127.0.0.1:1/dir\"]".to_owned(),
        ),
        (
            "acme_contact",
            "\"lets_encrypt=ops@example.org\"".to_owned(),
        ),
        ("acme_eab", "\"lets_encrypt=kid-1:aGVsbG8\"".to_owned()),
        (
            "acme_root",
            format!("\"lets_encrypt={}\"", acme_root.to_str().unwrap()),
        ),
        ("acme_profile", "\"lets_encrypt=90:tlsserver\"".to_owned()),
        ("acme_caa", "[\"lets_encrypt=letsencrypt.org\"]".to_owned()),
        ("acme_revoke_on_delete", "true".to_owned()),
        ("test_controls", "false".to_owned()),
        ("dcv_auto_validate", "false".to_owned()),
        ("fresh", "false".to_owned()),
        ("dns_listen", "\"127.0.0.1:0\"".to_owned()),
        ("metrics", "true".to_owned()),
        ("metrics_listen", "\"127.0.0.1:0\"".to_owned()),
        ("metrics_per_zone", "false".to_owned()),
        ("webhook_timeout", "\"5s\"".to_owned()),
        ("webhook_concurrency", "4".to_owned()),
        ("webhook_retry_for", "\"12h\"".to_owned()),
        ("webhook_max_backoff", "\"10m\"".to_owned()),
    ];
    let mut documented = documented_flags();
    documented.sort();
    let mut written: Vec<String> = keys.iter().map(|(k, _)| k.replace('_', "-")).collect();
    written.sort();
    assert_eq!(documented, written, "README.md's table and this file");
    // And README.md documents every setting `serve` has.
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let mut flags: Vec<String> = String::from_utf8_lossy(&help.stdout)
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| l.split([' ', ',']).next().unwrap().to_owned())
        .filter(|f| f != "help" && f != "config")
        .collect();
    flags.sort();
    assert_eq!(flags, documented, "`serve --help` and README.md's table");

    let text: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .env_remove("ZONECERT_QUOTA_ADVANCED")
        .env_remove("ZONECERT_RATE_LIMIT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let addr = line.strip_prefix("listening on ").unwrap().to_owned();
    let mut logs = BufReader::new(child.stderr.take().unwrap()).lines();
    let first_log = logs.next().unwrap().unwrap();
    std::thread::spawn(move || for _ in logs {});
    assert!(
        serde_json::from_str::<Value>(&first_log).is_ok(),
        "log_json: {first_log}"
    );
    assert!(db.is_file(), "the database is where `database` says");
    // A zone and a token in that database show the quota of the file.
    let admin_db = |args: &[&str]| -> Value {
        let out = Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(db.parent().unwrap())
            .args(["--output", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let zone = admin_db(&["zone", "create", "settings.example"]);
    let zone = zone["id"].as_str().unwrap().to_owned();
    let token = admin_db(&[
        "token",
        "create",
        "--name",
        "t",
        "--permission",
        "SSL and Certificates Read",
    ]);
    let token = token["secret"].as_str().unwrap().to_owned();
    let q = quota(&format!("{addr}/client/v4"), &token, &zone).await;
    assert_eq!(q["result"]["advanced"]["allocated"], 7, "{q}");
    child.kill().unwrap();
    child.wait().unwrap();
}
