//! `zonecert ssl ...`: the built binary against `zonecert serve --dev` on port 0, and,
//! for the outcomes of `watch` a fresh server cannot reach in a test's time (a pack
//! turning active or timing out), against a scripted loopback API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../client/tests/scripted_server/mod.rs"]
mod scripted_server;

use scripted_server::{ScriptedServer, ok};
use serde_json::{Value, json};
use std::process::{Command, Output, Stdio};
use zonecert_testkit::{ServeCommand, ServeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");
const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const PACK: &str = "a77f8bd7-3b47-46b4-a6f1-75cf98109948";

/// `zonecert serve --dev` on port 0, killed when dropped.
fn dev_server() -> ServeProcess {
    ServeCommand::new(BIN).dev().spawn()
}

/// `zonecert ssl ARGS` against a server.
trait Ssl {
    fn ssl(&self, args: &[&str]) -> Output;
}

impl Ssl for ServeProcess {
    fn ssl(&self, args: &[&str]) -> Output {
        ssl_command(self.base_url(), args)
            .env("CLOUDFLARE_API_TOKEN", self.token())
            .output()
            .unwrap()
    }
}

fn ssl_command(base_url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("ssl")
        .args(args)
        .env_remove("CLOUDFLARE_API_TOKEN")
        .env_remove("CLOUDFLARE_API_KEY")
        .env_remove("CLOUDFLARE_EMAIL")
        .env_remove("CLOUDFLARE_ZONE_ID")
        .env("CLOUDFLARE_BASE_URL", base_url);
    cmd
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn fits_80(text: &str) {
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "longer than 80: {line:?}");
    }
}

#[test]
fn verification_get_as_table_and_json_with_both_credentials() {
    let server = dev_server();
    let out = server.ssl(&["verification", "get", "--zone-id", ZONE]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("pack {PACK}")), "{text}");
    assert!(text.contains("example.com"), "{text}");
    assert!(text.contains("HOST"), "{text}");
    fits_80(&text);

    let out = server.ssl(&[
        "verification",
        "get",
        "--zone-id",
        ZONE,
        "--retry",
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = json.as_array().unwrap();
    assert!(items.iter().all(|i| i["cert_pack_uuid"] == PACK), "{json}");
    assert!(
        items.iter().any(|i| i["hostname"] == "example.com"),
        "{json}"
    );

    let out = ssl_command(
        server.base_url(),
        &["verification", "get", "--zone-id", ZONE],
    )
    .env("CLOUDFLARE_EMAIL", "user@example.com")
    .env("CLOUDFLARE_API_KEY", "144c9defac04969c7bfad8efaa8ea194")
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(PACK));
}

#[test]
fn packs_order_list_get_edit_delete_quota_and_verification_edit() {
    let server = dev_server();
    let out = server.ssl(&[
        "packs",
        "order",
        "--zone-id",
        ZONE,
        "--host",
        "example.com",
        "--host",
        "shop.example.com",
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pack: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = pack["id"].as_str().unwrap().to_owned();
    assert_eq!(pack["hosts"], json!(["example.com", "shop.example.com"]));

    let out = server.ssl(&["packs", "list", "--zone-id", ZONE, "--per-page", "5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&id) && text.contains(PACK), "{text}");
    assert!(text.contains("example.com +1"), "{text}");
    fits_80(&text);

    let out = server.ssl(&["packs", "list", "--zone-id", ZONE, "--output", "json"]);
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");

    let out = server.ssl(&["packs", "get", "--zone-id", ZONE, "--pack-id", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("pack       {id}")), "{text}");
    assert!(text.contains("_acme-challenge.shop.example.com"), "{text}");

    let out = server.ssl(&[
        "verification",
        "edit",
        "--zone-id",
        ZONE,
        "--pack-id",
        &id,
        "--method",
        "http",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("validation method http"),
        "{}",
        stdout(&out)
    );

    // Restarting a pack whose validation has not timed out is refused: exit 1.
    let out = server.ssl(&["packs", "edit", "--zone-id", ZONE, "--pack-id", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).starts_with("error:"), "{}", stderr(&out));

    let out = server.ssl(&["packs", "quota", "--zone-id", ZONE]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("advanced") && text.contains(" 2 "), "{text}");

    let out = server.ssl(&["packs", "delete", "--zone-id", ZONE, "--pack-id", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("deleted pack {id}"));

    let out = server.ssl(&["packs", "get", "--zone-id", ZONE, "--pack-id", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[test]
fn errors_exit_non_zero_with_the_reason() {
    let server = dev_server();
    let out = ssl_command(
        server.base_url(),
        &["verification", "get", "--zone-id", ZONE],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("CLOUDFLARE_API_TOKEN"),
        "{}",
        stderr(&out)
    );

    let out = ssl_command(
        server.base_url(),
        &["verification", "get", "--zone-id", ZONE],
    )
    .env(
        "CLOUDFLARE_API_TOKEN",
        "wrong-token-000000000000000000000000",
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn watch_prints_the_records_to_create_and_times_out() {
    let server = dev_server();
    // The documentation's pack is active: order one that is still pending.
    let ordered = server.ssl(&[
        "packs",
        "order",
        "--zone-id",
        ZONE,
        "--host",
        "example.com",
        "--host",
        "www.example.com",
        "--output",
        "json",
    ]);
    assert!(ordered.status.success(), "{}", stderr(&ordered));
    let pending: Value = serde_json::from_slice(&ordered.stdout).unwrap();
    let pending = pending["id"].as_str().unwrap().to_owned();
    let out = server.ssl(&[
        "verification",
        "watch",
        "--zone-id",
        ZONE,
        "--timeout",
        "1500ms",
        "--interval",
        "500ms",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains(&format!("pack {pending}")), "{text}");
    assert!(
        text.contains("create DNS record: _acme-challenge.www.example.com TXT"),
        "{text}"
    );
    assert!(text.contains("value: "), "{text}");
    assert!(text.contains("last check: "), "{text}");
    assert!(stderr(&out).contains("timed out after"), "{}", stderr(&out));
}

fn pending_item(status: &str, verified: Option<bool>) -> Value {
    let mut item = json!({
        "certificate_status": status, "cert_pack_uuid": PACK, "hostname": "example.com",
        "validation_method": "txt",
        "verification_info": {"record_name": "txt_name", "record_target": "txt_value",
            "txt_name": "_acme-challenge.example.com", "txt_value": "tok-123"},
        "verification_error": "no TXT record at _acme-challenge.example.com"
    });
    if let Some(v) = verified {
        item["verification_status"] = json!(v);
    }
    item
}

fn pack_json(status: &str) -> Value {
    json!({"id": PACK, "type": "advanced", "hosts": ["example.com"], "status": status})
}

#[tokio::test]
async fn watch_exits_zero_once_every_pack_is_active() {
    let api = ScriptedServer::start(vec![
        ok(json!([pending_item("authorizing", Some(false))])),
        ok(pack_json("pending_validation")),
        ok(
            json!([{"certificate_status": "active", "cert_pack_uuid": PACK,
            "hostname": "example.com", "verification_status": true}]),
        ),
    ])
    .await;
    let base = api.base_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        ssl_command(
            &base,
            &[
                "verification",
                "watch",
                "--zone-id",
                ZONE,
                "--interval",
                "100ms",
                "--timeout",
                "20s",
            ],
        )
        .env("CLOUDFLARE_API_TOKEN", "t")
        .output()
        .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("value: tok-123"), "{text}");
    assert!(
        text.contains("last check: no TXT record at _acme-challenge.example.com"),
        "{text}"
    );
    assert!(text.contains("example.com: verified"), "{text}");
    assert!(
        text.contains("all 1 certificate packs are active"),
        "{text}"
    );
    fits_80(&text);
    let seen = api.requests();
    assert!(
        seen[0].target.ends_with("?retry=true"),
        "{:?}",
        seen[0].target
    );
}

#[tokio::test]
async fn watch_exits_two_when_a_pack_times_out() {
    let api = ScriptedServer::start(vec![
        ok(json!([pending_item("timing_out", None)])),
        ok(pack_json("validation_timed_out")),
    ])
    .await;
    let base = api.base_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        ssl_command(
            &base,
            &[
                "verification",
                "watch",
                "--zone-id",
                ZONE,
                "--interval",
                "100ms",
            ],
        )
        .env("CLOUDFLARE_API_TOKEN", "t")
        .output()
        .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("is timing_out"), "{err}");
    assert!(err.contains("zonecert ssl packs edit"), "{err}");
}

#[tokio::test]
async fn watch_in_the_live_form_names_each_host_once() {
    // The live API's item is per pack, with an array of records; the reason comes from
    // the pack's validation errors, which name their host: the line under that host
    // shows the reason alone.
    let live_item = json!([{
        "certificate_status": "authorizing", "cert_pack_uuid": PACK, "hostname": "shop.test",
        "validation_method": "txt",
        "verification_info": [{"status": "pending", "txt_name": "_acme-challenge.shop.test",
            "txt_value": "tok-123"}]
    }]);
    let pack = json!({"id": PACK, "type": "advanced", "hosts": ["shop.test"],
        "status": "pending_validation",
        "validation_errors": [{"message": "shop.test: no TXT record at _acme-challenge.shop.test (NXDOMAIN)"}]});
    let api = ScriptedServer::start(vec![
        ok(live_item),
        ok(pack),
        ok(
            json!([{"certificate_status": "active", "cert_pack_uuid": PACK,
            "hostname": "shop.test", "verification_status": true}]),
        ),
    ])
    .await;
    let base = api.base_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        ssl_command(
            &base,
            &[
                "verification",
                "watch",
                "--zone-id",
                ZONE,
                "--interval",
                "100ms",
                "--timeout",
                "20s",
            ],
        )
        .env("CLOUDFLARE_API_TOKEN", "t")
        .output()
        .unwrap()
    })
    .await
    .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains("    last check: no TXT record at _acme-challenge.shop.test (NXDOMAIN)\n"),
        "{text}"
    );
    assert!(!text.contains("last check: shop.test:"), "{text}");
}

#[test]
fn order_prints_the_zone_id_in_its_next_step() {
    let server = dev_server();
    let out = server.ssl(&[
        "packs",
        "order",
        "--zone-id",
        ZONE,
        "--host",
        "example.com",
        "--host",
        "next.example.com",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "Next: zonecert ssl verification watch --zone-id {ZONE}\n"
        )),
        "{text}"
    );
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    // `zonecert ... | head -0`: the reader is gone before the command writes.
    let server = dev_server();
    let commands: [Vec<&str>; 3] = [
        vec![
            "ssl",
            "packs",
            "list",
            "--zone-id",
            ZONE,
            "--output",
            "json",
        ],
        vec!["ssl", "verification", "get", "--zone-id", ZONE],
        vec![
            "zone",
            "list",
            "--data-dir",
            server.data_dir().to_str().unwrap(),
        ],
    ];
    for args in commands {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .args(&args)
            .env("CLOUDFLARE_BASE_URL", server.base_url())
            .env("CLOUDFLARE_API_TOKEN", server.token())
            .env_remove("CLOUDFLARE_API_KEY")
            .env_remove("CLOUDFLARE_EMAIL")
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: quietly: {err}");
    }
}
