//! `--acme-revoke-on-delete` with the built binary, Pebble (Debian's `pebble`) behind
//! the testkit's front (which can refuse revocations while Pebble keeps its state) and
//! the loopback DNS: a deletion's revocation survives `kill -9` and a restart, and
//! `zonecert zone delete` on the database revokes as the API's `DELETE` does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use zonecert_testkit::ari_front::AriFront;
use zonecert_testkit::pebble::Pebble;
use zonecert_testkit::{DnsServer, ServeCommand, ServeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");

/// `zonecert serve --dev` ordering `lets_encrypt` packs from Pebble through `front`,
/// revoking deleted packs' certificates.
async fn serve(
    data: &Path,
    dns: &DnsServer,
    pebble: &Pebble,
    front: &AriFront,
    log: &Path,
) -> ServeProcess {
    let command = ServeCommand::dev_lifecycle(BIN, data, [dns.addr()], log)
        .args(["--lease", "2s", "--acme-revoke-on-delete"])
        .args(pebble.serve_args_via(&front.directory));
    tokio::task::spawn_blocking(move || command.spawn())
        .await
        .unwrap()
}

/// Orders a txt pack for `host` in the dev zone, publishes the CA's token and waits
/// until the pack is active; returns the zone, the pack and its certificate's serial.
async fn active_pack(
    server: &ServeProcess,
    dns: &DnsServer,
    host: &str,
) -> (String, String, String) {
    let zone = server.zone_id("example.com").await;
    let pack = server.order_txt(&zone, &[host], "lets_encrypt").await;
    let value = server.txt_value(&zone, &pack).await;
    dns.set_txt(&format!("_acme-challenge.{host}"), &[&value]);
    let started = Instant::now();
    loop {
        let v = server
            .api(
                "GET",
                &format!("/zones/{zone}/ssl/verification?retry=true"),
                None,
            )
            .await
            .1;
        let p = server.pack(&zone, &pack).await;
        if p["result"]["status"] == "active" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not active: {p} {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let chain = std::fs::read(
        server
            .data_dir()
            .join("certs")
            .join(&pack)
            .join("fullchain.pem"),
    )
    .unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&chain).unwrap();
    let cert = pem.parse_x509().unwrap();
    let serial: String = cert
        .tbs_certificate
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (zone, pack, serial)
}

/// Waits until Pebble says the certificate is revoked; panics with `log`'s text if it
/// does not within `within`.
async fn revoked(pebble: &Pebble, serial: &str, within: Duration, log: &Path) -> Value {
    let started = Instant::now();
    loop {
        let status = pebble.cert_status(serial).await;
        if status["Status"] == "Revoked" {
            return status;
        }
        assert!(
            started.elapsed() < within,
            "not revoked: {status}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletions_revocation_survives_kill_9_and_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let front = AriFront::start(&pebble).await;
    let data = tmp.path().join("data");
    let log = tmp.path().join("first.log");
    let mut first = serve(&data, &dns, &pebble, &front, &log).await;
    let (zone, pack, serial) = active_pack(&first, &dns, "example.com").await;
    assert_eq!(pebble.cert_status(&serial).await["Status"], "Valid");

    // The CA refuses revocations (down for them): the deletion is answered, the first
    // attempt fails, and the server is killed before any later one.
    front.refuse_revocations(true);
    let deleted = first
        .api(
            "DELETE",
            &format!("/zones/{zone}/ssl/certificate_packs/{pack}"),
            None,
        )
        .await
        .1;
    assert_eq!(deleted["success"], true, "{deleted}");
    let started = Instant::now();
    while front.refused_revocations() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no revocation attempted: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill_9();
    assert_eq!(pebble.cert_status(&serial).await["Status"], "Valid");

    // The CA is back; the restarted server revokes from its queue.
    front.refuse_revocations(false);
    let log2 = tmp.path().join("second.log");
    let restart_log = log2.clone();
    let second = tokio::task::spawn_blocking(move || {
        first.restart_with(|command| command.stderr_log(restart_log))
    })
    .await
    .unwrap();
    let status = revoked(&pebble, &serial, Duration::from_secs(60), &log2).await;
    assert_eq!(status["Reason"], 5, "cessationOfOperation: {status}");
    drop(second);
    let store = zonecert_server::store::Store::open_sqlite(&data).unwrap();
    assert!(
        store.queued_revocations().await.unwrap().is_empty(),
        "the queue is empty once revoked"
    );
    drop(front);
    pebble.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zonecert_zone_delete_revokes_like_the_apis_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let front = AriFront::start(&pebble).await;
    let data = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let server = serve(&data, &dns, &pebble, &front, &log).await;
    let (zone, pack, serial) = active_pack(&server, &dns, "example.com").await;

    let out = std::process::Command::new(BIN)
        .args(["zone", "delete", &zone, "--data-dir"])
        .arg(&data)
        .env_remove("ZONECERT_DATABASE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !data.join("certs").join(&pack).exists(),
        "its files are removed"
    );
    let status = revoked(&pebble, &serial, Duration::from_secs(30), &log).await;
    assert_eq!(status["Reason"], 5, "cessationOfOperation: {status}");
    drop(server);
    drop(front);
    pebble.stop().await;
}
