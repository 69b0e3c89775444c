//! `zonecert dev reset|clock|auto-validate|faults` (the test controls through the built
//! binary) against `zonecert serve --dev --fresh` on port 0, and the flags that need the
//! test controls refused without them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::process::Command;
use zonecert_testkit::{ServeCommand, ServeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");
const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";

/// `zonecert serve --dev --fresh` on port 0 (the testkit's harness kills it when dropped).
struct DevServer {
    process: ServeProcess,
}

impl DevServer {
    fn start() -> DevServer {
        let process = ServeCommand::new(BIN)
            .dev()
            .args(["--fresh", "--rate-limit", "off"])
            .spawn();
        DevServer { process }
    }

    /// `zonecert dev ARGS --json`: its status and JSON.
    fn dev(&self, args: &[&str]) -> (bool, Value, String) {
        let out = Command::new(BIN)
            .arg("dev")
            .args(args)
            .arg("--json")
            .env("CLOUDFLARE_BASE_URL", self.process.base_url())
            .env("CLOUDFLARE_API_TOKEN", self.process.token())
            .env_remove("CLOUDFLARE_API_KEY")
            .env_remove("CLOUDFLARE_EMAIL")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        (
            out.status.success(),
            json,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn the_dev_commands_drive_a_running_servers_test_controls() {
    let s = DevServer::start();
    let (ok, clock, err) = s.dev(&["clock", "advance", "2d"]);
    assert!(ok, "{err}");
    assert!(
        clock["offset_seconds"].as_i64().unwrap() >= 2 * 86_400,
        "{clock}"
    );
    let (ok, _, err) = s.dev(&["clock", "set", "2001-01-01T00:00:00Z"]);
    assert!(!ok, "backwards is refused");
    assert!(err.contains("only moves forward"), "{err}");

    let (ok, switched, err) = s.dev(&["auto-validate", ZONE, "on"]);
    assert!(ok, "{err}");
    assert_eq!(switched["enabled"], true);

    let (ok, fault, err) = s.dev(&[
        "faults",
        "add",
        "nxdomain",
        "--host",
        "www.example.com",
        "--attempts",
        "2",
    ]);
    assert!(ok, "{err}");
    assert_eq!(fault["kind"], "nxdomain");
    let (_, listed, _) = s.dev(&["faults", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    let (ok, done, err) = s.dev(&["reset"]);
    assert!(ok, "{err}");
    assert_eq!(done["zone_id"], ZONE);
    let (_, clock, _) = s.dev(&["clock", "show"]);
    assert_eq!(clock["offset_seconds"], 0, "{clock}");
    let (_, listed, _) = s.dev(&["faults", "list"]);
    assert_eq!(listed, Value::Array(Vec::new()));
    // The same token after the reset.
    let (ok, cleared, err) = s.dev(&["faults", "clear"]);
    assert!(ok, "{err}");
    assert_eq!(cleared["cleared"], 0);
}

#[test]
fn test_control_flags_are_refused_without_the_test_controls() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--dcv-auto-validate", "--fresh"] {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", flag, "--data-dir"])
            .arg(dir.path())
            .env_remove("ZONECERT_CONFIG")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(flag) && err.contains("--test-controls"),
            "{flag}: {err}"
        );
    }
}
