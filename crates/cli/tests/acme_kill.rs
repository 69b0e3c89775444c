//! `kill -9` of `zonecert serve` between the ACME order's finalization and the
//! certificate's download: the restarted server downloads the certificate of the same
//! order (its key, kept since before finalize, is the deployed one) instead of ordering
//! again. Pebble (Debian's `pebble`) and the loopback DNS are real, the server is the
//! built binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};
use zonecert_testkit::pebble::Pebble;
use zonecert_testkit::{DnsServer, ServeCommand, ServeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");

async fn serve(data: &Path, dns: &DnsServer, pebble: &Pebble, log: &Path) -> ServeProcess {
    let command = ServeCommand::dev_lifecycle(BIN, data, [dns.addr()], log)
        .args(["--lease", "2s"])
        .args(pebble.serve_args());
    tokio::task::spawn_blocking(move || command.spawn())
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
    let first = serve(&data, &dns, &pebble, &log).await;
    let zone = first.zone_id("example.com").await;
    let pack = first
        .order_txt(&zone, &["example.com"], "lets_encrypt")
        .await;
    // The CA's token, once the worker placed the order.
    let value = first.txt_value(&zone, &pack).await;
    dns.set_txt("_acme-challenge.example.com", &[&value]);
    let retry = {
        let (http, url, token) = (
            reqwest::Client::new(),
            format!(
                "{}/zones/{zone}/ssl/verification?retry=true",
                first.base_url()
            ),
            first.token().to_owned(),
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
    let keys = |data: &Path| -> Vec<_> {
        std::fs::read_dir(data.join("acme").join("keys"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    // kill -9, then the same command again with a log of its own.
    let log2 = tmp.path().join("second.log");
    let privkey = data.join("certs").join(&pack).join("privkey.pem");
    let (restarted, killed_keys, deployed_before) = {
        let (data, log2, privkey) = (data.clone(), log2.clone(), privkey.clone());
        tokio::task::spawn_blocking(move || {
            let mut first = first;
            first.kill_9();
            let (kept, deployed) = (keys(&data), privkey.exists());
            (first.restart_with(|c| c.stderr_log(log2)), kept, deployed)
        })
        .await
        .unwrap()
    };
    assert!(!deployed_before, "nothing deployed before the kill");
    let _ = retry.await;
    assert_eq!(
        killed_keys.len(),
        1,
        "the finalized order's key is kept: {killed_keys:?}"
    );
    let kept_key = std::fs::read_to_string(&killed_keys[0]).unwrap();
    let second = restarted;
    let started = Instant::now();
    loop {
        let v = second.pack(&zone, &pack).await;
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
    let deployed_key = std::fs::read_to_string(&privkey).unwrap();
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
    assert!(
        !killed_keys[0].exists(),
        "the kept key is removed once deployed"
    );
    drop(second);
    pebble.stop().await;
}
