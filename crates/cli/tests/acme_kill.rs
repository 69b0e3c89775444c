//! `kill -9` of `zonecert serve` between the ACME order's finalization and the
//! certificate's download: the restarted server downloads the certificate of the same
//! order (its key, kept since before finalize, is the deployed one) instead of ordering
//! again. Pebble (Debian's `pebble`) and the loopback DNS are real, the server is the
//! built binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use zonecert_testkit::pebble::Pebble;
use zonecert_testkit::{DnsServer, ServeCommand, ServeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");

async fn serve(data: &Path, dns: &DnsServer, pebble: &Pebble, log: &Path) -> ServeProcess {
    let command = ServeCommand::new(BIN)
        .dev()
        .data_dir(data)
        .resolvers([dns.addr()])
        .args([
            "--rate-limit",
            "off",
            "--poll-interval",
            "1s",
            "--lease",
            "2s",
        ])
        .args(pebble.serve_args())
        .env("ZONECERT_LOG", "info")
        .stderr_log(log);
    tokio::task::spawn_blocking(move || command.spawn())
        .await
        .unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_between_finalize_and_download_finishes_the_same_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let data = tmp.path().join("data");
    let log = tmp.path().join("first.log");
    let mut first = serve(&data, &dns, &pebble, &log).await;
    let (base, token) = (first.base_url().to_owned(), first.token().to_owned());
    let http = reqwest::Client::new();
    let zones = get(&http, format!("{base}/zones?name=example.com"), &token).await;
    let zone = zones["result"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{zones}"))
        .to_owned();
    let ordered: Value = http
        .post(format!("{base}/zones/{zone}/ssl/certificate_packs/order"))
        .bearer_auth(&token)
        .json(&json!({"type": "advanced", "hosts": ["example.com"],
                      "validation_method": "txt", "validity_days": 90,
                      "certificate_authority": "lets_encrypt"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pack = ordered["result"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{ordered}"))
        .to_owned();
    // The CA's token, once the worker placed the order.
    let value = loop {
        let v = get(
            &http,
            format!("{base}/zones/{zone}/ssl/verification"),
            &token,
        )
        .await;
        let found = v["result"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["cert_pack_uuid"] == pack.as_str())
            .and_then(|i| i["verification_info"]["txt_value"].as_str())
            .map(str::to_owned);
        if let Some(value) = found {
            break value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    dns.set_txt("_acme-challenge.example.com", &[&value]);
    let retry = {
        let (http, url, token) = (
            http.clone(),
            format!("{base}/zones/{zone}/ssl/verification?retry=true"),
            token.clone(),
        );
        tokio::spawn(async move { http.get(url).bearer_auth(token).send().await })
    };
    // Killed as soon as the order is finalized: the certificate is then polled for after
    // 200 ms at the earliest, so it was not downloaded.
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ACME order finalized")
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never finalized: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.child().kill().unwrap(); // SIGKILL
    first.child().wait().unwrap();
    let _ = retry.await;
    let keys: Vec<_> = std::fs::read_dir(data.join("acme").join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 1, "the finalized order's key is kept: {keys:?}");
    let kept_key = std::fs::read_to_string(&keys[0]).unwrap();
    assert!(
        !data.join("certs").join(&pack).join("privkey.pem").exists(),
        "nothing deployed before the kill"
    );

    let log2 = tmp.path().join("second.log");
    let second = serve(&data, &dns, &pebble, &log2).await;
    let base = second.base_url().to_owned();
    let started = Instant::now();
    loop {
        let v = get(
            &http,
            format!("{base}/zones/{zone}/ssl/certificate_packs/{pack}"),
            &token,
        )
        .await;
        if v["result"]["status"] == "active" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not active after the restart: {v}\n{}",
            std::fs::read_to_string(&log2).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deployed_key =
        std::fs::read_to_string(data.join("certs").join(&pack).join("privkey.pem")).unwrap();
    assert_eq!(
        deployed_key.trim(),
        kept_key.trim(),
        "the certificate of the finalized order (its CSR's key), not a new order's"
    );
    let second_log = std::fs::read_to_string(&log2).unwrap_or_default();
    assert!(
        !second_log.contains("ACME order finalized"),
        "the restarted server finalized again: {second_log}"
    );
    assert!(!keys[0].exists(), "the kept key is removed once deployed");
    drop(second);
    pebble.stop().await;
}
