//! The data directory as operators meet it: what creates a database and what refuses to,
//! its modes, storage faults that say what to do, dev mode's credentials and token across
//! restarts, and a CA that is never silently replaced. Real `zonecert` processes.
#![allow(clippy::unwrap_used)] // test harness: a failed setup should panic loudly

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use zonecert_testkit::{ServeCommand, ServeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");

/// What a started server printed before serving; the server is killed when this is
/// dropped, so a failing assertion does not leave it running.
struct Started {
    _process: ServeProcess,
    base: String,
    token: Option<String>,
}

impl Started {
    fn stop(self) {
        drop(self);
    }
}

/// `zonecert serve` on `data` with rate limits off and `args`.
fn serve_builder(data: &Path, args: &[&str]) -> ServeCommand {
    ServeCommand::new(BIN)
        .data_dir(data)
        .args(["--rate-limit", "off"])
        .args(args)
}

fn serve_command(data: &Path, args: &[&str]) -> Command {
    serve_builder(data, args).command_in(data)
}

/// Starts `zonecert serve` and reads its address (and, with `--dev`, its token).
fn serve(data: &Path, args: &[&str]) -> Started {
    let process = serve_builder(data, args).spawn();
    Started {
        base: process.base_url().to_owned(),
        token: process.dev_token().map(str::to_owned),
        _process: process,
    }
}

/// Runs `zonecert serve` expecting it to refuse to start; returns its output. A server
/// that starts instead (it prints where it listens) is stopped and the test fails.
fn serve_refused(data: &Path, args: &[&str]) -> Output {
    let mut child = serve_command(data, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    if first.starts_with("listening on") {
        child.kill().unwrap();
        child.wait().unwrap();
        panic!("the server started: {first}");
    }
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut rest).unwrap();
    let mut out = child.wait_with_output().unwrap();
    out.stdout = [first.into_bytes(), rest].concat();
    assert!(!out.status.success());
    out
}

fn zonecert(args: &[&str], data: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("ZONECERT_DATA_DIR")
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn status(base: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = reqwest::Client::new().get(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap().status().as_u16()
}

const DEV_ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const DEV_KEY: [(&str, &str); 2] = [
    ("X-Auth-Email", "user@example.com"),
    ("X-Auth-Key", "144c9defac04969c7bfad8efaa8ea194"),
];

#[test]
fn admin_commands_refuse_a_data_dir_without_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("zonecert-data");
    for args in [
        &["zone", "create", "example.org"][..],
        &["zone", "list"],
        &["token", "list"],
        &["user", "create", "ops@example.org"],
        &["ca", "export"],
    ] {
        let out = zonecert(args, &data);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("no zonecert database at {}", data.display()))
                && err.contains("pass --data-dir or set ZONECERT_DATA_DIR"),
            "{args:?}: {err}"
        );
        assert!(!data.exists(), "{args:?} created {}", data.display());
    }
    // `init` creates one on purpose; then the same command works.
    assert!(ok(zonecert(&["init"], &data)).contains("created"));
    assert!(data.join("zonecert.db").exists());
    ok(zonecert(&["zone", "create", "example.org"], &data));
    assert!(ok(zonecert(&["zone", "list"], &data)).contains("example.org"));
    // Again: the database is left as it is.
    assert!(ok(zonecert(&["init"], &data)).contains("left as it is"));
    assert!(ok(zonecert(&["zone", "list"], &data)).contains("example.org"));
}

#[test]
fn new_data_dirs_and_databases_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let by_init = dir.path().join("by-init");
    ok(zonecert(&["init"], &by_init));
    assert_eq!(mode(&by_init), 0o700);
    assert_eq!(mode(&by_init.join("zonecert.db")), 0o600);

    let by_serve = dir.path().join("by-serve");
    let server = serve(&by_serve, &["--dev"]);
    assert_eq!(mode(&by_serve), 0o700);
    assert_eq!(mode(&by_serve.join("zonecert.db")), 0o600);
    // SQLite gives its journal files the database's mode.
    assert_eq!(mode(&by_serve.join("zonecert.db-wal")), 0o600);
    assert_eq!(mode(&by_serve.join("dev-token")), 0o600);
    server.stop();
}

#[test]
fn a_database_missing_a_table_is_an_error_not_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(zonecert(&["init"], &data));
    let db = data.join("zonecert.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TABLE pack_hosts;")
        .unwrap();
    let out = serve_refused(&data, &[]);
    let err = stderr(&out);
    assert!(
        err.contains("lacks the table pack_hosts") && err.contains(&db.display().to_string()),
        "{err}"
    );
    let out = zonecert(&["zone", "list"], &data);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("lacks the table pack_hosts"));
    let tables: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'pack_hosts'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the table was recreated");
}

/// `zonecert serve` as an unprivileged user when the test runs as root (root writes
/// through any mode bits), so that a folder's mode decides what it may write. That user
/// runs a copy of the binary in `dir` (mode 0755): the build's own folder may be one it
/// cannot enter (a checkout under a 0700 folder, as `scripts/test.sh --from-copy` makes).
fn serve_unprivileged(dir: &Path, data: &Path, owned: &[&Path]) -> Command {
    use std::os::unix::process::CommandExt;
    let root = std::fs::metadata("/proc/self").unwrap();
    if std::os::unix::fs::MetadataExt::uid(&root) != 0 {
        return serve_command(data, &[]);
    }
    const NOBODY: u32 = 65534;
    let bin = dir.join("zonecert");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    for path in owned {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let mut cmd = serve_command(data, &[]);
    let mut unprivileged = Command::new(&bin);
    unprivileged.args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => unprivileged.env(key, value),
            None => unprivileged.env_remove(key),
        };
    }
    unprivileged.uid(NOBODY).gid(NOBODY);
    cmd = unprivileged;
    cmd
}

#[test]
fn a_read_only_data_dir_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    ok(zonecert(&["init"], &data));
    let db = data.join("zonecert.db");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o500)).unwrap();
    let out = serve_unprivileged(dir.path(), &data, &[&data, &db])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "the data directory {} is read-only",
            data.display()
        )),
        "{err}"
    );
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[tokio::test]
async fn dev_credentials_do_not_outlive_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(&data, &["--dev"]);
    let path = format!("/zones/{DEV_ZONE}/ssl/verification");
    assert_eq!(status(&server.base, &path, &DEV_KEY).await, 200);
    server.stop();

    // Without --dev, the published key would still open every zone: refused, saying how
    // to remove it.
    let out = serve_refused(&data, &[]);
    let err = stderr(&out);
    assert!(
        err.contains("published global key")
            && err.contains(&format!("zonecert dev clean --data-dir {}", data.display())),
        "{err}"
    );
    let cleaned = ok(zonecert(&["dev", "clean"], &data));
    assert!(cleaned.contains("user@example.com"), "{cleaned}");
    let server = serve(&data, &[]);
    assert_eq!(status(&server.base, &path, &DEV_KEY).await, 403);
    server.stop();
}

#[tokio::test]
async fn dev_mode_leaves_an_operators_token_named_dev_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(zonecert(&["init"], &data));
    let created = ok(zonecert(
        &[
            "token",
            "create",
            "--name",
            "dev",
            "--permission",
            "SSL and Certificates Read",
            "--output",
            "json",
        ],
        &data,
    ));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let secret = created["secret"].as_str().unwrap();
    let bearer = format!("Bearer {secret}");
    for _ in 0..2 {
        let server = serve(&data, &["--dev"]);
        assert_eq!(
            status(
                &server.base,
                "/user/tokens/verify",
                &[("Authorization", &bearer)]
            )
            .await,
            200,
            "the operator's token named dev was revoked"
        );
        server.stop();
    }
}

#[tokio::test]
async fn the_dev_token_survives_a_restart_and_a_refused_one_gets_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = serve(&data, &["--dev"]);
    let token = first.token.clone().unwrap();
    first.stop();
    let second = serve(&data, &["--dev"]);
    assert_eq!(second.token.as_deref(), Some(token.as_str()), "a new token");
    let bearer = format!("Bearer {token}");
    assert_eq!(
        status(
            &second.base,
            "/user/tokens/verify",
            &[("Authorization", &bearer)]
        )
        .await,
        200
    );
    assert_eq!(mode(&data.join("dev-token")), 0o600);

    // A token this server does not know: the CLI says what is likely wrong.
    let out = Command::new(BIN)
        .args(["ssl", "verification", "get", "--zone-id", DEV_ZONE])
        .env("CLOUDFLARE_BASE_URL", &second.base)
        .env("CLOUDFLARE_API_TOKEN", "x".repeat(40))
        .env_remove("CLOUDFLARE_EMAIL")
        .env_remove("CLOUDFLARE_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("10000") && err.contains("stale") && err.contains(&second.base),
        "{err}"
    );
    second.stop();
}

#[test]
fn a_partial_ca_stops_the_start_naming_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(zonecert(&["init"], &data));
    let root = ok(zonecert(&["ca", "export"], &data));
    let ca = data.join("ca");
    let saved = dir.path().join("saved");
    std::fs::create_dir(&saved).unwrap();
    for f in [
        "ca.pem",
        "ca-key.pem",
        "rsa-issuer.pem",
        "rsa-issuer-key.pem",
    ] {
        std::fs::copy(ca.join(f), saved.join(f)).unwrap();
    }
    // The lifecycle off or on: the CA is checked either way.
    for args in [&["--lifecycle", "false"][..], &["--lifecycle", "true"]] {
        std::fs::remove_file(ca.join("ca.pem")).unwrap();
        let err = stderr(&serve_refused(&data, args));
        assert!(
            err.contains("ca-key.pem") && err.contains("ca.pem") && err.contains("incomplete"),
            "{args:?}: {err}"
        );
        assert!(!ca.join("ca.pem").exists(), "a new root was minted");
        std::fs::copy(saved.join("ca.pem"), ca.join("ca.pem")).unwrap();

        std::fs::remove_file(ca.join("rsa-issuer-key.pem")).unwrap();
        let err = stderr(&serve_refused(&data, args));
        assert!(
            err.contains("rsa-issuer.pem exists but its key rsa-issuer-key.pem is missing"),
            "{args:?}: {err}"
        );
        std::fs::copy(
            saved.join("rsa-issuer-key.pem"),
            ca.join("rsa-issuer-key.pem"),
        )
        .unwrap();
    }
    // A root replaced by another CA's: the RSA issuer is not signed by it.
    let other = dir.path().join("other");
    ok(zonecert(&["init"], &other));
    ok(zonecert(&["ca", "export"], &other));
    for f in ["ca.pem", "ca-key.pem"] {
        std::fs::copy(other.join("ca").join(f), ca.join(f)).unwrap();
    }
    let err = stderr(&serve_refused(&data, &["--lifecycle", "false"]));
    assert!(
        err.contains("rsa-issuer.pem is not signed by the root ca.pem"),
        "{err}"
    );
    let out = zonecert(&["ca", "export"], &data);
    assert!(!out.status.success(), "ca export used a mismatched CA");
    // Restored, it starts and exports the same root.
    for f in ["ca.pem", "ca-key.pem"] {
        std::fs::copy(saved.join(f), ca.join(f)).unwrap();
    }
    serve(&data, &["--lifecycle", "false"]).stop();
    assert_eq!(ok(zonecert(&["ca", "export"], &data)), root);
}

const DEV_PACK: &str = "a77f8bd7-3b47-46b4-a6f1-75cf98109948";

async fn delete(base: &str, token: &str, path: &str) -> u16 {
    reqwest::Client::new()
        .delete(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits (bounded) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn deleting_a_pack_or_a_zone_removes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    // The dev seed's pack is issued and deployed at start.
    let by_pack = dir.path().join("by-pack");
    let server = serve(&by_pack, &["--dev"]);
    let files = by_pack.join("certs").join(DEV_PACK);
    assert!(files.join("privkey.pem").exists());
    let token = server.token.clone().unwrap();
    let path = format!("/zones/{DEV_ZONE}/ssl/certificate_packs/{DEV_PACK}");
    assert_eq!(delete(&server.base, &token, &path).await, 200);
    assert!(!files.exists(), "DELETE left {}", files.display());
    server.stop();

    let by_zone = dir.path().join("by-zone");
    let server = serve(&by_zone, &["--dev"]);
    let files = by_zone.join("certs").join(DEV_PACK);
    assert!(files.join("privkey.pem").exists());
    let token = server.token.clone().unwrap();
    assert_eq!(
        delete(&server.base, &token, &format!("/zones/{DEV_ZONE}")).await,
        200
    );
    assert!(
        !files.exists(),
        "DELETE of the zone left {}",
        files.display()
    );
    server.stop();

    let by_cli = dir.path().join("by-cli");
    serve(&by_cli, &["--dev"]).stop();
    let certs = by_cli.join("certs");
    assert!(certs.join(DEV_PACK).join("privkey.pem").exists());
    ok(zonecert(&["zone", "delete", DEV_ZONE], &by_cli));
    assert!(
        !certs.join(DEV_PACK).exists(),
        "zonecert zone delete left the files"
    );

    // What a crash and other processes leave: a deployment's staging directory with a
    // key, hours old; the files of a pack the database no longer has. Both go at start;
    // a fresh staging directory (a live deployment's) and the operator's files stay.
    let stale = certs.join(".0b8e4a4c-1f1e-4a8e-9d3e-1d2c3b4a5f60.tmp-00000000deadbeef");
    let fresh = certs.join(".1b8e4a4c-1f1e-4a8e-9d3e-1d2c3b4a5f60.tmp-00000000feedface");
    let orphan = certs.join("2b8e4a4c-1f1e-4a8e-9d3e-1d2c3b4a5f60");
    for d in [&stale, &fresh, &orphan] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("privkey.pem"), "key").unwrap();
    }
    std::fs::write(certs.join("README.operator"), "mine").unwrap();
    let touched = Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(&stale)
        .status()
        .unwrap();
    assert!(touched.success());
    let server = serve(&by_cli, &["--dev"]);
    eventually(
        "the stale staging directory and the orphan are removed",
        || !stale.exists() && !orphan.exists(),
    )
    .await;
    assert!(fresh.exists(), "a fresh staging directory was removed");
    assert!(certs.join("README.operator").exists());
    server.stop();
}
