//! Monitoring through the built binary: a webhook event that sits in the outbox when
//! `zonecert serve` is killed with SIGKILL is delivered by the restarted server, once
//! per id; `zonecert report expiry` (table and JSON, `--within`) on a dev server whose
//! clock travelled, with a renewal held back by a DCV failure and its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zonecert_testkit::{DnsServer, ServeCommand, ServeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");
const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";

/// `zonecert ARGS --data-dir DATA --output json`, its JSON (panics when it fails).
fn admin(data: &Path, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zonecert {args:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "zonecert {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A webhook receiver on `addr`: reads each request whole, answers 204 and closes the
/// connection; keeps (webhook-id, body) of every POST.
type Got = Arc<Mutex<Vec<(String, Value)>>>;

async fn receiver(addr: SocketAddr, got: Got) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let got = got.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case(name)
                            .then(|| v.trim().to_owned())
                    })
                };
                let length: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body: Value =
                    serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
                got.lock()
                    .unwrap()
                    .push((header("webhook-id").unwrap_or_default(), body));
                let _ = socket
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    })
}

/// `zonecert serve --dev --dcv-auto-validate` on `data`, its CAA lookups going to the
/// loopback DNS server (which holds no record).
fn serve(data: &Path, dns: &DnsServer, log: &Path) -> ServeProcess {
    ServeCommand::dev_lifecycle(BIN, data, [dns.addr()], log)
        .args(["--dcv-auto-validate"])
        // A delivery's lease is 3 attempts' time + 30 s: one cut short by the kill is
        // taken again after 36 s rather than 60.
        .args(["--webhook-timeout", "2s"])
        .spawn()
}

async fn get(http: &reqwest::Client, url: String, token: &str) -> Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_status(http: &reqwest::Client, base: &str, token: &str, pack: &str, status: &str) {
    let started = Instant::now();
    loop {
        let v = get(
            http,
            format!("{base}/zones/{ZONE}/ssl/certificate_packs/{pack}"),
            token,
        )
        .await;
        if v["result"]["status"] == status {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "pack {pack} not {status}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_in_the_outbox_at_a_kill_9_is_delivered_after_the_restart_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The receiver's port, free while the receiver is down.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dns = DnsServer::start().await;
    let log = tmp.path().join("first.log");
    let mut first = serve(&data, &dns, &log);
    let added = admin(
        &data,
        &[
            "webhook",
            "add",
            &format!("http://{addr}/hook"),
            "--allow-private",
        ],
    );
    assert!(added["secret"].as_str().unwrap().starts_with("whsec_"));
    let (base, token) = (first.base_url().to_owned(), first.token().to_owned());
    let http = reqwest::Client::new();
    let pack = first
        .order_txt(ZONE, &["example.com"], "lets_encrypt")
        .await;
    // Auto-validation takes the pack to active; the transitions' events are in the
    // outbox, the first one's attempts refused (nothing listens; the next ones wait for
    // it, a pack's events being delivered in order).
    wait_status(&http, &base, &token, &pack, "active").await;
    let ours = |list: &Value| -> Vec<Value> {
        list.as_array()
            .unwrap()
            .iter()
            .filter(|d| d["pack"] == pack.as_str())
            .cloned()
            .collect()
    };
    let started = Instant::now();
    loop {
        let deliveries = ours(&admin(&data, &["webhook", "deliveries"]));
        if deliveries.len() == 3 && deliveries.iter().any(|d| d["attempts"].as_u64() >= Some(1)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no refused attempt: {deliveries:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill_9();
    let pending = ours(&admin(&data, &["webhook", "deliveries"]));
    assert!(
        pending.iter().all(|d| d["state"] == "pending"),
        "nothing was delivered before the kill: {pending:?}"
    );

    let got: Got = Arc::default();
    let _receiver = receiver(addr, got.clone()).await;
    let log2 = tmp.path().join("second.log");
    let _second = first.restart_with(|command| command.stderr_log(&log2));
    let expected = ["pack.validated", "pack.issued", "pack.active"];
    let started = Instant::now();
    let received = |got: &Got| -> Vec<(String, String)> {
        got.lock()
            .unwrap()
            .iter()
            .filter(|(_, b)| b["data"]["pack"]["id"] == pack.as_str())
            .map(|(id, b)| (id.clone(), b["type"].as_str().unwrap_or("").to_owned()))
            .collect()
    };
    while received(&got).len() < expected.len() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "after the restart: {:?}\n{}",
            received(&got),
            std::fs::read_to_string(&log2).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing more comes: each event once, in order, each with its own id.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = received(&got);
    let kinds: Vec<&str> = received.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(kinds, expected, "{received:?}");
    let mut ids: Vec<&str> = received.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), expected.len(), "{received:?}");
    assert!(ids.iter().all(|id| id.starts_with("msg_")), "{received:?}");
    // The ids are those written before the kill.
    let stored: Vec<String> = pending
        .iter()
        .map(|d| d["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        ids.iter().all(|id| stored.iter().any(|s| s == id)),
        "{received:?} vs {pending:?}"
    );
    let after = ours(&admin(&data, &["webhook", "deliveries"]));
    assert!(after.iter().all(|d| d["state"] == "delivered"), "{after:?}");
}

/// `zonecert report expiry ARGS --data-dir DATA` as text.
fn report_table(data: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["report", "expiry"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn control(http: &reqwest::Client, base: &str, token: &str, path: &str, body: Value) {
    let url = format!("{}{path}", base.replace("/client/v4", "/_zonecert/v1"));
    let answer = http
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        answer.status().is_success(),
        "{url}: {}",
        answer.text().await.unwrap()
    );
}

fn expires_on(pack: &Value) -> String {
    pack["result"]["certificates"][0]["expires_on"]
        .as_str()
        .unwrap_or_else(|| panic!("no certificate: {pack}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_report_shows_what_expires_when_and_why_it_is_not_renewed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dns = DnsServer::start().await;
    let log = tmp.path().join("serve.log");
    let server = serve(&data, &dns, &log);
    let (base, token) = (server.base_url().to_owned(), server.token().to_owned());
    let http = reqwest::Client::new();
    let renewed = server
        .order_txt(ZONE, &["example.com"], "lets_encrypt")
        .await;
    // A pack must hold the zone's apex.
    let stuck = server
        .order_txt(ZONE, &["example.com", "www.example.com"], "lets_encrypt")
        .await;
    for pack in [&renewed, &stuck] {
        wait_status(&http, &base, &token, pack, "active").await;
    }
    let pack_url = |id: &str| format!("{base}/zones/{ZONE}/ssl/certificate_packs/{id}");
    let first_expiry = expires_on(&get(&http, pack_url(&renewed), &token).await);
    let stuck_expiry = expires_on(&get(&http, pack_url(&stuck), &token).await);

    // Before the renewal window: both expire in about 90 days; none within 30.
    let json = admin(&data, &["report", "expiry", "--within", "100d"]);
    let rows: Vec<&Value> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"] == renewed.as_str() || r["id"] == stuck.as_str())
        .collect();
    assert_eq!(rows.len(), 2, "{json}");
    for row in &rows {
        assert_eq!(row["status"], "active", "{row}");
        let why = row["why_not_renewed"][0].as_str().unwrap();
        assert!(why.starts_with("renewal window opens on "), "{row}");
    }
    let json = admin(&data, &["report", "expiry", "--within", "30d"]);
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .all(|r| r["id"] != renewed.as_str() && r["id"] != stuck.as_str()),
        "{json}"
    );

    // www.example.com's next checks fail; 61 days later both renewal windows are open:
    // example.com renews, www.example.com cannot.
    control(
        &http,
        &base,
        &token,
        "/faults",
        json!({"kind": "nxdomain", "host": "www.example.com"}),
    )
    .await;
    control(&http, &base, &token, "/clock/advance", json!({"by": "61d"})).await;
    // The renewal's checks of www.example.com fail (the pack stays active on its first
    // certificate); the report says so once they ran.
    let started = Instant::now();
    let json = loop {
        let renewed_now = expires_on(&get(&http, pack_url(&renewed), &token).await);
        let json = admin(&data, &["report", "expiry", "--within", "30d"]);
        let stuck_reason = json.as_array().unwrap().iter().any(|r| {
            r["id"] == stuck.as_str()
                && r["why_not_renewed"].as_array().is_some_and(|w| {
                    w.iter()
                        .any(|w| w.as_str().is_some_and(|w| w.contains("NXDOMAIN")))
                })
        });
        if renewed_now != first_expiry && stuck_reason {
            break json;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no renewal, or no failed check: {renewed_now} {json}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The report runs on the server's clock (the travelled one): the stuck pack expires
    // in 29 days, with its host's reason and next check; the renewed one is 90 days out.
    let rows: Vec<&Value> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"] == renewed.as_str() || r["id"] == stuck.as_str())
        .collect();
    assert_eq!(rows.len(), 1, "{json}");
    let row = rows[0];
    assert_eq!(row["id"], stuck.as_str(), "{row}");
    assert_eq!(
        row["hosts"],
        json!(["example.com", "www.example.com"]),
        "{row}"
    );
    assert_eq!(row["expires_on"], stuck_expiry.as_str(), "{row}");
    let why: Vec<&str> = row["why_not_renewed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        why.iter().any(|w| w.starts_with(
            "www.example.com: no TXT record at _acme-challenge.www.example.com (NXDOMAIN)"
        ) && w.contains("(next check ")),
        "{row}"
    );
    let table = report_table(&data, &["--within", "30d"]);
    let line = table
        .lines()
        .position(|l| l.starts_with(stuck.as_str()))
        .unwrap_or_else(|| panic!("{table}"));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[line].contains("active"), "{table}");
    assert!(
        lines[line].contains("(in 29.0 days)") || lines[line].contains("(in 28.9 days)"),
        "{table}"
    );
    assert!(
        lines[line + 1..]
            .iter()
            .take_while(|l| l.starts_with("    "))
            .any(|l| l.contains("www.example.com: no TXT record")),
        "{table}"
    );
    assert!(!table.contains(renewed.as_str()), "{table}");

    // Further out, both, soonest first.
    let json = admin(&data, &["report", "expiry", "--within", "200d"]);
    let order: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .filter(|id| *id == renewed || *id == stuck)
        .collect();
    assert_eq!(order, [stuck.as_str(), renewed.as_str()], "{json}");
    drop(server);
}
