//! `zonecert serve` and the administration commands on PostgreSQL: the built binary
//! against a cluster the test starts (testkit's `PgCluster`; `ZONECERT_SKIP_POSTGRES=1`
//! skips this explicitly, a failure otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::io::BufRead;
use std::process::{Command, Output};
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
    // TLS is refused with a reason, not a handshake failure.
    let tls = zonecert(
        &format!("{url}?sslmode=require"),
        &["zone", "create", "example.org"],
    );
    let stderr = String::from_utf8_lossy(&tls.stderr);
    assert!(
        stderr.contains("sslmode=require") && stderr.contains("not supported yet"),
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
