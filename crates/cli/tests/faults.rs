//! `zonecert serve` under faults of its surroundings: a log sink that refuses every
//! write (stderr on `/dev/full`). The server must start, answer (4xx included, the
//! requests that log at info) and carry a pack through its lifecycle to `active`.
//!
//! DCV checks go to the test's loopback DNS server only (`--dcv-resolvers`).

#![allow(clippy::unwrap_used)] // test harness: a failed setup should panic loudly

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use zonecert_testkit::{DnsServer, ServeCommand};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");

#[tokio::test]
async fn a_full_log_sink_stops_nothing() {
    let dns = DnsServer::start().await;
    let full = std::fs::File::options()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let command = ServeCommand::new(BIN)
        .dev()
        .args(["--rate-limit", "off"])
        .resolvers([dns.addr()])
        .args(["--poll-interval", "1"])
        // Every request and every lifecycle step logs: each one meets the full sink.
        .env("ZONECERT_LOG", "debug")
        .stderr(full);
    // Read its first lines off the runtime, which serves the DNS server.
    let child = tokio::task::spawn_blocking(move || command.spawn())
        .await
        .unwrap();
    let base = child.base_url().to_owned();
    let http = reqwest::Client::new();

    // A refusal (logged at info) is answered in the envelope, the connection kept.
    let r = http.get(format!("{base}/zones")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], 9106, "{body}");

    // An order goes all the way to `active`.
    let (_, zone) = child
        .api("POST", "/zones", Some(&json!({"name": "full.example"})))
        .await;
    let zone = zone["result"]["id"].as_str().unwrap().to_owned();
    let (_, pack) = child
        .api(
            "POST",
            &format!("/zones/{zone}/ssl/certificate_packs/order"),
            Some(&json!({"type": "advanced", "hosts": ["full.example"],
                         "validation_method": "txt", "validity_days": 90,
                         "certificate_authority": "google"})),
        )
        .await;
    let pack = pack["result"]["id"].as_str().unwrap().to_owned();
    let (_, view) = child
        .api("GET", &format!("/zones/{zone}/ssl/verification"), None)
        .await;
    let info = &view["result"][0]["verification_info"];
    dns.set_txt(
        info["txt_name"].as_str().unwrap(),
        &[info["txt_value"].as_str().unwrap()],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = child
            .api(
                "GET",
                &format!("/zones/{zone}/ssl/verification?retry=true"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        let (_, got) = child
            .api(
                "GET",
                &format!("/zones/{zone}/ssl/certificate_packs/{pack}"),
                None,
            )
            .await;
        if got["result"]["status"] == "active" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pack never became active: {got}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(child);
}
