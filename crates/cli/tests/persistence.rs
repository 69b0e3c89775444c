//! Every acknowledged write survives `kill -9` and a restart on the same data directory.
#![allow(clippy::unwrap_used)] // test harness: a failed setup should panic loudly

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use zonecert_testkit::{ServeCommand, ServeProcess};

/// Starts `zonecert serve --dev` on port 0 and reads its address and token.
fn start(data_dir: &std::path::Path) -> (ServeProcess, String, String) {
    let server = ServeCommand::new(env!("CARGO_BIN_EXE_zonecert"))
        .dev()
        .data_dir(data_dir)
        .args(["--rate-limit", "off"])
        .spawn();
    let (base, token) = (server.base_url().to_owned(), server.token().to_owned());
    (server, base, token)
}

async fn order(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    zone: &str,
    host: String,
) -> Option<String> {
    let resp = http
        .post(format!("{base}/zones/{zone}/ssl/certificate_packs/order"))
        .bearer_auth(token)
        .json(
            &json!({"type": "advanced", "hosts": ["durable.example", host],
            "validation_method": "txt", "validity_days": 90, "certificate_authority": "google"}),
        )
        .send()
        .await
        .ok()?;
    let ok = resp.status() == 200;
    let body: Value = resp.json().await.ok()?;
    if ok {
        body["result"]["id"].as_str().map(str::to_owned)
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, base, token) = start(dir.path());
    let http = reqwest::Client::new();
    let (_, zone) = server
        .api("POST", "/zones", Some(&json!({"name": "durable.example"})))
        .await;
    let zone_id = zone["result"]["id"].as_str().unwrap().to_owned();

    // Eight clients order packs; the server is killed while orders are in flight.
    // Every order answered 200 must be there after the restart.
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..8 {
        let (http, base, token, zone_id) =
            (http.clone(), base.clone(), token.clone(), zone_id.clone());
        let answered = answered.clone();
        clients.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..10 {
                let host = format!("c{client}h{i}.durable.example");
                match order(&http, &base, &token, &zone_id, host).await {
                    Some(id) => {
                        acked.push(id);
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    None => break,
                }
            }
            acked
        });
    }
    while answered.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    server.kill_9();
    let mut acknowledged = Vec::new();
    while let Some(acked) = clients.join_next().await {
        acknowledged.extend(acked.unwrap());
    }
    assert!(
        acknowledged.len() >= 20 && acknowledged.len() < 80,
        "killed mid-way: {}",
        acknowledged.len()
    );

    let server = server.restart();
    let mut stored = Vec::new();
    for page in 1.. {
        let (_, list) = server
            .api(
                "GET",
                &format!(
                    "/zones/{zone_id}/ssl/certificate_packs?status=all&per_page=50&page={page}"
                ),
                None,
            )
            .await;
        let items = list["result"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        stored.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
    }
    for id in &acknowledged {
        assert!(stored.contains(id), "acknowledged pack {id} was lost");
    }
    let (_, verification) = server
        .api("GET", &format!("/zones/{zone_id}/ssl/verification"), None)
        .await;
    assert_eq!(
        verification["result"].as_array().unwrap().len(),
        stored.len() * 2
    );
}
